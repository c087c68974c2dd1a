//! Uprobes on the Go runtime: goroutines created, ended and parked; heap-allocated
//! defers pushed and popped; the heap profiler's samples and the collector's cycles.
//!
//! Never a uretprobe: Go moves goroutine stacks, and a return address replaced by the
//! kernel's trampoline makes the runtime throw. `runtime.newproc1` is probed on its
//! return instructions (found by disassembly), everything else at entry. Go passes
//! arguments in rax, rbx, rcx, rdi, rsi, ...; the current goroutine is in r14 (inside
//! functions run on the system stack, r14 is g0: those are only read through their
//! arguments). Field offsets come from `GO_OFFSETS`, set for the target's Go version.

use aya_ebpf::{EbpfContext, bindings::pt_regs, macros::uprobe, programs::ProbeContext};
use tracer_ebpf::record::{
    DeferPop, DeferPush, Gc, GoCreate, GoExit, GoHeapAlloc, GoHeapFree, GoPark, gc_phase,
};

use super::{
    context::{header, read_user, traced_thread},
    maps::go_offsets,
    output::emit,
    stack::{self, Start},
};

#[inline(always)]
fn regs_of(ctx: &ProbeContext) -> &'static pt_regs {
    // SAFETY: the probed thread's register file, valid for the whole program run.
    unsafe { &*ctx.regs }
}

/// The stack from a function's entry or a return instruction (the return address at
/// `[sp]` either way).
#[inline(always)]
fn stack_here(ctx: &ProbeContext, regs: &pt_regs) -> u64 {
    stack::capture(ctx.as_ptr(), &Start { ip: regs.rip, sp: regs.rsp, bp: regs.rbp, at_entry: true })
}

/// A field of a runtime structure at `base + offset`.
#[inline(always)]
fn field<T>(base: u64, offset: u32) -> Option<T> {
    read_user(base.wrapping_add(u64::from(offset)))
}

/// At each return instruction of `runtime.newproc1`: rax is the new g, fully set up.
#[uprobe]
pub fn lt_go_create(ctx: ProbeContext) -> u32 {
    let _ = try_go_create(&ctx);
    0
}

fn try_go_create(ctx: &ProbeContext) -> Option<()> {
    let tid = traced_thread()?;
    let regs = regs_of(ctx);
    let (g, off) = (regs.rax, go_offsets());
    let parent_goid = if off.g_parent_goid == 0 { 0 } else { field(g, off.g_parent_goid)? };
    emit(&GoCreate {
        header: header::<GoCreate>(tid),
        goid: field(g, off.g_goid)?,
        parent_goid,
        gopc: field(g, off.g_gopc)?,
        startpc: field(g, off.g_startpc)?,
        stack_id: stack_here(ctx, regs),
    });
    Some(())
}

/// `runtime.goexit0(gp)` (Go 1.21 and before) or `runtime.gdestroy(gp)`: gp in rax, its
/// goid still set.
#[uprobe]
pub fn lt_go_exit(ctx: ProbeContext) -> u32 {
    let _ = try_go_exit(&ctx);
    0
}

fn try_go_exit(ctx: &ProbeContext) -> Option<()> {
    let tid = traced_thread()?;
    let goid = field(regs_of(ctx).rax, go_offsets().g_goid)?;
    emit(&GoExit { header: header::<GoExit>(tid), goid });
    Some(())
}

/// `runtime.gopark(unlockf, lock, reason, traceReason, traceskip)`: on the parking
/// goroutine (r14), the reason in cl (a byte; the rest of rcx is garbage).
#[uprobe]
pub fn lt_go_park(ctx: ProbeContext) -> u32 {
    let _ = try_go_park(&ctx);
    0
}

fn try_go_park(ctx: &ProbeContext) -> Option<()> {
    let tid = traced_thread()?;
    let regs = regs_of(ctx);
    let (g, off) = (regs.r14, go_offsets());
    let waiting: u64 = field(g, off.g_waiting)?;
    emit(&GoPark {
        header: header::<GoPark>(tid),
        goid: field(g, off.g_goid)?,
        reason: (regs.rcx & 0xff) as u32,
        waiting: u32::from(waiting != 0),
    });
    Some(())
}

