//! Stacks and how to walk them: the stored stack, the per-address unwind rules userspace
//! derives from the target's call frame information, and [`step`], the one step of a
//! walk that the kernel side (over the live stack) and userspace (over a stack copy)
//! both run.

/// Frames kept per user stack. Deeper stacks are cut and counted as truncated. A power
/// of two, so the kernel side can bound indexes with a mask.
pub const MAX_STACK_DEPTH: usize = 128;

/// A user stack, innermost frame first: `frames[0]` is the probed instruction,
/// `frames[1]` the return address into the direct caller, then the callers.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Stack {
    /// Valid entries of `frames`.
    pub len: u32,
    /// Nonzero when the walk did not reach the outermost frame.
    pub truncated: u32,
    pub frames: [u64; MAX_STACK_DEPTH],
}
const _: () = assert!(core::mem::size_of::<Stack>() == 8 + 8 * MAX_STACK_DEPTH);

/// How to step from one frame to its caller, for one code address (x86-64: the return
/// address is always at CFA - 8).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnwindRule {
    /// CFA = register + offset.
    pub cfa_offset: i32,
    /// Where the caller's rbp was saved, relative to the CFA; 0 when rbp is unchanged.
    pub bp_offset: i16,
    /// One of [`cfa`].
    pub cfa_reg: u8,
    pub _pad: u8,
}
const _: () = assert!(core::mem::size_of::<UnwindRule>() == 8);

impl UnwindRule {
    /// At a function's first instruction, or at a return instruction: the return
    /// address is at `[sp]` and rbp is the caller's.
    pub const AT_ENTRY: Self = Self { cfa_offset: 8, bp_offset: 0, cfa_reg: cfa::SP, _pad: 0 };
    /// Inside a function that keeps a frame pointer (Go code, for one): the caller's
    /// rbp at `[rbp]`, the return address above it.
    pub const FRAME_POINTER: Self = Self { cfa_offset: 16, bp_offset: -16, cfa_reg: cfa::BP, _pad: 0 };
    /// The outermost frame: the walk is complete.
    pub const END: Self = Self { cfa_offset: 0, bp_offset: 0, cfa_reg: cfa::END, _pad: 0 };
    /// No rule can be given: the walk stops, cut short.
    pub const NONE: Self = Self { cfa_offset: 0, bp_offset: 0, cfa_reg: cfa::NONE, _pad: 0 };
}

/// Values of [`UnwindRule::cfa_reg`].
pub mod cfa {
    /// No rule can be given (no CFI, or an expression): the walk stops, cut short.
    pub const NONE: u8 = 0;
    pub const SP: u8 = 1;
    pub const BP: u8 = 2;
    /// The outermost frame (the return address is undefined): the walk is complete.
    pub const END: u8 = 3;
}

/// Keys of `UNWIND_RULES` are code addresses; a return address (whose rule is that of
/// the call instruction before it) has this bit set, an exact instruction address not.
pub const RETURN_ADDRESS_KEY: u64 = 1 << 63;

/// A range of code with one rule for every address in it, for code whose rules need no
/// per-address table: Go code keeps frame pointers ([`UnwindRule::FRAME_POINTER`]);
/// `runtime.goexit` is where every goroutine's stack ends ([`UnwindRule::END`]). The
/// kernel side looks these up (first match wins) when `UNWIND_RULES` has no rule.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CodeRange {
    pub start: u64,
    pub end: u64,
    pub rule: UnwindRule,
}
const _: () = assert!(core::mem::size_of::<CodeRange>() == 24);

/// Entries of the `CODE_RANGES` array.
pub const MAX_CODE_RANGES: u32 = 16;

/// The content hash of a stack, its id in `STACKS` (FNV-1a-like, never 0: 0 means no
/// stack). Userspace hashes the stacks it unwinds from samples the same way, so a call
/// path has one id whichever side walked it.
pub fn stack_hash(frames: &[u64]) -> u64 {
    let mut h = HASH_SEED;
    for &frame in frames {
        h = hash_step(h, frame);
    }
    h | 1
}

