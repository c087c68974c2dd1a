use proptest::prelude::*;
use tracer_ebpf::record::{Header, StackSample};

use super::*;

fn bytes_of<R: Record>(r: &R) -> Vec<u8> {
    // SAFETY: a Record is plain data without padding.
    unsafe { std::slice::from_raw_parts((r as *const R).cast::<u8>(), size_of::<R>()) }.to_vec()
}

fn header<R: Record>(ts_ns: u64) -> Header {
    Header { kind: R::KIND, tid: 7, ts_ns }
}

#[test]
fn decodes_every_field_of_a_mapping() {
    let r = record::Mmap {
        header: header::<record::Mmap>(11),
        addr: 0x7f00_0000_0000,
        len: 8192,
        flags: 0x22,
        stack_id: 0xabc,
        fd: -1,
        prot: 3,
        origin: origin::ALLOCATOR,
        _pad: 0,
    };
    assert_eq!(
        Event::decode(&bytes_of(&r)).unwrap(),
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
fn decodes_go_records() {
    let r = record::GoCreate {
        header: header::<record::GoCreate>(5),
        goid: 42,
        parent_goid: 1,
        gopc: 0x4000,
        startpc: 0x5000,
        stack_id: 0,
    };
    assert_eq!(
        Event::decode(&bytes_of(&r)).unwrap(),
        Event::GoCreate { ts_ns: 5, goid: 42, parent_goid: 1, gopc: 0x4000, startpc: 0x5000, stack: None }
    );
    let park = record::GoPark { header: header::<record::GoPark>(6), goid: 42, reason: 14, waiting: 1 };
    assert_eq!(
        Event::decode(&bytes_of(&park)).unwrap(),
        Event::GoPark { ts_ns: 6, goid: 42, reason: 14, waiting: true }
    );
    let gc = record::Gc {
        header: header::<record::Gc>(7),
        phase: record::gc_phase::SWEEP,
        _pad: 0,
        heap_marked: 99,
    };
    assert_eq!(
        Event::decode(&bytes_of(&gc)).unwrap(),
        Event::Gc { ts_ns: 7, phase: GcPhase::Sweep { heap_marked: Some(99) } }
    );
}

#[test]
fn decodes_the_end_of_a_process() {
    let mut comm = [0u8; 16];
    comm[..4].copy_from_slice(b"kill");
    let r = record::Signal {
        header: header::<record::Signal>(9),
        sig: 9,
        sender_pid: 77,
        code: 0,
        _pad: 0,
        sender_comm: comm,
    };
    assert_eq!(
        Event::decode(&bytes_of(&r)).unwrap(),
        Event::Signal { ts_ns: 9, sig: 9, code: 0, sender_pid: 77, sender_comm: "kill".into() }
    );
    let exit = record::ProcessExit { header: header::<record::ProcessExit>(10), exit_code: -1, _pad: 0 };
    assert_eq!(Event::decode(&bytes_of(&exit)).unwrap(), Event::ProcessExit { ts_ns: 10, exit_code: None });
}

#[test]
fn rejects_short_records_and_unknown_kinds() {
    assert_eq!(Event::decode(&[1, 0]), Err(DecodeError::Short(2)));
    let free = bytes_of(&record::Free { header: header::<record::Free>(1), addr: 16, caller: 0 });
    assert!(matches!(Event::decode(&free[..20]), Err(DecodeError::Size { .. })));
    let mut unknown = free.clone();
    unknown[..4].copy_from_slice(&99u32.to_ne_bytes());
    assert_eq!(Event::decode(&unknown), Err(DecodeError::Kind(99)));
}

#[test]
fn decodes_stack_samples_with_their_bytes() {
    let h = StackSample {
        header: Header { kind: kind::STACK_SAMPLE, tid: 0, ts_ns: 1 },
        id: 5,
        ip: 6,
        sp: 7,
        bp: 8,
        len: 16,
        flags: 1,
    };
    let mut bytes = bytes_of(&h);
    bytes.extend(1..=16u8);
    let Event::StackSample(sample) = Event::decode(&bytes).unwrap() else { panic!("not a sample") };
    assert_eq!((sample.id, sample.ip, sample.sp, sample.bp, sample.flags), (5, 6, 7, 8, 1));
    assert_eq!(&sample.stack[..], &(1..=16u8).collect::<Vec<_>>()[..]);
    // A length beyond the record is an error, not a panic.
    assert!(Event::decode(&bytes[..size_of::<StackSample>() + 4]).is_err());
}

#[test]
fn zero_stack_id_means_no_stack() {
    let r = record::Alloc {
        header: header::<record::Alloc>(1),
        addr: 16,
        size: 1,
        func: 1,
        ..Default::default()
    };
    assert!(matches!(Event::decode(&bytes_of(&r)).unwrap(), Event::Alloc { stack: None, .. }));
}

proptest! {
    /// Whatever the bytes, decoding returns; it never panics.
    #[test]
    fn any_bytes_decode_or_fail_cleanly(bytes in prop::collection::vec(any::<u8>(), 0..200), kind in 0u32..30) {
        let mut bytes = bytes;
        if bytes.len() >= 4 {
            bytes[..4].copy_from_slice(&kind.to_ne_bytes());
        }
        let _ = Event::decode(&bytes);
    }
}
