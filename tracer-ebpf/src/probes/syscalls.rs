//! Syscall tracepoints for mmap, munmap, mremap and brk. kprobes and fentry are not
//! available on every kernel, tracepoints are.
//!
//! Enter remembers the arguments (and the stack, for calls that create memory); exit
//! reports only calls that succeeded.

use aya_ebpf::{
    EbpfContext,
    bindings::pt_regs,
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task_btf, bpf_ktime_get_ns, bpf_probe_read_kernel,
        bpf_task_pt_regs,
    },
    macros::tracepoint,
    programs::TracePointContext,
};
use tracer_ebpf::{Event, counter, flags, func, kind};

use super::{
    maps::{ALLOC_CALLS, SYSCALL_CALLS, SyscallCall, bench_floor, count, target_tgid},
    output::emit,
    stack,
};

/// Offsets in the `syscalls:sys_enter_*` records: arguments start at 16, 8 bytes each.
const ARG0: usize = 16;
/// Offset of `ret` in the `syscalls:sys_exit_*` records.
const RET: usize = 16;

#[inline(always)]
fn target_thread() -> Option<u32> {
    let pid_tgid = bpf_get_current_pid_tgid();
    ((pid_tgid >> 32) as u32 == target_tgid()).then_some(pid_tgid as u32)
}

#[inline(always)]
fn arg(ctx: &TracePointContext, n: usize) -> u64 {
    // SAFETY: reads inside the tracepoint record, whose layout is fixed by the kernel ABI.
    unsafe { ctx.read_at::<u64>(ARG0 + 8 * n) }.unwrap_or(0)
}

#[inline(always)]
fn ret(ctx: &TracePointContext) -> i64 {
    // SAFETY: as for `arg`.
    unsafe { ctx.read_at::<i64>(RET) }.unwrap_or(-1)
}

/// Syscalls return -errno in [-4095, -1]; mmap's addresses above that are valid.
#[inline(always)]
fn failed(ret: i64) -> bool {
    (-4095..0).contains(&ret)
}

/// The user stack at the syscall: the user registers are saved at the top of the
/// thread's kernel stack.
#[inline(always)]
fn user_stack(ctx: &TracePointContext) -> u64 {
    // SAFETY: helpers valid in tracepoint programs; the register file is read with
    // probe_read_kernel.
    let regs = unsafe {
        let regs = bpf_task_pt_regs(bpf_get_current_task_btf()) as *const pt_regs;
        (
            bpf_probe_read_kernel(&raw const (*regs).rip),
            bpf_probe_read_kernel(&raw const (*regs).rsp),
            bpf_probe_read_kernel(&raw const (*regs).rbp),
        )
    };
    match regs {
        (Ok(ip), Ok(sp), Ok(bp)) => stack::capture(ctx.as_ptr(), &stack::UserRegs { ip, sp, bp }, false),
        _ => {
            count(counter::STACK_ERRORS);
            0
        }
    }
}

/// Flags for memory created on this thread: internal when a traced allocator call is
/// in flight on it (malloc growing its arena).
#[inline(always)]
fn creation_flags(tid: u32) -> u32 {
    // SAFETY: presence check only.
    if unsafe { ALLOC_CALLS.get(&tid) }.is_some() { flags::ALLOCATOR_INTERNAL } else { 0 }
}

#[inline(always)]
fn remember(tid: u32, call: &SyscallCall) {
    if SYSCALL_CALLS.insert(&tid, call, 0).is_err() {
        count(counter::DROPPED);
    }
}

#[inline(always)]
fn take(tid: u32, kind: u32) -> Option<SyscallCall> {
    // SAFETY: copied out before removal.
    let call = unsafe { SYSCALL_CALLS.get(&tid) }.copied()?;
    let _ = SYSCALL_CALLS.remove(&tid);
    (call.kind == kind).then_some(call)
}

#[inline(always)]
fn event(tid: u32, kind: u32, call: &SyscallCall) -> Event {
    Event {
        kind,
        tid,
        ts_ns: unsafe { bpf_ktime_get_ns() },
        stack_id: call.stack_id,
        func: func::SYSCALL as u16,
        flags: call.flags,
        ..Event::default()
    }
}

/// A stack for memory the program makes; none for the allocator's own arenas (they
/// belong to no site, and their stacks run through the allocator's pending uretprobe).
#[inline(always)]
fn creation_stack(ctx: &TracePointContext, flags: u32) -> u64 {
    if flags & flags::ALLOCATOR_INTERNAL != 0 { 0 } else { user_stack(ctx) }
}

