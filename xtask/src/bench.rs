//! `cargo xtask bench`: whole-run costs, measured side by side. Every configuration runs
//! the same fixed workload, in turns (A B C A B C ...), so drift hits all alike; the
//! workload times its own allocator loop, so start-up, attach and detach are left out.
//! Reported: median and min-max of the loop's time, the time added per allocator call
//! against the untraced run, and ratios. Then: attach time, memory per live allocation,
//! and the aggregator's throughput (criterion).

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, bail};

use crate::{cmd, setup};

/// One way of running the workload.
struct Config {
    name: &'static str,
    how: How,
}

enum How {
    Untraced,
    /// leaktracer run with these arguments.
    Tracer(&'static [&'static str]),
    /// bpftrace -c with this script (`LIBC` replaced by libc's path).
    Bpftrace(&'static str),
    /// heaptrack (LD_PRELOAD; launch only), recording raw data.
    Heaptrack,
}

/// A memleak-style bpftrace script, as any user can write one: the size saved by thread at
/// malloc's entry, address, size and user stack recorded at its return, deleted at free.
const BPFTRACE_MEMLEAK: &str = r#"
uprobe:LIBC:malloc /pid == cpid/ { @size[tid] = arg0; }
uretprobe:LIBC:malloc /pid == cpid && @size[tid]/ { @live[retval] = (@size[tid], ustack); delete(@size[tid]); }
uprobe:LIBC:free /pid == cpid/ { delete(@live[arg0]); }
END { clear(@live); clear(@size); }
"#;

const STACK_CONFIGS: &[Config] = &[
    Config { name: "untraced", how: How::Untraced },
    Config { name: "traced, no stacks", how: How::Tracer(&["--unwind", "none"]) },
    Config { name: "traced, frame-pointer stacks", how: How::Tracer(&["--unwind", "frame-pointers"]) },
    Config { name: "traced, eh_frame stacks (default)", how: How::Tracer(&["--unwind", "eh-frame"]) },
    Config { name: "traced, stack copies unwound in user", how: How::Tracer(&["--unwind", "copy"]) },
];

const OVERHEAD_CONFIGS: &[Config] = &[
    Config { name: "untraced", how: How::Untraced },
    Config { name: "floor: empty programs, same probes", how: How::Tracer(&["--bench-floor"]) },
    Config { name: "leaktracer, full tracing", how: How::Tracer(&[]) },
    Config { name: "leaktracer, probes at entries", how: How::Tracer(&["--probe-placement", "entry"]) },
    Config { name: "leaktracer, --sample-bytes 524288", how: How::Tracer(&["--sample-bytes", "524288"]) },
    Config { name: "leaktracer, --mode growth", how: How::Tracer(&["--mode", "growth"]) },
    Config { name: "heaptrack (LD_PRELOAD)", how: How::Heaptrack },
    Config { name: "bpftrace memleak-style script", how: How::Bpftrace(BPFTRACE_MEMLEAK) },
];

/// The floor's row in `OVERHEAD_CONFIGS`, and the rows compared with it.
const FLOOR: usize = 1;
const FULL: usize = 2;
const SAMPLED: usize = 4;
const BPFTRACE: usize = 7;

/// The growth mode on a workload ten times longer: its cost is per page first touched,
/// not per call, so it shows once the working set is in place.
const GROWTH_CONFIGS: &[Config] = &[
    Config { name: "untraced", how: How::Untraced },
    Config { name: "leaktracer, --mode growth", how: How::Tracer(&["--mode", "growth"]) },
];

const GO_CONFIGS: &[Config] = &[
    Config { name: "untraced", how: How::Untraced },
    Config { name: "leaktracer (goroutines, defers, Go heap)", how: How::Tracer(&[]) },
];

