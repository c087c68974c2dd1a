//! User stack capture: a frame-pointer walk plus the direct caller, stored once per
//! distinct stack under a content hash.

use aya_ebpf::{
    bindings::BPF_F_USER_STACK,
    helpers::{bpf_get_stack, bpf_probe_read_user},
};
use tracer_ebpf::{MAX_STACK_DEPTH, counter};

use super::maps::{STACK_SCRATCH, STACKS, count};

/// Captures the user stack of the current thread and returns its id (0 on failure).
///
/// `sp` is the user stack pointer at the probed instruction, which must be the first
/// instruction of a function (or a syscall instruction in a leaf wrapper): the word at
/// `[sp]` is then the return address into the direct caller. The frame-pointer walk
/// starts from the caller's saved frame and skips exactly that frame, so it is put back
/// as `frames[1]`.
#[inline(always)]
pub fn capture(ctx: *mut core::ffi::c_void, sp: u64) -> u64 {
    let Some(stack) = STACK_SCRATCH.get_ptr_mut(0) else {
        count(counter::STACK_ERRORS);
        return 0;
    };
    // SAFETY: per-CPU scratch; BPF programs on one CPU do not preempt each other here.
    let stack = unsafe { &mut *stack };
    let frames = &mut stack.frames;

    // Walk into frames[1..], then move the probed ip to frames[0] and put the caller
    // in frames[1].
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

    let id = hash(frames, len);
    // Look first: an LRU update would copy the whole value even when the key exists.
    // SAFETY: the value is only read for presence.
    if unsafe { STACKS.get(&id) }.is_none() && STACKS.insert(&id, &*stack, 0).is_err() {
        count(counter::STACK_ERRORS);
        return 0;
    }
    id
}

/// FNV-1a over the frames, never 0 (0 means "no stack").
#[inline(always)]
fn hash(frames: &[u64; MAX_STACK_DEPTH], len: usize) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    // LLVM knows len <= MAX_STACK_DEPTH, drops the mask below and turns `i < len` into
    // `i != len`, which the verifier cannot bound. Hiding len keeps the mask, and the mask
    // keeps every access provably inside the value.
    let len = core::hint::black_box(len);
    let mut i = 0;
    while i < len {
        h ^= frames[i & (MAX_STACK_DEPTH - 1)];
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
        h ^= h >> 29;
        i += 1;
    }
    h | 1
}
