use std::collections::HashMap;

use proptest::prelude::*;

use super::{sites::SiteKind, *};

/// Figures without sampling are exact integers.
trait IntoExact {
    fn into_exact(self) -> (u64, u64);
}

impl IntoExact for (f64, f64) {
    fn into_exact(self) -> (u64, u64) {
        assert!(self.0.fract() == 0.0 && self.1.fract() == 0.0, "not exact: {self:?}");
        (self.0 as u64, self.1 as u64)
    }
}
use crate::{
    event::Origin,
    stacks::{RawStack, StackSource, modules::ModuleMap},
    target::maps,
};

struct Fixed(HashMap<StackId, RawStack>);
impl StackSource for Fixed {
    fn fetch(&mut self, id: StackId) -> Option<RawStack> {
        self.0.get(&id).cloned()
    }
}

const LOADER_STACK: StackId = StackId(9);

fn aggregator() -> Aggregator {
    aggregator_with(false, usize::MAX)
}

fn aggregator_with(await_exec: bool, max_live: usize) -> Aggregator {
    let modules = ModuleMap::from_entries(&maps::parse(
        "1000-2000 r-xp 00000000 fe:00 5 /lib/ld-linux-x86-64.so.2\n\
         7000-9000 r-xp 00001000 fe:00 6 /usr/bin/app\n",
    ));
    let mut stacks = HashMap::new();
    for id in 1..=4 {
        stacks.insert(StackId(id), RawStack { frames: vec![0x7000, 0x7100 + id], truncated: false });
    }
    stacks.insert(LOADER_STACK, RawStack { frames: vec![0x1004, 0x1100], truncated: false });
    let start = Start {
        await_exec,
        brk: Some(0x50_0000),
        epoch_ns: 0,
        max_live,
        pid: 0,
        open_fds: Vec::new(),
        growth: false,
        go: None,
        allocator: Some(AllocatorCode { module: "/usr/bin/app".into(), offsets: 0x1800..0x1900 }),
    };
    Aggregator::new(StackTable::new(Box::new(Fixed(stacks)), modules), &start)
}

fn alloc(ts: u64, addr: u64, size: u64, stack: u64) -> Event {
    Event::Alloc {
        ts_ns: ts,
        addr,
        size,
        stack: Some(StackId(stack)),
        func: tracer_ebpf::func::MALLOC,
        threshold: 0,
    }
}

fn free(addr: u64) -> Event {
    Event::Free { ts_ns: 0, addr, caller: 0x7100 }
}

fn mmap(addr: u64, len: u64, stack: StackId, origin: Origin) -> Event {
    Event::Mmap { ts_ns: 0, addr, len, prot: 3, flags: 0x22, fd: None, stack: Some(stack), origin }
}

/// Live (count, bytes) of the sites with this stack and kind, whatever the function.
fn live_of(agg: &Aggregator, stack: u64, kind: SiteKind) -> (u64, u64) {
    agg.sites
        .iter()
        .filter(|(_, s)| s.key.stack == Some(StackId(stack)) && s.key.kind == kind)
        .fold((0.0, 0.0), |(c, b), (_, s)| (c + s.live_count, b + s.live_bytes))
        .into_exact()
}

#[test]
fn frees_are_charged_to_the_allocating_site() {
    let mut agg = aggregator();
    for i in 0..10 {
        agg.apply(&alloc(0, 0x1000 + i * 16, 100, 1));
        agg.apply(&alloc(0, 0x9000 + i * 16, 7, 2));
    }
    for i in 0..10 {
        agg.apply(&free(0x9000 + i * 16));
    }
    assert_eq!(live_of(&agg, 1, SiteKind::Heap), (10, 1000));
    assert_eq!(live_of(&agg, 2, SiteKind::Heap), (0, 0));
    agg.apply(&free(0xdead));
    assert_eq!(agg.coverage.unknown_frees, 1);
}

#[test]
fn realloc_moves_the_block_to_the_realloc_site() {
    let mut agg = aggregator();
    agg.apply(&alloc(0, 0x100, 10, 1));
    agg.apply(&Event::Realloc {
        ts_ns: 0,
        old: 0x100,
        addr: 0x200,
        size: 40,
        stack: Some(StackId(2)),
        func: 3,
        threshold: 0,
    });
    assert_eq!(live_of(&agg, 1, SiteKind::Heap), (0, 0));
    assert_eq!(live_of(&agg, 2, SiteKind::Heap), (1, 40));
    // realloc of a block from before attach: a new block, and an unknown free.
    agg.apply(&Event::Realloc {
        ts_ns: 0,
        old: 0x300,
        addr: 0x400,
        size: 8,
        stack: Some(StackId(2)),
        func: 3,
        threshold: 0,
    });
    assert_eq!(live_of(&agg, 2, SiteKind::Heap), (2, 48));
    assert_eq!(agg.coverage.unknown_frees, 1);
}

