//! Privileged end-to-end tests: real fixtures (C, C++, Rust, Go) built by the harness,
//! the real `leaktracer` binary attached to them, exact figures asserted. A custom
//! runner (libtest-mimic), so that a test that cannot run here (no root, no uprobes) is
//! reported ignored, never passed; `cargo xtask test` turns that into a failure.

mod claims;
mod corpus;
mod descriptors;
mod errors;
mod formats;
mod gofixture;
mod golang;
mod harness;
mod hostile;
mod lifecycle;
mod native_heap;
mod oom;
mod oracle;
mod overhead;
mod stacks;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args = libtest_mimic::Arguments::from_args();
    let required = std::env::var_os("LEAKTRACER_REQUIRE_PRIVILEGED").is_some();
    if let Some(reason) = harness::unprivileged_reason() {
        if required {
            eprintln!(
                "the privileged tests cannot run here ({reason}) but LEAKTRACER_REQUIRE_PRIVILEGED is set"
            );
            return ExitCode::FAILURE;
        }
        eprintln!("\n!!! the privileged tests are IGNORED: {reason}; run `cargo xtask test` as root !!!\n");
    }
    let missing = golang::toolchains_missing();
    if required && !missing.is_empty() {
        eprintln!(
            "Go toolchains missing for the Go tests (1.x): {missing:?}; cargo xtask setup installs them"
        );
        return ExitCode::FAILURE;
    }
    let mut tests = Vec::new();
    for module in [
        claims::tests,
        corpus::tests,
        descriptors::tests,
        errors::tests,
        formats::tests,
        golang::tests,
        hostile::tests,
        lifecycle::tests,
        native_heap::tests,
        oom::tests,
        overhead::tests,
        stacks::tests,
        oracle::tests::trials,
    ] {
        tests.extend(module());
    }
    libtest_mimic::run(&args, tests).exit_code()
}
