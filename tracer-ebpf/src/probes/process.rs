//! Process lifecycle: exec (the `run` command discards what happened before it), thread
//! exit (in-flight state of a dead thread must not outlive it), and how the target ends:
//! its exit status, a fatal signal and who sent it, or the OOM killer's choice.

use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_task_btf, bpf_probe_read_kernel,
    },
    macros::tracepoint,
    programs::TracePointContext,
};
use tracer_ebpf::record::{Exec, OomVictim, ProcessExit, Signal};

use super::{
    context::{field, header, traced_thread},
    maps::{ALLOC_CALLS, SYSCALL_CALLS, bench_floor, target_tgid, task_exit_code_offset},
    output::emit,
};

#[tracepoint(category = "sched", name = "sched_process_exec")]
pub fn lt_exec(_ctx: TracePointContext) -> u32 {
    if let Some(tid) = traced_thread() {
        emit(&Exec { header: header::<Exec>(tid) });
    }
    0
}

/// `group_dead` in the `sched:sched_process_exit` record: this is the last thread.
const GROUP_DEAD: usize = 32;

#[tracepoint(category = "sched", name = "sched_process_exit")]
pub fn lt_thread_exit(ctx: TracePointContext) -> u32 {
    let _ = try_thread_exit(&ctx);
    0
}

fn try_thread_exit(ctx: &TracePointContext) -> Option<()> {
    let tid = traced_thread()?;
    let _ = ALLOC_CALLS.remove(tid);
    let _ = SYSCALL_CALLS.remove(tid);
    let group_dead = field::<u8>(ctx, GROUP_DEAD)? != 0;
    if group_dead {
        emit(&ProcessExit { header: header::<ProcessExit>(tid), exit_code: exit_code(), _pad: 0 });
    }
    Some(())
}

/// The exiting task's `exit_code`, at the offset the kernel's BTF gave; -1 if unknown.
#[inline(always)]
fn exit_code() -> i32 {
    let offset = task_exit_code_offset();
    if offset == 0 {
        return -1;
    }
    // SAFETY: the current task is valid while it exits; the offset comes from the
    // kernel's own type information, and a bad read just fails.
    unsafe {
        let task = bpf_get_current_task_btf() as *const u8;
        bpf_probe_read_kernel(task.add(offset as usize).cast::<i32>()).unwrap_or(-1)
    }
}

/// Fields of `oom:mark_victim`.
const VICTIM_PID: usize = 8;
const VICTIM_TOTAL_VM: usize = 16;

#[tracepoint(category = "oom", name = "mark_victim")]
pub fn lt_oom_victim(ctx: TracePointContext) -> u32 {
    let _ = try_oom_victim(&ctx);
    0
}

fn try_oom_victim(ctx: &TracePointContext) -> Option<()> {
    if bench_floor() {
        return None;
    }
    let pid = field::<u32>(ctx, VICTIM_PID)?;
    // The OOM killer runs in whichever task hit the limit; the victim is in the record.
    if pid != target_tgid() {
        return None;
    }
    let kib = |n: usize| field::<u64>(ctx, VICTIM_TOTAL_VM + 8 * n).unwrap_or(0);
    emit(&OomVictim {
        header: header::<OomVictim>(current_tid()),
        pid,
        _pad: 0,
        total_vm_kib: kib(0),
        anon_rss_kib: kib(1),
        file_rss_kib: kib(2),
        shmem_rss_kib: kib(3),
    });
    Some(())
}

/// Fields of `signal:signal_generate`.
const SIGNAL_SIG: usize = 8;
const SIGNAL_CODE: usize = 16;
const SIGNAL_PID: usize = 36;
const SIGNAL_RESULT: usize = 44;

/// Signals whose default action ends a process (the ones a report explains).
const FATAL: u64 = (1 << 1)
    | (1 << 2)
    | (1 << 3)
    | (1 << 4)
    | (1 << 5)
    | (1 << 6)
    | (1 << 7)
    | (1 << 8)
    | (1 << 9)
    | (1 << 11)
    | (1 << 13)
    | (1 << 14)
    | (1 << 15)
    | (1 << 24)
    | (1 << 25)
    | (1 << 31);

#[tracepoint(category = "signal", name = "signal_generate")]
pub fn lt_signal(ctx: TracePointContext) -> u32 {
    let _ = try_signal(&ctx);
    0
}

fn try_signal(ctx: &TracePointContext) -> Option<()> {
    if bench_floor() {
        return None;
    }
    let pid = field::<u32>(ctx, SIGNAL_PID)?;
    let sig = field::<i32>(ctx, SIGNAL_SIG)?;
    let delivered = field::<i32>(ctx, SIGNAL_RESULT)? == 0;
    let self_sent = (bpf_get_current_pid_tgid() >> 32) as u32 == target_tgid();
    let fatal = (0..64).contains(&sig) && FATAL & (1 << sig) != 0;
    if !(delivered && fatal && (pid == target_tgid() || self_sent)) {
        return None;
    }
    emit(&Signal {
        header: header::<Signal>(current_tid()),
        sig,
        sender_pid: (bpf_get_current_pid_tgid() >> 32) as u32,
        code: field::<i32>(ctx, SIGNAL_CODE).unwrap_or(0),
        _pad: 0,
        sender_comm: bpf_get_current_comm().unwrap_or_default(),
    });
    Some(())
}

#[inline(always)]
fn current_tid() -> u32 {
    bpf_get_current_pid_tgid() as u32
}
