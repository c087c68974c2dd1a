//! Unwinding with call frame information, in userspace: for stack samples the kernel
//! side sent because it lacked a rule, and to produce the rules it lacked.
//!
//! The walk is the kernel side's (`tracer_ebpf::unwind::step`, the same function) over a
//! copy of the stack, with rules computed here from each module's
//! `.eh_frame`/`.debug_frame`, or given for whole code ranges (Go code). Every rule a
//! sample's walk used is handed back to be taught to the kernel: a sample means the
//! kernel lacked one, maybe because its table evicted it, so teaching again is right.

use std::collections::HashMap;

use tracer_ebpf::{
    record::sample_flags,
    unwind::{CodeRange, MAX_STACK_DEPTH, RETURN_ADDRESS_KEY, Regs, Step, UnwindRule, step},
};

use super::{
    cfi::{ModuleCfi, NO_RULE},
    modules::{ModuleIdx, ModuleMap},
    table::RawStack,
};

/// Rules remembered at most (then forgotten all at once and computed again).
const MAX_KNOWN_RULES: usize = 1 << 20;
/// Modules whose CFI is kept parsed at most.
const MAX_CFI_MODULES: usize = 256;

/// A stack sample: registers at the probe and a copy of the stack from `sp` up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    pub id: u64,
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
    pub flags: u32,
    pub stack: bytes::Bytes,
}

impl Sample {
    fn read(&self, addr: u64) -> Option<u64> {
        let off = usize::try_from(addr.checked_sub(self.sp)?).ok()?;
        let word = self.stack.get(off..off.checked_add(8)?)?;
        Some(u64::from_le_bytes(word.try_into().ok()?))
    }
}

#[derive(Default)]
pub struct Unwinder {
    cfi: HashMap<ModuleIdx, Option<ModuleCfi>>,
    /// Rules already computed, by key.
    known: HashMap<u64, UnwindRule>,
    /// Code with one rule for every address (Go code), checked before any CFI.
    ranges: Vec<CodeRange>,
    /// Keys handed to the kernel since the last exec (to take back at the next).
    taught: std::collections::HashSet<u64>,
}

impl Unwinder {
    /// Code ranges with one rule each, as the kernel side has them.
    pub fn set_ranges(&mut self, ranges: Vec<CodeRange>) {
        self.ranges = ranges;
    }

    /// The rule for code address `pc` (`is_return`: a return address, whose rule is the
    /// call instruction's, one byte before). `None` for code in no module known yet (a
    /// library mapped since the maps were last read): no rule now, and none remembered
    /// or taught, so a later sample finds the right one.
    pub fn rule(&mut self, modules: &mut ModuleMap, pc: u64, is_return: bool) -> Option<UnwindRule> {
        let at = if is_return { pc.saturating_sub(1) } else { pc };
        if let Some(range) = self.ranges.iter().find(|r| at >= r.start && at < r.end) {
            return Some(range.rule);
        }
        let key = if is_return { pc | RETURN_ADDRESS_KEY } else { pc };
        if let Some(rule) = self.known.get(&key) {
            return Some(*rule);
        }
        modules.locate(pc)?.module?;
        let rule = self.rule_from_cfi(modules, pc, is_return).unwrap_or(NO_RULE);
        if self.known.len() >= MAX_KNOWN_RULES {
            self.known.clear();
        }
        self.known.insert(key, rule);
        Some(rule)
    }

    fn rule_from_cfi(&mut self, modules: &mut ModuleMap, pc: u64, is_return: bool) -> Option<UnwindRule> {
        let location = modules.locate(pc)?;
        let module = location.module?;
        if !self.cfi.contains_key(&module) && self.cfi.len() >= MAX_CFI_MODULES {
            self.cfi.clear();
        }
        let cfi = self
            .cfi
            .entry(module)
            .or_insert_with(|| ModuleCfi::load(&mut modules.module(module).open()?))
            .as_mut()?;
        let vaddr = cfi.vaddr_of(location.offset)?;
        Some(cfi.rule_at(if is_return { vaddr.saturating_sub(1) } else { vaddr }))
    }

    /// Walks a sample; every rule it used that the kernel can hold goes to `learned`.
    pub fn unwind(
        &mut self,
        modules: &mut ModuleMap,
        sample: &Sample,
        learned: &mut Vec<(u64, UnwindRule)>,
    ) -> RawStack {
        let mut frames = vec![sample.ip];
        let mut regs = Regs { pc: sample.ip, sp: sample.sp, bp: sample.bp };
        let mut complete = false;
        for i in 0..MAX_STACK_DEPTH - 1 {
            let rule = if i == 0 && sample.flags & sample_flags::AT_ENTRY != 0 {
                UnwindRule::AT_ENTRY
            } else {
                let is_return = i > 0;
                let Some(rule) = self.rule(modules, regs.pc, is_return) else { break };
                let key = if is_return { regs.pc | RETURN_ADDRESS_KEY } else { regs.pc };
                if !self.in_range(regs.pc, is_return) {
                    self.taught.insert(key);
                    learned.push((key, rule));
                }
                rule
            };
            match step(rule, &mut regs, |addr| sample.read(addr)) {
                Step::Caller => frames.push(regs.pc),
                Step::Complete => {
                    complete = true;
                    break;
                }
                Step::Truncated => break,
            }
        }
        RawStack { frames, truncated: !complete }
    }

