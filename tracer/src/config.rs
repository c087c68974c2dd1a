//! What a session is asked to do, in the engine's own types. The command line
//! (`cli.rs`) is one way to fill these; nothing below the session knows about it.

use std::{path::PathBuf, time::Duration};

/// Report formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Text,
    Json,
    Folded,
    Svg,
    Pprof,
}

impl Format {
    pub const ALL: [Format; 5] = [Format::Text, Format::Json, Format::Folded, Format::Svg, Format::Pprof];

    pub fn name(self) -> &'static str {
        match self {
            Format::Text => "text",
            Format::Json => "json",
            Format::Folded => "folded",
            Format::Svg => "svg",
            Format::Pprof => "pprof",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Format::Text => "txt",
            Format::Json => "ndjson",
            Format::Folded => "folded",
            Format::Svg => "svg",
            Format::Pprof => "pb.gz",
        }
    }

    /// Text and NDJSON have a report every interval; the others only the final one.
    pub fn streams(self) -> bool {
        matches!(self, Format::Text | Format::Json)
    }
}

/// What folded stacks and flame graphs weigh stacks by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weight {
    Bytes,
    Count,
}

/// How stacks are walked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnwindMode {
    /// With the target's unwind tables (learnt rules), right with or without frame
    /// pointers.
    EhFrame,
    FramePointers,
    /// No stacks (benchmarks).
    None,
    /// A stack copy with every event, unwound in userspace (benchmarks).
    Copy,
}

/// Where uprobes go on a function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Past leading instructions the kernel would single-step, when that changes
    /// nothing the probe sees.
    Fast,
    Entry,
}

/// What kind of thing a site makes; also what `--kind` selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Blocks from the malloc family.
    Heap,
    /// Mappings and break growth.
    Mmap,
    /// File descriptors.
    Fd,
    /// Goroutines (Go).
    Goroutine,
    /// Heap-allocated deferred calls (Go).
    Defer,
    /// The Go heap, through the runtime's heap profiler.
    Goheap,
    /// Resident memory growth: first touches of pages (`--mode growth`).
    Resident,
}

impl Kind {
    pub const SELECTABLE: [Kind; 6] =
        [Kind::Heap, Kind::Mmap, Kind::Fd, Kind::Goroutine, Kind::Defer, Kind::Goheap];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Heap => "heap",
            Kind::Mmap => "mmap",
            Kind::Fd => "fd",
            Kind::Goroutine => "goroutine",
            Kind::Defer => "defer",
            Kind::Goheap => "goheap",
            Kind::Resident => "resident",
        }
    }
}

/// A set of kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Kinds(u32);

impl Kinds {
    pub fn all() -> Self {
        Kind::SELECTABLE.into_iter().collect()
    }

    pub fn contains(self, kind: Kind) -> bool {
        self.0 & (1 << kind as u32) != 0
    }

    pub fn insert(&mut self, kind: Kind) {
        self.0 |= 1 << kind as u32;
    }

    pub fn remove(&mut self, kind: Kind) {
        self.0 &= !(1 << kind as u32);
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl FromIterator<Kind> for Kinds {
    fn from_iter<I: IntoIterator<Item = Kind>>(iter: I) -> Self {
        let mut kinds = Kinds::default();
        for kind in iter {
            kinds.insert(kind);
        }
        kinds
    }
}

/// What is traced: every allocator call, or only resident memory growth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Full,
    Growth,
}

/// How uprobes are attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Links {
    /// The best the kernel has: uprobe session links for the allocator and multi-uprobe
    /// links for the rest, else multi-uprobe links only, else one link per probe.
    Auto,
    /// Multi-uprobe links, no sessions (the middle fallback; tests and benchmarks force
    /// it to cover that path).
    Multi,
    /// One link per probe (the last fallback; tests force it to cover that path).
    Classic,
}

/// How reports are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportOptions {
    /// Text: every site, not only leak suspects.
    pub all: bool,
    pub weight: Weight,
    /// Folded, SVG, pprof: only sites judged `leak`.
    pub only_leaks: bool,
    /// Folded and SVG show memory; these kinds too (goroutines, descriptors, defers),
    /// when asked for by name.
    pub also: Kinds,
}

impl Default for ExportOptions {
    fn default() -> Self {
        Self { all: false, weight: Weight::Bytes, only_leaks: false, also: Kinds::default() }
    }
}

/// What the kernel side is loaded and attached with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeOptions {
    pub ring_bytes: u32,
    pub unwind: UnwindMode,
    /// Sample allocations by bytes at this mean rate; 0 traces all.
    pub sample_bytes: u64,
    pub placement: Placement,
    /// Benchmarks: programs that return at once.
    pub floor: bool,
    pub kinds: Kinds,
    pub mode: Mode,
    pub links: Links,
    /// Live sampled blocks the kernel remembers at most (with sampling).
    pub max_live: u32,
}

/// Everything a tracing session needs besides its target.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    pub duration: Option<Duration>,
    pub interval: Duration,
    pub formats: Vec<Format>,
    pub output: Option<PathBuf>,
    pub output_dir: Option<PathBuf>,
    pub export: ExportOptions,
    pub top: usize,
    pub fail_on_leak: bool,
    pub min_age: Duration,
    pub max_live: usize,
    /// Growth below this, per minute, is not reported as growing (blocks, or bytes).
    pub min_growth: MinGrowth,
    /// `run`: when tracing stops before the command ends, leave it running (detach and
    /// exit) instead of ending it.
    pub keep_running: bool,
    pub probes: ProbeOptions,
}

/// The smallest growth worth reporting, per minute (0: any statistically clear growth).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct MinGrowth {
    pub count_per_min: f64,
    pub bytes_per_min: f64,
}
