//! Heap-allocated deferred calls (`defer` in a loop): piles by (goroutine, `defer`
//! statement). Pops come last-in first-out within a goroutine; a goroutine that ends
//! takes its piles with it.

use std::collections::HashMap;

use super::sites::{SiteIdx, SiteKey, SiteKind, Sites};
use crate::stacks::{StackId, StackTable};

#[derive(Debug, Default)]
struct Pile {
    site: SiteIdx,
    /// Push times, oldest first.
    pushed: Vec<u64>,
}

#[derive(Default)]
pub struct Defers {
    piles: HashMap<(u64, u64), Pile>,
    /// `defer` statements of each goroutine with a pile.
    by_goroutine: HashMap<u64, Vec<u64>>,
    /// Pops of deferred calls never seen pushed (pushed before attach).
    pub unknown_pops: u64,
}

impl Defers {
    pub fn push(
        &mut self,
        ts_ns: u64,
        goid: u64,
        pc: u64,
        stack: Option<StackId>,
        sites: &mut Sites,
        stacks: &mut StackTable,
    ) {
        if let Some(id) = stack {
            stacks.ensure(id);
        }
        let site = sites.intern(SiteKey { kind: SiteKind::Defer, stack, detail: pc });
        sites.get_mut(site).born(0, 1.0);
        let pile = self.piles.entry((goid, pc)).or_insert_with(|| Pile { site, pushed: Vec::new() });
        if pile.pushed.is_empty() {
            self.by_goroutine.entry(goid).or_default().push(pc);
        }
        pile.pushed.push(ts_ns);
    }

    pub fn pop(&mut self, goid: u64, pc: u64, sites: &mut Sites) {
        let Some(pile) = self.piles.get_mut(&(goid, pc)) else {
            self.unknown_pops += 1;
            return;
        };
        pile.pushed.pop();
        sites.get_mut(pile.site).released(0, true, 1.0);
        if pile.pushed.is_empty() {
            self.piles.remove(&(goid, pc));
            if let Some(pcs) = self.by_goroutine.get_mut(&goid) {
                pcs.retain(|p| *p != pc);
                if pcs.is_empty() {
                    self.by_goroutine.remove(&goid);
                }
            }
        }
    }

    /// A goroutine ended: whatever it had deferred is gone with it.
    pub fn goroutine_ended(&mut self, goid: u64, sites: &mut Sites) {
        for pc in self.by_goroutine.remove(&goid).unwrap_or_default() {
            if let Some(pile) = self.piles.remove(&(goid, pc)) {
                let site = sites.get_mut(pile.site);
                for _ in &pile.pushed {
                    site.released(0, true, 1.0);
                }
            }
        }
    }

    pub fn live(&self, per_site: &mut [(f64, f64)], old_enough: &dyn Fn(u64) -> bool) {
        for pile in self.piles.values() {
            per_site[pile.site as usize].0 += pile.pushed.iter().filter(|t| old_enough(**t)).count() as f64;
        }
    }

    pub fn births(&self, f: &mut dyn FnMut(SiteIdx, u64)) {
        for pile in self.piles.values() {
            for &t in &pile.pushed {
                f(pile.site, t);
            }
        }
    }

    /// The largest pile of a site, and its oldest push.
    pub fn largest_pile(&self, site: SiteIdx) -> Option<(u64, u64)> {
        self.piles
            .values()
            .filter(|p| p.site == site)
            .map(|p| (p.pushed.len() as u64, p.pushed.first().copied().unwrap_or(0)))
            .max_by_key(|(n, _)| *n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stacks::{modules::ModuleMap, table::NoStacks};

    #[test]
    fn piles_grow_pop_and_go_with_their_goroutine() {
        let mut sites = Sites::default();
        let mut stacks = StackTable::new(Box::new(NoStacks), ModuleMap::from_entries(&[]));
        let mut d = Defers::default();
        for i in 0..10 {
            d.push(i, 1, 0x400, None, &mut sites, &mut stacks);
        }
        d.push(5, 2, 0x400, None, &mut sites, &mut stacks);
        assert_eq!(sites.get(0).live_count, 11.0);
        assert_eq!(d.largest_pile(0), Some((10, 0)));
        d.pop(1, 0x400, &mut sites);
        d.pop(3, 0x999, &mut sites);
        assert_eq!((sites.get(0).live_count, d.unknown_pops), (10.0, 1));
        d.goroutine_ended(1, &mut sites);
        assert_eq!(sites.get(0).live_count, 1.0);
        d.pop(2, 0x400, &mut sites);
        assert!(d.piles.is_empty() && d.by_goroutine.is_empty());
    }
}
