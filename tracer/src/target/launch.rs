//! `leaktracer run`: start a command stopped before `execve`, so the probes are in place
//! before its first instruction, then let it go.
//!
//! std's `Command::spawn` waits for the exec to happen, so a child that stops itself first
//! would deadlock it; this forks by hand. Call it before any other thread exists.

use std::{
    ffi::CString,
    io,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::{ffi::OsStrExt, fs::PermissionsExt},
    },
    path::{Path, PathBuf},
};

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("command not found: {0}")]
    NotFound(String),
    #[error("cannot run {command}: {cause}")]
    Exec { command: String, cause: io::Error },
    #[error("cannot start {command}: {cause}")]
    Spawn { command: String, cause: io::Error },
    #[error("{0} contains a NUL byte")]
    Nul(String),
}

/// A child stopped just before `execve`.
#[derive(Debug)]
pub struct Stopped {
    pub pid: u32,
    /// The program it is about to run.
    pub exe: PathBuf,
    pub argv: Vec<String>,
    /// Read end of a close-on-exec pipe: EOF means the exec happened, four bytes are the
    /// errno of a failed exec.
    exec_status: OwnedFd,
    /// Still only stopped: dropping it kills the child (tracing failed before it ran).
    pending: bool,
}

impl Drop for Stopped {
    fn drop(&mut self) {
        if self.pending {
            // SAFETY: signalling and reaping our own child, which never ran.
            unsafe { libc::kill(self.pid as i32, libc::SIGKILL) };
            let _ = wait(self.pid);
        }
    }
}

/// Forks a child that stops itself, then will exec `argv` once resumed.
pub fn spawn_stopped(argv: &[String]) -> Result<Stopped, LaunchError> {
    let command = argv.first().cloned().unwrap_or_default();
    let exe = resolve(&command).ok_or_else(|| LaunchError::NotFound(command.clone()))?;
    let c_exe = CString::new(exe.as_os_str().as_bytes()).map_err(|_| LaunchError::Nul(command.clone()))?;
    let c_args = argv
        .iter()
        .map(|a| CString::new(a.as_bytes()).map_err(|_| LaunchError::Nul(a.clone())))
        .collect::<Result<Vec<_>, _>>()?;
    let mut c_argv: Vec<*const libc::c_char> = c_args.iter().map(|a| a.as_ptr()).collect();
    c_argv.push(std::ptr::null());

    let spawn_err = |cause| LaunchError::Spawn { command: command.clone(), cause };
    let mut fds = [0; 2];
    // SAFETY: fds is a valid two-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(spawn_err(io::Error::last_os_error()));
    }
    // SAFETY: the fds were just created and are owned here.
    let (read_end, write_end) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };

    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the child only calls async-signal-safe functions (prctl, getppid, raise,
    // execv, write, _exit) on data prepared before the fork.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(spawn_err(io::Error::last_os_error()));
    }
    if pid == 0 {
        // SAFETY: as above.
        unsafe { child(parent, &c_exe, &c_argv, write_end.as_raw_fd()) }
    }
    drop(write_end);
    let pid = pid as u32;
    wait_stopped(pid).map_err(spawn_err)?;
    Ok(Stopped { pid, exe, argv: argv.to_vec(), exec_status: read_end, pending: true })
}

/// The forked child: dies with leaktracer until it is traced (a SIGKILL of leaktracer
/// must not leave a stopped orphan), stops for the probes, then runs the command. From
/// the moment it is traced, `PTRACE_O_EXITKILL` ties it to leaktracer instead, so the
/// parent-death signal is cleared before exec (it would outlive the exec).
///
/// # Safety
/// Only in the child of a fork, with the arguments prepared before it.
unsafe fn child(parent: libc::pid_t, exe: &CString, argv: &[*const libc::c_char], status_fd: i32) -> ! {
    // SAFETY: async-signal-safe calls on data prepared before the fork.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if libc::getppid() != parent {
            libc::_exit(127);
        }
        libc::raise(libc::SIGSTOP);
        libc::prctl(libc::PR_SET_PDEATHSIG, 0);
        libc::execv(exe.as_ptr(), argv.as_ptr());
        let errno = *libc::__errno_location();
        libc::write(status_fd, (&raw const errno).cast(), 4);
        libc::_exit(127);
    }
}

