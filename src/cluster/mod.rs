//! The cluster control plane: who the members are, and the ring built from
//! them, delivered to every shard.
//!
//! Membership comes from one of three sources ([`Membership`]): this node
//! alone, a static `--peers` list, or etcd (a leased key per node, watched
//! by all). Each new ring is published as an `Arc<Ring>` on one unbounded
//! crossbeam channel per subscriber (shard): rings are rare, a send never
//! blocks the control plane, and a shard picks the newest up when it likes
//! without locks on the request path.
//!
//! Only etcd mode has a thread ("cluster-control", a tokio current-thread
//! runtime for etcd-client, see `etcd.rs`); static and alone publish their
//! one ring (epoch 1) from [`Control::start`]. State that other threads
//! read (the latest ring, the etcd session state) lives in `Shared`,
//! touched on membership changes and state transitions only.
//!
//! - the consistent-hash ring and its byte layouts: the `shardcache-routing`
//!   crate (`routing/`), shared with clients that route keys themselves.
//! - `etcd.rs`: registration, keep-alive, watch, failure handling.

mod etcd;

pub use shardcache_routing::{Member, Ring};

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

/// One subscriber's (shard's) end of the ring publication.
pub type RingReceiver = Receiver<Arc<Ring>>;

/// Default points per member on the ring (`--vnodes`).
pub const DEFAULT_VNODES: u32 = 160;
/// Default etcd lease TTL (`--lease-ttl`).
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(5);

/// How this node takes part in the cluster, fixed at start-up.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// --node-id (default: the advertise address as text); the name in the
    /// etcd key and value. Not part of key placement.
    pub node_id: String,
    /// --advertise (default: the bound listen address): where peers reach
    /// this node, and its identity on the ring.
    pub advertise: SocketAddr,
    pub shards: u32,
    /// Points per member on the ring (default [`DEFAULT_VNODES`]).
    pub vnodes: u32,
    pub membership: Membership,
    /// --peer-secret-file: how the control thread authenticates its own
    /// peer connections (RING requests) to nodes that require it.
    pub peer_secret: Option<Arc<crate::protocol::peer_auth::PeerSecret>>,
    /// --peer-ca: the control thread's peer connections are mutual TLS.
    pub peer_tls: Option<Arc<crate::tls::Tls>>,
    /// --etcd-ca/--etcd-cert/--etcd-key; None: plaintext etcd.
    pub etcd_tls: Option<EtcdTls>,
}

/// TLS to etcd (PEM text, read at start-up).
#[derive(Debug, Clone)]
pub struct EtcdTls {
    /// CA certificates the etcd servers' certificates chain to (always
    /// given with TLS: the system's roots are not consulted).
    pub ca: Option<String>,
    /// (certificate, key) presented to etcd (--client-cert-auth).
    pub identity: Option<(String, String)>,
}

/// Where the member list comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Membership {
    /// Single node, no peers (the default): ring of just this node.
    Alone,
    /// --peers a,b,c : the list may or may not include this node; this
    /// node is always added.
    Static(Vec<SocketAddr>),
    /// --etcd URL,URL --etcd-prefix P --lease-ttl D
    Etcd {
        endpoints: Vec<String>,
        prefix: String,
        lease_ttl: Duration,
    },
}

/// The control plane's view of etcd, for metrics and readiness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EtcdState {
    /// Alone or static membership.
    NotUsed,
    /// Started, not registered yet.
    Connecting,
    /// Key registered under a live lease, prefix watched.
    Registered,
    /// The session broke; retrying with backoff, the last ring still in use.
    Unreachable,
    /// Shut down (lease revoked, or revocation attempted).
    Stopped,
}

impl EtcdState {
    fn from_u8(v: u8) -> EtcdState {
        match v {
            0 => EtcdState::NotUsed,
            1 => EtcdState::Connecting,
            2 => EtcdState::Registered,
            3 => EtcdState::Unreachable,
            _ => EtcdState::Stopped,
        }
    }
}

/// A snapshot of [`Control`]'s state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlStatus {
    pub etcd: EtcdState,
    /// Epoch of the latest published ring; 0 before the first.
    pub epoch: u64,
    /// Members of the latest published ring; 0 before the first.
    pub members: usize,
}

/// State shared by the control thread and its [`Control`] handle.
struct Shared {
    subscribers: Vec<Sender<Arc<Ring>>>,
    latest: Mutex<Option<Arc<Ring>>>,
    ring_published: Condvar,
    state: AtomicU8,
    epoch: AtomicU64,
    members: AtomicUsize,
    /// Set by [`Control::shutdown`]; the control thread polls it.
    stop: AtomicBool,
    /// Set when the control thread has ended (normally or not).
    done: AtomicBool,
}

