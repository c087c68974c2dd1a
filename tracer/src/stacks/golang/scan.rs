//! Reading the Go runtime's list of goroutines (`runtime.allgs`) out of the running
//! process: the goroutines that existed before the tracer attached, and what every one
//! is doing now (so "still parked" is confirmed without probing every wake-up). Racy by
//! nature (the process runs on), bounded, and never trusting what it reads.

use super::{layout::Layout, runtime::GoRuntime};
use crate::target::mem::ProcessMemory;

/// Goroutines read at most per scan.
pub const MAX_GOROUTINES: u64 = 1 << 20;

/// Statuses that mean "no goroutine here" (`_Gidle`, `_Gdead`, and 1.26's
/// `_Gdeadextra`).
const DEAD: [u64; 3] = [0, 6, 11];
/// The bit the collector sets while it scans a goroutine's stack.
const SCAN_BIT: u64 = 0x1000;

/// One goroutine as the runtime keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoroutineState {
    pub goid: u64,
    /// `atomicstatus`, without the scan bit.
    pub status: u64,
    pub wait_reason: u8,
    pub gopc: u64,
    pub startpc: u64,
    /// A sudog is queued (`g.waiting != nil`).
    pub waiting: bool,
}

/// Reads `allgs` of one process.
pub struct Scanner {
    mem: ProcessMemory,
    /// Run-time address of `runtime.allgs` (a `[]*g`).
    allgs: u64,
    layout: Layout,
}

impl Scanner {
    /// `None` when the runtime's `allgs` could not be located.
    pub fn new(pid: u32, runtime: &GoRuntime, bias: u64) -> Option<Self> {
        let allgs = runtime.symbols.allgs?.checked_add(bias)?;
        Some(Self { mem: ProcessMemory::new(pid), allgs, layout: runtime.layout.clone() })
    }

    /// Every live goroutine now.
    pub fn scan(&self) -> std::io::Result<Vec<GoroutineState>> {
        let mut header = [0u8; 16];
        self.mem.read(self.allgs, &mut header)?;
        let ptr = u64::from_le_bytes(header[..8].try_into().expect("8 bytes"));
        let len = u64::from_le_bytes(header[8..].try_into().expect("8 bytes")).min(MAX_GOROUTINES);
        let mut pointers = vec![0u8; usize::try_from(len * 8).unwrap_or(0)];
        self.mem.read(ptr, &mut pointers)?;
        let gs: Vec<u64> =
            pointers.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes"))).collect();
        let size = usize::try_from(self.layout.offsets.g_size).unwrap_or(0).min(4096);
        let states = self.mem.read_many(&gs, size).into_iter().flatten().filter_map(|g| self.state(&g));
        Ok(states.filter(|s| !DEAD.contains(&s.status)).collect())
    }

    /// Decodes one `runtime.g`.
    fn state(&self, g: &[u8]) -> Option<GoroutineState> {
        let o = &self.layout.offsets;
        let u64_at = |off: u64| -> Option<u64> {
            let at = usize::try_from(off).ok()?;
            Some(u64::from_le_bytes(g.get(at..at.checked_add(8)?)?.try_into().ok()?))
        };
        let u32_at = |off: u64| -> Option<u64> {
            let at = usize::try_from(off).ok()?;
            Some(u64::from(u32::from_le_bytes(g.get(at..at.checked_add(4)?)?.try_into().ok()?)))
        };
        Some(GoroutineState {
            goid: u64_at(o.g_goid)?,
            status: u32_at(o.g_atomicstatus)? & !SCAN_BIT,
            wait_reason: *g.get(usize::try_from(o.g_waitreason).ok()?)?,
            gopc: u64_at(o.g_gopc)?,
            startpc: u64_at(o.g_startpc)?,
            waiting: u64_at(o.g_waiting)? != 0,
        })
    }
}
