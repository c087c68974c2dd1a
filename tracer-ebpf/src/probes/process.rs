//! Process lifecycle: exec (the `run` command discards what happened before it) and
//! thread exit (in-flight state of a dead thread must not outlive it).

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::tracepoint,
    programs::TracePointContext,
};
use tracer_ebpf::{Event, kind};

use super::{
    maps::{ALLOC_CALLS, SYSCALL_CALLS, bench_floor, target_tgid},
    output::emit,
};

#[tracepoint(category = "sched", name = "sched_process_exec")]
pub fn lt_exec(_ctx: TracePointContext) -> u32 {
    if bench_floor() {
        return 0;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    if (pid_tgid >> 32) as u32 != target_tgid() {
        return 0;
    }
    emit(&Event {
        kind: kind::EXEC,
        tid: pid_tgid as u32,
        ts_ns: unsafe { bpf_ktime_get_ns() },
        ..Event::default()
    });
    0
}

#[tracepoint(category = "sched", name = "sched_process_exit")]
pub fn lt_thread_exit(_ctx: TracePointContext) -> u32 {
    if bench_floor() {
        return 0;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    if (pid_tgid >> 32) as u32 != target_tgid() {
        return 0;
    }
    let tid = pid_tgid as u32;
    let _ = ALLOC_CALLS.remove(&tid);
    let _ = SYSCALL_CALLS.remove(&tid);
    0
}
