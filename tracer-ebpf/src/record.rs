//! The records of the `EVENTS` ring buffer: one `#[repr(C)]` type per kind, each
//! starting with a [`Header`] whose `kind` says which. Fields mean one thing each; a
//! record that needs another field gets it, never a reused one.

/// The first 16 bytes of every record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    /// One of [`kind`].
    pub kind: u32,
    /// Thread that made the call.
    pub tid: u32,
    /// `bpf_ktime_get_ns` (CLOCK_MONOTONIC) when the event happened.
    pub ts_ns: u64,
}

/// Record kinds, the value of [`Header::kind`]. Part of the ABI: never reuse a number; a
/// kind that goes away leaves a hole.
pub mod kind {
    pub const ALLOC: u32 = 1;
    pub const FREE: u32 = 2;
    pub const REALLOC: u32 = 3;
    pub const MMAP: u32 = 4;
    pub const MUNMAP: u32 = 5;
    pub const MREMAP: u32 = 6;
    pub const BRK: u32 = 7;
    pub const EXEC: u32 = 8;
    pub const STACK_SAMPLE: u32 = 9;
    pub const GO_CREATE: u32 = 10;
    pub const GO_EXIT: u32 = 11;
    pub const GO_PARK: u32 = 12;
    pub const DEFER_PUSH: u32 = 13;
    pub const DEFER_POP: u32 = 14;
    pub const FD_OPEN: u32 = 15;
    pub const FD_CLOSE: u32 = 16;
    pub const GO_HEAP_ALLOC: u32 = 17;
    pub const GO_HEAP_FREE: u32 = 18;
    pub const GC: u32 = 19;
    pub const OOM_VICTIM: u32 = 20;
    pub const PROCESS_EXIT: u32 = 21;
    pub const SIGNAL: u32 = 22;
    pub const PAGE_FAULT: u32 = 23;
    pub const DISCARD: u32 = 24;
}

/// A record type of the ring buffer.
///
/// # Safety
/// Implementors are `#[repr(C)]`, start with a [`Header`], hold only integers and have
/// no padding, so that any bytes of the right length are a valid value.
pub unsafe trait Record: Copy + 'static {
    const KIND: u32;
}

/// Who created a mapping or moved the break (`origin` fields).
pub mod origin {
    /// The program (or a library it called), outside any traced allocator.
    pub const PROGRAM: u32 = 0;
    /// A traced allocator function growing its own arenas: the memory backs heap
    /// blocks already attributed to their callers.
    pub const ALLOCATOR: u32 = 1;
}

