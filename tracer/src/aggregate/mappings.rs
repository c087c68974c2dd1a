//! Live address ranges: mmap'd regions and break growth. Unlike heap blocks, ranges can
//! be released in part (munmap of a slice, brk shrinking), so an allocation is a set of
//! pieces and stays live until its last byte is released.

use std::collections::BTreeMap;

use super::sites::SiteIdx;

/// Who a range belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// A call site of the program.
    Site(SiteIdx),
    /// An allocator's own arena (it backs heap blocks attributed elsewhere).
    Allocator,
    /// The dynamic loader mapping a library.
    Loader,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RangeAlloc {
    pub owner: Owner,
    pub born_ns: u64,
    /// Bytes of it still mapped.
    pub bytes: u64,
}

#[derive(Debug, Clone, Copy)]
struct Piece {
    end: u64,
    alloc: u32,
}

/// What a release took from one allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Released {
    pub owner: Owner,
    pub bytes: u64,
    /// Nothing of the allocation is left.
    pub whole: bool,
}

#[derive(Debug, Default)]
pub struct RangeTable {
    pieces: BTreeMap<u64, Piece>,
    allocs: Vec<Option<RangeAlloc>>,
    free_slots: Vec<u32>,
}

impl RangeTable {
    /// Records `[start, start + len)` as a new allocation. Whatever was recorded there
    /// is released first (MAP_FIXED replaces mappings).
    pub fn insert(&mut self, start: u64, len: u64, owner: Owner, born_ns: u64, released: &mut Vec<Released>) {
        if len == 0 {
            return;
        }
        self.remove(start, len, released);
        let alloc = RangeAlloc { owner, born_ns, bytes: len };
        let id = match self.free_slots.pop() {
            Some(id) => {
                self.allocs[id as usize] = Some(alloc);
                id
            }
            None => {
                self.allocs.push(Some(alloc));
                (self.allocs.len() - 1) as u32
            }
        };
        self.pieces.insert(start, Piece { end: start.saturating_add(len), alloc: id });
    }

    /// Releases whatever is recorded in `[start, start + len)`, appending what each
    /// affected allocation lost to `released`. Returns the bytes released.
    pub fn remove(&mut self, start: u64, len: u64, released: &mut Vec<Released>) -> u64 {
        let end = start.saturating_add(len);
        let mut total = 0;
        // Pieces never overlap, so walking down from the last piece starting before
        // `end`, the first one ending at or before `start` ends the search.
        let overlapping: Vec<(u64, Piece)> = self
            .pieces
            .range(..end)
            .rev()
            .take_while(|(_, p)| p.end > start)
            .map(|(s, p)| (*s, *p))
            .collect();
        for (piece_start, piece) in overlapping {
            self.pieces.remove(&piece_start);
            if piece_start < start {
                self.pieces.insert(piece_start, Piece { end: start, alloc: piece.alloc });
            }
            if piece.end > end {
                self.pieces.insert(end, Piece { end: piece.end, alloc: piece.alloc });
            }
            let cut = piece.end.min(end) - piece_start.max(start);
            total += cut;
            let slot = &mut self.allocs[piece.alloc as usize];
            let Some(alloc) = slot.as_mut() else { continue };
            alloc.bytes -= cut.min(alloc.bytes);
            let whole = alloc.bytes == 0;
            released.push(Released { owner: alloc.owner, bytes: cut, whole });
            if whole {
                *slot = None;
                self.free_slots.push(piece.alloc);
            }
        }
        total
    }

    /// Live allocations.
    pub fn iter(&self) -> impl Iterator<Item = &RangeAlloc> {
        self.allocs.iter().flatten()
    }

    /// Forgets everything (exec replaced the address space).
    pub fn clear(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(t: &RangeTable) -> Vec<(Owner, u64)> {
        t.iter().map(|a| (a.owner, a.bytes)).collect()
    }

    #[test]
    fn partial_unmaps_keep_the_allocation_until_its_last_byte() {
        let mut t = RangeTable::default();
        let mut rel = Vec::new();
        t.insert(0x10000, 0x4000, Owner::Site(3), 1, &mut rel);
        // Punch a hole in the middle: two pieces remain, one allocation.
        assert_eq!(t.remove(0x11000, 0x1000, &mut rel), 0x1000);
        assert_eq!(rel, [Released { owner: Owner::Site(3), bytes: 0x1000, whole: false }]);
        assert_eq!(live(&t), [(Owner::Site(3), 0x3000)]);
        rel.clear();
        // Unmap across the hole and both remaining pieces.
        assert_eq!(t.remove(0x10000, 0x4000, &mut rel), 0x3000);
        assert_eq!(rel.iter().map(|r| r.bytes).sum::<u64>(), 0x3000);
        assert_eq!(rel.iter().filter(|r| r.whole).count(), 1);
        assert!(live(&t).is_empty());
    }

    #[test]
    fn fixed_mappings_replace_what_was_there() {
        let mut t = RangeTable::default();
        let mut rel = Vec::new();
        t.insert(0x10000, 0x2000, Owner::Site(1), 1, &mut rel);
        t.insert(0x11000, 0x2000, Owner::Site(2), 2, &mut rel);
        assert_eq!(rel, [Released { owner: Owner::Site(1), bytes: 0x1000, whole: false }]);
        assert_eq!(live(&t), [(Owner::Site(1), 0x1000), (Owner::Site(2), 0x2000)]);
    }

    #[test]
    fn unknown_ranges_release_nothing() {
        let mut t = RangeTable::default();
        let mut rel = Vec::new();
        t.insert(0x10000, 0x1000, Owner::Allocator, 1, &mut rel);
        assert_eq!(t.remove(0x20000, 0x1000, &mut rel), 0);
        assert_eq!(t.remove(0xf000, 0x1000, &mut rel), 0);
        assert!(rel.is_empty());
    }

    #[test]
    fn slots_are_reused() {
        let mut t = RangeTable::default();
        let mut rel = Vec::new();
        for i in 0..100 {
            t.insert(0x10000, 0x1000, Owner::Site(0), i, &mut rel);
        }
        assert_eq!(t.allocs.len(), 1);
        assert_eq!(rel.len(), 99);
    }
}
