//! Bad input gets one clear sentence and a non-zero exit, never a panic or a backtrace.

use std::process::Command;

use crate::harness::*;

/// This module's tests.
pub fn tests() -> Vec<libtest_mimic::Trial> {
    trials![
        a_pid_that_does_not_exist,
        a_command_that_does_not_exist,
        without_privileges,
        outputs_that_cannot_work_are_refused_before_anything_starts
    ]
}

fn assert_clean_failure(out: &std::process::Output, expected: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "exit status; stderr:\n{stderr}");
    assert!(stderr.contains(expected), "stderr should say {expected:?}:\n{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one sentence:\n{stderr}");
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
    assert_clean_failure(&out, "--output takes a single format");
    let out = Command::new(LEAKTRACER)
        .args(["run", "--format", "json", "--output-dir", "/nonexistent/dir", "--", "true"])
        .output()
        .unwrap();
    assert_clean_failure(&out, "cannot write /nonexistent/dir");
}
