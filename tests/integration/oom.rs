//! The OOM kill, captured: a target in a memory cgroup (v2 where the memory controller
//! is there, v1 otherwise) leaks until the OOM killer ends it; the final report says so,
//! keeps the cgroup's limit, and calls the leaking function a leak. A bounded cache
//! killed by SIGKILL is not a leak; a normal exit is an exit.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use serde_json::Value;

use crate::{gofixture::Scripted, harness::*};

/// This module's tests.
pub fn tests() -> Vec<libtest_mimic::Trial> {
    trials![
        an_oom_kill_is_reported_with_its_cgroup_and_leak,
        a_bounded_cache_killed_is_not_a_leak,
        a_normal_exit_is_an_exit,
        run_passes_on_the_oom_kill
    ]
}

const LIMIT: u64 = 200 * 1024 * 1024;

/// A memory cgroup of our own with a limit, removed on drop.
pub struct Cgroup {
    dir: PathBuf,
    /// As `/proc/PID/cgroup` names it.
    name: String,
}

impl Cgroup {
    pub fn new(limit: u64) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!("/leaktracer-test-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers");
        let v2_memory =
            std::fs::read_to_string(v2).is_ok_and(|c| c.split_whitespace().any(|c| c == "memory"));
        let (root, file) = if v2_memory {
            ("/sys/fs/cgroup", "memory.max")
        } else {
            ("/sys/fs/cgroup/memory", "memory.limit_in_bytes")
        };
        let dir = PathBuf::from(format!("{root}{name}"));
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        std::fs::write(dir.join(file), limit.to_string()).unwrap();
        Self { dir, name }
    }

    pub fn add(&self, pid: u32) {
        std::fs::write(self.dir.join("cgroup.procs"), pid.to_string()).unwrap();
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // Empty once its processes are gone (they are, or are being, killed).
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The oom fixture in `mode`, in a fresh 200 MiB cgroup, traced from the start (JSON to
/// stdout, a report every 2 s).
fn traced_in_cgroup(mode: &str) -> (Cgroup, Scripted, Tracer) {
    let cgroup = Cgroup::new(LIMIT);
    let f = Scripted::start(&fixture("oom.c"), &[mode], &[]);
    cgroup.add(f.pid());
    let tracer = Tracer::attach(f.pid(), &["--interval", "2s", "--top", "0"]);
    (cgroup, f, tracer)
}

/// The text rendering of the final report of a session's JSON output.
fn rendered(run: &Run, name: &str) -> String {
    let file = scratch(name).join("report.ndjson");
    std::fs::write(&file, &run.stdout).unwrap();
    let out = Command::new(LEAKTRACER).args(["render", file.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn an_oom_kill_is_reported_with_its_cgroup_and_leak() {
    let (cgroup, mut f, tracer) = traced_in_cgroup("leak");
    f.command("go");
    // No --duration: the session ends when the target does.
    let run = tracer.wait();
    assert!(run.status.success(), "{}: {}", run.status, run.stderr);
    let report = run.final_report();
    let end = &report["target"]["end"];
    assert_eq!(end["how"], "oom_kill", "{end}");
    assert_eq!(end["signal"], 9);
    assert_eq!(end["oom"]["constraint"], "memcg", "{end}");
    assert_eq!(end["oom"]["cgroup"], cgroup.name.as_str(), "{end}");
    assert_eq!(end["oom"]["limit_bytes"], LIMIT);
    // The limit as it was while the target lived, not RAM; no projection past the kill.
    let process = &report["process"];
    assert_eq!(process["memory_limit_bytes"], LIMIT, "{process}");
    assert!(process["memory_limit_source"].as_str().unwrap().starts_with("cgroup"), "{process}");
    assert_eq!(process["limit_eta_s"], 0.0);
    // The site that filled the cgroup is a leak, on whatever evidence the time allowed.
    let site = site_at(&report, "cache_response");
    assert_eq!(site["verdict"], "leak", "{site:#}");
    if !site["reason"].is_null() {
        assert_eq!(site["reason"], "oom_kill");
    }
    assert!(site["live_bytes"].as_u64().unwrap() > LIMIT / 2, "{site:#}");
    let text = rendered(&run, "oom-text");
    let first = text.lines().next().unwrap_or_default();
    assert!(first.contains("killed by the OOM killer"), "{first}");
    assert!(first.contains(&cgroup.name) && first.contains("limit 200.0 MiB"), "{first}");
    run.objects.assert_gone();
    drop(f);
}

fn a_bounded_cache_killed_is_not_a_leak() {
    let (_cgroup, mut f, mut tracer) = traced_in_cgroup("bounded");
    f.command("go");
    f.until("filled", Duration::from_secs(30));
    // Flat for a while, seen in a report, then killed from outside.
    let pid = f.pid();
    tracer.report_where(Duration::from_secs(20), |r| r["elapsed_s"].as_f64() > Some(12.0));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let run = tracer.wait();
    assert!(run.status.success(), "{}: {}", run.status, run.stderr);
    let report = run.final_report();
    let end = &report["target"]["end"];
    assert_eq!(end["how"], "signal", "{end}");
    assert_eq!(end["signal"], 9);
    let site = site_at(&report, "cache_response");
    assert_ne!(site["verdict"], "leak", "{site:#}");
    assert!(site["reason"].is_null(), "{site:#}");
    drop(f);
}

fn a_normal_exit_is_an_exit() {
    let mut f = Scripted::start(&fixture("oom.c"), &["exit"], &[]);
    let tracer = Tracer::attach(f.pid(), &["--interval", "1h"]);
    f.command("go");
    let status = f.close();
    assert_eq!(status.code(), Some(7));
    let run = tracer.wait();
    assert!(run.status.success(), "{}: {}", run.status, run.stderr);
    let report: Value = run.final_report();
    assert_eq!(report["target"]["end"]["how"], "exit", "{}", report["target"]);
    assert_eq!(report["target"]["end"]["status"], 7);
}

/// `run` on a command the OOM killer ends: the report says so, and leaktracer exits with
/// the command's status, 137. (The command puts itself in the cgroup, then execs.)
fn run_passes_on_the_oom_kill() {
    let cgroup = Cgroup::new(LIMIT);
    let script = format!(
        "echo $$ > {}/cgroup.procs && exec {} leak-now",
        cgroup.dir.display(),
        fixture("oom.c").display()
    );
    let mut cmd = Command::new(LEAKTRACER);
    cmd.args(["run", "--format", "json", "--interval", "2s", "--top", "0", "--", "sh", "-c", &script]);
    let run = Tracer::start(cmd).wait();
    assert_eq!(run.status.code(), Some(137), "{}", run.stderr);
    let report = run.final_report();
    assert_eq!(report["target"]["end"]["how"], "oom_kill", "{}", report["target"]);
    assert_eq!(site_at(&report, "cache_response")["verdict"], "leak");
}
