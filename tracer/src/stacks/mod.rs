//! The target's code and stacks: where its code is (`modules`), what its ELF files say
//! (`elf`, `cfi`; `golang` for Go programs: version, pclntab, runtime layout), how stacks are walked from a copy (`unwind`), and every
//! distinct stack seen, placed in the modules (`table`).

pub mod cfi;
pub mod elf;
pub mod golang;
pub mod modules;
pub mod table;
pub mod unwind;

pub use self::table::{RawStack, StackId, StackInfo, StackSource, StackTable};