    fn in_range(&self, pc: u64, is_return: bool) -> bool {
        let at = if is_return { pc.saturating_sub(1) } else { pc };
        self.ranges.iter().any(|r| at >= r.start && at < r.end)
    }

    /// Forgets rules (exec replaced the code); returns the keys the kernel must drop.
    /// Code ranges stay: they are set for the image being traced (`run` sets them for
    /// the program it starts, before its exec).
    pub fn reset(&mut self) -> Vec<u64> {
        self.known.clear();
        self.cfi.clear();
        self.taught.drain().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        identify::symbolize::{Symbolizer, Symbols},
        stacks::table::{StackSource, StackTable},
    };

    /// Registers and 8 KiB of this thread's stack, at a known point.
    #[inline(never)]
    fn sample_here() -> Sample {
        let (ip, sp, bp): (u64, u64, u64);
        // SAFETY: reads three registers.
        unsafe {
            std::arch::asm!("lea {ip}, [rip]", "mov {sp}, rsp", "mov {bp}, rbp", ip = out(reg) ip, sp = out(reg) sp, bp = out(reg) bp);
        }
        // SAFETY: the 8 KiB above sp are this thread's live stack (test threads have MiBs).
        let stack = unsafe { std::slice::from_raw_parts(sp as *const u8, 8192) };
        Sample { id: 7, ip, sp, bp, flags: 0, stack: bytes::Bytes::copy_from_slice(stack) }
    }

    #[inline(never)]
    fn caller_of_sample_here() -> Sample {
        std::hint::black_box(sample_here())
    }

    /// Unwinds a copy of this very stack with CFI from this test binary, and checks the
    /// walk passes through the functions that are really there.
    #[tokio::test]
    async fn unwinds_its_own_stack() {
        let sample = caller_of_sample_here();
        let mut modules = ModuleMap::new(std::process::id());
        let mut unwinder = Unwinder::default();
        let mut learned = Vec::new();
        let raw = unwinder.unwind(&mut modules, &sample, &mut learned);
        assert!(raw.frames.len() >= 4, "{:x?}", raw.frames);
        assert!(!learned.is_empty());
        // The same walk again gives the same stack, and teaches the same rules again
        // (the kernel only sends a sample when it lacks one).
        let mut again = Vec::new();
        assert_eq!(unwinder.unwind(&mut modules, &sample, &mut again), raw);
        assert_eq!(again, learned);

        let mut stacks = StackTable::new(Box::new(Fixed(raw.clone())), modules);
        let id = crate::stacks::StackId(1);
        stacks.resolve(id);
        let mut symbols = Symbols::new(Symbolizer::spawn().unwrap());
        symbols.load(&stacks, std::iter::once(id)).await;
        let names: Vec<String> =
            symbols.frames(&stacks, id).into_iter().filter_map(|f| f.symbol.function).collect();
        let position = |needle: &str| names.iter().position(|n| n.contains(needle));
        let caller = position("caller_of_sample_here").unwrap_or_else(|| panic!("{names:?}"));
        let test = position("unwinds_its_own_stack").unwrap_or_else(|| panic!("{names:?}"));
        assert!(caller < test, "{names:?}");
    }

    #[test]
    fn code_ranges_come_first_and_are_not_taught() {
        let mut modules = ModuleMap::new(std::process::id());
        let mut unwinder = Unwinder::default();
        let pc = caller_of_sample_here as *const () as u64;
        unwinder.set_ranges(vec![CodeRange {
            start: pc - 16,
            end: pc + 16,
            rule: UnwindRule::FRAME_POINTER,
        }]);
        assert_eq!(unwinder.rule(&mut modules, pc, false), Some(UnwindRule::FRAME_POINTER));
        assert_eq!(unwinder.rule(&mut modules, pc + 1, true), Some(UnwindRule::FRAME_POINTER));
        assert!(unwinder.in_range(pc + 16, true), "a return address right after a range's end call");
    }

    struct Fixed(RawStack);
    impl StackSource for Fixed {
        fn fetch(&mut self, _: crate::stacks::StackId) -> Option<RawStack> {
            Some(self.0.clone())
        }
    }
}
