//! Builds the eBPF object (tracer-ebpf's binary) with aya-build and leaves it in OUT_DIR,
//! where `src/probe/mod.rs` embeds it; generates the pprof types from proto/profile.proto.
//!
//! The eBPF build needs a nightly whose LLVM matches bpf-linker's (22); `cargo xtask setup`
//! installs both. `LEAKTRACER_BPF_TOOLCHAIN` names the nightly (default `nightly`).
//! `AYA_BUILD_SKIP=1` skips the eBPF build (lint-only machines); the binary then carries an
//! empty object and says so at run time.

use std::{env, fs, path::PathBuf};

use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

const PROBES: &str = "leaktracer-probes";

/// Rust types for pprof's profile.proto, without protoc: protox parses, prost-build
/// generates.
fn pprof_types() -> anyhow::Result<()> {
    println!("cargo:rerun-if-changed=proto/profile.proto");
    let descriptors = protox::compile(["proto/profile.proto"], ["proto"]).context("compile profile.proto")?;
    prost_build::Config::new().compile_fds(descriptors).context("generate pprof types")?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    pprof_types()?;
    println!("cargo:rerun-if-env-changed=LEAKTRACER_BPF_TOOLCHAIN");
    let metadata = cargo_metadata::MetadataCommand::new().no_deps().exec().context("cargo metadata")?;
    let ebpf = metadata
        .packages
        .into_iter()
        .find(|p| p.name.as_str() == "tracer-ebpf")
        .ok_or_else(|| anyhow!("tracer-ebpf package not found"))?;
    let root_dir =
        ebpf.manifest_path.parent().ok_or_else(|| anyhow!("tracer-ebpf manifest has no parent"))?;
    // aya-build only watches the package as a whole through cargo; be explicit.
    println!("cargo:rerun-if-changed={root_dir}/src");

    let out_dir = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR")?);
    let object = out_dir.join(PROBES);
    if matches!(env::var("AYA_BUILD_SKIP").as_deref(), Ok("1" | "true")) && !object.exists() {
        fs::write(&object, []).context("write placeholder object")?;
    }

    let toolchain = env::var("LEAKTRACER_BPF_TOOLCHAIN").unwrap_or_else(|_| "nightly".into());
    aya_build::build_ebpf(
        [Package { name: "tracer-ebpf", root_dir: root_dir.as_str(), ..Package::default() }],
        Toolchain::Custom(&toolchain),
    )
}
