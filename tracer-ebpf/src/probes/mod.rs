//! One module per family of probe points, plus the shared plumbing (maps, stacks,
//! event output) they use.

mod alloc;
mod maps;
mod output;
mod process;
mod stack;
mod syscalls;
