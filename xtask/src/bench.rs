//! `cargo xtask bench`: whole-run costs, measured side by side. Every configuration runs
//! the same fixed workload, in turns (A B C A B C ...), so drift hits all alike; the
//! workload times its own allocator loop, so start-up, attach and detach are left out.
//! Reported: median and min-max of the loop's time, the time added per allocator call
//! against the untraced run, and ratios.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::{cmd, setup};

/// One way of running the workload.
struct Config {
    name: &'static str,
    /// leaktracer arguments, or `None` for the untraced workload.
    tracer: Option<&'static [&'static str]>,
}

const CONFIGS: &[Config] = &[
    Config { name: "untraced", tracer: None },
    Config { name: "traced, no stacks", tracer: Some(&["--unwind", "none"]) },
    Config { name: "traced, frame-pointer stacks", tracer: Some(&["--unwind", "frame-pointers"]) },
    Config { name: "traced, eh_frame stacks (default)", tracer: Some(&["--unwind", "eh-frame"]) },
    Config { name: "traced, stack copies unwound in user", tracer: Some(&["--unwind", "copy"]) },
];

pub fn run(runs: usize, iterations: u64) -> anyhow::Result<()> {
    let env = setup::run()?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    cmd::run(cmd::cargo(&env).args(["build", "--release", "--package", "leaktracer"]))?;
    let out = root.join("target/bench");
    std::fs::create_dir_all(&out)?;
    let workload = out.join("alloc_heavy");
    // With frame pointers, so that both walks go all the way and cost what they cost.
    cmd::run(
        Command::new("gcc")
            .args(["-O2", "-g", "-fno-omit-frame-pointer", "-o"])
            .arg(&workload)
            .arg(root.join("tests/bench/alloc_heavy.c")),
    )?;
    let tracer = root.join("target/release/leaktracer");

    // Warm-up: page cache, CPU frequency.
    measure(&tracer, &workload, &CONFIGS[0], iterations)?;
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); CONFIGS.len()];
    let mut calls = 0;
    for round in 0..runs {
        for (i, config) in CONFIGS.iter().enumerate() {
            let (c, secs) = measure(&tracer, &workload, config, iterations)?;
            calls = c;
            times[i].push(secs);
            eprintln!("xtask: run {}/{runs}: {:<36} {secs:.3} s", round + 1, config.name);
        }
    }

    let stats: Vec<(f64, f64, f64)> = times.iter().map(|t| summary(t)).collect();
    let base = stats[0].0;
    println!("\nworkload: {iterations} iterations, {calls} allocator calls; {runs} runs of each, in turns");
    println!(
        "{:<36} {:>10} {:>21} {:>14} {:>8}",
        "configuration", "median s", "min - max s", "+us per call", "ratio"
    );
    for (config, (median, min, max)) in CONFIGS.iter().zip(&stats) {
        let added = (median - base) / calls as f64 * 1e6;
        println!(
            "{:<36} {median:>10.3} {:>21} {added:>14.3} {:>8.2}",
            config.name,
            format!("{min:.3} - {max:.3}"),
            median / base
        );
    }
    let per_call = |i: usize| (stats[i].0 - stats[1].0) / calls as f64 * 1e6;
    println!(
        "\nstack capture per allocator call (over tracing without stacks): frame pointers {:.3} us, \
         eh_frame {:.3} us, stack copies {:.3} us (eh_frame / frame pointers = {:.2})",
        per_call(2),
        per_call(3),
        per_call(4),
        per_call(3) / per_call(2)
    );
    Ok(())
}

/// Runs the workload once; returns (allocator calls, seconds in the allocator loop).
fn measure(
    tracer: &Path,
    workload: &PathBuf,
    config: &Config,
    iterations: u64,
) -> anyhow::Result<(u64, f64)> {
    let mut command = match config.tracer {
        None => Command::new(workload),
        Some(args) => {
            let mut c = Command::new(tracer);
            c.arg("run").args(args).args(["--output", "/dev/null", "--"]).arg(workload);
            c
        }
    };
    command.arg(iterations.to_string());
    let out = command.output().with_context(|| format!("cannot run {}", config.name))?;
    if !out.status.success() {
        bail!("{} failed: {}", config.name, String::from_utf8_lossy(&out.stderr));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let words: Vec<&str> = stdout.split_whitespace().collect();
    match words.as_slice() {
        ["calls", calls, "elapsed_ns", ns, ..] => Ok((calls.parse()?, ns.parse::<f64>()? / 1e9)),
        _ => bail!("unexpected workload output: {stdout}"),
    }
}

/// (median, min, max)
fn summary(values: &[f64]) -> (f64, f64, f64) {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let median = if v.len() % 2 == 1 { v[v.len() / 2] } else { (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0 };
    (median, v[0], v[v.len() - 1])
}
