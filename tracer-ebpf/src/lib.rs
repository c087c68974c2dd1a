//! The kernel/user ABI of leaktracer, defined once for both sides.
//!
//! The eBPF programs (this crate's binary target) write typed records ([`record`]) into
//! the `EVENTS` ring buffer, user stacks into `STACKS` and failure counts into
//! `COUNTERS`; the userspace tracer (feature `user`) reads them back with the same types.
//! Every type here is `#[repr(C)]`, has no implicit padding, and is checked by a size
//! assertion, so a change to one side that the other does not see fails to compile.
//! [`unwind::step`] is the one stack-walking step both sides run, and
//! [`sampling::sample_threshold`] the one sampling decision.
#![no_std]

pub mod golang;
pub mod record;
pub mod sampling;
pub mod unwind;

/// Allocator functions, passed to the uprobes as the attach cookie and reported back in
/// [`record::Alloc::func`]. Part of the ABI: never reuse a number.
pub mod func {
    pub const MALLOC: u32 = 1;
    pub const CALLOC: u32 = 2;
    pub const REALLOC: u32 = 3;
    pub const REALLOCARRAY: u32 = 4;
    pub const POSIX_MEMALIGN: u32 = 5;
    pub const ALIGNED_ALLOC: u32 = 6;
    pub const MEMALIGN: u32 = 7;
    pub const VALLOC: u32 = 8;
    pub const PVALLOC: u32 = 9;
    pub const FREE: u32 = 10;

    /// The traced functions and their ids, in the order a probe is named by: where two
    /// names share an address (glibc's aligned_alloc is an alias of memalign), the first
    /// one listed names the probe.
    pub const ALL: [(&str, u32); 10] = [
        ("malloc", MALLOC),
        ("calloc", CALLOC),
        ("realloc", REALLOC),
        ("reallocarray", REALLOCARRAY),
        ("posix_memalign", POSIX_MEMALIGN),
        ("memalign", MEMALIGN),
        ("aligned_alloc", ALIGNED_ALLOC),
        ("valloc", VALLOC),
        ("pvalloc", PVALLOC),
        ("free", FREE),
    ];

    /// How many integer arguments an allocator function takes (the registers its entry
    /// program reads, which a probe placed past the entry must find unchanged).
    pub const fn arguments(id: u32) -> usize {
        match id {
            CALLOC | REALLOC | MEMALIGN | ALIGNED_ALLOC => 2,
            REALLOCARRAY | POSIX_MEMALIGN => 3,
            _ => 1,
        }
    }

    /// The name of an allocator function id.
    pub fn name(id: u32) -> Option<&'static str> {
        let mut i = 0;
        while i < ALL.len() {
            if ALL[i].1 == id {
                return Some(ALL[i].0);
            }
            i += 1;
        }
        None
    }
}

/// Kernel functions (kfuncs) the programs call. aya 0.14 and bpf-linker cannot emit a
/// kfunc call (no `.ksyms`, no BTF for an `extern` function), so the programs call each
/// like a helper, through a placeholder number cast to a function pointer (`call imm`, as
/// aya-ebpf calls helpers); before loading, userspace turns each such call into a call of
/// the kfunc by its BTF id in the running kernel (`tracer/src/probe/multi`). No helper has
/// a number anywhere near these.
pub mod kfunc {
    /// `bool bpf_session_is_return(void)`: in a uprobe session program, whether this run
    /// is the return half (Linux 6.13+).
    pub const SESSION_IS_RETURN: i32 = 0x4b46_0002;

    /// Every placeholder and the kernel function it stands for.
    pub const ALL: [(i32, &str); 1] = [(SESSION_IS_RETURN, "bpf_session_is_return")];
}

/// Values of the `UNWIND_MODE` global.
pub mod unwind_mode {
    /// Walk frame pointers (`bpf_get_stack`), plus the return address at `[sp]`.
    pub const FRAME_POINTERS: u32 = 0;
    /// Walk with unwind rules from `.eh_frame`, learnt from userspace as needed.
    pub const EH_FRAME: u32 = 1;
    /// No stacks at all (benchmarks: the cost of everything but the stack).
    pub const NONE: u32 = 2;
    /// Copy the stack with every event and unwind in userspace, the way `perf
    /// --call-graph dwarf` does (benchmarks: the design not taken).
    pub const COPY: u32 = 3;
}

