//! The privileged test harness: builds fixtures with the real compilers, runs them,
//! attaches the real `leaktracer` binary, and reads back its JSON reports.
//!
//! Tests need root and a kernel with uprobes. Without them a test prints SKIPPED and
//! why, loudly; `cargo xtask test` sets LEAKTRACER_REQUIRE_PRIVILEGED=1, which turns a
//! skip into a failure so CI cannot pass by skipping.

use std::{
    io::{BufRead, BufReader, Read, Write},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    sync::{Mutex, OnceLock},
    time::{Duration, Instant},
};

use serde_json::Value;

pub const LEAKTRACER: &str = env!("CARGO_BIN_EXE_leaktracer");

fn fixtures_src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

pub fn corpus_src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/corpus")
}

/// Serializes the privileged tests: they share kernel state (loaded programs, probes),
/// and the detach checks count what is loaded.
static KERNEL: Mutex<()> = Mutex::new(());

/// Returns `None` (after saying SKIPPED) when the tests cannot run here; otherwise a
/// guard that keeps the other privileged tests out until the test ends.
pub fn privileged(test: &str) -> Option<std::sync::MutexGuard<'static, ()>> {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let uprobes = Path::new("/sys/bus/event_source/devices/uprobe/type").exists();
    let reason = if !root {
        "not running as root"
    } else if !uprobes {
        "the kernel has no uprobe PMU"
    } else {
        return Some(KERNEL.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    };
    if std::env::var_os("LEAKTRACER_REQUIRE_PRIVILEGED").is_some() {
        panic!("{test}: cannot run ({reason}) but LEAKTRACER_REQUIRE_PRIVILEGED is set");
    }
    eprintln!("\n!!! SKIPPED {test}: {reason}; run `cargo xtask test` as root !!!\n");
    None
}

/// How a fixture is compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Build {
    /// -O1 with frame pointers: the basic fixtures.
    Default,
    /// -O2 with frame pointers.
    FramePointers,
    /// -O2 without frame pointers, as distributions build.
    NoFramePointers,
}

/// Builds a fixture once per test run and returns the executable's path.
pub fn fixture(name: &str) -> PathBuf {
    fixture_built(name, Build::Default)
}

/// Builds a fixture the given way, once per test run.
pub fn fixture_built(name: &str, build: Build) -> PathBuf {
    build_from(&fixtures_src(), name, build)
}

/// Builds a program of the accuracy corpus (-O2, no frame pointers).
pub fn corpus_program(name: &str) -> PathBuf {
    build_from(&corpus_src(), name, Build::NoFramePointers)
}

fn build_from(src: &Path, name: &str, build: Build) -> PathBuf {
    static BUILT: OnceLock<Mutex<std::collections::HashMap<String, PathBuf>>> = OnceLock::new();
    let built = BUILT.get_or_init(Default::default);
    let mut built = built.lock().unwrap();
    let key = format!("{}/{name}/{build:?}", src.display());
    if let Some(path) = built.get(&key) {
        return path.clone();
    }
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fixtures");
    std::fs::create_dir_all(&out_dir).unwrap();
    let (stem, ext) = name.rsplit_once('.').unwrap();
    let suffix = match build {
        Build::Default => "",
        Build::FramePointers => "-fp",
        Build::NoFramePointers => "-nofp",
    };
    let exe = out_dir.join(format!("{stem}-{ext}{suffix}"));
    let (opt, fp) = match build {
        Build::Default => ("-O1", "-fno-omit-frame-pointer"),
        Build::FramePointers => ("-O2", "-fno-omit-frame-pointer"),
        Build::NoFramePointers => ("-O2", "-fomit-frame-pointer"),
    };
    let mut cmd = match ext {
        "c" | "cpp" => {
            let mut c = Command::new(if ext == "c" { "gcc" } else { "g++" });
            c.args([opt, "-g", fp, "-pthread", "-o"]);
            c
        }
        "rs" => {
            let mut c = Command::new("rustc");
            let fp = if build == Build::NoFramePointers {
                "force-frame-pointers=no"
            } else {
                "force-frame-pointers=yes"
            };
            c.args(["-O", "-g", "-C", fp, "--edition", "2021", "-o"]);
            c
        }
        other => panic!("no compiler for .{other}"),
    };
    cmd.arg(&exe).arg(src.join(name));
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run the compiler for {name}: {e}"));
    assert!(out.status.success(), "building {name} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    built.insert(key, exe.clone());
    exe
}

/// Line of the `@marker` comment in a fixture source.
pub fn line_of(source: &str, marker: &str) -> u32 {
    let text = std::fs::read_to_string(fixtures_src().join(source)).unwrap();
    let tag = format!("@{marker}");
    let hits: Vec<u32> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.split_whitespace().any(|w| w == tag))
        .map(|(i, _)| i as u32 + 1)
        .collect();
    assert_eq!(hits.len(), 1, "marker {tag} in {source}");
    hits[0]
}

