//! What the README says leaktracer does, checked end to end: coverage counters that are
//! not zero when something was missed, a session ended by SIGTERM, `--top`, `--all`,
//! `--min-age`, an allocator preloaded in place of libc's, a memory limit with a time to
//! it.

use std::{path::Path, process::Command, time::Duration};

use serde_json::Value;

use crate::{gofixture::Scripted, harness::*};

/// This module's tests.
pub fn tests() -> Vec<libtest_mimic::Trial> {
    trials![
        what_was_missed_is_counted,
        sigterm_ends_a_session_with_its_final_report,
        top_all_and_min_age,
        a_preloaded_allocator_is_the_one_traced,
        a_memory_limit_and_the_time_to_reach_it,
        growing_before_a_leak_and_shrinking,
        other_processes_make_no_events
    ]
}

/// Frees and unmaps of what was there before attach; stacks through code with no
/// unwind information.
fn what_was_missed_is_counted() {
    let mut f = Fixture::start(&fixture("coverage.c"));
    let tracer = Tracer::attach(f.pid(), &["--top", "0", "--interval", "1h"]);
    f.go();
    let run = tracer.stop();
    assert!(run.status.success(), "{}: {}", run.status, run.stderr);
    let c = &run.final_report()["coverage"];
    assert_eq!(c["unknown_frees"], 5, "{c}");
    assert_eq!(c["unknown_unmaps"], 2, "{c}");
    assert!(c["truncated_stacks"].as_u64().unwrap() >= 1, "stacks through run-time code end there: {c}");
    f.finish();
}

/// SIGTERM to leaktracer: the final report, in every format, and status 0.
fn sigterm_ends_a_session_with_its_final_report() {
    let mut f = Fixture::start(&fixture("unseen.c"));
    let dir = scratch("sigterm");
    let mut cmd = Command::new(LEAKTRACER);
    cmd.args([
        "attach",
        "--pid",
        &f.pid().to_string(),
        "--format",
        "json,folded",
        "--top",
        "0",
        "--output-dir",
    ])
    .arg(&dir);
    let tracer = Tracer::start(cmd);
    f.go();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(tracer.pid() as i32, libc::SIGTERM) };
    let run = tracer.wait();
    assert_eq!(run.status.code(), Some(0), "{}", run.stderr);
    let files: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path().display().to_string()).collect();
    let ndjson = files.iter().find(|f| f.ends_with(".ndjson")).expect("the NDJSON file");
    let last: Value =
        serde_json::from_str(std::fs::read_to_string(ndjson).unwrap().lines().last().unwrap()).unwrap();
    assert_eq!(last["final"], true);
    assert_eq!(last["target"]["end"]["how"], "detached");
    assert_eq!(live(site_at(&last, "remember_session")), (40, 40 * 44));
    let folded = files.iter().find(|f| f.ends_with(".folded")).expect("the folded file");
    assert_eq!(std::fs::read_to_string(folded).unwrap().lines().count(), 2);
    f.finish();
}

/// `--top N` keeps N sites, `--all` shows the ones that are no suspects, `--min-age`
/// leaves out the young. (Heap only: descriptors open before attach are sites too.)
fn top_all_and_min_age() {
    let session = |args: &[&str], text: bool| {
        let mut f = Fixture::start(&fixture("unseen.c"));
        let mut cmd = Command::new(LEAKTRACER);
        cmd.args(["attach", "--pid", &f.pid().to_string(), "--kind", "heap", "--interval", "1h"])
            .args(["--format", if text { "text" } else { "json" }])
            .args(args);
        let tracer = Tracer::start(cmd);
        f.go();
        let run = tracer.stop();
        assert!(run.status.success(), "{}: {}", run.status, run.stderr);
        f.finish();
        run
    };
    let report = session(&["--top", "1"], false).final_report();
    assert_eq!(report["sites"].as_array().unwrap().len(), 1, "--top 1");
    assert_eq!(report["sites"][0]["frames"][0]["function"], "index_terms", "the largest first");
    let sites = |text: &str| text.lines().filter(|l| l.starts_with('#')).count();
    let suspects_only = session(&["--top", "0"], true).stdout;
    assert_eq!(sites(&suspects_only), 0, "no suspect in a run this short:\n{suspects_only}");
    let all = session(&["--top", "0", "--all"], true).stdout;
    assert_eq!(sites(&all), 3, "--all: the two holding memory and scratch_work:\n{all}");
    let young = session(&["--top", "0", "--min-age", "1h"], false).final_report();
    assert!(young["sites"].as_array().unwrap().iter().all(|s| s["live_count"] == 0), "--min-age 1h: {young}");
}

