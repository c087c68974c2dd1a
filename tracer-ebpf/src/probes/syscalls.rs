//! Every syscall leaktracer follows goes through two programs, on `raw_syscalls:sys_enter`
//! and `raw_syscalls:sys_exit`, told apart by the syscall number. Two tracepoint links a
//! session instead of one per syscall: the kernel takes perf tracepoint links down one
//! after the other, tens of milliseconds each, and sixty of them (the descriptor syscalls)
//! made leaving take 1.6 s. The price: every syscall of every process runs a program that
//! returns after comparing the process id (BENCHMARKS.md measures it).
//!
//! Their records have the per-syscall tracepoints' layout where it matters (the number
//! at 8, the arguments or the return value at 16), so the per-family code reads them the
//! same way.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use tracer_ebpf::syscalls::{FDS, MADVISE, MEMORY};

use super::{
    context::{field, traced_thread},
    fds,
    maps::syscalls,
    memory,
};

/// Offset of the syscall number (`long id`) in both records.
const NR: usize = 8;

/// x86-64 syscall numbers.
mod nr {
    pub const CLOSE: u32 = 3;
    pub const MMAP: u32 = 9;
    pub const MUNMAP: u32 = 11;
    pub const BRK: u32 = 12;
    pub const MREMAP: u32 = 25;
    pub const MADVISE: u32 = 28;
    pub const CLOSE_RANGE: u32 = 436;
    /// Those that make descriptors (the return value, or an array for pipe and
    /// socketpair): open, pipe, dup, dup2, socket, accept, socketpair, fcntl, creat,
    /// epoll_create, inotify_init, signalfd, timerfd_create, eventfd, accept4,
    /// signalfd4, eventfd2, epoll_create1, dup3, pipe2, inotify_init1, openat,
    /// open_by_handle_at, memfd_create, userfaultfd, pidfd_open, openat2.
    pub const FD_MAKERS: [u32; 27] = [
        2, 22, 32, 33, 41, 43, 53, 72, 85, 213, 253, 282, 283, 284, 288, 289, 290, 291, 292, 293, 294, 257,
        304, 319, 323, 434, 437,
    ];
}

#[tracepoint(category = "raw_syscalls", name = "sys_enter")]
pub fn lt_sys_enter(ctx: TracePointContext) -> u32 {
    let _ = try_enter(&ctx);
    0
}

#[tracepoint(category = "raw_syscalls", name = "sys_exit")]
pub fn lt_sys_exit(ctx: TracePointContext) -> u32 {
    let _ = try_exit(&ctx);
    0
}

fn try_enter(ctx: &TracePointContext) -> Option<()> {
    // Other processes' syscalls stop here.
    traced_thread()?;
    let (nr, follow) = (field::<i64>(ctx, NR)? as u32, syscalls());
    match nr {
        nr::MMAP if follow & MEMORY != 0 => memory::mmap_enter(ctx),
        nr::MUNMAP if follow & MEMORY != 0 => memory::munmap_enter(ctx),
        nr::MREMAP if follow & MEMORY != 0 => memory::mremap_enter(ctx),
        nr::BRK if follow & MEMORY != 0 => memory::brk_enter(ctx),
        nr::MADVISE if follow & MADVISE != 0 => memory::madvise_enter(ctx),
        nr::CLOSE if follow & FDS != 0 => fds::fd_close(ctx, false)?,
        nr::CLOSE_RANGE if follow & FDS != 0 => fds::fd_close(ctx, true)?,
        _ => {}
    }
    Some(())
}

fn try_exit(ctx: &TracePointContext) -> Option<()> {
    traced_thread()?;
    let (nr, follow) = (field::<i64>(ctx, NR)? as u32, syscalls());
    match nr {
        nr::MMAP if follow & MEMORY != 0 => memory::mmap_exit(ctx),
        nr::MUNMAP if follow & MEMORY != 0 => memory::munmap_exit(ctx),
        nr::MREMAP if follow & MEMORY != 0 => memory::mremap_exit(ctx),
        nr::BRK if follow & MEMORY != 0 => memory::brk_exit(ctx),
        nr::MADVISE if follow & MADVISE != 0 => memory::madvise_exit(ctx),
        _ if follow & FDS != 0 && nr::FD_MAKERS.contains(&nr) => fds::fd_exit(ctx)?,
        _ => {}
    }
    Some(())
}
