//! User stack capture. Two walks:
//!
//! - eh_frame (default): a loop over unwind rules that userspace derived from the
//!   target's `.eh_frame`/`.debug_frame` and put in `UNWIND_RULES`, one per code address,
//!   or that hold for whole code ranges (`CODE_RANGES`: Go code, which keeps frame
//!   pointers). Correct with or without frame pointers, and through frameless library
//!   code. When a rule is missing, the registers and a copy of the stack go to userspace
//!   in a `StackSample`; userspace unwinds it once and teaches the kernel the rules, so
//!   each call path pays for a copy only the first time.
//! - frame pointers: `bpf_get_stack`, plus the return address at `[sp]` (a walk from a
//!   function's first instruction skips the direct caller).
//!
//! Either way the stack is stored once per distinct content under a hash, its id. The
//! step from one frame to the next is `tracer_ebpf::unwind::step`, shared with
//! userspace.

use aya_ebpf::{
    bindings::BPF_F_USER_STACK,
    helpers::{bpf_get_prandom_u32, bpf_get_stack, bpf_loop, bpf_probe_read_user, bpf_probe_read_user_buf},
};
use tracer_ebpf::{
    counter,
    record::{Header, STACK_COPY_MAX, StackSample, kind, sample_flags},
    unwind::{MAX_CODE_RANGES, MAX_STACK_DEPTH, RETURN_ADDRESS_KEY, Regs, Stack, Step, UnwindRule, step},
    unwind_mode,
};

use super::{
    context::now,
    maps::{
        CODE_RANGES, CachedRule, EVENTS, RULE_CACHE, RULE_CACHE_SLOTS, RULE_GENERATION, SAMPLE_SCRATCH,
        SAMPLE_SCRATCH_SIZE, STACK_SCRATCH, STACKS, UNWIND_RULES, count, unwind_mode,
    },
};

/// Where a stack starts.
#[derive(Clone, Copy)]
pub struct Start {
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
    /// `ip` is a function's first instruction or a return instruction, so the return
    /// address is at `[sp]` (uprobes); false at a syscall or a fault.
    pub at_entry: bool,
}

/// Captures the user stack of the current thread and returns its id (0 on failure).
#[inline(always)]
pub fn capture(ctx: *mut core::ffi::c_void, start: &Start) -> u64 {
    match unwind_mode() {
        unwind_mode::FRAME_POINTERS => frame_pointers(ctx, start.sp),
        unwind_mode::NONE => 0,
        unwind_mode::COPY => sample(start),
        _ => eh_frame(start),
    }
}

/// The rule for `key`: from this CPU's cache, else from the rule map or the code ranges
/// (and then cached).
#[inline(always)]
fn rule_for(key: u64, generation: u32) -> Option<UnwindRule> {
    let slot =
        ((key ^ (key >> 17)).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 54) as u32 & (RULE_CACHE_SLOTS - 1);
    let cached = RULE_CACHE.get_ptr_mut(slot)?;
    // SAFETY: this CPU's slot; no other program runs on this CPU meanwhile.
    let cached = unsafe { &mut *cached };
    if cached.key == key && cached.generation == generation {
        return Some(cached.rule);
    }
    // SAFETY: the value is copied out at once.
    let rule = match unsafe { UNWIND_RULES.get(key) } {
        Some(rule) => *rule,
        None => range_rule(key)?,
    };
    *cached = CachedRule { key, generation, rule, _pad: 0 };
    Some(rule)
}

/// The rule of the code range holding `key`'s address (a return address is looked up
/// one byte back, at its call).
#[inline(always)]
fn range_rule(key: u64) -> Option<UnwindRule> {
    let addr = if key & RETURN_ADDRESS_KEY != 0 { (key & !RETURN_ADDRESS_KEY).wrapping_sub(1) } else { key };
    let mut i = 0;
    while i < MAX_CODE_RANGES {
        let range = CODE_RANGES.get(i)?;
        if range.start == 0 {
            return None;
        }
        if addr >= range.start && addr < range.end {
            return Some(range.rule);
        }
        i += 1;
    }
    None
}

