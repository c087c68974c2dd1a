//! Uprobes on the malloc family. One entry program for every allocating function (the
//! attach cookie says which one), one return program, and `free`; or, on kernels with
//! uprobe sessions, all three in one program (`lt_alloc_session`).
//!
//! Entry records the arguments and the stack (the stack must be taken at entry: at the
//! return the caller's frame is already gone); return decides. A failed call (NULL, or
//! nonzero from posix_memalign) produces nothing, and realloc releases its old block only
//! when it returns a new one.
//!
//! With sampling (`SAMPLE_BYTES`), entry draws whether the new block is sampled; an
//! unsampled call stops there (no stack, no event). Sampled blocks are remembered in
//! `SAMPLED`, and only their frees and reallocs produce events.

use core::ffi::c_void;

use aya_ebpf::{
    EbpfContext,
    bindings::pt_regs,
    helpers::{bpf_get_attach_cookie, bpf_get_prandom_u32},
    macros::{uprobe, uretprobe},
    programs::{ProbeContext, RetProbeContext},
};
use tracer_ebpf::{
    counter, func,
    record::{Alloc, Free, Realloc},
    sampling::sample_threshold,
};

use super::{
    context::{header, now, read_user, traced_thread},
    kfunc::session_is_return,
    maps::{ALLOC_CALLS, AllocCall, SAMPLED, bench_floor, count, sample_bytes},
    output::emit,
    stack::{self, Start},
};

/// An outer call older than this is taken as abandoned (its return was never seen), so it
/// no longer hides the thread's calls as nested.
const STALE_CALL_NS: u64 = 1_000_000_000;

#[uprobe]
pub fn lt_alloc_enter(ctx: ProbeContext) -> u32 {
    let _ = try_alloc_enter(&ctx, COOKIE_UNREAD);
    0
}

#[uretprobe]
pub fn lt_alloc_return(ctx: RetProbeContext) -> u32 {
    let _ = try_alloc_return(&ctx);
    0
}

#[uprobe]
pub fn lt_free_enter(ctx: ProbeContext) -> u32 {
    let _ = try_free_enter(&ctx);
    0
}

/// A session program's entry-half verdicts: run this call's return half, or not.
const RUN_RETURN: u32 = 0;
const SKIP_RETURN: u32 = 1;

/// The three programs above in one, for a uprobe session link (one per allocator object,
/// every allocator function and `free` in it): the kernel runs it at each call's entry
/// and, only when the entry half returned 0, at that call's return. So the calls whose
/// return has nothing to do (frees, unsampled allocations, nested calls) cost no return
/// probe at all.
///
/// Written out by hand: aya-ebpf's `#[uprobe]` wrapper always returns 0, which would
/// throw the entry half's verdict away. The section name is the one `#[uprobe]` gives,
/// which aya's object parser accepts; userspace loads the program itself, with the
/// session attach type.
#[unsafe(no_mangle)]
#[unsafe(link_section = "uprobe")]
pub fn lt_alloc_session(ctx: *mut c_void) -> u32 {
    if session_is_return() {
        let _ = try_alloc_return(&RetProbeContext::new(ctx));
        return 0;
    }
    let ctx = ProbeContext::new(ctx);
    let func = cookie_func(&ctx);
    if func == func::FREE {
        let _ = try_free_enter(&ctx);
        return SKIP_RETURN;
    }
    // The floor keeps the probes of full tracing: an entry and a return per allocation.
    if bench_floor() {
        return RUN_RETURN;
    }
    match try_alloc_enter(&ctx, func) {
        Some(()) => RUN_RETURN,
        None => SKIP_RETURN,
    }
}

/// Not a function id (they start at 1): `try_alloc_enter` reads the cookie itself. Not an
/// `Option`: LLVM leaves the register of a `None`'s payload unset, and the verifier
/// refuses a program that reads an unset register even to pass it on.
const COOKIE_UNREAD: u32 = 0;