pub fn run(runs: usize, iterations: u64, only: Option<&str>) -> anyhow::Result<()> {
    let env = setup::run()?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    cmd::run(cmd::cargo(&env).args(["build", "--release", "--package", "leaktracer"]))?;
    let out = root.join("target/bench");
    std::fs::create_dir_all(&out)?;
    let workload = out.join("alloc_heavy");
    // With frame pointers, so that both walks go all the way and cost what they cost.
    cmd::run(
        Command::new("gcc")
            .args(["-O2", "-g", "-fno-omit-frame-pointer", "-pthread", "-o"])
            .arg(&workload)
            .arg(root.join("tests/bench/alloc_heavy.c")),
    )?;
    let bench = Bench { tracer: root.join("target/release/leaktracer"), workload, iterations };
    let want = |part: &str| only.is_none_or(|o| o == part);

    if want("overhead") {
        println!("\n## Overhead against the floor and the peers");
        let t = bench.table(OVERHEAD_CONFIGS, runs, &[])?;
        let added = |i: usize| t.added_us(i);
        println!(
            "\nadded per call: floor {:.3} us, full {:.3} us ({:.2}x the floor; bpftrace adds {:.1}x more), \
             sampled {:.3} us ({:.2}x the floor)",
            added(FLOOR),
            added(FULL),
            added(FULL) / added(FLOOR),
            added(BPFTRACE) / added(FULL),
            added(SAMPLED),
            added(SAMPLED) / added(FLOOR),
        );
    }
    if want("growth") {
        println!("\n## Growth mode, ten times the iterations");
        let long = Bench { iterations: bench.iterations * 10, ..bench.clone() };
        let t = long.table(GROWTH_CONFIGS, runs, &[])?;
        println!("\ngrowth mode: {:+.1}% on the loop", (t.medians[1] / t.medians[0] - 1.0) * 100.0);
    }
    if want("go") {
        go_bench(&root, &out, &bench.tracer, runs)?;
    }
    if want("stacks") {
        println!("\n## Stack capture");
        let t = bench.table(STACK_CONFIGS, runs, &[])?;
        let per_call = |i: usize| t.added_us(i) - t.added_us(1);
        println!(
            "\nstack capture per allocator call (over tracing without stacks): frame pointers {:.3} us, \
             eh_frame {:.3} us, stack copies {:.3} us (eh_frame / frame pointers = {:.2})",
            per_call(2),
            per_call(3),
            per_call(4),
            per_call(3) / per_call(2)
        );
    }
    if want("attach") {
        println!("\n## Attach, first report, detach (a process with 100 threads)");
        bench.attach_times(runs)?;
    }
    if want("memory") {
        println!("\n## Memory per live allocation");
        bench.memory_per_allocation()?;
    }
    if want("aggregator") {
        println!("\n## Aggregator throughput");
        cmd::run(cmd::cargo(&env).args(["bench", "--package", "leaktracer", "--bench", "aggregate"]))?;
    }
    Ok(())
}

#[derive(Clone)]
struct Bench {
    tracer: PathBuf,
    workload: PathBuf,
    iterations: u64,
}

struct Table {
    medians: Vec<f64>,
    calls: u64,
}

impl Table {
    fn added_us(&self, i: usize) -> f64 {
        (self.medians[i] - self.medians[0]) / self.calls as f64 * 1e6
    }
}

impl Bench {
    fn table(&self, configs: &[Config], runs: usize, args: &[&str]) -> anyhow::Result<Table> {
        // Warm-up: page cache, CPU frequency.
        self.measure(&configs[0], args)?;
        let mut times: Vec<Vec<f64>> = vec![Vec::new(); configs.len()];
        let mut calls = 0;
        for round in 0..runs {
            for (i, config) in configs.iter().enumerate() {
                let (c, secs) = self.measure(config, args)?;
                calls = c;
                times[i].push(secs);
                eprintln!("xtask: run {}/{runs}: {:<40} {secs:.3} s", round + 1, config.name);
            }
        }
        let stats: Vec<(f64, f64, f64)> = times.iter().map(|t| summary(t)).collect();
        let base = stats[0].0;
        println!(
            "\nworkload: {} iterations, {calls} allocator calls; {runs} runs of each, in turns",
            self.iterations
        );
        // Ratios to the floor (same probes, empty programs) when the table has one.
        let floor = configs.iter().position(|c| c.name.starts_with("floor")).map(|i| stats[i].0 - base);
        println!(
            "{:<42} {:>10} {:>21} {:>13} {:>11} {:>9}",
            "configuration", "median s", "min - max s", "+us per call", "x untraced", "x floor"
        );
        for (config, (median, min, max)) in configs.iter().zip(&stats) {
            let added = (median - base) / calls as f64 * 1e6;
            let to_floor = floor
                .filter(|f| *f > 0.0)
                .map_or(String::from("-"), |f| format!("{:.2}", (median - base) / f));
            println!(
                "{:<42} {median:>10.3} {:>21} {added:>13.3} {:>11.2} {to_floor:>9}",
                config.name,
                format!("{min:.3} - {max:.3}"),
                median / base
            );
        }
        Ok(Table { medians: stats.iter().map(|s| s.0).collect(), calls })
    }

