//! `--mode growth`: the first touch of a page (`exceptions:page_fault_user` on a page
//! that was not present), with the user stack. Costs follow the rate at which resident
//! memory grows, not the allocation rate.

use aya_ebpf::{EbpfContext, macros::tracepoint, programs::TracePointContext};
use tracer_ebpf::{counter, record::PageFault};

use super::{
    context::{field, header, traced_thread, user_regs},
    maps::count,
    output::emit,
    stack::{self, Start},
};

/// Fields of `exceptions:page_fault_user`.
const ADDRESS: usize = 8;
const IP: usize = 16;
const ERROR_CODE: usize = 24;
/// x86 page fault error code: the page was present (a protection fault, not a first
/// touch).
const PF_PRESENT: u64 = 1;

#[tracepoint(category = "exceptions", name = "page_fault_user")]
pub fn lt_page_fault(ctx: TracePointContext) -> u32 {
    let _ = try_page_fault(&ctx);
    0
}

fn try_page_fault(ctx: &TracePointContext) -> Option<()> {
    let tid = traced_thread()?;
    let error_code = field::<u64>(ctx, ERROR_CODE)?;
    if error_code & PF_PRESENT != 0 {
        return None;
    }
    let addr = field::<u64>(ctx, ADDRESS)?;
    let ip = field::<u64>(ctx, IP)?;
    let Some(regs) = user_regs() else {
        count(counter::STACK_ERRORS);
        return None;
    };
    let start = Start { ip: regs.ip, sp: regs.sp, bp: regs.bp, at_entry: false };
    let stack_id = stack::capture(ctx.as_ptr(), &start);
    emit(&PageFault { header: header::<PageFault>(tid), addr, ip, stack_id });
    Some(())
}
