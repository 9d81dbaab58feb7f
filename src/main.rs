//! The `wasmfleet` binary: parses the command line and dispatches to the library.

use clap::Parser as _;

fn main() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WASMFLEET_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,wasmfleet=info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).init();
    let cli = wasmfleet::cli::Cli::parse();
    match wasmfleet::cli::run(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}
