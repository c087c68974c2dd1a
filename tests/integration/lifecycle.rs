//! Attaching, launching, the target exiting, and detaching without a trace.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use crate::harness::*;

/// This module's tests.
pub fn tests() -> Vec<libtest_mimic::Trial> {
    trials![
        an_unseen_program_two_leaks_and_a_clean_function,
        run_sees_the_first_allocation_of_main,
        the_target_exits_while_traced,
        interrupted_at_the_banner,
        interval_and_duration,
        fail_on_leak_gates_on_the_final_verdict,
        killing_leaktracer_at_any_phase_leaves_nothing,
        four_sessions_at_once,
        a_closed_pipe_does_not_end_tracing,
        uprobes_go_through_the_links_the_kernel_allows,
        growth_mode_names_the_leak_not_the_hot_working_set
    ]
}

/// The acceptance case: a program the tracer has never seen leaks through two allocator
/// functions from two of its functions, while a third frees all it allocates.
fn an_unseen_program_two_leaks_and_a_clean_function() {
    let src = "unseen.c";
    let exe = fixture(src);

    // The same program untraced, for its output.
    let mut untraced = Fixture::start(&exe);
    untraced.go();
    let expected_output = untraced.finish();

    let mut fixture = Fixture::start(&exe);
    let tracer = Tracer::attach(fixture.pid(), &["--top", "0", "--interval", "1h"]);
    fixture.go();
    let run = tracer.stop();
    assert!(run.status.success(), "{}: {}", run.status, run.stderr);
    let report = run.final_report();

    let session = site_at(&report, "remember_session");
    assert_frame(session, "remember_session", src, line_of(src, "remember_session"));
    assert_eq!(session["allocator"], "malloc");
    assert_eq!(live(session), (40, 40 * 44));
    let terms = site_at(&report, "index_terms");
    assert_frame(terms, "index_terms", src, line_of(src, "index_terms"));
    assert_eq!(terms["allocator"], "calloc");
    // calloc(n % 4 + 1, 24) for n in 0..40: (1+2+3+4) * 10 * 24 bytes.
    assert_eq!(live(terms), (40, 10 * 10 * 24));
    let scratch = site_at(&report, "scratch_work");
    assert_eq!(live(scratch), (0, 0));
    assert_eq!(counts(scratch), (40, 40));

    // Detached: nothing of this session is left in the kernel, the target runs on, and
    // its output is what it is without tracing.
    run.objects.assert_gone();
    assert!(fixture.child.try_wait().unwrap().is_none(), "the target still runs");
    assert_eq!(fixture.finish(), expected_output);
}

/// `run` has the probes in place before the first instruction of main, passes output
/// through and exits with the command's status.
fn run_sees_the_first_allocation_of_main() {
    let src = "early.c";
    let mut cmd = Command::new(LEAKTRACER);
    cmd.args(["run", "--format", "json", "--top", "0", "--"]).arg(fixture(src));
    let run = Tracer::start(cmd).wait();
    // 42: not a status leaktracer gives of its own (3 is --fail-on-leak's).
    assert_eq!(run.status.code(), Some(42), "the command's exit status; stderr:\n{}", run.stderr);
    let mut lines = run.stdout.lines();
    assert_eq!(lines.next(), Some("early fixture output"));
    let report: serde_json::Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    assert_eq!(report["final"], true);
    let site = site_at(&report, "main");
    assert_frame(site, "main", src, line_of(src, "early"));
    assert_eq!(live(site), (1, 4321));
    run.objects.assert_gone();
}

/// A target that exits while traced still gets a complete, symbolized final report, and
/// leaktracer ends by itself.
fn the_target_exits_while_traced() {
    let src = "unseen.c";
    let mut fixture = Fixture::start(&fixture(src));
    let tracer = Tracer::attach(fixture.pid(), &["--interval", "1h"]);
    fixture.go();
    fixture.finish(); // the target exits
    let run = tracer.wait();
    assert!(run.status.success(), "{}: {}", run.status, run.stderr);
    let report = run.final_report();
    let session = site_at(&report, "remember_session");
    assert_eq!(live(session), (40, 40 * 44));
    assert_frame(session, "remember_session", src, line_of(src, "remember_session"));
    assert_eq!(session["frames"][1]["function"], "main");
}

