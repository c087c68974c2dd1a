//! Starting a session: the outputs opened (before anything is attached, so a bad one
//! costs nothing), the probes loaded and attached, the tables made, the start announced.

use anyhow::Context as _;
use tokio::time::Instant;

use super::{Session, golang::GoSession, watch::Watch};
use crate::{
    aggregate::{self, Aggregator},
    clock::monotonic_ns,
    config::{Kind, Mode, SessionOptions},
    event::reader::EventReader,
    identify::{Identities, symbolize::Symbolizer},
    probe::{self, LoadOptions, ProbePoint, Probes, golang::GoTarget, tracepoints},
    report::outputs::{Outputs, Places},
    stacks::{StackTable, modules::ModuleMap},
    target::{Target, launch::Stopped, maps, pidfd::PidFd, proc},
    verdict::Verdicts,
};

/// The process to trace, ready for probes.
pub enum Prepared {
    Running { target: Target, pidfd: PidFd, points: Vec<ProbePoint>, go: Option<GoTarget> },
    Launched { target: Target, points: Vec<ProbePoint>, child: Stopped, go: Option<GoTarget> },
}

impl<'a> Session<'a> {
    pub(super) fn start(prepared: Prepared, options: &'a SessionOptions) -> anyhow::Result<(Self, Watch)> {
        let (target, points, pidfd, child, go) = match prepared {
            Prepared::Running { target, pidfd, points, go } => (target, points, Some(pidfd), None, go),
            Prepared::Launched { target, points, child, go } => (target, points, None, Some(child), go),
        };
        let places = Places {
            output: options.output.as_deref(),
            output_dir: options.output_dir.as_deref(),
            pid: target.pid,
            started: std::time::SystemTime::now(),
        };
        let outputs = Outputs::open(&options.formats, &places, options.export)?;
        // On any error until it is supervised, dropping `child` kills the command, which
        // never ran.
        let mut probes = attach(&target, &points, go.as_ref(), options)?;
        let launched = child.is_some();
        let modules = ModuleMap::new(target.pid);
        let mut stacks = StackTable::new(Box::new(probes.take_stacks()?), modules);
        if let Some(g) = &go
            && let Some(bias) = g.bias
        {
            stacks.set_code_ranges(probe::golang::code_ranges(&g.runtime, bias));
        }
        let reader = EventReader::new(probes.take_events()?).context("cannot watch the ring buffer")?;
        let start = aggregate::Start {
            await_exec: launched,
            brk: if launched { None } else { current_break(target.pid) },
            epoch_ns: monotonic_ns(),
            max_live: options.max_live,
            pid: target.pid,
            open_fds: if launched || !options.probes.kinds.contains(Kind::Fd) {
                Vec::new()
            } else {
                open_fds(target.pid)
            },
            growth: options.probes.mode == Mode::Growth,
            go: None,
            allocator: probe::points::allocator_code(&points),
        };
        let go = go.map(|g| GoSession::new(target.pid, g.runtime, g.bias));
        let start = aggregate::Start { go: go.as_ref().map(GoSession::statuses), ..start };
        let mut agg = Aggregator::new(stacks, &start);
        let mut go = go;
        if let Some(go) = go.as_mut() {
            // The goroutines there before attach, in the first report already.
            go.refresh(&mut agg, true);
        }
        let identities = Identities::new(Symbolizer::spawn().context("cannot start the symbolizer thread")?);
        announce(&target, &points, &probes, options, go.is_some());
        let watch = match (child, pidfd) {
            (Some(child), _) => Watch::Child(child.supervise()?),
            (None, Some(pidfd)) => {
                Watch::Process(pidfd.into_exit_watch().context("cannot watch the target")?)
            }
            (None, None) => unreachable!("a prepared target has a child or a pidfd"),
        };
        let session = Session {
            options,
            target,
            probes,
            reader,
            agg,
            identities,
            verdicts: Verdicts::new(options.min_growth),
            outputs,
            start: Instant::now(),
            start_ns: start.epoch_ns,
            last_rss: None,
            memory_limit: None,
            fds: None,
            fd_limit: None,
            end: None,
            alive: true,
            go,
            write_failures: 0,
        };
        Ok((session, watch))
    }
}

/// Loads the programs and attaches what the options ask for.
fn attach(
    target: &Target,
    points: &[ProbePoint],
    go: Option<&GoTarget>,
    options: &SessionOptions,
) -> anyhow::Result<Probes> {
    let t = std::time::Instant::now();
    let go_offsets = go.map(|g| probe::golang::offsets(&g.runtime));
    let load = LoadOptions { tgid: target.pid, probes: options.probes, go: go_offsets };
    let mut probes = Probes::load(&load)?;
    probes.attach_tracepoints(&tracepoints::needed(&options.probes))?;
    log::debug!("tracepoints attached at {:?}", t.elapsed());
    if options.probes.kinds.contains(Kind::Heap) {
        probes.attach_allocator(target.pid, points)?;
    }
    if let Some(g) = go {
        let uprobes = probe::golang::uprobes(&g.runtime, &g.object, options.probes.kinds);
        log::info!(
            "{} ({}, layout from {:?})",
            g.runtime.version.raw,
            if g.runtime.stripped { "stripped" } else { "with symbols" },
            g.runtime.layout_source
        );
        probes.attach_uprobes(target.pid, &uprobes)?;
    }
    log::info!(
        "attached in {:?}; kernel memory of this session: {:.1} MiB",
        t.elapsed(),
        probe::kernel_memory_bytes() as f64 / f64::from(1 << 20)
    );
    Ok(probes)
}

/// One line on stderr: what is traced, where.
fn announce(target: &Target, points: &[ProbePoint], probes: &Probes, options: &SessionOptions, go: bool) {
    let (kinds, growth) = (options.probes.kinds, options.probes.mode == Mode::Growth);
    let mut what = Vec::new();
    if kinds.contains(Kind::Heap) {
        // Each object once, in the order its first function is listed.
        let mut objects: Vec<&str> = Vec::new();
        for p in points {
            if !objects.contains(&p.display.as_str()) {
                objects.push(&p.display);
            }
        }
        what.push(if points.is_empty() {
            "no malloc-family functions found".to_string()
        } else {
            format!("the heap ({} uprobes on {})", probes.uprobes(), objects.join(", "))
        });
    }
    if growth {
        what.push("resident memory (first touches of pages)".into());
    } else if kinds.contains(Kind::Mmap) {
        what.push("mmap and brk".into());
    }
    if kinds.contains(Kind::Fd) {
        what.push("file descriptors".into());
    }
    if go {
        what.push("goroutines, defers and the Go heap".into());
    }
    eprintln!(
        "leaktracer: tracing pid {} ({}): {}. Ctrl-C to stop.",
        target.pid,
        target.exe.display(),
        what.join("; ")
    );
}

/// The descriptors a running process has open now.
fn open_fds(pid: u32) -> Vec<i32> {
    proc::open_fds(pid).map(|fds| fds.into_iter().map(|(fd, _)| fd).collect()).unwrap_or_default()
}

/// The break of a running process: the end of its `[heap]` mapping.
fn current_break(pid: u32) -> Option<u64> {
    let entries = maps::read(pid).ok()?;
    entries.iter().find(|e| e.path.as_deref() == Some("[heap]")).map(|e| e.end)
}
