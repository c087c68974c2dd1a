//! Unwinding with call frame information, in userspace: for stack samples the kernel
//! side sent because it lacked a rule, and to produce the rules it lacked.
//!
//! The walk is the kernel side's walk (`tracer-ebpf/src/probes/stack.rs`) over a copy of
//! the stack, with rules computed here from each module's `.eh_frame`/`.debug_frame`.
//! Every rule used is handed back, to be taught to the kernel, so the next stack through
//! the same code is walked there.

mod cfi;

use std::collections::{HashMap, HashSet};

use tracer_ebpf::{MAX_STACK_DEPTH, RETURN_ADDRESS_KEY, UnwindRule, cfa, sample_flags};

use self::cfi::{ModuleCfi, NO_RULE};
use crate::{
    aggregate::stacks::RawStack,
    symbolize::modules::{ModuleIdx, ModuleMap},
};

/// A stack sample: registers at the probe and a copy of the stack from `sp` up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    pub id: u64,
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
    pub flags: u16,
    pub stack: bytes::Bytes,
}

impl Sample {
    fn read(&self, addr: u64) -> Option<u64> {
        let off = usize::try_from(addr.checked_sub(self.sp)?).ok()?;
        let word = self.stack.get(off..off + 8)?;
        Some(u64::from_le_bytes(word.try_into().ok()?))
    }
}

#[derive(Default)]
pub struct Unwinder {
    cfi: HashMap<ModuleIdx, Option<ModuleCfi>>,
    /// Rules already handed out, by key.
    known: HashMap<u64, UnwindRule>,
    /// Keys handed to the kernel (to take back on exec).
    pub taught: HashSet<u64>,
}

impl Unwinder {
    /// The rule for code address `pc` (`is_return`: a return address, whose rule is the
    /// call instruction's, one byte before).
    pub fn rule(&mut self, modules: &mut ModuleMap, pc: u64, is_return: bool) -> UnwindRule {
        let key = if is_return { pc | RETURN_ADDRESS_KEY } else { pc };
        if let Some(rule) = self.known.get(&key) {
            return *rule;
        }
        let rule = (|| {
            let location = modules.locate(pc)?;
            let module = location.module?;
            let cfi = self
                .cfi
                .entry(module)
                .or_insert_with(|| ModuleCfi::load(&modules.module(module).symbol_path()))
                .as_mut()?;
            let vaddr = cfi.vaddr_of(location.offset)?;
            Some(cfi.rule_at(if is_return { vaddr.saturating_sub(1) } else { vaddr }))
        })()
        .unwrap_or(NO_RULE);
        self.known.insert(key, rule);
        rule
    }

    /// Walks a sample; rules it needed that the kernel lacks are added to `learned`.
    pub fn unwind(
        &mut self,
        modules: &mut ModuleMap,
        sample: &Sample,
        learned: &mut Vec<(u64, UnwindRule)>,
    ) -> RawStack {
        let mut frames = vec![sample.ip];
        let (mut pc, mut sp, mut bp) = (sample.ip, sample.sp, sample.bp);
        let mut complete = false;
        for i in 0..MAX_STACK_DEPTH - 1 {
            let rule = if i == 0 && sample.flags & sample_flags::AT_ENTRY != 0 {
                UnwindRule { cfa_offset: 8, bp_offset: 0, cfa_reg: cfa::SP, _pad: 0 }
            } else {
                let is_return = i > 0;
                let rule = self.rule(modules, pc, is_return);
                let key = if is_return { pc | RETURN_ADDRESS_KEY } else { pc };
                if self.taught.insert(key) {
                    learned.push((key, rule));
                }
                rule
            };
            let base = match rule.cfa_reg {
                cfa::SP => sp,
                cfa::BP => bp,
                cfa::END => {
                    complete = true;
                    break;
                }
                _ => break,
            };
            let cfa = base.wrapping_add(rule.cfa_offset as i64 as u64);
            let Some(ra) = sample.read(cfa.wrapping_sub(8)) else { break };
            if rule.bp_offset != 0 {
                match sample.read(cfa.wrapping_add(rule.bp_offset as i64 as u64)) {
                    Some(saved) => bp = saved,
                    None => break,
                }
            }
            sp = cfa;
            pc = ra;
            if pc == 0 {
                complete = true;
                break;
            }
            frames.push(pc);
        }
        RawStack { frames, truncated: !complete }
    }

    /// Forgets rules (exec replaced the code); returns the keys the kernel must drop.
    pub fn reset(&mut self) -> Vec<u64> {
        self.known.clear();
        self.cfi.clear();
        self.taught.drain().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::symbolize::{Symbolizer, Symbols};

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
        // Every rule is learnt once.
        let mut again = Vec::new();
        assert_eq!(unwinder.unwind(&mut modules, &sample, &mut again), raw);
        assert!(again.is_empty());

        let mut stacks = crate::aggregate::stacks::StackTable::new(Box::new(Fixed(raw.clone())), modules);
        let id = crate::event::StackId(1);
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

    struct Fixed(RawStack);
    impl crate::aggregate::stacks::StackSource for Fixed {
        fn fetch(&mut self, _: crate::event::StackId) -> Option<RawStack> {
            Some(self.0.clone())
        }
    }
}
