//! Events from the kernel side, decoded from ring-buffer records into a typed form the
//! aggregator matches on.

pub mod reader;

use bytes::Buf;
use tracer_ebpf::{flags, kind};

pub use crate::unwind::Sample;

/// Identifies a user stack stored by the kernel side (a hash of its frames).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StackId(pub u64);

/// Who created a mapping or moved the break.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The program (or a library it called), outside any traced allocator.
    Program,
    /// A traced allocator function growing its own arenas.
    Allocator,
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
    Free {
        ts_ns: u64,
        addr: u64,
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
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("ring buffer record of {0} bytes, expected {size} or a stack sample", size = RECORD_SIZE)]
    Size(usize),
    #[error("unknown event kind {0}")]
    Kind(u32),
}

pub const RECORD_SIZE: usize = std::mem::size_of::<tracer_ebpf::Event>();
const SAMPLE_HEADER: usize = std::mem::size_of::<tracer_ebpf::StackSample>();

impl Event {
    /// Decodes one ring-buffer record: a `tracer_ebpf::Event`, or a
    /// `tracer_ebpf::StackSample` and the stack bytes after it (native byte order).
    pub fn decode(record: &[u8]) -> Result<Self, DecodeError> {
        if record.len() >= SAMPLE_HEADER && (&record[..4]).get_u32_ne() == kind::STACK_SAMPLE {
            return Self::decode_sample(record);
        }
        if record.len() != RECORD_SIZE {
            return Err(DecodeError::Size(record.len()));
        }
        let mut b = record;
        let raw = tracer_ebpf::Event {
            kind: b.get_u32_ne(),
            tid: b.get_u32_ne(),
            ts_ns: b.get_u64_ne(),
            addr: b.get_u64_ne(),
            size: b.get_u64_ne(),
            old_addr: b.get_u64_ne(),
            old_size: b.get_u64_ne(),
            stack_id: b.get_u64_ne(),
            func: b.get_u16_ne(),
            prot: b.get_u16_ne(),
            flags: b.get_u32_ne(),
            map_flags: b.get_u64_ne(),
        };
        Self::from_raw(&raw)
    }

    fn decode_sample(record: &[u8]) -> Result<Self, DecodeError> {
        let mut b = record;
        let _kind = b.get_u32_ne();
        let len = usize::from(b.get_u16_ne());
        let flags = b.get_u16_ne();
        let (id, ip, sp, bp) = (b.get_u64_ne(), b.get_u64_ne(), b.get_u64_ne(), b.get_u64_ne());
        let stack = record.get(SAMPLE_HEADER..SAMPLE_HEADER + len).ok_or(DecodeError::Size(record.len()))?;
        Ok(Event::StackSample(Sample { id, ip, sp, bp, flags, stack: bytes::Bytes::copy_from_slice(stack) }))
    }

    pub fn from_raw(raw: &tracer_ebpf::Event) -> Result<Self, DecodeError> {
        let stack = (raw.stack_id != 0).then_some(StackId(raw.stack_id));
        let origin =
            if raw.flags & flags::ALLOCATOR_INTERNAL != 0 { Origin::Allocator } else { Origin::Program };
        let ts_ns = raw.ts_ns;
        let func = u32::from(raw.func);
        Ok(match raw.kind {
            kind::ALLOC => Event::Alloc {
                ts_ns,
                addr: raw.addr,
                size: raw.size,
                stack,
                func,
                threshold: raw.old_size as u32,
            },
            kind::FREE => Event::Free { ts_ns, addr: raw.addr },
            kind::REALLOC => Event::Realloc {
                ts_ns,
                old: raw.old_addr,
                addr: raw.addr,
                size: raw.size,
                stack,
                func,
                threshold: raw.old_size as u32,
            },
            kind::MMAP => Event::Mmap {
                ts_ns,
                addr: raw.addr,
                len: raw.size,
                prot: u32::from(raw.prot),
                flags: raw.map_flags,
                // The fd argument is an int passed in a 64-bit register.
                fd: i32::try_from(raw.old_size as i64).ok().filter(|fd| *fd >= 0),
                stack,
                origin,
            },
            kind::MUNMAP => Event::Munmap { ts_ns, addr: raw.addr, len: raw.size },
            kind::MREMAP => Event::Mremap {
                ts_ns,
                old_addr: raw.old_addr,
                old_len: raw.old_size,
                addr: raw.addr,
                len: raw.size,
                flags: raw.map_flags,
                stack,
                origin,
            },
            kind::BRK => Event::Brk { ts_ns, brk: raw.addr, requested: raw.old_addr, stack, origin },
            kind::EXEC => Event::Exec { ts_ns },
            other => return Err(DecodeError::Kind(other)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_of(raw: &tracer_ebpf::Event) -> Vec<u8> {
        // SAFETY: Event is repr(C) plain data without padding.
        unsafe { std::slice::from_raw_parts((raw as *const tracer_ebpf::Event).cast::<u8>(), RECORD_SIZE) }
            .to_vec()
    }

    #[test]
    fn decodes_every_field_in_abi_order() {
        let raw = tracer_ebpf::Event {
            kind: kind::MMAP,
            tid: 7,
            ts_ns: 11,
            addr: 0x7f00_0000_0000,
            size: 8192,
            old_addr: 0,
            old_size: u64::MAX, // fd -1
            stack_id: 0xabc,
            func: 0,
            prot: 3,
            flags: flags::ALLOCATOR_INTERNAL,
            map_flags: 0x22,
        };
        assert_eq!(
            Event::decode(&bytes_of(&raw)).unwrap(),
            Event::Mmap {
                ts_ns: 11,
                addr: 0x7f00_0000_0000,
                len: 8192,
                prot: 3,
                flags: 0x22,
                fd: None,
                stack: Some(StackId(0xabc)),
                origin: Origin::Allocator
            }
        );
    }

    #[test]
    fn rejects_short_records_and_unknown_kinds() {
        assert_eq!(Event::decode(&[0; 10]), Err(DecodeError::Size(10)));
        let raw = tracer_ebpf::Event { kind: 99, ..Default::default() };
        assert_eq!(Event::decode(&bytes_of(&raw)), Err(DecodeError::Kind(99)));
    }

    #[test]
    fn decodes_stack_samples_with_their_bytes() {
        let header = tracer_ebpf::StackSample {
            kind: kind::STACK_SAMPLE,
            len: 16,
            flags: 1,
            id: 5,
            ip: 6,
            sp: 7,
            bp: 8,
        };
        // SAFETY: StackSample is repr(C) plain data without padding.
        let mut record =
            unsafe { std::slice::from_raw_parts((&raw const header).cast::<u8>(), SAMPLE_HEADER) }.to_vec();
        record.extend(1..=16u8);
        let Event::StackSample(sample) = Event::decode(&record).unwrap() else { panic!("not a sample") };
        assert_eq!((sample.id, sample.ip, sample.sp, sample.bp, sample.flags), (5, 6, 7, 8, 1));
        assert_eq!(&sample.stack[..], &(1..=16u8).collect::<Vec<_>>()[..]);
        // A length beyond the record is an error, not a panic.
        assert!(Event::decode(&record[..SAMPLE_HEADER + 4]).is_err());
    }

    #[test]
    fn zero_stack_id_means_no_stack() {
        let raw = tracer_ebpf::Event { kind: kind::ALLOC, addr: 16, size: 1, func: 1, ..Default::default() };
        assert!(matches!(Event::decode(&bytes_of(&raw)).unwrap(), Event::Alloc { stack: None, .. }));
    }
}