impl Stopped {
    /// Lets the child exec under supervision: it is traced (ptrace) only so that it stops
    /// at exec and at exit until the session has read what it needs from `/proc` (a
    /// command that exits at once would otherwise take its memory maps with it). Signals
    /// are passed through unchanged.
    pub fn supervise(mut self) -> Result<Supervisor, LaunchError> {
        // From here the supervisor thread owns the child's fate.
        self.pending = false;
        let (events_tx, events) = tokio::sync::mpsc::unbounded_channel();
        let (commands, commands_rx) = std::sync::mpsc::channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let pid = self.pid;
        let command = self.argv[0].clone();
        std::thread::Builder::new()
            .name("supervisor".into())
            .spawn(move || supervise(&self, &events_tx, &commands_rx, &ready_tx))
            .map_err(|cause| LaunchError::Spawn { command: command.clone(), cause })?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Supervisor { pid, events, commands }),
            Ok(Err(cause)) => Err(LaunchError::Spawn { command, cause }),
            Err(_) => Err(LaunchError::Spawn { command, cause: io::Error::other("supervisor thread ended") }),
        }
    }
}

/// What the session asks of the supervisor.
enum Command {
    /// Let a child waiting at exec or exit go on.
    Release,
    /// Stop tracing the child and let it run on its own.
    Detach,
}

/// What the supervised child does.
#[derive(Debug)]
pub enum ChildEvent {
    /// It has exec'd the command and waits at the first instruction of the new image.
    Execed,
    /// It is exiting and waits with its memory still mapped.
    Exiting,
    /// The exec failed (the child is gone).
    ExecFailed(LaunchError),
    /// It is gone.
    Exited(Exit),
    /// No longer traced (after [`Supervisor::detach`]): it runs on by itself.
    Detached,
}

/// The session's side of a supervised child. After `Execed` and `Exiting` the child
/// waits for [`Supervisor::release`].
pub struct Supervisor {
    pub pid: u32,
    pub events: tokio::sync::mpsc::UnboundedReceiver<ChildEvent>,
    commands: std::sync::mpsc::Sender<Command>,
}

impl Supervisor {
    pub fn release(&self) {
        let _ = self.commands.send(Command::Release);
    }

    /// Stops tracing the child; it then runs on when leaktracer exits
    /// (`ChildEvent::Detached` follows).
    pub fn detach(&self) {
        let _ = self.commands.send(Command::Detach);
    }

    /// Sends the child a signal.
    pub fn kill(&self, signal: i32) {
        // SAFETY: signalling our own child (still ours: the supervisor reaps it).
        unsafe { libc::kill(self.pid as i32, signal) };
    }
}

/// The supervisor thread: every ptrace request must come from the thread that seized.
/// It polls (waitpid with WNOHANG) so that it also hears the session's commands.
fn supervise(
    child: &Stopped,
    events: &tokio::sync::mpsc::UnboundedSender<ChildEvent>,
    commands: &std::sync::mpsc::Receiver<Command>,
    ready: &std::sync::mpsc::Sender<io::Result<()>>,
) {
    let pid = child.pid as libc::pid_t;
    let options = libc::PTRACE_O_TRACEEXIT | libc::PTRACE_O_TRACEEXEC | libc::PTRACE_O_EXITKILL;
    // SAFETY: seizing our own stopped child.
    if unsafe { libc::ptrace(libc::PTRACE_SEIZE, pid, 0, options) } != 0 {
        let _ = ready.send(Err(io::Error::last_os_error()));
        return;
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    let _ = ready.send(Ok(()));
    loop {
        match commands.try_recv() {
            Ok(Command::Detach) => return detach(pid, events),
            Ok(Command::Release) | Err(std::sync::mpsc::TryRecvError::Empty) => {}
            // The session is gone: keep serving the child until it ends.
            Err(std::sync::mpsc::TryRecvError::Disconnected) => {}
        }
        let mut status = 0;
        // SAFETY: waiting for our own (traced) child.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::__WALL | libc::WNOHANG) };
        if r == 0 {
            std::thread::sleep(std::time::Duration::from_millis(2));
            continue;
        }
        if r < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            let _ = events.send(ChildEvent::Exited(Exit::Code(127)));
            return;
        }
        if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
            let _ = events.send(ended(child, status));
            return;
        }
        if libc::WIFSTOPPED(status) && !stopped(pid, status, events, commands) {
            return;
        }
    }
}

