//! leaktracer's eBPF programs. Built for `bpfel-unknown-none` by `tracer/build.rs` and
//! embedded in the `leaktracer` binary.
//!
//! Every program is a thin entry point over a `try_` function, which starts with the
//! same check (`probes::context::traced_thread`): tracepoints fire system-wide, and a
//! uprobe on a shared library file must not cost other processes more than that check.
#![no_std]
#![no_main]
#![deny(warnings)]

mod probes;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