#[test]
fn an_address_returned_while_live_means_a_missed_free() {
    let mut agg = aggregator();
    agg.apply(&alloc(0, 0x100, 10, 1));
    agg.apply(&alloc(0, 0x100, 20, 2));
    assert_eq!(agg.coverage.address_reused, 1);
    assert_eq!(live_of(&agg, 1, SiteKind::Heap), (0, 0));
    assert_eq!(live_of(&agg, 2, SiteKind::Heap), (1, 20));
}

#[test]
fn allocator_and_loader_mappings_belong_to_no_site() {
    let mut agg = aggregator();
    agg.apply(&mmap(0x7f00_0000_0000, 1 << 20, StackId(1), Origin::Allocator));
    agg.apply(&mmap(0x7f00_1000_0000, 8192, LOADER_STACK, Origin::Program));
    agg.apply(&mmap(0x7f00_2000_0000, 100, StackId(3), Origin::Program));
    let figures = agg.live_figures(0, 0);
    assert_eq!(figures.totals.allocator_bytes, 1 << 20);
    assert_eq!(figures.totals.loader_bytes, 8192);
    // Rounded up to a page.
    assert_eq!(live_of(&agg, 3, SiteKind::Mmap { file: false }), (1, 4096));
    assert_eq!(agg.sites.len(), 1);
    agg.apply(&Event::Munmap { ts_ns: 0, addr: 0x7f00_0000_0000, len: 1 << 20 });
    assert_eq!(agg.live_figures(0, 0).totals.allocator_bytes, 0);
}

#[test]
fn mremap_moves_a_mapping_and_keeps_its_backing() {
    let mut agg = aggregator();
    agg.apply(&Event::Mmap {
        ts_ns: 0,
        addr: 0x10000,
        len: 4096,
        prot: 1,
        flags: 0x1,
        fd: Some(3),
        stack: Some(StackId(1)),
        origin: Origin::Program,
    });
    agg.apply(&Event::Mremap {
        ts_ns: 0,
        old_addr: 0x10000,
        old_len: 4096,
        addr: 0x80000,
        len: 8192,
        flags: 1,
        stack: Some(StackId(2)),
        origin: Origin::Program,
    });
    assert_eq!(live_of(&agg, 1, SiteKind::Mmap { file: true }), (0, 0));
    assert_eq!(live_of(&agg, 2, SiteKind::Mmap { file: true }), (1, 8192));
}

#[test]
fn brk_growth_outside_the_allocator_is_a_site_and_shrinking_releases_it() {
    let mut agg = aggregator();
    let brk =
        |to: u64, origin| Event::Brk { ts_ns: 0, brk: to, requested: to, stack: Some(StackId(4)), origin };
    agg.apply(&brk(0x50_2000, Origin::Program));
    agg.apply(&brk(0x50_3000, Origin::Allocator));
    assert_eq!(live_of(&agg, 4, SiteKind::Brk), (1, 0x2000));
    assert_eq!(agg.live_figures(0, 0).totals.allocator_bytes, 0x1000);
    agg.apply(&brk(0x50_1000, Origin::Allocator));
    assert_eq!(live_of(&agg, 4, SiteKind::Brk), (1, 0x1000));
    assert_eq!(agg.live_figures(0, 0).totals.allocator_bytes, 0);
}

#[test]
fn a_launched_child_is_ignored_until_it_execs() {
    let mut agg = aggregator_with(true, usize::MAX);
    agg.apply(&alloc(0, 0x100, 10, 1));
    agg.apply(&Event::Exec { ts_ns: 0 });
    agg.apply(&alloc(0, 0x200, 10, 1));
    assert_eq!(agg.coverage.pre_exec_events, 1);
    assert_eq!(agg.coverage.events, 1);
    assert_eq!(live_of(&agg, 1, SiteKind::Heap), (1, 10));
}

