//! A pidfd: a handle on one process that stays right when its PID is reused, and that
//! becomes readable once the process has exited.

use std::{
    io,
    os::fd::{FromRawFd, OwnedFd},
};

use tokio::io::unix::AsyncFd;

#[derive(Debug)]
pub struct PidFd(OwnedFd);

impl PidFd {
    pub fn open(pid: u32) -> io::Result<Self> {
        // SAFETY: pidfd_open has no memory arguments.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh fd, owned by the OwnedFd from here on.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd as i32) }))
    }

    /// Waits until the process has exited (inside a tokio runtime).
    pub fn into_exit_watch(self) -> io::Result<ExitWatch> {
        // SAFETY: the descriptor is owned by the AsyncFd and open for as long as it is.
        let fd = unsafe { AsyncFd::register_with_interest(self.0, tokio::io::Interest::READABLE) }
            .map_err(io::Error::from)?;
        Ok(ExitWatch(fd))
    }
}

/// A pidfd registered with the runtime.
pub struct ExitWatch(AsyncFd<OwnedFd>);

impl ExitWatch {
    pub async fn exited(&self) {
        let _ = self.0.readable().await;
    }
}
