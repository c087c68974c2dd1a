//! The aggregator: applies events to the live tables and keeps per-site figures.
//!
//! One module per kind of tracked thing owns that kind's live table: `heap` (blocks by
//! address), `memory` (mappings and break growth by address range), `fds` (descriptors
//! by number), `goroutines` (by goroutine id), `defers` (piles by goroutine and `defer`
//! statement), `goheap` (the Go heap profiler's samples by address), `resident` (pages
//! first touched, `--mode growth`); `ending` keeps how the target ended. Every live thing points at the site that made it (`sites`), so its
//! release is charged back to that site. This module only dispatches events and sums
//! what the tables say.

pub mod defers;
pub mod ending;
pub mod fds;
pub mod goheap;
pub mod goroutines;
pub mod hash;
mod heap;
pub mod mappings;
mod memory;
mod resident;
mod sharded;
pub mod sites;

use hdrhistogram::Histogram;

use self::{
    defers::Defers,
    ending::Ending,
    fds::{Fds, NewFd},
    goheap::GoHeap,
    goroutines::{Goroutines, NewGoroutine, Park, Statuses},
    heap::{Heap, NewBlock},
    memory::{Books, Memory, NewMapping},
    resident::Resident,
    sites::{SiteIdx, Sites},
};
pub use crate::probe::points::AllocatorCode;
use crate::{
    event::{Event, GcPhase},
    stacks::{StackId, StackTable, golang::scan::GoroutineState},
};

/// What userspace noticed that makes a report less than complete.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Coverage {
    /// Events applied.
    pub events: u64,
    /// Frees (and reallocs) of blocks never seen allocated: made before attach.
    pub unknown_frees: u64,
    /// munmaps of ranges never seen mapped.
    pub unknown_unmaps: u64,
    /// Blocks returned at an address that was still live: a free was missed.
    pub address_reused: u64,
    /// Records that could not be decoded.
    pub decode_errors: u64,
    /// Events of a launched child before it exec'd (leaktracer's own code), ignored.
    pub pre_exec_events: u64,
    /// Blocks not tracked because the live table was full (`--max-live`).
    pub table_full: u64,
    /// Descriptors made at a number still live: a close was not seen.
    pub fd_reused: u64,
    /// Go heap samples freed by the sweeper that were never seen allocated.
    pub unknown_goheap_frees: u64,
    /// Closes of descriptors not known to be open (failed closes, mostly).
    pub unknown_closes: u64,
    /// Frees called from the allocator's own code (glibc freeing its per-thread cache
    /// at thread exit) of blocks it made without its public entry points: not misses.
    pub allocator_internal_frees: u64,
}

/// How the aggregator starts.
pub struct Start {
    /// Ignore everything until the target execs (a launched child).
    pub await_exec: bool,
    /// The target's current break, if known.
    pub brk: Option<u64>,
    /// CLOCK_MONOTONIC nanoseconds that birth times count from: the start of tracing.
    pub epoch_ns: u64,
    /// Live heap blocks tracked at most.
    pub max_live: usize,
    /// The traced process, to look at its descriptors again after exec.
    pub pid: u32,
    /// Descriptors open at attach (a running process).
    pub open_fds: Vec<i32>,
    /// `--mode growth`: memory is tracked as resident pages, not mappings.
    pub growth: bool,
    /// A Go program: how its runtime numbers goroutine statuses.
    pub go: Option<Statuses>,
    /// The traced allocator's code, to tell its own frees from misses.
    pub allocator: Option<AllocatorCode>,
}

pub struct Aggregator {
    pub sites: Sites,
    pub stacks: StackTable,
    pub coverage: Coverage,
    pub ending: Ending,
    heap: Heap,
    memory: Memory,
    fds: Fds,
    resident: Option<Resident>,
    goroutines: Option<Goroutines>,
    defers: Defers,
    pub goheap: GoHeap,
    await_exec: bool,
    pid: u32,
    allocator: Option<AllocatorCode>,
}

