//! Events from the kernel side: each ring-buffer record decoded from its ABI type
//! (`tracer_ebpf::record`) into the typed form the aggregator matches on.

pub mod reader;

use tracer_ebpf::record::{self, Record, kind, origin};

use crate::stacks::{StackId, unwind::Sample};

/// Who created a mapping or moved the break.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The program (or a library it called), outside any traced allocator.
    Program,
    /// A traced allocator function growing its own arenas.
    Allocator,
}

/// Phases of a Go garbage collection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GcPhase {
    Start,
    /// Marking is over; the live heap it found, when known.
    Sweep {
        heap_marked: Option<u64>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `threshold`: with sampling, the probability (scaled to 2^32 - 1) the block was
    /// drawn with; 0 when every allocation is traced.
    Alloc {
        ts_ns: u64,
        addr: u64,
        size: u64,
        stack: Option<StackId>,
        func: u32,
        threshold: u32,
    },
    /// `caller`: the return address of the call to `free` (0 if unknown).
    Free {
        ts_ns: u64,
        addr: u64,
        caller: u64,
    },
    /// A block moved or resized; `old` is 0 when realloc acted as malloc.
    Realloc {
        ts_ns: u64,
        old: u64,
        addr: u64,
        size: u64,
        stack: Option<StackId>,
        func: u32,
        threshold: u32,
    },
    Mmap {
        ts_ns: u64,
        addr: u64,
        len: u64,
        prot: u32,
        flags: u64,
        fd: Option<i32>,
        stack: Option<StackId>,
        origin: Origin,
    },
    Munmap {
        ts_ns: u64,
        addr: u64,
        len: u64,
    },
    Mremap {
        ts_ns: u64,
        old_addr: u64,
        old_len: u64,
        addr: u64,
        len: u64,
        flags: u64,
        stack: Option<StackId>,
        origin: Origin,
    },
    /// The break is now `brk` (it was asked to become `requested`).
    Brk {
        ts_ns: u64,
        brk: u64,
        requested: u64,
        stack: Option<StackId>,
        origin: Origin,
    },
    Exec {
        ts_ns: u64,
    },
    /// Registers and stack copy for a stack the kernel side could not walk.
    StackSample(Sample),
    GoCreate {
        ts_ns: u64,
        goid: u64,
        parent_goid: u64,
        gopc: u64,
        startpc: u64,
        stack: Option<StackId>,
    },
    GoExit {
        ts_ns: u64,
        goid: u64,
    },
    /// `reason`: the runtime's waitReason number; `waiting`: a sudog was queued.
    GoPark {
        ts_ns: u64,
        goid: u64,
        reason: u32,
        waiting: bool,
    },
    DeferPush {
        ts_ns: u64,
        goid: u64,
        pc: u64,
        stack: Option<StackId>,
    },
    DeferPop {
        ts_ns: u64,
        goid: u64,
        pc: u64,
    },
    FdOpen {
        ts_ns: u64,
        fd: i32,
        syscall: u32,
        stack: Option<StackId>,
    },
    /// Descriptors `first..=last` closed.
    FdClose {
        ts_ns: u64,
        first: u32,
        last: u32,
    },
    GoHeapAlloc {
        ts_ns: u64,
        addr: u64,
        size: u64,
        stack: Option<StackId>,
    },
    GoHeapFree {
        ts_ns: u64,
        addr: u64,
    },
    Gc {
        ts_ns: u64,
        phase: GcPhase,
    },
    OomVictim {
        ts_ns: u64,
        anon_rss_kib: u64,
        file_rss_kib: u64,
        shmem_rss_kib: u64,
        total_vm_kib: u64,
    },
    /// `exit_code`: the wait status, when the kernel gave it.
    ProcessExit {
        ts_ns: u64,
        exit_code: Option<i32>,
    },
    Signal {
        ts_ns: u64,
        sig: i32,
        code: i32,
        sender_pid: u32,
        sender_comm: String,
    },
    PageFault {
        ts_ns: u64,
        addr: u64,
        stack: Option<StackId>,
    },
    Discard {
        ts_ns: u64,
        addr: u64,
        len: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("ring buffer record of {len} bytes; a record of kind {kind} has {expected}")]
    Size { kind: u32, len: usize, expected: usize },
    #[error("ring buffer record of {0} bytes is shorter than a header")]
    Short(usize),
    #[error("unknown event kind {0}")]
    Kind(u32),
}