/// Bytes of stack read at once at the start of a walk: the first frames' return
/// addresses come from there rather than one read each.
const NEAR: usize = 256;

/// How a walk ended (in `Walk::end`).
const WALKING: u32 = 0;
const COMPLETE: u32 = 1;
const TRUNCATED: u32 = 2;
const NO_RULE: u32 = 3;

/// The state of a walk, shared with `walk_step` through `bpf_loop`: a loop whose body
/// the verifier checks once, not once per iteration (that took over a second to load).
#[repr(C)]
struct Walk {
    regs: Regs,
    /// The stack pointer at the probe, where the copy in the sample buffer starts.
    start_sp: u64,
    /// Frames in `STACK_SCRATCH` so far (the probed instruction, then one per step).
    n: u64,
    end: u32,
    generation: u32,
    /// The words just above `start_sp` are in the sample buffer.
    near: u32,
    /// The first step is from a function's first instruction.
    at_entry: u32,
}

/// Reads a word of the target's stack: from the copy of the words near sp when it is
/// there, else with a helper call.
#[inline(always)]
fn read_word(start_sp: u64, near: bool, addr: u64) -> Option<u64> {
    let off = addr.wrapping_sub(start_sp);
    if near && off < (NEAR - 8) as u64 && off.is_multiple_of(8) {
        let buf = SAMPLE_SCRATCH.get_ptr(0)?;
        // SAFETY: this CPU's buffer, filled at the start of the walk.
        let buf = unsafe { &*buf };
        let off = off as usize & (NEAR - 8);
        let word: [u8; 8] = buf.get(off..off + 8)?.try_into().ok()?;
        return Some(u64::from_ne_bytes(word));
    }
    // SAFETY: reads of the target's own stack; a fault ends the walk.
    unsafe { bpf_probe_read_user(addr as *const u64) }.ok()
}

/// One step of a walk: from the current frame to its caller's. 0 to go on, 1 to stop.
#[inline(never)]
extern "C" fn walk_step(index: u32, ctx: *mut core::ffi::c_void) -> i64 {
    // SAFETY: bpf_loop hands back the pointer `eh_frame` gave it.
    let walk = unsafe { &mut *ctx.cast::<Walk>() };
    let rule = if index == 0 && walk.at_entry != 0 {
        UnwindRule::AT_ENTRY
    } else {
        let key = if index == 0 { walk.regs.pc } else { walk.regs.pc | RETURN_ADDRESS_KEY };
        match rule_for(key, walk.generation) {
            Some(rule) => rule,
            None => {
                walk.end = NO_RULE;
                return 1;
            }
        }
    };
    let (start_sp, near) = (walk.start_sp, walk.near != 0);
    match step(rule, &mut walk.regs, |addr| read_word(start_sp, near, addr)) {
        Step::Caller => {}
        Step::Complete => {
            walk.end = COMPLETE;
            return 1;
        }
        Step::Truncated => {
            walk.end = TRUNCATED;
            return 1;
        }
    }
    let Some(stack) = STACK_SCRATCH.get_ptr_mut(0) else {
        walk.end = TRUNCATED;
        return 1;
    };
    // SAFETY: this CPU's scratch.
    let stack = unsafe { &mut *stack };
    // Positions come from the loop index, not a counter carried from step to step: the
    // verifier can then see every step alike and checks the body once.
    let at = index as usize + 1;
    stack.frames[at & (MAX_STACK_DEPTH - 1)] = walk.regs.pc;
    walk.n = at as u64 + 1;
    0
}

