//! The `shardcache-loadtest` binary: parse flags, run, print the report.
//!
//! Exit status: 0 after a run in which at least one request got a gRPC
//! response (errors are reported, not fatal); 1 when none did (nothing
//! reachable); 2 for bad flags or unresolvable targets.

use clap::CommandFactory;
use shardcache_loadtest::cli::{Args, ClientChoice};
use shardcache_loadtest::client_mode::{self, ClientKind};
use shardcache_loadtest::progress::{Live, Progress};
use shardcache_loadtest::runner::{self, RunConfig};
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Instant;

fn main() {
    let args = Args::parse_or_exit();
    let cfg = match RunConfig::from_args(&args) {
        Ok(c) => c,
        Err(msg) => Args::command()
            .error(clap::error::ErrorKind::ValueValidation, msg)
            .exit(),
    };
    let base = Instant::now();
    let live =
        (!args.no_progress && std::io::stderr().is_terminal()).then(|| Arc::new(Live::default()));
    let progress = live.as_ref().map(|l| {
        let keys = if args.preload { args.keys } else { 0 };
        Progress::start(l.clone(), base, args.warmup, keys)
    });
    let report = match args.client {
        ClientChoice::Native => runner::run(Arc::new(cfg), live, base),
        ClientChoice::Tonic => client_mode::run(Arc::new(cfg), ClientKind::Tonic, args.batch),
        ClientChoice::Sharded => client_mode::run(Arc::new(cfg), ClientKind::Sharded, args.batch),
    };
    if let Some(p) = progress {
        p.finish();
    }
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.human());
    }
    if report.stats.responses() == 0 {
        eprintln!("shardcache-loadtest: no request got a response");
        std::process::exit(1);
    }
}
