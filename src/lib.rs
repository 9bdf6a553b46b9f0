//! shardcache: a distributed in-memory cache. One pinned thread per core,
//! each owning a shard of the keys; a hand-written HTTP/2 + gRPC server on
//! io_uring. See docs/architecture.md for the map.
//!
//! - [`cluster`]: membership (alone, static peers, etcd) and the consistent-hash ring.
//! - [`config`]: flags and their parsing.
//! - [`runtime`]: the only door to glommio (executors, sockets, timers, mesh).
//! - [`store`]: one shard's map, LRU, TTLs and byte budget. No I/O.
//! - [`protocol`]: HTTP/2, gRPC and HTTP/1.1, bytes in and out. No sockets, no store.
//! - [`gateway`]: the HTTP gateway's routes and responses. Pure.
//! - [`metrics`]: per-shard counters and histograms, Prometheus rendering. No I/O.
//! - [`shard`]: a core's state, key routing and cross-core hand-off.
//! - [`server`]: start-up, shutdown and the per-connection loop that composes them.
//! - [`systemd`]: sd_notify (READY, STOPPING, WATCHDOG).

pub mod cluster;
pub mod config;
pub mod gateway;
pub mod metrics;
pub mod protocol;
pub mod runtime;
pub mod server;
pub mod shard;
pub mod store;
pub mod systemd;

/// Messages generated from proto/cache.proto by prost.
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/cache.rs"));

    /// The standard gRPC health service's messages.
    pub mod health {
        include!(concat!(env!("OUT_DIR"), "/grpc.health.v1.rs"));
    }
}
