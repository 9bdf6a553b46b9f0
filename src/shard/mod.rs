//! A shard: one core's slice of the keyspace and the machinery to reach the
//! other cores.
//!
//! Each shard owns a [`Store`] that only its own thread touches, and, in a
//! cluster, a hot store of copies of popular keys that other nodes own. A
//! request whose key belongs to another shard becomes an [`Op`] sent to
//! that shard (see `handoff.rs`): everything bound for one shard during one
//! event-loop turn travels as one [`Batch`] over the cross-core channel
//! mesh (so a busy connection pays one wake-up per turn, not per request),
//! and the answers come back the same way, to be delivered where
//! [`ReplyTo`] says.
//!
//! Every key has one home shard on every node (the [`Router`]'s choice):
//! its entry when this node owns it, its hot copy and the forwarding of its
//! requests when another node does. The read-through state of the keys it
//! owns (loads in flight, remembered "not found" answers) lives here too;
//! the server runs the loads (`server/dispatch.rs`).
//!
//! A shard also owns its [`ShardMetrics`]: recorded by its own thread
//! through the small methods below (no atomics, no allocation), and read
//! by a scrape as an [`Op::Metrics`] like any other cross-core request.

mod handoff;
mod notify;
mod transit;

pub use handoff::Batch;
pub use notify::{Mailbox, Notify};
pub use transit::{InTransit, LARGE_VALUE};

use crate::cluster::{Ring, RingReceiver};
use crate::groups::{Groups, NegativeCache, SingleFlight};
use crate::metrics::{self, Interface, PeerError, ReplyStatus, ShardMetrics, ShardSnapshot};
use crate::protocol::grpc::Status;
use crate::protocol::CacheOp;
use crate::runtime::{self, MeshSender};
use crate::store::{SetError, Store, StoreStats};
use bytes::Bytes;
use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What one shard asks of another.
#[derive(Debug)]
pub enum Op {
    /// A key request, served by its home shard. `forward` is false when a
    /// peer node sent it (served on this node, never forwarded again).
    Cache {
        op: CacheOp,
        forward: bool,
        deadline: Option<Instant>,
    },
    /// The shard's counters.
    Stats,
    /// Drop the hot copy of (group, key): its owner changed it. No reply.
    Invalidate { group: String, key: String },
    /// A scrape: the shard's store counters and a copy of its metrics.
    Metrics,
}

/// The outcome of an [`Op`], from a shard of this node or from the node
/// that owns the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Get(Option<Bytes>),
    /// `Ok(true)`: the key was new.
    Set(Result<bool, SetError>),
    Delete(bool),
    /// The answering shard's index and counters.
    Stats(usize, ShardCounters),
    /// The answer to [`Op::Metrics`]. Boxed: a snapshot is kilobytes, and
    /// every other reply stays small in batches and mailboxes.
    Metrics(Box<ShardSnapshot>),
    /// The call failed elsewhere: the owner node answered with this status,
    /// or it (or the group's source) could not be reached.
    Failed(Status),
}

/// Where an answer goes.
#[derive(Clone)]
pub enum ReplyTo {
    /// A connection of this shard: its mailbox, with the tag it gave (a
    /// stream id, a request id).
    Conn(Rc<Mailbox>, u32),
    /// Another shard of this node, which handed the request over with this
    /// token and will pass the answer on.
    Shard { shard: usize, token: u64 },
}

impl std::fmt::Debug for ReplyTo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReplyTo::Conn(_, tag) => write!(f, "Conn(tag {tag})"),
            ReplyTo::Shard { shard, token } => write!(f, "Shard({shard}, token {token})"),
        }
    }
}

/// Where a key's request is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// By this shard: its own store, or (for another node's key) its hot
    /// copy and its connection to the owner.
    Here,
    /// By another shard of this node, the key's home shard.
    Shard(usize),
    /// By the node at this address, the key's owner on the ring; this
    /// shard is the key's home shard and forwards it.
    Node(SocketAddr),
}

