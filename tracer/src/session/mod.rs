//! One tracing session, as steps: `start` (outputs opened, probes attached, tables
//! made), `trace` (drain events, judge every half second, report every interval, until
//! something stops it), `finish` (a final report, whatever stopped it, then detach), and
//! `settle` (for `run`: the command's own end). Runs on a single-threaded runtime; the
//! symbolizer has a thread of its own.

mod end;
mod golang;
mod start;
mod watch;

use std::time::Duration;

use anyhow::Context as _;
use tokio::time::{Instant, MissedTickBehavior, interval};

pub use self::start::Prepared;
use self::watch::{Signals, TargetEvent, Watch};
use crate::{
    aggregate::Aggregator,
    clock::monotonic_ns,
    config::SessionOptions,
    event::{Event, reader::EventReader},
    identify::Identities,
    probe::Probes,
    report::{self, Inputs, ReportContext, outputs::Outputs},
    target::{Target, launch::Exit, limits::MemoryLimit, proc},
    verdict::{ProcessSample, Verdicts},
};

/// The exit status `--fail-on-leak` gives when a leak was found.
pub const LEAK_FOUND: i32 = 3;

/// How often the ring buffer is drained when the kernel side has not woken us.
const TICK: Duration = Duration::from_millis(100);
/// How often every site's live figures are sampled for the verdicts.
const JUDGE_EVERY: Duration = Duration::from_millis(500);
/// How long a command gets to end after SIGTERM before SIGKILL (`run`, after
/// `--duration`).
const GRACE: Duration = Duration::from_secs(5);
/// Goroutines younger than this, or not parked, are work in flight, left out of the
/// verdicts' series: a goroutine leak is goroutines that wait and stay.
const GOROUTINE_IN_FLIGHT_NS: u64 = 1_000_000_000;

/// Why tracing stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Duration,
    Signal(i32),
    TargetExited(Option<Exit>),
}

struct Session<'a> {
    options: &'a SessionOptions,
    target: Target,
    probes: Probes,
    reader: EventReader,
    agg: Aggregator,
    identities: Identities,
    verdicts: Verdicts,
    outputs: Outputs,
    start: Instant,
    start_ns: u64,
    last_rss: Option<u64>,
    /// Read while the target lives, and kept: a cgroup that vanishes with the target
    /// does not turn into the machine's RAM in the final report.
    memory_limit: Option<MemoryLimit>,
    /// Open descriptors and their limit, the last read while the target lived.
    fds: Option<u64>,
    fd_limit: Option<u64>,
    /// How the target ended, once it has (or that we detached).
    end: Option<crate::report::TargetEnd>,
    alive: bool,
    /// A Go target's runtime and its reads.
    go: Option<golang::GoSession>,
    write_failures: u64,
}

/// Runs a session; returns the exit status leaktracer should end with.
pub async fn run(prepared: Prepared, options: &SessionOptions) -> anyhow::Result<i32> {
    let mut signals = Signals::install().context("cannot handle SIGINT and SIGTERM")?;
    let (mut session, mut watch) = Session::start(prepared, options)?;
    let stop = session.trace(&mut watch, &mut signals).await?;
    log::info!("stopping: {stop:?}");
    let finished = session.finish(stop, &mut signals).await;
    Ok(settle(watch, stop, finished, &mut signals, options).await)
}

