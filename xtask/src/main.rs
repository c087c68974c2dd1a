//! Project tasks: `cargo xtask <setup|test|lint|demo|eval|bench|fuzz|soak|realworld|go-tables>`. Setup is idempotent and is run by
//! the others first, so each works on a fresh machine.

mod bench;
mod cmd;
mod demo;
mod gotables;
mod realworld;
mod setup;
mod soak;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "leaktracer's project tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what a fresh machine lacks: LLVM 22 and bpf-linker, an LLVM-22 nightly with
    /// rust-src, compilers and Go toolchains for the test fixtures; mount tracefs and bpffs.
    Setup {
        /// Go versions to install for the fixtures: `all`, or e.g. `1.19,1.27`.
        #[arg(long, default_value = setup::GO_DEFAULT)]
        go: String,
    },
    /// Set up, then run every test: unit and property tests (both crates), and the
    /// privileged end-to-end tests against real processes (needs root; a skip is a
    /// failure here).
    Test {
        /// Go versions for the Go tests: `all` (1.19, 1.21 ... 1.27), or e.g. `1.19,1.27`.
        #[arg(long, default_value = setup::GO_DEFAULT)]
        go: String,
        /// Extra arguments for `cargo test` (e.g. `--test integration overhead`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Check formatting and clippy, warnings as errors, on the host crates and on the eBPF
    /// crate (for the BPF target); the layer check. Needs no root once set up.
    Lint,
    /// Set up, build, start the bundled leaky sample and attach to it: a report within
    /// about 20 seconds. `demo go`: a Go service instead.
    Demo {
        /// `go` for the Go service.
        which: Option<String>,
    },
    /// Fuzz the readers of outside data (saved reports for `render`, /proc/PID/maps, ELF
    /// and CFI) longer than the test suite does: property tests with many more cases.
    Fuzz {
        /// Cases per reader (the test suite runs 256).
        #[arg(long, default_value_t = 20_000)]
        cases: u32,
    },
    /// A long session on a busy target (a million live blocks, threads started and
    /// ended, churn), with leaktracer's own memory sampled (figures for BENCHMARKS.md).
    Soak {
        /// How long to trace.
        #[arg(long, default_value_t = 60)]
        minutes: u64,
    },
    /// Real servers from Debian's packages under load on 127.0.0.1 (redis with a bounded
    /// and an unbounded keyspace, python3 -m http.server, a thread per request): no false
    /// suspects, the real leak found, coverage that means what it says.
    Realworld {
        /// Length of each traced run (CI: 20; 60 or more adds redis's requests/s).
        #[arg(long, default_value_t = 20)]
        seconds: u64,
    },
    /// Regenerate the Go runtime layouts for stripped binaries
    /// (tracer/src/stacks/golang/tables.rs) from every Go toolchain's own DWARF.
    GoTables {
        /// More toolchains, by GOROOT (e.g. a Go 1.20 built from source).
        #[arg(long)]
        goroot: Vec<std::path::PathBuf>,
    },
    /// Run the accuracy corpus (tests/corpus/) one program at a time and print expected
    /// and reported verdicts, time to the first `leak`, precision and recall.
    Eval,
    /// Measure tracing costs side by side on an allocation-heavy workload (results go in
    /// BENCHMARKS.md).
    Bench {
        /// Runs of each configuration.
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Workload iterations (about 1.75 allocator calls each).
        #[arg(long, default_value_t = 300_000)]
        iterations: u64,
        /// Only one part: overhead, growth, go, stacks, attach, memory or aggregator.
        #[arg(long)]
        only: Option<String>,
    },
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Setup { go } => setup::run_with_go(&go).map(|_| ()),
        Task::Test { go, args } => test(&go, &args),
        Task::Lint => lint(),
        Task::Demo { which } => match which.as_deref() {
            None => demo::run(false),
            Some("go") => demo::run(true),
            Some(other) => {
                Err(anyhow::anyhow!("no demo {other:?}: `cargo xtask demo` or `cargo xtask demo go`"))
            }
        },
        Task::Eval => eval(),
        Task::Fuzz { cases } => fuzz(cases),
        Task::Soak { minutes } => soak::run(minutes),
        Task::GoTables { goroot } => gotables::run(&goroot),
        Task::Realworld { seconds } => realworld::run(seconds),
        Task::Bench { runs, iterations, only } => bench::run(runs, iterations, only.as_deref()),
    };
    if let Err(e) = result {
        eprintln!("xtask: {e:#}");
        std::process::exit(1);
    }
}

