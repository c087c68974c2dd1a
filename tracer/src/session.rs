//! One tracing session: probes in, events through the aggregator, reports out, probes
//! out. Runs on a single-threaded runtime; the symbolizer has its own thread.

use std::{
    io,
    os::fd::{FromRawFd, OwnedFd},
    time::Duration,
};

use anyhow::Context as _;
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
    time::{Instant, MissedTickBehavior, interval, interval_at, sleep_until},
};
use tracer_ebpf::{Stack, UnwindRule};

use crate::{
    aggregate::{
        Aggregator,
        stacks::{RawStack, StackSource, StackTable},
    },
    cli::TraceOptions,
    event::{Event, StackId, reader::EventReader},
    probe::{ProbePoint, Probes},
    report::{ReportContext, Reporter, outputs::Outputs},
    symbolize::{Symbolizer, modules::ModuleMap},
    target::{
        Target,
        launch::{ChildEvent, Exit, Stopped},
        limits::memory_limit,
        maps,
    },
    verdict::Verdicts,
};

/// How often the ring buffer is drained when the kernel side has not woken us.
const DRAIN_EVERY: Duration = Duration::from_millis(100);

/// How often every site's live figures are sampled for the verdicts.
const VERDICT_TICK: Duration = Duration::from_millis(500);

/// The process to trace, ready for probes.
pub enum Prepared {
    Running { target: Target, points: Vec<ProbePoint> },
    Launched { target: Target, points: Vec<ProbePoint>, child: Stopped },
}

/// Why tracing stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Duration,
    Signal(i32),
    TargetExited,
}