/// Maps (group, key) to a shard: XXH3 under a fixed seed, so every shard
/// and every client agrees; a different function from the store's map hash
/// (random seeds) and from the cluster ring's hash (another seed), so keys
/// spread evenly at every level.
#[derive(Clone)]
pub struct Router {
    shards: usize,
}

impl Router {
    pub fn new(shards: usize) -> Router {
        Router {
            shards: shards.max(1),
        }
    }

    /// The home shard of (group, key): `shardcache_routing::shard_of`, the
    /// function clients that reach a shard directly use too.
    pub fn shard_of(&self, group: &[u8], key: &[u8]) -> usize {
        shardcache_routing::shard_of(group, key, self.shards)
    }
}

/// What a shard is given at start-up besides its place in the mesh.
pub struct ShardSettings {
    /// Budget of the main store.
    pub capacity_bytes: u64,
    /// Budget of the hot store (0: no hot cache).
    pub hot_capacity_bytes: u64,
    pub hot_ttl: Duration,
    pub groups: Groups,
    /// Remembered "not found" answers, at most.
    pub negative_entries: usize,
    /// This node's advertise address: its identity on the ring.
    pub me: SocketAddr,
    pub ring: Arc<Ring>,
    pub rings: RingReceiver,
}

/// A shard's counters, as Stats reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShardCounters {
    pub store: StoreStats,
    pub hot: StoreStats,
    pub loads: u64,
    pub load_errors: u64,
    pub singleflight_joins: u64,
    pub negative_hits: u64,
    pub invalidations_sent: u64,
    pub invalidations_received: u64,
}

/// A hot copy is admitted after a fetch with this chance (1 in N): a key
/// read often gets in after a few reads, a key read once rarely does.
const HOT_ADMIT_ONE_IN: u64 = 8;

/// The sweep asks the allocator to give free memory back to the kernel
/// once the stores have freed this much since the last time (pages and
/// blocks of entries gone): often enough that RSS follows the budget when
/// value sizes shift, rarely enough that the walk of the heap it costs
/// stays off the data path's budget (at most one per sweep tick).
const RELEASE_AFTER_BYTES: u64 = 4 << 20;

/// The state of one shard, shared by the tasks of its executor.
pub struct Shard {
    id: usize,
    router: Router,
    store: RefCell<Store>,
    hot: Option<RefCell<Store>>,
    hot_ttl_ms: u64,
    /// xorshift state for sampled hot admission.
    sample: Cell<u64>,
    groups: Groups,
    flights: RefCell<SingleFlight<(String, String), ReplyTo>>,
    negative: RefCell<NegativeCache>,
    epoch: Instant,
    mesh: MeshSender<Batch>,
    /// Per destination shard: what this turn has to send, and the wake-up
    /// of the task that sends it.
    outbox: Vec<RefCell<Batch>>,
    outbox_ready: Vec<Notify>,
    /// Token of a request handed to another shard → where its answer goes.
    waiting: RefCell<hashbrown::HashMap<u64, ReplyTo>>,
    next_token: Cell<u64>,
    /// This shard's counters; only its own thread records or reads them.
    metrics: RefCell<ShardMetrics>,
    me: SocketAddr,
    /// The cluster ring this shard routes by, replaced (never mutated)
    /// when the control plane publishes a new one on `rings`.
    ring: RefCell<Arc<Ring>>,
    rings: RingReceiver,
    /// Slots the sweep still has to check for keys this node no longer
    /// owns, after a ring change.
    purge_left: Cell<usize>,
    /// The ring's other members.
    others: RefCell<Rc<[SocketAddr]>>,
    /// The stores' `released_bytes` when the allocator last gave free
    /// memory back to the kernel.
    released_seen: Cell<u64>,
}

fn others_of(ring: &Ring, me: SocketAddr) -> Rc<[SocketAddr]> {
    ring.members()
        .iter()
        .map(|m| m.addr)
        .filter(|&a| a != me)
        .collect()
}