/// A record of type `R`, when `bytes` is exactly one.
fn read<R: Record>(bytes: &[u8]) -> Result<R, DecodeError> {
    let expected = size_of::<R>();
    if bytes.len() != expected {
        return Err(DecodeError::Size { kind: R::KIND, len: bytes.len(), expected });
    }
    // SAFETY: `Record` types are plain integers without padding (the trait's contract),
    // so any bytes of the right length are a value; read_unaligned copes with alignment.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<R>()) })
}

fn stack(id: u64) -> Option<StackId> {
    (id != 0).then_some(StackId(id))
}

fn origin_of(value: u32) -> Origin {
    if value == origin::ALLOCATOR { Origin::Allocator } else { Origin::Program }
}

impl Event {
    /// Decodes one ring-buffer record.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let kind = bytes.get(..4).ok_or(DecodeError::Short(bytes.len()))?;
        match u32::from_ne_bytes(kind.try_into().expect("four bytes")) {
            kind::STACK_SAMPLE => decode_sample(bytes),
            kind::ALLOC..=kind::EXEC => decode_memory(bytes),
            kind::GO_CREATE..=kind::DEFER_POP | kind::GO_HEAP_ALLOC..=kind::GC => decode_go(bytes),
            kind::FD_OPEN | kind::FD_CLOSE => decode_fd(bytes),
            kind::OOM_VICTIM..=kind::SIGNAL => decode_end(bytes),
            kind::PAGE_FAULT | kind::DISCARD => decode_growth(bytes),
            other => Err(DecodeError::Kind(other)),
        }
    }
}

fn decode_sample(bytes: &[u8]) -> Result<Event, DecodeError> {
    let size = size_of::<record::StackSample>();
    let header: record::StackSample = read(bytes.get(..size).ok_or(DecodeError::Short(bytes.len()))?)?;
    let len = header.len as usize;
    let copy = bytes.get(size..size.saturating_add(len)).ok_or(DecodeError::Size {
        kind: kind::STACK_SAMPLE,
        len: bytes.len(),
        expected: size.saturating_add(len),
    })?;
    Ok(Event::StackSample(Sample {
        id: header.id,
        ip: header.ip,
        sp: header.sp,
        bp: header.bp,
        flags: header.flags,
        stack: bytes::Bytes::copy_from_slice(copy),
    }))
}

fn decode_memory(bytes: &[u8]) -> Result<Event, DecodeError> {
    Ok(match u32::from_ne_bytes(bytes[..4].try_into().expect("four bytes")) {
        kind::ALLOC => {
            let r: record::Alloc = read(bytes)?;
            let (ts_ns, stack) = (r.header.ts_ns, stack(r.stack_id));
            Event::Alloc { ts_ns, addr: r.addr, size: r.size, stack, func: r.func, threshold: r.threshold }
        }
        kind::FREE => {
            let r: record::Free = read(bytes)?;
            Event::Free { ts_ns: r.header.ts_ns, addr: r.addr, caller: r.caller }
        }
        kind::REALLOC => {
            let r: record::Realloc = read(bytes)?;
            let (ts_ns, stack, threshold) = (r.header.ts_ns, stack(r.stack_id), r.threshold);
            Event::Realloc {
                ts_ns,
                old: r.old_addr,
                addr: r.addr,
                size: r.size,
                stack,
                func: r.func,
                threshold,
            }
        }
        kind::MMAP => {
            let r: record::Mmap = read(bytes)?;
            Event::Mmap {
                ts_ns: r.header.ts_ns,
                addr: r.addr,
                len: r.len,
                prot: r.prot,
                flags: r.flags,
                fd: (r.fd >= 0).then_some(r.fd),
                stack: stack(r.stack_id),
                origin: origin_of(r.origin),
            }
        }
        kind::MUNMAP => {
            let r: record::Munmap = read(bytes)?;
            Event::Munmap { ts_ns: r.header.ts_ns, addr: r.addr, len: r.len }
        }
        kind::MREMAP => {
            let r: record::Mremap = read(bytes)?;
            Event::Mremap {
                ts_ns: r.header.ts_ns,
                old_addr: r.old_addr,
                old_len: r.old_len,
                addr: r.addr,
                len: r.len,
                flags: r.flags,
                stack: stack(r.stack_id),
                origin: origin_of(r.origin),
            }
        }
        kind::BRK => {
            let r: record::Brk = read(bytes)?;
            let (stack, origin) = (stack(r.stack_id), origin_of(r.origin));
            Event::Brk { ts_ns: r.header.ts_ns, brk: r.brk, requested: r.requested, stack, origin }
        }
        _ => Event::Exec { ts_ns: read::<record::Exec>(bytes)?.header.ts_ns },
    })
}

