//! Go programs, Go 1.19 to 1.27, stripped or not: goroutine leaks found where the `go`
//! statement is, with the runtime's own goroutine dump as the oracle; what goroutines
//! wait on, and which can never wake; worker pools and churn stay stable; goroutines
//! from before attach; stacks that grow under tracing; defer piles and the files they
//! hold; the Go heap by allocation site against the runtime's heap profile.

use std::time::Duration;

use serde_json::Value;

use crate::{
    gofixture::{Scripted, build, toolchain, versions},
    harness::{LEAKTRACER, Tracer, go_pprof, scratch, sites_of_kind, unprivileged_reason},
    oracle,
};

/// A Go test: run with Go 1.`minor`, on the stripped build or not.
type GoTest = fn(u32, bool);

/// The tests, each from the Go version it needs on.
const TESTS: [(&str, GoTest, u32); 10] = [
    ("a_goroutine_leak_is_found_at_its_go_statement", a_goroutine_leak_is_found_at_its_go_statement, 19),
    ("what_goroutines_wait_on_and_which_never_wake", what_goroutines_wait_on_and_which_never_wake, 19),
    ("pools_and_churn_are_stable", pools_and_churn_are_stable, 19),
    ("goroutines_from_before_attach_are_counted", goroutines_from_before_attach_are_counted, 19),
    ("growing_stacks_under_tracing_come_to_no_harm", growing_stacks_under_tracing_come_to_no_harm, 19),
    ("a_defer_pile_and_the_files_it_holds", a_defer_pile_and_the_files_it_holds, 19),
    ("an_unbounded_cache_in_the_go_heap", an_unbounded_cache_in_the_go_heap, 19),
    ("without_heap_profiling_it_says_so", without_heap_profiling_it_says_so, 19),
    ("go_tool_pprof_reads_the_go_profiles", go_tool_pprof_reads_the_go_profiles, 19),
    // The goroutineleak profile is Go 1.27's (1.26 only behind a GOEXPERIMENT).
    ("goroutines_the_runtime_finds_leaked_are_marked", goroutines_the_runtime_finds_leaked_are_marked, 27),
];

/// Every test for every Go version asked for, plain and stripped.
pub fn tests() -> Vec<libtest_mimic::Trial> {
    let mut trials = Vec::new();
    for minor in versions() {
        let installed = toolchain(minor).is_some();
        if !installed {
            eprintln!(
                "\n!!! SKIPPED the Go 1.{minor} tests: no toolchain (cargo xtask setup --go all) !!!\n"
            );
        }
        for stripped in [false, true] {
            for (name, test, _) in TESTS.into_iter().filter(|t| minor >= t.2) {
                let variant = if stripped { "-stripped" } else { "" };
                let trial =
                    libtest_mimic::Trial::test(format!("golang::{name}::go1.{minor}{variant}"), move || {
                        test(minor, stripped);
                        Ok(())
                    });
                trials.push(trial.with_ignored_flag(unprivileged_reason().is_some() || !installed));
            }
        }
    }
    trials
}

/// Whether every Go toolchain asked for is installed (`cargo xtask test` requires it).
pub fn toolchains_missing() -> Vec<u32> {
    versions().into_iter().filter(|v| toolchain(*v).is_none()).collect()
}

fn attach(f: &Scripted, args: &[&str]) -> Tracer {
    let mut all = vec!["--top", "0"];
    if !args.contains(&"--interval") {
        all.extend(["--interval", "1s"]);
    }
    all.extend_from_slice(args);
    Tracer::attach(f.pid(), &all)
}

/// The goroutine site created at `marker` (the `go` statement), if any.
fn go_site<'a>(report: &'a Value, f: &Scripted, marker: &str) -> Option<&'a Value> {
    let (file, line) = f.at(marker);
    sites_of_kind(report, "goroutine").into_iter().find(|s| {
        let frame = &s["frames"][0];
        frame["line"] == line && frame["file"].as_str().is_some_and(|p| p.ends_with(&file))
    })
}