/// Age of live things, in seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Ages {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

/// Totals over everything live.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub heap_bytes: u64,
    pub heap_blocks: u64,
    pub mapped_bytes: u64,
    pub allocator_bytes: u64,
    pub loader_bytes: u64,
    /// Descriptors open (that tracing knows of).
    pub fds: u64,
    /// `--mode growth`: bytes of pages first touched since attach and still mapped.
    pub resident_bytes: u64,
    /// Go: live goroutines, and the Go heap's sampled estimate.
    pub goroutines: Option<u64>,
    pub goheap_bytes: u64,
    pub sites: u64,
    pub live_sites: u64,
}

/// Live (count, bytes) per site at one moment, counting only things old enough.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveFigures {
    /// Weighted: exact integers without sampling, estimates with.
    pub per_site: Vec<(f64, f64)>,
    pub totals: Totals,
}

/// Marks a site that belongs to no age group in [`Aggregator::ages`].
pub const NO_GROUP: u32 = u32::MAX;

impl Aggregator {
    pub fn new(stacks: StackTable, start: &Start) -> Self {
        let mut agg = Self {
            sites: Sites::default(),
            stacks,
            coverage: Coverage::default(),
            ending: Ending::default(),
            heap: Heap::new(start.epoch_ns, start.max_live),
            memory: Memory::new(start.brk),
            fds: Fds::default(),
            resident: start.growth.then(Resident::default),
            goroutines: start.go.map(Goroutines::new),
            defers: Defers::default(),
            goheap: GoHeap::default(),
            await_exec: start.await_exec,
            pid: start.pid,
            allocator: start.allocator.clone(),
        };
        if !start.open_fds.is_empty() {
            agg.fds.preexisting(&start.open_fds, start.epoch_ns, &mut agg.sites);
        }
        agg
    }

    pub fn apply(&mut self, event: &Event) {
        if self.await_exec {
            if matches!(event, Event::Exec { .. }) {
                self.await_exec = false;
                self.stacks.reset_code();
            } else {
                self.coverage.pre_exec_events += 1;
            }
            return;
        }
        self.coverage.events += 1;
        match *event {
            Event::StackSample(ref sample) => self.stacks.add_sample(sample),
            Event::Exec { ts_ns } => self.exec(ts_ns),
            Event::FdOpen { ts_ns, fd, syscall, stack } => {
                let stack = self.stack(stack);
                let new = NewFd { ts_ns, fd, syscall, stack };
                self.fds.open(new, &mut self.sites, &mut self.stacks, &mut self.coverage);
            }
            Event::FdClose { first, last, .. } => {
                self.fds.close(first, last, &mut self.sites, &mut self.coverage)
            }
            Event::OomVictim { .. } | Event::ProcessExit { .. } | Event::Signal { .. } => {
                self.ending.apply(event)
            }
            Event::GoCreate { .. }
            | Event::GoExit { .. }
            | Event::GoPark { .. }
            | Event::DeferPush { .. }
            | Event::DeferPop { .. }
            | Event::GoHeapAlloc { .. }
            | Event::GoHeapFree { .. }
            | Event::Gc { .. } => self.apply_go(event),
            _ if self.resident.is_some() => self.apply_growth(event),
            _ => self.apply_memory(event),
        }
    }

