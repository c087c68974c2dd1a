//! Command-line interface: clap types only, and their conversion into the engine's
//! options (`config`). Doc comments are the `--help` text.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum, builder::PossibleValue};

use crate::config::{
    ExportOptions, Format, Kind, Kinds, Links, MinGrowth, Mode, Placement, ProbeOptions, SessionOptions,
    UnwindMode, Weight,
};

/// Find the call sites whose outstanding memory, goroutines, defers or descriptors only
/// grow, in a live process.
///
/// leaktracer attaches eBPF probes to the allocator functions the process really uses
/// (malloc, calloc, realloc, free, ... from the library it has mapped), to the
/// mmap/munmap/mremap/brk syscalls and the syscalls that open and close descriptors, and
/// in Go programs to the runtime (goroutines, defers, the heap profiler). It keeps every
/// live thing with the stack that made it and reports per call site what is still
/// outstanding and whether it keeps growing. It needs root (CAP_BPF, CAP_PERFMON,
/// CAP_SYS_PTRACE).
#[derive(Debug, Parser)]
#[command(name = "leaktracer", version, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Attach to a running process without restarting it.
    Attach {
        /// Process to trace (all of its threads are traced).
        #[arg(long, short)]
        pid: u32,
        #[command(flatten)]
        options: TraceArgs,
    },
    /// Start a command with the probes already attached, so even the first allocation
    /// of `main` is seen. Its stdin, stdout and stderr pass through; leaktracer exits
    /// with the command's exit status. When tracing stops before the command ends
    /// (--duration), the command is ended as `timeout` would (SIGTERM, then SIGKILL
    /// after 5 s) unless --keep-running.
    Run {
        #[command(flatten)]
        options: TraceArgs,
        /// When tracing stops before the command ends, detach and leave it running.
        #[arg(long)]
        keep_running: bool,
        /// The command and its arguments.
        #[arg(required = true, last = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// Render a saved JSON report (the last complete one of an NDJSON file: the final
    /// report) in another format, later and without privileges.
    Render {
        /// An NDJSON file written with --format json.
        file: PathBuf,
        #[arg(long, default_value = "text")]
        format: Format,
        /// Write to this file instead of standard output.
        #[arg(long, value_name = "PATH")]
        output: Option<PathBuf>,
        /// Folded stacks and SVG: show these kinds too, beside memory (goroutine, fd,
        /// defer).
        #[arg(long, value_delimiter = ',', value_name = "KINDS")]
        kind: Vec<Kind>,
        #[command(flatten)]
        export: ExportArgs,
    },
}

/// How reports are drawn.
#[derive(Debug, Clone, Copy, Args)]
pub struct ExportArgs {
    /// Text reports: show every site, not only the leak suspects (leak, growing).
    #[arg(long)]
    pub all: bool,

    /// Folded stacks and SVG: weigh stacks by live bytes or by live count.
    #[arg(long, default_value = "bytes")]
    pub weight: Weight,

    /// Folded stacks, SVG and pprof: only the sites judged `leak`.
    #[arg(long)]
    pub only_leaks: bool,
}

