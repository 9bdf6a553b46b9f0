//! A compact client-side HTTP/2 (RFC 9113) for cleartext connections with
//! prior knowledge, split like the server's:
//!
//! - [`frame`]: frame layout and writers (no state);
//! - [`conn`]: the per-connection state machine (settings, streams, flow
//!   control, GOAWAY). HPACK comes from the `shardcache` crate.

pub mod conn;
pub mod frame;

pub use conn::{ClientConn, H2Error, StreamEnd, StreamState};
