//! leaktracer: an eBPF tracer of things that are never released: heap blocks,
//! mappings, file descriptors, goroutines, deferred calls.
//!
//! The data path, one module per step, each importing only the ones before it (checked
//! by the `layers` test):
//!
//! 1. [`errors`], [`config`], [`clock`]: how errors read; the engine's own option
//!    types; the timestamps' clock.
//! 2. [`target`]: the traced process (`/proc`, launching it, reading its files safely).
//! 3. [`stacks`]: the target's code and stacks (modules, ELF, CFI, unwinding, the stack
//!    table).
//! 4. [`probe`]: the kernel side seen from userspace (load, attach, counters).
//! 5. [`event`]: ring-buffer records decoded into typed events.
//! 6. [`aggregate`]: the live tables, one module per kind, and per-site figures.
//! 7. [`identify`]: what one site is (symbolized, grouped).
//! 8. [`verdict`]: growth over time, per site.
//! 9. [`report`]: reports and where they go.
//! 10. [`session`]: runs the steps; [`cli`] turns a command line into them.
//!
//! Adding a kind of thing to track: a record in `tracer-ebpf/src/record.rs`, a probe
//! module in `tracer-ebpf/src/probes/`, a decoder arm in `event`, and one module under
//! `aggregate` that owns that kind's live table (README, "Architecture").

pub mod aggregate;
pub mod cli;
pub mod clock;
pub mod config;
pub mod errors;
pub mod event;
pub mod identify;
pub mod probe;
pub mod report;
pub mod session;
pub mod stacks;
pub mod target;
pub mod verdict;

#[cfg(test)]
mod layers;

use anyhow::Context as _;

use crate::{
    cli::{Cli, Command, TraceArgs},
    config::{Format, SessionOptions},
    probe::points,
    session::Prepared,
    target::{Target, launch, privileges, proc},
};

/// Runs the command line; returns the exit status.
pub fn run(cli: Cli) -> anyhow::Result<i32> {
    // Before any thread exists: `run` forks.
    let (prepared, options) = match cli.command {
        Command::Render { file, format, output, kind, export } => {
            return render(&file, format, output.as_deref(), export.options(&kind));
        }
        Command::Attach { pid, options } => {
            let options = begin(&options, false)?;
            (prepare_attach(pid, &options)?, options)
        }
        Command::Run { options, keep_running, command } => {
            let options = begin(&options, keep_running)?;
            (prepare_run(&command, &options)?, options)
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(session::run(prepared, &options))
}

/// A running process, ready for probes: what it is, its allocator, its Go runtime.
fn prepare_attach(pid: u32, options: &SessionOptions) -> anyhow::Result<Prepared> {
    let (target, pidfd) = Target::inspect(pid)?;
    let maps =
        target::maps::read(pid).with_context(|| format!("cannot read the memory maps of process {pid}"))?;
    let candidates = points::candidates_from_maps(pid, &maps, &target.exe);
    let points = points::choose(&candidates, options.probes.placement);
    let exe = target.exe.as_path();
    let exe_map = maps.iter().filter(|m| m.file_path().as_deref() == Some(exe)).min_by_key(|m| m.offset);
    let go = match exe_map {
        Some(map) => probe::golang::inspect_running(pid, exe, map)?,
        None => None,
    };
    Ok(Prepared::Running { target, pidfd, points, go })
}

/// A command started stopped, ready for probes.
fn prepare_run(command: &[String], options: &SessionOptions) -> anyhow::Result<Prepared> {
    let child = launch::spawn_stopped(command)?;
    let points = points::choose(&points::candidates_for_launch(&child.exe), options.probes.placement);
    let go = probe::golang::inspect_launch(&child.exe)?;
    let target = Target { pid: child.pid, exe: child.exe.clone(), cmdline: child.argv.clone() };
    Ok(Prepared::Launched { target, points, child, go })
}

/// What tracing needs before anything else: logging, sensible outputs, the privileges
/// to trace, and enough descriptors.
fn begin(args: &TraceArgs, keep_running: bool) -> anyhow::Result<SessionOptions> {
    init_logging(args.verbose);
    let options = args.session_options(keep_running);
    report::outputs::check(&options.formats, options.output.as_deref(), options.output_dir.as_deref())?;
    privileges::check()?;
    proc::raise_fd_limit();
    Ok(options)
}

/// `leaktracer render`: the last complete report of a saved NDJSON file, in another
/// format.
fn render(
    file: &std::path::Path,
    format: Format,
    output: Option<&std::path::Path>,
    export: config::ExportOptions,
) -> anyhow::Result<i32> {
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let report = report::model::last_report(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let places = report::outputs::Places {
        output,
        output_dir: None,
        pid: report.target.pid,
        started: std::time::SystemTime::now(),
    };
    let outputs = report::outputs::Outputs::open(&[format], &places, export)?;
    let (_, failed) = outputs.finish(&report);
    if let Some(e) = failed.into_iter().next() {
        return Err(e.into());
    }
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