/// The allocator function probed, from the attach cookie.
#[inline(always)]
fn cookie_func(ctx: &ProbeContext) -> u32 {
    // SAFETY: helper valid in uprobe programs of every link type (for multi and session
    // links it gives the cookie of the offset that fired).
    unsafe { bpf_get_attach_cookie(ctx.as_ptr()) as u32 }
}

#[inline(always)]
fn regs_of(regs: *mut pt_regs) -> &'static pt_regs {
    // SAFETY: the probed thread's register file, valid for the whole program run.
    unsafe { &*regs }
}

/// True when `tid` is inside a traced allocator call whose frame is at or above `sp`.
/// Equal stack pointers are a tail call: glibc's `realloc(NULL, n)` jumps to `malloc`,
/// which then returns straight to realloc's caller.
#[inline(always)]
fn inside_outer_call(tid: u32, sp: u64, now: u64) -> bool {
    // SAFETY: read-only access to a map value.
    let Some(outer) = (unsafe { ALLOC_CALLS.get(tid) }) else { return false };
    if now.wrapping_sub(outer.ts_ns) >= STALE_CALL_NS {
        count(counter::ABANDONED_CALLS);
        return false;
    }
    outer.sp >= sp
}

/// Sampling: is a block remembered as sampled?
#[inline(always)]
fn sampled(addr: u64) -> bool {
    // SAFETY: presence check only.
    unsafe { SAMPLED.get(addr) }.is_some()
}

/// The requested size and the argument the return needs (realloc's old block,
/// posix_memalign's out-pointer), by allocator function.
#[inline(always)]
fn size_and_arg(func: u32, regs: &pt_regs) -> (u64, u64) {
    let (a0, a1, a2) = (regs.rdi, regs.rsi, regs.rdx);
    match func {
        func::CALLOC => (a0.wrapping_mul(a1), 0),
        func::REALLOC => (a1, a0),
        func::REALLOCARRAY => (a1.wrapping_mul(a2), a0),
        func::MEMALIGN | func::ALIGNED_ALLOC => (a1, 0),
        func::POSIX_MEMALIGN => (a2, a0),
        // malloc, valloc, pvalloc
        _ => (a0, 0),
    }
}

/// Sampling's draw: the threshold the call is sampled with (0 when every allocation is
/// traced), or `None` when it is not sampled and nothing of it matters.
#[inline(always)]
fn draw(func: u32, size: u64, old: u64) -> Option<u32> {
    let rate = sample_bytes();
    if rate == 0 {
        return Some(0);
    }
    let t = sample_threshold(size, rate);
    // SAFETY: helper without preconditions.
    if t != 0 && unsafe { bpf_get_prandom_u32() } <= t {
        return Some(t);
    }
    // Not sampled. A realloc still matters if its old block was sampled.
    let moves_sampled = matches!(func, func::REALLOC | func::REALLOCARRAY) && old != 0 && sampled(old);
    moves_sampled.then_some(0)
}

/// Entry of an allocating function `func` (or [`COOKIE_UNREAD`]: read the cookie once
/// the call is known to be the target's). `Some` when the call was recorded and its
/// return has work to do; `None` when it has none (not the target, not sampled, nested
/// in another traced call, or the call could not be remembered).
fn try_alloc_enter(ctx: &ProbeContext, func: u32) -> Option<()> {
    let tid = traced_thread()?;
    let func = if func == COOKIE_UNREAD { cookie_func(ctx) } else { func };
    let regs = regs_of(ctx.regs);
    let (size, arg) = size_and_arg(func, regs);
    // Sampling first: an unsampled call costs as little as can be.
    let threshold = draw(func, size, arg)?;
    let now = now();
    if inside_outer_call(tid, regs.rsp, now) {
        count(counter::NESTED_CALLS);
        return None;
    }
    let start = Start { ip: regs.rip, sp: regs.rsp, bp: regs.rbp, at_entry: true };
    let drawn = sample_bytes() == 0 || threshold != 0;
    let stack_id = if drawn { stack::capture(ctx.as_ptr(), &start) } else { 0 };
    let call = AllocCall { sp: regs.rsp, ts_ns: now, size, arg, stack_id, func, threshold };
    if ALLOC_CALLS.insert(tid, call, 0).is_err() {
        count(counter::DROPPED);
        return None;
    }
    Some(())
}

