//! Hostile targets: what a target maps is input to a root process. A target that maps
//! `/dev/zero` executable, one that maps 1,100 files under a 1,024-descriptor limit, and
//! one that puts a FIFO and an absolute symbolic link where its libraries were (in a
//! mount namespace of its own): attach and the report finish in time, leaktracer's
//! memory and descriptors stay bounded, and the target's allocations are still traced
//! through the files it really mapped.

use std::{
    os::unix::process::CommandExt as _,
    process::Command,
    time::{Duration, Instant},
};

use crate::{gofixture::Scripted, harness::*};

/// This module's tests.
pub fn tests() -> Vec<libtest_mimic::Trial> {
    trials![
        an_endless_mapped_file,
        more_mapped_files_than_descriptors,
        a_fifo_and_a_foreign_link_over_its_libraries,
        forty_thousand_call_paths_stay_bounded
    ]
}

/// leaktracer's peak memory on these targets stays below this.
const MEMORY_BOUND: u64 = 256 << 20;

/// Traces `hostile MODE ARGS` through two rounds of its allocations, under a 1,024
/// descriptor limit (soft and hard) for leaktracer; checks the report and the bounds.
fn traced(args: &[&str], env: &[(&str, &str)]) {
    let started = Instant::now();
    let mut f = Scripted::start(&fixture("hostile.c"), args, env);
    let mut cmd = Command::new(LEAKTRACER);
    cmd.args(["attach", "--pid", &f.pid().to_string(), "--format", "json", "--interval", "1h", "--top", "0"]);
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit { rlim_cur: 1024, rlim_max: 1024 };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let tracer = Tracer::start(cmd);
    f.command("go");
    f.command("go");
    let tracer_pid = tracer.pid();
    let (peak, fds) = (peak_rss(tracer_pid), open_fds(tracer_pid));
    let run = tracer.stop();
    assert!(run.status.success(), "{}: {}", run.status, run.stderr);
    let report = run.final_report();
    let site = site_at(&report, "hostile_alloc");
    assert_eq!(live(site), (20, 2000), "{site:#}");
    assert_frame(site, "hostile_alloc", "hostile.c", line_of("hostile.c", "hostile-alloc"));
    assert!(peak < MEMORY_BOUND, "leaktracer's peak memory: {} MiB", peak >> 20);
    assert!(fds < 1024, "leaktracer's descriptors: {fds}");
    let took = started.elapsed().as_secs();
    assert!(took < 60, "attach and report took {took} s");
    run.objects.assert_gone();
    f.finish();
}

fn an_endless_mapped_file() {
    traced(&["devzero"], &[]);
}

fn more_mapped_files_than_descriptors() {
    let dir = scratch("hostile-files");
    traced(&["files", "1100"], &[("LT_DIR", dir.to_str().unwrap())]);
}

fn a_fifo_and_a_foreign_link_over_its_libraries() {
    traced(&["overmount"], &[]);
}

/// 40,000 call sites, each its own unwind rule key and stack: each is learnt once (a
/// stack sample per path, not per call), and leaktracer's memory is flat once they are.
fn forty_thousand_call_paths_stay_bounded() {
    const PATHS: u64 = 40_000;
    let mut f = Scripted::start(&fixture("paths.c"), &[], &[]);
    let mut tracer = Tracer::attach(f.pid(), &["--interval", "2s", "--top", "0"]);
    f.command("go");
    let after = |s: f64| move |r: &serde_json::Value| r["elapsed_s"].as_f64() >= Some(s);
    tracer.report_where(Duration::from_secs(60), after(12.0));
    let early = rss(tracer.pid());
    let report = tracer.report_where(Duration::from_secs(60), after(30.0));
    let late = rss(tracer.pid());
    let peak = peak_rss(tracer.pid());
    let run = tracer.stop();
    assert!(run.status.success(), "{}: {}", run.status, run.stderr);
    let coverage = &report["coverage"];
    eprintln!("paths: coverage {coverage}, totals {}, rss {early} -> {late}, peak {peak}", report["totals"]);
    let samples = coverage["stack_samples"].as_u64().unwrap();
    assert!((PATHS / 2..=2 * PATHS).contains(&samples), "stack samples for {PATHS} paths: {samples}");
    // The calls were traced all along (the paths share one source line: one site).
    let site = site_at(&report, "round_of_paths");
    assert!(site["allocs"].as_u64().unwrap() > 10 * PATHS, "{site:#}");
    assert!(late < early + early / 5, "leaktracer's memory grew from {early} to {late} bytes");
    assert!(peak < MEMORY_BOUND, "leaktracer's peak memory: {} MiB", peak >> 20);
    f.finish();
}