/// Ctrl-C the moment the banner appears still ends with a final report and status 0:
/// the handlers are in place before anything is announced.
fn interrupted_at_the_banner() {
    let mut fixture = Fixture::start(&fixture("unseen.c"));
    for _ in 0..5 {
        let run = Tracer::attach(fixture.pid(), &["--interval", "1h"]).stop();
        assert!(run.status.success(), "{}: {}", run.status, run.stderr);
        run.final_report();
    }
    fixture.go();
    fixture.finish();
}

/// Interim reports come every --interval, and a report ends a --duration run.
fn interval_and_duration() {
    let mut fixture = Fixture::start(&fixture("unseen.c"));
    let tracer = Tracer::attach(fixture.pid(), &["--interval", "1s", "--duration", "3500ms"]);
    fixture.go();
    let run = tracer.wait();
    assert!(run.status.success(), "{}: {}", run.status, run.stderr);
    let reports = run.reports();
    let (last, interim) = reports.split_last().unwrap();
    assert_eq!(last["final"], true);
    assert!(last["elapsed_s"].as_f64().unwrap() >= 3.5, "{}", last["elapsed_s"]);
    // Interim reports about one interval apart, none final (how many fit in 3.5 s on a
    // busy machine is not the question).
    let times: Vec<f64> = interim.iter().map(|r| r["elapsed_s"].as_f64().unwrap()).collect();
    assert!(times.len() >= 2 && interim.iter().all(|r| r["final"] == false), "{times:?}");
    for pair in times.windows(2) {
        assert!((0.9..1.9).contains(&(pair[1] - pair[0])), "intervals: {times:?}");
    }
    assert!((0.9..1.9).contains(&times[0]), "the first at about 1 s: {times:?}");
    fixture.finish();
}

/// `--fail-on-leak`: exit status 3 when the final report has a leak, 0 otherwise.
fn fail_on_leak_gates_on_the_final_verdict() {
    // `run`: the command is ended at --duration, and a leak decides the status.
    let mut cmd = Command::new(LEAKTRACER);
    cmd.args(["run", "--format", "json", "--top", "0", "--duration", "15s", "--fail-on-leak", "--"])
        .arg(corpus_program("unbounded_cache.c"));
    let run = Tracer::start(cmd).wait();
    assert_eq!(run.status.code(), Some(3), "unbounded_cache: {}", run.stderr);
    let report = run.final_report();
    let leaks: Vec<&serde_json::Value> =
        report["sites"].as_array().unwrap().iter().filter(|s| s["verdict"] == "leak").collect();
    assert!(!leaks.is_empty());
    only_leaks_draws_exactly_the_leaks(&run.stdout, &leaks);
    // `attach`, a program with no leak: 0.
    let mut child =
        Command::new(corpus_program("batches.c")).stdout(std::process::Stdio::null()).spawn().unwrap();
    let run = Tracer::attach(child.id(), &["--duration", "15s", "--fail-on-leak"]).wait();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(run.status.code(), Some(0), "batches: {}", run.stderr);
    assert!(run.final_report()["sites"].as_array().unwrap().iter().all(|s| s["verdict"] != "leak"));
}

/// `render --only-leaks`: the folded stacks of the leak sites, their bytes, nothing else.
fn only_leaks_draws_exactly_the_leaks(ndjson: &str, leaks: &[&serde_json::Value]) {
    let file = scratch("only-leaks").join("session.ndjson");
    std::fs::write(&file, ndjson).unwrap();
    let out = Command::new(LEAKTRACER)
        .args(["render", file.to_str().unwrap(), "--format", "folded", "--only-leaks"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let folded = String::from_utf8(out.stdout).unwrap();
    let total: u64 = folded.lines().map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap()).sum();
    let expected: u64 = leaks.iter().map(|s| s["live_bytes"].as_u64().unwrap()).sum();
    assert_eq!(total, expected, "{folded}");
    for line in folded.lines() {
        let leaf = line.rsplit(' ').nth(1).unwrap().rsplit(';').next().unwrap();
        assert!(leaks.iter().any(|s| s["frames"][0]["function"] == leaf), "{line} is not a leak site");
    }
}

/// Processes whose arguments include `token`.
fn processes_with(token: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.split(|&b| b == 0).any(|arg| arg == token.as_bytes()))
        })
        .collect()
}