/// A fixture process speaking the ready/go/done protocol. Killed on drop.
pub struct Fixture {
    pub child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    pub output: String,
}

impl Fixture {
    pub fn start(exe: &Path) -> Self {
        let mut child = Command::new(exe)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", exe.display()));
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut f = Self { child, stdin, stdout, output: String::new() };
        f.expect_line("ready");
        f
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Lets the fixture do its work and waits until it has.
    pub fn go(&mut self) {
        self.send_line();
        self.expect_line("done");
    }

    fn send_line(&mut self) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(b"go\n").unwrap();
        stdin.flush().unwrap();
    }

    /// Reads lines until one equals `line` (the others are kept in `output`).
    pub fn expect_line(&mut self, line: &str) {
        loop {
            let mut buf = String::new();
            let n = self.stdout.read_line(&mut buf).unwrap();
            assert!(n > 0, "fixture ended before printing {line:?}; output so far:\n{}", self.output);
            self.output.push_str(&buf);
            if buf.trim_end() == line {
                return;
            }
        }
    }

    /// Closes stdin, so the fixture exits, and waits for it.
    pub fn finish(mut self) -> String {
        drop(self.stdin.take());
        let mut rest = String::new();
        self.stdout.read_to_string(&mut rest).unwrap();
        self.output.push_str(&rest);
        let status = self.child.wait().unwrap();
        assert!(status.success(), "fixture failed: {status}");
        std::mem::take(&mut self.output)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `leaktracer`, with its stderr read until it says it is tracing.
pub struct Tracer {
    pub child: Child,
    pub stderr: String,
    /// The rest of stderr, and stdout, read on threads so that leaktracer never blocks
    /// writing them (a pipe holds 64 KiB: a few reports).
    stderr_rest: std::sync::mpsc::Receiver<String>,
    stdout: std::sync::mpsc::Receiver<String>,
}

impl Tracer {
    /// `leaktracer attach --pid PID --format json` plus `args`; returns once attached.
    pub fn attach(pid: u32, args: &[&str]) -> Self {
        let mut cmd = Command::new(LEAKTRACER);
        cmd.args(["attach", "--pid", &pid.to_string(), "--format", "json"]).args(args);
        Self::start(cmd)
    }

    pub fn start(mut cmd: Command) -> Self {
        let mut child =
            cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("cannot start leaktracer");
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut seen = String::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut line = String::new();
            let n = stderr.read_line(&mut line).unwrap();
            seen.push_str(&line);
            if n == 0 {
                let status = child.wait().unwrap();
                panic!("leaktracer exited ({status}) before attaching:\n{seen}");
            }
            if line.starts_with("leaktracer: tracing pid") {
                break;
            }
            assert!(Instant::now() < deadline, "leaktracer did not attach:\n{seen}");
        }
        let stderr_rest = read_all(stderr);
        let stdout = read_all(child.stdout.take().unwrap());
        Self { child, stderr: seen, stderr_rest, stdout }
    }

    /// Sends SIGINT, waits, and returns every report it wrote.
    pub fn stop(self) -> Run {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        self.wait()
    }

    pub fn wait(mut self) -> Run {
        let status = self.child.wait().unwrap();
        let stdout = self.stdout.recv().unwrap_or_default();
        let rest = self.stderr_rest.recv().unwrap_or_default();
        Run { status, stdout, stderr: self.stderr + &rest }
    }
}

/// Reads a pipe to its end on a thread of its own.
fn read_all(mut pipe: impl Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut all = String::new();
        let _ = pipe.read_to_string(&mut all);
        let _ = tx.send(all);
    });
    rx
}

