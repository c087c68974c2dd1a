//! One module per family of probe points, plus the shared plumbing they use: the common
//! opening checks (`context`), maps and globals (`maps`), stacks (`stack`) and event
//! output (`output`).

mod alloc;
mod context;
mod faults;
mod fds;
mod golang;
mod maps;
mod memory;
mod output;
mod process;
mod stack;
