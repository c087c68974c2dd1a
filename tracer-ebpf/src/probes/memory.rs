//! mmap, munmap, mremap, brk and madvise, from the `raw_syscalls` programs (see
//! `syscalls`). kprobes and fentry are not available on every kernel, tracepoints are.
//!
//! Enter remembers the arguments (and the stack, for calls that create memory); exit
//! reports only calls that succeeded.

use aya_ebpf::{EbpfContext, programs::TracePointContext};
use tracer_ebpf::{
    counter,
    record::{Brk, Discard, Header, Mmap, Mremap, Munmap, Record, origin},
};

use super::{
    context::{field, header, traced_thread, user_regs},
    maps::{ALLOC_CALLS, SYSCALL_CALLS, SyscallCall, count},
    output::emit,
    stack::{self, Start},
};

/// Offsets in the `syscalls:sys_enter_*` records: arguments start at 16, 8 bytes each.
const ARG0: usize = 16;
/// Offset of `ret` in the `syscalls:sys_exit_*` records.
const RET: usize = 16;

const MADV_DONTNEED: u64 = 4;
const MADV_FREE: u64 = 8;
const MADV_REMOVE: u64 = 9;

#[inline(always)]
fn arg(ctx: &TracePointContext, n: usize) -> u64 {
    field::<u64>(ctx, ARG0 + 8 * n).unwrap_or(0)
}

#[inline(always)]
fn ret(ctx: &TracePointContext) -> i64 {
    field::<i64>(ctx, RET).unwrap_or(-1)
}

/// Syscalls return -errno in [-4095, -1]; mmap's addresses above that are valid.
#[inline(always)]
fn failed(ret: i64) -> bool {
    (-4095..0).contains(&ret)
}

/// Memory made on this thread is the allocator's own when a traced allocator call is in
/// flight on it (malloc growing its arena).
#[inline(always)]
fn origin_of(tid: u32) -> u32 {
    // SAFETY: presence check only.
    if unsafe { ALLOC_CALLS.get(tid) }.is_some() { origin::ALLOCATOR } else { origin::PROGRAM }
}

/// A stack for memory the program makes; none for the allocator's own arenas (they
/// belong to no site, and their stacks run through the allocator's pending uretprobe).
#[inline(always)]
fn creation_stack(ctx: &TracePointContext, origin: u32) -> u64 {
    if origin == origin::ALLOCATOR {
        return 0;
    }
    match user_regs() {
        Some(r) => stack::capture(ctx.as_ptr(), &Start { ip: r.ip, sp: r.sp, bp: r.bp, at_entry: false }),
        None => {
            count(counter::STACK_ERRORS);
            0
        }
    }
}

#[inline(always)]
fn remember(tid: u32, call: &SyscallCall) {
    if SYSCALL_CALLS.insert(tid, call, 0).is_err() {
        count(counter::DROPPED);
    }
}

/// The call of kind `R` this thread entered, taken out of the in-flight map.
#[inline(always)]
fn take<R: Record>(tid: u32) -> Option<SyscallCall> {
    // SAFETY: copied out before removal.
    let call = unsafe { SYSCALL_CALLS.get(tid) }.copied()?;
    let _ = SYSCALL_CALLS.remove(tid);
    (call.kind == R::KIND).then_some(call)
}

/// The arguments of a memory syscall, as its in-flight entry keeps them.
#[inline(always)]
fn call_of<R: Record>(addr: u64, len: u64, new_len: u64, prot: u64, flags: u64, fd: u64) -> SyscallCall {
    SyscallCall { kind: R::KIND, origin: origin::PROGRAM, addr, len, new_len, prot, flags, fd, stack_id: 0 }
}

/// Enter of a call that may create memory: remember its arguments and, unless the
/// allocator is making it for its arenas, its stack.
#[inline(always)]
fn enter_creating(ctx: &TracePointContext, mut call: SyscallCall) -> Option<()> {
    let tid = traced_thread()?;
    call.origin = origin_of(tid);
    // brk(0) only asks where the break is; no stack needed.
    if !(call.kind == Brk::KIND && call.addr == 0) {
        call.stack_id = creation_stack(ctx, call.origin);
    }
    remember(tid, &call);
    Some(())
}

