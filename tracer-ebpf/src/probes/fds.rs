//! File descriptors, from the `raw_syscalls` programs (see `syscalls`): the syscalls
//! that make them (at exit, told apart by the syscall number) and the ones that release
//! them (`close`, `close_range`, at entry: the number is free for reuse as soon as the
//! syscall runs, so a close reported at exit could come after another thread's open of
//! the same number).

use aya_ebpf::{EbpfContext, programs::TracePointContext};
use tracer_ebpf::{
    counter,
    record::{FdClose, FdOpen},
};

use super::{
    context::{UserRegs, field, header, read_user, traced_thread, user_regs},
    maps::count,
    output::emit,
    stack::{self, Start},
};

/// Fields of the `syscalls:sys_exit_*` and `sys_enter_*` records.
const NR: usize = 8;
const RET: usize = 16;
const ARG0: usize = 16;

/// x86-64 syscall numbers with their fds somewhere other than the return value.
const PIPE: u32 = 22;
const PIPE2: u32 = 293;
const SOCKETPAIR: u32 = 53;
const FCNTL: u32 = 72;
const F_DUPFD: u64 = 0;
const F_DUPFD_CLOEXEC: u64 = 1030;
const CLOSE_RANGE_CLOEXEC: u64 = 1 << 2;

/// The exit of a syscall that makes descriptors.
pub fn fd_exit(ctx: &TracePointContext) -> Option<()> {
    let tid = traced_thread()?;
    let nr = field::<i32>(ctx, NR)? as u32;
    let ret = field::<i64>(ctx, RET)?;
    if ret < 0 {
        return None;
    }
    let Some(regs) = user_regs() else {
        count(counter::STACK_ERRORS);
        return None;
    };
    match nr {
        // int fds[2] at the first argument (the fourth for socketpair).
        PIPE | PIPE2 | SOCKETPAIR => {
            let at = if nr == SOCKETPAIR { regs.args[3] } else { regs.args[0] };
            let fds: [i32; 2] = read_user(at)?;
            let stack_id = stack_of(ctx, &regs);
            opened(tid, nr, fds[0], stack_id);
            opened(tid, nr, fds[1], stack_id);
        }
        FCNTL if !matches!(regs.args[1], F_DUPFD | F_DUPFD_CLOEXEC) => return None,
        _ => opened(tid, nr, ret as i32, stack_of(ctx, &regs)),
    }
    Some(())
}

#[inline(always)]
fn stack_of(ctx: &TracePointContext, regs: &UserRegs) -> u64 {
    stack::capture(ctx.as_ptr(), &Start { ip: regs.ip, sp: regs.sp, bp: regs.bp, at_entry: false })
}

#[inline(always)]
fn opened(tid: u32, syscall: u32, fd: i32, stack_id: u64) {
    emit(&FdOpen { header: header::<FdOpen>(tid), stack_id, fd, syscall });
}

/// The entry of `close` (`range`: `close_range`).
pub fn fd_close(ctx: &TracePointContext, range: bool) -> Option<()> {
    let tid = traced_thread()?;
    let first = field::<u64>(ctx, ARG0)?;
    let mut last = first;
    if range {
        last = field::<u64>(ctx, ARG0 + 8)?;
        let flags = field::<u64>(ctx, ARG0 + 16)?;
        // Only marks them close-on-exec: nothing is closed now.
        if flags & CLOSE_RANGE_CLOEXEC != 0 {
            return None;
        }
    }
    let clamp = |v: u64| v.min(u64::from(u32::MAX)) as u32;
    emit(&FdClose { header: header::<FdClose>(tid), first: clamp(first), last: clamp(last) });
    Some(())
}
