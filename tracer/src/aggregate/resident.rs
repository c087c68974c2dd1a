//! `--mode growth`: resident pages, by the code that first touched each. A page stays
//! charged to its site until it is unmapped, discarded (madvise) or the break shrinks
//! over it.

use std::collections::BTreeMap;

use super::sites::{SiteIdx, SiteKey, SiteKind, Sites};
use crate::stacks::{StackId, StackTable};

pub const PAGE: u64 = 4096;

#[derive(Debug, Clone, Copy)]
struct Page {
    site: SiteIdx,
    born_ns: u64,
}

#[derive(Default)]
pub struct Resident {
    pages: BTreeMap<u64, Page>,
}

impl Resident {
    pub fn fault(
        &mut self,
        ts_ns: u64,
        addr: u64,
        stack: Option<StackId>,
        sites: &mut Sites,
        stacks: &mut StackTable,
    ) {
        let page = addr & !(PAGE - 1);
        if self.pages.contains_key(&page) {
            return;
        }
        if let Some(id) = stack {
            stacks.ensure(id);
        }
        let site = sites.intern(SiteKey { kind: SiteKind::Resident, stack, detail: 0 });
        sites.get_mut(site).born(PAGE, 1.0);
        self.pages.insert(page, Page { site, born_ns: ts_ns });
    }

    /// Pages in `[addr, addr + len)` are gone.
    pub fn release(&mut self, addr: u64, len: u64, sites: &mut Sites) {
        let end = addr.saturating_add(len);
        let gone: Vec<(u64, Page)> = self.pages.range(addr..end).map(|(a, p)| (*a, *p)).collect();
        for (at, page) in gone {
            self.pages.remove(&at);
            sites.get_mut(page.site).released(PAGE, true, 1.0);
        }
    }

    pub fn live(&self, per_site: &mut [(f64, f64)], old_enough: &dyn Fn(u64) -> bool) -> u64 {
        for page in self.pages.values() {
            if old_enough(page.born_ns) {
                let l = &mut per_site[page.site as usize];
                l.0 += 1.0;
                l.1 += PAGE as f64;
            }
        }
        self.pages.len() as u64 * PAGE
    }

    pub fn births(&self, f: &mut dyn FnMut(SiteIdx, u64)) {
        for page in self.pages.values() {
            f(page.site, page.born_ns);
        }
    }

    pub fn clear(&mut self) {
        self.pages.clear();
    }
}