macro_rules! records {
    ($($(#[$meta:meta])* $name:ident = $kind:ident, $size:expr, { $($(#[$fmeta:meta])* $field:ident: $ty:ty),* $(,)? })*) => {$(
        $(#[$meta])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct $name {
            pub header: Header,
            $($(#[$fmeta])* pub $field: $ty,)*
        }
        // SAFETY: repr(C), integers only, no padding (size asserted below).
        unsafe impl Record for $name {
            const KIND: u32 = kind::$kind;
        }
        const _: () = assert!(core::mem::size_of::<$name>() == $size);
    )*};
}

records! {
    /// A block came back from an allocator function.
    Alloc = ALLOC, 48, {
        addr: u64,
        size: u64,
        /// Key of the user stack in `STACKS`; 0 when none could be captured.
        stack_id: u64,
        /// With sampling, the probability (scaled to 2^32 - 1) the block was drawn with;
        /// 0 when every allocation is traced.
        threshold: u32,
        /// One of [`func`](crate::func).
        func: u32,
    }
    /// A block went to `free`.
    /// `caller`: the return address at the call (0 if unreadable), which tells the
    /// allocator's own frees (glibc freeing its per-thread cache at thread exit) from
    /// frees of blocks made before attach.
    Free = FREE, 32, { addr: u64, caller: u64 }
    /// `realloc`/`reallocarray` returned a new block. The old block is released only
    /// here, after a non-NULL return.
    Realloc = REALLOC, 56, {
        /// The old block; 0 when the call behaved as `malloc` (or the old block was not
        /// sampled).
        old_addr: u64,
        addr: u64,
        size: u64,
        stack_id: u64,
        threshold: u32,
        func: u32,
    }
    /// `mmap` succeeded.
    Mmap = MMAP, 64, {
        addr: u64,
        len: u64,
        /// The mmap flags.
        flags: u64,
        stack_id: u64,
        /// The file descriptor argument (-1 for none).
        fd: i32,
        prot: u32,
        /// One of [`origin`].
        origin: u32,
        _pad: u32,
    }
    /// `munmap` succeeded.
    Munmap = MUNMAP, 32, { addr: u64, len: u64 }
    /// `mremap` succeeded.
    Mremap = MREMAP, 72, {
        old_addr: u64,
        old_len: u64,
        addr: u64,
        len: u64,
        /// The mremap flags.
        flags: u64,
        stack_id: u64,
        origin: u32,
        _pad: u32,
    }
    /// `brk` returned.
    Brk = BRK, 48, {
        /// The break after the call.
        brk: u64,
        /// The break asked for.
        requested: u64,
        stack_id: u64,
        origin: u32,
        _pad: u32,
    }
    /// The target called `execve`: everything before this belonged to the old image.
    Exec = EXEC, 16, {}
    /// A goroutine was created (`runtime.newproc1` returned it).
    GoCreate = GO_CREATE, 56, {
        goid: u64,
        /// The creating goroutine (0 before Go 1.21, where the runtime does not keep it).
        parent_goid: u64,
        /// Return address of the `go` statement's call.
        gopc: u64,
        /// The goroutine's function.
        startpc: u64,
        /// The creating goroutine's stack at the `go` statement.
        stack_id: u64,
    }
    /// A goroutine ended (`runtime.goexit0` or `runtime.gdestroy`).
    GoExit = GO_EXIT, 24, { goid: u64 }
    /// A goroutine parked (`runtime.gopark`).
    GoPark = GO_PARK, 32, {
        goid: u64,
        /// The runtime's `waitReason`, numbered as the target's Go version numbers it.
        reason: u32,
        /// Nonzero when the goroutine waits on a sudog (`g.waiting` set): a `select`
        /// without one has only nil channels and never wakes.
        waiting: u32,
    }
    /// `runtime.deferproc`: a heap-allocated deferred call was pushed.
    DeferPush = DEFER_PUSH, 40, {
        goid: u64,
        /// Return address of the `defer` statement's call (`d.pc`).
        pc: u64,
        /// The goroutine's stack at the `defer` statement.
        stack_id: u64,
    }
    /// A heap-allocated deferred call was popped (run, or dropped by a panic).
    DeferPop = DEFER_POP, 32, { goid: u64, pc: u64 }
    /// A syscall gave the process a new file descriptor.
    /// (`dup2`/`dup3` onto an open descriptor close it first; userspace knows which
    /// descriptors are open.)
    FdOpen = FD_OPEN, 32, {
        stack_id: u64,
        fd: i32,
        /// The syscall number that made it.
        syscall: u32,
    }
    /// Descriptors `first..=last` are being closed (`close`, `close_range`).
    FdClose = FD_CLOSE, 24, { first: u32, last: u32 }
    /// The Go runtime's heap profiler sampled an allocation (`runtime.profilealloc`).
    GoHeapAlloc = GO_HEAP_ALLOC, 40, { addr: u64, size: u64, stack_id: u64 }
    /// The sweeper freed a sampled object (`runtime.freeSpecial` of a profile special).
    GoHeapFree = GO_HEAP_FREE, 24, { addr: u64 }
    /// A garbage collection began (`runtime.gcStart`) or its mark ended and sweeping
    /// begins (`runtime.gcSweep`, with the live heap then marked).
    Gc = GC, 32, {
        /// One of [`gc_phase`].
        phase: u32,
        _pad: u32,
        /// `gcController.heapMarked` at the sweep (0 at the start, or unreadable).
        heap_marked: u64,
    }
    /// The OOM killer chose the target (`oom:mark_victim`).
    OomVictim = OOM_VICTIM, 56, {
        pid: u32,
        _pad: u32,
        /// Sizes the kernel reported, in KiB.
        total_vm_kib: u64,
        anon_rss_kib: u64,
        file_rss_kib: u64,
        shmem_rss_kib: u64,
    }
    /// The target's last thread exited (`sched:sched_process_exit`).
    ProcessExit = PROCESS_EXIT, 24, {
        /// `task->exit_code`: the wait status (exit status << 8, or the signal); -1 if
        /// it could not be read.
        exit_code: i32,
        _pad: u32,
    }
    /// A fatal signal was sent to the target (`signal:signal_generate`).
    Signal = SIGNAL, 48, {
        sig: i32,
        /// The sender (the kernel's own sends, like the OOM killer's, come from the
        /// thread that was running).
        sender_pid: u32,
        /// The `si_code` of the signal.
        code: i32,
        _pad: u32,
        sender_comm: [u8; 16],
    }
    /// A page of the target was touched for the first time (`--mode growth`).
    PageFault = PAGE_FAULT, 40, { addr: u64, ip: u64, stack_id: u64 }
    /// `madvise(MADV_DONTNEED/MADV_FREE/MADV_REMOVE)` gave pages back.
    Discard = DISCARD, 32, { addr: u64, len: u64 }
}

/// Values of [`Gc::phase`].
pub mod gc_phase {
    pub const START: u32 = 1;
    pub const SWEEP: u32 = 2;
}

/// Header of a [`kind::STACK_SAMPLE`] record: registers at the probe and a copy of the
/// user stack from `sp` up (`len` bytes, following the header). Sent when the kernel
/// side met a return address it has no unwind rule for; userspace unwinds it, teaches
/// the kernel the rules it used, and files the stack under the sample's id, which the
/// event that follows carries.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StackSample {
    pub header: Header,
    pub id: u64,
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
    /// Bytes of stack copied after the header.
    pub len: u32,
    /// Bits of [`sample_flags`].
    pub flags: u32,
}
// SAFETY: repr(C), integers only, no padding (size asserted below).
unsafe impl Record for StackSample {
    const KIND: u32 = kind::STACK_SAMPLE;
}
const _: () = assert!(core::mem::size_of::<StackSample>() == 56);

/// Bits of [`StackSample::flags`].
pub mod sample_flags {
    /// `ip` is a function's first instruction (or a return instruction): the return
    /// address is at `[sp]`.
    pub const AT_ENTRY: u32 = 1;
}

/// Bytes of user stack a sample copies at most.
pub const STACK_COPY_MAX: usize = 8192;
