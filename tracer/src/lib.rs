//! leaktracer: an eBPF tracer of allocations that are never released.
//!
//! The data path, one module each: [`probe`] (eBPF programs in, counters out) →
//! [`event`] (ring-buffer records to typed events) → [`aggregate`] (live tables and
//! per-site figures) → [`report`] (symbolized text and JSON). [`session`] runs them;
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

use anyhow::Context as _;

use crate::{
    cli::{Cli, Command},
    probe::allocator,
    session::Prepared,
    target::{Target, launch, privileges},
};

/// Runs the command line; returns the exit status.
pub fn run(cli: Cli) -> anyhow::Result<i32> {
    let options = match &cli.command {
        Command::Attach { options, .. } | Command::Run { options, .. } => options.clone(),
    };
    init_logging(options.verbose);
    privileges::check()?;

    // Before any thread exists: `run` forks.
    let prepared = match cli.command {
        Command::Attach { pid, .. } => {
            let target = Target::inspect(pid)?;
            let maps = target::maps::read(pid)
                .with_context(|| format!("cannot read the memory maps of process {pid}"))?;
            let points = allocator::choose(&allocator::candidates_from_maps(pid, &maps, &target.exe));
            Prepared::Running { target, points }
        }
        Command::Run { command, .. } => {
            let child = launch::spawn_stopped(&command)?;
            let points = allocator::choose(&allocator::candidates_for_launch(&child.exe));
            let target = Target { pid: child.pid, exe: child.exe.clone(), cmdline: child.argv.clone() };
            Prepared::Launched { target, points, child }
        }
    };

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(session::run(prepared, &options))
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
