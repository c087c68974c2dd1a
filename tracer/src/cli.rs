//! Command-line interface: clap types only. Doc comments are the `--help` text.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Find the call sites whose outstanding memory only grows, in a live process.
///
/// leaktracer attaches eBPF probes to the allocator functions the process really uses
/// (malloc, calloc, realloc, free, ... from the library it has mapped) and to the
/// mmap/munmap/mremap/brk syscalls, keeps every live allocation with the stack that made
/// it, and reports per call site what is still outstanding. It needs root (CAP_BPF,
/// CAP_PERFMON, CAP_SYS_PTRACE).
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
        options: TraceOptions,
    },
    /// Start a command with the probes already attached, so even the first allocation
    /// of `main` is seen. Its stdin, stdout and stderr pass through; leaktracer exits
    /// with the command's exit status.
    Run {
        #[command(flatten)]
        options: TraceOptions,
        /// The command and its arguments.
        #[arg(required = true, last = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// Render a saved JSON report (the last one of an NDJSON file: the final report) in
    /// another format, later and without privileges.
    Render {
        /// An NDJSON file written with --format json.
        file: PathBuf,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Write to this file instead of standard output.
        #[arg(long, value_name = "PATH")]
        output: Option<PathBuf>,
        #[command(flatten)]
        export: ExportOptions,
    },
}

/// How reports are drawn.
#[derive(Debug, Clone, Copy, Args)]
pub struct ExportOptions {
    /// Text reports: show every site, not only the leak suspects (leak, growing).
    #[arg(long)]
    pub all: bool,

    /// Folded stacks and SVG: weigh stacks by live bytes or by live blocks.
    #[arg(long, value_enum, default_value_t = Weight::Bytes)]
    pub weight: Weight,

    /// Folded stacks, SVG and pprof: only the sites judged `leak`.
    #[arg(long)]
    pub only_leaks: bool,
}

#[derive(Debug, Clone, Args)]
pub struct TraceOptions {
    /// Stop tracing after this long (e.g. 30s, 5m). Default: until Ctrl-C, SIGTERM or
    /// the target exits.
    #[arg(long, value_parser = parse_duration, value_name = "DUR")]
    pub duration: Option<Duration>,

    /// Time between periodic reports. A final report is always written when tracing
    /// ends.
    #[arg(long, value_parser = parse_duration, default_value = "10s", value_name = "DUR")]
    pub interval: Duration,

    /// Report formats, comma-separated: text; json (one report object per line, schema
    /// leaktracer.report/v1, docs/report-schema.md); folded (stacks for flamegraph.pl and
    /// inferno); svg (a flame graph); pprof (gzipped profile.proto for go tool pprof,
    /// Pyroscope, Parca). Text and JSON get a report every interval, the others the final
    /// one. Several formats go to one file each (see --output-dir).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "text")]
    pub format: Vec<Format>,

    /// Write the (single) format to this file instead of standard output.
    #[arg(long, value_name = "PATH")]
    pub output: Option<PathBuf>,

    /// Write each format to its own file in DIR, named leaktracer-<pid>-<UTC start
    /// time>.<txt|ndjson|folded|svg|pb.gz>. Text and NDJSON grow report by report;
    /// folded, SVG and pprof appear complete or not at all. Several formats without
    /// --output-dir go to the current directory.
    #[arg(long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,

    #[command(flatten)]
    pub export: ExportOptions,

    /// Sites per report, largest outstanding bytes first; 0 shows every site, including
    /// those with nothing outstanding.
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub top: usize,

    /// Exit with status 3 when the final report has a site judged `leak`, so a test
    /// suite or a scheduled job can gate on it.
    #[arg(long)]
    pub fail_on_leak: bool,

    /// Leave out live allocations younger than this (e.g. 5s): short-lived memory is not
    /// a leak.
    #[arg(long, value_parser = parse_duration, default_value = "0s", value_name = "DUR")]
    pub min_age: Duration,

    /// Ring buffer size in MiB (kernel to userspace). Events that do not fit are
    /// counted as lost in every report.
    #[arg(long, default_value_t = 16, value_name = "MIB", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub ring_mib: u32,

    /// How stacks are walked: with the target's unwind tables (.eh_frame), right whether
    /// or not the code keeps frame pointers; or by frame pointers only, cheaper but wrong
    /// through code built without them (most distribution libraries).
    #[arg(long, value_enum, default_value_t = Unwind::EhFrame)]
    pub unwind: Unwind,

    /// Track at most this many live heap blocks; beyond, allocations are counted as
    /// dropped (coverage) instead of growing leaktracer's memory (about 50 bytes each).
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
    #[arg(long, value_enum, default_value_t = Placement::Fast)]
    pub probe_placement: Placement,

    /// Benchmarks: probes that do nothing (the cost of the probes themselves).
    #[arg(long, hide = true)]
    pub bench_floor: bool,

    /// Log what leaktracer does (probe points, refreshes) on stderr; twice for more.
    #[arg(long, short, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
    Folded,
    Svg,
    Pprof,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Placement {
    Fast,
    Entry,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Weight {
    Bytes,
    Count,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Unwind {
    EhFrame,
    FramePointers,
    /// No stacks: every allocation of a function lands in one site. For measuring what
    /// stacks cost.
    #[value(hide = true)]
    None,
    /// Copy the stack with every allocation and unwind it in userspace. For measuring the
    /// design not taken.
    #[value(hide = true)]
    Copy,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e} (expected e.g. 500ms, 30s, 5m, 1h)"))
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
        let Command::Run { options, command } = cli.command else { panic!("not run") };
        assert_eq!(options.top, 3);
        assert_eq!(command, ["ls", "-l"]);
    }

    #[test]
    fn formats_are_a_comma_separated_list() {
        let cli = Cli::try_parse_from(["leaktracer", "attach", "--pid", "1", "--format", "json,svg,pprof"])
            .unwrap();
        let Command::Attach { options, .. } = cli.command else { panic!("not attach") };
        assert_eq!(options.format, [Format::Json, Format::Svg, Format::Pprof]);
        assert!(Cli::try_parse_from(["leaktracer", "attach", "--pid", "1", "--format", "xml"]).is_err());
    }

    #[test]
    fn durations_parse_and_bad_ones_are_rejected() {
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert!(parse_duration("soon").is_err());
    }
}
