//! Bad input gets one clear sentence and a non-zero exit, never a panic or a backtrace.

use std::process::Command;

use crate::harness::*;

/// This module's tests.
pub fn tests() -> Vec<libtest_mimic::Trial> {
    trials![
        a_pid_that_does_not_exist,
        a_command_that_does_not_exist,
        without_privileges,
        outputs_that_cannot_work_are_refused_before_anything_starts,
        bad_values_are_refused_before_anything_starts,
        a_thread_id_names_its_process
    ]
}

fn assert_clean_failure(out: &std::process::Output, expected: &str) {
    assert_refused(out, expected, 1);
}

/// Exit `code`, one sentence on stderr saying `expected` (clap adds a usage hint), no
/// panic, and nothing traced.
fn assert_refused(out: &std::process::Output, expected: &str, code: i32) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "exit status; stderr:\n{stderr}");
    assert!(stderr.contains(expected), "stderr should say {expected:?}:\n{stderr}");
    // clap's hints (the possible values, --help) are not sentences of their own.
    let hint = |l: &str| l.contains("--help") || l.trim_start().starts_with("[possible values");
    let sentences = stderr.lines().filter(|l| !l.trim().is_empty() && !hint(l)).count();
    assert_eq!(sentences, 1, "one sentence:\n{stderr}");
    assert!(!stderr.contains("tracing pid"), "nothing attached:\n{stderr}");
    for bad in ["panicked", "RUST_BACKTRACE", "stack backtrace"] {
        assert!(!stderr.contains(bad), "no {bad}:\n{stderr}");
    }
}

fn a_pid_that_does_not_exist() {
    // One above the largest PID this machine gives out.
    let max: u32 = std::fs::read_to_string("/proc/sys/kernel/pid_max").unwrap().trim().parse().unwrap();
    let pid = (max + 1).to_string();
    let out = Command::new(LEAKTRACER).args(["attach", "--pid", &pid]).output().unwrap();
    assert_clean_failure(&out, &format!("no process with PID {pid}"));
}

fn a_command_that_does_not_exist() {
    let out = Command::new(LEAKTRACER).args(["run", "--", "no-such-command-xyz"]).output().unwrap();
    assert_clean_failure(&out, "command not found: no-such-command-xyz");
}

fn without_privileges() {
    // Drop to nobody with no capabilities at all.
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all"])
        .arg(LEAKTRACER)
        .args(["attach", "--pid", "1"])
        .output()
        .expect("setpriv (util-linux) is needed for this test");
    assert_clean_failure(&out, "leaktracer needs root privileges");
    assert!(String::from_utf8_lossy(&out.stderr).contains("CAP_BPF"));
}

fn outputs_that_cannot_work_are_refused_before_anything_starts() {
    let out = Command::new(LEAKTRACER)
        .args(["run", "--format", "json,svg", "--output"])
        .arg(scratch("refused").join("x"))
        .args(["--", "true"])
        .output()
        .unwrap();
    assert_refused(&out, "--output takes a single format", 2);
    let out = Command::new(LEAKTRACER)
        .args(["run", "--format", "json", "--output-dir", "/nonexistent/dir", "--", "true"])
        .output()
        .unwrap();
    assert_clean_failure(&out, "cannot write /nonexistent/dir");
}

fn bad_values_are_refused_before_anything_starts() {
    let attach = |args: &[&str]| {
        Command::new(LEAKTRACER)
            .args(["attach", "--pid", &std::process::id().to_string()])
            .args(args)
            .output()
            .unwrap()
    };
    assert_refused(&attach(&["--interval", "0s"]), "must be at least 10ms", 2);
    assert_refused(&attach(&["--duration", "0s"]), "--duration", 2);
    assert_refused(&attach(&["--duration", "500000000000y"]), "longer than 100 years", 2);
    assert_refused(&attach(&["--interval", "soon"]), "expected e.g. 500ms", 2);
    assert_refused(
        &attach(&["--format", "folded,svg,folded", "--output-dir", "/tmp"]),
        "names folded twice",
        2,
    );
    assert_refused(&attach(&["--kind", "heap,everything"]), "invalid value 'everything'", 2);
    assert_refused(&attach(&["--sample-bytes", "lots"]), "--sample-bytes", 2);
    let unwritable = attach(&["--format", "json", "--output", "/proc/leaktracer.json"]);
    assert_refused(&unwritable, "cannot write /proc/leaktracer.json", 1);
}

fn a_thread_id_names_its_process() {
    // A thread of this test process.
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::spawn(move || rx.recv());
    let me = std::process::id();
    let tid = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|&t| t != me)
        .unwrap();
    let out = Command::new(LEAKTRACER).args(["attach", "--pid", &tid.to_string()]).output().unwrap();
    drop(tx);
    let _ = thread.join();
    assert_clean_failure(&out, &format!("{tid} is a thread of process {me}; trace the process"));
}
