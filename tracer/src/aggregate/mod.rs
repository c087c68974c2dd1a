//! The aggregator: applies events to the live tables and keeps per-site figures.
//!
//! Heap blocks are keyed by address; mappings and break growth by address range. Every
//! live object points at the site that made it, so a release is charged back to its
//! site. Memory an allocator maps for its own arenas, and libraries the dynamic loader
//! maps, are tracked (a later munmap must find them) but belong to no site: the blocks
//! carved from them are already charged to their callers.

pub mod hash;
mod heap;
pub mod mappings;
pub mod sites;
pub mod stacks;

use hdrhistogram::Histogram;

use self::{
    hash::AddrMap,
    heap::ShardedMap,
    mappings::{Owner, RangeTable, Released},
    sites::{SiteIdx, SiteKey, SiteKind, Sites},
    stacks::StackTable,
};
use crate::event::{Event, Origin, StackId};

const MAP_ANONYMOUS: u64 = 0x20;
const PROT_EXEC: u32 = 0x4;
const MREMAP_DONTUNMAP: u64 = 4;

/// A live heap block: 16 bytes, so that tracking millions of blocks stays cheap.
#[derive(Debug, Clone, Copy)]
struct Block {
    /// Requested size; `LARGE` for 4 GiB and more (the size is then in `large`).
    size: u32,
    /// Milliseconds after the aggregator's epoch (49 days of range).
    born_ms: u32,
    site: SiteIdx,
    /// How many blocks it stands for: 1, or with sampling the inverse of the probability
    /// it was drawn with.
    weight: f32,
}

const LARGE: u32 = u32::MAX;

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

pub struct Aggregator {
    pub sites: Sites,
    pub stacks: StackTable,
    pub coverage: Coverage,
    heap: ShardedMap<Block>,
    /// Sizes of the blocks of 4 GiB and more.
    large: AddrMap<u64>,
    /// CLOCK_MONOTONIC nanoseconds that heap birth times count from.
    epoch_ns: u64,
    ranges: RangeTable,
    brk: Option<u64>,
    await_exec: bool,
    page: u64,
    released: Vec<Released>,
    /// At most this many live heap blocks are tracked, so memory stays bounded even when
    /// lost events leave frees unseen.
    max_live: usize,
}

/// Age of live allocations, in seconds.
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

/// Live (count, bytes) per site at one moment, counting only allocations old enough.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveFigures {
    /// Weighted: exact integers without sampling, estimates with.
    pub per_site: Vec<(f64, f64)>,
    pub totals: Totals,
}

/// Marks a site that belongs to no age group in [`Aggregator::ages`].
pub const NO_GROUP: u32 = u32::MAX;

impl Aggregator {
    /// `await_exec`: ignore everything until the target execs (a launched child).
    /// `brk`: the target's current break, if known.
    pub fn new(stacks: StackTable, await_exec: bool, brk: Option<u64>) -> Self {
        Self {
            sites: Sites::default(),
            stacks,
            coverage: Coverage::default(),
            heap: ShardedMap::default(),
            large: AddrMap::default(),
            epoch_ns: 0,
            ranges: RangeTable::default(),
            brk,
            await_exec,
            page: crate::target::page_size(),
            released: Vec::new(),
            max_live: usize::MAX,
        }
    }

    /// Birth times of heap blocks count from `epoch_ns` (CLOCK_MONOTONIC): the start of
    /// tracing.
    pub fn with_epoch(mut self, epoch_ns: u64) -> Self {
        self.epoch_ns = epoch_ns;
        self
    }

    fn born_ms(&self, ts_ns: u64) -> u32 {
        u32::try_from(ts_ns.saturating_sub(self.epoch_ns) / 1_000_000).unwrap_or(u32::MAX)
    }

    fn born_ns(&self, block: &Block) -> u64 {
        self.epoch_ns + u64::from(block.born_ms) * 1_000_000
    }

    fn size_of(&self, addr: u64, block: &Block) -> u64 {
        if block.size == LARGE {
            self.large.get(&addr).copied().unwrap_or(u64::from(LARGE))
        } else {
            u64::from(block.size)
        }
    }