fn try_alloc_return(ctx: &RetProbeContext) -> Option<()> {
    let tid = traced_thread()?;
    // SAFETY: read of a map value we copy out at once.
    let call = unsafe { ALLOC_CALLS.get(tid) }.copied()?;
    let regs = regs_of(ctx.regs);
    // The return of a nested call: the outer call is still running.
    if call.sp.wrapping_add(8) != regs.rsp {
        return None;
    }
    let _ = ALLOC_CALLS.remove(tid);
    let ret = regs.rax;
    match call.func {
        func::POSIX_MEMALIGN => {
            // 0 is success; the block is in the caller's out-pointer.
            if ret != 0 {
                return None;
            }
            let addr = read_user::<u64>(call.arg).filter(|a| *a != 0)?;
            allocated(tid, &call, addr)
        }
        func::REALLOC | func::REALLOCARRAY => reallocated(tid, &call, ret),
        _ if ret != 0 => allocated(tid, &call, ret),
        _ => None,
    }
}

/// A new block at `addr` from `call`.
#[inline(always)]
fn allocated(tid: u32, call: &AllocCall, addr: u64) -> Option<()> {
    if sample_bytes() != 0 && SAMPLED.insert(addr, 1, 0).is_err() {
        count(counter::DROPPED);
        return None;
    }
    emit(&Alloc {
        header: header::<Alloc>(tid),
        addr,
        size: call.size,
        stack_id: call.stack_id,
        threshold: call.threshold,
        func: call.func,
    });
    Some(())
}

/// realloc returned `ret`. glibc's realloc(p, 0) frees p and returns NULL; any other NULL
/// is a failure that leaves p allocated.
#[inline(always)]
fn reallocated(tid: u32, call: &AllocCall, ret: u64) -> Option<()> {
    let frees_old = ret != 0 || (call.size == 0 && call.arg != 0);
    if !frees_old {
        return None;
    }
    let sampling = sample_bytes() != 0;
    let old_known = call.arg != 0 && (!sampling || SAMPLED.remove(call.arg).is_ok());
    if ret != 0 && (!sampling || call.threshold != 0) {
        if sampling && SAMPLED.insert(ret, 1, 0).is_err() {
            count(counter::DROPPED);
            return None;
        }
        emit(&Realloc {
            header: header::<Realloc>(tid),
            old_addr: if old_known { call.arg } else { 0 },
            addr: ret,
            size: call.size,
            stack_id: call.stack_id,
            threshold: call.threshold,
            func: call.func,
        });
    } else if old_known {
        emit(&Free { header: header::<Free>(tid), addr: call.arg, caller: 0 });
    }
    Some(())
}

fn try_free_enter(ctx: &ProbeContext) -> Option<()> {
    let tid = traced_thread()?;
    let regs = regs_of(ctx.regs);
    let addr = regs.rdi;
    if addr == 0 {
        return None;
    }
    // Sampling: frees of blocks that were not sampled are dropped here, first thing.
    let sampling = sample_bytes() != 0;
    if sampling && !sampled(addr) {
        return None;
    }
    // A free inside a traced realloc is the realloc's business.
    if inside_outer_call(tid, regs.rsp, now()) {
        return None;
    }
    if sampling {
        let _ = SAMPLED.remove(addr);
    }
    // The probe sits where the stack pointer is still the entry's: the return address.
    let caller = read_user::<u64>(regs.rsp).unwrap_or(0);
    emit(&Free { header: header::<Free>(tid), addr, caller });
    Some(())
}
