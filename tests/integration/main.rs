//! Privileged end-to-end tests: real fixtures (C, C++, Rust) built by the harness, the
//! real `leaktracer` binary attached to them, exact figures asserted. Run them with
//! `cargo xtask test` (as root); they share kernel state, so one at a time.

mod corpus;
mod errors;
mod formats;
mod harness;
mod lifecycle;
mod native_heap;
mod overhead;
mod stacks;