/// Waits up to 3 s for every process with `token` in its arguments to be gone.
fn assert_none_left(token: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while !processes_with(token).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let left = processes_with(token);
    let states: Vec<String> = left
        .iter()
        .map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default())
        .collect();
    assert!(left.is_empty(), "{what}: the command is left behind: {states:?}");
}

/// `run`, then SIGTERM or SIGKILL to leaktracer at each phase (before the command's
/// exec, while attaching, while tracing): the command never outlives it stopped or
/// orphaned, and the session's programs and links are gone.
fn killing_leaktracer_at_any_phase_leaves_nothing() {
    for signal in [libc::SIGTERM, libc::SIGKILL] {
        for delay_ms in [0, 30, 300] {
            let token = format!("1000.{}{signal}{delay_ms}", std::process::id());
            let mut child = Command::new(LEAKTRACER)
                .args(["run", "--interval", "1h", "--", "sleep", &token])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(Duration::from_millis(delay_ms));
            // SAFETY: signalling our own child.
            unsafe { libc::kill(child.id() as i32, signal) };
            child.wait().unwrap();
            assert_none_left(&token, &format!("signal {signal} after {delay_ms} ms"));
        }
        let token = format!("1000.{}{signal}9", std::process::id());
        let mut cmd = Command::new(LEAKTRACER);
        cmd.args(["run", "--interval", "1h", "--format", "json", "--", "sleep", &token]);
        let tracer = Tracer::start(cmd);
        // SAFETY: signalling our own child.
        unsafe { libc::kill(tracer.pid() as i32, signal) };
        let run = tracer.wait();
        assert_none_left(&token, &format!("signal {signal} while tracing"));
        // The kernel frees a program once its last descriptor is closed.
        let deadline = Instant::now() + Duration::from_secs(3);
        while run.objects.still_loaded() != (Vec::new(), Vec::new()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        run.objects.assert_gone();
    }
}

/// Four sessions side by side on four targets: each sees exactly its own target, each
/// holds at most 32 MiB of kernel memory, and each leaves nothing behind.
fn four_sessions_at_once() {
    let exe = fixture("unseen.c");
    let mut fixtures: Vec<Fixture> = (0..4).map(|_| Fixture::start(&exe)).collect();
    let tracers: Vec<Tracer> =
        fixtures.iter().map(|f| Tracer::attach(f.pid(), &["--top", "0", "--interval", "1h"])).collect();
    for (f, t) in fixtures.iter_mut().zip(&tracers) {
        let memlock = t.kernel_memory();
        assert!(memlock <= 32 << 20, "a session holds {} MiB of kernel memory", memlock >> 20);
        f.go();
    }
    for (tracer, f) in tracers.into_iter().zip(fixtures) {
        let run = tracer.stop();
        assert!(run.status.success(), "{}: {}", run.status, run.stderr);
        let report = run.final_report();
        assert_eq!(report["target"]["pid"], f.pid());
        assert_eq!(live(site_at(&report, "remember_session")), (40, 40 * 44));
        assert_eq!(live(site_at(&report, "index_terms")), (40, 10 * 10 * 24));
        assert_eq!(counts(site_at(&report, "scratch_work")), (40, 40));
        run.objects.assert_gone();
        f.finish();
    }
}

/// `leaktracer ... | head -1`: the reader goes away after the first report. Tracing goes
/// on (said once), the final report is still tried, and the session ends cleanly.
fn a_closed_pipe_does_not_end_tracing() {
    use std::io::{BufRead as _, BufReader, Read as _};
    let mut fixture = Fixture::start(&fixture("unseen.c"));
    let mut child = Command::new(LEAKTRACER)
        .args(["attach", "--pid", &fixture.pid().to_string(), "--format", "json", "--interval", "300ms"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    assert!(first.starts_with("{\"schema\""), "{first}");
    // The reader is gone (dropped with the BufReader); reports keep coming for a while.
    let objects = KernelObjects::held_by(child.id());
    fixture.go();
    std::thread::sleep(Duration::from_secs(2));
    assert!(child.try_wait().unwrap().is_none(), "leaktracer still traces");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert_eq!(stderr.matches("tracing goes on").count(), 1, "said once:\n{stderr}");
    assert!(stderr.contains("interim reports could not be written"), "{stderr}");
    assert!(stderr.contains("Broken pipe"), "{stderr}");
    assert_eq!(status.code(), Some(1), "the final report could not be written either:\n{stderr}");
    objects.assert_gone();
    fixture.finish();
}

/// The uprobes go through the links leaktracer says it chose (`-v`): one uprobe session
/// link for the allocator's library on the session path, one uprobe_multi link per
/// program (entries, returns, free) on the multi path, one perf link per uprobe on
/// the classic path (LEAKTRACER_LINKS=multi or classic forces those). Whatever the path,
/// the same figures, and nothing left.
fn uprobes_go_through_the_links_the_kernel_allows() {
    let src = "unseen.c";
    let mut fixture = Fixture::start(&fixture(src));
    let tracer = Tracer::attach(fixture.pid(), &["-v", "--top", "0", "--interval", "1h"]);
    let path =
        tracer.stderr.lines().find_map(|l| l.split_once("uprobe links: ").map(|(_, path)| path.to_string()));
    let path = path.unwrap_or_else(|| panic!("no path said:\n{}", tracer.stderr));
    // fdinfo says uprobe_multi for entry and session links, uretprobe_multi for returns.
    let o = &tracer.objects;
    let multi = (o.links_of_type("uprobe_multi"), o.links_of_type("uretprobe_multi"));
    match std::env::var("LEAKTRACER_LINKS").as_deref() {
        Ok("classic") => assert!(path.starts_with("one perf link per uprobe"), "{path}"),
        Ok("multi") => assert!(!path.starts_with("one uprobe session link"), "{path}"),
        _ => {}
    }
    let expected = if path.starts_with("one uprobe session link") {
        (1, 0)
    } else if path.starts_with("one uprobe_multi link") {
        (2, 1)
    } else {
        assert!(path.starts_with("one perf link per uprobe"), "{path}");
        (0, 0)
    };
    assert_eq!(multi, expected, "{path}: {:?}", o.link_types);
    fixture.go();
    let run = tracer.stop();
    assert!(run.status.success(), "{}: {}", run.status, run.stderr);
    let report = run.final_report();
    assert_eq!(live(site_at(&report, "remember_session")), (40, 40 * 44));
    assert_eq!(counts(site_at(&report, "scratch_work")), (40, 40));
    run.objects.assert_gone();
    fixture.finish();
}

/// `--mode growth` (first touches of new memory, no allocator probes): the function that
/// leaks 1 MiB/s is a leak; the one that keeps rewriting a 4 MiB working set is not.
fn growth_mode_names_the_leak_not_the_hot_working_set() {
    let mut cmd = Command::new(LEAKTRACER);
    cmd.args([
        "run",
        "--mode",
        "growth",
        "--format",
        "json",
        "--interval",
        "2s",
        "--duration",
        "20s",
        "--top",
        "0",
    ])
    .args(["--"])
    .arg(fixture("growth.c"));
    let run = Tracer::start(cmd).wait();
    assert_eq!(run.status.code(), Some(143), "the command is ended by SIGTERM at --duration: {}", run.stderr);
    let report = run.final_report();
    let leak = sites_through(&report, "grow_leak");
    assert!(!leak.is_empty(), "no site through grow_leak");
    assert!(leak.iter().all(|s| s["kind"] == "resident"), "{leak:#?}");
    assert!(leak.iter().any(|s| s["verdict"] == "leak"), "{leak:#?}");
    let hot = sites_through(&report, "hot_working_set");
    assert!(hot.iter().all(|s| s["verdict"] != "leak" && s["verdict"] != "growing"), "{hot:#?}");
    // No allocator probes in this mode: no heap sites at all.
    assert!(sites_of_kind(&report, "heap").is_empty());
    run.objects.assert_gone();
}