#[inline(always)]
fn eh_frame(start: &Start) -> u64 {
    let Some(stack) = STACK_SCRATCH.get_ptr_mut(0) else {
        count(counter::STACK_ERRORS);
        return 0;
    };
    // SAFETY: per-CPU scratch; BPF programs on one CPU do not preempt each other here.
    let stack = unsafe { &mut *stack };
    stack.frames[0] = start.ip;
    // The sample buffer is free until a walk gives up: borrow its start for the words
    // just above sp.
    let near = SAMPLE_SCRATCH.get_ptr_mut(0).is_some_and(|buf| {
        // SAFETY: per-CPU scratch, as above.
        let buf = unsafe { &mut *buf };
        buf.get_mut(..NEAR)
            // SAFETY: reading the target's stack into our buffer.
            .is_some_and(|near| unsafe { bpf_probe_read_user_buf(start.sp as *const u8, near) }.is_ok())
    });
    let mut walk = Walk {
        regs: Regs { pc: start.ip, sp: start.sp, bp: start.bp },
        start_sp: start.sp,
        n: 1,
        end: WALKING,
        generation: RULE_GENERATION.get(0).copied().unwrap_or(0),
        near: u32::from(near),
        at_entry: u32::from(start.at_entry),
    };
    // SAFETY: the callback gets `walk` back, and only for the duration of the call.
    unsafe {
        bpf_loop((MAX_STACK_DEPTH - 1) as u32, walk_step as *mut core::ffi::c_void, (&raw mut walk).cast(), 0)
    };
    if walk.end == NO_RULE {
        return sample(start);
    }
    let len = (walk.n as usize).min(MAX_STACK_DEPTH);
    stack.len = len as u32;
    stack.truncated = u32::from(walk.end != COMPLETE);
    if stack.truncated != 0 {
        count(counter::TRUNCATED_STACKS);
    }
    store(stack, len)
}

/// Sends the registers and up to `STACK_COPY_MAX` bytes of stack to userspace; returns
/// the id the stack will have there (userspace files it under its content hash and
/// translates this id).
#[inline(always)]
fn sample(start: &Start) -> u64 {
    let Some(buf) = SAMPLE_SCRATCH.get_ptr_mut(0) else {
        count(counter::STACK_ERRORS);
        return 0;
    };
    // SAFETY: per-CPU scratch, as above.
    let buf = unsafe { &mut *buf };
    const HEADER: usize = core::mem::size_of::<StackSample>();
    let copied = copy_stack(buf, HEADER, start.sp);
    // SAFETY: helper without preconditions.
    let id = unsafe { (u64::from(bpf_get_prandom_u32()) << 32) | u64::from(bpf_get_prandom_u32()) } | 1;
    let header = StackSample {
        header: Header { kind: kind::STACK_SAMPLE, tid: 0, ts_ns: now() },
        id,
        ip: start.ip,
        sp: start.sp,
        bp: start.bp,
        len: copied as u32,
        flags: if start.at_entry { sample_flags::AT_ENTRY } else { 0 },
    };
    // SAFETY: the header fits at the start of the buffer.
    unsafe { core::ptr::write_unaligned(buf.as_mut_ptr().cast::<StackSample>(), header) };
    let size = (HEADER + copied) & (SAMPLE_SCRATCH_SIZE - 1);
    // SAFETY: size is within the buffer.
    let record = unsafe { core::slice::from_raw_parts(buf.as_ptr(), size) };
    if EVENTS.output::<[u8]>(record, 0).is_err() {
        count(counter::LOST_EVENTS);
        count(counter::STACK_ERRORS);
        return 0;
    }
    count(counter::STACK_SAMPLES);
    id
}

