//! A shardcache client that sends every key straight to the node and the
//! core that own it, with batch calls.
//!
//! Any gRPC client can call shardcache, but a stock one lands on a random
//! node (one forward hop when another node owns the key) and a random
//! core of it (one cross-core hand-off). This client asks the cluster
//! where keys live (`cache.Cache/Topology`), places each key with
//! [`shardcache_routing`], the very code the server routes by, and keeps
//! one HTTP/2 connection per (node, shard), using the node's per-shard
//! ports (`--shard-ports`) when it has them. A watch (`WatchTopology`)
//! tells it when the ring changes. A stale topology is never wrong, only
//! slower: the node a call reaches forwards it as it would for any client.
//!
//! ```no_run
//! use shardcache_client::Client;
//! use std::time::Duration;
//!
//! # async fn demo() -> Result<(), shardcache_client::Error> {
//! let client = Client::connect(["127.0.0.1:7070"]).await?;
//! client.set("users", "42", "Ada", Some(Duration::from_secs(60))).await?;
//! assert_eq!(client.get("users", "42").await?.as_deref(), Some(&b"Ada"[..]));
//!
//! // One call per (node, shard) for the whole batch; results in order.
//! let got = client.get_many("users", &["42", "43"]).await?;
//! assert!(matches!(&got[1], Ok(None)), "43 was never set");
//!
//! // A deadline for one call (the default is Config::call_timeout).
//! let quick = client.with_timeout(Duration::from_millis(50));
//! let _ = quick.delete("users", "42").await?;
//! # Ok(())
//! # }
//! ```
//!
//! A server without the Topology call (an older shardcache, or another
//! server of the contract) is called like a stock client would: every call
//! goes to the first such seed.
//!
//! Failures: calls fail with [`Error`], which carries the gRPC code. Gets
//! and Deletes, and Sets that failed UNAVAILABLE (the node could not be
//! reached or its owner is down), are retried up to
//! [`Config::max_retries`] times with jittered exponential backoff, within
//! the call's deadline; nothing is retried after its deadline passed.
//! Batch calls fail as a whole only when every attempt to reach a node
//! failed; otherwise each item carries its own result.

mod client;
mod error;
mod topology;

pub use client::{Client, Config};
pub use error::Error;

/// The generated messages and stub of `cache.Cache` (tonic, from the
/// server's `proto/cache.proto`).
pub mod pb {
    tonic::include_proto!("cache");
}
