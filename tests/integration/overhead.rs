//! The cheaper ways of tracing must not change what is found: probes moved past the
//! first instruction see what entry probes see; sampling estimates without bias; a storm
//! of events overflowing the ring is counted, and memory stays bounded.

use serde_json::Value;

use crate::harness::*;

/// This module's tests.
pub fn tests() -> Vec<libtest_mimic::Trial> {
    trials![
        fast_placement_sees_what_entry_probes_see,
        sampling_estimates_without_bias_and_drops_unsampled_frees,
        a_storm_is_counted_and_memory_stays_bounded
    ]
}

fn trace(source: &str, args: &[&str]) -> Value {
    let mut fixture = Fixture::start(&fixture(source));
    let mut all = vec!["--top", "0", "--interval", "1h"];
    all.extend_from_slice(args);
    let tracer = Tracer::attach(fixture.pid(), &all);
    fixture.go();
    let run = tracer.stop();
    assert!(run.status.success(), "{}: {}", run.status, run.stderr);
    fixture.finish();
    run.final_report()
}

/// Sites, as comparable data: everything but ids, ages and run-dependent addresses.
fn sites(report: &Value) -> Vec<String> {
    let mut out: Vec<String> = memory_sites(report)
        .map(|s| {
            let frames: Vec<String> = s["frames"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| format!("{}:{}:{}", f["function"], f["file"], f["line"]))
                .collect();
            format!(
                "{} {} {} live {}/{} allocs {} frees {} | {}",
                s["kind"],
                s["allocator"],
                s["backing"],
                s["live_count"],
                s["live_bytes"],
                s["allocs"],
                s["frees"],
                frames.join(" < ")
            )
        })
        .collect();
    out.sort();
    out
}

fn fast_placement_sees_what_entry_probes_see() {
    let entry = trace("alloc_family.c", &["--probe-placement", "entry"]);
    let fast = trace("alloc_family.c", &["--probe-placement", "fast"]);
    assert_eq!(sites(&fast), sites(&entry));
    assert_eq!(fast["coverage"]["events"], entry["coverage"]["events"]);
    assert_eq!(fast["coverage"]["unknown_frees"], entry["coverage"]["unknown_frees"]);
}

fn sampling_estimates_without_bias_and_drops_unsampled_frees() {
    const RATE: f64 = 65536.0;
    const RUNS: usize = 5;
    // (function, blocks, bytes each): far below the interval, around it, at it, far above.
    let classes: [(&str, f64, f64); 4] = [
        ("keep_tiny", 40_000.0, 64.0),
        ("leak_pages", 20_000.0, 4096.0),
        ("keep_mid", 200.0, 65536.0),
        ("keep_large", 40.0, 1048576.0),
    ];
    let mut ratios = vec![0.0; classes.len()];
    for _ in 0..RUNS {
        let report = trace("sampling.c", &["--sample-bytes", "65536"]);
        assert_eq!(report["coverage"]["sample_bytes"], 65536);
        for (i, (function, n, _)) in classes.iter().enumerate() {
            let estimate =
                sites_at(&report, function).iter().map(|s| s["live_count"].as_f64().unwrap()).sum::<f64>();
            ratios[i] += estimate / n / RUNS as f64;
        }
        // Every sampled churn block was freed, and seen freed.
        for site in sites_at(&report, "churn") {
            assert_eq!(live(site).0, 0, "{site}");
        }
        // Far fewer events than the 100,000 allocations and 20,000 frees.
        assert!(report["coverage"]["events"].as_u64().unwrap() < 10_000, "{}", report["coverage"]);
    }
    // Each block is drawn with p = 1 - exp(-size/RATE) and counts 1/p: the estimate of n
    // blocks has a relative standard deviation of sqrt((1 - p) / (n p)); over the runs,
    // that over sqrt(RUNS). Unbiased: the mean is within four of them of the truth.
    for ((function, n, size), ratio) in classes.iter().zip(&ratios) {
        let p = 1.0 - (-size / RATE).exp();
        let sigma = ((1.0 - p) / (n * p)).sqrt() / (RUNS as f64).sqrt();
        assert!(
            (ratio - 1.0).abs() <= 4.0 * sigma + 1e-9,
            "{function}: mean estimate {ratio:.4} of the truth, sigma {sigma:.4}"
        );
    }
}

fn a_storm_is_counted_and_memory_stays_bounded() {
    let workload = scratch("storm").join("alloc_heavy");
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/bench/alloc_heavy.c");
    let ok = std::process::Command::new("gcc")
        .args(["-O2", "-pthread", "-o"])
        .arg(&workload)
        .arg(&src)
        .status()
        .unwrap();
    assert!(ok.success());
    // A 1 MiB ring, and a cap of 1,000 live blocks for a workload that keeps about 6,000.
    let mut time = std::process::Command::new("/usr/bin/time")
        .args([
            "-f",
            "maxrss_kib %M",
            LEAKTRACER,
            "run",
            "--format",
            "json",
            "--ring-mib",
            "1",
            "--max-live",
            "1000",
            "--",
        ])
        .arg(&workload)
        .arg("2000000")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = lines_of(time.stderr.take().unwrap());
    let mut seen = String::new();
    let target: u32 = loop {
        let line = stderr
            .recv_timeout(std::time::Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("no banner within 60 s ({e}):\n{seen}"));
        seen.push_str(&line);
        if let Some(rest) = line.strip_prefix("leaktracer: tracing pid ") {
            break rest.split(' ').next().unwrap().parse().unwrap();
        }
    };
    // Whether a fast reader keeps up is up to the machine; a reader that stops does not.
    // Once the workload runs (exec done, out of its ptrace stops), stop leaktracer for
    // half a second: the kernel side keeps writing, the 1 MiB ring overflows.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !running(target, &workload) {
        assert!(std::time::Instant::now() < deadline, "the workload never started");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let time_pid = time.id();
    let tracer: i32 = std::fs::read_to_string(format!("/proc/{time_pid}/task/{time_pid}/children"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // SAFETY: stopping and continuing a process we started (through /usr/bin/time).
    unsafe { libc::kill(tracer, libc::SIGSTOP) };
    std::thread::sleep(std::time::Duration::from_millis(500));
    // SAFETY: as above.
    unsafe { libc::kill(tracer, libc::SIGCONT) };
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut time.stdout.take().unwrap(), &mut stdout).unwrap();
    seen.extend(stderr.iter());
    assert!(time.wait().unwrap().success(), "{seen}");
    let report: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let coverage = &report["coverage"];
    assert!(
        coverage["lost_events"].as_u64().unwrap() > 0,
        "a stopped reader overflows a 1 MiB ring: {coverage}"
    );
    assert!(coverage["dropped"].as_u64().unwrap() > 0, "the live table is full: {coverage}");
    assert!(report["process"]["heap_live_blocks"].as_u64().unwrap() <= 1_000, "{}", report["process"]);
    let kib: u64 = seen.lines().find_map(|l| l.strip_prefix("maxrss_kib ")).unwrap().trim().parse().unwrap();
    assert!(kib < 200 * 1024, "leaktracer's peak RSS: {kib} KiB");
}

/// Whether `pid` runs `exe` and is not held in a ptrace or job-control stop.
fn running(pid: u32, exe: &std::path::Path) -> bool {
    let Ok(now) = std::fs::read_link(format!("/proc/{pid}/exe")) else { return false };
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    // The state follows the parenthesized command name.
    let state = stat.rsplit_once(") ").and_then(|(_, rest)| rest.chars().next());
    now == exe && matches!(state, Some('R' | 'S' | 'D'))
}
