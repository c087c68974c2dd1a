//! Which tracepoints a session needs, by what it traces.

use tracer_ebpf::syscalls;

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

/// Every syscall followed (mappings, the break, madvise, descriptors) goes through these
/// two, told apart by number in the programs (`tracer-ebpf/src/probes/syscalls.rs`):
/// two links instead of one per syscall, which the kernel takes down one at a time.
const SYSCALLS: [Tracepoint; 2] =
    [tp("lt_sys_enter", "raw_syscalls", "sys_enter"), tp("lt_sys_exit", "raw_syscalls", "sys_exit")];

/// Growth mode: first touches of pages.
const PAGE_FAULTS: Tracepoint = tp("lt_page_fault", "exceptions", "page_fault_user");

/// The syscall families `options` follows (bits of `tracer_ebpf::syscalls`).
pub fn syscall_families(options: &ProbeOptions) -> u32 {
    let growth = options.mode == Mode::Growth;
    let mut families = 0;
    if growth || options.kinds.contains(Kind::Mmap) {
        families |= syscalls::MEMORY;
    }
    if growth {
        families |= syscalls::MADVISE;
    }
    if options.kinds.contains(Kind::Fd) {
        families |= syscalls::FDS;
    }
    families
}

/// Every tracepoint `options` needs, lifecycle first.
pub fn needed(options: &ProbeOptions) -> Vec<Tracepoint> {
    let mut out = LIFECYCLE.to_vec();
    if syscall_families(options) != 0 {
        out.extend(SYSCALLS);
    }
    if options.mode == Mode::Growth {
        out.push(PAGE_FAULTS);
    }
    out
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
    fn the_tracepoints_exist() {
        let events = std::path::Path::new("/sys/kernel/tracing/events");
        for t in needed(&options(Kinds::all(), Mode::Growth)) {
            let dir = events.join(t.category).join(t.name);
            assert!(!events.exists() || dir.exists(), "no tracepoint {}", dir.display());
        }
    }

    #[test]
    fn kinds_select_syscall_families() {
        let heap_only = options([Kind::Heap].into_iter().collect(), Mode::Full);
        assert_eq!(syscall_families(&heap_only), 0);
        assert!(needed(&heap_only).iter().all(|t| t.category != "raw_syscalls"));
        let fd_only = options([Kind::Fd].into_iter().collect(), Mode::Full);
        assert_eq!(syscall_families(&fd_only), syscalls::FDS);
        let all = options(Kinds::all(), Mode::Full);
        assert_eq!(syscall_families(&all), syscalls::FDS | syscalls::MEMORY);
        assert_eq!(needed(&all).iter().filter(|t| t.category == "raw_syscalls").count(), 2);
        let growth = options(Kinds::all(), Mode::Growth);
        assert_eq!(syscall_families(&growth), syscalls::FDS | syscalls::MEMORY | syscalls::MADVISE);
        assert!(needed(&growth).iter().any(|t| t.program == "lt_page_fault"));
    }
}
