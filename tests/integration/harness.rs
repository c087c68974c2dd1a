//! The privileged test harness: builds fixtures with the real compilers, runs them,
//! attaches the real `leaktracer` binary, and reads back its JSON reports.
//!
//! Tests run side by side (the runner's default parallelism): each checks only its own
//! session's kernel objects, by the ids leaktracer held, and writes only to its own
//! scratch directory. Without root or uprobes every privileged test is reported
//! IGNORED by the runner, with the reason; `cargo xtask test` sets
//! LEAKTRACER_REQUIRE_PRIVILEGED=1, which makes that a failure instead.
//!
//! Every leaktracer started here inherits the environment: LEAKTRACER_LINKS=classic
//! makes them all attach uprobes the classic way (one perf link per uprobe), to test
//! that fallback on a kernel that has better.

use std::{
    collections::BTreeSet,
    io::{BufRead, BufReader, Read, Write},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    sync::{
        Mutex, OnceLock,
        atomic::{AtomicU32, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use libtest_mimic::Trial;
use serde_json::Value;

pub const LEAKTRACER: &str = env!("CARGO_BIN_EXE_leaktracer");

fn fixtures_src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

pub fn corpus_src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/corpus")
}

/// Why the privileged tests cannot run here, if they cannot.
pub fn unprivileged_reason() -> Option<&'static str> {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        Some("not running as root")
    } else if !Path::new("/sys/bus/event_source/devices/uprobe/type").exists() {
        Some("the kernel has no uprobe PMU")
    } else {
        None
    }
}

/// A test needing root and uprobes: ignored (not passed) where it cannot run.
pub fn trial(name: &str, test: fn()) -> Trial {
    let name = name.trim_start_matches("integration::").to_string();
    Trial::test(name, move || {
        test();
        Ok(())
    })
    .with_ignored_flag(unprivileged_reason().is_some())
}

/// A test that needs nothing special.
pub fn plain_trial(name: &str, test: fn()) -> Trial {
    let name = name.trim_start_matches("integration::").to_string();
    Trial::test(name, move || {
        test();
        Ok(())
    })
}

/// `trials![f, g]`: the privileged tests of a module.
macro_rules! trials {
    ($($test:ident),* $(,)?) => {
        vec![$($crate::harness::trial(concat!(module_path!(), "::", stringify!($test)), $test)),*]
    };
}
pub(crate) use trials;

/// A fresh directory of this test's own under the target's scratch space.
pub fn scratch(name: &str) -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
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
    // Built under a name of this run's, then renamed: another test run building the
    // same fixture at the same time never sees half a file.
    let partial = exe.with_extension(format!("{}.partial", std::process::id()));
    cmd.arg(&partial).arg(src.join(name));
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run the compiler for {name}: {e}"));
    assert!(out.status.success(), "building {name} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    std::fs::rename(&partial, &exe).unwrap();
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
    /// Its stdout, line by line, read on a thread of its own (so waits have deadlines).
    stdout: mpsc::Receiver<String>,
    pub output: String,
}

/// How long a fixture may take to answer.
const FIXTURE_DEADLINE: Duration = Duration::from_secs(120);

