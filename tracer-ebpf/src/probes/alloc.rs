//! Uprobes on the malloc family. One entry program for every allocating function (the
//! attach cookie says which one), one return program, and `free`.
//!
//! Entry records the arguments and the stack (the stack must be taken at entry: at the
//! return the caller's frame is already gone); return decides. A failed call (NULL, or
//! nonzero from posix_memalign) produces nothing, and realloc releases its old block only
//! when it returns a new one.
//!
//! With sampling (`SAMPLE_BYTES`), entry draws whether the new block is sampled; an
//! unsampled call stops there (no stack, no event). Sampled blocks are remembered in
//! `SAMPLED`, and only their frees and reallocs produce events.

use aya_ebpf::{
    EbpfContext,
    helpers::{
        bpf_get_attach_cookie, bpf_get_current_pid_tgid, bpf_get_prandom_u32, bpf_ktime_get_ns,
        bpf_probe_read_user,
    },
    macros::{uprobe, uretprobe},
    programs::{ProbeContext, RetProbeContext},
};
use tracer_ebpf::{Event, counter, func, kind, sample_threshold};

use super::{
    maps::{ALLOC_CALLS, AllocCall, SAMPLED, bench_floor, count, sample_bytes, target_tgid},
    output::emit,
    stack,
};

/// An outer call older than this is taken as abandoned (its return was never seen), so it
/// no longer hides the thread's calls as nested.
const STALE_CALL_NS: u64 = 1_000_000_000;

/// Returns the thread id when the current process is the target.
#[inline(always)]
fn target_thread() -> Option<u32> {
    let pid_tgid = bpf_get_current_pid_tgid();
    ((pid_tgid >> 32) as u32 == target_tgid()).then_some(pid_tgid as u32)
}

/// True when `tid` is inside a traced allocator call whose frame is at or above `sp`.
/// Equal stack pointers are a tail call: glibc's `realloc(NULL, n)` jumps to `malloc`,
/// which then returns straight to realloc's caller.
#[inline(always)]
fn inside_outer_call(tid: u32, sp: u64, now: u64) -> bool {
    // SAFETY: read-only access to a map value.
    match unsafe { ALLOC_CALLS.get(&tid) } {
        Some(outer) => outer.sp >= sp && now.wrapping_sub(outer.ts_ns) < STALE_CALL_NS,
        None => false,
    }
}

/// Sampling: is a block remembered as sampled?
#[inline(always)]
fn sampled(addr: u64) -> bool {
    // SAFETY: presence check only.
    unsafe { SAMPLED.get(&addr) }.is_some()
}

#[uprobe]
pub fn lt_alloc_enter(ctx: ProbeContext) -> u32 {
    if bench_floor() {
        return 0;
    }
    let Some(tid) = target_thread() else { return 0 };
    // SAFETY: ctx.regs is the probed thread's register file.
    let regs = unsafe { &*ctx.regs };
    let sp = regs.rsp;
    // SAFETY: helper valid in uprobe programs.
    let func = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) } as u32;
    let (a0, a1, a2) = (regs.rdi, regs.rsi, regs.rdx);
    let (size, arg) = match func {
        func::CALLOC => (a0.wrapping_mul(a1), 0),
        func::REALLOC => (a1, a0),
        func::REALLOCARRAY => (a1.wrapping_mul(a2), a0),
        func::MEMALIGN | func::ALIGNED_ALLOC => (a1, 0),
        func::POSIX_MEMALIGN => (a2, a0),
        // malloc, valloc, pvalloc
        _ => (a0, 0),
    };
    // Sampling first: an unsampled call costs as little as can be.
    let rate = sample_bytes();
    let mut threshold = 0;
    if rate != 0 {
        let t = sample_threshold(size, rate);
        // SAFETY: helper without preconditions.
        if unsafe { bpf_get_prandom_u32() } <= t && t != 0 {
            threshold = t;
        } else {
            // Not sampled. A realloc still matters if its old block was sampled.
            let moves_sampled =
                matches!(func, func::REALLOC | func::REALLOCARRAY) && arg != 0 && sampled(arg);
            if !moves_sampled {
                return 0;
            }
        }
    }
    let now = unsafe { bpf_ktime_get_ns() };
    if inside_outer_call(tid, sp, now) {
        count(counter::NESTED_CALLS);
        return 0;
    }
    let stack_id = if rate == 0 || threshold != 0 {
        stack::capture(ctx.as_ptr(), &stack::UserRegs { ip: regs.rip, sp, bp: regs.rbp }, true)
    } else {
        0
    };
    let call = AllocCall { sp, ts_ns: now, size, arg, stack_id, func, threshold };
    if ALLOC_CALLS.insert(&tid, &call, 0).is_err() {
        count(counter::DROPPED);
    }
    0
}

