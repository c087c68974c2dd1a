//! Goroutines: the live table, keyed by goroutine id (never reused, unlike the runtime's
//! g structs), each pointing at its creation site. What each one waits on comes from
//! `gopark` events, confirmed (and corrected: wake-ups are not probed) by periodic reads
//! of the runtime's own list (`allgs`), which also brings in the goroutines that existed
//! before attach.

use std::collections::HashMap;

use super::sites::{SiteIdx, SiteKey, SiteKind, Sites};
use crate::stacks::{StackId, StackTable, golang::scan::GoroutineState};

/// How the runtime numbers what the aggregator needs to read in a scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Statuses {
    pub waiting: u64,
    pub leaked: Option<u64>,
}

/// Why and since when a goroutine is parked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Park {
    pub reason: u32,
    pub since_ns: u64,
    /// A sudog is queued: something could wake it (false for a select on nil channels).
    pub waiting: bool,
    /// The runtime marked it leaked (Go 1.26+, after a goroutine-leak profile).
    pub leaked: bool,
}

#[derive(Debug, Clone, Copy)]
struct G {
    site: SiteIdx,
    born_ns: u64,
    parked: Option<Park>,
}

/// A goroutine just created, as the aggregator hands it over.
pub struct NewGoroutine {
    pub ts_ns: u64,
    pub goid: u64,
    pub gopc: u64,
    pub startpc: u64,
    pub stack: Option<StackId>,
}

pub struct Goroutines {
    live: HashMap<u64, G>,
    statuses: Statuses,
    /// Exits of goroutines never seen (created before attach and not yet scanned).
    pub unknown_exits: u64,
    /// Goroutines known here that a scan no longer found: their exit was lost.
    pub vanished: u64,
}

impl Goroutines {
    pub fn new(statuses: Statuses) -> Self {
        Self { live: HashMap::new(), statuses, unknown_exits: 0, vanished: 0 }
    }

    pub fn create(&mut self, g: &NewGoroutine, sites: &mut Sites, stacks: &mut StackTable) {
        let stack = match g.stack {
            Some(id) => {
                stacks.ensure(id);
                Some(id)
            }
            None => Some(stacks.synthetic(&[g.gopc])),
        };
        let site = sites.intern(SiteKey { kind: SiteKind::Goroutine, stack, detail: g.startpc });
        sites.get_mut(site).born(0, 1.0);
        let mut fresh = G { site, born_ns: g.ts_ns, parked: None };
        // A scan can meet a goroutine before its creation event is read (the event was
        // still in the ring). The scan's provisional entry, at the `go` statement alone,
        // gives way to the event's, which has the creation stack; left counted, it would
        // be a goroutine that never ends.
        if let Some(provisional) = self.live.remove(&g.goid) {
            sites.get_mut(provisional.site).released(0, true, 1.0);
            fresh.parked = provisional.parked;
        }
        self.live.insert(g.goid, fresh);
    }

    pub fn exit(&mut self, goid: u64, sites: &mut Sites) {
        match self.live.remove(&goid) {
            Some(g) => sites.get_mut(g.site).released(0, true, 1.0),
            None => self.unknown_exits += 1,
        }
    }

    pub fn park(&mut self, ts_ns: u64, goid: u64, reason: u32, waiting: bool) {
        if let Some(g) = self.live.get_mut(&goid) {
            g.parked = Some(Park { reason, since_ns: ts_ns, waiting, leaked: false });
        }
    }

    /// What the runtime says every goroutine is doing now, read at `now_ns`.
    pub fn scanned(
        &mut self,
        states: &[GoroutineState],
        now_ns: u64,
        sites: &mut Sites,
        stacks: &mut StackTable,
    ) {
        let mut seen = std::collections::HashSet::with_capacity(states.len());
        for s in states {
            seen.insert(s.goid);
            if !self.live.contains_key(&s.goid) {
                // There before attach (or its creation was lost): only the `go`
                // statement is known of its creation.
                let new = NewGoroutine {
                    ts_ns: now_ns,
                    goid: s.goid,
                    gopc: s.gopc,
                    startpc: s.startpc,
                    stack: None,
                };
                self.create(&new, sites, stacks);
            }
            let statuses = self.statuses;
            let Some(g) = self.live.get_mut(&s.goid) else { continue };
            let status = s.status;
            let leaked = statuses.leaked == Some(status);
            g.parked = if status == statuses.waiting || leaked {
                let reason = u32::from(s.wait_reason);
                let since_ns = g.parked.filter(|p| p.reason == reason).map_or(now_ns, |p| p.since_ns);
                Some(Park { reason, since_ns, waiting: s.waiting, leaked })
            } else {
                None
            };
        }
        // Goroutines created before this scan began but not in it have ended unseen.
        let gone: Vec<u64> = self
            .live
            .iter()
            .filter(|(id, g)| !seen.contains(id) && g.born_ns < now_ns)
            .map(|(id, _)| *id)
            .collect();
        for goid in gone {
            self.exit(goid, sites);
            self.vanished += 1;
        }
    }

