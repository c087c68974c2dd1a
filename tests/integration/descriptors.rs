//! File descriptors, native: live descriptors per call site, exact, against the
//! fixture's own counts and `/proc/PID/fd`; a target that runs out of descriptors still
//! gets its final report.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{gofixture::Scripted, harness::*};

/// This module's tests.
pub fn tests() -> Vec<libtest_mimic::Trial> {
    trials![descriptors_per_call_site_against_proc, a_target_out_of_descriptors_still_gets_its_final_report]
}

/// The fd sites with a frame at `fdleak.c:LINE` (the call in the fixture; libc's
/// wrappers come first).
fn fd_sites_at<'a>(report: &'a Value, at: &str) -> Vec<&'a Value> {
    let (file, line) = at.rsplit_once(':').unwrap();
    let line: u32 = line.parse().unwrap();
    sites_of_kind(report, "fd")
        .into_iter()
        .filter(|s| {
            s["frames"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f["line"] == line && f["file"].as_str().is_some_and(|p| p.ends_with(file)))
        })
        .collect()
}

fn attach_fds(pid: u32, interval: &str) -> Tracer {
    Tracer::attach(pid, &["--kind", "fd", "--top", "0", "--interval", interval])
}

fn descriptors_per_call_site_against_proc() {
    let dir = scratch("fdleak");
    let mut f =
        Scripted::start(&fixture("fdleak.c"), &["leak", "-n", "150"], &[("LT_DIR", dir.to_str().unwrap())]);
    let tracer = attach_fds(f.pid(), "1h");
    f.command("go");
    let proc_fds = std::fs::read_dir(format!("/proc/{}/fd", f.pid())).unwrap().count() as u64;
    let run = tracer.stop();
    assert!(run.status.success(), "{}: {}", run.status, run.stderr);
    let report = run.final_report();
    let expected = f.expected("fds");
    assert_eq!(expected.len(), 4, "{expected:?}");
    for (at, v) in &expected {
        let n: u64 = v[0].parse().unwrap();
        let found = fd_sites_at(&report, at);
        let live: u64 = found.iter().map(|s| s["live_count"].as_u64().unwrap()).sum();
        assert_eq!(live, n, "descriptors open from {} ({at}): {found:#?}", v[1]);
        let calls: u64 = found.iter().map(|s| s["allocs"].as_u64().unwrap()).sum();
        assert_eq!(calls, if n > 0 { n } else { 150 }, "calls made at {at}");
    }
    // What they are, from /proc/PID/fd.
    let sockets = fd_sites_at(&report, &f.expected("fds")[0].0);
    let kinds = &sockets[0]["descriptors"]["kinds"];
    assert_eq!(kinds["socket"], 150, "{kinds}");
    // Every descriptor of the process is known: those from before attach too.
    assert_eq!(report["process"]["fds"], proc_fds);
    assert_eq!(report["coverage"]["fd_reused"], 0);
    f.finish();
}

fn a_target_out_of_descriptors_still_gets_its_final_report() {
    let dir = scratch("fdexhaust");
    let env = [("LT_DIR", dir.to_str().unwrap())];
    let mut f = Scripted::start(&fixture("fdleak.c"), &["exhaust", "-limit", "64", "-rate", "100"], &env);
    let mut tracer = attach_fds(f.pid(), "1s");
    f.command("go");
    // Interim reports until the limit is hit (descriptors the fixture inherited above 63
    // stay open: the limit only stops new ones).
    let at_limit = |r: &Value| r["process"]["fds"].as_u64() >= Some(64);
    let full = tracer.report_where(Duration::from_secs(30), at_limit);
    assert_eq!(full["process"]["fd_limit"], 64);
    // It keeps trying (and failing with EMFILE) while traced for a while.
    let until = Instant::now() + Duration::from_secs(3);
    std::thread::sleep(until.saturating_duration_since(Instant::now()));
    f.command("stop");
    let run = tracer.stop();
    assert!(run.status.success(), "{}: {}", run.status, run.stderr);
    let report = run.final_report();
    assert!(at_limit(&report), "{}", report["process"]);
    assert_eq!(report["process"]["fd_limit"], 64);
    assert_eq!(report["process"]["fd_limit_eta_s"], 0.0, "the limit is reached");
    let (at, v) = f.expected("fds").into_iter().find(|(_, v)| v[1] == "leak_socket").unwrap();
    let live: u64 = fd_sites_at(&report, &at).iter().map(|s| s["live_count"].as_u64().unwrap()).sum();
    assert_eq!(live, v[0].parse::<u64>().unwrap(), "sockets held");
    let failed: u64 = f.expected("emfile").iter().map(|(_, v)| v[0].parse::<u64>().unwrap()).sum();
    assert!(failed > 0, "the fixture did run out");
    f.finish();
}
