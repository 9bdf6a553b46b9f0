//! A shard: one core's slice of the keyspace and the machinery to reach the
//! other cores.
//!
//! Each shard owns a [`Store`] that only its own thread touches. A request
//! whose key belongs to another shard becomes an [`Op`] sent to the owner;
//! everything bound for one shard during one event-loop turn travels as one
//! [`Batch`] over the cross-core channel mesh (so a busy connection pays one
//! wake-up per turn, not per request), and the owner answers with a batch of
//! [`Reply`]s that land in the asking connection's [`Mailbox`].
//!
//! A shard also owns its [`ShardMetrics`]: recorded by its own thread
//! through the small methods below (no atomics, no allocation), and read
//! by a scrape as an [`Op::Metrics`] like any other cross-core request.

mod notify;

pub use notify::{Mailbox, Notify};

use crate::cluster::{Ring, RingReceiver};
use crate::metrics::{self, Interface, PeerError, ReplyStatus, ShardMetrics, ShardSnapshot};
use crate::protocol::grpc::Status;
use crate::protocol::CacheOp;
use crate::runtime::{MeshSender, PeerReceiver};
use crate::store::{SetError, Store, StoreStats};
use bytes::Bytes;
use std::cell::{Cell, RefCell};
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

/// An operation on one shard's store.
#[derive(Debug)]
pub enum Op {
    Cache(CacheOp),
    Stats,
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
    Stats(usize, StoreStats),
    /// The answer to [`Op::Metrics`]. Boxed: a snapshot is kilobytes, and
    /// every other reply stays small in batches and mailboxes.
    Metrics(Box<ShardSnapshot>),
    /// The call failed elsewhere: the owner node answered with this status,
    /// or it could not be reached.
    Failed(Status),
}

/// Where a key's request is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// By this shard's own store.
    Here,
    /// By another shard of this node, over the cross-core mesh.
    Shard(usize),
    /// By the node at this address, the key's owner on the ring.
    Node(SocketAddr),
}

/// One direction's traffic between two shards for one event-loop turn.
#[derive(Debug, Default)]
pub struct Batch {
    pub requests: Vec<(u64, Op)>,
    pub replies: Vec<(u64, Reply)>,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.requests.is_empty() && self.replies.is_empty()
    }
}

/// Maps (group, key) to a shard. Seeds are fixed so every shard agrees; the
/// function differs from the store's map hash (random seeds) and from the
/// cluster ring's hash, so keys spread evenly at every level.
#[derive(Clone)]
pub struct Router {
    hasher: ahash::RandomState,
    shards: usize,
}

impl Router {
    pub fn new(shards: usize) -> Router {
        Router {
            hasher: ahash::RandomState::with_seeds(
                0x7368_6172_6463_6163,
                0x6865_2d72_6f75_7465,
                0x9e37_79b9_7f4a_7c15,
                0x2545_f491_4f6c_dd1d,
            ),
            shards: shards.max(1),
        }
    }

    pub fn shard_of(&self, group: &[u8], key: &[u8]) -> usize {
        let mut h = self.hasher.build_hasher();
        h.write_usize(group.len());
        h.write(group);
        h.write(key);
        // Multiply-shift maps the hash onto 0..shards without a division.
        ((u128::from(h.finish()) * self.shards as u128) >> 64) as usize
    }
}

/// Where a reply from another shard must be delivered.
struct Waiter {
    mailbox: Rc<Mailbox>,
    tag: u32,
}

/// The state of one shard, shared by the tasks of its executor.
pub struct Shard {
    id: usize,
    router: Router,
    store: RefCell<Store>,
    epoch: Instant,
    mesh: MeshSender<Batch>,
    /// Per destination shard: what this turn has to send, and the wake-up
    /// of the task that sends it.
    outbox: Vec<RefCell<Batch>>,
    outbox_ready: Vec<Notify>,
    waiting: RefCell<hashbrown::HashMap<u64, Waiter>>,
    next_token: Cell<u64>,
    /// This shard's counters; only its own thread records or reads them.
    metrics: RefCell<ShardMetrics>,
    /// This node's advertise address: its identity on the ring.
    me: SocketAddr,
    /// The cluster ring this shard routes by, replaced (never mutated)
    /// when the control plane publishes a new one on `rings`.
    ring: RefCell<Arc<Ring>>,
    rings: RingReceiver,
}

impl Shard {
    pub fn new(
        router: Router,
        capacity_bytes: u64,
        mesh: MeshSender<Batch>,
        me: SocketAddr,
        ring: Arc<Ring>,
        rings: RingReceiver,
    ) -> Shard {
        let n = router.shards;
        Shard {
            id: mesh.shard_id(),
            router,
            store: RefCell::new(Store::new(capacity_bytes)),
            epoch: Instant::now(),
            mesh,
            outbox: (0..n).map(|_| RefCell::new(Batch::default())).collect(),
            outbox_ready: (0..n).map(|_| Notify::default()).collect(),
            waiting: RefCell::new(hashbrown::HashMap::new()),
            next_token: Cell::new(0),
            metrics: RefCell::new(ShardMetrics::new()),
            me,
            ring: RefCell::new(ring),
            rings,
        }
    }

    pub fn id(&self) -> usize {
        self.id
    }

    pub fn shard_count(&self) -> usize {
        self.router.shards
    }

    pub fn owner_of(&self, group: &[u8], key: &[u8]) -> usize {
        self.router.shard_of(group, key)
    }

