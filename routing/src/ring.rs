//! The consistent-hash ring: which node of the cluster owns a (group, key).
//!
//! Every node builds its ring from the same member set and must place every
//! key exactly as the others do, so the layout is fixed here, byte for byte,
//! and frozen by the test vectors in `ring_tests.rs`:
//!
//! - A member's identity on the ring is its advertise address as text,
//!   `SocketAddr::to_string()` (`127.0.0.1:7070`, `[::1]:7070`), not its
//!   node id: with `--peers` a node knows its peers by address only, and both
//!   membership modes must agree.
//! - Member `m` has `vnodes` points; point `i` (0-based) sits at
//!   `xxh3_64_with_seed(utf8("{addr}#{i}"), SEED_NODES)`, `i` in decimal
//!   without padding (`127.0.0.1:7070#0`).
//! - A key sits at `xxh3_64_with_seed(len(group) as u64 little-endian (8 bytes)
//!   || group || key, SEED_KEYS)`; the length prefix keeps ("ab","c") and
//!   ("a","bc") apart.
//! - The owner is the member of the first point at or after the key's
//!   position (points sorted by position, then by member index, members
//!   sorted by address), wrapping past the largest point to the smallest.
//!
//! XXH3 (xxhash-rust's `xxh3`) is used because its output is frozen by its
//! specification: the same on every CPU, build and crate version. ahash,
//! fine for in-process maps, promises none of that.
//!
//! Balance: at the default 160 points per member a node's share of the keys
//! deviates from the mean by roughly `1/sqrt(160)`, ~8% (the tests print the
//! measured spread). Adding a member moves only the keys it takes over;
//! removing one moves only its own keys.
//!
//! A ring always has at least one member ([`Ring::new`] returns `None` for
//! none; [`Ring::with_local`] always has this node), so [`Ring::owner`]
//! needs no failure case on the request path.

use super::hash_key;
use std::net::SocketAddr;
use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Seed of the members' points ("shardcac" in ASCII).
pub const SEED_NODES: u64 = 0x7368_6172_6463_6163;
/// Seed of the keys' positions ("ringkeys" in ASCII).
pub const SEED_KEYS: u64 = 0x7269_6e67_6b65_7973;

/// One node of the cluster as the ring knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Reported name (--node-id). Not part of the placement.
    pub node_id: String,
    /// Advertise address: where peers reach this node, and its ring identity.
    pub addr: SocketAddr,
    /// The node's shard count; 0 when unknown (a static peer).
    pub shards: u32,
}

/// An immutable ring, shared by the shards as `Arc<Ring>`.
#[derive(Debug)]
pub struct Ring {
    epoch: u64,
    members: Vec<Member>,
    /// (position, index into `members`), sorted. Never empty.
    points: Vec<(u64, u32)>,
    /// This node may no longer own its keys (its etcd lease is in doubt
    /// while other members still count it in): it refuses its own keys to
    /// clients instead of answering them from a store that may be stale.
    /// Not part of the layout; see `cluster::etcd`.
    fenced: bool,
}

impl Ring {
    /// Builds the ring of `members` (deduplicated by address, the first of
    /// each address kept; sorted by address) with `vnodes` points each
    /// (at least 1). Returns None when `members` is empty.
    pub fn new(epoch: u64, members: Vec<Member>, vnodes: u32) -> Option<Ring> {
        if members.is_empty() {
            return None;
        }
        Some(Ring::build(epoch, members, vnodes))
    }

    /// The ring of this node and `others`, which cannot be empty: `local`
    /// wins over any other member with its address.
    pub fn with_local(epoch: u64, local: Member, others: Vec<Member>, vnodes: u32) -> Ring {
        let mut members = Vec::with_capacity(others.len() + 1);
        members.push(local);
        members.extend(others);
        Ring::build(epoch, members, vnodes)
    }

    /// `members` must not be empty (both callers make sure).
    fn build(epoch: u64, mut members: Vec<Member>, vnodes: u32) -> Ring {
        // Stable sort, so among equal addresses the first given is kept.
        members.sort_by_key(|m| m.addr);
        members.dedup_by(|later, first| later.addr == first.addr);
        let vnodes = vnodes.max(1);
        let mut points = Vec::with_capacity(members.len() * vnodes as usize);
        for (m, member) in members.iter().enumerate() {
            let addr = member.addr.to_string();
            for i in 0..vnodes {
                let label = format!("{addr}#{i}");
                points.push((xxh3_64_with_seed(label.as_bytes(), SEED_NODES), m as u32));
            }
        }
        points.sort_unstable();
        Ring {
            epoch,
            members,
            points,
            fenced: false,
        }
    }

    /// The same ring, with this node fenced or not.
    pub fn with_fence(&self, fenced: bool) -> Ring {
        Ring {
            epoch: self.epoch,
            members: self.members.clone(),
            points: self.points.clone(),
            fenced,
        }
    }

    /// Whether this node refuses its own keys (see the field).
    pub fn is_fenced(&self) -> bool {
        self.fenced
    }

    /// The position of (group, key) on the ring.
    pub fn key_hash(group: &[u8], key: &[u8]) -> u64 {
        hash_key(group, key, SEED_KEYS)
    }

    /// Index into [`Ring::members`] of the owner of (group, key).
    pub fn owner_index(&self, group: &[u8], key: &[u8]) -> usize {
        let h = Ring::key_hash(group, key);
        let i = self.points.partition_point(|&(p, _)| p < h);
        // Past the last point: wrap to the first. `points` is never empty.
        let (_, m) = self.points[i % self.points.len()];
        m as usize
    }

    /// The member that owns (group, key).
    pub fn owner(&self, group: &[u8], key: &[u8]) -> &Member {
        &self.members[self.owner_index(group, key)]
    }

    /// Members sorted by address.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// Version of the membership this ring was built from (etcd revision,
    /// or 1 for static membership); larger is newer.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Always false (a ring has at least one member); here for clippy's
    /// `len_without_is_empty` and for callers that ask anyway.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn member_by_addr(&self, addr: SocketAddr) -> Option<&Member> {
        self.members
            .binary_search_by(|m| m.addr.cmp(&addr))
            .ok()
            .map(|i| &self.members[i])
    }

    pub fn contains(&self, addr: SocketAddr) -> bool {
        self.member_by_addr(addr).is_some()
    }

    /// True when `other` has the same members (address, id and shards);
    /// epochs and fences are not compared.
    pub fn same_members(&self, other: &Ring) -> bool {
        self.members == other.members
    }
}

#[cfg(test)]
#[path = "ring_tests.rs"]
mod tests;
