//! leaktracer: an eBPF tracer of allocations that are never released.
//!
//! The data path, one module each: [`probe`] (eBPF programs in, counters out) →
//! [`event`] (ring-buffer records to typed events) → [`aggregate`] (live tables and
//! per-site figures) → [`verdict`] (growth over time) → [`report`] (symbolized text and
//! JSON). [`session`] runs them;
//! [`target`] knows the traced process; [`unwind`] turns stack copies into stacks and
//! teaches the kernel side how; [`symbolize`] turns addresses into names.

pub mod aggregate;
pub mod cli;
pub mod event;
pub mod probe;
pub mod report;
pub mod session;
pub mod symbolize;
pub mod target;
pub mod unwind;
pub mod verdict;

use anyhow::Context as _;

use crate::{
    cli::{Cli, Command},
    probe::allocator,
    session::Prepared,
    target::{Target, launch, privileges},
};

/// Runs the command line; returns the exit status.
pub fn run(cli: Cli) -> anyhow::Result<i32> {
    // Before any thread exists: `run` forks.
    let (options, prepared) = match cli.command {
        Command::Render { file, format, output, export } => {
            return render(&file, format, output.as_deref(), export);
        }
        Command::Attach { pid, options } => {
            begin(&options)?;
            let target = Target::inspect(pid)?;
            let maps = target::maps::read(pid)
                .with_context(|| format!("cannot read the memory maps of process {pid}"))?;
            let fast = options.probe_placement == cli::Placement::Fast;
            let points = allocator::choose(&allocator::candidates_from_maps(pid, &maps, &target.exe), fast);
            (options, Prepared::Running { target, points })
        }
        Command::Run { options, command } => {
            begin(&options)?;
            let child = launch::spawn_stopped(&command)?;
            let fast = options.probe_placement == cli::Placement::Fast;
            let points = allocator::choose(&allocator::candidates_for_launch(&child.exe), fast);
            let target = Target { pid: child.pid, exe: child.exe.clone(), cmdline: child.argv.clone() };
            (options, Prepared::Launched { target, points, child })
        }
    };

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(session::run(prepared, &options))
}

/// What tracing needs before anything else: logging, sensible outputs, and the
/// privileges to trace.
fn begin(options: &cli::TraceOptions) -> anyhow::Result<()> {
    init_logging(options.verbose);
    report::outputs::check(&options.format, options.output.as_deref(), options.output_dir.as_deref())?;
    privileges::check()?;
    Ok(())
}

/// `leaktracer render`: the last report of a saved NDJSON file, in another format.
fn render(
    file: &std::path::Path,
    format: cli::Format,
    output: Option<&std::path::Path>,
    export: cli::ExportOptions,
) -> anyhow::Result<i32> {
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let line = text.lines().rev().find(|l| !l.trim().is_empty());
    let report: report::Report = line
        .and_then(|l| serde_json::from_str(l).ok())
        .with_context(|| format!("{} holds no leaktracer JSON report", file.display()))?;
    anyhow::ensure!(
        report.schema == report::SCHEMA,
        "{} is a {} report; this leaktracer reads {}",
        file.display(),
        report.schema,
        report::SCHEMA
    );
    let started = std::time::SystemTime::now();
    let outputs =
        report::outputs::Outputs::open(&[format], output, None, report.target.pid, started, export)?;
    outputs.finish(&report)?;
    Ok(0)
}

fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format_timestamp(None)
        .try_init();
}