    /// The Go runtime's events.
    fn apply_go(&mut self, event: &Event) {
        match *event {
            Event::GoCreate { ts_ns, goid, gopc, startpc, stack, .. } => {
                let stack = self.stack(stack);
                if let Some(gs) = self.goroutines.as_mut() {
                    gs.create(
                        &NewGoroutine { ts_ns, goid, gopc, startpc, stack },
                        &mut self.sites,
                        &mut self.stacks,
                    );
                }
            }
            Event::GoExit { goid, .. } => {
                if let Some(gs) = self.goroutines.as_mut() {
                    gs.exit(goid, &mut self.sites);
                }
                self.defers.goroutine_ended(goid, &mut self.sites);
            }
            Event::GoPark { ts_ns, goid, reason, waiting } => {
                if let Some(gs) = self.goroutines.as_mut() {
                    gs.park(ts_ns, goid, reason, waiting);
                }
            }
            Event::DeferPush { ts_ns, goid, pc, stack } => {
                let stack = self.stack(stack);
                self.defers.push(ts_ns, goid, pc, stack, &mut self.sites, &mut self.stacks);
            }
            Event::DeferPop { goid, pc, .. } => self.defers.pop(goid, pc, &mut self.sites),
            Event::GoHeapAlloc { ts_ns, addr, size, stack } => {
                let stack = self.stack(stack);
                self.goheap.alloc(ts_ns, addr, size, stack, &mut self.sites, &mut self.stacks);
            }
            Event::GoHeapFree { addr, .. } => self.goheap.free(addr, &mut self.sites),
            Event::Gc { phase: GcPhase::Start, .. } => self.goheap.gc_started(&mut self.sites),
            Event::Gc { phase: GcPhase::Sweep { .. }, .. } => self.goheap.sweeps += 1,
            _ => {}
        }
    }

    /// What the Go runtime says every goroutine is doing now.
    pub fn goroutines_scanned(&mut self, states: &[GoroutineState], now_ns: u64) {
        if let Some(gs) = self.goroutines.as_mut() {
            gs.scanned(states, now_ns, &mut self.sites, &mut self.stacks);
        }
    }

    /// The parks of a site's live goroutines (`None` for those running).
    pub fn parks_of(&self, site: SiteIdx) -> Vec<Option<Park>> {
        self.goroutines.as_ref().map(|gs| gs.parks_of(site).collect()).unwrap_or_default()
    }

    /// A defer site's largest pile and its oldest push.
    pub fn largest_pile(&self, site: SiteIdx) -> Option<(u64, u64)> {
        self.defers.largest_pile(site)
    }

    /// Live goroutines (a Go target).
    /// Live goroutines in flight (born after `since_ns`, CLOCK_MONOTONIC, or not parked),
    /// by site.
    pub fn goroutines_in_flight(&self, since_ns: u64) -> Vec<(SiteIdx, u32)> {
        self.goroutines.as_ref().map(|gs| gs.in_flight(since_ns)).unwrap_or_default()
    }

    pub fn goroutine_count(&self) -> Option<u64> {
        self.goroutines.as_ref().map(Goroutines::count)
    }

    /// Goroutine exits never seen created, and goroutines that vanished unseen.
    pub fn goroutine_coverage(&self) -> (u64, u64) {
        self.goroutines.as_ref().map_or((0, 0), |gs| (gs.unknown_exits, gs.vanished))
    }

    /// Pops of deferred calls never seen pushed.
    pub fn unknown_defer_pops(&self) -> u64 {
        self.defers.unknown_pops
    }

    /// `--mode growth`: pages first touched, and the calls that give pages back.
    fn apply_growth(&mut self, event: &Event) {
        let stack = match *event {
            Event::PageFault { stack, .. } => self.stack(stack),
            _ => None,
        };
        let Some(resident) = self.resident.as_mut() else { return };
        match *event {
            Event::PageFault { ts_ns, addr, .. } => {
                resident.fault(ts_ns, addr, stack, &mut self.sites, &mut self.stacks)
            }
            Event::Munmap { addr, len, .. } | Event::Discard { addr, len, .. } => {
                resident.release(addr, len, &mut self.sites);
            }
            Event::Mremap { old_addr, old_len, .. } => resident.release(old_addr, old_len, &mut self.sites),
            Event::Brk { brk, requested, .. } if brk < requested => {}
            Event::Brk { brk, .. } => resident.release(brk, u64::MAX - brk, &mut self.sites),
            _ => {}
        }
    }

    /// The id an event's stack is filed under.
    fn stack(&mut self, stack: Option<StackId>) -> Option<StackId> {
        stack.map(|id| self.stacks.canonical(id))
    }