impl Fixture {
    pub fn start(exe: &Path) -> Self {
        let mut child = Command::new(exe)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", exe.display()));
        let stdin = child.stdin.take();
        let stdout = lines_of(child.stdout.take().unwrap());
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
        let deadline = Instant::now() + FIXTURE_DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let got = self
                .stdout
                .recv_timeout(left)
                .unwrap_or_else(|e| panic!("fixture: no {line:?} ({e}); output so far:\n{}", self.output));
            self.output.push_str(&got);
            if got.trim_end() == line {
                return;
            }
        }
    }

    /// Closes stdin, so the fixture exits, and waits for it.
    pub fn finish(mut self) -> String {
        drop(self.stdin.take());
        let deadline = Instant::now() + FIXTURE_DEADLINE;
        while let Ok(line) = self.stdout.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            self.output.push_str(&line);
        }
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
    /// The kernel objects this session holds (eBPF programs and links), by id.
    pub objects: KernelObjects,
    /// The rest of stderr, and stdout, read on threads so that leaktracer never blocks
    /// writing them (a pipe holds 64 KiB: a few reports).
    stderr_rest: mpsc::Receiver<String>,
    stdout: mpsc::Receiver<String>,
    /// Stdout lines taken so far (by `report_where`).
    taken: String,
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
        let lines = lines_of(child.stderr.take().unwrap());
        let mut seen = String::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) => {
                    seen.push_str(&line);
                    if line.starts_with("leaktracer: tracing pid") {
                        break;
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = child.wait().unwrap();
                    panic!("leaktracer exited ({status}) before attaching:\n{seen}");
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = child.kill();
                    panic!("leaktracer did not attach within 60 s:\n{seen}");
                }
            }
        }
        let objects = KernelObjects::held_by(child.id());
        let stderr_rest = collect(lines);
        let stdout = lines_of(child.stdout.take().unwrap());
        Self { child, stderr: seen, objects, stderr_rest, stdout, taken: String::new() }
    }

    /// The leaktracer process.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kernel memory the session holds in eBPF maps and programs, as charged at attach.
    pub fn kernel_memory(&self) -> u64 {
        self.objects.memlock
    }

    /// Waits (until `within`) for a JSON report that `wanted` accepts; returns it.
    pub fn report_where(&mut self, within: Duration, wanted: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.stdout.recv_timeout(left).unwrap_or_else(|e| {
                let last = self.taken.lines().last().unwrap_or("");
                let last = last.get(..4000.min(last.len())).unwrap_or(last);
                panic!(
                    "no such report within {within:?} ({e}); {} so far, the last:\n{last}",
                    self.taken.lines().count()
                )
            });
            self.taken.push_str(&line);
            if let Ok(report) = serde_json::from_str::<Value>(&line)
                && wanted(&report)
            {
                return report;
            }
        }
    }

    /// Sends SIGINT, waits, and returns every report it wrote.
    pub fn stop(self) -> Run {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        self.wait()
    }

    /// Waits for leaktracer to end by itself (at most five minutes: then it is killed and
    /// the test fails, rather than hang).
    pub fn wait(mut self) -> Run {
        let deadline = Instant::now() + Duration::from_secs(300);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!("leaktracer did not end within 5 minutes:\n{}", self.stderr);
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let stdout = self.taken + &self.stdout.iter().collect::<String>();
        let rest = self.stderr_rest.recv().unwrap_or_default();
        Run { status, stdout, stderr: self.stderr + &rest, objects: self.objects }
    }
}

/// Lines of a pipe, as they come, on a thread of its own.
pub fn lines_of(pipe: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            }
        }
    });
    rx
}

/// The rest of a stream of lines, as one string once it ends.
fn collect(lines: mpsc::Receiver<String>) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(lines.into_iter().collect::<String>());
    });
    rx
}

/// eBPF programs and links a process holds (from its descriptors' fdinfo), by id.
#[derive(Debug, Clone, Default)]
pub struct KernelObjects {
    pub programs: BTreeSet<u32>,
    pub links: BTreeSet<u32>,
    /// The type of each link (`perf`, `uprobe_multi`, ...), as fdinfo names it.
    pub link_types: Vec<String>,
    /// Kernel memory charged to its maps and programs.
    pub memlock: u64,
}