impl Shard {
    pub fn new(router: Router, mesh: MeshSender<Batch>, settings: ShardSettings) -> Shard {
        let n = router.shards;
        let id = mesh.shard_id();
        Shard {
            id,
            router,
            store: RefCell::new(Store::new(settings.capacity_bytes)),
            hot: (settings.hot_capacity_bytes > 0)
                .then(|| RefCell::new(Store::new(settings.hot_capacity_bytes))),
            hot_ttl_ms: settings.hot_ttl.as_millis().max(1) as u64,
            sample: Cell::new(0x9e37_79b9_7f4a_7c15 ^ (id as u64 + 1)),
            groups: settings.groups,
            flights: RefCell::new(SingleFlight::default()),
            negative: RefCell::new(NegativeCache::new(settings.negative_entries)),
            epoch: Instant::now(),
            mesh,
            outbox: (0..n).map(|_| RefCell::new(Batch::default())).collect(),
            outbox_ready: (0..n).map(|_| Notify::default()).collect(),
            waiting: RefCell::new(hashbrown::HashMap::new()),
            next_token: Cell::new(0),
            metrics: RefCell::new(ShardMetrics::new()),
            me: settings.me,
            others: RefCell::new(others_of(&settings.ring, settings.me)),
            ring: RefCell::new(settings.ring),
            rings: settings.rings,
            purge_left: Cell::new(0),
            released_seen: Cell::new(0),
        }
    }

    pub fn id(&self) -> usize {
        self.id
    }

    pub fn shard_count(&self) -> usize {
        self.router.shards
    }

    /// The key's home shard on this node.
    pub fn home_of(&self, group: &[u8], key: &[u8]) -> usize {
        self.router.shard_of(group, key)
    }

    /// Where `(group, key)` is served. `forward` is false for a request
    /// that a peer node forwarded here: it is served on this node whatever
    /// our ring says, so a request makes at most one hop between nodes.
    pub fn locate(&self, group: &[u8], key: &[u8], forward: bool) -> Location {
        let home = self.router.shard_of(group, key);
        let remote = if forward {
            self.owner_node(group, key)
        } else {
            None
        };
        match remote {
            // Without a hot cache any shard may forward; with one, the
            // key's home shard does, since it holds the copy.
            Some(node) if home == self.id || self.hot.is_none() => Location::Node(node),
            _ if home == self.id => Location::Here,
            _ => Location::Shard(home),
        }
    }

    /// The node id of the member at `addr` (the address when unknown).
    pub fn node_name(&self, addr: SocketAddr) -> String {
        match self.ring.borrow().member_by_addr(addr) {
            Some(m) => m.node_id.clone(),
            None => addr.to_string(),
        }
    }

    /// Whether keys this node owns are refused to clients (its etcd lease is
    /// in doubt: `cluster::etcd`).
    pub fn fenced(&self) -> bool {
        self.ring.borrow().is_fenced()
    }

    /// The key's owner node when it is not this node.
    fn owner_node(&self, group: &[u8], key: &[u8]) -> Option<SocketAddr> {
        let ring = self.ring.borrow();
        if ring.len() < 2 && ring.members()[0].addr == self.me {
            return None; // this node alone: no hash needed
        }
        let owner = ring.owner(group, key).addr;
        (owner != self.me).then_some(owner)
    }

    /// The other members of the ring (where invalidations go); computed
    /// once per ring.
    pub fn other_members(&self) -> Rc<[SocketAddr]> {
        self.others.borrow().clone()
    }

    /// The ring requests are routed by.
    pub fn ring(&self) -> Arc<Ring> {
        self.ring.borrow().clone()
    }