/// Checks a report against the fixture's `expect site`, `wait` and `forever` lines.
fn check_goroutines(report: &Value, f: &Scripted) {
    let sites = sites_of_kind(report, "goroutine");
    let at = |site: &str| -> Vec<&Value> {
        let (file, line) = site.rsplit_once(':').unwrap();
        let line: u32 = line.parse().unwrap();
        sites
            .iter()
            .copied()
            .filter(|s| {
                s["frames"][0]["line"] == line
                    && s["frames"][0]["file"].as_str().is_some_and(|p| p.ends_with(file))
            })
            .collect()
    };
    for (site, v) in f.expected("site") {
        let n: u64 = v[0].parse().unwrap();
        let found = at(&site);
        let live: u64 = found.iter().map(|s| s["live_count"].as_u64().unwrap()).sum();
        assert_eq!(live, n, "live goroutines created at {site} ({v:?}): {found:#?}");
        if n > 0 {
            assert_eq!(
                found[0]["frames"][0]["function"], v[1],
                "the function with the go statement at {site}"
            );
            assert_eq!(found[0]["goroutines"]["start_function"], v[2], "start function at {site}");
        }
    }
    let by_start = |start: &str| -> Vec<&Value> {
        sites.iter().copied().filter(|s| s["goroutines"]["start_function"] == start).collect()
    };
    for (start, v) in f.expected("wait") {
        let n: u64 = v[0].parse().unwrap();
        let state = v[1..].join(" ");
        let got: u64 = by_start(&start)
            .iter()
            .map(|s| s["goroutines"]["wait_reasons"][&state].as_u64().unwrap_or(0))
            .sum();
        assert_eq!(got, n, "goroutines of {start} waiting on {state:?}");
    }
    for (start, v) in f.expected("forever") {
        let n: u64 = v[0].parse().unwrap();
        let got: u64 =
            by_start(&start).iter().map(|s| s["goroutines"]["blocked_forever"].as_u64().unwrap()).sum();
        assert_eq!(got, n, "goroutines of {start} that can never wake");
    }
}

/// Live goroutines per creation site, by the runtime's own dump.
fn runtime_counts(dump: &str) -> std::collections::BTreeMap<String, usize> {
    oracle::count_by_creation_site(&oracle::parse_goroutine_dump(dump).unwrap())
}

fn goroutines_exe(minor: u32, stripped: bool) -> std::path::PathBuf {
    build("goroutines", minor, stripped)
}

fn a_goroutine_leak_is_found_at_its_go_statement(minor: u32, stripped: bool) {
    let mut f = Scripted::start(&goroutines_exe(minor, stripped), &["blocked-send"], &[]);
    let mut tracer = attach(&f, &[]);
    f.command("go");
    // 50 leaked goroutines a second: a leak within ~15 s.
    let leaking = tracer.report_where(Duration::from_secs(30), |r| {
        go_site(r, &f, "go-fetch").is_some_and(|s| s["verdict"] == "leak")
    });
    let site = go_site(&leaking, &f, "go-fetch").unwrap();
    let first_leak = site["first_leak_s"].as_f64().unwrap();
    assert!(first_leak <= 15.0, "called a leak at {first_leak} s");
    f.command("stop");
    let dump = f.goroutine_dump();
    let run = tracer.stop();
    assert!(run.status.success(), "{}: {}", run.status, run.stderr);
    let report = run.final_report();
    assert_eq!(report["target"]["runtime"], "go");
    assert!(report["target"]["go_version"].as_str().is_some_and(|v| v.starts_with(&format!("go1.{minor}"))));
    let site = go_site(&report, &f, "go-fetch").expect("the go statement's site");
    assert_eq!(site["verdict"], "leak");
    let (file, line) = f.at("go-fetch");
    let runtime = runtime_counts(&dump)[&format!("{file}:{line}")] as u64;
    assert_eq!(
        site["live_count"], runtime,
        "live goroutines at {file}:{line}: leaktracer against the runtime"
    );
    assert_eq!(site["goroutines"]["start_function"], "main.fetch.func1");
    assert_eq!(site["goroutines"]["wait_reasons"]["chan send"], runtime, "every one parked on the send");
    assert_eq!(site["goroutines"]["blocked_forever"], 0, "a send on a live channel could wake");
    check_goroutines(&report, &f);
    run.objects.assert_gone();
    f.finish();
}