fn decode_go(bytes: &[u8]) -> Result<Event, DecodeError> {
    Ok(match u32::from_ne_bytes(bytes[..4].try_into().expect("four bytes")) {
        kind::GO_CREATE => {
            let r: record::GoCreate = read(bytes)?;
            Event::GoCreate {
                ts_ns: r.header.ts_ns,
                goid: r.goid,
                parent_goid: r.parent_goid,
                gopc: r.gopc,
                startpc: r.startpc,
                stack: stack(r.stack_id),
            }
        }
        kind::GO_EXIT => {
            let r: record::GoExit = read(bytes)?;
            Event::GoExit { ts_ns: r.header.ts_ns, goid: r.goid }
        }
        kind::GO_PARK => {
            let r: record::GoPark = read(bytes)?;
            Event::GoPark { ts_ns: r.header.ts_ns, goid: r.goid, reason: r.reason, waiting: r.waiting != 0 }
        }
        kind::DEFER_PUSH => {
            let r: record::DeferPush = read(bytes)?;
            Event::DeferPush { ts_ns: r.header.ts_ns, goid: r.goid, pc: r.pc, stack: stack(r.stack_id) }
        }
        kind::DEFER_POP => {
            let r: record::DeferPop = read(bytes)?;
            Event::DeferPop { ts_ns: r.header.ts_ns, goid: r.goid, pc: r.pc }
        }
        kind::GO_HEAP_ALLOC => {
            let r: record::GoHeapAlloc = read(bytes)?;
            Event::GoHeapAlloc { ts_ns: r.header.ts_ns, addr: r.addr, size: r.size, stack: stack(r.stack_id) }
        }
        kind::GO_HEAP_FREE => {
            let r: record::GoHeapFree = read(bytes)?;
            Event::GoHeapFree { ts_ns: r.header.ts_ns, addr: r.addr }
        }
        _ => {
            let r: record::Gc = read(bytes)?;
            let phase = match r.phase {
                record::gc_phase::START => GcPhase::Start,
                _ => GcPhase::Sweep { heap_marked: (r.heap_marked != 0).then_some(r.heap_marked) },
            };
            Event::Gc { ts_ns: r.header.ts_ns, phase }
        }
    })
}

fn decode_fd(bytes: &[u8]) -> Result<Event, DecodeError> {
    if u32::from_ne_bytes(bytes[..4].try_into().expect("four bytes")) == kind::FD_OPEN {
        let r: record::FdOpen = read(bytes)?;
        return Ok(Event::FdOpen {
            ts_ns: r.header.ts_ns,
            fd: r.fd,
            syscall: r.syscall,
            stack: stack(r.stack_id),
        });
    }
    let r: record::FdClose = read(bytes)?;
    Ok(Event::FdClose { ts_ns: r.header.ts_ns, first: r.first, last: r.last })
}

fn decode_end(bytes: &[u8]) -> Result<Event, DecodeError> {
    Ok(match u32::from_ne_bytes(bytes[..4].try_into().expect("four bytes")) {
        kind::OOM_VICTIM => {
            let r: record::OomVictim = read(bytes)?;
            Event::OomVictim {
                ts_ns: r.header.ts_ns,
                anon_rss_kib: r.anon_rss_kib,
                file_rss_kib: r.file_rss_kib,
                shmem_rss_kib: r.shmem_rss_kib,
                total_vm_kib: r.total_vm_kib,
            }
        }
        kind::PROCESS_EXIT => {
            let r: record::ProcessExit = read(bytes)?;
            Event::ProcessExit { ts_ns: r.header.ts_ns, exit_code: (r.exit_code >= 0).then_some(r.exit_code) }
        }
        _ => {
            let r: record::Signal = read(bytes)?;
            let end = r.sender_comm.iter().position(|b| *b == 0).unwrap_or(r.sender_comm.len());
            Event::Signal {
                ts_ns: r.header.ts_ns,
                sig: r.sig,
                code: r.code,
                sender_pid: r.sender_pid,
                sender_comm: String::from_utf8_lossy(&r.sender_comm[..end]).into_owned(),
            }
        }
    })
}

fn decode_growth(bytes: &[u8]) -> Result<Event, DecodeError> {
    if u32::from_ne_bytes(bytes[..4].try_into().expect("four bytes")) == kind::PAGE_FAULT {
        let r: record::PageFault = read(bytes)?;
        return Ok(Event::PageFault { ts_ns: r.header.ts_ns, addr: r.addr, stack: stack(r.stack_id) });
    }
    let r: record::Discard = read(bytes)?;
    Ok(Event::Discard { ts_ns: r.header.ts_ns, addr: r.addr, len: r.len })
}

#[cfg(test)]
mod tests;