/// Copies the stack from `sp` up into `buf` after `offset` bytes, in chunks that never
/// cross a 512-byte boundary, so the copy goes as far as the stack's mapping does.
/// Returns the bytes copied.
#[inline(always)]
fn copy_stack(buf: &mut [u8; SAMPLE_SCRATCH_SIZE], offset: usize, sp: u64) -> usize {
    const CHUNK: u64 = 512;
    let mut copied: usize = 0;
    let mut addr = sp;
    for _ in 0..(STACK_COPY_MAX / CHUNK as usize + 1) {
        let room = STACK_COPY_MAX - copied.min(STACK_COPY_MAX);
        let chunk = ((CHUNK - (addr & (CHUNK - 1))) as usize).min(room);
        if chunk == 0 {
            break;
        }
        let at = offset + (copied & (STACK_COPY_MAX - 1));
        let Some(dst) = buf.get_mut(at..at + (chunk & (CHUNK as usize * 2 - 1))) else { break };
        // SAFETY: reading the target's stack into our scratch buffer.
        if unsafe { bpf_probe_read_user_buf(addr as *const u8, dst) }.is_err() {
            break;
        }
        copied += chunk;
        addr += chunk as u64;
    }
    copied
}

/// The frame-pointer walk from a function's first instruction (or a syscall in a leaf
/// wrapper), with the direct caller read from `[sp]` put back as `frames[1]`.
#[inline(always)]
fn frame_pointers(ctx: *mut core::ffi::c_void, sp: u64) -> u64 {
    let Some(stack) = STACK_SCRATCH.get_ptr_mut(0) else {
        count(counter::STACK_ERRORS);
        return 0;
    };
    // SAFETY: per-CPU scratch, as above.
    let stack = unsafe { &mut *stack };
    let frames = &mut stack.frames;
    const WALK_BYTES: u32 = ((MAX_STACK_DEPTH - 1) * 8) as u32;
    // SAFETY: the buffer holds MAX_STACK_DEPTH - 1 frames from index 1.
    let got =
        unsafe { bpf_get_stack(ctx, frames.as_mut_ptr().add(1).cast(), WALK_BYTES, BPF_F_USER_STACK as u64) };
    if got <= 0 {
        count(counter::STACK_ERRORS);
        return 0;
    }
    let walked = (got as usize / 8).min(MAX_STACK_DEPTH - 1);
    // SAFETY: reading the target's own stack; a fault returns an error.
    let Ok(caller) = (unsafe { bpf_probe_read_user(sp as *const u64) }) else {
        count(counter::STACK_ERRORS);
        return 0;
    };
    frames[0] = frames[1];
    frames[1] = caller;
    let len = walked + 1;
    stack.len = len as u32;
    stack.truncated = u32::from(walked == MAX_STACK_DEPTH - 1);
    if stack.truncated != 0 {
        count(counter::TRUNCATED_STACKS);
    }
    store(stack, len)
}

/// Stores a stack under its content hash (once) and returns the hash.
#[inline(always)]
fn store(stack: &Stack, len: usize) -> u64 {
    let id = hash(&stack.frames, len);
    // Look first: an LRU update would copy the whole value even when the key exists.
    // SAFETY: the value is only read for presence.
    if unsafe { STACKS.get(id) }.is_none() && STACKS.insert(id, stack, 0).is_err() {
        count(counter::STACK_ERRORS);
        return 0;
    }
    id
}

/// The content hash of a stack (`tracer_ebpf::unwind::stack_hash`, with the bounds the
/// verifier needs).
#[inline(always)]
fn hash(frames: &[u64; MAX_STACK_DEPTH], len: usize) -> u64 {
    let mut h = tracer_ebpf::unwind::HASH_SEED;
    // LLVM knows len <= MAX_STACK_DEPTH, drops the mask below and turns `i < len` into
    // `i != len`, which the verifier cannot bound. Hiding len keeps the mask, and the mask
    // keeps every access provably inside the value.
    let len = core::hint::black_box(len);
    let mut i = 0;
    while i < len {
        h = tracer_ebpf::unwind::hash_step(h, frames[i & (MAX_STACK_DEPTH - 1)]);
        i += 1;
    }
    h | 1
}