#[test]
fn live_figures_leave_out_young_blocks_and_ages_are_per_group() {
    let mut agg = aggregator();
    let s = 1_000_000_000;
    for i in 0..4 {
        agg.apply(&alloc(i * s, 0x1000 + i * 64, 10, 1)); // born at 0..3 s
    }
    agg.apply(&alloc(0, 0x9000, 1000, 2));
    let site = |stack| agg.sites.iter().find(|(_, x)| x.key.stack == Some(StackId(stack))).unwrap().0;
    let (s1, s2) = (site(1), site(2));

    let all = agg.live_figures(10 * s, 0);
    assert_eq!(all.per_site[s1 as usize], (4.0, 40.0));
    assert_eq!(all.per_site[s2 as usize], (1.0, 1000.0));
    // Only blocks at least 8.5 s old: those born at 0 and 1 s. Totals count all.
    let old = agg.live_figures(10 * s, 8_500_000_000);
    assert_eq!(old.per_site[s1 as usize], (2.0, 20.0));
    assert_eq!(old.totals.heap_bytes, 1040);

    // Site 1 alone in group 0; site 2 in no group.
    let mut group_of = vec![NO_GROUP; agg.sites.len()];
    group_of[s1 as usize] = 0;
    let ages = agg.ages(10 * s, 0, &group_of, 1);
    assert_eq!(ages.len(), 1);
    assert_eq!(ages[0].max, 10.0);
    // Ages 7, 8, 9, 10 s; percentiles come from a histogram with three digits.
    assert!((ages[0].p50 - 8.0).abs() < 0.01, "{:?}", ages[0]);
    assert!((ages[0].p99 - 10.0).abs() < 0.011, "{:?}", ages[0]);
    // Both sites in one group: the 10 s old block of site 2 joins.
    group_of[s2 as usize] = 0;
    let ages = agg.ages(10 * s, 9_500_000_000, &group_of, 1);
    assert_eq!((ages[0].p50, ages[0].max), (10.0, 10.0));
}

#[test]
fn sampled_blocks_count_with_their_weight_and_frees_take_it_back() {
    let mut agg = aggregator();
    // Drawn with probability 1/4 each: every one stands for four.
    let quarter = u32::MAX / 4;
    for i in 0..10 {
        agg.apply(&Event::Alloc {
            ts_ns: 0,
            addr: 0x100 + i * 16,
            size: 64,
            stack: Some(StackId(1)),
            func: 1,
            threshold: quarter,
        });
    }
    agg.apply(&free(0x100));
    let (count, bytes) = agg.live_figures(0, 0).per_site[0];
    assert!((count - 36.0).abs() < 1e-3, "{count}");
    assert!((bytes - 36.0 * 64.0).abs() < 0.1, "{bytes}");
    let site = agg.sites.get(0);
    assert!((site.allocs - 40.0).abs() < 1e-3 && (site.frees - 4.0).abs() < 1e-3);
}

#[test]
fn a_full_live_table_counts_instead_of_growing() {
    let mut agg = aggregator_with(false, 3);
    for i in 0..5 {
        agg.apply(&alloc(0, 0x100 + i * 16, 8, 1));
    }
    assert_eq!(live_of(&agg, 1, SiteKind::Heap), (3, 24));
    assert_eq!(agg.coverage.table_full, 2);
    // A slot frees up: tracking resumes.
    agg.apply(&free(0x100));
    agg.apply(&alloc(0, 0x900, 8, 1));
    assert_eq!(live_of(&agg, 1, SiteKind::Heap), (3, 24));
}

#[test]
fn blocks_of_four_gib_and_more_keep_their_size() {
    let mut agg = aggregator();
    agg.apply(&alloc(0, 0x100, 5 << 30, 1));
    agg.apply(&alloc(0, 0x200, u64::from(u32::MAX), 1));
    assert_eq!(live_of(&agg, 1, SiteKind::Heap), (2, (5 << 30) + u64::from(u32::MAX)));
    agg.apply(&free(0x100));
    assert_eq!(live_of(&agg, 1, SiteKind::Heap), (1, u64::from(u32::MAX)));
    assert!(agg.heap.large.len() == 1);
}

