//! The `shardcache` command: parse flags, set up logging, raise the
//! locked-memory limit io_uring needs, and run the node.

use shardcache::config::{self, Action};
use shardcache::{runtime, server};
use std::process::ExitCode;

fn main() -> ExitCode {
    // Before any thread or large allocation exists (see the function).
    runtime::configure_allocator();
    abort_on_panic();
    let action = match config::load(std::env::args_os().collect(), std::env::vars()) {
        Ok(a) => a,
        // clap prints usage errors to stderr and exits 2 (help/version: 0).
        Err(e) => e.exit(),
    };
    let args = match action {
        Action::Serve(a) => a,
        Action::CheckConfig(a) => {
            let c = server::NodeConfig::from_args(&a);
            // Origins are resolved too, as the node would at start-up.
            // TLS files are read and checked as at start-up.
            let tls = || match c.tls.clone() {
                Some(files) => shardcache::tls::Tls::load(files).map(drop),
                None => Ok(()),
            };
            if let Err(e) = c
                .check()
                .and_then(|()| c.group_specs().map(drop))
                .and_then(|()| tls())
                .and_then(|()| c.peer_secret().map(drop))
                .and_then(|()| c.etcd_tls().map(drop))
            {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
            println!("configuration is valid:\n{c:#?}");
            return ExitCode::SUCCESS;
        }
    };
    init_logging(args.log_level.as_deref());
    let config = server::NodeConfig::from_args(&args);
    if let Err(e) = config.check() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    if let Err(e) = config.peer_secret().and_then(|_| config.etcd_tls()) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    // A bad TLS file is a configuration error too; loaded once, here.
    let tls = match server::load_tls(&config) {
        Ok(tls) => tls,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    // Not fatal by itself: recent kernels do not charge io_uring to the
    // limit. If executors then fail to start, that error repeats the hint.
    if let Err(e) = runtime::raise_memlock(config.shards) {
        tracing::warn!("{e}");
    }
    tracing::info!(
        shards = config.shards,
        memory = config.memory,
        max_value = config.max_value,
        node_id = config.node_id.as_deref().unwrap_or("(listen address)"),
        "starting shardcache"
    );
    match server::run(config, tls) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr; colours only on a terminal; level from --log-level, else
/// RUST_LOG, else info.
/// A panic anywhere ends the process. A shard that died alone would leave
/// a half-alive node: its listener gone from the SO_REUSEPORT group (or
/// worse, still in it), its keys unanswerable, its peers' hand-offs never
/// answered, while health checks of the other shards pass. Aborting, with
/// the panicking thread (`shard-N`, `control`, ...) named, lets the service
/// manager restart a whole node (dist/systemd: Restart=on-failure).
fn abort_on_panic() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("an unnamed thread");
        eprintln!("shardcache: fatal: {name} panicked; the node aborts (a shard cannot be restarted alone)");
        report(info);
        std::process::abort();
    }));
}

fn init_logging(level: Option<&str>) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = match level {
        Some(l) => EnvFilter::try_new(l).unwrap_or_else(|e| {
            eprintln!("error: invalid value '{l}' for '--log-level': {e}");
            std::process::exit(2)
        }),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
