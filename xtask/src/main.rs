//! Project tasks: `cargo xtask <setup|test|lint|demo>`. Setup is idempotent and is run by
//! the others first, so each works on a fresh machine.

mod bench;
mod cmd;
mod demo;
mod setup;

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
    /// rust-src, compilers and Go for the test fixtures; mount tracefs and bpffs.
    Setup,
    /// Set up, then run every test: unit and property tests, and the privileged
    /// end-to-end tests against real processes (needs root; a skip is a failure here).
    Test {
        /// Extra arguments for `cargo test` (e.g. `--test integration overhead`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Check formatting and clippy (warnings are errors).
    Lint,
    /// Set up, build, start the bundled leaky sample and attach to it: a report within
    /// about 20 seconds.
    Demo,
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
        /// Only one part: overhead, stacks, attach, memory or aggregator.
        #[arg(long)]
        only: Option<String>,
    },
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Setup => setup::run().map(|_| ()),
        Task::Test { args } => test(&args),
        Task::Lint => lint(),
        Task::Demo => demo::run(),
        Task::Eval => eval(),
        Task::Bench { runs, iterations, only } => bench::run(runs, iterations, only.as_deref()),
    };
    if let Err(e) = result {
        eprintln!("xtask: {e:#}");
        std::process::exit(1);
    }
}

fn test(args: &[String]) -> anyhow::Result<()> {
    let env = setup::run()?;
    let mut test = cmd::cargo(&env);
    test.args(["test", "--workspace", "--exclude", "tracer-ebpf"]).args(args);
    // The privileged tests must run, not skip.
    test.env("LEAKTRACER_REQUIRE_PRIVILEGED", "1");
    cmd::run(&mut test)
}

/// The corpus test, in its evaluation mode: sequential, with the table printed.
fn eval() -> anyhow::Result<()> {
    let env = setup::run()?;
    let mut test = cmd::cargo(&env);
    test.args(["test", "--package", "leaktracer", "--test", "integration", "corpus", "--", "--nocapture"]);
    test.env("LEAKTRACER_EVAL", "1").env("LEAKTRACER_REQUIRE_PRIVILEGED", "1");
    cmd::run(&mut test)
}

fn lint() -> anyhow::Result<()> {
    let env = setup::run()?;
    cmd::run(cmd::cargo(&env).args(["fmt", "--all", "--", "--check"]))?;
    cmd::run(cmd::cargo(&env).args([
        "clippy",
        "--workspace",
        "--exclude",
        "tracer-ebpf",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))
}