    /// Where `(group, key)` is served. `forward` is false for a request
    /// that a peer node forwarded here: it is served on this node whatever
    /// our ring says, so a request makes at most one hop between nodes.
    pub fn locate(&self, group: &[u8], key: &[u8], forward: bool) -> Location {
        if forward {
            if let Some(node) = self.owner_node(group, key) {
                return Location::Node(node);
            }
        }
        match self.router.shard_of(group, key) {
            s if s == self.id => Location::Here,
            s => Location::Shard(s),
        }
    }

    /// The node id of the member at `addr` (the address when unknown).
    pub fn node_name(&self, addr: SocketAddr) -> String {
        match self.ring.borrow().member_by_addr(addr) {
            Some(m) => m.node_id.clone(),
            None => addr.to_string(),
        }
    }

    /// The key's owner node when it is not this node.
    fn owner_node(&self, group: &[u8], key: &[u8]) -> Option<SocketAddr> {
        let ring = self.ring.borrow();
        if ring.len() < 2 {
            return None; // a single node: no hash needed
        }
        let owner = ring.owner(group, key).addr;
        (owner != self.me).then_some(owner)
    }

    /// The ring requests are routed by.
    pub fn ring(&self) -> Arc<Ring> {
        self.ring.borrow().clone()
    }

    /// Takes up the newest ring the control plane published since the last
    /// call, if any, and returns it. Never blocks.
    pub fn refresh_ring(&self) -> Option<Arc<Ring>> {
        let newest = self.rings.try_iter().last()?;
        *self.ring.borrow_mut() = newest.clone();
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
        ShardSnapshot {
            shard: self.id,
            store: self.store.borrow().stats(),
            metrics: self.metrics.borrow().snapshot(),
        }
    }

    /// Runs `f` on this shard's store. Never hold the borrow across an await.
    pub fn with_store<R>(&self, f: impl FnOnce(&mut Store) -> R) -> R {
        f(&mut self.store.borrow_mut())
    }

    /// Executes `op` on this shard's own store.
    pub fn execute(&self, op: Op) -> Reply {
        let now = self.now_ms();
        let mut store = self.store.borrow_mut();
        match op {
            Op::Cache(CacheOp::Get { group, key }) => Reply::Get(
                store
                    .get(group.as_bytes(), key.as_bytes(), now)
                    .map(Bytes::copy_from_slice),
            ),
            Op::Cache(CacheOp::Set {
                group,
                key,
                value,
                ttl_ms,
            }) => Reply::Set(store.set(group.as_bytes(), key.as_bytes(), &value, ttl_ms, now)),
            Op::Cache(CacheOp::Delete { group, key }) => {
                Reply::Delete(store.delete(group.as_bytes(), key.as_bytes(), now))
            }
            Op::Stats => Reply::Stats(self.id, store.stats()),
            Op::Metrics => {
                drop(store);
                Reply::Metrics(Box::new(self.snapshot()))
            }
        }
    }

    /// Hands `op` to shard `to`; its reply will arrive in `mailbox` tagged
    /// with `tag`. Sent with everything else for `to` at the end of this turn.
    pub fn submit(&self, to: usize, op: Op, mailbox: &Rc<Mailbox>, tag: u32) {
        let token = self.next_token.get();
        self.next_token.set(token.wrapping_add(1));
        self.waiting.borrow_mut().insert(
            token,
            Waiter {
                mailbox: mailbox.clone(),
                tag,
            },
        );
        self.metrics.borrow_mut().handoffs_sent(1);
        self.outbox[to].borrow_mut().requests.push((token, op));
        self.outbox_ready[to].notify();
    }

    /// The task that carries this shard's batches to shard `to`. It runs
    /// after the tasks that filled the outbox have yielded, so one send
    /// carries a whole turn's worth.
    pub async fn run_sender(self: Rc<Self>, to: usize) {
        loop {
            self.outbox_ready[to].notified().await;
            let batch = std::mem::take(&mut *self.outbox[to].borrow_mut());
            if batch.is_empty() {
                continue;
            }
            if let Err(returned) = self.mesh.send(to, batch).await {
                // The peer shard is gone (shutdown): fail what we asked of it.
                tracing::warn!(shard = self.id, peer = to, "cross-core channel closed");
                if let Some(batch) = returned {
                    for (token, _) in batch.requests {
                        self.waiting.borrow_mut().remove(&token);
                    }
                }
                return;
            }
        }
    }

    /// The task that serves what shard `from` sends: requests are executed
    /// here and answered in our next batch to `from`; replies are delivered
    /// to the connections waiting for them. It never blocks on a send, so
    /// two shards can never wait on each other.
    pub async fn run_receiver(self: Rc<Self>, from: usize, rx: PeerReceiver<Batch>) {
        while let Some(batch) = rx.recv().await {
            if !batch.requests.is_empty() {
                let replies: Vec<(u64, Reply)> = batch
                    .requests
                    .into_iter()
                    .map(|(token, op)| (token, self.execute(op)))
                    .collect();
                self.outbox[from].borrow_mut().replies.extend(replies);
                self.outbox_ready[from].notify();
            }
            for (token, reply) in batch.replies {
                let waiter = self.waiting.borrow_mut().remove(&token);
                if let Some(w) = waiter {
                    w.mailbox.push(w.tag, reply);
                }
            }
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