fn what_goroutines_wait_on_and_which_never_wake(minor: u32, stripped: bool) {
    for scenario in ["nil-chan", "all-waits", "range-unclosed"] {
        let mut f =
            Scripted::start(&goroutines_exe(minor, stripped), &[scenario, "-n", "20", "-mode", "batch"], &[]);
        let tracer = attach(&f, &["--interval", "1h"]);
        f.command("go");
        let dump = f.goroutine_dump();
        let run = tracer.stop();
        assert!(run.status.success(), "{scenario}: {}: {}", run.status, run.stderr);
        let report = run.final_report();
        check_goroutines(&report, &f);
        // Against the runtime: the same count at every creation site of main.
        for (site, n) in runtime_counts(&dump).into_iter().filter(|(s, _)| s.starts_with("goroutines.go")) {
            let (file, line) = site.rsplit_once(':').unwrap();
            let ours: u64 = sites_of_kind(&report, "goroutine")
                .into_iter()
                .filter(|s| s["frames"][0]["line"] == line.parse::<u32>().unwrap())
                .filter(|s| s["frames"][0]["file"].as_str().is_some_and(|p| p.ends_with(file)))
                .map(|s| s["live_count"].as_u64().unwrap())
                .sum();
            assert_eq!(ours, n as u64, "{scenario}: live goroutines created at {site}");
        }
        f.finish();
    }
}

fn pools_and_churn_are_stable(minor: u32, stripped: bool) {
    let exe = goroutines_exe(minor, stripped);
    let (mut pool, mut churn) =
        (Scripted::start(&exe, &["pool"], &[]), Scripted::start(&exe, &["churn"], &[]));
    let (pool_tracer, churn_tracer) =
        (attach(&pool, &["--duration", "13s"]), attach(&churn, &["--duration", "13s"]));
    pool.command("go");
    churn.command("go");
    for (tracer, f, marker) in [(pool_tracer, &mut pool, "go-pool"), (churn_tracer, &mut churn, "go-churn")] {
        let run = tracer.wait();
        assert!(run.status.success(), "{}: {}", run.status, run.stderr);
        let report = run.final_report();
        let site = go_site(&report, f, marker).unwrap_or_else(|| panic!("no site at {marker}: {report:#}"));
        assert_eq!(site["verdict"], "stable", "{marker}: {site:#}\ncoverage: {}", report["coverage"]);
        // Every goroutine counted as created and not as ended is live, whatever order the
        // scans and the events came in.
        let figure = |name: &str| site[name].as_u64().unwrap_or_else(|| panic!("{name}: {site:#}"));
        assert_eq!(figure("allocs") - figure("frees"), figure("live_count"), "{marker}: {site:#}");
        let leaks: Vec<&Value> =
            sites_of_kind(&report, "goroutine").into_iter().filter(|s| s["verdict"] == "leak").collect();
        assert!(leaks.is_empty(), "{marker}: no goroutine site is a leak: {leaks:#?}");
        f.command("stop");
    }
    let churned: u64 = churn.expected("created").iter().map(|(_, v)| v[0].parse::<u64>().unwrap()).sum();
    assert!(churned > 10_000, "the churn did churn: {churned}");
    pool.finish();
    churn.finish();
}

