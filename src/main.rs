//! The `wasmfleet` binary: parses the command line and dispatches to the library.

use clap::Parser as _;

fn main() {
    // Before any thread starts: a small address space must not go to malloc arenas.
    wasmfleet_runtime::fit_allocator_to_address_space();
    let cli = wasmfleet::cli::Cli::parse();
    // The agent logs what it does; client commands and the demo stay quiet unless asked.
    let default = match cli.command {
        wasmfleet::cli::Command::Agent(_) => "warn,wasmfleet=info",
        _ => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("WASMFLEET_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).init();
    match wasmfleet::cli::run(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}