impl ExportArgs {
    /// The engine's options; `kinds` named with --kind join memory in flame graphs.
    pub fn options(self, kinds: &[Kind]) -> ExportOptions {
        ExportOptions {
            all: self.all,
            weight: self.weight,
            only_leaks: self.only_leaks,
            also: kinds.iter().copied().collect(),
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct TraceArgs {
    /// Stop tracing after this long (e.g. 30s, 5m). Default: until Ctrl-C, SIGTERM or
    /// the target exits (however it exits: a final report is written, also when the
    /// OOM killer ends it).
    #[arg(long, value_parser = parse_session_duration, value_name = "DUR")]
    pub duration: Option<Duration>,

    /// Time between periodic reports. A final report is always written when tracing
    /// ends.
    #[arg(long, value_parser = parse_interval, default_value = "10s", value_name = "DUR")]
    pub interval: Duration,

    /// Report formats, comma-separated: text; json (one report object per line, schema
    /// leaktracer.report/v1, docs/report-schema.md); folded (stacks for flamegraph.pl and
    /// inferno); svg (a flame graph); pprof (gzipped profile.proto for go tool pprof,
    /// Pyroscope, Parca). Text and JSON get a report every interval, the others the final
    /// one. Several formats go to one file each (see --output-dir).
    #[arg(long, value_delimiter = ',', default_value = "text")]
    pub format: Vec<Format>,

    /// Write the (single) format to this file instead of standard output.
    #[arg(long, value_name = "PATH")]
    pub output: Option<PathBuf>,

    /// Write each format to its own new file in DIR, named leaktracer-<pid>-<UTC start
    /// time>.<txt|ndjson|folded|svg|pb.gz> (a name already taken gets a number). Text
    /// and NDJSON grow report by report; folded, SVG and pprof appear complete or not at
    /// all. Several formats without --output-dir go to the current directory.
    #[arg(long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,

    #[command(flatten)]
    pub export: ExportArgs,

    /// What to trace, comma-separated: heap (malloc family), mmap (mappings and the
    /// break), fd (file descriptors), goroutine, defer, goheap (Go's heap profiler).
    /// Default: all that apply to the target.
    #[arg(long, value_delimiter = ',', value_name = "KINDS")]
    pub kind: Vec<Kind>,

    /// full: every allocator call (exact live blocks). growth: only first touches of new
    /// pages (near-free, RSS-level: the code that made resident memory grow); the
    /// allocator is not probed at all, so `heap` is left out of --kind.
    #[arg(long, default_value = "full")]
    pub mode: Mode,

    /// Sites per report, leak suspects first, then largest; 0 shows every site,
    /// including those with nothing outstanding.
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub top: usize,

    /// Exit with status 3 when the final report has a site judged `leak`, so a test
    /// suite or a scheduled job can gate on it.
    #[arg(long)]
    pub fail_on_leak: bool,

    /// Leave out live things younger than this (e.g. 5s): short-lived memory is not a
    /// leak.
    #[arg(long, value_parser = parse_duration, default_value = "0s", value_name = "DUR")]
    pub min_age: Duration,

    /// Growth below this is never reported as growing or leaking: N things per minute
    /// (e.g. 10), or bytes per minute with a unit (e.g. 64KiB). Default: any growth that
    /// is clear and large next to the site's own size.
    #[arg(long, value_parser = parse_min_growth, value_name = "RATE")]
    pub min_growth: Option<MinGrowth>,

    /// Ring buffer size in MiB (kernel to userspace). Events that do not fit are
    /// counted as lost in every report.
    #[arg(long, default_value_t = 8, value_name = "MIB", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub ring_mib: u32,

    /// How stacks are walked: with the target's unwind tables (.eh_frame), right whether
    /// or not the code keeps frame pointers; or by frame pointers only, cheaper but wrong
    /// through code built without them (most distribution libraries).
    #[arg(long, default_value = "eh-frame")]
    pub unwind: UnwindMode,

    /// Track at most this many live heap blocks; beyond, allocations are counted as
    /// dropped (coverage) instead of growing leaktracer's memory (about 55 bytes each).
    #[arg(long, default_value_t = 20_000_000, value_name = "N")]
    pub max_live: usize,

    /// Sample allocations by bytes: on average one sampled byte every N bytes, each
    /// allocation with probability 1 - exp(-size/N), figures scaled back up (unbiased
    /// estimates). Frees of unsampled blocks are dropped in the kernel. For production,
    /// e.g. 524288 (Go's and jemalloc's default); 0 traces every allocation.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub sample_bytes: u64,

    /// Where uprobes go: `fast` puts each past leading instructions the kernel would
    /// single-step (glibc's free starts with one), when that changes nothing the probe
    /// sees; `entry` on function entries.
    #[arg(long, default_value = "fast")]
    pub probe_placement: Placement,

    /// How uprobes are attached: auto (uprobe session and multi-uprobe links where the
    /// kernel has them, Linux 6.13 and 6.6+), multi (multi-uprobe links, no sessions) or
    /// classic (one link per probe). Default: $LEAKTRACER_LINKS (which the tests set to
    /// cover the fallbacks), else auto.
    #[arg(long, hide = true)]
    pub links: Option<Links>,

    /// Benchmarks: probes that do nothing (the cost of the probes themselves).
    #[arg(long, hide = true)]
    pub bench_floor: bool,

    /// Log what leaktracer does (probe points, kernel memory, refreshes) on stderr;
    /// twice for more.
    #[arg(long, short, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

impl TraceArgs {
    /// The engine's options; `keep_running` only means something for `run`.
    pub fn session_options(&self, keep_running: bool) -> SessionOptions {
        let mut kinds: Kinds =
            if self.kind.is_empty() { Kinds::all() } else { self.kind.iter().copied().collect() };
        if self.mode == Mode::Growth {
            // Growth mode follows resident pages instead of allocator calls: it costs
            // nothing per allocation because nothing probes the allocator.
            kinds.remove(Kind::Heap);
        }
        SessionOptions {
            duration: self.duration,
            interval: self.interval,
            formats: self.format.clone(),
            output: self.output.clone(),
            output_dir: self.output_dir.clone(),
            export: self.export.options(&self.kind),
            top: self.top,
            fail_on_leak: self.fail_on_leak,
            min_age: self.min_age,
            max_live: self.max_live,
            min_growth: self.min_growth.unwrap_or_default(),
            keep_running,
            probes: ProbeOptions {
                ring_bytes: self.ring_mib << 20,
                unwind: self.unwind,
                sample_bytes: self.sample_bytes,
                placement: self.probe_placement,
                floor: self.bench_floor,
                kinds,
                mode: self.mode,
                links: self.links.or_else(links_from_env).unwrap_or(Links::Auto),
                max_live: u32::try_from(self.max_live).unwrap_or(u32::MAX),
            },
        }
    }
}

/// `--links` from $LEAKTRACER_LINKS, when it names one.
fn links_from_env() -> Option<Links> {
    let value = std::env::var("LEAKTRACER_LINKS").ok()?;
    let links = Links::from_str(&value, true).ok();
    if links.is_none() {
        eprintln!("leaktracer: LEAKTRACER_LINKS={value} is not auto, multi or classic; ignored");
    }
    links
}

/// `ValueEnum` for the engine's enums, naming each value once here.
macro_rules! value_enum {
    ($ty:ty: $($variant:expr => $name:literal $(, hidden $hidden:literal)?);* $(;)?) => {
        impl ValueEnum for $ty {
            fn value_variants<'a>() -> &'a [Self] {
                &[$($variant),*]
            }
            fn to_possible_value(&self) -> Option<PossibleValue> {
                match *self {
                    $(v if v == $variant => Some(PossibleValue::new($name)$(.hide($hidden))?),)*
                    _ => None,
                }
            }
        }
    };
}

value_enum!(Format: Format::Text => "text"; Format::Json => "json"; Format::Folded => "folded"; Format::Svg => "svg"; Format::Pprof => "pprof");
value_enum!(Weight: Weight::Bytes => "bytes"; Weight::Count => "count");
value_enum!(Placement: Placement::Fast => "fast"; Placement::Entry => "entry");
value_enum!(Mode: Mode::Full => "full"; Mode::Growth => "growth");
value_enum!(Links: Links::Auto => "auto"; Links::Multi => "multi"; Links::Classic => "classic");
value_enum!(UnwindMode:
    UnwindMode::EhFrame => "eh-frame";
    UnwindMode::FramePointers => "frame-pointers";
    UnwindMode::None => "none", hidden true;
    UnwindMode::Copy => "copy", hidden true);
value_enum!(Kind:
    Kind::Heap => "heap"; Kind::Mmap => "mmap"; Kind::Fd => "fd"; Kind::Goroutine => "goroutine";
    Kind::Defer => "defer"; Kind::Goheap => "goheap");

/// Durations longer than this are refused (a deadline must fit the clock).
const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

fn parse_duration(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text).map_err(|e| format!("{e} (expected e.g. 500ms, 30s, 5m, 1h)"))?;
    if d > MAX_DURATION {
        return Err("longer than 100 years; leave --duration out to trace until the target exits".into());
    }
    Ok(d)
}

fn parse_session_duration(text: &str) -> Result<Duration, String> {
    let d = parse_duration(text)?;
    if d.is_zero() {
        return Err("must be more than 0s; leave --duration out to trace until the target exits".into());
    }
    Ok(d)
}

fn parse_interval(text: &str) -> Result<Duration, String> {
    let d = parse_duration(text)?;
    if d < Duration::from_millis(10) {
        return Err("must be at least 10ms".into());
    }
    Ok(d)
}

/// `10` (things per minute) or `64KiB`, `1MiB`, `4096B` (bytes per minute).
fn parse_min_growth(text: &str) -> Result<MinGrowth, String> {
    let text = text.trim().trim_end_matches("/min");
    let units = [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10), ("B", 1)];
    for (unit, scale) in units {
        if let Some(n) = text.strip_suffix(unit) {
            let n: f64 = n.trim().parse().map_err(|_| format!("not a number of {unit}: {text}"))?;
            return Ok(MinGrowth { count_per_min: 0.0, bytes_per_min: n * scale as f64 });
        }
    }
    let n: f64 = text.parse().map_err(|_| format!("expected e.g. 10 (per minute) or 64KiB: {text}"))?;
    Ok(MinGrowth { count_per_min: n, bytes_per_min: 0.0 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_takes_the_command_after_double_dash() {
        let cli = Cli::try_parse_from(["leaktracer", "run", "--top", "3", "--", "ls", "-l"]).unwrap();
        let Command::Run { options, command, keep_running } = cli.command else { panic!("not run") };
        assert_eq!(options.top, 3);
        assert!(!keep_running);
        assert_eq!(command, ["ls", "-l"]);
    }

    #[test]
    fn formats_and_kinds_are_comma_separated_lists() {
        let cli = Cli::try_parse_from([
            "leaktracer",
            "attach",
            "--pid",
            "1",
            "--format",
            "json,svg,pprof",
            "--kind",
            "heap,fd",
        ])
        .unwrap();
        let Command::Attach { options, .. } = cli.command else { panic!("not attach") };
        assert_eq!(options.format, [Format::Json, Format::Svg, Format::Pprof]);
        let kinds = options.session_options(false).probes.kinds;
        assert!(kinds.contains(Kind::Heap) && kinds.contains(Kind::Fd) && !kinds.contains(Kind::Goroutine));
        assert!(Cli::try_parse_from(["leaktracer", "attach", "--pid", "1", "--format", "xml"]).is_err());
    }

    #[test]
    fn durations_parse_and_bad_ones_are_rejected() {
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("500000000000y").is_err());
        assert!(parse_interval("0s").is_err());
        for bad in [["--interval", "0s"], ["--duration", "500000000000y"]] {
            let args = ["leaktracer", "attach", "--pid", "1", bad[0], bad[1]];
            let err = Cli::try_parse_from(args).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{err}");
        }
    }

    #[test]
    fn min_growth_takes_counts_or_bytes() {
        assert_eq!(parse_min_growth("10").unwrap(), MinGrowth { count_per_min: 10.0, bytes_per_min: 0.0 });
        assert_eq!(
            parse_min_growth("64KiB").unwrap(),
            MinGrowth { count_per_min: 0.0, bytes_per_min: 65536.0 }
        );
        assert_eq!(parse_min_growth("1MiB/min").unwrap().bytes_per_min, 1048576.0);
        assert!(parse_min_growth("lots").is_err());
    }
}