    fn books(&mut self) -> (&mut Memory, Books<'_>) {
        let books = Books { sites: &mut self.sites, stacks: &mut self.stacks, coverage: &mut self.coverage };
        (&mut self.memory, books)
    }

    fn apply_memory(&mut self, event: &Event) {
        match *event {
            Event::Alloc { ts_ns, addr, size, stack, func, threshold } => {
                let stack = self.stack(stack);
                let block = NewBlock { ts_ns, addr, size, stack, func, threshold };
                self.heap.allocate(&block, &mut self.sites, &mut self.stacks, &mut self.coverage);
            }
            Event::Free { addr, caller, .. } => self.free(addr, caller),
            Event::Realloc { ts_ns, old, addr, size, stack, func, threshold } => {
                if old != 0 && !self.heap.free(old, &mut self.sites) {
                    self.coverage.unknown_frees += 1;
                }
                let stack = self.stack(stack);
                let block = NewBlock { ts_ns, addr, size, stack, func, threshold };
                self.heap.allocate(&block, &mut self.sites, &mut self.stacks, &mut self.coverage);
            }
            Event::Mmap { ts_ns, addr, len, prot, flags, fd, stack, origin } => {
                let stack = self.stack(stack);
                let (memory, mut books) = self.books();
                memory.mmap(&NewMapping { ts_ns, addr, len, prot, flags, fd, stack, origin }, &mut books);
            }
            Event::Munmap { addr, len, .. } => {
                let (memory, mut books) = self.books();
                memory.munmap(addr, len, &mut books);
            }
            Event::Mremap { ts_ns, old_addr, old_len, addr, len, flags, stack, origin } => {
                let stack = self.stack(stack);
                let (memory, mut books) = self.books();
                let new = NewMapping { ts_ns, addr, len, prot: 0, flags, fd: None, stack, origin };
                memory.mremap(old_addr, old_len, &new, &mut books);
            }
            Event::Brk { ts_ns, brk, stack, origin, .. } => {
                let stack = self.stack(stack);
                let (memory, mut books) = self.books();
                memory.brk(ts_ns, brk, stack, origin, &mut books);
            }
            _ => {}
        }
    }

    /// A new image: its memory is new; descriptors without close-on-exec stay.
    fn exec(&mut self, ts_ns: u64) {
        self.heap.clear();
        self.memory.clear();
        if let Some(resident) = self.resident.as_mut() {
            resident.clear();
        }
        for (idx, site) in self.sites.iter().map(|(i, s)| (i, s.key.kind)).collect::<Vec<_>>() {
            if site != sites::SiteKind::Fd {
                let s = self.sites.get_mut(idx);
                s.live_count = 0.0;
                s.live_bytes = 0.0;
            }
        }
        if let Ok(open) = crate::target::proc::open_fds(self.pid) {
            let numbers: Vec<i32> = open.iter().map(|(fd, _)| *fd).collect();
            self.fds.reconcile(&numbers, &mut self.sites);
            self.fds.preexisting(&numbers, ts_ns, &mut self.sites);
        }
        self.stacks.reset_code();
    }

    /// The live descriptors of a site (for reports to say what they are).
    pub fn fds_of(&self, site: SiteIdx) -> Vec<i32> {
        self.fds.of_site(site).collect()
    }