    /// Runs the workload once; returns (allocator calls, seconds in the allocator loop).
    fn measure(&self, config: &Config, workload_args: &[&str]) -> anyhow::Result<(u64, f64)> {
        let mut workload = vec![self.workload.display().to_string(), self.iterations.to_string()];
        workload.extend(workload_args.iter().map(|a| a.to_string()));
        let mut command = match config.how {
            How::Untraced => {
                let mut c = Command::new(&workload[0]);
                c.args(&workload[1..]);
                c
            }
            How::Tracer(args) => {
                let mut c = Command::new(&self.tracer);
                c.arg("run").args(args).args(["--output", "/dev/null", "--"]).args(&workload);
                c
            }
            How::Bpftrace(script) => {
                let mut c = Command::new("bpftrace");
                c.arg("-e").arg(script.replace("LIBC", &libc_path()?)).arg("-c").arg(workload.join(" "));
                c
            }
            How::Heaptrack => {
                // Its data file goes to the working directory: a scratch one, emptied after.
                let dir = self.workload.with_file_name("heaptrack");
                std::fs::create_dir_all(&dir)?;
                let mut c = Command::new("heaptrack");
                c.current_dir(&dir).arg("--raw").args(&workload);
                c
            }
        };
        let out = command.output().with_context(|| format!("cannot run {}", config.name))?;
        if !out.status.success() {
            bail!("{} failed: {}", config.name, String::from_utf8_lossy(&out.stderr));
        }
        if matches!(config.how, How::Heaptrack) {
            let _ = std::fs::remove_dir_all(self.workload.with_file_name("heaptrack"));
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout.lines().find(|l| l.starts_with("calls ")).unwrap_or_default();
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["calls", calls, "elapsed_ns", ns, ..] => Ok((calls.parse()?, ns.parse::<f64>()? / 1e9)),
            _ => bail!("unexpected workload output: {stdout}"),
        }
    }

