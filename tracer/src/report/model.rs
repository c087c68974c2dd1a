//! The report, as written in JSON (schema `leaktracer.report/v1`, documented in
//! docs/report-schema.md) and rendered as text. Fields are only ever added, never renamed
//! or removed.

use serde::{Deserialize, Serialize};

pub const SCHEMA: &str = "leaktracer.report/v1";

/// A site's verdict, as written (`unknown` before the first one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VerdictName {
    Leak,
    Growing,
    Plateau,
    Cyclic,
    Shrinking,
    Stable,
    #[default]
    Unknown,
}

impl VerdictName {
    pub fn as_str(self) -> &'static str {
        match self {
            VerdictName::Leak => "leak",
            VerdictName::Growing => "growing",
            VerdictName::Plateau => "plateau",
            VerdictName::Cyclic => "cyclic",
            VerdictName::Shrinking => "shrinking",
            VerdictName::Stable => "stable",
            VerdictName::Unknown => "unknown",
        }
    }

    /// Leak suspects: what a text report shows first and by default.
    pub fn is_suspect(self) -> bool {
        matches!(self, VerdictName::Leak | VerdictName::Growing)
    }
}

/// What a site makes, as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KindName {
    #[default]
    Heap,
    Mmap,
    Brk,
    Goroutine,
    Defer,
    Fd,
    Goheap,
    Resident,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub schema: String,
    /// The last report of the run.
    #[serde(rename = "final")]
    pub is_final: bool,
    /// Wall-clock time of the report, RFC 3339 UTC.
    pub time: String,
    /// Seconds since tracing started.
    pub elapsed_s: f64,
    pub target: TargetInfo,
    pub process: ProcessInfo,
    pub coverage: CoverageInfo,
    /// Sites seen, and sites with memory outstanding.
    pub totals: SiteTotals,
    pub sites: Vec<SiteReport>,
    /// The files the frames' code is in: where each was mapped, and its build id.
    #[serde(default)]
    pub modules: Vec<ModuleInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleInfo {
    pub path: String,
    /// The executable mapping: runtime start and end addresses, and the file offset at
    /// the start.
    pub start: u64,
    pub end: u64,
    pub file_offset: u64,
    /// GNU build id, hex.
    pub build_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TargetInfo {
    pub pid: u32,
    pub exe: String,
    pub cmdline: Vec<String>,
    /// `native` (C, C++, Rust) or `go`.
    pub runtime: String,
    /// The Go version the program was built with (`go1.27.3`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub go_version: Option<String>,
    /// How the target ended (final reports only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<TargetEnd>,
}

/// How the target ended, or that leaktracer detached from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetEnd {
    /// `exit`, `signal`, `oom_kill` or `detached` (still running).
    pub how: String,
    /// The exit status, for `exit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<i32>,
    /// The signal, for `signal` and `oom_kill`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// Who sent the signal, when the kernel said: `pid 123 (kill)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<String>,
    /// When, RFC 3339 UTC.
    pub time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom: Option<OomInfo>,
}

/// The OOM killer's kill.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OomInfo {
    /// The cgroup whose limit was hit, if a cgroup limit applied.
    pub cgroup: Option<String>,
    pub limit_bytes: Option<u64>,
    /// RSS when killed, as the kernel reported it.
    pub rss_bytes: u64,
    /// `memcg` (a cgroup's limit) or `global` (the machine ran out).
    pub constraint: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ProcessInfo {
    /// Resident set size (the last one read, if the process is gone).
    pub rss_bytes: Option<u64>,
    /// Heap blocks outstanding, all sites.
    pub heap_live_bytes: u64,
    pub heap_live_blocks: u64,
    /// Mappings and break growth made by the program, outstanding.
    pub mapped_live_bytes: u64,
    /// Mappings and break growth the allocator made for its arenas (they back the heap
    /// blocks and are not counted again in sites).
    pub allocator_reserved_bytes: u64,
    /// Libraries mapped by the dynamic loader while traced.
    pub loader_mapped_bytes: u64,
    /// Current RSS growth (robust slope over the last third of the samples).
    #[serde(default)]
    pub rss_bytes_per_min: Option<f64>,
    /// The memory limit that applies: the cgroup's, else RAM.
    #[serde(default)]
    pub memory_limit_bytes: Option<u64>,
    #[serde(default)]
    pub memory_limit_source: Option<String>,
    /// Seconds until RSS reaches the limit at its current growth; `null` if not growing.
    #[serde(default)]
    pub limit_eta_s: Option<f64>,
    /// Open file descriptors (from `/proc` while the target lives, else as traced).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fds: Option<u64>,
    /// The target's `RLIMIT_NOFILE` (soft), and the time until it is reached at the
    /// current growth of `fds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fd_limit: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fds_per_min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fd_limit_eta_s: Option<f64>,
    /// Go: live goroutines, and the live heap after the last collection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goroutines: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub go_heap_live_bytes: Option<u64>,
    /// `--mode growth`: bytes of pages first touched since attach and still mapped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resident_growth_bytes: Option<u64>,
}

