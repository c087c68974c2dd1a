//! The aggregator: applies events to the live tables and keeps per-site figures.
//!
//! One module per kind of tracked thing owns that kind's live table: `heap` (blocks by
//! address), `memory` (mappings and break growth by address range). Every live thing
//! points at the site that made it (`sites`), so its release is charged back to that
//! site. This module only dispatches events and sums what the tables say.

pub mod hash;
mod heap;
pub mod mappings;
mod memory;
mod sharded;
pub mod sites;

use hdrhistogram::Histogram;

use self::{
    heap::{Heap, NewBlock},
    memory::{Books, Memory, NewMapping},
    sites::{SiteIdx, Sites},
};
use crate::{
    event::Event,
    stacks::{StackId, StackTable},
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
}

pub struct Aggregator {
    pub sites: Sites,
    pub stacks: StackTable,
    pub coverage: Coverage,
    heap: Heap,
    memory: Memory,
    await_exec: bool,
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
        Self {
            sites: Sites::default(),
            stacks,
            coverage: Coverage::default(),
            heap: Heap::new(start.epoch_ns, start.max_live),
            memory: Memory::new(start.brk),
            await_exec: start.await_exec,
        }
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
            Event::Exec { .. } => self.exec(),
            _ => self.apply_memory(event),
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
            Event::Free { addr, .. } => self.heap.free(addr, &mut self.sites, &mut self.coverage),
            Event::Realloc { ts_ns, old, addr, size, stack, func, threshold } => {
                if old != 0 {
                    self.heap.free(old, &mut self.sites, &mut self.coverage);
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

    /// A new image: everything of the old one is gone.
    fn exec(&mut self) {
        self.heap.clear();
        self.memory.clear();
        self.sites.clear_live();
        self.stacks.reset_code();
    }

    /// Live figures at `now_ns`, counting only things at least `min_age_ns` old (totals
    /// count everything).
    pub fn live_figures(&self, now_ns: u64, min_age_ns: u64) -> LiveFigures {
        let old_enough = |born: u64| now_ns.saturating_sub(born) >= min_age_ns;
        let mut per_site = vec![(0.0, 0.0); self.sites.len()];
        let (heap_blocks, heap_bytes) = self.heap.live(&mut per_site, &old_enough);
        let ranges = self.memory.live(&mut per_site, &old_enough);
        let totals = Totals {
            heap_bytes: heap_bytes.round() as u64,
            heap_blocks: heap_blocks.round() as u64,
            mapped_bytes: ranges.mapped_bytes,
            allocator_bytes: ranges.allocator_bytes,
            loader_bytes: ranges.loader_bytes,
            sites: self.sites.len() as u64,
            live_sites: per_site.iter().filter(|l| l.0 > 0.0).count() as u64,
        };
        LiveFigures { per_site, totals }
    }

    /// Calls `f(site, born_ns)` for every live thing of every kind.
    fn births(&self, f: &mut dyn FnMut(SiteIdx, u64)) {
        self.heap.births(f);
        self.memory.births(f);
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
