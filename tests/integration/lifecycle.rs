//! Attaching, launching, the target exiting, and detaching without a trace.

use std::process::Command;

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
        uprobes_go_through_the_links_the_kernel_allows
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
    for (program, status) in [("unbounded_cache.c", 3), ("batches.c", 0)] {
        let mut child =
            Command::new(corpus_program(program)).stdout(std::process::Stdio::null()).spawn().unwrap();
        let tracer = Tracer::attach(child.id(), &["--duration", "15s", "--fail-on-leak"]);
        let run = tracer.wait();
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(run.status.code(), Some(status), "{program}: {}", run.stderr);
        let leaks =
            run.final_report()["sites"].as_array().unwrap().iter().filter(|s| s["verdict"] == "leak").count();
        assert_eq!(leaks > 0, status == 3, "{program}");
    }
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
