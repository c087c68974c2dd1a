//! The kernel side's maps as the rest of leaktracer sees them: stacks and unwind rules
//! behind `stacks::StackSource`, and the failure counters.

use aya::maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray};
use tracer_ebpf::{
    counter,
    unwind::{CodeRange, MAX_CODE_RANGES, Stack, UnwindRule},
};

use crate::stacks::{RawStack, StackId, StackSource};

/// Stacks from the kernel's `STACKS` map; unwind rules into `UNWIND_RULES`.
pub struct KernelStacks {
    pub(super) stacks: BpfHashMap<MapData, u64, Stack>,
    pub(super) rules: BpfHashMap<MapData, u64, UnwindRule>,
    /// Bumped when rules are taken back, so the kernel side's caches drop theirs.
    pub(super) generation: Array<MapData, u32>,
    pub(super) ranges: Array<MapData, CodeRange>,
}

impl KernelStacks {
    fn bump_generation(&mut self) {
        let next = self.generation.get(&0, 0).unwrap_or(0).wrapping_add(1);
        if let Err(e) = self.generation.set(0, next, 0) {
            log::warn!("cannot invalidate the kernel's unwind rule caches: {e}");
        }
    }
}

impl StackSource for KernelStacks {
    fn fetch(&mut self, id: StackId) -> Option<RawStack> {
        let stack = self.stacks.get(&id.0, 0).ok()?;
        let len = (stack.len as usize).min(stack.frames.len());
        Some(RawStack { frames: stack.frames[..len].to_vec(), truncated: stack.truncated != 0 })
    }

    fn teach(&mut self, rules: &[(u64, UnwindRule)]) {
        for (key, rule) in rules {
            if let Err(e) = self.rules.insert(key, rule, 0) {
                log::debug!("cannot store unwind rule {key:#x}: {e}");
            }
        }
    }

    fn forget(&mut self, keys: &[u64]) {
        for key in keys {
            let _ = self.rules.remove(key);
        }
        self.bump_generation();
    }

    /// Sets the code ranges with one rule each (Go code), replacing any before.
    fn set_code_ranges(&mut self, ranges: &[CodeRange]) {
        for i in 0..MAX_CODE_RANGES {
            let range = ranges.get(i as usize).copied().unwrap_or_default();
            if let Err(e) = self.ranges.set(i, range, 0) {
                log::warn!("cannot set code range {i}: {e}");
            }
        }
        self.bump_generation();
    }
}

/// Failures the kernel side counted, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelCounters {
    pub lost_events: u64,
    pub stack_errors: u64,
    pub dropped: u64,
    pub nested_calls: u64,
    pub truncated_stacks: u64,
    pub stack_samples: u64,
    pub read_errors: u64,
    pub abandoned_calls: u64,
}

pub(super) fn read_counters(counters: &PerCpuArray<MapData, u64>) -> KernelCounters {
    let sum =
        |index: u32| -> u64 { counters.get(&index, 0).map(|per_cpu| per_cpu.iter().sum()).unwrap_or(0) };
    KernelCounters {
        lost_events: sum(counter::LOST_EVENTS),
        stack_errors: sum(counter::STACK_ERRORS),
        dropped: sum(counter::DROPPED),
        nested_calls: sum(counter::NESTED_CALLS),
        truncated_stacks: sum(counter::TRUNCATED_STACKS),
        stack_samples: sum(counter::STACK_SAMPLES),
        read_errors: sum(counter::READ_ERRORS),
        abandoned_calls: sum(counter::ABANDONED_CALLS),
    }
}
