//! What every program starts with: is tracing on, is this the target, which thread, and
//! the registers and memory of the traced thread.

use aya_ebpf::{
    bindings::pt_regs,
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task_btf, bpf_ktime_get_ns, bpf_probe_read_kernel,
        bpf_probe_read_user, bpf_task_pt_regs,
    },
    programs::TracePointContext,
};
use tracer_ebpf::{
    counter,
    record::{Header, Record},
};

use super::maps::{bench_floor, count, target_tgid};

/// The opening check of every program: tracing is on (not the benchmarks' floor, where
/// programs return at once) and the current process is the target. Returns the thread.
#[inline(always)]
pub fn traced_thread() -> Option<u32> {
    if bench_floor() {
        return None;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    ((pid_tgid >> 32) as u32 == target_tgid()).then_some(pid_tgid as u32)
}

#[inline(always)]
pub fn now() -> u64 {
    // SAFETY: helper without preconditions.
    unsafe { bpf_ktime_get_ns() }
}

/// The header of a record of type `R`, made now by thread `tid`.
#[inline(always)]
pub fn header<R: Record>(tid: u32) -> Header {
    Header { kind: R::KIND, tid, ts_ns: now() }
}

/// A field of a tracepoint record at `offset` (from the tracepoint's format file).
#[inline(always)]
pub fn field<T>(ctx: &TracePointContext, offset: usize) -> Option<T> {
    // SAFETY: the read is bounds-checked by the helper against the record, whose layout
    // the kernel fixes; T is plain data.
    unsafe { ctx.read_at::<T>(offset) }.ok()
}

/// Reads a value of the target's memory; a fault is counted and gives `None`.
#[inline(always)]
pub fn read_user<T>(addr: u64) -> Option<T> {
    // SAFETY: bpf_probe_read_user copes with any address; T is plain data.
    match unsafe { bpf_probe_read_user(addr as *const T) } {
        Ok(v) => Some(v),
        Err(_) => {
            count(counter::READ_ERRORS);
            None
        }
    }
}

/// The user registers of the current thread, saved at the top of its kernel stack when
/// it entered the kernel (a syscall or a fault): what tracepoints see of user space.
#[derive(Clone, Copy)]
pub struct UserRegs {
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
    /// Syscall arguments 0 to 3 (rdi, rsi, rdx, r10).
    pub args: [u64; 4],
}

#[inline(always)]
pub fn user_regs() -> Option<UserRegs> {
    // SAFETY: helpers valid in tracepoint programs; the register file is read with
    // probe_read_kernel, field by field.
    unsafe {
        let regs = bpf_task_pt_regs(bpf_get_current_task_btf()) as *const pt_regs;
        let read = |field: *const u64| bpf_probe_read_kernel(field).ok();
        Some(UserRegs {
            ip: read(&raw const (*regs).rip)?,
            sp: read(&raw const (*regs).rsp)?,
            bp: read(&raw const (*regs).rbp)?,
            args: [
                read(&raw const (*regs).rdi)?,
                read(&raw const (*regs).rsi)?,
                read(&raw const (*regs).rdx)?,
                read(&raw const (*regs).r10)?,
            ],
        })
    }
}
