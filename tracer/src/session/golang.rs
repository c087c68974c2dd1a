//! A Go target's part of a session: the runtime found in its executable, the periodic
//! read of its goroutine list, its heap profiling rate and live heap.

use std::time::{Duration, Instant};

use crate::{
    aggregate::{Aggregator, goroutines::Statuses},
    clock::monotonic_ns,
    stacks::golang::{runtime::GoRuntime, scan::Scanner},
    target::mem::ProcessMemory,
};

/// How often the goroutine list is read.
const SCAN_EVERY: Duration = Duration::from_secs(2);

pub struct GoSession {
    pub runtime: GoRuntime,
    /// The executable's load bias, once known (at attach, or at exec for `run`).
    pub bias: Option<u64>,
    mem: ProcessMemory,
    scanner: Option<Scanner>,
    last_scan: Option<Instant>,
    /// `runtime.MemProfileRate`, once read (it is set during the runtime's start).
    pub mem_profile_rate: Option<u64>,
    /// `gcController.heapMarked` after the last collection seen, and how many sweeps
    /// had been seen when it was read.
    pub heap_marked: Option<u64>,
    sweeps_read: u64,
}

impl GoSession {
    pub fn new(pid: u32, runtime: GoRuntime, bias: Option<u64>) -> Self {
        let scanner = bias.and_then(|b| Scanner::new(pid, &runtime, b));
        let mut go = Self {
            runtime,
            bias,
            mem: ProcessMemory::new(pid),
            scanner,
            last_scan: None,
            mem_profile_rate: None,
            heap_marked: None,
            sweeps_read: 0,
        };
        go.read_rate();
        go
    }

    /// How the aggregator reads goroutine statuses.
    pub fn statuses(&self) -> Statuses {
        Statuses { waiting: self.runtime.layout.g_waiting, leaked: self.runtime.layout.g_leaked }
    }

    /// The image was replaced (`run`): where it is loaded now.
    pub fn execed(&mut self, pid: u32, bias: Option<u64>) {
        self.bias = bias;
        self.scanner = bias.and_then(|b| Scanner::new(pid, &self.runtime, b));
    }

    /// Reads what changes while the program runs: the goroutine list (every few
    /// seconds, or now with `force`), the heap profiling rate until known, the live
    /// heap after a new collection.
    pub fn refresh(&mut self, agg: &mut Aggregator, force: bool) {
        self.read_rate();
        agg.goheap.set_rate(self.mem_profile_rate);
        if agg.goheap.sweeps != self.sweeps_read {
            self.sweeps_read = agg.goheap.sweeps;
            self.heap_marked = self.read_heap_marked().or(self.heap_marked);
        }
        let due = self.last_scan.is_none_or(|t| t.elapsed() >= SCAN_EVERY);
        let Some(scanner) = self.scanner.as_ref().filter(|_| force || due) else { return };
        self.last_scan = Some(Instant::now());
        let now_ns = monotonic_ns();
        match scanner.scan() {
            Ok(states) => agg.goroutines_scanned(&states, now_ns),
            Err(e) => log::debug!("cannot read the goroutine list: {e}"),
        }
    }

    fn read_rate(&mut self) {
        if self.mem_profile_rate.is_some_and(|r| r > 0) {
            return;
        }
        let (Some(bias), Some(addr)) = (self.bias, self.runtime.symbols.mem_profile_rate) else { return };
        let disabled = self.runtime.symbols.disable_memory_profiling.and_then(|a| {
            let mut b = [0u8; 1];
            self.mem.read(a + bias, &mut b).ok().map(|()| b[0] != 0)
        });
        self.mem_profile_rate = match (disabled, self.mem.read_u64(addr + bias)) {
            (Some(true), _) => Some(0),
            (_, Ok(rate)) => Some(rate),
            (_, Err(_)) => self.mem_profile_rate,
        };
    }

    fn read_heap_marked(&self) -> Option<u64> {
        let controller = self.runtime.symbols.gc_controller?.checked_add(self.bias?)?;
        self.mem.read_u64(controller.checked_add(self.runtime.layout.offsets.gc_heap_marked)?).ok()
    }
}
