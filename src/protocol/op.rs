//! The request vocabulary every front end shares: what a client asks of
//! one key, whichever protocol carried it (gRPC, the HTTP gateway, a peer
//! node), and whichever shard or node ends up serving it.

use bytes::Bytes;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheOp {
    Get {
        group: String,
        key: String,
    },
    Set {
        group: String,
        key: String,
        value: Bytes,
        /// 0 = never expires.
        ttl_ms: u64,
    },
    Delete {
        group: String,
        key: String,
    },
}

impl CacheOp {
    pub fn group(&self) -> &str {
        match self {
            CacheOp::Get { group, .. }
            | CacheOp::Set { group, .. }
            | CacheOp::Delete { group, .. } => group,
        }
    }

    pub fn key(&self) -> &str {
        match self {
            CacheOp::Get { key, .. } | CacheOp::Set { key, .. } | CacheOp::Delete { key, .. } => {
                key
            }
        }
    }
}