/// Indexes of the per-CPU `COUNTERS` array: things the kernel side could not do, so the
/// report can say what it is missing.
pub mod counter {
    /// Ring buffer full: an event was lost.
    pub const LOST_EVENTS: u32 = 0;
    /// A user stack could not be walked or stored.
    pub const STACK_ERRORS: u32 = 1;
    /// An in-flight call could not be remembered (map full): its result is lost.
    pub const DROPPED: u32 = 2;
    /// Allocator calls made from inside another traced allocator call (for example
    /// glibc's `realloc(NULL, n)` calling `malloc`); only the outer call is reported.
    pub const NESTED_CALLS: u32 = 3;
    /// Stacks that filled the frame buffer, or that a walk could not finish.
    pub const TRUNCATED_STACKS: u32 = 4;
    /// Stack samples sent to userspace (unwind rules missing).
    pub const STACK_SAMPLES: u32 = 5;
    /// Reads of the target's memory (Go runtime structures) that faulted.
    pub const READ_ERRORS: u32 = 6;
    /// In-flight allocator calls abandoned: an entry whose return was never seen (the
    /// thread left the function by longjmp, or died), found stale by a later call.
    pub const ABANDONED_CALLS: u32 = 7;
    pub const COUNT: u32 = 8;
}

/// Names of the global variables the loader sets before loading.
pub mod global {
    /// `u32`: the traced process (tgid). Every program compares against it.
    pub const TARGET_TGID: &str = "TARGET_TGID";
    /// `u64`: once this many bytes wait in the ring buffer, wake the reader.
    pub const WAKEUP_BYTES: &str = "WAKEUP_BYTES";
    /// `u32`: one of [`unwind_mode`](super::unwind_mode).
    pub const UNWIND_MODE: &str = "UNWIND_MODE";
    /// `u64`: sample allocations by bytes at this mean rate; 0 traces every allocation.
    pub const SAMPLE_BYTES: &str = "SAMPLE_BYTES";
    /// `u32`: nonzero makes every program return at once (benchmarks: the cost of the
    /// probes themselves).
    pub const BENCH_FLOOR: &str = "BENCH_FLOOR";
    /// [`GoOffsets`](super::golang::GoOffsets): where the Go runtime keeps what the Go
    /// probes read, for the target's Go version.
    pub const GO_OFFSETS: &str = "GO_OFFSETS";
    /// `u32`: offset of `exit_code` in the kernel's `struct task_struct` (from the
    /// kernel's BTF), 0 when unknown.
    pub const TASK_EXIT_CODE_OFFSET: &str = "TASK_EXIT_CODE_OFFSET";
    /// `u32`: bits of [`syscalls`](super::syscalls): which syscalls the two
    /// `raw_syscalls` programs follow.
    pub const SYSCALLS: &str = "SYSCALLS";
}

/// Families of syscalls the `raw_syscalls` programs follow, as bits of the `SYSCALLS`
/// global.
pub mod syscalls {
    /// mmap, munmap, mremap, brk.
    pub const MEMORY: u32 = 1;
    /// madvise (pages given back: growth mode).
    pub const MADVISE: u32 = 2;
    /// Those that make file descriptors, close and close_range.
    pub const FDS: u32 = 4;
}

/// Map names, shared so that a rename on one side is a compile error on the other.
pub mod map {
    pub const EVENTS: &str = "EVENTS";
    pub const STACKS: &str = "STACKS";
    pub const COUNTERS: &str = "COUNTERS";
    pub const UNWIND_RULES: &str = "UNWIND_RULES";
    pub const RULE_GENERATION: &str = "RULE_GENERATION";
    pub const CODE_RANGES: &str = "CODE_RANGES";
    pub const SAMPLED: &str = "SAMPLED";
}

#[cfg(feature = "user")]
mod user {
    // Each: plain `#[repr(C)]` integers without padding (sizes asserted next to each
    // type), so any bit pattern is a valid value.
    // SAFETY: as above.
    unsafe impl aya::Pod for super::unwind::Stack {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::unwind::UnwindRule {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::unwind::CodeRange {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::golang::GoOffsets {}
}