/// Runs the session; returns the exit status leaktracer should end with.
pub async fn run(prepared: Prepared, options: &TraceOptions) -> anyhow::Result<i32> {
    let (target, points, child) = match prepared {
        Prepared::Running { target, points } => (target, points, None),
        Prepared::Launched { target, points, child } => (target, points, Some(child)),
    };
    let pid = target.pid;
    let ring_bytes = options.ring_mib << 20;
    // Before anything can be announced: a Ctrl-C from then on ends the session with a
    // final report, never by the default action.
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;

    let attach = || -> anyhow::Result<Probes> {
        let t = std::time::Instant::now();
        let mut probes =
            Probes::load(pid, ring_bytes, options.unwind, options.sample_bytes, options.bench_floor)?;
        log::debug!("loaded in {:?}", t.elapsed());
        probes.attach_tracepoints()?;
        log::debug!("tracepoints attached at {:?}", t.elapsed());
        probes.attach_allocators(pid, &points)?;
        log::debug!("uprobes attached at {:?}", t.elapsed());
        Ok(probes)
    };
    // On any error until it is supervised, dropping `child` kills the command, which
    // never ran.
    let mut probes = attach()?;
    let stacks = KernelStacks {
        stacks: probes.take_stacks()?,
        rules: probes.take_unwind_rules()?,
        generation: probes.take_rule_generation()?,
    };
    let mut reader = EventReader::new(probes.take_events()?).context("cannot watch the ring buffer")?;

    let launched = child.is_some();
    let modules = ModuleMap::new(pid);
    let brk = if launched { None } else { current_break(pid) };
    let mut agg = Aggregator::new(StackTable::new(Box::new(stacks), modules), launched, brk)
        .with_max_live(options.max_live)
        .with_epoch(monotonic_ns());
    let mut reporter = Reporter::new(Symbolizer::spawn().context("cannot start the symbolizer thread")?);
    let started = std::time::SystemTime::now();
    let mut outputs = Outputs::open(
        &options.format,
        options.output.as_deref(),
        options.output_dir.as_deref(),
        pid,
        started,
        options.export,
    )?;
    let mut verdicts = Verdicts::default();

    announce(&target, &points, &probes);
    let start = Instant::now();
    let start_ns = monotonic_ns();

    // Target exit: a supervised child reports it (and waits at exec and exit while we
    // read its maps); a process we attached to closes its pidfd.
    let mut supervisor = match child {
        Some(child) => Some(child.supervise()?),
        None => None,
    };
    let pidfd = match supervisor {
        Some(_) => None,
        None => Some(PidFd::open(pid).context("cannot watch the target for exit")?),
    };

    let mut drain_tick = interval(DRAIN_EVERY);
    drain_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut report_tick = interval_at(start + options.interval, options.interval);
    report_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut verdict_tick = interval(VERDICT_TICK);
    verdict_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let deadline = options.duration.map(|d| start + d);
    let mut last_rss = crate::target::rss_bytes(pid);
    let mut exit: Option<Exit> = None;

    let context = |is_final: bool, rss: Option<u64>, probes: &Probes| ReportContext {
        target: &target,
        is_final,
        now_ns: monotonic_ns(),
        elapsed_s: (monotonic_ns() - start_ns) as f64 / 1e9,
        min_age_ns: options.min_age.as_nanos() as u64,
        top: options.top,
        rss_bytes: rss,
        memory_limit: memory_limit(pid),
        kernel: probes.counters(),
        sample_bytes: options.sample_bytes,
    };
    let elapsed = || (monotonic_ns() - start_ns) as f64 / 1e9;

    let stop = loop {
        tokio::select! {
            ready = reader.readable() => {
                ready.context("ring buffer")?;
                drain(&mut reader, &mut agg);
            }
            _ = drain_tick.tick() => drain(&mut reader, &mut agg),
            _ = verdict_tick.tick() => {
                drain(&mut reader, &mut agg);
                last_rss = crate::target::rss_bytes(pid).or(last_rss);
                judge(&mut verdicts, &mut reporter, &agg, elapsed(), crate::target::rss_bytes(pid)).await;
            }
            _ = report_tick.tick() => {
                drain(&mut reader, &mut agg);
                last_rss = crate::target::rss_bytes(pid).or(last_rss);
                let report = reporter.build(&agg, &verdicts, &context(false, last_rss, &probes)).await;
                outputs.interim(&report).context("cannot write the report")?;
            }
            _ = sigint.recv() => break Stop::Signal(libc::SIGINT),
            _ = sigterm.recv() => break Stop::Signal(libc::SIGTERM),
            _ = async { sleep_until(deadline.expect("guarded")).await }, if deadline.is_some() => break Stop::Duration,
            event = async { supervisor.as_mut().expect("guarded").events.recv().await }, if supervisor.is_some() => {
                match event {
                    Some(ChildEvent::Execed | ChildEvent::Exiting) => {
                        // The child waits: place every stack while its maps are there.
                        agg.stacks.modules.mark_dirty();
                        drain(&mut reader, &mut agg);
                        last_rss = crate::target::rss_bytes(pid).or(last_rss);
                        supervisor.as_ref().expect("guarded").release();
                    }
                    Some(ChildEvent::Exited(status)) => {
                        exit = Some(status);
                        break Stop::TargetExited;
                    }
                    Some(ChildEvent::ExecFailed(e)) => return Err(e.into()),
                    None => break Stop::TargetExited,
                }
            }
            _ = async { pidfd.as_ref().expect("guarded").exited().await }, if pidfd.is_some() => break Stop::TargetExited,
        }
    };
    log::info!("stopping: {stop:?}");

    // Everything the target did before it stopped is in the ring buffer by now.
    drain(&mut reader, &mut agg);
    let rss_now = if stop == Stop::TargetExited { None } else { crate::target::rss_bytes(pid) };
    last_rss = rss_now.or(last_rss);
    judge(&mut verdicts, &mut reporter, &agg, elapsed(), rss_now).await;
    let report = reporter.build(&agg, &verdicts, &context(true, last_rss, &probes)).await;
    for file in outputs.finish(&report).context("cannot write the final report")? {
        eprintln!("leaktracer: wrote {}", file.display());
    }
    // With --fail-on-leak, a leak anywhere (not only among the sites shown) decides.
    let leak_status = (options.fail_on_leak && verdicts.any_leak()).then_some(LEAK_FOUND);
    // Detach only now: the final report is out first.
    drop(reader);
    let t = std::time::Instant::now();
    probes.detach();
    log::debug!("detached in {:?}", t.elapsed());

    let Some(mut supervisor) = supervisor else {
        return Ok(leak_status.unwrap_or(0));
    };
    if let Some(exit) = exit {
        return Ok(leak_status.unwrap_or(exit.status()));
    }
    // The command runs on (a --duration ended tracing): wait for it, passing on the
    // signal that stopped us unless the terminal already sent it to the whole group.
    let mut pending_signal = match stop {
        Stop::Signal(sig) => Some((sig, Instant::now() + Duration::from_millis(100))),
        _ => None,
    };
    loop {
        tokio::select! {
            event = supervisor.events.recv() => match event {
                Some(ChildEvent::Exited(status)) => return Ok(leak_status.unwrap_or(status.status())),
                Some(ChildEvent::ExecFailed(e)) => return Err(e.into()),
                Some(ChildEvent::Execed | ChildEvent::Exiting) => supervisor.release(),
                None => return Ok(leak_status.unwrap_or(0)),
            },
            _ = async { sleep_until(pending_signal.expect("guarded").1).await }, if pending_signal.is_some() => {
                // SAFETY: signalling our own child.
                unsafe { libc::kill(pid as i32, pending_signal.expect("guarded").0) };
                pending_signal = None;
            }
        }
    }
}

