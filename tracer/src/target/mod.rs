//! The traced process: finding out what it is, starting it (`run`), watching it, and
//! reading what it exposes in `/proc` without trusting it (`files`).

pub mod files;
pub mod launch;
pub mod limits;
pub mod maps;
pub mod mem;
pub mod pidfd;
pub mod privileges;
pub mod proc;

use std::{fs, io, path::PathBuf};

use self::pidfd::PidFd;

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
    #[error("{tid} is a thread of process {pid}; trace the process: leaktracer attach --pid {pid}")]
    Thread { tid: u32, pid: u32 },
    #[error("leaktracer cannot trace itself")]
    Itself,
    #[error("cannot read /proc/{pid}/{what}: {cause}")]
    Proc { pid: u32, what: &'static str, cause: io::Error },
    #[error("cannot watch process {pid} for its exit: {cause}")]
    Watch { pid: u32, cause: io::Error },
}

impl Target {
    /// Looks a running process up, refusing what cannot be traced. Returns a pidfd on
    /// it too, taken now: a target that exits right after attach is still seen exiting.
    pub fn inspect(pid: u32) -> Result<(Self, PidFd), TargetError> {
        if pid == std::process::id() {
            return Err(TargetError::Itself);
        }
        let stat = match fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => stat,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(TargetError::NoSuchProcess(pid)),
            Err(cause) => return Err(TargetError::Proc { pid, what: "stat", cause }),
        };
        // /proc/TID exists for threads too (hidden from listings): name the process.
        if let Some(tgid) = proc::tgid_of(pid).filter(|tgid| *tgid != pid) {
            return Err(TargetError::Thread { tid: pid, pid: tgid });
        }
        // The state follows the parenthesised command name, which may itself hold ')'.
        let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next());
        if state == Some('Z') || state == Some('X') {
            return Err(TargetError::Zombie(pid));
        }
        let pidfd = PidFd::open(pid).map_err(|cause| TargetError::Watch { pid, cause })?;
        let exe = match fs::read_link(format!("/proc/{pid}/exe")) {
            Ok(exe) => exe,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(TargetError::KernelThread(pid)),
            Err(cause) => return Err(TargetError::Proc { pid, what: "exe", cause }),
        };
        Ok((Self { pid, exe, cmdline: cmdline(pid) }, pidfd))
    }
}

/// The arguments of a process, as far as they can be read.
fn cmdline(pid: u32) -> Vec<String> {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| {
            raw.split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .take(256)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_pid_is_named() {
        // One above the largest PID this machine can give out.
        let max: u32 = fs::read_to_string("/proc/sys/kernel/pid_max").unwrap().trim().parse().unwrap();
        let err = Target::inspect(max + 1).unwrap_err();
        assert_eq!(err.to_string(), format!("no process with PID {}", max + 1));
    }

    #[test]
    fn refuses_itself_and_threads() {
        assert!(matches!(Target::inspect(std::process::id()), Err(TargetError::Itself)));
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            tx.send(unsafe { libc::gettid() } as u32).unwrap();
            let _ = done_rx.recv();
        });
        let tid = rx.recv().unwrap();
        let err = Target::inspect(tid).unwrap_err();
        assert!(
            matches!(err, TargetError::Thread { tid: t, pid } if t == tid && pid == std::process::id()),
            "{err}"
        );
        drop(done_tx);
        t.join().unwrap();
    }

    #[test]
    fn reads_a_live_process() {
        let parent = std::os::unix::process::parent_id();
        let (target, _pidfd) = Target::inspect(parent).unwrap();
        assert_eq!(target.pid, parent);
        assert!(target.exe.is_absolute());
    }
}
