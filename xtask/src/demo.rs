//! `cargo xtask demo`: the main job on a bundled leaky sample, for a newcomer to watch.

use std::{
    path::Path,
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use anyhow::Context as _;

use crate::{cmd, setup};

pub fn run() -> anyhow::Result<()> {
    let env = setup::run()?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    cmd::run(cmd::cargo(&env).args(["build", "--release", "--package", "leaktracer"]))?;

    let out = root.join("target/demo");
    std::fs::create_dir_all(&out)?;
    let sample = out.join("session_cache");
    cmd::run(
        Command::new("gcc")
            .args(["-O1", "-g", "-fno-omit-frame-pointer", "-o"])
            .arg(&sample)
            .arg(root.join("tests/samples/session_cache.c")),
    )?;

    let mut child = Command::new(&sample).stdout(Stdio::null()).spawn().context("cannot start the sample")?;
    eprintln!(
        "\nxtask: started the sample (pid {}): a service whose session cache never evicts,\n\
         and whose per-request scratch buffer is freed. Tracing it for 16 s, a report every 5 s:\n",
        child.id()
    );
    thread::sleep(Duration::from_millis(500));
    let result = cmd::run(Command::new(root.join("target/release/leaktracer")).args([
        "attach",
        "--pid",
        &child.id().to_string(),
        "--duration",
        "16s",
        "--interval",
        "5s",
        "--top",
        "3",
    ]));
    let _ = child.kill();
    let _ = child.wait();
    result
}
