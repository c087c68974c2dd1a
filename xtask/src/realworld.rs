//! `cargo xtask realworld`: leaktracer on software nobody here wrote, under load on
//! 127.0.0.1 only, bounded in count and time. Debian's redis-server (its jemalloc) with
//! a bounded keyspace (nothing may be a suspect) and an unbounded one (the key and value
//! sites must be `leak` within 15 s, with a time to the memory limit); `python3 -m
//! http.server` under GETs (no suspects, unknown frees under 0.1% of events); a C
//! program that starts a thread per request (no unknown frees). Fails when a check
//! fails. `--seconds` sets each run's length (CI: 20; BENCHMARKS.md: 120, with redis's
//! requests/s traced and untraced).

use std::{
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use serde_json::Value;

use crate::{cmd, setup};

/// Functions on the stacks of redis's key and value allocations for SET.
const KEY_VALUE: &[&str] = &[
    "sdsnewlen",
    "sdsdup",
    "createStringObject",
    "createEmbeddedStringObject",
    "createRawStringObject",
    "dictAddRaw",
];

struct World {
    tracer: PathBuf,
    out: PathBuf,
    seconds: u64,
}

pub fn run(seconds: u64) -> anyhow::Result<()> {
    ensure!(seconds >= 20, "--seconds: at least 20 (a leak must be called within 15 s)");
    let env = setup::run()?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    cmd::run(cmd::cargo(&env).args(["build", "--release", "--package", "leaktracer"]))?;
    let out = root.join("target/realworld");
    std::fs::create_dir_all(&out)?;
    let world = World { tracer: root.join("target/release/leaktracer"), out, seconds };
    let mut failures = Vec::new();
    let mut check = |name: &str, result: anyhow::Result<String>| match result {
        Ok(summary) => println!("ok    {name}: {summary}"),
        Err(e) => {
            println!("FAIL  {name}: {e:#}");
            failures.push(name.to_string());
        }
    };
    check("redis, bounded keyspace", world.redis(10_000, false));
    check("redis, unbounded keyspace", world.redis(100_000_000, true));
    check("python3 -m http.server", world.http_server());
    check("a thread per request", world.threads(&root));
    if seconds >= 60 {
        check("redis requests/s, traced and untraced", world.redis_overhead());
    }
    ensure!(failures.is_empty(), "realworld checks failed: {}", failures.join(", "));
    Ok(())
}

/// A child killed (and reaped) when dropped.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(cmd: &mut Command) -> anyhow::Result<Guard> {
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    Ok(Guard(child))
}

/// redis-benchmark sending `requests` SETs over `keyspace` keys from 8 clients, quietly.
fn redis_sets(port: u16, keyspace: u64, requests: u64) -> Command {
    let mut load = Command::new("redis-benchmark");
    load.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-t", "set"]).args([
        "-r",
        &keyspace.to_string(),
        "-n",
        &requests.to_string(),
        "-c",
        "8",
        "-q",
    ]);
    load
}

/// A free TCP port on 127.0.0.1.
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn wait_for_port(port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        ensure!(Instant::now() < deadline, "nothing listens on 127.0.0.1:{port}");
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Every report of an NDJSON file.
fn reports(path: &Path) -> anyhow::Result<Vec<Value>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect())
}

fn sites(report: &Value) -> impl Iterator<Item = &Value> {
    report["sites"].as_array().into_iter().flatten()
}

fn suspects(report: &Value) -> Vec<String> {
    sites(report)
        .filter(|s| s["verdict"] == "leak" || s["verdict"] == "growing")
        .map(|s| format!("{} {} {}", s["id"], s["verdict"], s["frames"][0]["function"]))
        .collect()
}

fn through(site: &Value, functions: &[&str]) -> bool {
    site["frames"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|f| f["function"].as_str().is_some_and(|n| functions.contains(&n)))
}

/// Events per second and coverage of a final report, for the summary.
fn figures(report: &Value) -> String {
    let c = &report["coverage"];
    let events = c["events"].as_f64().unwrap_or(0.0);
    let elapsed = report["elapsed_s"].as_f64().unwrap_or(1.0).max(1e-3);
    format!(
        "{:.0} events/s, lost {}, unknown frees {}, allocator-internal frees {}",
        events / elapsed,
        c["lost_events"],
        c["unknown_frees"],
        c["allocator_internal_frees"]
    )
}

impl World {
    /// `leaktracer attach` to `pid` for the run's length, JSON every 2 s into a file.
    fn attach(&self, pid: u32, name: &str) -> anyhow::Result<Vec<Value>> {
        let file = self.out.join(format!("{name}.ndjson"));
        let _ = std::fs::remove_file(&file);
        let status = Command::new(&self.tracer)
            .args(["attach", "--pid", &pid.to_string(), "--format", "json", "--interval", "2s", "--top", "0"])
            .args(["--duration", &format!("{}s", self.seconds), "--output"])
            .arg(&file)
            .stderr(Stdio::null())
            .status()?;
        ensure!(status.success(), "leaktracer: {status}");
        let all = reports(&file)?;
        ensure!(all.last().is_some_and(|r| r["final"] == true), "no final report in {}", file.display());
        Ok(all)
    }