/// The exit status `--fail-on-leak` gives when a leak was found.
pub const LEAK_FOUND: i32 = 3;

/// Samples every site and judges every (grouped) site on its series so far.
async fn judge(verdicts: &mut Verdicts, reporter: &mut Reporter, agg: &Aggregator, t: f64, rss: Option<u64>) {
    verdicts.sample(t, &agg.sites, rss);
    reporter.identify(agg).await;
    let groups = reporter.groups();
    verdicts.evaluate(groups.iter().map(|g| (g.first, g.members.as_slice())));
}

fn drain(reader: &mut EventReader, agg: &mut Aggregator) {
    reader.drain(|record| match Event::decode(record) {
        Ok(event) => agg.apply(&event),
        Err(e) => {
            log::debug!("{e}");
            agg.coverage.decode_errors += 1;
        }
    });
}

fn announce(target: &Target, points: &[ProbePoint], probes: &Probes) {
    let mut objects: Vec<&str> = points.iter().map(|p| p.display.as_str()).collect();
    objects.dedup();
    let allocator = if points.is_empty() {
        "no malloc-family functions found (only mmap/brk are traced)".to_string()
    } else {
        format!("{} uprobes on {}", probes.uprobes(), objects.join(", "))
    };
    eprintln!(
        "leaktracer: tracing pid {} ({}): {allocator}; mmap, munmap, mremap and brk tracepoints. Ctrl-C to stop.",
        target.pid,
        target.exe.display(),
    );
}

/// The break of a running process: the end of its `[heap]` mapping.
fn current_break(pid: u32) -> Option<u64> {
    let entries = maps::read(pid).ok()?;
    entries.iter().find(|e| e.path.as_deref() == Some("[heap]")).map(|e| e.end)
}

pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid timespec; CLOCK_MONOTONIC is bpf_ktime_get_ns's clock.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Stacks from the kernel's `STACKS` map; unwind rules into `UNWIND_RULES`.
struct KernelStacks {
    stacks: aya::maps::HashMap<aya::maps::MapData, u64, Stack>,
    rules: aya::maps::HashMap<aya::maps::MapData, u64, UnwindRule>,
    /// Bumped when rules are taken back, so the kernel side's caches drop theirs.
    generation: aya::maps::Array<aya::maps::MapData, u32>,
}

impl StackSource for KernelStacks {
    fn fetch(&mut self, id: StackId) -> Option<RawStack> {
        let stack = self.stacks.get(&id.0, 0).ok()?;
        let len = (stack.len as usize).min(stack.frames.len());
        Some(RawStack { frames: stack.frames[..len].to_vec(), truncated: stack.truncated != 0 })
    }

    fn teach(&mut self, rules: &[(u64, UnwindRule)]) {
        for (key, rule) in rules {
            if let Err(e) = self.rules.insert(key, rule, 0) {
                log::debug!("cannot store unwind rule {key:#x}: {e}");
            }
        }
    }

    fn forget(&mut self, keys: &[u64]) {
        for key in keys {
            let _ = self.rules.remove(key);
        }
        let next = self.generation.get(&0, 0).unwrap_or(0).wrapping_add(1);
        if let Err(e) = self.generation.set(0, next, 0) {
            log::warn!("cannot invalidate the kernel's unwind rule caches: {e}");
        }
    }
}

/// A pidfd: readable once the process has exited.
struct PidFd(AsyncFd<OwnedFd>);

impl PidFd {
    fn open(pid: u32) -> io::Result<Self> {
        // SAFETY: pidfd_open has no memory arguments.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh fd, owned by the OwnedFd and so open for as long as it is.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        // SAFETY: as above.
        let fd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
            .map_err(io::Error::from)?;
        Ok(Self(fd))
    }

    async fn exited(&self) {
        let _ = self.0.readable().await;
    }
}