    /// Caps the live heap table; blocks beyond it are counted, not tracked.
    pub fn with_max_live(mut self, max_live: usize) -> Self {
        self.max_live = max_live;
        self
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
            Event::Alloc { ts_ns, addr, size, stack, func, threshold } => {
                self.allocate(ts_ns, addr, size, stack, func, threshold);
            }
            Event::Free { addr, .. } => self.free(addr),
            Event::Realloc { ts_ns, old, addr, size, stack, func, threshold } => {
                if old != 0 {
                    self.free(old);
                }
                self.allocate(ts_ns, addr, size, stack, func, threshold);
            }
            Event::Mmap { ts_ns, addr, len, prot, flags, fd, stack, origin } => {
                if prot & PROT_EXEC != 0 {
                    self.stacks.modules.mark_dirty();
                }
                let file = flags & MAP_ANONYMOUS == 0 && fd.is_some();
                let owner = self.owner(origin, SiteKind::Mmap { file }, stack);
                let len = self.pages(len);
                self.map(addr, len, owner, ts_ns);
            }
            Event::Munmap { addr, len, .. } => {
                let len = self.pages(len);
                if self.unmap(addr, len).is_empty() {
                    self.coverage.unknown_unmaps += 1;
                }
            }
            Event::Mremap { ts_ns, old_addr, old_len, addr, len, flags, stack, origin } => {
                // The moved mapping keeps its backing; an unknown one counts as anonymous.
                let mut file = false;
                if flags & MREMAP_DONTUNMAP == 0 {
                    let old_len = self.pages(old_len);
                    for owner in self.unmap(old_addr, old_len) {
                        if let Owner::Site(s) = owner
                            && let SiteKind::Mmap { file: f } = self.sites.get(s).key.kind
                        {
                            file = f;
                        }
                    }
                }
                let owner = self.owner(origin, SiteKind::Mmap { file }, stack);
                let len = self.pages(len);
                self.map(addr, len, owner, ts_ns);
            }
            Event::Brk { ts_ns, brk, stack, origin, .. } => {
                match self.brk {
                    Some(current) if brk > current => {
                        let owner = self.owner(origin, SiteKind::Brk, stack);
                        self.map(current, brk - current, owner, ts_ns);
                    }
                    Some(current) if brk < current => {
                        self.unmap(brk, current - brk);
                    }
                    _ => {}
                }
                self.brk = Some(brk);
            }
            Event::Exec { .. } => {
                // A new image: everything of the old one is gone.
                self.heap.clear();
                self.large.clear();
                self.ranges.clear();
                self.sites.clear_live();
                self.brk = None;
                self.stacks.reset_code();
            }
        }
    }

    fn allocate(
        &mut self,
        ts_ns: u64,
        addr: u64,
        size: u64,
        stack: Option<StackId>,
        func: u32,
        threshold: u32,
    ) {
        let site = self.sites.intern(SiteKey { kind: SiteKind::Heap, stack, func });
        if let Some(id) = stack {
            // Read the stack while the process can still say where its code is. A stack
            // that cannot be read is counted; the block still counts, at its site.
            self.stacks.ensure(id);
        }
        let reused = self.heap.contains_key(&addr);
        if !reused && self.heap.len() >= self.max_live {
            self.coverage.table_full += 1;
            return;
        }
        let weight = weight_of(threshold);
        self.sites.get_mut(site).born(size, f64::from(weight));
        if reused {
            self.coverage.address_reused += 1;
            self.free(addr);
        }
        let compact = match u32::try_from(size) {
            Ok(small) if small != LARGE => small,
            _ => {
                self.large.insert(addr, size);
                LARGE
            }
        };
        let born_ms = self.born_ms(ts_ns);
        self.heap.insert(addr, Block { size: compact, born_ms, site, weight });
    }

    fn free(&mut self, addr: u64) {
        match self.heap.remove(&addr) {
            Some(block) => {
                let size = self.size_of(addr, &block);
                if block.size == LARGE {
                    self.large.remove(&addr);
                }
                self.sites.get_mut(block.site).released(size, true, f64::from(block.weight));
            }
            None => self.coverage.unknown_frees += 1,
        }
    }

    /// Who a new range belongs to.
    fn owner(&mut self, origin: Origin, kind: SiteKind, stack: Option<StackId>) -> Owner {
        if origin == Origin::Allocator {
            return Owner::Allocator;
        }
        if let Some(id) = stack
            && self.stacks.resolve(id).is_some_and(|s| s.in_loader)
        {
            return Owner::Loader;
        }
        Owner::Site(self.sites.intern(SiteKey { kind, stack, func: 0 }))
    }

    fn map(&mut self, addr: u64, len: u64, owner: Owner, ts_ns: u64) {
        self.released.clear();
        let mut released = std::mem::take(&mut self.released);
        self.ranges.insert(addr, len, owner, ts_ns, &mut released);
        self.charge(&released);
        self.released = released;
        if let Owner::Site(s) = owner {
            self.sites.get_mut(s).born(len, 1.0);
        }
    }

    /// Releases a range; returns the owners it took from.
    fn unmap(&mut self, addr: u64, len: u64) -> Vec<Owner> {
        let mut released = Vec::new();
        self.ranges.remove(addr, len, &mut released);
        self.charge(&released);
        released.iter().map(|r| r.owner).collect()
    }

    fn charge(&mut self, released: &[Released]) {
        for r in released {
            if let Owner::Site(s) = r.owner {
                self.sites.get_mut(s).released(r.bytes, r.whole, 1.0);
            }
        }
    }

    fn pages(&self, len: u64) -> u64 {
        len.div_ceil(self.page).saturating_mul(self.page)
    }

    /// Live figures at `now_ns`, counting only allocations at least `min_age_ns` old
    /// (totals count everything).
    pub fn live_figures(&self, now_ns: u64, min_age_ns: u64) -> LiveFigures {
        let old_enough = |born: u64| now_ns.saturating_sub(born) >= min_age_ns;
        let mut per_site = vec![(0.0, 0.0); self.sites.len()];
        let mut totals = Totals { sites: self.sites.len() as u64, ..Totals::default() };
        let (mut heap_blocks, mut heap_bytes) = (0.0, 0.0);
        for (&addr, block) in self.heap.iter() {
            let weight = f64::from(block.weight);
            let size = self.size_of(addr, block) as f64;
            heap_blocks += weight;
            heap_bytes += size * weight;
            if old_enough(self.born_ns(block)) {
                let l = &mut per_site[block.site as usize];
                l.0 += weight;
                l.1 += size * weight;
            }
        }
        (totals.heap_blocks, totals.heap_bytes) = (heap_blocks.round() as u64, heap_bytes.round() as u64);
        for range in self.ranges.iter() {
            match range.owner {
                Owner::Site(s) => {
                    totals.mapped_bytes += range.bytes;
                    if old_enough(range.born_ns) {
                        let l = &mut per_site[s as usize];
                        l.0 += 1.0;
                        l.1 += range.bytes as f64;
                    }
                }
                Owner::Allocator => totals.allocator_bytes += range.bytes,
                Owner::Loader => totals.loader_bytes += range.bytes,
            }
        }
        totals.live_sites = per_site.iter().filter(|l| l.0 > 0.0).count() as u64;
        LiveFigures { per_site, totals }
    }

    /// Ages of the live allocations (at least `min_age_ns` old) of groups of sites:
    /// `group_of[site]` is the group's index below `groups`, or [`NO_GROUP`].
    pub fn ages(&self, now_ns: u64, min_age_ns: u64, group_of: &[u32], groups: usize) -> Vec<Ages> {
        // Milliseconds, three significant digits; the oldest is kept exactly.
        let mut histograms: Vec<(Histogram<u64>, u64)> =
            (0..groups).map(|_| (Histogram::new(3).expect("3 significant figures is valid"), 0)).collect();
        let mut record = |site: SiteIdx, born: u64| {
            let Some(&g) = group_of.get(site as usize) else { return };
            let age_ns = now_ns.saturating_sub(born);
            if g != NO_GROUP && age_ns >= min_age_ns {
                let ms = age_ns / 1_000_000;
                let (h, max) = &mut histograms[g as usize];
                // An auto-resizing histogram takes any value.
                let _ = h.record(ms);
                *max = (*max).max(ms);
            }
        };
        for block in self.heap.values() {
            record(block.site, self.born_ns(block));
        }
        for range in self.ranges.iter() {
            if let Owner::Site(s) = range.owner {
                record(s, range.born_ns);
            }
        }
        histograms
            .iter()
            .map(|(h, max)| {
                if h.is_empty() {
                    return Ages::default();
                }
                let secs = |ms: u64| ms as f64 / 1000.0;
                let quantile = |q: f64| secs(h.median_equivalent(h.value_at_quantile(q)).min(*max));
                Ages { p50: quantile(0.5), p99: quantile(0.99), max: secs(*max) }
            })
            .collect()
    }
}

/// The weight of a block drawn with `threshold` (0: not sampled, weight 1).
fn weight_of(threshold: u32) -> f32 {
    if threshold == 0 { 1.0 } else { (f64::from(u32::MAX) / f64::from(threshold)) as f32 }
}

#[cfg(test)]
mod tests;
