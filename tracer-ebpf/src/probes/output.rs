//! Writing records to the ring buffer.

use aya_ebpf::bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP};
use tracer_ebpf::{counter, record::Record};

use super::maps::{EVENTS, count, wakeup_bytes};

/// Sends `record`, written straight into its reserved slot. The reader is woken only
/// when enough data is waiting (it also polls on a timer), so a busy target does not pay
/// a wakeup per event. A full ring counts the record as lost.
#[inline(always)]
pub fn emit<R: Record>(record: &R) {
    let Some(mut entry) = EVENTS.reserve::<R>(0) else {
        count(counter::LOST_EVENTS);
        return;
    };
    entry.write(*record);
    let flags = if EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= wakeup_bytes() {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    entry.submit(flags as u64);
}