    /// Times from starting leaktracer to "tracing", to the first report, and to its exit
    /// (detaching) on a process with 100 threads.
    fn attach_times(&self, runs: usize) -> anyhow::Result<()> {
        let mut rows = Vec::new();
        let mut kernel = Vec::new();
        for _ in 0..runs {
            let mut target =
                Command::new(&self.workload).args(["0", "threads", "100"]).stdout(Stdio::piped()).spawn()?;
            let mut lines = BufReader::new(target.stdout.take().context("stdout")?).lines();
            while let Some(line) = lines.next().transpose()? {
                if line.starts_with("ready") {
                    break;
                }
            }
            let start = Instant::now();
            let mut tracer = Command::new(&self.tracer)
                .args([
                    "attach",
                    "--pid",
                    &target.id().to_string(),
                    "--interval",
                    "100ms",
                    "--duration",
                    "150ms",
                ])
                .args(["--format", "json", "-v"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()?;
            let mut stderr = BufReader::new(tracer.stderr.take().context("stderr")?).lines();
            let mut kernel_mib = f64::NAN;
            while let Some(line) = stderr.next().transpose()? {
                if let Some(mib) = line.split("kernel memory of this session: ").nth(1) {
                    kernel_mib = mib.trim_end_matches(" MiB").parse().unwrap_or(f64::NAN);
                }
                if line.starts_with("leaktracer: tracing") {
                    break;
                }
            }
            let attached = start.elapsed().as_secs_f64();
            let mut stdout = BufReader::new(tracer.stdout.take().context("stdout")?).lines();
            stdout.next().transpose()?;
            let first_report = start.elapsed().as_secs_f64();
            for _ in stdout.by_ref() {}
            tracer.wait()?;
            let exited = start.elapsed().as_secs_f64();
            let _ = target.kill();
            let _ = target.wait();
            rows.push((attached, first_report, exited));
            kernel.push(kernel_mib);
        }
        let column = |f: fn(&(f64, f64, f64)) -> f64| summary(&rows.iter().map(f).collect::<Vec<_>>());
        for (name, (median, min, max)) in [
            ("attached (probes in place)", column(|r| r.0)),
            ("first report (--interval 100ms)", column(|r| r.1)),
            ("exited (final report, detached)", column(|r| r.2)),
        ] {
            println!("{name:<36} median {median:.3} s  (min {min:.3}, max {max:.3})");
        }
        let (median, min, max) = summary(&kernel);
        println!(
            "kernel memory of the session (maps and programs, as charged): median {median:.1} MiB (min {min:.1}, max {max:.1})"
        );
        Ok(())
    }

    /// leaktracer's peak RSS tracing a workload that holds 1,000,000 blocks, against one
    /// that holds none: bytes per live allocation, everything included.
    fn memory_per_allocation(&self) -> anyhow::Result<()> {
        const BLOCKS: u64 = 1_000_000;
        let peak = |blocks: u64| -> anyhow::Result<u64> {
            let out = Command::new("/usr/bin/time")
                .args(["-f", "maxrss_kib %M"])
                .arg(&self.tracer)
                .args(["run", "--output", "/dev/null", "--"])
                .arg(&self.workload)
                .args(["0", "hold", &blocks.to_string()])
                .output()?;
            let stderr = String::from_utf8_lossy(&out.stderr);
            let kib: u64 = stderr
                .lines()
                .find_map(|l| l.strip_prefix("maxrss_kib "))
                .context("no maxrss from /usr/bin/time")?
                .trim()
                .parse()?;
            Ok(kib * 1024)
        };
        let (none, held) = (peak(0)?, peak(BLOCKS)?);
        println!(
            "userspace: {:.1} bytes per live allocation ({} blocks: peak RSS {:.1} MiB against {:.1} MiB); \
             kernel maps: none per allocation when every allocation is traced",
            (held.saturating_sub(none)) as f64 / BLOCKS as f64,
            BLOCKS,
            held as f64 / 1048576.0,
            none as f64 / 1048576.0
        );
        Ok(())
    }
}

fn libc_path() -> anyhow::Result<String> {
    let out = Command::new("ldconfig").arg("-p").output()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.trim_start().starts_with("libc.so.6") && l.contains("x86-64"))
        .and_then(|l| l.rsplit("=> ").next())
        .map(|p| p.trim().to_string())
        .context("libc.so.6 not found by ldconfig")
}

/// (median, min, max)
fn summary(values: &[f64]) -> (f64, f64, f64) {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let median = if v.len() % 2 == 1 { v[v.len() / 2] } else { (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0 };
    (median, v[0], v[v.len() - 1])
}

/// The Go runtime probes' cost: goroutines created and ended, and parks, each timed
/// from inside a Go program (Go 1.27), untraced and traced, side by side.
fn go_bench(root: &Path, out: &Path, tracer: &Path, runs: usize) -> anyhow::Result<()> {
    let go = setup::go_tool(27).context("Go 1.27 is not installed (cargo xtask setup)")?;
    let exe = out.join("gochurn");
    cmd::run(&mut setup::go_build(&go, &root.join("tests/bench/gochurn"), &out.join("gocache"), &exe))?;
    let bench = Bench { tracer: tracer.to_path_buf(), workload: exe, iterations: 200_000 };
    for (mode, what) in [("create", "goroutine created and ended"), ("park", "park")] {
        println!("\n## Go: {what} (Go 1.27)");
        let t = bench.table(GO_CONFIGS, runs, &[mode])?;
        println!("\nadded per {what}: {:.3} us", t.added_us(1));
    }
    Ok(())
}
