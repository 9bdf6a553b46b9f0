//! The `shardcache` command: parse flags, set up logging, raise the
//! locked-memory limit io_uring needs, and run the node.

use clap::Parser;
use shardcache::config::{Cli, Command};
use shardcache::{runtime, server};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let args = match cli.command {
        Some(Command::Serve(a)) => a,
        None => cli.serve,
    };
    init_logging();
    if let Err(e) = runtime::raise_memlock() {
        tracing::error!("{e}");
        return ExitCode::FAILURE;
    }
    let config = server::NodeConfig::from_args(&args);
    tracing::info!(
        shards = config.shards,
        memory = config.memory,
        max_value = config.max_value,
        node_id = %config.node_id,
        "starting shardcache"
    );
    match server::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr; colours only on a terminal; level from RUST_LOG (default info).
fn init_logging() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