#[derive(Debug, Clone)]
enum Op {
    Alloc {
        slot: u8,
        size: u16,
        stack: u8,
    },
    Free {
        slot: u8,
    },
    /// `in_place`: the block stays where it is (old == new), as realloc often does.
    Realloc {
        slot: u8,
        size: u16,
        stack: u8,
        in_place: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (any::<u8>(), any::<u16>(), 1..4u8).prop_map(|(slot, size, stack)| Op::Alloc { slot, size, stack }),
        any::<u8>().prop_map(|slot| Op::Free { slot }),
        (any::<u8>(), any::<u16>(), 1..4u8, any::<bool>())
            .prop_map(|(slot, size, stack, in_place)| Op::Realloc { slot, size, stack, in_place }),
    ]
}

proptest! {
    /// Whatever the order of allocations, frees and reallocs (including frees of unknown
    /// blocks and reuse of live addresses), the per-site figures match a simple model.
    #[test]
    fn site_figures_match_a_model(ops in prop::collection::vec(op(), 0..300)) {
        let mut agg = aggregator();
        let mut model: HashMap<u64, (u64, u64)> = HashMap::new(); // addr -> (size, stack)
        let mut next = 0x10_0000u64;
        for op in ops {
            match op {
                Op::Alloc { slot, size, stack } => {
                    let addr = 0x1000 + u64::from(slot) * 16;
                    agg.apply(&alloc(0, addr, u64::from(size), u64::from(stack)));
                    model.insert(addr, (u64::from(size), u64::from(stack)));
                }
                Op::Free { slot } => {
                    let addr = 0x1000 + u64::from(slot) * 16;
                    agg.apply(&free(addr));
                    model.remove(&addr);
                }
                Op::Realloc { slot, size, stack, in_place } => {
                    let old = 0x1000 + u64::from(slot) * 16;
                    let addr = if in_place { old } else { next += 16; next };
                    agg.apply(&Event::Realloc { ts_ns: 0, old, addr, size: u64::from(size), stack: Some(StackId(u64::from(stack))), func: 3, threshold: 0 });
                    model.remove(&old);
                    model.insert(addr, (u64::from(size), u64::from(stack)));
                }
            }
        }
        for stack in 1..4u64 {
            let expected = model.values().filter(|(_, s)| *s == stack).fold((0, 0), |(c, b), (size, _)| (c + 1, b + size));
            prop_assert_eq!(live_of(&agg, stack, SiteKind::Heap), expected);
        }
        // The live table's totals are the model's, and the running counters (kept on
        // each event) agree with what a walk of the live table finds.
        let figures = agg.live_figures(0, 0);
        prop_assert_eq!(figures.totals.heap_bytes, model.values().map(|(s, _)| s).sum::<u64>());
        prop_assert_eq!(figures.totals.heap_blocks, model.len() as u64);
        for (idx, site) in agg.sites.iter() {
            prop_assert_eq!(figures.per_site[idx as usize], (site.live_count, site.live_bytes));
        }
    }

    /// Mapping and unmapping arbitrary page ranges never creates or loses bytes.
    #[test]
    fn ranges_conserve_bytes(ops in prop::collection::vec((any::<bool>(), 0..64u64, 1..16u64), 0..200)) {
        let mut agg = aggregator();
        let mut pages = std::collections::BTreeSet::new();
        for (map, first, n) in ops {
            let (addr, len) = (0x10_0000 + first * 4096, n * 4096);
            if map {
                agg.apply(&mmap(addr, len, StackId(1), Origin::Program));
                pages.extend(first..first + n);
            } else {
                agg.apply(&Event::Munmap { ts_ns: 0, addr, len });
                for p in first..first + n { pages.remove(&p); }
            }
        }
        prop_assert_eq!(live_of(&agg, 1, SiteKind::Mmap { file: false }).1, pages.len() as u64 * 4096);
        prop_assert_eq!(agg.live_figures(0, 0).totals.mapped_bytes, pages.len() as u64 * 4096);
    }
}

#[test]
fn frees_from_the_allocator_s_own_code_are_not_misses() {
    let mut agg = aggregator();
    // Called from the allocator (file offset 0x1850 of the app: runtime 0x7850).
    agg.apply(&Event::Free { ts_ns: 0, addr: 0x5000, caller: 0x7850 });
    // From the program, or from the loader: blocks made before attach.
    agg.apply(&Event::Free { ts_ns: 0, addr: 0x5010, caller: 0x7100 });
    agg.apply(&Event::Free { ts_ns: 0, addr: 0x5020, caller: 0x1004 });
    assert_eq!((agg.coverage.allocator_internal_frees, agg.coverage.unknown_frees), (1, 2));
}