    fn redis_server(&self) -> anyhow::Result<(Guard, u16)> {
        let port = free_port()?;
        let server = spawn(Command::new("redis-server").args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]))?;
        wait_for_port(port)?;
        Ok((server, port))
    }

    /// SETs over `keyspace` keys while traced: bounded, nothing grows; unbounded, the
    /// key and value sites are leaks within 15 s.
    fn redis(&self, keyspace: u64, unbounded: bool) -> anyhow::Result<String> {
        let (server, port) = self.redis_server()?;
        let _load = spawn(&mut redis_sets(port, keyspace, 50_000_000))?;
        let all = self.attach(server.0.id(), if unbounded { "redis-unbounded" } else { "redis-bounded" })?;
        let last = all.last().context("no report")?;
        if !unbounded {
            let suspects = suspects(last);
            ensure!(suspects.is_empty(), "suspects with a bounded keyspace: {suspects:?}");
            return Ok(figures(last));
        }
        let first = all.iter().find_map(|r| {
            let leak = sites(r).find(|s| s["verdict"] == "leak" && through(s, KEY_VALUE))?;
            Some((r["elapsed_s"].as_f64()?, leak["frames"][0]["function"].clone()))
        });
        let (at, function) = first.context("no key or value site was called a leak")?;
        ensure!(at <= 16.0, "the first key/value leak came at {at} s");
        ensure!(
            !last["process"]["limit_eta_s"].is_null(),
            "no time to the memory limit: {}",
            last["process"]
        );
        Ok(format!("a key/value site ({function}) is a leak at {at:.0} s; {}", figures(last)))
    }

    /// 20 KB GETs from four client threads while traced.
    fn http_server(&self) -> anyhow::Result<String> {
        let dir = self.out.join("www");
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("page.html"), vec![b'x'; 20 * 1024])?;
        let port = free_port()?;
        let server = spawn(
            Command::new("python3")
                .args(["-m", "http.server", &port.to_string(), "--bind", "127.0.0.1", "--directory"])
                .arg(&dir),
        )?;
        wait_for_port(port)?;
        let client = format!(
            "import threading, time, urllib.request\n\
             end = time.time() + {}\n\
             def get():\n    while time.time() < end:\n        urllib.request.urlopen('http://127.0.0.1:{port}/page.html').read()\n\
             ts = [threading.Thread(target=get) for _ in range(4)]\n\
             [t.start() for t in ts]\n[t.join() for t in ts]\n",
            self.seconds + 5
        );
        let _load = spawn(Command::new("python3").args(["-c", &client]))?;
        let all = self.attach(server.0.id(), "http-server")?;
        let last = all.last().context("no report")?;
        let suspects = suspects(last);
        ensure!(suspects.is_empty(), "suspects: {suspects:?}");
        let c = &last["coverage"];
        let (unknown, events) =
            (c["unknown_frees"].as_f64().unwrap_or(0.0), c["events"].as_f64().unwrap_or(0.0));
        ensure!(events > 0.0 && unknown / events < 0.001, "unknown frees {unknown} of {events} events");
        Ok(figures(last))
    }

    /// 5,000 threads, one per request, each allocating and freeing.
    fn threads(&self, root: &Path) -> anyhow::Result<String> {
        let exe = self.out.join("thread_per_request");
        cmd::run(
            Command::new("gcc")
                .args(["-O2", "-g", "-pthread", "-o"])
                .arg(&exe)
                .arg(root.join("tests/bench/thread_per_request.c")),
        )?;
        let file = self.out.join("threads.ndjson");
        let _ = std::fs::remove_file(&file);
        let status = Command::new(&self.tracer)
            .args(["run", "--format", "json", "--interval", "1h", "--top", "0", "--output"])
            .arg(&file)
            .arg("--")
            .arg(&exe)
            .arg("5000")
            .stderr(Stdio::null())
            .status()?;
        ensure!(status.success(), "leaktracer run: {status}");
        let last = reports(&file)?.pop().context("no report")?;
        let unknown = &last["coverage"]["unknown_frees"];
        if unknown != 0 {
            bail!("{unknown} unknown frees ({})", figures(&last));
        }
        Ok(figures(&last))
    }

    /// redis-benchmark's SET requests/s, untraced and traced, three times in turn.
    fn redis_overhead(&self) -> anyhow::Result<String> {
        let mut results = Vec::new();
        for round in 0..6 {
            let traced = round % 2 == 1;
            let (server, port) = self.redis_server()?;
            let _tracer = if traced {
                let mut t = Command::new(&self.tracer);
                t.args([
                    "attach",
                    "--pid",
                    &server.0.id().to_string(),
                    "--format",
                    "json",
                    "--output",
                    "/dev/null",
                ]);
                let guard = spawn(&mut t)?;
                std::thread::sleep(Duration::from_secs(3));
                Some(guard)
            } else {
                None
            };
            let out = redis_sets(port, 10_000, 300_000).output()?;
            let text = String::from_utf8_lossy(&out.stdout);
            let rps: f64 = text
                .split_whitespace()
                .zip(text.split_whitespace().skip(1))
                .find_map(|(n, w)| (w == "requests").then(|| n.parse().ok()).flatten())
                .with_context(|| format!("redis-benchmark said: {text}"))?;
            results.push((traced, rps));
        }
        let median = |traced: bool| {
            let mut v: Vec<f64> = results.iter().filter(|r| r.0 == traced).map(|r| r.1).collect();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let (untraced, traced) = (median(false), median(true));
        Ok(format!(
            "SET: {untraced:.0} requests/s untraced, {traced:.0} traced ({:.1}x fewer; {:.1} us added per request)",
            untraced / traced,
            (1.0 / traced - 1.0 / untraced) * 1e6
        ))
    }
}
