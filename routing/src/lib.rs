//! Where a shardcache key lives, computed the same way by every node and
//! every client that wants to reach the owner directly:
//!
//! - [`Ring`]: the consistent-hash ring over the cluster's nodes, which
//!   node owns a (group, key);
//! - [`shard_of`]: which of that node's shards owns it.
//!
//! Both hash the same bytes, `len(group)` as 8 little-endian bytes, then
//! the group, then the key, with XXH3 (64-bit) under different seeds, so
//! the shard a key lands on is independent of its ring position. XXH3's
//! output is fixed by its specification: the layout is frozen by the test
//! vectors here, and changing it breaks every client that routes by it.

mod ring;
mod shard;

/// The name of this placement (ring and shard hash), as the server's
/// Topology call reports it: a client that finds another name must not
/// route by this crate.
pub const LAYOUT: &str = "xxh3-v1";

pub use ring::{Member, Ring, SEED_KEYS, SEED_NODES};
pub use shard::{shard_of, SEED_SHARDS};

use xxhash_rust::xxh3::{xxh3_64_with_seed, Xxh3};

/// Keys and groups up to this size are hashed from a stack copy in one call;
/// longer ones through the streaming hasher (same result, no allocation).
const INLINE_KEY: usize = 256;

/// XXH3 of `len(group) as u64 LE || group || key` under `seed`: the length
/// prefix keeps ("ab", "c") and ("a", "bc") apart.
fn hash_key(group: &[u8], key: &[u8], seed: u64) -> u64 {
    let len = (group.len() as u64).to_le_bytes();
    let total = 8 + group.len() + key.len();
    if total <= INLINE_KEY {
        let mut buf = [0u8; INLINE_KEY];
        buf[..8].copy_from_slice(&len);
        buf[8..8 + group.len()].copy_from_slice(group);
        buf[8 + group.len()..total].copy_from_slice(key);
        xxh3_64_with_seed(&buf[..total], seed)
    } else {
        let mut h = Xxh3::with_seed(seed);
        h.update(&len);
        h.update(group);
        h.update(key);
        h.digest()
    }
}