    /// Takes up the newest ring the control plane published since the last
    /// call, if any, and returns it. Never blocks.
    ///
    /// Keys whose owner changed must not be served from what this node
    /// kept of them: the hot copies go at once, and the entries this node
    /// no longer owns are dropped by the next full sweep (they would come
    /// back stale if the ring changed back).
    ///
    /// A node that was out of the ring (its etcd lease expired while it was
    /// cut off) and is back in it drops everything it holds: other nodes
    /// served its keys meanwhile, so what it kept may be stale. Every ring
    /// published since the last call is looked at, so a brief absence is
    /// not missed.
    pub fn refresh_ring(&self) -> Option<Arc<Ring>> {
        let mut was_out = !self.ring.borrow().contains(self.me);
        let mut newest = None;
        for ring in self.rings.try_iter() {
            was_out |= !ring.contains(self.me);
            newest = Some(ring);
        }
        let newest = newest?;
        if was_out && newest.contains(self.me) {
            let mut store = self.store.borrow_mut();
            let dropped = store.len();
            store.clear();
            tracing::info!(
                shard = self.id,
                "rejoined the cluster: dropped {dropped} items kept from before \
                 (other nodes served these keys meanwhile)"
            );
        }
        *self.ring.borrow_mut() = newest.clone();
        *self.others.borrow_mut() = others_of(&newest, self.me);
        self.with_hot(|h| h.clear());
        self.purge_left.set(self.store.borrow().slots());
        Some(newest)
    }

    /// Milliseconds on this shard's monotonic clock (the store's time base).
    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Requests this shard handed to others so far.
    pub fn handoffs(&self) -> u64 {
        self.metrics.borrow().handoffs()
    }

    /// Counts a request answered on `interface`, `started` being when it
    /// arrived; the clock is read here, when its response is queued.
    pub fn record_request(
        &self,
        interface: Interface,
        method: metrics::Method,
        status: ReplyStatus,
        started: Instant,
    ) {
        self.metrics
            .borrow_mut()
            .record_request(interface, method, status, started.elapsed());
    }

    pub fn connection_opened(&self, interface: Interface) {
        self.metrics.borrow_mut().connection_opened(interface);
    }

    pub fn connection_closed(&self, interface: Interface) {
        self.metrics.borrow_mut().connection_closed(interface);
    }

    /// Counts `n` times the node protected itself from a client this way.
    pub fn record_guard(&self, event: metrics::Guard, n: u64) {
        self.metrics.borrow_mut().guard(event, n);
    }

    /// Bytes this shard's connections hold now (the gauge of a scrape).
    pub fn set_connection_buffers(&self, bytes: usize) {
        self.metrics.borrow_mut().connection_buffers = bytes as u64;
    }

    /// Counts a call forwarded to the peer node `peer` (its address).
    pub fn record_forwarded(&self, peer: &str) {
        self.metrics.borrow_mut().forwarded(peer);
    }

    /// Counts `n` calls to the peer node `peer` that failed with `kind`.
    pub fn record_peer_errors(&self, peer: &str, kind: PeerError, n: u64) {
        if n > 0 {
            self.metrics.borrow_mut().peer_errors(peer, kind, n);
        }
    }

    /// What a scrape reports for this shard.
    pub fn snapshot(&self) -> ShardSnapshot {
        let hot = self.with_hot(|h| h.stats()).unwrap_or_default();
        let mut metrics = self.metrics.borrow().snapshot();
        metrics.hot_hits = hot.hits;
        ShardSnapshot {
            shard: self.id,
            store: self.store.borrow().stats(),
            hot,
            metrics,
            ring_epoch: self.ring.borrow().epoch(),
        }
    }

    /// Runs `f` on this shard's store. Never hold the borrow across an await.
    pub fn with_store<R>(&self, f: impl FnOnce(&mut Store) -> R) -> R {
        f(&mut self.store.borrow_mut())
    }

    /// Runs `f` on the hot store, if there is one.
    pub fn with_hot<R>(&self, f: impl FnOnce(&mut Store) -> R) -> Option<R> {
        self.hot.as_ref().map(|h| f(&mut h.borrow_mut()))
    }

    pub fn has_hot_cache(&self) -> bool {
        self.hot.is_some()
    }

    /// Keeps a copy of another node's value, if the sample says so.
    pub fn admit_hot(&self, group: &str, key: &str, value: &[u8]) {
        let Some(hot) = &self.hot else { return };
        let mut x = self.sample.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.sample.set(x);
        if x % HOT_ADMIT_ONE_IN == 0 {
            let now = self.now_ms();
            // Too large for the hot store: simply not kept.
            let _ = hot.borrow_mut().set(
                group.as_bytes(),
                key.as_bytes(),
                value,
                self.hot_ttl_ms,
                now,
            );
        }
    }

