//! The cluster control plane: who the members are, and the ring built from
//! them, delivered to every shard.
//!
//! - `ring.rs`: the consistent-hash ring and its byte layouts.

pub mod ring;

pub use ring::{Member, Ring};
