//! Figures read from `/proc/PID`: resident memory, open descriptors, limits, threads.

use std::{fs, io};

/// Resident set size of a live process.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let statm = fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    pages.checked_mul(page_size())
}

pub fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).unwrap_or(4096)
}

/// The thread group (process) a thread id belongs to.
pub fn tgid_of(tid: u32) -> Option<u32> {
    let status = fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("Tgid:"))?.trim().parse().ok()
}

/// The open descriptors of a process, with what each one is (the link text of
/// `/proc/PID/fd/N`: a path, `socket:[inode]`, `pipe:[inode]`, `anon_inode:[eventfd]`).
pub fn open_fds(pid: u32) -> io::Result<Vec<(i32, String)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(format!("/proc/{pid}/fd"))? {
        let Ok(entry) = entry else { continue };
        let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        let what = fs::read_link(entry.path()).map(|p| describe(&p)).unwrap_or_default();
        out.push((fd, what));
    }
    out.sort_unstable();
    Ok(out)
}

/// What an fd link says, as a report shows it (bounded: a path can be long).
fn describe(link: &std::path::Path) -> String {
    let text = link.to_string_lossy();
    let mut end = text.len().min(256);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

/// How many descriptors a process has open (a directory listing, no readlinks).
pub fn count_fds(pid: u32) -> Option<u64> {
    Some(fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64)
}

/// What one descriptor is now.
pub fn fd_target(pid: u32, fd: i32) -> Option<String> {
    fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok().map(|p| describe(&p))
}

/// The soft `RLIMIT_NOFILE` of a process (`Max open files` in `/proc/PID/limits`);
/// `None` when unlimited or unreadable.
pub fn fd_limit(pid: u32) -> Option<u64> {
    let limits = fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    parse_fd_limit(&limits)
}

fn parse_fd_limit(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files").split_whitespace().next()?.parse().ok()
}

/// Raises our own soft `RLIMIT_NOFILE` to the hard limit: leaktracer keeps a descriptor
/// per mapped file of the target, and a target may map many.
pub fn raise_fd_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: a valid rlimit to fill, then to set.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(rss_bytes(me).unwrap() > 0);
        assert_eq!(tgid_of(me), Some(me));
        let fds = open_fds(me).unwrap();
        assert!(fds.iter().any(|(fd, _)| *fd == 0));
        assert!(fd_limit(me).unwrap() > 0);
    }

    #[test]
    fn a_thread_belongs_to_its_process() {
        let me = std::process::id();
        let (tx, rx) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            tx.send(unsafe { libc::gettid() } as u32).unwrap();
        });
        let tid = rx.recv().unwrap();
        t.join().unwrap();
        // The thread may be gone already; when it is not, it is ours.
        if let Some(tgid) = tgid_of(tid) {
            assert_eq!(tgid, me);
        }
        assert_ne!(tid, me);
    }

    #[test]
    fn fd_limits_parse() {
        let text = "Limit                     Soft Limit           Hard Limit           Units     \n\
                    Max open files            1024                 1048576              files     \n";
        assert_eq!(parse_fd_limit(text), Some(1024));
        assert_eq!(parse_fd_limit("Max open files  unlimited unlimited files"), None);
    }
}
