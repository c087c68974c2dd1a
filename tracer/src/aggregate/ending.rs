//! How the target ended: its exit status (from the kernel, also for a process that is not
//! our child), a fatal signal and who sent it, the OOM killer's choice.

use crate::event::Event;

/// The OOM killer's record of the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OomKill {
    pub ts_ns: u64,
    pub rss_bytes: u64,
    pub total_vm_bytes: u64,
}

/// A fatal signal sent to the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FatalSignal {
    pub ts_ns: u64,
    pub sig: i32,
    pub sender_pid: u32,
    pub sender_comm: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ending {
    pub oom: Option<OomKill>,
    /// The last fatal signal sent before the end.
    pub signal: Option<FatalSignal>,
    /// The wait status the kernel recorded when the last thread exited.
    pub exit_code: Option<i32>,
    pub exited_ns: Option<u64>,
}

impl Ending {
    pub fn apply(&mut self, event: &Event) {
        match *event {
            Event::OomVictim { ts_ns, anon_rss_kib, file_rss_kib, shmem_rss_kib, total_vm_kib } => {
                let kib = anon_rss_kib.saturating_add(file_rss_kib).saturating_add(shmem_rss_kib);
                self.oom = Some(OomKill {
                    ts_ns,
                    rss_bytes: kib.saturating_mul(1024),
                    total_vm_bytes: total_vm_kib.saturating_mul(1024),
                });
            }
            Event::Signal { ts_ns, sig, sender_pid, ref sender_comm, .. } => {
                self.signal = Some(FatalSignal { ts_ns, sig, sender_pid, sender_comm: sender_comm.clone() });
            }
            Event::ProcessExit { ts_ns, exit_code } => {
                self.exit_code = exit_code;
                self.exited_ns = Some(ts_ns);
            }
            _ => {}
        }
    }

    /// Killed by a signal, by the kernel's record: (signal, core dumped).
    pub fn killed_by(&self) -> Option<i32> {
        let code = self.exit_code?;
        let sig = code & 0x7f;
        (sig != 0).then_some(sig)
    }

    /// Exited normally with this status, by the kernel's record.
    pub fn exit_status(&self) -> Option<i32> {
        let code = self.exit_code?;
        (code & 0x7f == 0).then_some((code >> 8) & 0xff)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_statuses_decode_as_the_kernel_encodes_them() {
        let mut e = Ending::default();
        e.apply(&Event::ProcessExit { ts_ns: 1, exit_code: Some(7 << 8) });
        assert_eq!((e.exit_status(), e.killed_by()), (Some(7), None));
        e.apply(&Event::ProcessExit { ts_ns: 1, exit_code: Some(9) });
        assert_eq!((e.exit_status(), e.killed_by()), (None, Some(9)));
        e.apply(&Event::OomVictim {
            ts_ns: 2,
            anon_rss_kib: 100,
            file_rss_kib: 1,
            shmem_rss_kib: 0,
            total_vm_kib: 500,
        });
        assert_eq!(e.oom.unwrap().rss_bytes, 101 * 1024);
    }
}