/// The child exited: how, or that its exec failed.
fn ended(child: &Stopped, status: i32) -> ChildEvent {
    let exit = if libc::WIFEXITED(status) {
        Exit::Code(libc::WEXITSTATUS(status))
    } else {
        Exit::Signal(libc::WTERMSIG(status))
    };
    match child.exec_error() {
        Some(cause) => ChildEvent::ExecFailed(LaunchError::Exec { command: child.argv[0].clone(), cause }),
        None => ChildEvent::Exited(exit),
    }
}

/// Handles a ptrace stop; false when the supervisor is done (detached).
fn stopped(
    pid: libc::pid_t,
    status: i32,
    events: &tokio::sync::mpsc::UnboundedSender<ChildEvent>,
    commands: &std::sync::mpsc::Receiver<Command>,
) -> bool {
    let sig = libc::WSTOPSIG(status);
    let hold = |event: ChildEvent| -> bool {
        let _ = events.send(event);
        // A session that went away releases too; one that asks to detach gets it.
        !matches!(commands.recv(), Ok(Command::Detach))
    };
    let (request, inject) = match status >> 16 {
        libc::PTRACE_EVENT_EXEC => {
            if !hold(ChildEvent::Execed) {
                return detach_stopped(pid, events);
            }
            (libc::PTRACE_CONT, 0)
        }
        libc::PTRACE_EVENT_EXIT => {
            if !hold(ChildEvent::Exiting) {
                return detach_stopped(pid, events);
            }
            (libc::PTRACE_CONT, 0)
        }
        // Group stop (SIGSTOP, SIGTSTP, ...): stay stopped until SIGCONT, as untraced.
        libc::PTRACE_EVENT_STOP
            if matches!(sig, libc::SIGSTOP | libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU) =>
        {
            (libc::PTRACE_LISTEN, 0)
        }
        libc::PTRACE_EVENT_STOP => (libc::PTRACE_CONT, 0),
        // A signal on its way to the child: deliver it.
        0 => (libc::PTRACE_CONT, sig),
        _ => (libc::PTRACE_CONT, 0),
    };
    // SAFETY: restarting our own traced child.
    unsafe { libc::ptrace(request, pid, 0, inject) };
    true
}

/// Detaches from a running child: interrupt it, wait for the stop, detach.
fn detach(pid: libc::pid_t, events: &tokio::sync::mpsc::UnboundedSender<ChildEvent>) {
    // SAFETY: ptrace requests on our own traced child.
    unsafe { libc::ptrace(libc::PTRACE_INTERRUPT, pid, 0, 0) };
    loop {
        let mut status = 0;
        // SAFETY: waiting for our own traced child.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::__WALL) };
        if r < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        if r < 0 || libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
            let _ = events.send(ChildEvent::Detached);
            return;
        }
        // A signal that arrived meanwhile goes with the detach.
        let sig = if status >> 16 == 0 { libc::WSTOPSIG(status) } else { 0 };
        detach_stopped(pid, events);
        if sig != 0 {
            // SAFETY: signalling our own (now untraced) child.
            unsafe { libc::kill(pid, sig) };
        }
        return;
    }
}

/// Detaches from a child in a ptrace stop.
fn detach_stopped(pid: libc::pid_t, events: &tokio::sync::mpsc::UnboundedSender<ChildEvent>) -> bool {
    // SAFETY: detaching our own traced, stopped child.
    unsafe { libc::ptrace(libc::PTRACE_DETACH, pid, 0, 0) };
    let _ = events.send(ChildEvent::Detached);
    false
}

impl Stopped {
    /// The errno a failed exec left in the pipe, if any (non-blocking: called once the
    /// child is gone, so the write end is closed).
    fn exec_error(&self) -> Option<io::Error> {
        let mut errno = [0u8; 4];
        // SAFETY: reading into a local buffer from an fd we own.
        let n = unsafe { libc::read(self.exec_status.as_raw_fd(), errno.as_mut_ptr().cast(), 4) };
        (n == 4).then(|| io::Error::from_raw_os_error(i32::from_ne_bytes(errno)))
    }
}

fn wait_stopped(pid: u32) -> io::Result<()> {
    let mut status = 0;
    loop {
        // SAFETY: waiting for our own child.
        let r = unsafe { libc::waitpid(pid as i32, &mut status, libc::WUNTRACED) };
        if r < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if libc::WIFSTOPPED(status) {
            return Ok(());
        }
        return Err(io::Error::other("the child exited before it could be traced"));
    }
}

