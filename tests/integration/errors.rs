//! Bad input gets one clear sentence and a non-zero exit, never a panic or a backtrace.

use std::process::Command;

use crate::harness::*;

fn assert_clean_failure(out: &std::process::Output, expected: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "exit status; stderr:\n{stderr}");
    assert!(stderr.contains(expected), "stderr should say {expected:?}:\n{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one sentence:\n{stderr}");
    for bad in ["panicked", "RUST_BACKTRACE", "stack backtrace"] {
        assert!(!stderr.contains(bad), "no {bad}:\n{stderr}");
    }
}

#[test]
fn a_pid_that_does_not_exist() {
    let Some(_kernel) = privileged("a_pid_that_does_not_exist") else { return };
    let out = Command::new(LEAKTRACER).args(["attach", "--pid", "4194000"]).output().unwrap();
    assert_clean_failure(&out, "no process with PID 4194000");
}

#[test]
fn a_command_that_does_not_exist() {
    let Some(_kernel) = privileged("a_command_that_does_not_exist") else { return };
    let out = Command::new(LEAKTRACER).args(["run", "--", "no-such-command-xyz"]).output().unwrap();
    assert_clean_failure(&out, "command not found: no-such-command-xyz");
}

#[test]
fn without_privileges() {
    let Some(_kernel) = privileged("without_privileges") else { return };
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

#[test]
fn outputs_that_cannot_work_are_refused_before_anything_starts() {
    let Some(_kernel) = privileged("outputs_that_cannot_work_are_refused_before_anything_starts") else {
        return;
    };
    let out = Command::new(LEAKTRACER)
        .args(["run", "--format", "json,svg", "--output", "/tmp/x", "--", "true"])
        .output()
        .unwrap();
    assert_clean_failure(&out, "--output takes a single format");
    let out = Command::new(LEAKTRACER)
        .args(["run", "--format", "json", "--output-dir", "/nonexistent/dir", "--", "true"])
        .output()
        .unwrap();
    assert_clean_failure(&out, "cannot write /nonexistent/dir");
}