/// What a finished leaktracer left.
pub struct Run {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn reports(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }

    /// The final report, checked to be the last one and complete.
    pub fn final_report(&self) -> Value {
        let reports = self.reports();
        let last = reports.last().unwrap_or_else(|| panic!("no report; stderr:\n{}", self.stderr)).clone();
        assert_eq!(last["schema"], "leaktracer.report/v1");
        assert_eq!(last["final"], true, "the last report is the final one");
        last
    }
}

/// `expect FUNCTION COUNT BYTES` lines a fixture printed: what it knows it leaked.
pub fn expectations(output: &str) -> Vec<(String, u64, u64)> {
    output
        .lines()
        .filter_map(|l| {
            let mut w = l.strip_prefix("expect ")?.split_whitespace();
            Some((w.next()?.to_string(), w.next()?.parse().ok()?, w.next()?.parse().ok()?))
        })
        .collect()
}

/// Does a symbolized function name name `function` (C `f`, C++ `f(long)`, Rust
/// `crate::f`)?
pub fn names(symbol: &str, function: &str) -> bool {
    symbol == function
        || symbol.strip_prefix(function).is_some_and(|rest| rest.starts_with('('))
        || symbol.rsplit("::").next() == Some(function)
}

/// The frames of the program's own code (source file `source`), in order.
pub fn own_frames<'a>(site: &'a Value, source: &str) -> Vec<&'a Value> {
    site["frames"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["file"].as_str().is_some_and(|file| file.ends_with(source)))
        .collect()
}

/// The sites whose stack has `function` as the first frame of the program's own code.
pub fn sites_at<'a>(report: &'a Value, function: &str) -> Vec<&'a Value> {
    report["sites"].as_array().unwrap().iter().filter(|s| first_function(s) == Some(function)).collect()
}

/// The sites with a frame, anywhere in their stack, whose function name contains `needle`.
pub fn sites_through<'a>(report: &'a Value, needle: &str) -> Vec<&'a Value> {
    report["sites"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| {
            s["frames"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f["function"].as_str().is_some_and(|n| n.contains(needle)))
        })
        .collect()
}

/// The single site of `function`.
pub fn site_at<'a>(report: &'a Value, function: &str) -> &'a Value {
    let sites = sites_at(report, function);
    assert_eq!(sites.len(), 1, "sites at {function}: {}", serde_json::to_string_pretty(&sites).unwrap());
    sites[0]
}

pub fn first_function(site: &Value) -> Option<&str> {
    site["frames"].as_array()?.first()?["function"].as_str()
}

/// Asserts the site's first frame is `function` at `file:line`.
pub fn assert_frame(site: &Value, function: &str, source: &str, line: u32) {
    let frame = &site["frames"][0];
    assert_eq!(frame["function"], function, "{site}");
    assert!(
        frame["file"].as_str().is_some_and(|f| f.ends_with(source)),
        "file of {function}: {}",
        frame["file"]
    );
    assert_eq!(frame["line"], line, "line of {function}");
}

pub fn live(site: &Value) -> (u64, u64) {
    (site["live_count"].as_u64().unwrap(), site["live_bytes"].as_u64().unwrap())
}

pub fn counts(site: &Value) -> (u64, u64) {
    (site["allocs"].as_u64().unwrap(), site["frees"].as_u64().unwrap())
}

/// eBPF programs of ours still loaded in the kernel (their names start with `lt_`).
pub fn our_programs() -> Vec<String> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter_map(|p| p.name_as_str().map(str::to_string))
        .filter(|n| n.starts_with("lt_"))
        .collect()
}

/// BPF links in the kernel whose program is one of ours.
pub fn our_links() -> usize {
    let ours: std::collections::HashSet<u32> = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| p.name_as_str().is_some_and(|n| n.starts_with("lt_")))
        .map(|p| p.id())
        .collect();
    aya::programs::loaded_links().filter_map(Result::ok).filter(|l| ours.contains(&l.program_id())).count()
}

/// Uprobe definitions left in tracefs (aya falls back to them on old kernels).
pub fn leftover_uprobe_events() -> Vec<String> {
    std::fs::read_to_string("/sys/kernel/tracing/uprobe_events")
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}
