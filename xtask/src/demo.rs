//! `cargo xtask demo`: the main job on a bundled leaky sample, for a newcomer to watch.
//! `cargo xtask demo go`: the same on a Go service with a goroutine leak, a defer pile
//! holding open files and a growing cache, beside healthy work.

use std::{
    path::Path,
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use anyhow::Context as _;

use crate::{cmd, setup};

pub fn run(go: bool) -> anyhow::Result<()> {
    let env = setup::run()?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    cmd::run(cmd::cargo(&env).args(["build", "--release", "--package", "leaktracer"]))?;
    if go {
        return go_service(&root);
    }

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

/// The Go service of tests/go/service, ten times its default rates, traced for 20 s.
fn go_service(root: &Path) -> anyhow::Result<()> {
    let out = root.join("target/demo");
    std::fs::create_dir_all(&out)?;
    let exe = out.join("service");
    let go =
        setup::go_tool(27).or_else(|| setup::go_tool(19)).context("no Go toolchain (cargo xtask setup)")?;
    cmd::run(
        setup::go_build(&go, &root.join("tests/go/service"), &out.join("gocache"), &exe).arg("service.go"),
    )?;
    let data = out.join("service-data");
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data)?;
    let mut child = Command::new(&exe)
        .env("LT_SCALE", "10")
        .env("LT_DIR", &data)
        .stdout(Stdio::null())
        .spawn()
        .context("cannot start the service")?;
    eprintln!(
        "\nxtask: started a Go service (pid {}) with three bugs beside healthy work: request\n\
         goroutines that block forever once their caller gave up, `defer f.Close()` in an\n\
         endless loop, a session cache that never evicts. Tracing it for 20 s:\n",
        child.id()
    );
    thread::sleep(Duration::from_secs(1));
    let result = cmd::run(Command::new(root.join("target/release/leaktracer")).args([
        "attach",
        "--pid",
        &child.id().to_string(),
        "--duration",
        "20s",
        "--interval",
        "10s",
        "--top",
        "8",
    ]));
    let _ = child.kill();
    let _ = child.wait();
    result
}
