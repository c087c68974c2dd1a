//! The kernel/user ABI of leaktracer, defined once for both sides.
//!
//! The eBPF programs (this crate's binary target) write [`Event`]s into the `EVENTS` ring
//! buffer, user stacks into `STACKS` and failure counts into `COUNTERS`; the userspace
//! tracer (feature `user`) reads them back with the same types. Every type here is
//! `#[repr(C)]`, has no implicit padding, and is checked by a size assertion below, so a
//! change to one side that the other does not see fails to compile.
#![no_std]

/// Event kinds, the value of [`Event::kind`]. The numbers are part of the ABI: never
/// reuse one; a kind that goes away leaves a hole.
pub mod kind {
    /// A block came back from an allocator function: `addr`, `size`, `stack_id`, `func`.
    pub const ALLOC: u32 = 1;
    /// A block went to `free`: `addr`, `func`.
    pub const FREE: u32 = 2;
    /// `realloc`/`reallocarray` returned a new block: `addr`, `size`, `old_addr` (0 when
    /// the call behaved as `malloc`), `stack_id`, `func`. The old block is released only
    /// here, after a non-NULL return.
    pub const REALLOC: u32 = 3;
    /// `mmap` succeeded: `addr`, `size`, `prot`, `map_flags`, `fd`, `stack_id`.
    pub const MMAP: u32 = 4;
    /// `munmap` succeeded: `addr`, `size`.
    pub const MUNMAP: u32 = 5;
    /// `mremap` succeeded: `addr`, `size` (new), `old_addr`, `old_size`, `map_flags`
    /// (the mremap flags), `stack_id`.
    pub const MREMAP: u32 = 6;
    /// `brk` returned: `addr` (the break after the call), `old_addr` (the requested
    /// break), `stack_id`.
    pub const BRK: u32 = 7;
    /// The target called `execve`: everything before this belonged to the old image.
    pub const EXEC: u32 = 8;
}

/// Allocator functions, passed to the uprobes as the attach cookie and reported back in
/// [`Event::func`]. Part of the ABI like [`kind`].
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
    /// Events of the syscall tracepoints carry this.
    pub const SYSCALL: u32 = 0;
}

/// Bits of [`Event::flags`].
pub mod flags {
    /// The mapping or break change was made while the thread was inside a traced
    /// allocator function: it backs heap blocks that are already attributed to their
    /// callers, so it is accounted for but not reported as a site of its own.
    pub const ALLOCATOR_INTERNAL: u32 = 1 << 0;
}

/// One record of the `EVENTS` ring buffer. Fixed size, so the kernel side reserves and
/// commits in place and the reader decodes without parsing. Field meaning depends on
/// [`Event::kind`]; see the constants in [`kind`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Event {
    /// One of [`kind`].
    pub kind: u32,
    /// Thread that made the call.
    pub tid: u32,
    /// `bpf_ktime_get_ns` (CLOCK_MONOTONIC) when the call completed.
    pub ts_ns: u64,
    /// The address the event is about.
    pub addr: u64,
    /// Bytes requested or mapped.
    pub size: u64,
    /// The previous address (realloc, mremap) or the requested break (brk).
    pub old_addr: u64,
    /// The previous length (mremap) or the file descriptor (mmap; `u64::MAX` if none).
    pub old_size: u64,
    /// Key of the user stack in `STACKS`, or 0 when none could be captured.
    pub stack_id: u64,
    /// One of [`func`].
    pub func: u16,
    /// mmap `prot`.
    pub prot: u16,
    /// Bits of [`flags`].
    pub flags: u32,
    /// mmap/mremap flags.
    pub map_flags: u64,
}

/// Frames kept per user stack. Deeper stacks are cut and counted as truncated. A power
/// of two, so the kernel side can bound indexes with a mask.
pub const MAX_STACK_DEPTH: usize = 128;

/// A user stack, innermost frame first: `frames[0]` is the probed instruction,
/// `frames[1]` the return address into the direct caller, then the frame-pointer chain.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Stack {
    /// Valid entries of `frames`.
    pub len: u32,
    /// Nonzero when the walk filled `frames`, so the stack was probably cut short.
    pub truncated: u32,
    pub frames: [u64; MAX_STACK_DEPTH],
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
    /// Stacks that filled the frame buffer.
    pub const TRUNCATED_STACKS: u32 = 4;
    pub const COUNT: u32 = 8;
}

/// Names of the global variables the loader sets before loading.
pub mod global {
    /// `u32`: the traced process (tgid). Every program compares against it.
    pub const TARGET_TGID: &str = "TARGET_TGID";
    /// `u64`: once this many bytes wait in the ring buffer, wake the reader.
    pub const WAKEUP_BYTES: &str = "WAKEUP_BYTES";
}

/// Map names, shared so that a rename on one side is a compile error on the other.
pub mod map {
    pub const EVENTS: &str = "EVENTS";
    pub const STACKS: &str = "STACKS";
    pub const COUNTERS: &str = "COUNTERS";
}

const _: () = assert!(core::mem::size_of::<Event>() == 72);
const _: () = assert!(core::mem::size_of::<Stack>() == 8 + 8 * MAX_STACK_DEPTH);

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain `#[repr(C)]` integers without padding (asserted above).
    unsafe impl aya::Pod for super::Event {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Stack {}
}