fn goroutines_from_before_attach_are_counted(minor: u32, stripped: bool) {
    let mut f = Scripted::start(&goroutines_exe(minor, stripped), &["preexisting", "-mode", "batch"], &[]);
    let tracer = attach(&f, &["--interval", "1h"]);
    f.command("go");
    let dump = f.goroutine_dump();
    let run = tracer.stop();
    assert!(run.status.success(), "{}: {}", run.status, run.stderr);
    let report = run.final_report();
    let site = go_site(&report, &f, "go-handler").expect("the handler's go statement");
    let (file, line) = f.at("go-handler");
    let runtime = runtime_counts(&dump)[&format!("{file}:{line}")] as u64;
    assert!(runtime >= 200, "200 before attach, more after: {runtime}");
    assert_eq!(site["live_count"], runtime, "goroutines from before attach and after, one site");
    assert_eq!(site["goroutines"]["wait_reasons"]["chan receive"], runtime);
    check_goroutines(&report, &f);
    f.finish();
}

fn growing_stacks_under_tracing_come_to_no_harm(minor: u32, stripped: bool) {
    let exe = goroutines_exe(minor, stripped);
    let args = ["stack-growth", "-mode", "batch", "-n", "2"];
    // Rounds are numbered across commands and workers finish in any order:
    // the same three commands give the same set of (worker, round, value) lines.
    let checksums = |output: &str| -> Vec<String> {
        let mut lines: Vec<String> =
            output.lines().filter(|l| l.starts_with("checksum")).map(str::to_string).collect();
        lines.sort();
        lines
    };
    let mut untraced = Scripted::start(&exe, &args, &[]);
    for _ in 0..3 {
        untraced.command("go");
    }
    let expected = checksums(&untraced.finish());
    assert_eq!(expected.len(), 3 * 2 * 4, "three commands of two rounds on four workers");
    let mut f = Scripted::start(&exe, &args, &[]);
    let tracer = attach(&f, &["--interval", "1h"]);
    f.command("go");
    f.command("go");
    let run = tracer.stop();
    assert!(run.status.success(), "{}: {}", run.status, run.stderr);
    // Goroutines made at the bottom of deep stacks are seen at their go statement.
    assert!(go_site(&run.final_report(), &f, "go-leafhelper").is_some());
    // The program goes on after detach, and exits normally, with the same results.
    f.command("go");
    assert_eq!(checksums(&f.finish()), expected, "the traced program computes the same");
}

fn a_defer_pile_and_the_files_it_holds(minor: u32, stripped: bool) {
    let exe = build("defers", minor, stripped);
    let files = crate::harness::scratch("defer-files");
    let dir = files.to_str().unwrap();
    let mut f = Scripted::start(&exe, &["both", "-mode", "batch"], &[("LT_DIR", dir), ("LT_FILES", "2000")]);
    let tracer = attach(&f, &["--interval", "1h"]);
    f.command("go");
    let open_now = std::fs::read_dir(format!("/proc/{}/fd", f.pid())).unwrap().count();
    let run = tracer.stop();
    assert!(run.status.success(), "{}: {}", run.status, run.stderr);
    let report = run.final_report();
    let line_of = |marker| f.at(marker).1;
    let at_line = |kind: &str, line: u32| -> Vec<Value> {
        sites_of_kind(&report, kind).into_iter().filter(|s| s["frames"][0]["line"] == line).cloned().collect()
    };
    let pile = at_line("defer", line_of("leaky-defer"));
    assert_eq!(pile.len(), 1, "one site for the defer statement: {pile:#?}");
    assert_eq!(pile[0]["live_count"], 2000, "the deferred calls waiting");
    assert_eq!(pile[0]["defers"]["largest_pile"], 2000, "all in one frame");
    assert_eq!(pile[0]["frames"][0]["function"], "main.processAllLeaky");
    // The files the pile holds open, at the os.Open beside it (through the syscall).
    let opened: Vec<Value> = sites_of_kind(&report, "fd")
        .into_iter()
        .filter(|s| s["frames"].as_array().unwrap().iter().any(|fr| fr["line"] == line_of("leaky-open")))
        .cloned()
        .collect();
    let held: u64 = opened.iter().map(|s| s["live_count"].as_u64().unwrap()).sum();
    assert_eq!(held, 2000, "descriptors opened at the os.Open of the loop: {opened:#?}");
    let ids: Vec<&str> = opened.iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert!(
        pile[0]["related_sites"].as_array().unwrap().iter().any(|id| ids.contains(&id.as_str().unwrap()))
    );
    // The fixed version: nothing outstanding at its defer, nothing held open.
    assert!(at_line("defer", line_of("fixed-defer")).iter().all(|s| s["live_count"] == 0));
    // Against /proc: every descriptor is known, each where the report says.
    assert_eq!(report["process"]["fds"].as_u64().unwrap(), open_now as u64);
    f.finish();
}

