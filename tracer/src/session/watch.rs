//! What the session waits on besides events: the target's life (a launched command's
//! supervisor, or a pidfd on a process we attached to) and the signals that stop us.

use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::target::{
    launch::{ChildEvent, Exit, LaunchError, Supervisor},
    pidfd::ExitWatch,
};

/// How we learn about the target.
pub enum Watch {
    /// A command we launched: it stops at exec and exit until released.
    Child(Supervisor),
    /// A process we attached to.
    Process(ExitWatch),
}

/// What happened to the target.
pub enum TargetEvent {
    /// It waits (at exec or exit) with its memory maps still there: read them, then
    /// release it.
    Paused,
    /// It is gone (with its status, for a child).
    Exited(Option<Exit>),
    ExecFailed(LaunchError),
}

impl Watch {
    pub async fn next(&mut self) -> TargetEvent {
        match self {
            Watch::Child(supervisor) => match supervisor.events.recv().await {
                Some(ChildEvent::Execed | ChildEvent::Exiting) => TargetEvent::Paused,
                Some(ChildEvent::Exited(exit)) => TargetEvent::Exited(Some(exit)),
                Some(ChildEvent::ExecFailed(e)) => TargetEvent::ExecFailed(e),
                Some(ChildEvent::Detached) | None => TargetEvent::Exited(None),
            },
            Watch::Process(pidfd) => {
                pidfd.exited().await;
                TargetEvent::Exited(None)
            }
        }
    }

    pub fn release(&self) {
        if let Watch::Child(supervisor) = self {
            supervisor.release();
        }
    }

    pub fn supervisor(&mut self) -> Option<&mut Supervisor> {
        match self {
            Watch::Child(supervisor) => Some(supervisor),
            Watch::Process(_) => None,
        }
    }
}

/// SIGINT and SIGTERM, installed before anything is announced: from then on they end
/// the session with a final report, never by their default action.
pub struct Signals {
    int: Signal,
    term: Signal,
}

impl Signals {
    pub fn install() -> std::io::Result<Self> {
        Ok(Self { int: signal(SignalKind::interrupt())?, term: signal(SignalKind::terminate())? })
    }

    /// The next of them to arrive.
    pub async fn recv(&mut self) -> i32 {
        tokio::select! {
            _ = self.int.recv() => libc::SIGINT,
            _ = self.term.recv() => libc::SIGTERM,
        }
    }
}