    /// Live goroutines that are work in flight, by site: born after `since_ns`, or not
    /// parked (running, runnable, in a syscall).
    pub fn in_flight(&self, since_ns: u64) -> Vec<(SiteIdx, u32)> {
        let mut by_site: std::collections::HashMap<SiteIdx, u32> = std::collections::HashMap::new();
        for g in self.live.values().filter(|g| g.born_ns > since_ns || g.parked.is_none()) {
            *by_site.entry(g.site).or_default() += 1;
        }
        by_site.into_iter().collect()
    }

    /// Live goroutines known.
    pub fn count(&self) -> u64 {
        self.live.len() as u64
    }

    pub fn live(&self, per_site: &mut [(f64, f64)], old_enough: &dyn Fn(u64) -> bool) -> u64 {
        for g in self.live.values() {
            if old_enough(g.born_ns) {
                per_site[g.site as usize].0 += 1.0;
            }
        }
        self.live.len() as u64
    }

    pub fn births(&self, f: &mut dyn FnMut(SiteIdx, u64)) {
        for g in self.live.values() {
            f(g.site, g.born_ns);
        }
    }

    /// The parks of a site's live goroutines (`None` for those running).
    pub fn parks_of(&self, site: SiteIdx) -> impl Iterator<Item = Option<Park>> + '_ {
        self.live.values().filter(move |g| g.site == site).map(|g| g.parked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stacks::{modules::ModuleMap, table::NoStacks};

    fn state(goid: u64, status: u64, reason: u8, waiting: bool) -> GoroutineState {
        GoroutineState { goid, status, wait_reason: reason, gopc: 0x4000, startpc: 0x5000, waiting }
    }

    #[test]
    fn created_parked_scanned_and_ended() {
        let mut sites = Sites::default();
        let mut stacks = StackTable::new(Box::new(NoStacks), ModuleMap::from_entries(&[]));
        let mut gs = Goroutines::new(Statuses { waiting: 4, leaked: Some(10) });
        for goid in 1..=3 {
            gs.create(
                &NewGoroutine { ts_ns: 10, goid, gopc: 0x4000, startpc: 0x5000, stack: None },
                &mut sites,
                &mut stacks,
            );
        }
        gs.park(20, 1, 15, true);
        gs.exit(3, &mut sites);
        gs.exit(99, &mut sites);
        assert_eq!(gs.unknown_exits, 1);
        // A scan at 100: 1 still parked (same reason: since stays 20), 2 running, 7 new
        // (from before attach) waiting on a nil-channel select, 8 leaked.
        let states =
            [state(1, 4, 15, true), state(2, 2, 0, false), state(7, 4, 9, false), state(8, 10, 15, true)];
        gs.scanned(&states, 100, &mut sites, &mut stacks);
        assert_eq!(gs.live.len(), 4);
        assert_eq!(gs.live[&1].parked.unwrap().since_ns, 20);
        assert_eq!(gs.live[&2].parked, None);
        assert_eq!(
            gs.live[&7].parked.unwrap(),
            Park { reason: 9, since_ns: 100, waiting: false, leaked: false }
        );
        assert!(gs.live[&8].parked.unwrap().leaked);
        // All share one creation site ([gopc] for all, same start function).
        assert_eq!(sites.len(), 1);
        assert_eq!(sites.get(0).live_count, 4.0);
        // Goroutine 1 vanishes from the next scan: its exit was lost.
        gs.scanned(&states[1..], 200, &mut sites, &mut stacks);
        assert_eq!((gs.vanished, gs.live.len()), (1, 3));
    }

    #[test]
    fn a_scan_ahead_of_the_creation_event_counts_the_goroutine_once() {
        let mut sites = Sites::default();
        let mut stacks = StackTable::new(Box::new(NoStacks), ModuleMap::from_entries(&[]));
        let mut gs = Goroutines::new(Statuses { waiting: 4, leaked: None });
        // The scan sees goroutine 9 parked; its creation event, with a stack, comes after.
        gs.scanned(&[state(9, 4, 15, true)], 100, &mut sites, &mut stacks);
        let event =
            NewGoroutine { ts_ns: 90, goid: 9, gopc: 0x4000, startpc: 0x5000, stack: Some(StackId(7)) };
        gs.create(&event, &mut sites, &mut stacks);
        let live: Vec<f64> = sites.iter().map(|(_, s)| s.live_count).collect();
        assert_eq!(live, [0.0, 1.0], "the scan's site gave its goroutine to the event's");
        assert_eq!(gs.live[&9].born_ns, 90);
        assert_eq!(gs.live[&9].parked.map(|p| p.reason), Some(15));
        gs.exit(9, &mut sites);
        assert!(sites.iter().all(|(_, s)| s.live_count == 0.0));
        assert_eq!(gs.unknown_exits, 0);
    }
}
