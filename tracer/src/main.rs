use clap::Parser as _;
use leaktracer::report::outputs::OutputError;

fn main() {
    let cli = leaktracer::cli::Cli::parse();
    match leaktracer::run(cli) {
        Ok(status) => std::process::exit(status),
        Err(e) => {
            eprintln!("leaktracer: {e:#}");
            // Options that cannot work together are usage errors, like clap's (2).
            let usage = e.downcast_ref::<OutputError>().is_some_and(OutputError::is_usage);
            std::process::exit(if usage { 2 } else { 1 });
        }
    }
}
