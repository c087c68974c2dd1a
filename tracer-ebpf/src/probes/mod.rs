//! One module per family of probe points, plus the shared plumbing they use: the common
//! opening checks (`context`), maps and globals (`maps`), stacks (`stack`), event
//! output (`output`) and kernel function calls (`kfunc`).

mod alloc;
mod context;
mod faults;
mod fds;
mod golang;
mod kfunc;
mod maps;
mod memory;
mod output;
mod process;
mod stack;
mod syscalls;
