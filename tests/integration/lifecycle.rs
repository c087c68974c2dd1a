//! Attaching, launching, the target exiting, and detaching without a trace.

use std::process::Command;

use crate::harness::*;

/// The acceptance case: a program the tracer has never seen leaks through two allocator
/// functions from two of its functions, while a third frees all it allocates.
#[test]
fn an_unseen_program_two_leaks_and_a_clean_function() {
    let Some(_kernel) = privileged("an_unseen_program_two_leaks_and_a_clean_function") else { return };
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

    // Detached: nothing of ours is left in the kernel, the target runs on, and its
    // output is what it is without tracing.
    assert!(our_programs().is_empty(), "programs left: {:?}", our_programs());
    assert_eq!(our_links(), 0);
    assert!(leftover_uprobe_events().is_empty(), "{:?}", leftover_uprobe_events());
    assert!(fixture.child.try_wait().unwrap().is_none(), "the target still runs");
    assert_eq!(fixture.finish(), expected_output);
}

/// `run` has the probes in place before the first instruction of main, passes output
/// through and exits with the command's status.
#[test]
fn run_sees_the_first_allocation_of_main() {
    let Some(_kernel) = privileged("run_sees_the_first_allocation_of_main") else { return };
    let src = "early.c";
    let mut cmd = Command::new(LEAKTRACER);
    cmd.args(["run", "--format", "json", "--top", "0", "--"]).arg(fixture(src));
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(3),
        "the command's exit status; stderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some("early fixture output"));
    let report: serde_json::Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    assert_eq!(report["final"], true);
    let site = site_at(&report, "main");
    assert_frame(site, "main", src, line_of(src, "early"));
    assert_eq!(live(site), (1, 4321));
    assert!(our_programs().is_empty());
}

/// A target that exits while traced still gets a complete, symbolized final report, and
/// leaktracer ends by itself.
#[test]
fn the_target_exits_while_traced() {
    let Some(_kernel) = privileged("the_target_exits_while_traced") else { return };
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
#[test]
fn interrupted_at_the_banner() {
    let Some(_kernel) = privileged("interrupted_at_the_banner") else { return };
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
#[test]
fn interval_and_duration() {
    let Some(_kernel) = privileged("interval_and_duration") else { return };
    let mut fixture = Fixture::start(&fixture("unseen.c"));
    let tracer = Tracer::attach(fixture.pid(), &["--interval", "1s", "--duration", "3500ms"]);
    fixture.go();
    let run = tracer.wait();
    assert!(run.status.success(), "{}: {}", run.status, run.stderr);
    let reports = run.reports();
    let interim = reports.iter().filter(|r| r["final"] == false).count();
    assert_eq!(interim, 3, "reports at 1, 2 and 3 s");
    assert_eq!(reports.last().unwrap()["final"], true);
    assert!(reports.last().unwrap()["elapsed_s"].as_f64().unwrap() >= 3.5);
    fixture.finish();
}

/// `--fail-on-leak`: exit status 3 when the final report has a leak, 0 otherwise.
#[test]
fn fail_on_leak_gates_on_the_final_verdict() {
    let Some(_kernel) = privileged("fail_on_leak_gates_on_the_final_verdict") else { return };
    for (program, status) in [("unbounded_cache.c", 3), ("batches.c", 0)] {
        let mut child =
            Command::new(corpus_program(program)).stdout(std::process::Stdio::null()).spawn().unwrap();
        let tracer = Tracer::attach(child.id(), &["--duration", "12s", "--fail-on-leak"]);
        let run = tracer.wait();
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(run.status.code(), Some(status), "{program}: {}", run.stderr);
        let leaks =
            run.final_report()["sites"].as_array().unwrap().iter().filter(|s| s["verdict"] == "leak").count();
        assert_eq!(leaks > 0, status == 3, "{program}");
    }
}
