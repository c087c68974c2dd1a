//! `cargo xtask soak`: a long session on a busy target (tests/bench/soak.c: a million
//! live blocks, threads started and ended all the time, allocations churning), with
//! leaktracer's own memory sampled every 10 s. Its figures go in BENCHMARKS.md; CI does
//! not run it.

use std::{
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;

use crate::{cmd, setup};

pub fn run(minutes: u64) -> anyhow::Result<()> {
    let env = setup::run()?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    cmd::run(cmd::cargo(&env).args(["build", "--release", "--package", "leaktracer"]))?;
    let out = root.join("target/bench");
    std::fs::create_dir_all(&out)?;
    let workload = out.join("soak");
    cmd::run(
        Command::new("gcc")
            .args(["-O2", "-g", "-fno-omit-frame-pointer", "-pthread", "-o"])
            .arg(&workload)
            .arg(root.join("tests/bench/soak.c")),
    )?;
    let report = out.join(format!("soak-{}.ndjson", std::process::id()));
    let mut tracer = Command::new(root.join("target/release/leaktracer"))
        .args([
            "run",
            "--format",
            "json",
            "--interval",
            "60s",
            "--duration",
            &format!("{minutes}m"),
            "--output",
        ])
        .arg(&report)
        .arg("--")
        .arg(&workload)
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start leaktracer")?;
    let threads = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&threads);
    let stdout = tracer.stdout.take().context("stdout")?;
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(n) = line.strip_prefix("threads ").and_then(|n| n.parse().ok()) {
                counter.store(n, Ordering::Relaxed);
            }
        }
    });
    println!("minute  leaktracer RSS MiB  peak MiB  target threads started");
    let started = Instant::now();
    let mut peak = 0;
    while tracer.try_wait()?.is_none() {
        std::thread::sleep(Duration::from_secs(10));
        let (rss, hwm) = memory(tracer.id());
        peak = peak.max(hwm);
        let minute = started.elapsed().as_secs_f64() / 60.0;
        println!("{minute:6.1}  {:18.1}  {:8.1}  {}", mib(rss), mib(hwm), threads.load(Ordering::Relaxed));
    }
    let text = std::fs::read_to_string(&report)?;
    let last = text.lines().last().unwrap_or_default();
    let value: serde_json::Value = serde_json::from_str(last).context("the final report")?;
    println!("\nsoak of {minutes} min: leaktracer's peak RSS {:.1} MiB", mib(peak));
    println!("process: {}", value["process"]);
    println!("coverage: {}", value["coverage"]);
    println!("(the reports: {})", report.display());
    Ok(())
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

/// (VmRSS, VmHWM) of a process, bytes; zeros once it is gone.
fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}
