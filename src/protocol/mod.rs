//! Wire protocols, free of sockets and of storage: bytes in, typed events
//! out, and encoders for the replies.
//!
//! - [`http2`]: HTTP/2 framing, HPACK and per-connection state (RFC 9113/7540, 7541).
//! - [`grpc`]: the gRPC layer on top: routes, message framing, status, deadlines.
//! - [`peer`]: the node-to-node format a shard forwards requests in.
//! - [`CacheOp`]: what a request asks of one key, whatever carried it.
//! - [`http1`]: HTTP/1.1 request decoding and response encoding (RFC 9112), for the gateway.

pub mod grpc;
pub mod http1;
pub mod http2;
mod op;
pub mod peer;
pub mod peer_auth;

pub use op::{check_group, check_key, CacheOp, Invalid, MAX_GROUP_BYTES, MAX_KEY_BYTES};
