//! Static introspection of Go executables for placing uprobes from outside the process.
//!
//! The tracer attaches to Go programs it did not build, so everything it needs (function
//! addresses, struct offsets, global variable addresses, RET sites, symbolization) must be
//! recovered from the ELF file itself, including `-ldflags="-s -w"` builds that have neither
//! `.symtab` nor DWARF. The submodules are:
//!
//! * [`binary`]: the ELF image, read by virtual address (PT_LOAD, PIE relocations, limits).
//! * [`version`]: Go detection and the toolchain version from `.go.buildinfo`.
//! * [`pclntab`]: the runtime's own function/line table, with inline-tree expansion.
//! * [`moduledata`]: `runtime.firstmoduledata` located and validated without symbols.
//! * [`dwarf`]: struct member offsets from DWARF v4/v5 (compressed sections).
//! * [`symbols`]: addresses of runtime globals, from `.symtab` or by disassembly.
//! * [`rets`]: RET instruction sites for uretprobe-free return probes.
//! * [`offsets`]: the full set of runtime struct offsets the tracer needs, from DWARF.
//!
//! Addresses are link-time virtual addresses; for PIE binaries the tracer adds the load
//! bias. The input comes from the traced process and is treated as hostile: every read is bounds
//! checked, arithmetic is checked, loops are bounded, and allocations are capped. Malformed
//! input yields `Err`/`None`, never a panic.

pub mod binary;
pub mod dwarf;
pub mod layout;
pub mod moduledata;
pub mod offsets;
pub mod pclntab;
pub mod rets;
pub mod runtime;
pub mod scan;
pub mod symbols;
mod tables;
pub mod version;

mod disasm;
mod reader;
#[cfg(test)]
mod testutil;

pub use binary::Binary;

/// Errors from parsing a Go binary.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading the file failed.
    #[error("reading {path}: {cause}")]
    Io {
        /// The file that was read.
        path: std::path::PathBuf,
        /// The underlying error.
        cause: std::io::Error,
    },
    /// The file (or a section in it) exceeds a safety limit.
    #[error("{what} is too large ({size} bytes, limit {limit})")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// Its size.
        size: u64,
        /// The limit that was exceeded.
        limit: u64,
    },
    /// The ELF container could not be parsed.
    #[error("ELF: {0}")]
    Object(object::Error),
    /// DWARF data could not be parsed.
    #[error("DWARF: {0}")]
    Dwarf(gimli::Error),
    /// A structure in the file is inconsistent or truncated.
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// Something required is absent (e.g. a section).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The file uses a format this module does not implement.
    #[error("unsupported: {0}")]
    Unsupported(&'static str),
}

// By hand, not `#[from]`: the message says the cause, and a `source` would say it again.
impl From<object::Error> for Error {
    fn from(e: object::Error) -> Self {
        Error::Object(e)
    }
}

impl From<gimli::Error> for Error {
    fn from(e: gimli::Error) -> Self {
        Error::Dwarf(e)
    }
}

/// Result alias for this module.
pub type Result<T> = std::result::Result<T, Error>;
