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
    /// A [`StackSample`](super::StackSample): registers and a copy of the user stack,
    /// sent when the kernel side met a return address it has no unwind rule for.
    /// Userspace unwinds it, teaches the kernel the rules it used, and files the stack
    /// under the sample's id, which the event that follows carries.
    pub const STACK_SAMPLE: u32 = 9;
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

/// exp(-i/8) scaled to 2^32 - 1, for i in 0..=64: the table behind
/// [`sample_threshold`], the same on both sides so that userspace weighs each sample by
/// exactly the probability the kernel drew it with.
const EXP_Q32: [u32; 65] = [
    4294967295, 3790295335, 3344923893, 2951884975, 2605029347, 2298930330, 2028798895, 1790408741,
    1580030168, 1394371730, 1230528732, 1085937795, 958336740, 845729205, 746353404, 658654567, 581260615,
    512960693, 452686222, 399494189, 352552384, 311126387, 274568073, 242305474, 213833830, 188707693,
    166533955, 146965699, 129696774, 114457002, 101007949, 89139202, 78665070, 69421681, 61264418, 54065659,
    47712777, 42106378, 37158748, 32792480, 28939262, 25538809, 22537920, 19889645, 17552550, 15490071,
    13669939, 12063679, 10646160, 9395203, 8291237, 7316991, 6457222, 5698479, 5028890, 4437980, 3916503,
    3456302, 3050176, 2691771, 2375479, 2096353, 1850025, 1632641, 1440801,
];

/// Sampling by bytes (`--sample-bytes RATE`): an allocation of `size` bytes is sampled
/// with probability 1 - exp(-size / rate), as if a Poisson process over bytes picked a
/// byte every `rate` bytes on average (Go's and jemalloc's heap profilers do the same).
/// Returns that probability scaled to 2^32 - 1: sampled when a uniform random u32 is at
/// most this. Integer arithmetic only, so the kernel side can run it.
#[inline(always)]
pub fn sample_threshold(size: u64, rate: u64) -> u32 {
    if rate == 0 {
        return u32::MAX;
    }
    // size / rate in 1/2048ths: table steps of 1/8, interpolated in 1/256ths.
    let x = size.saturating_mul(2048) / rate;
    let i = (x / 256) as usize;
    let frac = x % 256;
    if i >= 64 {
        return u32::MAX;
    }
    let (a, b) = (EXP_Q32[i & 63] as u64, EXP_Q32[(i & 63) + 1] as u64);
    let exp = a - (a - b) * frac / 256;
    (u32::MAX as u64 - exp) as u32
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
    /// The previous length (mremap), the file descriptor (mmap; `u64::MAX` if none), or
    /// for a sampled allocation the [`sample_threshold`] it was drawn with (0 when every
    /// allocation is traced).
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

/// Header of a `kind::STACK_SAMPLE` record; `len` bytes of the user stack, starting at
/// `sp`, follow it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StackSample {
    pub kind: u32,
    /// Bytes of stack copied after the header.
    pub len: u16,
    /// Bits of [`sample_flags`].
    pub flags: u16,
    /// The stack id the event this sample belongs to carries.
    pub id: u64,
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
}

/// Bits of [`StackSample::flags`].
pub mod sample_flags {
    /// `ip` is a function's first instruction: the return address is at `[sp]`.
    pub const AT_ENTRY: u16 = 1;
}

/// Bytes of user stack a sample copies at most.
pub const STACK_COPY_MAX: usize = 8192;

/// How to step from one frame to its caller, for one code address (x86-64: the return
/// address is always at CFA - 8). Userspace derives rules from `.eh_frame` and
/// `.debug_frame` and puts them in the `UNWIND_RULES` map; the kernel side walks stacks
/// with them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnwindRule {
    /// CFA = register + offset.
    pub cfa_offset: i32,
    /// Where the caller's rbp was saved, relative to the CFA; 0 when rbp is unchanged.
    pub bp_offset: i16,
    /// One of [`cfa`].
    pub cfa_reg: u8,
    pub _pad: u8,
}

/// Values of [`UnwindRule::cfa_reg`].
pub mod cfa {
    /// No rule can be given (no CFI, or an expression): the walk stops, cut short.
    pub const NONE: u8 = 0;
    pub const SP: u8 = 1;
    pub const BP: u8 = 2;
    /// The outermost frame (the return address is undefined): the walk is complete.
    pub const END: u8 = 3;
}

/// Keys of `UNWIND_RULES` are code addresses; a return address (whose rule is that of
/// the call instruction before it) has this bit set, an exact instruction address not.
pub const RETURN_ADDRESS_KEY: u64 = 1 << 63;

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
}

/// Map names, shared so that a rename on one side is a compile error on the other.
pub mod map {
    pub const EVENTS: &str = "EVENTS";
    pub const STACKS: &str = "STACKS";
    pub const COUNTERS: &str = "COUNTERS";
    pub const UNWIND_RULES: &str = "UNWIND_RULES";
    pub const RULE_GENERATION: &str = "RULE_GENERATION";
}

const _: () = assert!(core::mem::size_of::<Event>() == 72);
const _: () = assert!(core::mem::size_of::<Stack>() == 8 + 8 * MAX_STACK_DEPTH);
const _: () = assert!(core::mem::size_of::<StackSample>() == 40);
const _: () = assert!(core::mem::size_of::<UnwindRule>() == 8);

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain `#[repr(C)]` integers without padding (asserted above).
    unsafe impl aya::Pod for super::Event {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Stack {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::UnwindRule {}
}