fn test(go: &str, args: &[String]) -> anyhow::Result<()> {
    let env = setup::run_with_go(go)?;
    // The eBPF crate's library (the ABI, the unwind step, the sampling table) on the host.
    if args.is_empty() {
        cmd::run(cmd::cargo(&env).args(["test", "--package", "tracer-ebpf", "--lib"]))?;
    }
    let mut test = cmd::cargo(&env);
    test.args(["test", "--workspace", "--exclude", "tracer-ebpf"]).args(args);
    if args.is_empty() {
        // The unit tests that need root are ignored by a plain `cargo test`: run here.
        test.args(["--", "--include-ignored"]);
    }
    // The privileged tests must run, not skip; the Go tests on the versions asked for.
    test.env("LEAKTRACER_REQUIRE_PRIVILEGED", "1").env("LEAKTRACER_GO", go);
    cmd::run(&mut test)?;
    if args.is_empty() {
        // The older uprobe link paths (perf links, uprobe_multi without sessions), which
        // kernels before 6.13 get: the tests that count figures exactly.
        for (path, filter) in
            [("classic", "native_heap"), ("multi", "native_heap"), ("classic", "lifecycle::an_unseen")]
        {
            let mut fallback = cmd::cargo(&env);
            fallback.args(["test", "--package", "leaktracer", "--test", "integration", "--", filter]);
            fallback.env("LEAKTRACER_REQUIRE_PRIVILEGED", "1").env("LEAKTRACER_LINKS", path);
            cmd::run(&mut fallback)?;
        }
    }
    Ok(())
}

/// The fuzzing property tests, in release, with `cases` cases each.
fn fuzz(cases: u32) -> anyhow::Result<()> {
    let env = setup::run()?;
    let mut test = cmd::cargo(&env);
    test.args(["test", "--release", "--package", "leaktracer", "--lib", "--"])
        .args(FUZZ_TESTS)
        .env("PROPTEST_CASES", cases.to_string());
    cmd::run(&mut test)
}

/// The property tests that fuzz readers of outside data.
const FUZZ_TESTS: [&str; 3] =
    ["any_text_gives_sane_entries", "any_cut_or_damage_is_handled", "damaged_elf_files_are_read_safely"];

/// The corpus test, in its evaluation mode: sequential, with the table printed.
fn eval() -> anyhow::Result<()> {
    let env = setup::run()?;
    let mut test = cmd::cargo(&env);
    test.args(["test", "--package", "leaktracer", "--test", "integration", "corpus", "--", "--nocapture"]);
    test.env("LEAKTRACER_EVAL", "1").env("LEAKTRACER_REQUIRE_PRIVILEGED", "1");
    cmd::run(&mut test)
}

fn lint() -> anyhow::Result<()> {
    let (env, can_build_probes) = setup::for_lint()?;
    let host = |args: &[&str]| {
        let mut c = cmd::cargo(&env);
        if !can_build_probes {
            // Without bpf-linker the host crates are checked against an empty object.
            c.env("AYA_BUILD_SKIP", "1");
        }
        c.args(args);
        c
    };
    cmd::run(&mut host(&["fmt", "--all", "--", "--check"]))?;
    let deny = ["--", "-D", "warnings"];
    cmd::run(host(&["clippy", "--workspace", "--exclude", "tracer-ebpf", "--all-targets"]).args(deny))?;
    // The ABI library, as userspace sees it and with its unit tests.
    cmd::run(host(&["clippy", "--package", "tracer-ebpf", "--lib", "--features", "user"]).args(deny))?;
    cmd::run(host(&["clippy", "--package", "tracer-ebpf", "--lib", "--profile", "test"]).args(deny))?;
    cmd::run(&mut ebpf_clippy(&env))
}

/// Clippy on the eBPF programs, for the BPF target, as tracer/build.rs builds them.
fn ebpf_clippy(env: &setup::Env) -> std::process::Command {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut c = std::process::Command::new("rustup");
    c.current_dir(root.join("tracer-ebpf"))
        .env("PATH", &env.path)
        .env("CARGO_ENCODED_RUSTFLAGS", "--cfg=bpf_target_arch=\"x86_64\"")
        .args([
            "run",
            &env.bpf_toolchain,
            "cargo",
            "clippy",
            "--package",
            "tracer-ebpf",
            "--bins",
            "--release",
        ])
        .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core", "--target-dir"])
        .arg(root.join("target/ebpf-clippy"))
        .args(["--", "-D", "warnings"]);
    c
}
