//! Privileged end-to-end tests: real fixtures (C, C++, Rust, Go) built by the harness,
//! the real `leaktracer` binary attached to them, exact figures asserted. A custom
//! runner (libtest-mimic), so that a test that cannot run here (no root, no uprobes) is
//! reported ignored, never passed; `cargo xtask test` turns that into a failure.

mod corpus;
mod errors;
mod formats;
mod harness;
mod lifecycle;
mod native_heap;
mod overhead;
mod stacks;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args = libtest_mimic::Arguments::from_args();
    if let Some(reason) = harness::unprivileged_reason() {
        if std::env::var_os("LEAKTRACER_REQUIRE_PRIVILEGED").is_some() {
            eprintln!(
                "the privileged tests cannot run here ({reason}) but LEAKTRACER_REQUIRE_PRIVILEGED is set"
            );
            return ExitCode::FAILURE;
        }
        eprintln!("\n!!! the privileged tests are IGNORED: {reason}; run `cargo xtask test` as root !!!\n");
    }
    let mut tests = Vec::new();
    for module in [
        corpus::tests,
        errors::tests,
        formats::tests,
        lifecycle::tests,
        native_heap::tests,
        overhead::tests,
        stacks::tests,
    ] {
        tests.extend(module());
    }
    libtest_mimic::run(&args, tests).exit_code()
}