impl Session<'_> {
    /// Drains the ring, applies events, stops on what stops tracing.
    async fn trace(&mut self, watch: &mut Watch, signals: &mut Signals) -> anyhow::Result<Stop> {
        let mut tick = interval(TICK);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut next_judge = self.start + JUDGE_EVERY;
        let mut next_report = self.start + self.options.interval;
        let deadline = self.options.duration.map(|d| self.start + d);
        loop {
            tokio::select! {
                ready = self.reader.readable() => {
                    ready.context("cannot read the ring buffer")?;
                    self.drain();
                }
                _ = tick.tick() => {
                    self.drain();
                    let now = Instant::now();
                    if deadline.is_some_and(|d| now >= d) {
                        return Ok(Stop::Duration);
                    }
                    if now >= next_judge {
                        next_judge += JUDGE_EVERY;
                        self.judge(true).await;
                    }
                    if now >= next_report {
                        next_report += self.options.interval;
                        self.interim_report().await;
                    }
                }
                sig = signals.recv() => return Ok(Stop::Signal(sig)),
                event = watch.next() => match event {
                    TargetEvent::Paused => {
                        // The child waits: place every stack while its maps are there.
                        self.agg.stacks.modules.mark_dirty();
                        self.drain();
                        self.read_process();
                        self.go_image_known();
                        watch.release();
                    }
                    TargetEvent::Exited(exit) => return Ok(Stop::TargetExited(exit)),
                    TargetEvent::ExecFailed(e) => return Err(e.into()),
                },
            }
        }
    }

    fn drain(&mut self) {
        let agg = &mut self.agg;
        self.reader.drain(|record| match Event::decode(record) {
            Ok(event) => agg.apply(&event),
            Err(e) => {
                log::debug!("{e}");
                agg.coverage.decode_errors += 1;
            }
        });
    }

    fn elapsed_s(&self) -> f64 {
        monotonic_ns().saturating_sub(self.start_ns) as f64 / 1e9
    }

    /// RSS, descriptors and limits, while the target lives; the last good values stay.
    fn read_process(&mut self) {
        let pid = self.target.pid;
        self.last_rss = proc::rss_bytes(pid).or(self.last_rss);
        if let Some(limit) = crate::target::limits::memory_limit(pid) {
            self.memory_limit = Some(limit);
        }
        self.fds = proc::count_fds(pid).or(self.fds);
        self.fd_limit = proc::fd_limit(pid).or(self.fd_limit);
    }

    /// A launched Go program's image is mapped now (it exec'd): where, for reading its
    /// runtime and walking its stacks.
    fn go_image_known(&mut self) {
        let pid = self.target.pid;
        let Some(go) = self.go.as_mut().filter(|g| g.bias.is_none()) else { return };
        let Ok(maps) = crate::target::maps::read(pid) else { return };
        let exe = self.target.exe.as_path();
        let Some(map) =
            maps.iter().filter(|m| m.file_path().as_deref() == Some(exe)).min_by_key(|m| m.offset)
        else {
            return;
        };
        let bias = go.runtime.bias(map.start, map.offset);
        go.execed(pid, bias);
        if let Some(bias) = bias {
            self.agg.stacks.set_code_ranges(crate::probe::golang::code_ranges(&go.runtime, bias));
        }
    }

    /// Samples every site (and the process, unless it is gone) and judges every group on
    /// its series so far.
    async fn judge(&mut self, target_alive: bool) {
        let pid = self.target.pid;
        if let Some(go) = self.go.as_mut().filter(|_| target_alive) {
            go.refresh(&mut self.agg, false);
        }
        let goroutines = self.agg.goroutine_count();
        let process = if target_alive {
            ProcessSample { rss: proc::rss_bytes(pid), fds: proc::count_fds(pid), goroutines }
        } else {
            ProcessSample { goroutines, ..ProcessSample::default() }
        };
        self.last_rss = process.rss.or(self.last_rss);
        self.fds = process.fds.or(self.fds);
        let in_flight = self.agg.goroutines_in_flight(monotonic_ns().saturating_sub(GOROUTINE_IN_FLIGHT_NS));
        self.verdicts.sample(self.elapsed_s(), &self.agg.sites, process, &in_flight);
        self.identities.update(&self.agg).await;
        self.verdicts.evaluate(self.identities.groups());
    }

    fn report(&self, is_final: bool) -> report::Report {
        let ctx = ReportContext {
            target: &self.target,
            is_final,
            now_ns: monotonic_ns(),
            elapsed_s: self.elapsed_s(),
            min_age_ns: self.options.min_age.as_nanos() as u64,
            top: self.options.top,
            rss_bytes: self.last_rss,
            memory_limit: self.memory_limit.as_ref(),
            kernel: self.probes.counters(),
            sample_bytes: self.options.probes.sample_bytes,
            end: self.end.clone(),
            fds: self.fds,
            fd_limit: self.fd_limit,
            alive: self.alive,
            go: self.go.as_ref().map(|g| crate::report::GoFacts {
                version: &g.runtime.version.raw,
                wait_reasons: &g.runtime.layout.wait_reasons,
                heap_marked: g.heap_marked,
                mem_profile_rate: g.mem_profile_rate,
            }),
        };
        let inputs = Inputs { agg: &self.agg, identities: &self.identities, verdicts: &self.verdicts };
        report::build(&inputs, &ctx)
    }

    async fn interim_report(&mut self) {
        self.read_process();
        self.identities.update(&self.agg).await;
        let report = self.report(false);
        if let Err(e) = self.outputs.interim(&report) {
            // A full disk or a closed pipe must not end tracing: say it once, count it,
            // and still try the final report.
            if self.write_failures == 0 {
                eprintln!("leaktracer: {e}; tracing goes on");
            }
            self.write_failures += 1;
        }
    }

    /// The final report, whatever stopped tracing, then detach. A second signal while
    /// it is being made abandons it.
    async fn finish(mut self, stop: Stop, signals: &mut Signals) -> Finished {
        // Everything the target did before it stopped is in the ring buffer by now.
        self.drain();
        self.alive = !matches!(stop, Stop::TargetExited(_));
        if self.alive {
            self.read_process();
        }
        self.end = Some(end::target_end(stop, &self.agg.ending, self.memory_limit.as_ref(), self.last_rss));
        let report = tokio::select! {
            report = async {
                self.judge(self.alive).await;
                if self.end.as_ref().is_some_and(|e| e.how == "oom_kill") {
                    self.verdicts.at_death(self.identities.groups());
                }
                self.report(true)
            } => Some(report),
            sig = signals.recv() => {
                eprintln!("leaktracer: signal {sig} again: detaching without a final report");
                None
            }
        };
        let mut report_failed = false;
        if let Some(report) = report {
            let (written, failed) = self.outputs.finish(&report);
            for file in written {
                eprintln!("leaktracer: wrote {}", file.display());
            }
            report_failed = !failed.is_empty();
            for e in failed {
                eprintln!("leaktracer: {e}");
            }
        }
        if self.write_failures > 1 {
            eprintln!("leaktracer: {} interim reports could not be written", self.write_failures);
        }
        // With --fail-on-leak, a leak anywhere (not only among the sites shown) decides.
        let leak = self.verdicts.any_leak();
        let t = std::time::Instant::now();
        let Session { probes, reader, .. } = self;
        drop(reader);
        probes.detach();
        log::info!("detached in {:?}", t.elapsed());
        Finished { leak, report_failed }
    }
}

