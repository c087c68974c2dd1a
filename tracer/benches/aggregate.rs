//! Aggregator throughput: events applied per second on one core, on a realistic stream
//! (allocations, frees and reallocs over a live set, from a thousand call sites).

use std::{collections::HashMap, hint::black_box};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use leaktracer::{
    aggregate::{Aggregator, Start},
    event::Event,
    stacks::{RawStack, StackId, StackSource, StackTable, modules::ModuleMap},
    target::maps,
};

struct Fixed(HashMap<StackId, RawStack>);

impl StackSource for Fixed {
    fn fetch(&mut self, id: StackId) -> Option<RawStack> {
        self.0.get(&id).cloned()
    }
}

const SITES: u64 = 1000;
const LIVE: u64 = 100_000;
const EVENTS: usize = 1_000_000;

fn aggregator() -> Aggregator {
    let modules = ModuleMap::from_entries(&maps::parse("400000-800000 r-xp 00000000 fe:00 6 /usr/bin/app\n"));
    let stacks = (1..=SITES)
        .map(|i| {
            (
                StackId(i),
                RawStack { frames: vec![0x400000, 0x400100 + i, 0x401000, 0x402000], truncated: false },
            )
        })
        .collect();
    let start = Start {
        await_exec: false,
        brk: None,
        epoch_ns: 0,
        max_live: usize::MAX,
        pid: 0,
        open_fds: Vec::new(),
        growth: false,
        go: None,
        allocator: None,
    };
    Aggregator::new(StackTable::new(Box::new(Fixed(stacks)), modules), &start)
}

/// A deterministic stream: each event allocates or frees one of LIVE slots.
fn events() -> Vec<Event> {
    let mut live = vec![0u64; LIVE as usize];
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next_addr = 0x10_0000u64;
    let mut out = Vec::with_capacity(EVENTS);
    for i in 0..EVENTS {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let slot = (rng % LIVE) as usize;
        let stack = Some(StackId(1 + (rng >> 20) % SITES));
        let size = 16 + (rng >> 40) % 1024;
        let ts_ns = i as u64 * 1000;
        next_addr += 64;
        out.push(match (live[slot], (rng >> 60) % 8) {
            (0, _) => {
                live[slot] = next_addr;
                Event::Alloc { ts_ns, addr: next_addr, size, stack, func: 1, threshold: 0 }
            }
            (old, 0) => {
                live[slot] = next_addr;
                Event::Realloc { ts_ns, old, addr: next_addr, size, stack, func: 3, threshold: 0 }
            }
            (old, _) => {
                live[slot] = 0;
                Event::Free { ts_ns, addr: old, caller: 0 }
            }
        });
    }
    out
}

fn throughput(c: &mut Criterion) {
    let events = events();
    let mut group = c.benchmark_group("aggregator");
    group.throughput(Throughput::Elements(events.len() as u64));
    group.sample_size(10);
    group.bench_function("apply 1M events", |b| {
        b.iter_batched(
            aggregator,
            |mut agg| {
                for event in &events {
                    agg.apply(black_box(event));
                }
                agg
            },
            criterion::BatchSize::LargeInput,
        );
    });
    group.finish();
}

criterion_group!(benches, throughput);
criterion_main!(benches);
