//! Maps and globals shared by the programs. Sizes here are defaults the loader adjusts
//! to what the session uses (the ring buffer, the sampled-block set); maps whose entries
//! come and go use `BPF_F_NO_PREALLOC`, so they cost kernel memory only while used.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use tracer_ebpf::{
    golang::GoOffsets,
    record::STACK_COPY_MAX,
    unwind::{CodeRange, MAX_CODE_RANGES, Stack, UnwindRule},
};

/// `BPF_F_NO_PREALLOC`: entries allocated on insert, freed on delete.
const NO_PREALLOC: u32 = 1;

/// Records to userspace.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(16 << 20, 0);

/// User stacks by content hash: identical stacks are stored once. LRU so it never fills;
/// userspace reads each new stack as soon as it sees its id, long before eviction, and
/// an evicted stack is stored again the next time it is seen.
#[map]
pub static STACKS: LruHashMap<u64, Stack> = LruHashMap::with_max_entries(4096, 0);

/// Per-CPU scratch space to build a stack in (too big for the BPF stack).
#[map]
pub static STACK_SCRATCH: PerCpuArray<Stack> = PerCpuArray::with_max_entries(1, 0);

/// Unwind rules by code address (see `tracer_ebpf::unwind::UnwindRule`), filled by
/// userspace. LRU: a rule evicted is missed once, and userspace teaches it again.
#[map]
pub static UNWIND_RULES: LruHashMap<u64, UnwindRule> = LruHashMap::with_max_entries(65536, 0);

/// Code ranges with one rule each (Go code), looked up when `UNWIND_RULES` has none.
#[map]
pub static CODE_RANGES: Array<CodeRange> = Array::with_max_entries(MAX_CODE_RANGES, 0);

/// Per-CPU, direct-mapped cache in front of the rules: an array lookup instead of a hash
/// lookup for each frame. Entries carry the rule generation, so that rules taken back by
/// userspace (exec) are not used again.
#[map]
pub static RULE_CACHE: PerCpuArray<CachedRule> = PerCpuArray::with_max_entries(RULE_CACHE_SLOTS, 0);
pub const RULE_CACHE_SLOTS: u32 = 1024;

/// The rule generation: userspace bumps it when it takes rules back.
#[map]
pub static RULE_GENERATION: Array<u32> = Array::with_max_entries(1, 0);

#[repr(C)]
#[derive(Clone, Copy)]
pub struct CachedRule {
    pub key: u64,
    pub generation: u32,
    pub rule: UnwindRule,
    pub _pad: u32,
}

/// Size of the per-CPU buffer a stack sample is built in: the header, the copy, and room
/// for the last chunk (a power of two, so sizes can be bounded with a mask).
pub const SAMPLE_SCRATCH_SIZE: usize = 16384;
const _: () = assert!(SAMPLE_SCRATCH_SIZE >= 56 + STACK_COPY_MAX + 1024);

#[map]
pub static SAMPLE_SCRATCH: PerCpuArray<[u8; SAMPLE_SCRATCH_SIZE]> = PerCpuArray::with_max_entries(1, 0);

/// Failure counters, indexed by `tracer_ebpf::counter`.
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(tracer_ebpf::counter::COUNT, 0);

/// Allocator calls between entry and return, by thread. Only the outermost traced call
/// of a thread is kept: nested calls (realloc calling malloc) are not separate events.
/// Entries of threads that exit are removed by the exit tracepoint.
#[map]
pub static ALLOC_CALLS: HashMap<u32, AllocCall> = HashMap::with_max_entries(32768, NO_PREALLOC);

/// Addresses of sampled blocks still live (sampling only; the loader sizes it to 1
/// entry otherwise): frees of any other address are dropped here, without an event.
#[map]
pub static SAMPLED: HashMap<u64, u8> = HashMap::with_max_entries(1 << 20, NO_PREALLOC);

/// Memory syscalls between enter and exit, by thread. Separate from `ALLOC_CALLS`, so a
/// malloc that calls mmap keeps both.
#[map]
pub static SYSCALL_CALLS: HashMap<u32, SyscallCall> = HashMap::with_max_entries(32768, NO_PREALLOC);

#[unsafe(no_mangle)]
static TARGET_TGID: u32 = 0;

#[unsafe(no_mangle)]
static WAKEUP_BYTES: u64 = 1 << 20;

#[unsafe(no_mangle)]
static UNWIND_MODE: u32 = tracer_ebpf::unwind_mode::EH_FRAME;

#[unsafe(no_mangle)]
static SAMPLE_BYTES: u64 = 0;

#[unsafe(no_mangle)]
static BENCH_FLOOR: u32 = 0;

#[unsafe(no_mangle)]
static TASK_EXIT_CODE_OFFSET: u32 = 0;

#[unsafe(no_mangle)]
static SYSCALLS: u32 = 0;

#[unsafe(no_mangle)]
static GO_OFFSETS: GoOffsets = GoOffsets {
    g_goid: 0,
    g_gopc: 0,
    g_startpc: 0,
    g_parent_goid: 0,
    g_waiting: 0,
    g_defer: 0,
    defer_heap: 0,
    defer_pc: 0,
    special_kind: 0,
    special_profile: 0,
    pop_takes_g: 0,
    defer_open: 0,
    heap_marked_addr: 0,
};

/// An allocator call in flight.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct AllocCall {
    /// Stack pointer at entry; the return probe sees `sp + 8`.
    pub sp: u64,
    pub ts_ns: u64,
    pub size: u64,
    /// realloc: the old block; posix_memalign: where the result is stored.
    pub arg: u64,
    pub stack_id: u64,
    pub func: u32,
    /// Sampling: the threshold the new block was drawn with, 0 if it was not drawn.
    pub threshold: u32,
}

/// A memory syscall in flight.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SyscallCall {
    pub kind: u32,
    pub origin: u32,
    pub addr: u64,
    pub len: u64,
    pub new_len: u64,
    pub prot: u64,
    pub flags: u64,
    pub fd: u64,
    pub stack_id: u64,
}

/// Reads a global the loader set before load; volatile so the compiler does not fold in
/// the default.
macro_rules! global {
    ($name:ident) => {
        // SAFETY: a plain read of a global that nothing writes after load.
        unsafe { core::ptr::read_volatile(&raw const $name) }
    };
}

#[inline(always)]
pub fn target_tgid() -> u32 {
    global!(TARGET_TGID)
}

#[inline(always)]
pub fn wakeup_bytes() -> u64 {
    global!(WAKEUP_BYTES)
}

#[inline(always)]
pub fn sample_bytes() -> u64 {
    global!(SAMPLE_BYTES)
}

/// Which syscall families to follow (bits of `tracer_ebpf::syscalls`).
#[inline(always)]
pub fn syscalls() -> u32 {
    global!(SYSCALLS)
}

#[inline(always)]
pub fn bench_floor() -> bool {
    global!(BENCH_FLOOR) != 0
}

#[inline(always)]
pub fn unwind_mode() -> u32 {
    global!(UNWIND_MODE)
}

#[inline(always)]
pub fn task_exit_code_offset() -> u32 {
    global!(TASK_EXIT_CODE_OFFSET)
}

#[inline(always)]
pub fn go_offsets() -> GoOffsets {
    global!(GO_OFFSETS)
}

#[inline(always)]
pub fn count(index: u32) {
    if let Some(slot) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *slot += 1 };
    }
}