#[uretprobe]
pub fn lt_alloc_return(ctx: RetProbeContext) -> u32 {
    if bench_floor() {
        return 0;
    }
    let Some(tid) = target_thread() else { return 0 };
    // SAFETY: read of a map value we copy out at once.
    let Some(call) = (unsafe { ALLOC_CALLS.get(&tid) }).copied() else {
        return 0;
    };
    // SAFETY: ctx.regs is the returning thread's register file.
    let regs = unsafe { &*ctx.regs };
    // The return of a nested call: the outer call is still running.
    if call.sp.wrapping_add(8) != regs.rsp {
        return 0;
    }
    let _ = ALLOC_CALLS.remove(&tid);
    let ret = regs.rax;
    let sampling = sample_bytes() != 0;

    let mut event = Event {
        kind: kind::ALLOC,
        tid,
        ts_ns: unsafe { bpf_ktime_get_ns() },
        addr: ret,
        size: call.size,
        old_size: u64::from(call.threshold),
        stack_id: call.stack_id,
        func: call.func as u16,
        ..Event::default()
    };
    match call.func {
        func::POSIX_MEMALIGN => {
            if ret != 0 {
                return 0;
            }
            // SAFETY: the caller's out-pointer; a fault just drops the event.
            match unsafe { bpf_probe_read_user(call.arg as *const u64) } {
                Ok(addr) if addr != 0 => event.addr = addr,
                _ => return 0,
            }
        }
        func::REALLOC | func::REALLOCARRAY => {
            // glibc's realloc(p, 0) frees p and returns NULL; any other NULL is a failure
            // that leaves p allocated.
            let frees_old = ret != 0 || (call.size == 0 && call.arg != 0);
            if !frees_old {
                return 0;
            }
            let old_known = call.arg != 0 && (!sampling || SAMPLED.remove(&call.arg).is_ok());
            if ret != 0 && (!sampling || call.threshold != 0) {
                event.kind = kind::REALLOC;
                event.old_addr = if old_known { call.arg } else { 0 };
            } else if old_known {
                event.kind = kind::FREE;
                event.addr = call.arg;
                event.size = 0;
                event.stack_id = 0;
                event.old_size = 0;
                emit(&event);
                return 0;
            } else {
                return 0;
            }
        }
        _ => {
            if ret == 0 {
                return 0;
            }
        }
    }
    if sampling && SAMPLED.insert(&event.addr, &1, 0).is_err() {
        count(counter::DROPPED);
        return 0;
    }
    emit(&event);
    0
}

#[uprobe]
pub fn lt_free_enter(ctx: ProbeContext) -> u32 {
    if bench_floor() {
        return 0;
    }
    let Some(tid) = target_thread() else { return 0 };
    // SAFETY: ctx.regs is the probed thread's register file.
    let regs = unsafe { &*ctx.regs };
    let addr = regs.rdi;
    if addr == 0 {
        return 0;
    }
    // Sampling: frees of blocks that were not sampled are dropped here, first thing.
    let sampling = sample_bytes() != 0;
    if sampling && !sampled(addr) {
        return 0;
    }
    let now = unsafe { bpf_ktime_get_ns() };
    // A free inside a traced realloc is the realloc's business.
    if inside_outer_call(tid, regs.rsp, now) {
        return 0;
    }
    if sampling {
        let _ = SAMPLED.remove(&addr);
    }
    emit(&Event { kind: kind::FREE, tid, ts_ns: now, addr, func: func::FREE as u16, ..Event::default() });
    0
}