/// How a session ended, for its exit status.
struct Finished {
    /// A leak was found (for `--fail-on-leak`).
    leak: bool,
    /// The final report could not be written everywhere.
    report_failed: bool,
}

/// The exit status, once the target is dealt with: a process we attached to runs on;
/// a command we started ends as `--duration`, signals and `--keep-running` say.
async fn settle(
    mut watch: Watch,
    stop: Stop,
    finished: Finished,
    signals: &mut Signals,
    options: &SessionOptions,
) -> i32 {
    let leak_status = (options.fail_on_leak && finished.leak).then_some(LEAK_FOUND);
    // Attached: 1 when the final report is lost. A command's own status wins over that.
    let Some(supervisor) = watch.supervisor() else {
        return leak_status.unwrap_or(i32::from(finished.report_failed));
    };
    let exit = match stop {
        Stop::TargetExited(exit) => exit,
        _ if options.keep_running => {
            supervisor.detach();
            while !matches!(watch.next().await, TargetEvent::Exited(_)) {}
            None
        }
        Stop::Signal(sig) => {
            // Unless the terminal sent it to the whole group already, pass it on.
            tokio::time::sleep(Duration::from_millis(100)).await;
            supervisor.kill(sig);
            wait_for_command(&mut watch, signals, None).await
        }
        Stop::Duration => {
            supervisor.kill(libc::SIGTERM);
            wait_for_command(&mut watch, signals, Some(Instant::now() + GRACE)).await
        }
    };
    leak_status.unwrap_or_else(|| exit.map_or(0, Exit::status))
}

/// Waits for the command to end, passing signals on; after `kill_at`, SIGKILL.
async fn wait_for_command(
    watch: &mut Watch,
    signals: &mut Signals,
    kill_at: Option<Instant>,
) -> Option<Exit> {
    let mut kill_at = kill_at;
    loop {
        tokio::select! {
            event = watch.next() => match event {
                TargetEvent::Paused => watch.release(),
                TargetEvent::Exited(exit) => return exit,
                TargetEvent::ExecFailed(_) => return None,
            },
            sig = signals.recv() => if let Some(s) = watch.supervisor() { s.kill(sig) },
            _ = async { tokio::time::sleep_until(kill_at.expect("guarded")).await }, if kill_at.is_some() => {
                if let Some(s) = watch.supervisor() {
                    s.kill(libc::SIGKILL);
                }
                kill_at = None;
            }
        }
    }
}
