use clap::Parser as _;

fn main() {
    let cli = leaktracer::cli::Cli::parse();
    match leaktracer::run(cli) {
        Ok(status) => std::process::exit(status),
        Err(e) => {
            eprintln!("leaktracer: {e:#}");
            std::process::exit(1);
        }
    }
}
