//! Which tracepoints a session needs, by what it traces.

use crate::config::{Kind, Mode, ProbeOptions};

/// A tracepoint and the program attached to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tracepoint {
    pub program: &'static str,
    pub category: &'static str,
    pub name: &'static str,
}

const fn tp(program: &'static str, category: &'static str, name: &'static str) -> Tracepoint {
    Tracepoint { program, category, name }
}

/// How the target lives and ends: always.
const LIFECYCLE: [Tracepoint; 4] = [
    tp("lt_exec", "sched", "sched_process_exec"),
    tp("lt_thread_exit", "sched", "sched_process_exit"),
    tp("lt_oom_victim", "oom", "mark_victim"),
    tp("lt_signal", "signal", "signal_generate"),
];

/// Mappings and the break.
const MEMORY: [Tracepoint; 8] = [
    tp("lt_mmap_enter", "syscalls", "sys_enter_mmap"),
    tp("lt_mmap_exit", "syscalls", "sys_exit_mmap"),
    tp("lt_munmap_enter", "syscalls", "sys_enter_munmap"),
    tp("lt_munmap_exit", "syscalls", "sys_exit_munmap"),
    tp("lt_mremap_enter", "syscalls", "sys_enter_mremap"),
    tp("lt_mremap_exit", "syscalls", "sys_exit_mremap"),
    tp("lt_brk_enter", "syscalls", "sys_enter_brk"),
    tp("lt_brk_exit", "syscalls", "sys_exit_brk"),
];

/// Growth mode: first touches, and pages given back.
const GROWTH: [Tracepoint; 3] = [
    tp("lt_page_fault", "exceptions", "page_fault_user"),
    tp("lt_madvise_enter", "syscalls", "sys_enter_madvise"),
    tp("lt_madvise_exit", "syscalls", "sys_exit_madvise"),
];

/// Syscalls that make file descriptors (their exits), and the ones that close them.
pub const FD_MAKERS: [&str; 27] = [
    "open",
    "openat",
    "openat2",
    "creat",
    "open_by_handle_at",
    "socket",
    "socketpair",
    "accept",
    "accept4",
    "dup",
    "dup2",
    "dup3",
    "fcntl",
    "pipe",
    "pipe2",
    "eventfd",
    "eventfd2",
    "epoll_create",
    "epoll_create1",
    "timerfd_create",
    "signalfd",
    "signalfd4",
    "memfd_create",
    "inotify_init",
    "inotify_init1",
    "pidfd_open",
    "userfaultfd",
];

const FD_CLOSERS: [Tracepoint; 2] = [
    tp("lt_fd_close", "syscalls", "sys_enter_close"),
    tp("lt_fd_close_range", "syscalls", "sys_enter_close_range"),
];

/// Every tracepoint `options` needs, lifecycle first.
pub fn needed(options: &ProbeOptions) -> Vec<Tracepoint> {
    let mut out = LIFECYCLE.to_vec();
    let kinds = options.kinds;
    if options.mode == Mode::Growth {
        out.extend(MEMORY);
        out.extend(GROWTH);
    } else if kinds.contains(Kind::Mmap) {
        out.extend(MEMORY);
    }
    if kinds.contains(Kind::Fd) {
        out.extend(FD_CLOSERS);
        out.extend(FD_MAKERS.iter().filter_map(|name| {
            let name: &'static str = exit_name(name)?;
            Some(tp("lt_fd_exit", "syscalls", name))
        }));
    }
    out
}

/// `sys_exit_NAME`, for the names above (a fixed set, so a static string each).
fn exit_name(name: &str) -> Option<&'static str> {
    const NAMES: [&str; 27] = [
        "sys_exit_open",
        "sys_exit_openat",
        "sys_exit_openat2",
        "sys_exit_creat",
        "sys_exit_open_by_handle_at",
        "sys_exit_socket",
        "sys_exit_socketpair",
        "sys_exit_accept",
        "sys_exit_accept4",
        "sys_exit_dup",
        "sys_exit_dup2",
        "sys_exit_dup3",
        "sys_exit_fcntl",
        "sys_exit_pipe",
        "sys_exit_pipe2",
        "sys_exit_eventfd",
        "sys_exit_eventfd2",
        "sys_exit_epoll_create",
        "sys_exit_epoll_create1",
        "sys_exit_timerfd_create",
        "sys_exit_signalfd",
        "sys_exit_signalfd4",
        "sys_exit_memfd_create",
        "sys_exit_inotify_init",
        "sys_exit_inotify_init1",
        "sys_exit_pidfd_open",
        "sys_exit_userfaultfd",
    ];
    NAMES.iter().copied().find(|n| n.strip_prefix("sys_exit_") == Some(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Kinds, Links, Placement, UnwindMode};

    fn options(kinds: Kinds, mode: Mode) -> ProbeOptions {
        ProbeOptions {
            ring_bytes: 1 << 20,
            unwind: UnwindMode::EhFrame,
            sample_bytes: 0,
            placement: Placement::Fast,
            floor: false,
            kinds,
            mode,
            links: Links::Auto,
            max_live: 1000,
        }
    }

    #[test]
    fn every_fd_syscall_has_its_exit_tracepoint() {
        let all = needed(&options(Kinds::all(), Mode::Full));
        let fd = all.iter().filter(|t| t.program == "lt_fd_exit").count();
        assert_eq!(fd, FD_MAKERS.len());
        // And the kernel has each of them.
        for t in &all {
            let dir = format!("/sys/kernel/tracing/events/{}/{}", t.category, t.name);
            if std::path::Path::new("/sys/kernel/tracing/events").exists() {
                assert!(std::path::Path::new(&dir).exists(), "no tracepoint {dir}");
            }
        }
    }

    #[test]
    fn kinds_select_tracepoints() {
        let heap_only = needed(&options([Kind::Heap].into_iter().collect(), Mode::Full));
        assert!(heap_only.iter().all(|t| t.program != "lt_fd_exit" && t.program != "lt_mmap_enter"));
        let fd_only = needed(&options([Kind::Fd].into_iter().collect(), Mode::Full));
        assert!(fd_only.iter().all(|t| t.program != "lt_mmap_enter"));
        let growth = needed(&options(Kinds::all(), Mode::Growth));
        assert!(growth.iter().any(|t| t.program == "lt_page_fault"));
    }
}