pub const HASH_SEED: u64 = 0xcbf2_9ce4_8422_2325;

#[inline(always)]
pub fn hash_step(h: u64, frame: u64) -> u64 {
    let h = (h ^ frame).wrapping_mul(0x0000_0100_0000_01b3);
    h ^ (h >> 29)
}

/// Registers a walk carries from frame to frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Regs {
    pub pc: u64,
    pub sp: u64,
    pub bp: u64,
}

/// What a step found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// `regs` now describe the caller's frame; its return address is `regs.pc`.
    Caller,
    /// The outermost frame was reached: the stack is complete.
    Complete,
    /// The walk cannot go on (no rule, or the stack could not be read): cut short.
    Truncated,
}

/// One step of a walk: from the frame `regs` describe to its caller's, by `rule`.
/// `read` reads a word of the target's stack.
#[inline(always)]
pub fn step(rule: UnwindRule, regs: &mut Regs, mut read: impl FnMut(u64) -> Option<u64>) -> Step {
    let base = match rule.cfa_reg {
        cfa::SP => regs.sp,
        cfa::BP => regs.bp,
        cfa::END => return Step::Complete,
        _ => return Step::Truncated,
    };
    let cfa = base.wrapping_add(rule.cfa_offset as i64 as u64);
    let Some(ra) = read(cfa.wrapping_sub(8)) else { return Step::Truncated };
    if rule.bp_offset != 0 {
        match read(cfa.wrapping_add(rule.bp_offset as i64 as u64)) {
            Some(saved) => regs.bp = saved,
            None => return Step::Truncated,
        }
    }
    regs.sp = cfa;
    regs.pc = ra;
    // The frame-pointer chain and the C runtime's entry end with a zero return address.
    if ra == 0 { Step::Complete } else { Step::Caller }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stack of words at 0x1000 and up.
    fn reader(words: &[u64]) -> impl FnMut(u64) -> Option<u64> + '_ {
        move |addr| {
            let i = usize::try_from(addr.checked_sub(0x1000)? / 8).ok()?;
            (addr % 8 == 0).then_some(())?;
            words.get(i).copied()
        }
    }

    #[test]
    fn at_entry_the_return_address_is_at_sp() {
        let stack = [0xaaaa, 0xbbbb];
        let mut regs = Regs { pc: 0x5000, sp: 0x1000, bp: 0x7777 };
        assert_eq!(step(UnwindRule::AT_ENTRY, &mut regs, reader(&stack)), Step::Caller);
        assert_eq!(regs, Regs { pc: 0xaaaa, sp: 0x1008, bp: 0x7777 });
    }

    #[test]
    fn a_frame_pointer_frame_restores_rbp() {
        // [bp] = saved rbp 0x1020, [bp+8] = return address.
        let stack = [0, 0, 0x1020, 0xcafe, 0, 0];
        let mut regs = Regs { pc: 0x5000, sp: 0x1000, bp: 0x1010 };
        assert_eq!(step(UnwindRule::FRAME_POINTER, &mut regs, reader(&stack)), Step::Caller);
        assert_eq!(regs, Regs { pc: 0xcafe, sp: 0x1020, bp: 0x1020 });
    }

    #[test]
    fn ends_and_failures() {
        let mut regs = Regs { pc: 1, sp: 0x1000, bp: 0 };
        assert_eq!(step(UnwindRule::END, &mut regs, reader(&[])), Step::Complete);
        assert_eq!(step(UnwindRule::NONE, &mut regs, reader(&[])), Step::Truncated);
        assert_eq!(step(UnwindRule::AT_ENTRY, &mut regs, reader(&[])), Step::Truncated);
        assert_eq!(step(UnwindRule::AT_ENTRY, &mut regs, reader(&[0])), Step::Complete);
        // A frame pointer of 0 (the outermost Go frame) cannot be read.
        assert_eq!(step(UnwindRule::FRAME_POINTER, &mut regs, reader(&[1, 2])), Step::Truncated);
    }
}
