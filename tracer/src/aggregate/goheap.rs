//! The Go heap, from the runtime's own heap profiler: objects it sampled
//! (`profilealloc`), by allocation site, until the sweeper frees them (`freeSpecial`).
//! Each sample stands for 1/p objects, p = 1 - exp(-size/MemProfileRate), as `go tool
//! pprof` scales `inuse_space`. Collection cycles are counted, so a sample's age can be
//! said in cycles survived.
//!
//! Live means live as of the last completed collection, as in the runtime's own heap
//! profile: an object counts as made at once, and joins the live figures only when the
//! second collection after it starts. By then the first has marked it and swept (a
//! collection starts only once the previous one's sweep is done): had it been garbage,
//! the sweeper would have freed it. Without this, a site that only makes garbage would
//! seem to grow with the heap, as the time between collections grows.

use std::collections::HashMap;

use super::sites::{SiteIdx, SiteKey, SiteKind, Sites};
use crate::stacks::{StackId, StackTable};

#[derive(Debug, Clone, Copy)]
struct Sample {
    site: SiteIdx,
    size: u64,
    weight: f64,
    born_ns: u64,
    cycle: u64,
    /// In the live figures: a whole collection has passed since it was made.
    counted: bool,
}

#[derive(Default)]
pub struct GoHeap {
    live: HashMap<u64, Sample>,
    /// The program's `MemProfileRate`, when known.
    rate: Option<u64>,
    /// Collections started since attach.
    pub cycles: u64,
    /// Sweeps seen since the live heap was last read.
    pub sweeps: u64,
}

impl GoHeap {
    pub fn set_rate(&mut self, rate: Option<u64>) {
        self.rate = rate;
    }

    pub fn rate(&self) -> Option<u64> {
        self.rate
    }

    pub fn alloc(
        &mut self,
        ts_ns: u64,
        addr: u64,
        size: u64,
        stack: Option<StackId>,
        sites: &mut Sites,
        stacks: &mut StackTable,
    ) {
        if let Some(id) = stack {
            stacks.ensure(id);
        }
        if self.live.contains_key(&addr) {
            // The sweeper freed it without our seeing: free it now.
            self.free(addr, sites);
        }
        let weight = weight(size, self.rate.unwrap_or(0));
        let site = sites.intern(SiteKey { kind: SiteKind::GoHeap, stack, detail: 0 });
        sites.get_mut(site).made(size, weight);
        let sample = Sample { site, size, weight, born_ns: ts_ns, cycle: self.cycles, counted: false };
        self.live.insert(addr, sample);
    }

    pub fn free(&mut self, addr: u64, sites: &mut Sites) {
        if let Some(s) = self.live.remove(&addr) {
            let site = sites.get_mut(s.site);
            if s.counted {
                site.released(s.size, true, s.weight);
            } else {
                site.released_unseen(s.size, s.weight);
            }
        }
    }

    /// A collection began: what a whole collection since its birth has not freed is live.
    pub fn gc_started(&mut self, sites: &mut Sites) {
        self.cycles += 1;
        let cycles = self.cycles;
        for s in self.live.values_mut().filter(|s| !s.counted && cycles >= s.cycle + 2) {
            s.counted = true;
            sites.get_mut(s.site).became_live(s.size, s.weight);
        }
    }

    pub fn live(&self, per_site: &mut [(f64, f64)], old_enough: &dyn Fn(u64) -> bool) -> f64 {
        let mut total = 0.0;
        for s in self.live.values().filter(|s| s.counted) {
            total += s.size as f64 * s.weight;
            if old_enough(s.born_ns) {
                let l = &mut per_site[s.site as usize];
                l.0 += s.weight;
                l.1 += s.size as f64 * s.weight;
            }
        }
        total
    }

    pub fn births(&self, f: &mut dyn FnMut(SiteIdx, u64)) {
        for s in self.live.values().filter(|s| s.counted) {
            f(s.site, s.born_ns);
        }
    }

    /// Collections each live sample of a site has survived.
    pub fn cycles_survived(&self, site: SiteIdx) -> impl Iterator<Item = u64> + '_ {
        self.live
            .values()
            .filter(move |s| s.site == site && s.counted)
            .map(|s| self.cycles.saturating_sub(s.cycle))
    }
}

/// How many objects a sample of `size` bytes stands for at `rate` (1 when every
/// allocation is sampled, or the rate is unknown).
pub fn weight(size: u64, rate: u64) -> f64 {
    if rate <= 1 || size == 0 {
        return 1.0;
    }
    1.0 / (1.0 - (-(size as f64) / rate as f64).exp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_scale_like_go_tool_pprof() {
        // A 64 KiB object at the default 512 KiB rate: p = 1 - e^-0.125.
        assert!((weight(65536, 524_288) - 1.0 / (1.0 - (-0.125f64).exp())).abs() < 1e-12);
        assert!((weight(65536, 524_288) - 8.51).abs() < 0.01);
        assert_eq!(weight(100, 1), 1.0, "MemProfileRate 1 samples everything");
        // A huge object is always sampled.
        assert!((weight(1 << 30, 524_288) - 1.0).abs() < 1e-9);
    }
}