impl Shared {
    fn new(subscribers: Vec<Sender<Arc<Ring>>>, state: EtcdState) -> Shared {
        Shared {
            subscribers,
            latest: Mutex::new(None),
            ring_published: Condvar::new(),
            state: AtomicU8::new(state as u8),
            epoch: AtomicU64::new(0),
            members: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            done: AtomicBool::new(false),
        }
    }

    /// A poisoned lock only means another thread panicked while holding
    /// it; the `Option<Arc<Ring>>` inside is still whole.
    fn latest(&self) -> MutexGuard<'_, Option<Arc<Ring>>> {
        self.latest.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn latest_ring(&self) -> Option<Arc<Ring>> {
        self.latest().clone()
    }

    /// Makes `ring` the current one and sends it to every subscriber.
    fn publish(&self, ring: Ring) {
        let ring = Arc::new(ring);
        tracing::info!(
            epoch = ring.epoch(),
            members = ring.len(),
            "cluster ring: {}",
            ring.members()
                .iter()
                .map(|m| m.addr.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut latest = self.latest();
        for tx in &self.subscribers {
            // Unbounded: never blocks. A subscriber that is gone is no error.
            let _ = tx.send(ring.clone());
        }
        self.epoch.store(ring.epoch(), Ordering::Release);
        self.members.store(ring.len(), Ordering::Release);
        *latest = Some(ring);
        drop(latest);
        self.ring_published.notify_all();
    }

    fn state(&self) -> EtcdState {
        EtcdState::from_u8(self.state.load(Ordering::Acquire))
    }

    /// Records a state; true when it differs from the previous one (so the
    /// caller logs transitions, not every retry).
    fn set_state(&self, state: EtcdState) -> bool {
        self.state.swap(state as u8, Ordering::AcqRel) != state as u8
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }
}

/// Handle on the control plane. Dropping it shuts it down.
pub struct Control {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Control {
    /// Starts the control plane. `subscribers` is the number of shards:
    /// each gets its own receiver of rings. Alone and static membership
    /// publish their ring (epoch 1) before this returns; etcd mode starts
    /// the "cluster-control" thread, which publishes once registered.
    /// Errors are configuration errors (or a thread that cannot start).
    pub fn start(
        config: ClusterConfig,
        subscribers: usize,
    ) -> Result<(Control, Vec<RingReceiver>), String> {
        if config.node_id.is_empty() {
            return Err("the node id must not be empty".into());
        }
        if config.shards == 0 {
            // Peers refuse such an entry (0 means "unknown" in a ring).
            return Err("a node has at least one shard".into());
        }
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..subscribers)
            .map(|_| crossbeam_channel::unbounded())
            .unzip();
        let me = Member {
            node_id: config.node_id.clone(),
            addr: config.advertise,
            shards: config.shards,
        };
        let vnodes = config.vnodes;
        match config.membership {
            Membership::Alone => {
                let shared = Arc::new(Shared::new(senders, EtcdState::NotUsed));
                shared.publish(static_ring(me, &[], vnodes));
                Ok((Control::without_thread(shared), receivers))
            }
            Membership::Static(peers) => {
                let shared = Arc::new(Shared::new(senders, EtcdState::NotUsed));
                shared.publish(static_ring(me, &peers, vnodes));
                Ok((Control::without_thread(shared), receivers))
            }
            Membership::Etcd {
                endpoints,
                prefix,
                lease_ttl,
            } => {
                let mut settings = etcd::Settings::new(endpoints, prefix, lease_ttl, vnodes)?;
                settings.peer = etcd::PeerCredentials {
                    secret: config.peer_secret.clone(),
                    tls: config.peer_tls.clone(),
                };
                settings.tls = config.etcd_tls.clone();
                let shared = Arc::new(Shared::new(senders, EtcdState::Connecting));
                let thread = etcd::spawn(settings, me, shared.clone())?;
                Ok((
                    Control {
                        shared,
                        thread: Mutex::new(Some(thread)),
                    },
                    receivers,
                ))
            }
        }
    }

    fn without_thread(shared: Arc<Shared>) -> Control {
        shared.done.store(true, Ordering::Release);
        Control {
            shared,
            thread: Mutex::new(None),
        }
    }

    /// Blocks until the first ring is known and returns it: at once for
    /// alone and static; in etcd mode once this node's key is registered
    /// and the prefix has been read. Fails when `timeout` passes, when
    /// `stop` becomes true (the caller's SIGTERM flag; polled every 100 ms)
    /// or when the control plane has ended. Logs every 5 s while waiting.
    pub fn wait_first_ring(
        &self,
        timeout: Duration,
        stop: &AtomicBool,
    ) -> Result<Arc<Ring>, String> {
        const POLL: Duration = Duration::from_millis(100);
        const LOG_EVERY: Duration = Duration::from_secs(5);
        let start = Instant::now();
        let mut next_log = start + LOG_EVERY;
        let mut latest = self.shared.latest();
        loop {
            if let Some(ring) = latest.as_ref() {
                return Ok(ring.clone());
            }
            if stop.load(Ordering::Acquire) {
                return Err("stopped while waiting for the cluster ring".into());
            }
            if self.shared.done.load(Ordering::Acquire) {
                return Err("the cluster control plane ended before the first ring".into());
            }
            let now = Instant::now();
            let waited = now - start;
            if waited >= timeout {
                return Err(format!(
                    "no cluster ring after {timeout:?} (etcd {:?})",
                    self.shared.state()
                ));
            }
            if now >= next_log {
                tracing::info!(
                    "waiting for the cluster ring: {waited:.0?} so far (etcd {:?})",
                    self.shared.state()
                );
                next_log += LOG_EVERY;
            }
            let wait = POLL.min(timeout - waited);
            latest = match self.shared.ring_published.wait_timeout(latest, wait) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }

    /// The latest published ring, if any.
    pub fn latest(&self) -> Option<Arc<Ring>> {
        self.shared.latest_ring()
    }

    /// Graceful shutdown: the control thread revokes the lease first (so
    /// peers drop this node at once; bounded to ~2 s), then ends. Blocks
    /// until it has. Idempotent; a no-op without etcd.
    pub fn shutdown(&self) {
        self.shared.stop.store(true, Ordering::Release);
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(thread) = thread {
            if thread.join().is_err() {
                tracing::error!("the cluster control thread panicked");
            }
        }
    }

    /// Current etcd session state and the latest ring's epoch and size.
    pub fn status(&self) -> ControlStatus {
        ControlStatus {
            etcd: self.shared.state(),
            epoch: self.shared.epoch.load(Ordering::Acquire),
            members: self.shared.members.load(Ordering::Acquire),
        }
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The ring of alone and static membership: `peers` plus this node (kept
/// over a peer entry with the same address). Static peers are known by
/// address only: their node id is the address, their shard count 0.
fn static_ring(me: Member, peers: &[SocketAddr], vnodes: u32) -> Ring {
    let peers = peers
        .iter()
        .map(|&addr| Member {
            node_id: addr.to_string(),
            addr,
            shards: 0,
        })
        .collect();
    Ring::with_local(1, me, peers, vnodes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(membership: Membership) -> ClusterConfig {
        ClusterConfig {
            node_id: "me".into(),
            advertise: "127.0.0.1:7071".parse().unwrap(),
            shards: 2,
            vnodes: 16,
            membership,
            peer_secret: None,
            peer_tls: None,
            etcd_tls: None,
        }
    }

    #[test]
    fn alone_publishes_a_ring_of_this_node() {
        let (control, rx) = Control::start(config(Membership::Alone), 2).unwrap();
        let ring = control
            .wait_first_ring(Duration::from_secs(1), &AtomicBool::new(false))
            .unwrap();
        assert_eq!(ring.epoch(), 1);
        assert_eq!(ring.members().len(), 1);
        assert_eq!(ring.members()[0].node_id, "me");
        for r in &rx {
            assert!(Arc::ptr_eq(&r.try_recv().unwrap(), &ring));
            assert!(r.try_recv().is_err(), "one ring only");
        }
        let status = control.status();
        assert_eq!(
            status,
            ControlStatus {
                etcd: EtcdState::NotUsed,
                epoch: 1,
                members: 1
            }
        );
        control.shutdown();
        control.shutdown();
    }

    #[test]
    fn static_peers_plus_this_node() {
        let peers = vec![
            "127.0.0.1:7072".parse().unwrap(),
            "127.0.0.1:7071".parse().unwrap(), // this node, listed too
            "127.0.0.1:7070".parse().unwrap(),
        ];
        let (control, rx) = Control::start(config(Membership::Static(peers)), 1).unwrap();
        let ring = rx[0].try_recv().unwrap();
        let ids: Vec<_> = ring.members().iter().map(|m| m.node_id.as_str()).collect();
        assert_eq!(ids, ["127.0.0.1:7070", "me", "127.0.0.1:7072"]);
        assert_eq!(ring.epoch(), 1);
        assert_eq!(control.status().members, 3);
    }

    #[test]
    fn empty_node_id_and_zero_shards_are_refused() {
        let mut c = config(Membership::Alone);
        c.node_id.clear();
        assert!(Control::start(c, 1).is_err());
        let mut c = config(Membership::Alone);
        c.shards = 0;
        assert!(Control::start(c, 1).is_err());
    }
}