/// jemalloc preloaded: its malloc is the one probed, and the figures are the same.
fn a_preloaded_allocator_is_the_one_traced() {
    let jemalloc = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2";
    assert!(
        Path::new(jemalloc).exists(),
        "{jemalloc} (Debian's libjemalloc2, installed with redis) is needed"
    );
    // The command inherits leaktracer's environment.
    let mut cmd = Command::new(LEAKTRACER);
    cmd.env("LD_PRELOAD", jemalloc)
        .args(["run", "--format", "json", "--top", "0", "--"])
        .arg(fixture("early.c"));
    let run = Tracer::start(cmd).wait();
    assert!(run.stderr.contains("libjemalloc.so.2"), "jemalloc's functions are probed:\n{}", run.stderr);
    let report: Value = serde_json::from_str(run.stdout.lines().last().unwrap()).unwrap();
    assert_eq!(live(site_at(&report, "main")), (1, 4321));
}

/// A target in a memory cgroup, growing: the limit is the cgroup's, and the time to it
/// is projected from the growth.
fn a_memory_limit_and_the_time_to_reach_it() {
    let cgroup = crate::oom::Cgroup::new(1 << 30);
    let mut f = Scripted::start(&fixture("oom.c"), &["bounded"], &[]);
    cgroup.add(f.pid());
    let mut tracer = Tracer::attach(f.pid(), &["--interval", "1s", "--top", "0"]);
    f.command("go");
    let report =
        tracer.report_where(Duration::from_secs(30), |r| r["process"]["limit_eta_s"].as_f64() > Some(0.0));
    let process = &report["process"];
    assert_eq!(process["memory_limit_bytes"], 1u64 << 30, "{process}");
    assert!(process["memory_limit_source"].as_str().unwrap().starts_with("cgroup"), "{process}");
    let (rate, eta) =
        (process["rss_bytes_per_min"].as_f64().unwrap(), process["limit_eta_s"].as_f64().unwrap());
    let left = (1u64 << 30) as f64 - process["rss_bytes"].as_f64().unwrap();
    assert!((eta - left / (rate / 60.0)).abs() <= 2.0, "eta {eta} s for {left} bytes at {rate}/min");
    drop(tracer.stop());
    drop(f);
}

/// A leak is `growing` before the evidence is enough for `leak`; a cache that drains is
/// `shrinking`.
fn growing_before_a_leak_and_shrinking() {
    let mut child = Command::new(corpus_program("unbounded_cache.c"))
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut tracer = Tracer::attach(child.id(), &["--interval", "1s", "--top", "0"]);
    let at_insert = |r: &Value| sites_at(r, "cache_insert").first().map(|s| s["verdict"].clone());
    let early =
        tracer.report_where(Duration::from_secs(20), |r| at_insert(r).is_some_and(|v| v != "unknown"));
    assert_eq!(at_insert(&early), Some("growing".into()), "before 10 s of evidence: {}", early["elapsed_s"]);
    tracer.report_where(Duration::from_secs(30), |r| at_insert(r) == Some("leak".into()));
    drop(tracer.stop());
    let _ = child.kill();
    let _ = child.wait();

    let mut f = Fixture::start(&fixture("shrink.c"));
    let mut tracer = Tracer::attach(f.pid(), &["--interval", "1s", "--top", "0"]);
    f.go();
    let at_fill = |r: &Value| sites_at(r, "fill").first().map(|s| s["verdict"].clone());
    let drained = tracer.report_where(Duration::from_secs(30), |r| at_fill(r) == Some("shrinking".into()));
    assert!(sites_at(&drained, "fill")[0]["live_count"].as_u64().unwrap() < 2000);
    drop(tracer.stop());
    f.finish();
}

/// Only the target's calls make events: another process using the same libc at the same
/// time makes none (the uprobes are attached for the target's process alone).
fn other_processes_make_no_events() {
    let workload = scratch("bystander").join("alloc_heavy");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/bench/alloc_heavy.c");
    assert!(
        Command::new("gcc")
            .args(["-O2", "-pthread", "-o"])
            .arg(&workload)
            .arg(&src)
            .status()
            .unwrap()
            .success()
    );
    let mut f = Fixture::start(&fixture("unseen.c"));
    let tracer = Tracer::attach(f.pid(), &["--interval", "1h", "--top", "0"]);
    // 500,000 rounds: about 870,000 allocator calls in another process, while traced.
    let bystander = Command::new(&workload).arg("500000").output().unwrap();
    assert!(bystander.status.success());
    f.go();
    let run = tracer.stop();
    let report = run.final_report();
    let events = report["coverage"]["events"].as_u64().unwrap();
    assert!(events < 1000, "the target made a few hundred events; the bystander none: {events}");
    assert_eq!(live(site_at(&report, "remember_session")), (40, 40 * 44));
    f.finish();
}