/// How a child ended, as a shell would report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

impl Exit {
    /// The exit status a wrapper should pass on: the code, or 128 + signal.
    pub fn status(self) -> i32 {
        match self {
            Exit::Code(c) => c,
            Exit::Signal(s) => 128 + s,
        }
    }
}

/// Blocks until the child exits.
pub fn wait(pid: u32) -> io::Result<Exit> {
    let mut status = 0;
    loop {
        // SAFETY: waiting for our own child.
        let r = unsafe { libc::waitpid(pid as i32, &mut status, 0) };
        if r < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if libc::WIFEXITED(status) {
            return Ok(Exit::Code(libc::WEXITSTATUS(status)));
        }
        if libc::WIFSIGNALED(status) {
            return Ok(Exit::Signal(libc::WTERMSIG(status)));
        }
    }
}

/// PATH lookup, as execvp would do it.
fn resolve(command: &str) -> Option<PathBuf> {
    if command.is_empty() {
        return None;
    }
    let is_executable =
        |p: &Path| p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    if command.contains('/') {
        let path = PathBuf::from(command);
        let path = std::fs::canonicalize(&path).unwrap_or(path);
        return is_executable(&path).then_some(path);
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path).map(|dir| dir.join(command)).find(|p| is_executable(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_through_path_and_rejects_missing() {
        assert!(resolve("sh").is_some_and(|p| p.is_absolute()));
        assert!(resolve("no-such-command-for-leaktracer").is_none());
        assert!(matches!(
            spawn_stopped(&["no-such-command-for-leaktracer".into()]),
            Err(LaunchError::NotFound(_))
        ));
    }

    fn events_of(argv: &[&str]) -> Vec<String> {
        let argv: Vec<String> = argv.iter().map(|a| a.to_string()).collect();
        let mut supervisor = spawn_stopped(&argv).unwrap().supervise().unwrap();
        let mut seen = Vec::new();
        loop {
            let event = supervisor.events.blocking_recv().expect("the supervisor reports an end");
            seen.push(format!("{event:?}"));
            match event {
                ChildEvent::Execed | ChildEvent::Exiting => supervisor.release(),
                ChildEvent::Exited(_) | ChildEvent::ExecFailed(_) | ChildEvent::Detached => return seen,
            }
        }
    }

    #[test]
    fn a_supervised_child_stops_at_exec_and_exit_and_keeps_its_status() {
        assert_eq!(events_of(&["sh", "-c", "exit 7"]), ["Execed", "Exiting", "Exited(Code(7))"]);
    }

    #[test]
    fn signals_reach_a_supervised_child() {
        let seen = events_of(&["sh", "-c", "trap 'exit 9' USR1; kill -USR1 $$; sleep 5"]);
        assert_eq!(seen.last().unwrap(), "Exited(Code(9))");
        let seen = events_of(&["sh", "-c", "kill -TERM $$"]);
        assert_eq!(seen.last().unwrap(), "Exited(Signal(15))");
    }

    #[test]
    fn a_failed_exec_is_reported() {
        let dir = std::env::temp_dir().join(format!("lt-noexec-{}", std::process::id()));
        std::fs::write(&dir, b"not a program").unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let seen = events_of(&[dir.to_str().unwrap()]);
        std::fs::remove_file(&dir).unwrap();
        assert!(seen.last().unwrap().starts_with("ExecFailed"), "{seen:?}");
    }

    /// A detached child runs on after the supervisor lets go of it.
    #[test]
    fn a_detached_child_runs_on() {
        let argv: Vec<String> = ["sleep", "0.3"].iter().map(|a| a.to_string()).collect();
        let mut supervisor = spawn_stopped(&argv).unwrap().supervise().unwrap();
        let pid = supervisor.pid;
        assert!(matches!(supervisor.events.blocking_recv(), Some(ChildEvent::Execed)));
        supervisor.release();
        supervisor.detach();
        assert!(matches!(supervisor.events.blocking_recv(), Some(ChildEvent::Detached)));
        // Not traced any more, and still ours to reap: it exits by itself.
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        assert!(status.lines().any(|l| l == "TracerPid:\t0"), "{status}");
        assert_eq!(wait(pid).unwrap(), Exit::Code(0));
    }
}