impl KernelObjects {
    pub fn held_by(pid: u32) -> Self {
        let mut objects = Self::default();
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else { return objects };
        // A map or program held through several descriptors is charged once.
        let mut charged = BTreeSet::new();
        for fd in fds.filter_map(Result::ok) {
            let Ok(info) = std::fs::read_to_string(fd.path()) else { continue };
            let value = |prefix: &str| {
                info.lines().find_map(|l| l.strip_prefix(prefix)).and_then(|v| v.trim().parse::<u64>().ok())
            };
            let (map, prog, link) = (value("map_id:"), value("prog_id:"), value("link_id:"));
            if let Some(id) = link
                && objects.links.insert(id as u32)
                && let Some(t) = info.lines().find_map(|l| l.strip_prefix("link_type:"))
            {
                objects.link_types.push(t.trim().to_string());
            }
            if let Some(id) = prog {
                objects.programs.insert(id as u32);
            }
            let identity = match (map, prog, link) {
                (Some(id), _, _) => Some(("map", id)),
                (None, Some(id), None) => Some(("prog", id)),
                _ => None,
            };
            if let (Some(identity), Some(bytes)) = (identity, value("memlock:"))
                && charged.insert(identity)
            {
                objects.memlock += bytes;
            }
        }
        objects
    }

    /// How many of its links are of type `link_type`.
    pub fn links_of_type(&self, link_type: &str) -> usize {
        self.link_types.iter().filter(|t| *t == link_type).count()
    }

    /// Those of them still in the kernel.
    pub fn still_loaded(&self) -> (Vec<u32>, Vec<u32>) {
        let programs: Vec<u32> = aya::programs::loaded_programs()
            .filter_map(Result::ok)
            .map(|p| p.id())
            .filter(|id| self.programs.contains(id))
            .collect();
        let links: Vec<u32> = aya::programs::loaded_links()
            .filter_map(Result::ok)
            .map(|l| l.id())
            .filter(|id| self.links.contains(id))
            .collect();
        (programs, links)
    }

    /// Asserts nothing of this session remains in the kernel. Links go with their last
    /// descriptor. A program whose last user was a multi-uprobe or session link goes a
    /// little later: the kernel drops the link's hold on it only after an RCU tasks
    /// trace grace period (such links may run sleepable programs), which can take a
    /// moment on a busy machine; that is waited for, within reason.
    pub fn assert_gone(&self) {
        assert!(!self.programs.is_empty(), "the session held no programs: the check would prove nothing");
        let (programs, links) = self.still_loaded();
        assert!(links.is_empty(), "left in the kernel: programs {programs:?}, links {links:?}");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (programs, _) = self.still_loaded();
            if programs.is_empty() {
                return;
            }
            assert!(Instant::now() < deadline, "left in the kernel: programs {programs:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// What a finished leaktracer left.
pub struct Run {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub objects: KernelObjects,
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
    memory_sites(report).filter(|s| first_function(s) == Some(function)).collect()
}

/// The sites of memory kinds (heap, mmap, brk, resident pages): what the native tests are about.
pub fn memory_sites(report: &Value) -> impl Iterator<Item = &Value> {
    report["sites"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| matches!(s["kind"].as_str(), Some("heap" | "mmap" | "brk" | "resident")))
}

/// The sites of one kind.
pub fn sites_of_kind<'a>(report: &'a Value, kind: &str) -> Vec<&'a Value> {
    report["sites"].as_array().unwrap().iter().filter(|s| s["kind"] == kind).collect()
}

/// The sites with a frame, anywhere in their stack, whose function name contains `needle`.
pub fn sites_through<'a>(report: &'a Value, needle: &str) -> Vec<&'a Value> {
    memory_sites(report)
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

/// `go tool pprof`, which Go's packages install with it.
pub fn go_pprof(args: &[&str]) -> String {
    let out = Command::new("go")
        .args(["tool", "pprof"])
        .args(args)
        .env("HOME", env!("CARGO_TARGET_TMPDIR"))
        .env("PPROF_TMPDIR", env!("CARGO_TARGET_TMPDIR"))
        .output()
        .expect("go (Debian's golang-go, installed by cargo xtask setup) reads the profiles");
    assert!(out.status.success(), "go tool pprof {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Peak resident memory (`VmHWM`) of a process, in bytes.
pub fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}

/// Resident memory (`VmRSS`) of a process, in bytes.
pub fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}

/// Open descriptors of a process.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}