pub fn mmap_enter(ctx: &TracePointContext) {
    let (addr, len, prot, flags, fd) = (arg(ctx, 0), arg(ctx, 1), arg(ctx, 2), arg(ctx, 3), arg(ctx, 4));
    let _ = enter_creating(ctx, call_of::<Mmap>(addr, len, 0, prot, flags, fd));
}

pub fn mmap_exit(ctx: &TracePointContext) {
    let _ = try_mmap_exit(ctx);
}

fn try_mmap_exit(ctx: &TracePointContext) -> Option<()> {
    let tid = traced_thread()?;
    let call = take::<Mmap>(tid)?;
    let ret = ret(ctx);
    if failed(ret) {
        return None;
    }
    emit(&Mmap {
        header: header::<Mmap>(tid),
        addr: ret as u64,
        len: call.len,
        flags: call.flags,
        stack_id: call.stack_id,
        // The fd argument is an int passed in a 64-bit register.
        fd: call.fd as i32,
        prot: call.prot as u32,
        origin: call.origin,
        _pad: 0,
    });
    Some(())
}

pub fn munmap_enter(ctx: &TracePointContext) {
    let _ = try_release_enter::<Munmap>(ctx);
}

pub fn munmap_exit(ctx: &TracePointContext) {
    let _ = try_release_exit(ctx, |header, addr, len| Munmap { header, addr, len });
}

/// Enter of a call that releases a range: remember the range.
#[inline(always)]
fn try_release_enter<R: Record>(ctx: &TracePointContext) -> Option<()> {
    let tid = traced_thread()?;
    remember(tid, &call_of::<R>(arg(ctx, 0), arg(ctx, 1), 0, 0, arg(ctx, 2), 0));
    Some(())
}

/// Exit of a call that releases a range: report it if it succeeded.
#[inline(always)]
fn try_release_exit<R: Record>(ctx: &TracePointContext, make: impl Fn(Header, u64, u64) -> R) -> Option<()> {
    let tid = traced_thread()?;
    let call = take::<R>(tid)?;
    if ret(ctx) != 0 {
        return None;
    }
    emit(&make(header::<R>(tid), call.addr, call.len));
    Some(())
}

pub fn madvise_enter(ctx: &TracePointContext) {
    if matches!(arg(ctx, 2), MADV_DONTNEED | MADV_FREE | MADV_REMOVE) {
        let _ = try_release_enter::<Discard>(ctx);
    }
}

pub fn madvise_exit(ctx: &TracePointContext) {
    let _ = try_release_exit(ctx, |header, addr, len| Discard { header, addr, len });
}

pub fn mremap_enter(ctx: &TracePointContext) {
    let (addr, len, new_len, flags) = (arg(ctx, 0), arg(ctx, 1), arg(ctx, 2), arg(ctx, 3));
    let _ = enter_creating(ctx, call_of::<Mremap>(addr, len, new_len, 0, flags, 0));
}

pub fn mremap_exit(ctx: &TracePointContext) {
    let _ = try_mremap_exit(ctx);
}

fn try_mremap_exit(ctx: &TracePointContext) -> Option<()> {
    let tid = traced_thread()?;
    let call = take::<Mremap>(tid)?;
    let ret = ret(ctx);
    if failed(ret) {
        return None;
    }
    emit(&Mremap {
        header: header::<Mremap>(tid),
        old_addr: call.addr,
        old_len: call.len,
        addr: ret as u64,
        len: call.new_len,
        flags: call.flags,
        stack_id: call.stack_id,
        origin: call.origin,
        _pad: 0,
    });
    Some(())
}

pub fn brk_enter(ctx: &TracePointContext) {
    let _ = enter_creating(ctx, call_of::<Brk>(arg(ctx, 0), 0, 0, 0, 0, 0));
}

pub fn brk_exit(ctx: &TracePointContext) {
    let _ = try_brk_exit(ctx);
}

fn try_brk_exit(ctx: &TracePointContext) -> Option<()> {
    let tid = traced_thread()?;
    let call = take::<Brk>(tid)?;
    // brk returns the (possibly unchanged) break, never an error code.
    emit(&Brk {
        header: header::<Brk>(tid),
        brk: ret(ctx) as u64,
        requested: call.addr,
        stack_id: call.stack_id,
        origin: call.origin,
        _pad: 0,
    });
    Some(())
}