/// `runtime.deferproc(fn)` and its range-over-func variants: a heap-allocated defer. The
/// `defer` statement is the return address, `d.pc` once pushed.
#[uprobe]
pub fn lt_defer_push(ctx: ProbeContext) -> u32 {
    let _ = try_defer_push(&ctx);
    0
}

fn try_defer_push(ctx: &ProbeContext) -> Option<()> {
    let tid = traced_thread()?;
    let regs = regs_of(ctx);
    emit(&DeferPush {
        header: header::<DeferPush>(tid),
        goid: field(regs.r14, go_offsets().g_goid)?,
        pc: read_user(regs.rsp)?,
        stack_id: stack_here(ctx, regs),
    });
    Some(())
}

/// `runtime.popDefer(gp)` (Go 1.23+: the record is `gp._defer`) or
/// `runtime.freedefer(d)`: a deferred call is done with. Only heap records count (stack
/// and open-coded ones were never pushed by `deferproc`).
#[uprobe]
pub fn lt_defer_pop(ctx: ProbeContext) -> u32 {
    let _ = try_defer_pop(&ctx);
    0
}

fn try_defer_pop(ctx: &ProbeContext) -> Option<()> {
    let tid = traced_thread()?;
    let regs = regs_of(ctx);
    let off = go_offsets();
    let (g, d) =
        if off.pop_takes_g != 0 { (regs.rax, field(regs.rax, off.g_defer)?) } else { (regs.r14, regs.rax) };
    if d == 0 {
        return None;
    }
    let heap: u8 = field(d, off.defer_heap)?;
    let open: u8 = if off.defer_open == 0 { 0 } else { field(d, off.defer_open)? };
    if heap == 0 || open != 0 {
        return None;
    }
    emit(&DeferPop {
        header: header::<DeferPop>(tid),
        goid: field(g, off.g_goid)?,
        pc: field(d, off.defer_pc)?,
    });
    Some(())
}

/// `runtime.profilealloc(mp, x, size)`: the heap profiler sampled the object at x (rbx)
/// of size bytes (rcx).
#[uprobe]
pub fn lt_goheap_alloc(ctx: ProbeContext) -> u32 {
    let _ = try_goheap_alloc(&ctx);
    0
}

fn try_goheap_alloc(ctx: &ProbeContext) -> Option<()> {
    let tid = traced_thread()?;
    let regs = regs_of(ctx);
    emit(&GoHeapAlloc {
        header: header::<GoHeapAlloc>(tid),
        addr: regs.rbx,
        size: regs.rcx,
        stack_id: stack_here(ctx, regs),
    });
    Some(())
}

/// `runtime.freeSpecial(s, p, size)`: the sweeper frees a special of the object at p
/// (rbx); a profile special means a sampled object died.
#[uprobe]
pub fn lt_goheap_free(ctx: ProbeContext) -> u32 {
    let _ = try_goheap_free(&ctx);
    0
}

fn try_goheap_free(ctx: &ProbeContext) -> Option<()> {
    let tid = traced_thread()?;
    let regs = regs_of(ctx);
    let off = go_offsets();
    let kind: u8 = field(regs.rax, off.special_kind)?;
    if u32::from(kind) != off.special_profile {
        return None;
    }
    emit(&GoHeapFree { header: header::<GoHeapFree>(tid), addr: regs.rbx });
    Some(())
}

/// `runtime.gcStart`: a collection begins.
#[uprobe]
pub fn lt_gc_start(_ctx: ProbeContext) -> u32 {
    if let Some(tid) = traced_thread() {
        emit(&Gc { header: header::<Gc>(tid), phase: gc_phase::START, _pad: 0, heap_marked: 0 });
    }
    0
}

/// `runtime.gcSweep`: marking is over; `gcController.heapMarked` is the live heap.
#[uprobe]
pub fn lt_gc_sweep(_ctx: ProbeContext) -> u32 {
    if let Some(tid) = traced_thread() {
        let at = go_offsets().heap_marked_addr;
        let heap_marked = if at == 0 { 0 } else { read_user::<u64>(at).unwrap_or(0) };
        emit(&Gc { header: header::<Gc>(tid), phase: gc_phase::SWEEP, _pad: 0, heap_marked });
    }
    0
}
