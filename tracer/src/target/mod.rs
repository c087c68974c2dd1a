//! The traced process: finding out what it is, starting it (`run`), and watching it.

pub mod launch;
pub mod limits;
pub mod maps;
pub mod privileges;

use std::{fs, io, path::PathBuf};

/// What the reports say about the target.
#[derive(Debug, Clone)]
pub struct Target {
    pub pid: u32,
    pub exe: PathBuf,
    pub cmdline: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("no process with PID {0}")]
    NoSuchProcess(u32),
    #[error("process {0} has already exited (it is a zombie waiting for its parent)")]
    Zombie(u32),
    #[error("process {0} is a kernel thread; leaktracer traces user processes")]
    KernelThread(u32),
    #[error("leaktracer cannot trace itself")]
    Itself,
    #[error("cannot read /proc/{pid}/{what}: {source}")]
    Proc { pid: u32, what: &'static str, source: io::Error },
}

impl Target {
    /// Looks a running process up, refusing what cannot be traced.
    pub fn inspect(pid: u32) -> Result<Self, TargetError> {
        if pid == std::process::id() {
            return Err(TargetError::Itself);
        }
        let stat = match fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => stat,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(TargetError::NoSuchProcess(pid));
            }
            Err(source) => return Err(TargetError::Proc { pid, what: "stat", source }),
        };
        // The state follows the parenthesised command name, which may itself hold ')'.
        let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next());
        if state == Some('Z') || state == Some('X') {
            return Err(TargetError::Zombie(pid));
        }
        let exe = match fs::read_link(format!("/proc/{pid}/exe")) {
            Ok(exe) => exe,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(TargetError::KernelThread(pid));
            }
            Err(source) => return Err(TargetError::Proc { pid, what: "exe", source }),
        };
        let cmdline = fs::read(format!("/proc/{pid}/cmdline"))
            .map(|raw| {
                raw.split(|b| *b == 0)
                    .filter(|a| !a.is_empty())
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect()
            })
            .unwrap_or_default();
        Ok(Self { pid, exe, cmdline })
    }
}

/// Resident set size of a live process.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let statm = fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page_size())
}

pub fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_pid_is_named() {
        // PIDs never exceed 2^22 on Linux.
        let err = Target::inspect(4_194_305 + 7).unwrap_err();
        assert_eq!(err.to_string(), "no process with PID 4194312");
    }

    #[test]
    fn refuses_itself() {
        assert!(matches!(Target::inspect(std::process::id()), Err(TargetError::Itself)));
    }

    #[test]
    fn reads_a_live_process() {
        let parent = std::os::unix::process::parent_id();
        let target = Target::inspect(parent).unwrap();
        assert_eq!(target.pid, parent);
        assert!(target.exe.is_absolute());
        assert!(rss_bytes(parent).unwrap() > 0);
    }
}