#[tracepoint(category = "syscalls", name = "sys_enter_mmap")]
pub fn lt_mmap_enter(ctx: TracePointContext) -> u32 {
    if bench_floor() {
        return 0;
    }
    let Some(tid) = target_thread() else { return 0 };
    let flags = creation_flags(tid);
    let call = SyscallCall {
        kind: kind::MMAP,
        flags,
        addr: arg(&ctx, 0),
        len: arg(&ctx, 1),
        prot: arg(&ctx, 2),
        map_flags: arg(&ctx, 3),
        fd: arg(&ctx, 4),
        new_len: 0,
        stack_id: creation_stack(&ctx, flags),
    };
    remember(tid, &call);
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_mmap")]
pub fn lt_mmap_exit(ctx: TracePointContext) -> u32 {
    if bench_floor() {
        return 0;
    }
    let Some(tid) = target_thread() else { return 0 };
    let Some(call) = take(tid, kind::MMAP) else { return 0 };
    let ret = ret(&ctx);
    if failed(ret) {
        return 0;
    }
    let mut ev = event(tid, kind::MMAP, &call);
    ev.addr = ret as u64;
    ev.size = call.len;
    ev.prot = call.prot as u16;
    ev.map_flags = call.map_flags;
    ev.old_size = call.fd;
    emit(&ev);
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_munmap")]
pub fn lt_munmap_enter(ctx: TracePointContext) -> u32 {
    if bench_floor() {
        return 0;
    }
    let Some(tid) = target_thread() else { return 0 };
    let call = SyscallCall {
        kind: kind::MUNMAP,
        flags: 0,
        addr: arg(&ctx, 0),
        len: arg(&ctx, 1),
        new_len: 0,
        prot: 0,
        map_flags: 0,
        fd: 0,
        stack_id: 0,
    };
    remember(tid, &call);
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_munmap")]
pub fn lt_munmap_exit(ctx: TracePointContext) -> u32 {
    if bench_floor() {
        return 0;
    }
    let Some(tid) = target_thread() else { return 0 };
    let Some(call) = take(tid, kind::MUNMAP) else { return 0 };
    if ret(&ctx) != 0 {
        return 0;
    }
    let mut ev = event(tid, kind::MUNMAP, &call);
    ev.addr = call.addr;
    ev.size = call.len;
    emit(&ev);
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_mremap")]
pub fn lt_mremap_enter(ctx: TracePointContext) -> u32 {
    if bench_floor() {
        return 0;
    }
    let Some(tid) = target_thread() else { return 0 };
    let flags = creation_flags(tid);
    let call = SyscallCall {
        kind: kind::MREMAP,
        flags,
        addr: arg(&ctx, 0),
        len: arg(&ctx, 1),
        new_len: arg(&ctx, 2),
        map_flags: arg(&ctx, 3),
        prot: 0,
        fd: 0,
        stack_id: creation_stack(&ctx, flags),
    };
    remember(tid, &call);
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_mremap")]
pub fn lt_mremap_exit(ctx: TracePointContext) -> u32 {
    if bench_floor() {
        return 0;
    }
    let Some(tid) = target_thread() else { return 0 };
    let Some(call) = take(tid, kind::MREMAP) else { return 0 };
    let ret = ret(&ctx);
    if failed(ret) {
        return 0;
    }
    let mut ev = event(tid, kind::MREMAP, &call);
    ev.addr = ret as u64;
    ev.size = call.new_len;
    ev.old_addr = call.addr;
    ev.old_size = call.len;
    ev.map_flags = call.map_flags;
    emit(&ev);
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_brk")]
pub fn lt_brk_enter(ctx: TracePointContext) -> u32 {
    if bench_floor() {
        return 0;
    }
    let Some(tid) = target_thread() else { return 0 };
    let requested = arg(&ctx, 0);
    let flags = creation_flags(tid);
    // brk(0) only asks where the break is; no stack needed.
    let stack_id = if requested == 0 { 0 } else { creation_stack(&ctx, flags) };
    let call = SyscallCall {
        kind: kind::BRK,
        flags,
        addr: requested,
        len: 0,
        new_len: 0,
        prot: 0,
        map_flags: 0,
        fd: 0,
        stack_id,
    };
    remember(tid, &call);
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_brk")]
pub fn lt_brk_exit(ctx: TracePointContext) -> u32 {
    if bench_floor() {
        return 0;
    }
    let Some(tid) = target_thread() else { return 0 };
    let Some(call) = take(tid, kind::BRK) else { return 0 };
    let mut ev = event(tid, kind::BRK, &call);
    // brk returns the (possibly unchanged) break, never an error code.
    ev.addr = ret(&ctx) as u64;
    ev.old_addr = call.addr;
    emit(&ev);
    0
}