    /// Drops the hot copy of (group, key), if any; true when there was one.
    pub fn drop_hot(&self, group: &str, key: &str) -> bool {
        let now = self.now_ms();
        self.with_hot(|h| h.delete(group.as_bytes(), key.as_bytes(), now))
            .unwrap_or(false)
    }

    pub fn groups(&self) -> &Groups {
        &self.groups
    }

    /// The loads in flight of the keys this shard owns.
    pub fn flights(&self) -> std::cell::RefMut<'_, SingleFlight<(String, String), ReplyTo>> {
        self.flights.borrow_mut()
    }

    pub fn negative(&self) -> std::cell::RefMut<'_, NegativeCache> {
        self.negative.borrow_mut()
    }

    pub fn count_load(&self, failed: bool) {
        let mut m = self.metrics.borrow_mut();
        m.loads += 1;
        if failed {
            m.load_errors += 1;
        }
    }

    pub fn count_join(&self) {
        self.metrics.borrow_mut().singleflight_joins += 1;
    }

    pub fn count_negative_hit(&self) {
        self.metrics.borrow_mut().negative_hits += 1;
    }

    pub fn count_invalidations_sent(&self, n: u64) {
        self.metrics.borrow_mut().invalidations_sent += n;
    }

    /// Executes an invalidation from the key's owner.
    pub fn invalidate(&self, group: &str, key: &str) {
        self.metrics.borrow_mut().invalidations_received += 1;
        self.drop_hot(group, key);
    }

    /// This shard's counters, for Stats.
    pub fn counters(&self) -> ShardCounters {
        let m = self.metrics.borrow();
        let hot = self.with_hot(|h| h.stats()).unwrap_or_default();
        ShardCounters {
            store: self.store.borrow().stats(),
            hot,
            loads: m.loads,
            load_errors: m.load_errors,
            singleflight_joins: m.singleflight_joins,
            negative_hits: m.negative_hits,
            invalidations_sent: m.invalidations_sent,
            invalidations_received: m.invalidations_received,
        }
    }

    /// Expired entries reclaimed by a bounded sweep of both stores; after
    /// a ring change, also the entries of keys another node owns now.
    pub fn sweep(&self, max_visits: usize) {
        let now = self.now_ms();
        let purge = self.purge_left.get();
        if purge > 0 {
            let ring = self.ring.borrow();
            let me = self.me;
            self.store
                .borrow_mut()
                .sweep_retain(now, max_visits, |g, k| {
                    ring.len() < 2 || ring.owner(g, k).addr == me
                });
            self.purge_left.set(purge.saturating_sub(max_visits));
        } else {
            self.store.borrow_mut().sweep_expired(now, max_visits);
        }
        self.with_hot(|h| h.sweep_expired(now, max_visits / 4 + 1));
        let released = self.store.borrow().released_bytes()
            + self.with_hot(|h| h.released_bytes()).unwrap_or(0);
        if released - self.released_seen.get() >= RELEASE_AFTER_BYTES {
            self.released_seen.set(released);
            runtime::release_free_memory();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn router_spreads_keys_and_is_deterministic() {
        let r = Router::new(4);
        let mut counts = [0usize; 4];
        for i in 0..40_000 {
            let k = format!("key-{i}");
            let s = r.shard_of(b"", k.as_bytes());
            assert_eq!(s, Router::new(4).shard_of(b"", k.as_bytes()));
            counts[s] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "{counts:?}");
        }
        // The group is part of the identity: "a"+"bc" differs from "ab"+"c".
        let differs = (0..64).any(|i| {
            let k = format!("c{i}");
            r.shard_of(b"a", format!("b{k}").as_bytes()) != r.shard_of(b"ab", k.as_bytes())
        });
        assert!(differs);
        assert_eq!(Router::new(1).shard_of(b"g", b"k"), 0);
    }
}
