//! shardcache-loadtest: a load generator for the `cache.Cache` gRPC contract
//! (shardcache or any server of the same contract).
//!
//! - [`cli`]: flags, their parsers and cross-flag validation.
//! - [`h2`]: a compact client-side HTTP/2 connection (frames, flow control,
//!   settings, multiplexed streams). Bytes in, events out; no sockets.
//! - [`grpc`]: unary gRPC calls on top: request framing, response status,
//!   the `found` bit of Get replies.
//! - [`workload`]: which request to send next (op mix, key sampling, values).
//! - [`schedule`]: open-loop send times (the fixed-rate schedule).
//! - [`stats`]: per-run counters, the latency histogram and the report.
//! - [`runner`]: threads, runtimes, connections, reconnects and the drive loop.
//! - [`client_mode`]: the same workload through tonic or shardcache-client
//!   (`--client`), closed loop.
//! - [`progress`]: the live progress line.
//! - [`timer`]: a microsecond-precise timer for open-loop sends.

pub mod cli;
pub mod client_mode;
pub mod grpc;
pub mod h2;
pub mod progress;
pub mod runner;
pub mod schedule;
pub mod stats;
pub mod timer;
pub mod workload;

/// Messages generated from proto/cache.proto by prost.
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/cache.rs"));
}
