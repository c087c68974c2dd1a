//! Writing events to the ring buffer.

use aya_ebpf::bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP};
use tracer_ebpf::{Event, counter};

use super::maps::{EVENTS, count, wakeup_bytes};

/// Sends `event`. The reader is woken only when enough data is waiting (it also polls on
/// a timer), so a busy target does not pay a wakeup per event.
#[inline(always)]
pub fn emit(event: &Event) {
    let Some(mut entry) = EVENTS.reserve::<Event>(0) else {
        count(counter::LOST_EVENTS);
        return;
    };
    entry.write(*event);
    let flags = if EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= wakeup_bytes() {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    entry.submit(flags as u64);
}
