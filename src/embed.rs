//! A node inside another program, the way groupcache libraries are used:
//! the program starts a node with the same flags as the daemon, gives some
//! groups a [`Loader`] written in code, and stops the node when it is done.
//! Clients (the program itself, or others) talk to it over gRPC or HTTP as
//! to any node; the node may also join a cluster (`--peers`, `--etcd`).
//!
//! ```no_run
//! use shardcache::embed::{GroupOptions, NodeBuilder};
//! use shardcache::groups::{LoadFuture, Loader};
//! use std::sync::Arc;
//!
//! struct Squares;
//! impl Loader for Squares {
//!     fn load<'a>(&'a self, _group: &'a str, key: &'a str) -> LoadFuture<'a> {
//!         Box::pin(async move { Ok(key.parse::<u64>().ok().map(|n| (n * n).to_string().into())) })
//!     }
//!     fn describe(&self) -> String {
//!         "squares".into()
//!     }
//! }
//!
//! let node = NodeBuilder::new()
//!     .args(["--listen", "127.0.0.1:0", "--http", "off", "--shards", "2"])
//!     .group("squares", Arc::new(Squares), GroupOptions::default())
//!     .start()?;
//! println!("serving on {}", node.addr());
//! node.shutdown()?;
//! # Ok::<(), String>(())
//! ```
//!
//! The node runs on its own threads (one pinned executor per shard); the
//! loader's future runs on the shard that owns the key, so it must not
//! block: hand blocking work to a thread of your own and await its answer.
//! The node installs no signal handlers and never exits the process; the
//! program keeps its own logging (a `tracing` subscriber, if it wants the
//! node's logs).

use crate::config::{self, Action};
use crate::groups::{GroupSpec, Loader, DEFAULT_LOAD_TIMEOUT};
use crate::runtime;
use crate::server::{self, Hooks, NodeConfig};
use std::net::SocketAddr;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// A code-loaded group's options, as `[groups.NAME]` has them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupOptions {
    /// TTL of loaded values; zero = never expire.
    pub ttl: Duration,
    pub load_timeout: Duration,
    /// How long a "not found" is remembered; zero = not at all.
    pub negative_ttl: Duration,
}

impl Default for GroupOptions {
    fn default() -> Self {
        GroupOptions {
            ttl: Duration::ZERO,
            load_timeout: DEFAULT_LOAD_TIMEOUT,
            negative_ttl: Duration::ZERO,
        }
    }
}

/// Builds an embedded node.
#[derive(Default)]
pub struct NodeBuilder {
    args: Vec<String>,
    loaders: Vec<GroupSpec>,
}

impl NodeBuilder {
    pub fn new() -> NodeBuilder {
        NodeBuilder::default()
    }

    /// Flags, exactly as `shardcache serve` takes them (including
    /// `--config FILE`); the environment is not read.
    pub fn args<I, S>(mut self, args: I) -> NodeBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// A group whose misses `loader` fills.
    pub fn group(
        mut self,
        name: &str,
        loader: Arc<dyn Loader>,
        options: GroupOptions,
    ) -> NodeBuilder {
        self.loaders.push(GroupSpec {
            name: name.to_string(),
            loader: Some(loader),
            ttl: options.ttl,
            load_timeout: options.load_timeout,
            negative_ttl: options.negative_ttl,
        });
        self
    }

    /// Starts the node and returns once every shard listens, or with the
    /// reason it could not start (a bad flag, a busy port, ...).
    pub fn start(self) -> Result<Node, String> {
        let mut argv = vec!["shardcache".to_string(), "serve".to_string()];
        argv.extend(self.args);
        let args = match config::load(argv.into_iter().map(Into::into).collect(), Vec::new()) {
            Ok(Action::Serve(a)) | Ok(Action::CheckConfig(a)) => a,
            Err(e) => return Err(e.render().to_string().trim().to_string()),
        };
        let config = NodeConfig::from_args(&args);
        if let Err(e) = runtime::raise_memlock(config.shards) {
            tracing::warn!("{e}");
        }
        let (stop_tx, stop_rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        let hooks = Hooks {
            loaders: self.loaders,
            on_listening: Some(ready_tx),
            embedded: true,
            tls: None,
        };
        let thread = std::thread::Builder::new()
            .name("shardcache-node".into())
            .spawn(move || server::serve(config, hooks, stop_rx))
            .map_err(|e| format!("cannot start the node's thread: {e}"))?;
        match ready_rx.recv() {
            Ok((addr, http_addr)) => Ok(Node {
                addr,
                http_addr,
                stop: stop_tx,
                thread: Some(thread),
            }),
            // The node ended before listening: its error says why.
            Err(_) => Err(match thread.join() {
                Ok(Err(e)) => e,
                Ok(Ok(())) => "the node stopped before it listened".to_string(),
                Err(_) => "the node's thread panicked".to_string(),
            }),
        }
    }
}

/// A running embedded node. Dropping it shuts it down too.
pub struct Node {
    addr: SocketAddr,
    http_addr: Option<SocketAddr>,
    stop: mpsc::Sender<i32>,
    thread: Option<JoinHandle<Result<(), String>>>,
}

impl Node {
    /// The gRPC address (port 0 in `--listen` resolved).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The HTTP gateway's address, unless `--http off`.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// Leaves the cluster, finishes the calls in flight and stops the
    /// node's threads, as SIGTERM does to the daemon.
    pub fn shutdown(mut self) -> Result<(), String> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> Result<(), String> {
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        let _ = self.stop.send(15);
        thread
            .join()
            .map_err(|_| "the node's thread panicked".to_string())?
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.stop_and_join();
    }
}