fn an_unbounded_cache_in_the_go_heap(minor: u32, stripped: bool) {
    let exe = build("goheap", minor, stripped);
    let mut f = Scripted::start(&exe, &["both"], &[("LT_RATE", "40")]);
    let tracer = attach(&f, &["--duration", "14s", "--kind", "goheap"]);
    f.command("go");
    let run = tracer.wait();
    f.command("stop");
    let profile = oracle::parse_heap_profile(&f.heap_profile()).unwrap();
    assert!(run.status.success(), "{}: {}", run.status, run.stderr);
    let report = run.final_report();
    assert_eq!(report["coverage"]["go_mem_profile_rate"], 524288);
    let at = |marker: &str| {
        let line = f.at(marker).1;
        sites_of_kind(&report, "goheap").into_iter().find(|s| s["frames"][0]["line"] == line).cloned()
    };
    let unbounded = at("unbounded-alloc").expect("the unbounded cache's site");
    assert_eq!(unbounded["verdict"], "leak", "{unbounded:#}");
    assert_eq!(unbounded["frames"][0]["function"], "main.loadUnbounded");
    if let Some(bounded) = at("bounded-alloc") {
        assert_ne!(bounded["verdict"], "leak", "{bounded:#}");
    }
    // The runtime's own profile names the same top site, and the estimates agree
    // within sampling error (each sample stands for ~8 objects of 64 KiB).
    let by_func = oracle::heap_by_main_func(&profile);
    let top = by_func.iter().max_by_key(|(_, t)| t.inuse_bytes).unwrap();
    assert_eq!(top.0, "main.loadUnbounded");
    let theirs = top.1.est_inuse_bytes;
    let ours = unbounded["live_bytes"].as_f64().unwrap();
    assert!((ours / theirs - 1.0).abs() < 0.35, "in-use bytes: leaktracer {ours}, runtime {theirs}");
    f.finish();
}

fn without_heap_profiling_it_says_so(minor: u32, stripped: bool) {
    let exe = build("noheap", minor, stripped);
    let mut f = Scripted::start(&exe, &["grow", "-mode", "batch"], &[]);
    let mut cmd = std::process::Command::new(LEAKTRACER);
    cmd.args(["attach", "--pid", &f.pid().to_string(), "--format", "text", "--interval", "1h"]);
    let tracer = Tracer::start(cmd);
    f.command("go");
    let run = tracer.stop();
    assert!(run.status.success(), "{}: {}", run.status, run.stderr);
    assert!(
        run.stdout.contains("MemProfileRate 0"),
        "the text report says the program does not profile its heap:\n{}",
        run.stdout
    );
    f.finish();
}