    /// Live figures at `now_ns`, counting only things at least `min_age_ns` old (totals
    /// count everything).
    pub fn live_figures(&self, now_ns: u64, min_age_ns: u64) -> LiveFigures {
        let old_enough = |born: u64| now_ns.saturating_sub(born) >= min_age_ns;
        let mut per_site = vec![(0.0, 0.0); self.sites.len()];
        let (heap_blocks, heap_bytes) = self.heap.live(&mut per_site, &old_enough);
        let ranges = self.memory.live(&mut per_site, &old_enough);
        let fds = self.fds.live(&mut per_site, &old_enough);
        let resident_bytes = self.resident.as_ref().map_or(0, |r| r.live(&mut per_site, &old_enough));
        let goroutines = self.goroutines.as_ref().map(|gs| gs.live(&mut per_site, &old_enough));
        self.defers.live(&mut per_site, &old_enough);
        let goheap_bytes = self.goheap.live(&mut per_site, &old_enough).round() as u64;
        let totals = Totals {
            heap_bytes: heap_bytes.round() as u64,
            heap_blocks: heap_blocks.round() as u64,
            mapped_bytes: ranges.mapped_bytes,
            allocator_bytes: ranges.allocator_bytes,
            loader_bytes: ranges.loader_bytes,
            fds,
            resident_bytes,
            goroutines,
            goheap_bytes,
            sites: self.sites.len() as u64,
            live_sites: per_site.iter().filter(|l| l.0 > 0.0).count() as u64,
        };
        LiveFigures { per_site, totals }
    }

    fn free(&mut self, addr: u64, caller: u64) {
        if !self.heap.free(addr, &mut self.sites) {
            self.unknown_free(caller);
        }
    }

    /// A free of a block never seen allocated: from the allocator's own code, one of its
    /// own blocks; from anywhere else, a block made before attach (or a miss).
    fn unknown_free(&mut self, caller: u64) {
        let location = self.stacks.modules.lookup(caller);
        let at = location.and_then(|l| Some((self.stacks.modules.module(l.module?).path.as_str(), l.offset)));
        let internal = match (&self.allocator, at) {
            (Some(code), Some((module, offset))) => code.module == module && code.offsets.contains(&offset),
            _ => false,
        };
        if internal {
            self.coverage.allocator_internal_frees += 1;
            return;
        }
        self.coverage.unknown_frees += 1;
        if self.coverage.unknown_frees <= 100 {
            log::debug!("free of a block not seen allocated, called from {caller:#x} ({at:?})");
        }
    }

    /// Calls `f(site, born_ns)` for every live thing of every kind.
    fn births(&self, f: &mut dyn FnMut(SiteIdx, u64)) {
        self.heap.births(f);
        self.memory.births(f);
        self.fds.births(f);
        if let Some(resident) = &self.resident {
            resident.births(f);
        }
        if let Some(gs) = &self.goroutines {
            gs.births(f);
        }
        self.defers.births(f);
        self.goheap.births(f);
    }

    /// Ages of the live things (at least `min_age_ns` old) of groups of sites:
    /// `group_of[site]` is the group's index below `groups`, or [`NO_GROUP`].
    pub fn ages(&self, now_ns: u64, min_age_ns: u64, group_of: &[u32], groups: usize) -> Vec<Ages> {
        // Milliseconds, three significant digits; the oldest is kept exactly.
        let mut histograms: Vec<(Histogram<u64>, u64)> =
            (0..groups).map(|_| (Histogram::new(3).expect("3 significant figures is valid"), 0)).collect();
        self.births(&mut |site, born| {
            let Some(&g) = group_of.get(site as usize) else { return };
            let age_ns = now_ns.saturating_sub(born);
            if g != NO_GROUP && age_ns >= min_age_ns {
                let ms = age_ns / 1_000_000;
                let (h, max) = &mut histograms[g as usize];
                // An auto-resizing histogram takes any value.
                let _ = h.record(ms);
                *max = (*max).max(ms);
            }
        });
        histograms.iter().map(|(h, max)| ages_of(h, *max)).collect()
    }
}

fn ages_of(h: &Histogram<u64>, max: u64) -> Ages {
    if h.is_empty() {
        return Ages::default();
    }
    let secs = |ms: u64| ms as f64 / 1000.0;
    let quantile = |q: f64| secs(h.median_equivalent(h.value_at_quantile(q)).min(max));
    Ages { p50: quantile(0.5), p99: quantile(0.99), max: secs(max) }
}

#[cfg(test)]
mod tests;
