//! Mappings and break growth: live address ranges (`mappings::RangeTable`), each owned by
//! a site of the program, by the allocator's own arenas, or by the dynamic loader
//! (libraries). Ranges can be released in part.

use super::{
    Coverage,
    mappings::{Owner, RangeTable, Released},
    sites::{SiteIdx, SiteKey, SiteKind, Sites},
};
use crate::{
    event::Origin,
    stacks::{StackId, StackTable},
};

const MAP_ANONYMOUS: u64 = 0x20;
const PROT_EXEC: u32 = 0x4;
const MREMAP_DONTUNMAP: u64 = 4;

/// Totals of the ranges that belong to no site.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RangeTotals {
    pub mapped_bytes: u64,
    pub allocator_bytes: u64,
    pub loader_bytes: u64,
}

pub struct Memory {
    ranges: RangeTable,
    brk: Option<u64>,
    page: u64,
    released: Vec<Released>,
}

/// A new mapping, as the aggregator hands it over.
pub struct NewMapping {
    pub ts_ns: u64,
    pub addr: u64,
    pub len: u64,
    pub prot: u32,
    pub flags: u64,
    pub fd: Option<i32>,
    pub stack: Option<StackId>,
    pub origin: Origin,
}

/// What the memory books need besides the ranges.
pub struct Books<'a> {
    pub sites: &'a mut Sites,
    pub stacks: &'a mut StackTable,
    pub coverage: &'a mut Coverage,
}

impl Memory {
    /// `brk`: the target's current break, if known.
    pub fn new(brk: Option<u64>) -> Self {
        Self {
            ranges: RangeTable::default(),
            brk,
            page: crate::target::proc::page_size(),
            released: Vec::new(),
        }
    }

    fn pages(&self, len: u64) -> u64 {
        len.div_ceil(self.page).saturating_mul(self.page)
    }

    pub fn mmap(&mut self, m: &NewMapping, books: &mut Books<'_>) {
        if m.prot & PROT_EXEC != 0 {
            books.stacks.modules.mark_dirty();
        }
        let file = m.flags & MAP_ANONYMOUS == 0 && m.fd.is_some();
        let owner = owner(m.origin, SiteKind::Mmap { file }, m.stack, books);
        let len = self.pages(m.len);
        self.map(m.addr, len, owner, m.ts_ns, books.sites);
    }

    pub fn munmap(&mut self, addr: u64, len: u64, books: &mut Books<'_>) {
        let len = self.pages(len);
        if self.unmap(addr, len, books.sites).is_empty() {
            books.coverage.unknown_unmaps += 1;
        }
    }

    /// A mapping moved or resized; the moved mapping keeps its backing (an unknown one
    /// counts as anonymous).
    pub fn mremap(&mut self, old_addr: u64, old_len: u64, new: &NewMapping, books: &mut Books<'_>) {
        let mut file = false;
        if new.flags & MREMAP_DONTUNMAP == 0 {
            let old_len = self.pages(old_len);
            for owner in self.unmap(old_addr, old_len, books.sites) {
                if let Owner::Site(s) = owner
                    && let SiteKind::Mmap { file: f } = books.sites.get(s).key.kind
                {
                    file = f;
                }
            }
        }
        let owner = owner(new.origin, SiteKind::Mmap { file }, new.stack, books);
        let len = self.pages(new.len);
        self.map(new.addr, len, owner, new.ts_ns, books.sites);
    }

    pub fn brk(
        &mut self,
        ts_ns: u64,
        brk: u64,
        stack: Option<StackId>,
        origin: Origin,
        books: &mut Books<'_>,
    ) {
        match self.brk {
            Some(current) if brk > current => {
                let owner = owner(origin, SiteKind::Brk, stack, books);
                self.map(current, brk - current, owner, ts_ns, books.sites);
            }
            Some(current) if brk < current => {
                self.unmap(brk, current - brk, books.sites);
            }
            _ => {}
        }
        self.brk = Some(brk);
    }

    fn map(&mut self, addr: u64, len: u64, owner: Owner, ts_ns: u64, sites: &mut Sites) {
        self.released.clear();
        let mut released = std::mem::take(&mut self.released);
        self.ranges.insert(addr, len, owner, ts_ns, &mut released);
        charge(&released, sites);
        self.released = released;
        if let Owner::Site(s) = owner {
            sites.get_mut(s).born(len, 1.0);
        }
    }

    /// Releases a range; returns the owners it took from.
    fn unmap(&mut self, addr: u64, len: u64, sites: &mut Sites) -> Vec<Owner> {
        let mut released = Vec::new();
        self.ranges.remove(addr, len, &mut released);
        charge(&released, sites);
        released.iter().map(|r| r.owner).collect()
    }

    /// Adds every range of a site to its live (count, bytes) if `old_enough`; returns the
    /// totals of all ranges.
    pub fn live(&self, per_site: &mut [(f64, f64)], old_enough: &dyn Fn(u64) -> bool) -> RangeTotals {
        let mut totals = RangeTotals::default();
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
        totals
    }

    /// Calls `f(site, born_ns)` for every range of a site.
    pub fn births(&self, f: &mut dyn FnMut(SiteIdx, u64)) {
        for range in self.ranges.iter() {
            if let Owner::Site(s) = range.owner {
                f(s, range.born_ns);
            }
        }
    }

    pub fn clear(&mut self) {
        self.ranges.clear();
        self.brk = None;
    }
}

/// Who a new range belongs to: the allocator's arenas, a library the loader maps, or a
/// site of the program.
fn owner(origin: Origin, kind: SiteKind, stack: Option<StackId>, books: &mut Books<'_>) -> Owner {
    if origin == Origin::Allocator {
        return Owner::Allocator;
    }
    if let Some(id) = stack
        && books.stacks.resolve(id).is_some_and(|s| s.in_loader)
    {
        return Owner::Loader;
    }
    Owner::Site(books.sites.intern(SiteKey { kind, stack, detail: 0 }))
}

fn charge(released: &[Released], sites: &mut Sites) {
    for r in released {
        if let Owner::Site(s) = r.owner {
            sites.get_mut(s).released(r.bytes, r.whole, 1.0);
        }
    }
}