/// What the report could not see. Every field counts something that makes the figures
/// less than exact; all zero means nothing was missed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CoverageInfo {
    /// Events received and applied.
    pub events: u64,
    /// Events lost because the ring buffer was full.
    pub lost_events: u64,
    /// Stacks that could not be captured or read back.
    pub stack_errors: u64,
    /// Stacks cut short: at the depth limit, or where no unwind information went on.
    pub truncated_stacks: u64,
    /// Stacks the kernel side could not walk alone and copied to userspace (the first
    /// time a call path is seen, normally).
    #[serde(default)]
    pub stack_samples: u64,
    /// Frees of blocks never seen allocated (allocated before attach).
    pub unknown_frees: u64,
    /// munmaps of ranges never seen mapped (mapped before attach).
    pub unknown_unmaps: u64,
    /// Blocks returned at an address still live: a free was missed.
    pub address_reused: u64,
    /// Allocations lost because a kernel map, or the live table (`--max-live`), was full.
    pub dropped: u64,
    /// Records that could not be decoded.
    pub decode_errors: u64,
    /// With `--sample-bytes`: the mean number of bytes between samples. Figures are then
    /// estimates (each sampled block counts 1/p times); 0 means every allocation is
    /// traced and the figures are exact.
    #[serde(default)]
    pub sample_bytes: u64,
    /// Descriptors made at a number that was still open: a close was not seen.
    #[serde(default)]
    pub fd_reused: u64,
    /// Closes of descriptors not known to be open (failed closes, mostly).
    #[serde(default)]
    pub unknown_closes: u64,
    /// Reads of the target's memory by the Go probes that failed.
    #[serde(default)]
    pub read_errors: u64,
    /// Allocator calls whose return was never seen (longjmp out of the allocator, a
    /// thread killed inside it).
    #[serde(default)]
    pub abandoned_calls: u64,
    /// Things charged to an overflow site because the site table was full.
    #[serde(default)]
    pub sites_overflowed: u64,
    /// Frees of blocks the allocator made for itself (glibc's per-thread cache, freed
    /// at thread exit): not a miss, so not in `unknown_frees`.
    #[serde(default)]
    pub allocator_internal_frees: u64,
    /// Goroutines that ended without being seen created (they predate attach and the
    /// scan missed them, or their creation was lost).
    #[serde(default)]
    pub unknown_goroutine_exits: u64,
    /// Go: the program's heap profiling rate (`runtime.MemProfileRate`); 0 means the
    /// runtime samples nothing and Go heap sites cannot be seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub go_mem_profile_rate: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SiteTotals {
    pub sites: u64,
    pub live_sites: u64,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SiteReport {
    /// Stable within the run.
    pub id: String,
    /// `heap`, `mmap`, `brk`, `goroutine`, `defer`, `fd`, `goheap` or `resident`.
    pub kind: KindName,
    /// The function that was called: malloc, calloc, ..., mmap, brk.
    pub allocator: String,
    /// For mmap sites: `anonymous` or `file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backing: Option<String>,
    /// `leak`, `growing`, `plateau`, `cyclic`, `shrinking`, `stable` (or `unknown`
    /// before the first verdict).
    pub verdict: VerdictName,
    /// How sure the verdict is, 0 to 1.
    #[serde(default)]
    pub confidence: f64,
    /// Current growth of live blocks and bytes (robust slope over the last third of the
    /// window), per minute.
    #[serde(default)]
    pub count_per_min: f64,
    #[serde(default)]
    pub bytes_per_min: f64,
    /// Seconds after the start of tracing at which the site was first called `leak`.
    #[serde(default)]
    pub first_leak_s: Option<f64>,
    pub live_count: u64,
    pub live_bytes: u64,
    pub allocs: u64,
    /// Bytes allocated since tracing started.
    #[serde(default)]
    pub alloc_bytes: u64,
    pub frees: u64,
    pub age_s: AgeReport,
    /// The stack was cut at the depth limit (or could not be read).
    pub stack_truncated: bool,
    /// Innermost first, starting at the code that called the allocator.
    pub frames: Vec<FrameReport>,
    /// Why the verdict is what it is, when it is not the usual trend test:
    /// `oom_kill` (a leak decided at the OOM kill, from fewer samples).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Descriptor sites: what the live descriptors are (`socket`, `pipe`, `file`,
    /// `anon_inode:[eventfd]`, ...) and how many of each, with a few paths.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub descriptors: Option<Descriptors>,
    /// Goroutine sites: what they wait on, for how long, and which can never wake.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goroutines: Option<GoroutineDetails>,
    /// Defer sites: the largest pile in one frame, the oldest waiting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defers: Option<DeferDetails>,
    /// Go heap sites: collections their live samples have survived (old survivors are
    /// what a leak keeps; a cache that turns over has young ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gc_cycles: Option<GcCycles>,
    /// Sites that hold what this one's deferred calls will release (a defer pile's
    /// open files), by id.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub related_sites: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Descriptors {
    pub kinds: std::collections::BTreeMap<String, u64>,
    /// Up to five of the files.
    pub examples: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct GoroutineDetails {
    /// The goroutine's function (`main.fetch.func1`).
    pub start_function: Option<String>,
    /// Parked goroutines by wait reason (`chan send`, `select`, ...).
    pub wait_reasons: std::collections::BTreeMap<String, u64>,
    /// How long the parked ones have been parked, seconds.
    pub parked_s: ParkedTimes,
    /// Goroutines that can never wake (nil channel, empty select), or that the runtime
    /// itself marked leaked (Go 1.26+ `_Gleaked`).
    pub blocked_forever: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct ParkedTimes {
    pub p50: f64,
    pub max: f64,
}

/// Go heap sites: how many collections their live samples have survived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct GcCycles {
    pub p50: u64,
    pub max: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct DeferDetails {
    /// The most deferred calls from this statement waiting in one goroutine.
    pub largest_pile: u64,
    /// How long the oldest has waited, seconds.
    pub oldest_s: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct AgeReport {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrameReport {
    pub function: Option<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
    pub module: Option<String>,
    /// The offset in the module's file, hex: with `module`, what names a frame that has
    /// no symbol (`redis-server+0x7bb30`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<String>,
    /// Runtime address (a return address for all but inlined frames), hex.
    pub address: String,
}

impl FrameReport {
    /// What to call the frame: its function, else `module+offset` (the file offset,
    /// as `addr2line -e module` takes it), else its address.
    pub fn name(&self) -> String {
        if let Some(function) = &self.function {
            return function.clone();
        }
        let module = self.module.as_deref().map(|m| m.rsplit('/').next().unwrap_or(m));
        match (module, &self.offset) {
            (Some(module), Some(offset)) => format!("{module}+{offset}"),
            _ => self.address.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReadError {
    #[error("holds no leaktracer JSON report")]
    NoReport,
    #[error("is a {0} report; this leaktracer reads {SCHEMA}")]
    Schema(String),
}

/// The last complete report of an NDJSON file's text. A last line cut short (a session
/// killed while writing) is skipped, with a note on stderr.
pub fn last_report(text: &str) -> Result<Report, ReadError> {
    let mut lines = text.lines().rev().filter(|l| !l.trim().is_empty()).peekable();
    let mut skipped = false;
    while let Some(line) = lines.next() {
        let Ok(value) = serde_json::from_str::<serde_json::Value>(line) else {
            // Only the last line may be cut short; anything else is not ours.
            if skipped || lines.peek().is_none() {
                return Err(ReadError::NoReport);
            }
            eprintln!("leaktracer: skipped a partial last line (the session was cut short while writing)");
            skipped = true;
            continue;
        };
        let schema = value.get("schema").and_then(|s| s.as_str()).unwrap_or_default().to_string();
        if schema != SCHEMA {
            return Err(if schema.is_empty() { ReadError::NoReport } else { ReadError::Schema(schema) });
        }
        return serde_json::from_value(value).map_err(|_| ReadError::NoReport);
    }
    Err(ReadError::NoReport)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::folded::tests::report;

    fn ndjson(n: usize) -> String {
        (0..n)
            .map(|i| {
                let mut r = report(Vec::new());
                r.elapsed_s = i as f64;
                serde_json::to_string(&r).unwrap() + "\n"
            })
            .collect()
    }

    #[test]
    fn a_cut_last_line_is_skipped_for_the_one_before() {
        let text = ndjson(3);
        let cut = &text[..text.len() - 40];
        assert_eq!(last_report(cut).unwrap().elapsed_s, 1.0);
        assert_eq!(last_report(&text).unwrap().elapsed_s, 2.0);
        assert_eq!(last_report(&text[..20]), Err(ReadError::NoReport), "a cut first line alone");
        assert_eq!(last_report("not json\n"), Err(ReadError::NoReport));
        let other = r#"{"schema":"other/v9"}"#;
        assert_eq!(last_report(other), Err(ReadError::Schema("other/v9".into())));
    }

    proptest::proptest! {
        /// Fuzzing `render`'s input: a saved file cut anywhere, or with bytes changed,
        /// gives the last complete report or a refusal, never a panic.
        #[test]
        fn any_cut_or_damage_is_handled(
            cut in 0usize..4000,
            edits in proptest::collection::vec((0usize..4000, 0u8..128), 0..4),
        ) {
            let text = ndjson(2);
            let mut bytes = text.as_bytes().to_vec();
            for (at, b) in edits {
                let at = at % bytes.len();
                bytes[at] = b;
            }
            bytes.truncate(cut.min(bytes.len()));
            let damaged = String::from_utf8_lossy(&bytes);
            if let Ok(r) = last_report(&damaged) {
                proptest::prop_assert_eq!(r.schema.as_str(), SCHEMA);
            }
        }
    }
}
