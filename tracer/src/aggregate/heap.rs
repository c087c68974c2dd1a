//! Heap blocks from the malloc family: the live table, keyed by address, each block
//! pointing at the site that made it so its free is charged back there.

use super::{
    Coverage,
    hash::AddrMap,
    sharded::ShardedMap,
    sites::{SiteIdx, SiteKey, SiteKind, Sites},
};
use crate::stacks::{StackId, StackTable};

/// A live heap block: 16 bytes, so that tracking millions of blocks stays cheap.
#[derive(Debug, Clone, Copy)]
struct Block {
    /// Requested size; `LARGE` for 4 GiB and more (the size is then in `large`).
    size: u32,
    /// Milliseconds after the epoch (49 days of range).
    born_ms: u32,
    site: SiteIdx,
    /// How many blocks it stands for: 1, or with sampling the inverse of the probability
    /// it was drawn with.
    weight: f32,
}

const LARGE: u32 = u32::MAX;

/// A new block, as the aggregator hands it over.
pub struct NewBlock {
    pub ts_ns: u64,
    pub addr: u64,
    pub size: u64,
    pub stack: Option<StackId>,
    pub func: u32,
    pub threshold: u32,
}

pub struct Heap {
    blocks: ShardedMap<Block>,
    /// Sizes of the blocks of 4 GiB and more.
    pub(super) large: AddrMap<u64>,
    /// CLOCK_MONOTONIC nanoseconds that birth times count from.
    epoch_ns: u64,
    /// At most this many live blocks are tracked, so memory stays bounded even when
    /// lost events leave frees unseen.
    max_live: usize,
}

impl Heap {
    pub fn new(epoch_ns: u64, max_live: usize) -> Self {
        Self { blocks: ShardedMap::default(), large: AddrMap::default(), epoch_ns, max_live }
    }

    fn born_ms(&self, ts_ns: u64) -> u32 {
        u32::try_from(ts_ns.saturating_sub(self.epoch_ns) / 1_000_000).unwrap_or(u32::MAX)
    }

    fn born_ns(&self, block: &Block) -> u64 {
        self.epoch_ns.saturating_add(u64::from(block.born_ms) * 1_000_000)
    }

    fn size_of(&self, addr: u64, block: &Block) -> u64 {
        if block.size == LARGE {
            self.large.get(&addr).copied().unwrap_or(u64::from(LARGE))
        } else {
            u64::from(block.size)
        }
    }

    pub fn allocate(
        &mut self,
        b: &NewBlock,
        sites: &mut Sites,
        stacks: &mut StackTable,
        coverage: &mut Coverage,
    ) {
        let site = sites.intern(SiteKey { kind: SiteKind::Heap, stack: b.stack, detail: u64::from(b.func) });
        if let Some(id) = b.stack {
            // Read the stack while the process can still say where its code is. A stack
            // that cannot be read is counted; the block still counts, at its site.
            stacks.ensure(id);
        }
        let reused = self.blocks.contains_key(&b.addr);
        if !reused && self.blocks.len() >= self.max_live {
            coverage.table_full += 1;
            return;
        }
        let weight = tracer_ebpf::sampling::weight(b.threshold) as f32;
        sites.get_mut(site).born(b.size, f64::from(weight));
        if reused {
            coverage.address_reused += 1;
            self.free(b.addr, sites);
        }
        let compact = match u32::try_from(b.size) {
            Ok(small) if small != LARGE => small,
            _ => {
                self.large.insert(b.addr, b.size);
                LARGE
            }
        };
        let born_ms = self.born_ms(b.ts_ns);
        self.blocks.insert(b.addr, Block { size: compact, born_ms, site, weight });
    }

    /// Releases the block at `addr`; false if it was not known.
    pub fn free(&mut self, addr: u64, sites: &mut Sites) -> bool {
        let Some(block) = self.blocks.remove(&addr) else { return false };
        let size = self.size_of(addr, &block);
        if block.size == LARGE {
            self.large.remove(&addr);
        }
        sites.get_mut(block.site).released(size, true, f64::from(block.weight));
        true
    }

    /// Adds every block to its site's live (count, bytes) if `old_enough` says so;
    /// returns the (blocks, bytes) of all of them.
    pub fn live(&self, per_site: &mut [(f64, f64)], old_enough: &dyn Fn(u64) -> bool) -> (f64, f64) {
        let (mut blocks, mut bytes) = (0.0, 0.0);
        for (&addr, block) in self.blocks.iter() {
            let weight = f64::from(block.weight);
            let size = self.size_of(addr, block) as f64;
            blocks += weight;
            bytes += size * weight;
            if old_enough(self.born_ns(block)) {
                let l = &mut per_site[block.site as usize];
                l.0 += weight;
                l.1 += size * weight;
            }
        }
        (blocks, bytes)
    }

    /// Calls `f(site, born_ns)` for every block.
    pub fn births(&self, f: &mut dyn FnMut(SiteIdx, u64)) {
        for block in self.blocks.values() {
            f(block.site, self.born_ns(block));
        }
    }

    pub fn clear(&mut self) {
        self.blocks.clear();
        self.large.clear();
    }
}