fn go_tool_pprof_reads_the_go_profiles(minor: u32, stripped: bool) {
    let mut f = Scripted::start(
        &goroutines_exe(minor, stripped),
        &["blocked-send", "-n", "40", "-mode", "batch"],
        &[],
    );
    let dir = scratch("go-profiles");
    let mut cmd = std::process::Command::new(LEAKTRACER);
    cmd.args([
        "attach",
        "--pid",
        &f.pid().to_string(),
        "--format",
        "json,pprof",
        "--interval",
        "1h",
        "--top",
        "0",
    ])
    .arg("--output-dir")
    .arg(&dir);
    let tracer = Tracer::start(cmd);
    f.command("go");
    let run = tracer.stop();
    assert!(run.status.success(), "{}: {}", run.status, run.stderr);
    let files: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path().to_str().unwrap().to_string()).collect();
    let file = |suffix: &str| {
        files.iter().find(|f| f.ends_with(suffix)).unwrap_or_else(|| panic!("{suffix}: {files:?}"))
    };
    let ndjson = std::fs::read_to_string(file(".ndjson")).unwrap();
    let report: Value = serde_json::from_str(ndjson.lines().last().unwrap()).unwrap();
    // Goroutines: the live ones by creation stack, as many as the report has.
    let live: u64 =
        sites_of_kind(&report, "goroutine").iter().map(|s| s["live_count"].as_u64().unwrap()).sum();
    let goroutines = file(".goroutine.pb.gz");
    assert!(go_pprof(&["-raw", goroutines]).contains("goroutine/count[dflt]"));
    let top = go_pprof(&["-top", "-symbolize=none", goroutines]);
    assert!(top.contains(&format!("of {live} total")), "{live} goroutines:\n{top}");
    let (_, v) = f.expected("site").into_iter().find(|(_, v)| v[0] != "0").expect("a leaking site");
    assert!(top.contains(&v[1]), "the function with the go statement, {}:\n{top}", v[1]);
    // The Go heap: the runtime's sample types, sampled every MemProfileRate bytes.
    let raw = go_pprof(&["-raw", file(".goheap.pb.gz")]);
    assert!(raw.contains("inuse_space/bytes[dflt]"), "{raw}");
    let rate = report["coverage"]["go_mem_profile_rate"].as_u64().unwrap();
    assert!(raw.contains(&format!("Period: {rate}")), "{raw}");
    f.finish();
}

fn goroutines_the_runtime_finds_leaked_are_marked(minor: u32, stripped: bool) {
    let mut f = Scripted::start(
        &goroutines_exe(minor, stripped),
        &["blocked-send", "-n", "30", "-mode", "batch"],
        &[],
    );
    let mut tracer = attach(&f, &["--interval", "1s"]);
    f.command("go");
    // Blocked on a live channel: nobody can tell yet that they never wake.
    let before = tracer.report_where(Duration::from_secs(20), |r| {
        go_site(r, &f, "go-fetch").is_some_and(|s| s["live_count"].as_u64() >= Some(30))
    });
    assert_eq!(go_site(&before, &f, "go-fetch").unwrap()["goroutines"]["blocked_forever"], 0);
    // The runtime's leak detector finds their channels unreachable and marks them
    // _Gleaked; the next scan of allgs sees it.
    f.request("leakcheck", "dumped goroutineleak", Duration::from_secs(60));
    let dump = std::fs::read_to_string(f.dir.join("leaks")).unwrap();
    let leaked = oracle::parse_goroutine_dump(&dump).unwrap().into_iter().filter(|g| g.leaked).count() as u64;
    assert!(leaked >= 30, "the runtime found the blocked senders leaked: {leaked}");
    let after = tracer.report_where(Duration::from_secs(20), |r| {
        go_site(r, &f, "go-fetch")
            .is_some_and(|s| s["goroutines"]["blocked_forever"].as_u64() == Some(leaked))
    });
    assert_eq!(go_site(&after, &f, "go-fetch").unwrap()["live_count"], leaked);
    let run = tracer.stop();
    assert!(run.status.success(), "{}: {}", run.status, run.stderr);
    f.finish();
}
