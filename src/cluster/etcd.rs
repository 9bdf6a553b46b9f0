//! etcd membership: this node's leased key, the watch on everybody's, and
//! what to do when etcd misbehaves. Runs on the "cluster-control" thread
//! (a tokio current-thread runtime; etcd-client needs tokio).
//!
//! Key `{prefix}{node_id}`, value `{"node_id":"..","addr":"ip:port","shards":N}`
//! (extra fields ignored), attached to a lease of `--lease-ttl` kept alive
//! every TTL/3. A session is: connect, get (or reuse) the lease, put the key,
//! read the whole prefix, publish the ring (epoch = the read's revision),
//! then watch the prefix from that revision + 1 so no change is missed, and
//! publish a ring (epoch = the change's revision) whenever the member set
//! changes. Every request has a deadline: etcd-client connects lazily and a
//! stopped etcd would otherwise hang the thread.
//!
//! Failures:
//! - Lease lost (keep-alive answered TTL 0, or our key deleted): grant a new
//!   lease and put the key again, within the session.
//! - Anything else (connect, request, stream error, a canceled or compacted
//!   watch, no keep-alive answer for a whole TTL): the session ends, the
//!   state turns Unreachable (logged once), and a new session starts after
//!   an exponential backoff (100 ms doubling to 2 s, jittered). The last
//!   ring stays in force meanwhile: a ring of only this node is never
//!   published because etcd is down. The new session re-registers (reusing
//!   the lease if it is still alive) and re-syncs with a full read.
//! - A lease etcd has not confirmed for 3/4 of its TTL may be about to
//!   expire; once it has, the others drop this node and serve its keys, and
//!   answering them from its own store would return values the cluster has
//!   since changed. So a watchdog then asks the peers for their rings (the
//!   peer protocol's RING request, with whether they are registered) every
//!   500 ms: if no peer is registered either, etcd is down for everyone and
//!   the last ring stays in force as above; if a registered peer's ring is
//!   newer (epochs are etcd revisions) and lacks this node, the node routes
//!   by it, so its former keys go to their new owners; otherwise the ring
//!   is republished *fenced*: the node refuses its own keys to clients
//!   (UNAVAILABLE) until etcd confirms the lease again or the others drop
//!   it. Forwards from peers are still served: they route by the same
//!   view of ownership.
//! - Registering again under a new lease after holding one means the node
//!   was out of the cluster for a while: a ring without this node is
//!   published first, so the shards drop what they hold when the ring with
//!   it follows (`Shard::refresh_ring`).
//! - Values that do not parse, and peers that claim this node's address or
//!   another peer's, are logged and left out; nothing read from etcd can
//!   panic. (Event types are read from the key's create revision, 0 for a
//!   delete, as etcd itself derives them: `Event::event_type` would panic
//!   on an unknown code.)
//! - Shutdown: the session is dropped and the lease revoked (≤ 2 s), so
//!   peers drop this node at once instead of after the TTL.

use super::{EtcdState, Member, Ring, Shared};
use crate::protocol::peer::{self, PeerReply, RingView};
use crate::protocol::peer_auth::PeerSecret;
use bytes::BytesMut;
use etcd_client::{
    Client, ConnectOptions, GetOptions, LeaseKeepAliveStream, LeaseKeeper, PutOptions,
    WatchOptions, WatchResponse,
};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Deadline of every unary request and of opening a stream.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How long shutdown may spend revoking the lease.
const REVOKE_BUDGET: Duration = Duration::from_secs(2);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// How often the control thread looks at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(25);
/// How long a peer may take to answer a RING request.
const PEER_RING_TIMEOUT: Duration = Duration::from_millis(500);
/// Largest RING reply read (about 20,000 members).
const PEER_RING_MAX: usize = 1 << 20;
/// How often the lease watchdog looks at the lease.
const WATCHDOG_TICK: Duration = Duration::from_millis(100);
/// How often it asks the peers while the lease is in doubt.
const PEER_PROBE_EVERY: Duration = Duration::from_millis(500);

/// The etcd half of the configuration, validated.
pub(super) struct Settings {
    endpoints: Vec<String>,
    prefix: String,
    /// Requested TTL in whole seconds (etcd's unit), at least 1.
    ttl_secs: i64,
    vnodes: u32,
    /// How the control thread proves itself to peers.
    pub(super) peer: PeerCredentials,
    /// TLS to etcd (https:// endpoints).
    pub(super) tls: Option<super::EtcdTls>,
}

impl Settings {
    /// How every connection to etcd is made.
    fn connect_options(&self) -> ConnectOptions {
        let options = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_timeout(REQUEST_TIMEOUT);
        match &self.tls {
            None => options,
            Some(tls) => {
                let mut t = etcd_client::TlsOptions::new();
                if let Some(ca) = &tls.ca {
                    t = t.ca_certificate(etcd_client::Certificate::from_pem(ca));
                }
                if let Some((cert, key)) = &tls.identity {
                    t = t.identity(etcd_client::Identity::from_pem(cert, key));
                }
                options.with_tls(t)
            }
        }
    }
}

impl Settings {
    pub(super) fn new(
        endpoints: Vec<String>,
        prefix: String,
        lease_ttl: Duration,
        vnodes: u32,
    ) -> Result<Settings, String> {
        let endpoints: Vec<String> = endpoints
            .into_iter()
            .map(|e| e.trim().to_string())
            .filter(|e| !e.is_empty())
            .collect();
        if endpoints.is_empty() {
            return Err("etcd membership needs at least one endpoint".into());
        }
        if prefix.is_empty() {
            return Err("the etcd prefix must not be empty".into());
        }
        if lease_ttl.is_zero() {
            return Err("the lease TTL must be positive".into());
        }
        // Round up: a TTL shorter than asked for would drop us early.
        let ttl_secs = lease_ttl.as_secs() + u64::from(lease_ttl.subsec_nanos() > 0);
        Ok(Settings {
            endpoints,
            prefix,
            ttl_secs: i64::try_from(ttl_secs).unwrap_or(i64::MAX),
            vnodes,
            peer: PeerCredentials::default(),
            tls: None,
        })
    }
}

/// Starts the control thread.
pub(super) fn spawn(
    settings: Settings,
    me: Member,
    shared: Arc<Shared>,
) -> Result<JoinHandle<()>, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the cluster control runtime: {e}"))?;
    std::thread::Builder::new()
        .name("cluster-control".into())
        .spawn(move || {
            let _done = DoneOnDrop(shared.clone());
            runtime.block_on(run(settings, me, &shared));
        })
        .map_err(|e| format!("cannot start the cluster control thread: {e}"))
}

/// Marks the control plane ended however the thread ends, so that
/// `wait_first_ring` does not wait for a ring that cannot come.
struct DoneOnDrop(Arc<Shared>);

impl Drop for DoneOnDrop {
    fn drop(&mut self) {
        self.0.done.store(true, Ordering::Release);
        self.0.ring_published.notify_all();
    }
}

async fn run(settings: Settings, me: Member, shared: &Shared) {
    let clock = LeaseClock::default();
    let vnodes = settings.vnodes;
    let peer = settings.peer.clone();
    let mut node = Node::new(settings, me.clone(), shared, &clock);
    tokio::select! {
        () = sessions(&mut node, shared) => {}
        never = lease_watchdog(&clock, shared, &me, vnodes, peer) => match never {},
    }
    node.revoke().await;
    shared.set_state(EtcdState::Stopped);
}

/// Sessions one after another, with backoff, until shutdown.
async fn sessions(node: &mut Node<'_>, shared: &Shared) {
    let mut backoff = Backoff::new(&node.me.node_id);
    loop {
        let failure = tokio::select! {
            failure = node.session(&mut backoff) => failure,
            () = stopped(shared) => break,
        };
        if shared.set_state(EtcdState::Unreachable) {
            let ring = match shared.latest_ring() {
                Some(r) => format!(
                    "keeping the ring of epoch {} ({} members)",
                    r.epoch(),
                    r.len()
                ),
                None => "no ring yet".to_string(),
            };
            tracing::warn!("etcd session lost: {failure}; {ring}; retrying");
        } else {
            tracing::debug!("etcd still unreachable: {failure}");
        }
        tokio::select! {
            () = tokio::time::sleep(backoff.next()) => {}
            () = stopped(shared) => break,
        }
    }
}

/// When etcd last confirmed this node's lease, and the lease's TTL.
#[derive(Default)]
struct LeaseClock {
    confirmed: std::cell::Cell<Option<(Instant, Duration)>>,
}

impl LeaseClock {
    fn confirm(&self, at: Instant, ttl: Duration) {
        self.confirmed.set(Some((at, ttl)));
    }

    fn ever_confirmed(&self) -> bool {
        self.confirmed.get().is_some()
    }

    /// Past 3/4 of the TTL since the last confirmation the lease may run
    /// out soon: etcd counts the TTL from when it handled the keep-alive,
    /// a little before we heard back. Keep-alives go every TTL/3, so one
    /// late answer alone does not get here.
    fn in_doubt(&self) -> bool {
        self.confirmed
            .get()
            .is_some_and(|(at, ttl)| at.elapsed() > ttl * 3 / 4)
    }
}

/// Watches this node's lease while etcd does not answer, and decides from
/// the peers' rings whether the node may go on serving its own keys (see
/// the module doc):
/// - no peer is registered either: etcd is down for everyone; keep the
///   last ring (an outage must not take the cache down);
/// - a registered peer's ring is newer and lacks this node: the cluster
///   dropped it; route by that ring;
/// - otherwise (registered peers still count us in, or no peer answers):
///   fence: refuse our own keys until etcd confirms the lease or the
///   others drop us, because they may be about to serve them.
async fn lease_watchdog(
    clock: &LeaseClock,
    shared: &Shared,
    me: &Member,
    vnodes: u32,
    peer: PeerCredentials,
) -> Infallible {
    let mut in_doubt = false;
    let mut next_probe = Instant::now();
    loop {
        tokio::time::sleep(WATCHDOG_TICK).await;
        if !clock.in_doubt() {
            if in_doubt {
                in_doubt = false;
                // A new lease publishes its own ring; the same lease
                // confirmed again only lifts the fence.
                if let Some(r) = shared.latest_ring().filter(|r| r.is_fenced()) {
                    tracing::info!("etcd confirmed the lease again: serving this node's keys");
                    shared.publish(r.with_fence(false));
                }
            }
            continue;
        }
        in_doubt = true;
        let now = Instant::now();
        if now < next_probe {
            continue;
        }
        next_probe = now + PEER_PROBE_EVERY;
        let Some(latest) = shared.latest_ring() else {
            continue;
        };
        let peers: Vec<SocketAddr> = latest
            .members()
            .iter()
            .map(|m| m.addr)
            .filter(|&a| a != me.addr)
            .collect();
        if peers.is_empty() {
            continue; // nobody else could serve our keys
        }
        let views = ask_rings(&peers, &peer).await;
        let answered = views.len();
        let newest = views
            .into_iter()
            .filter(|(_, v)| v.registered)
            .max_by_key(|(_, v)| v.epoch);
        match newest {
            None if answered > 0 => {
                if latest.is_fenced() {
                    tracing::warn!("no peer can reach etcd either: serving by the last ring");
                    shared.publish(latest.with_fence(false));
                }
            }
            Some((from, view))
                if view.epoch > latest.epoch()
                    && !view.members.iter().any(|m| m.addr == me.addr) =>
            {
                if let Some(ring) = Ring::new(view.epoch, view.members, vnodes) {
                    tracing::warn!(
                        peer = %from,
                        epoch = view.epoch,
                        "the cluster dropped this node while it could not reach etcd: \
                         routing by the peer's ring (this node's keys go to their new \
                         owners) until etcd is back"
                    );
                    shared.publish(ring);
                }
            }
            _ => {
                if latest.contains(me.addr) && !latest.is_fenced() {
                    tracing::warn!(
                        "etcd has not confirmed the lease for 3/4 of its TTL and {}: \
                         refusing this node's keys until it does or the others drop it",
                        if answered == 0 {
                            "no peer answers"
                        } else {
                            "peers still reach etcd"
                        }
                    );
                    shared.publish(latest.with_fence(true));
                }
            }
        }
    }
}

/// Asks each peer for its ring, concurrently; the answers that came.
async fn ask_rings(
    peers: &[SocketAddr],
    credentials: &PeerCredentials,
) -> Vec<(SocketAddr, RingView)> {
    let mut asks = tokio::task::JoinSet::new();
    for &addr in peers {
        let credentials = credentials.clone();
        asks.spawn(async move { (addr, ask_ring(addr, &credentials).await) });
    }
    let mut views = Vec::new();
    while let Some(answer) = asks.join_next().await {
        match answer {
            Ok((addr, Ok(view))) => views.push((addr, view)),
            Ok((addr, Err(e))) => tracing::debug!(peer = %addr, "no ring from peer: {e}"),
            Err(e) => tracing::debug!("ring request task failed: {e}"),
        }
    }
    views
}

async fn stopped(shared: &Shared) {
    while !shared.stopping() {
        tokio::time::sleep(STOP_POLL).await;
    }
}

/// The control thread's state, kept across sessions.
struct Node<'a> {
    settings: Settings,
    me: Member,
    key: Vec<u8>,
    value: Vec<u8>,
    shared: &'a Shared,
    /// Lease id and granted TTL. Kept when a session breaks: the lease may
    /// still be alive, and shutdown must revoke it.
    lease: Option<(i64, Duration)>,
    /// The latest session's client, for the revoke at shutdown.
    client: Option<Client>,
    /// Valid peer entries by key (this node's own key excluded).
    peers: BTreeMap<Vec<u8>, Member>,
    /// When etcd last confirmed our lease, for the watchdog.
    clock: &'a LeaseClock,
}

/// A live lease: the handle that sends keep-alives and the stream of answers.
struct KeepAlive {
    keeper: LeaseKeeper,
    acks: LeaseKeepAliveStream,
    ttl: Duration,
}

impl<'a> Node<'a> {
    fn new(settings: Settings, me: Member, shared: &'a Shared, clock: &'a LeaseClock) -> Node<'a> {
        let key = format!("{}{}", settings.prefix, me.node_id).into_bytes();
        let value = encode_member(&me).into_bytes();
        Node {
            settings,
            me,
            key,
            value,
            shared,
            lease: None,
            client: None,
            peers: BTreeMap::new(),
            clock,
        }
    }

    /// This node's lease expired and is being replaced: it has been out of
    /// the cluster. Publishes the current ring without it (same epoch: a
    /// local view, not a new revision), so the shards know to drop what
    /// they hold once the ring with this node follows.
    fn left_while_away(&self) {
        let Some(latest) = self.shared.latest_ring() else {
            return;
        };
        if !latest.contains(self.me.addr) {
            return; // already routing without us (the watchdog followed a peer)
        }
        let others = latest
            .members()
            .iter()
            .filter(|m| m.addr != self.me.addr)
            .cloned()
            .collect();
        if let Some(ring) = Ring::new(latest.epoch(), others, self.settings.vnodes) {
            self.shared.publish(ring);
        }
    }

    /// One session; returns why it ended (it only ends by failing).
    async fn session(&mut self, backoff: &mut Backoff) -> String {
        match self.try_session(backoff).await {
            Ok(never) => match never {},
            Err(why) => why,
        }
    }

    async fn try_session(&mut self, backoff: &mut Backoff) -> Result<Infallible, String> {
        let options = self.settings.connect_options();
        let mut client = bounded(
            "connect",
            Client::connect(self.settings.endpoints.clone(), Some(options)),
        )
        .await?;
        self.client = Some(client.clone());
        let mut lease = self.register(&mut client).await?;

        let prefix = self.settings.prefix.clone();
        let read = bounded(
            "read",
            client.get(prefix.clone(), Some(GetOptions::new().with_prefix())),
        )
        .await?;
        let revision = read.header().map_or(0, |h| h.revision());
        self.peers.clear();
        for kv in read.kvs() {
            self.apply_put(kv.key(), kv.value());
        }
        let watch_from = WatchOptions::new()
            .with_prefix()
            .with_start_revision(revision.saturating_add(1));
        let mut watch = bounded("watch", client.watch(prefix, Some(watch_from))).await?;
        // State first: whoever sees the ring also sees Registered.
        if self.shared.set_state(EtcdState::Registered) {
            tracing::info!(
                key = %String::from_utf8_lossy(&self.key),
                lease = self.lease.map_or(0, |(id, _)| id),
                revision,
                "registered in etcd, {} peers",
                self.peers.len()
            );
        }
        self.publish_if_changed(revision);
        backoff.reset();

        let mut tick = keep_alive_ticker(lease.ttl);
        let mut last_ack = Instant::now();
        self.clock.confirm(last_ack, lease.ttl);
        loop {
            tokio::select! {
                message = watch.message() => {
                    let response = message
                        .map_err(|e| format!("watch: {e}"))?
                        .ok_or("watch stream ended")?;
                    if response.canceled() {
                        return Err(format!(
                            "watch canceled ({}; compacted up to {})",
                            response.cancel_reason(),
                            response.compact_revision()
                        ));
                    }
                    if self.apply_events(&response) {
                        tracing::warn!("this node's key was deleted; registering again");
                        lease = self.register(&mut client).await?;
                        tick = keep_alive_ticker(lease.ttl);
                        last_ack = Instant::now();
                    }
                }
                ack = lease.acks.message() => {
                    let ack = ack
                        .map_err(|e| format!("keep-alive: {e}"))?
                        .ok_or("keep-alive stream ended")?;
                    if ack.ttl() <= 0 {
                        tracing::warn!(lease = ack.id(), "lease expired; registering again");
                        self.lease = None;
                        lease = self.register(&mut client).await?;
                        tick = keep_alive_ticker(lease.ttl);
                    }
                    last_ack = Instant::now();
                    self.clock.confirm(last_ack, lease.ttl);
                }
                _ = tick.tick() => {
                    if last_ack.elapsed() > lease.ttl {
                        return Err(format!("no keep-alive answer for {:?}", lease.ttl));
                    }
                    bounded("keep-alive", lease.keeper.keep_alive()).await?;
                }
            }
        }
    }

    /// Makes sure a lease is alive (the current one, else a new one) and
    /// puts this node's key under it.
    async fn register(&mut self, client: &mut Client) -> Result<KeepAlive, String> {
        // Twice at most: the lease may expire between keep-alive and put.
        for _ in 0..2 {
            let lease = self.live_lease(client).await?;
            let id = lease.keeper.id();
            let put = client.put(
                self.key.clone(),
                self.value.clone(),
                Some(PutOptions::new().with_lease(id)),
            );
            match tokio::time::timeout(REQUEST_TIMEOUT, put).await {
                Ok(Ok(_)) => return Ok(lease),
                Ok(Err(e)) if lease_not_found(&e) => {
                    tracing::info!(lease = id, "lease gone before the put; granting another");
                    self.lease = None;
                }
                Ok(Err(e)) => return Err(format!("register: {e}")),
                Err(_) => return Err(format!("register: no answer within {REQUEST_TIMEOUT:?}")),
            }
        }
        Err("register: the lease expired twice in a row".into())
    }

    /// The current lease if etcd still knows it, else a newly granted one.
    async fn live_lease(&mut self, client: &mut Client) -> Result<KeepAlive, String> {
        if let Some((id, ttl)) = self.lease {
            match tokio::time::timeout(REQUEST_TIMEOUT, client.lease_keep_alive(id)).await {
                Ok(Ok((keeper, acks))) => return Ok(KeepAlive { keeper, acks, ttl }),
                // etcd-client's answer to TTL 0 ("lease not found").
                Ok(Err(etcd_client::Error::LeaseKeepAliveError(e))) => {
                    tracing::info!(
                        lease = id,
                        "lease no longer valid ({e}); granting a new one"
                    );
                    self.lease = None;
                }
                Ok(Err(e)) => return Err(format!("keep-alive: {e}")),
                Err(_) => return Err(format!("keep-alive: no answer within {REQUEST_TIMEOUT:?}")),
            }
        }
        if self.clock.ever_confirmed() {
            // We held a lease before: it has expired.
            self.left_while_away();
        }
        let grant = bounded(
            "lease grant",
            client.lease_grant(self.settings.ttl_secs, None),
        )
        .await?;
        if grant.ttl() <= 0 || !grant.error().is_empty() {
            return Err(format!(
                "lease grant refused (ttl {}, {:?})",
                grant.ttl(),
                grant.error()
            ));
        }
        // etcd may raise a short TTL to its minimum; pace keep-alives by
        // what was granted.
        let ttl = Duration::from_secs(grant.ttl().unsigned_abs());
        self.lease = Some((grant.id(), ttl));
        let (keeper, acks) = bounded("keep-alive", client.lease_keep_alive(grant.id())).await?;
        Ok(KeepAlive { keeper, acks, ttl })
    }

    /// Applies a watch response; publishes if the members changed. True
    /// when this node's own key was deleted.
    fn apply_events(&mut self, response: &WatchResponse) -> bool {
        let mut revision = 0;
        let mut own_deleted = false;
        for event in response.events() {
            let Some(kv) = event.kv() else { continue };
            revision = revision.max(kv.mod_revision());
            if kv.create_revision() != 0 {
                self.apply_put(kv.key(), kv.value());
            } else if kv.key() == self.key.as_slice() {
                own_deleted = true;
            } else if self.peers.remove(kv.key()).is_some() {
                tracing::info!(key = %String::from_utf8_lossy(kv.key()), "member left");
            }
        }
        if revision > 0 {
            self.publish_if_changed(revision);
        }
        own_deleted
    }

    fn apply_put(&mut self, key: &[u8], value: &[u8]) {
        let shown = String::from_utf8_lossy(key);
        if key == self.key.as_slice() {
            if value != self.value.as_slice() {
                tracing::warn!(
                    key = %shown,
                    "this node's key holds another value: does another node use node id {:?}?",
                    self.me.node_id
                );
            }
            return;
        }
        let member = match parse_member(value) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(key = %shown, "ignoring a malformed member entry: {e}");
                self.peers.remove(key);
                return;
            }
        };
        if member.addr == self.me.addr {
            tracing::warn!(
                key = %shown,
                "entry claims this node's address {} (node id {:?}, ours {:?}); ignored",
                member.addr,
                member.node_id,
                self.me.node_id
            );
        } else if let Some((other, _)) = self
            .peers
            .iter()
            .find(|(k, p)| k.as_slice() != key && p.addr == member.addr)
        {
            tracing::warn!(
                key = %shown,
                other = %String::from_utf8_lossy(other),
                "two entries claim {}; the first key in order is used",
                member.addr
            );
        }
        self.peers.insert(key.to_vec(), member);
    }

    /// Publishes the ring of this node and its peers if its members differ
    /// from the current ring's. The epoch is the etcd revision of the
    /// change, forced above the previous epoch (a new etcd cluster starts
    /// its revisions over).
    fn publish_if_changed(&self, revision: i64) {
        let revision = u64::try_from(revision).unwrap_or(0);
        let latest = self.shared.latest_ring();
        let previous = latest.as_ref().map_or(0, |r| r.epoch());
        let epoch = revision.max(previous + 1);
        let peers = self.peers.values().cloned().collect();
        let ring = Ring::with_local(epoch, self.me.clone(), peers, self.settings.vnodes);
        if latest.is_some_and(|r| r.same_members(&ring)) {
            return;
        }
        if epoch != revision {
            tracing::warn!(
                revision,
                epoch,
                "etcd revision went backwards (a new etcd cluster?); continuing the epochs"
            );
        }
        self.shared.publish(ring);
    }

    /// Revokes the lease so that peers drop this node now (bounded).
    async fn revoke(&mut self) {
        let Some((id, _)) = self.lease.take() else {
            return;
        };
        let client = self.client.clone();
        let endpoints = self.settings.endpoints.clone();
        let options = self.settings.connect_options();
        let attempt = async move {
            let mut client = match client {
                Some(c) => c,
                None => Client::connect(endpoints, Some(options)).await?,
            };
            client.lease_revoke(id).await
        };
        match tokio::time::timeout(REVOKE_BUDGET, attempt).await {
            Ok(Ok(_)) => tracing::info!(lease = id, "lease revoked: peers drop this node now"),
            Ok(Err(e)) => tracing::warn!(
                lease = id,
                "cannot revoke the lease ({e}); peers drop this node when it expires"
            ),
            Err(_) => tracing::warn!(
                lease = id,
                "lease revocation timed out; peers drop this node when it expires"
            ),
        }
    }
}

fn keep_alive_ticker(ttl: Duration) -> tokio::time::Interval {
    let every = (ttl / 3).max(Duration::from_millis(100));
    // The first tick is one period away: the lease was just granted or renewed.
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick
}

/// What a peer may ask of the control thread's connections: the answer
/// to its CHALLENGE (--peer-secret-file), a certificate (--peer-ca).
#[derive(Clone, Default)]
pub(super) struct PeerCredentials {
    pub secret: Option<Arc<PeerSecret>>,
    pub tls: Option<Arc<crate::tls::Tls>>,
}

/// One RING request to the peer at `addr` over a fresh peer connection
/// (mutual TLS with --peer-ca): its ring's epoch and members.
async fn ask_ring(addr: SocketAddr, credentials: &PeerCredentials) -> Result<RingView, String> {
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let secret = credentials.secret.as_deref();
        match credentials.tls.as_ref().and_then(|t| t.peer_client()) {
            Some(config) => {
                let stream = tokio_rustls::TlsConnector::from(config)
                    .connect(crate::tls::peer_name(addr), stream)
                    .await
                    .map_err(|e| format!("TLS: {e}"))?;
                // The peer ALPN stands in for the magic.
                ring_exchange(stream, Vec::new(), secret).await
            }
            None => ring_exchange(stream, peer::MAGIC.to_vec(), secret).await,
        }
    };
    match tokio::time::timeout(PEER_RING_TIMEOUT, exchange).await {
        Ok(answer) => answer,
        Err(_) => Err(format!("no answer within {PEER_RING_TIMEOUT:?}")),
    }
}

/// Sends `request` (the magic, or nothing over TLS) and a RING request,
/// answering a CHALLENGE first when the peer asks; returns its RING.
async fn ring_exchange<S>(
    mut stream: S,
    mut request: Vec<u8>,
    secret: Option<&PeerSecret>,
) -> Result<RingView, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::AsyncReadExt;
    // With a secret, the RING request waits for the peer's CHALLENGE.
    if secret.is_none() {
        peer::encode_ring_request(&mut request, 1);
    }
    // Over TLS a write may leave records buffered until flushed.
    send(&mut stream, &request).await?;
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        match peer::decode_reply(&mut buf, PEER_RING_MAX) {
            Ok(Some((_, PeerReply::Challenge(nonce)))) => {
                let secret = secret.ok_or("the peer requires --peer-secret-file")?;
                let mut answer = Vec::new();
                peer::encode_auth(&mut answer, &secret.mac(&nonce));
                peer::encode_ring_request(&mut answer, 1);
                send(&mut stream, &answer).await?;
            }
            Ok(Some((_, PeerReply::Ring(view)))) => return Ok(view),
            Ok(Some((_, other))) => return Err(format!("answered {other:?}")),
            Ok(None) => {}
            Err(e) => return Err(e.to_string()),
        }
        if stream
            .read_buf(&mut buf)
            .await
            .map_err(|e| format!("read: {e}"))?
            == 0
        {
            return Err("closed before answering".into());
        }
    }
}

async fn send<S>(stream: &mut S, bytes: &[u8]) -> Result<(), String>
where
    S: tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::AsyncWriteExt;
    stream
        .write_all(bytes)
        .await
        .map_err(|e| format!("write: {e}"))?;
    stream.flush().await.map_err(|e| format!("write: {e}"))
}

/// Runs an etcd request with a deadline of its own.
async fn bounded<T>(
    what: &str,
    request: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, String> {
    match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: no answer within {REQUEST_TIMEOUT:?}")),
    }
}

/// etcd's "requested lease not found" (gRPC NotFound).
fn lease_not_found(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s) if s.message().contains("lease not found"))
}

/// The value stored under a member's key, fields in the documented order.
fn encode_member(m: &Member) -> String {
    format!(
        "{{\"node_id\":{},\"addr\":\"{}\",\"shards\":{}}}",
        serde_json::Value::from(m.node_id.as_str()),
        m.addr,
        m.shards
    )
}

/// Parses a member's value; any deviation is an error, never a panic.
fn parse_member(value: &[u8]) -> Result<Member, String> {
    let v: serde_json::Value =
        serde_json::from_slice(value).map_err(|e| format!("not JSON: {e}"))?;
    let field = |name: &str| v.get(name).ok_or_else(|| format!("no {name:?}"));
    let node_id = field("node_id")?
        .as_str()
        .filter(|s| !s.is_empty())
        .ok_or("\"node_id\" is not a non-empty string")?
        .to_string();
    let addr: SocketAddr = field("addr")?
        .as_str()
        .ok_or("\"addr\" is not a string")?
        .parse()
        .map_err(|e| format!("\"addr\" is not ip:port: {e}"))?;
    let shards = field("shards")?
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .filter(|&n| n > 0)
        .ok_or("\"shards\" is not a positive 32-bit integer")?;
    Ok(Member {
        node_id,
        addr,
        shards,
    })
}

/// Exponential backoff with jitter, so a fleet does not reconnect in step.
struct Backoff {
    next: Duration,
    seed: u64,
    attempt: u64,
}

impl Backoff {
    fn new(node_id: &str) -> Backoff {
        Backoff {
            next: BACKOFF_MIN,
            seed: xxhash_rust::xxh3::xxh3_64(node_id.as_bytes()),
            attempt: 0,
        }
    }

    /// The next wait: between half and all of the current step.
    fn next(&mut self) -> Duration {
        let step = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        self.attempt += 1;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let mix = xxhash_rust::xxh3::xxh3_64_with_seed(
            &[self.attempt.to_le_bytes(), u64::from(nanos).to_le_bytes()].concat(),
            self.seed,
        );
        let fraction = (mix >> 11) as f64 / (1u64 << 53) as f64;
        step.mul_f64(0.5 + 0.5 * fraction)
    }

    fn reset(&mut self) {
        self.next = BACKOFF_MIN;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_values_round_trip() {
        let m = Member {
            node_id: "cache-a".into(),
            addr: "[::1]:7070".parse().unwrap(),
            shards: 8,
        };
        let text = encode_member(&m);
        assert_eq!(
            text,
            r#"{"node_id":"cache-a","addr":"[::1]:7070","shards":8}"#
        );
        assert_eq!(parse_member(text.as_bytes()), Ok(m));
        // Ids are JSON-escaped.
        let odd = Member {
            node_id: "a\"b\\c\n".into(),
            ..parse_member(text.as_bytes()).unwrap()
        };
        assert_eq!(parse_member(encode_member(&odd).as_bytes()), Ok(odd));
        // Unknown fields are for later versions, not an error.
        let extra = br#"{"node_id":"b","addr":"10.0.0.2:7070","shards":2,"zone":"x"}"#;
        assert_eq!(parse_member(extra).unwrap().node_id, "b");
    }

    #[test]
    fn malformed_values_are_errors_not_panics() {
        let cases: &[&[u8]] = &[
            b"",
            b"\xff\xfe",
            b"null",
            b"[]",
            b"{}",
            b"{\"node_id\":",
            br#"{"addr":"10.0.0.1:7070","shards":1}"#,
            br#"{"node_id":"","addr":"10.0.0.1:7070","shards":1}"#,
            br#"{"node_id":7,"addr":"10.0.0.1:7070","shards":1}"#,
            br#"{"node_id":"a","addr":"10.0.0.1","shards":1}"#,
            br#"{"node_id":"a","addr":"host:7070","shards":1}"#,
            br#"{"node_id":"a","addr":7070,"shards":1}"#,
            br#"{"node_id":"a","addr":"10.0.0.1:70000","shards":1}"#,
            br#"{"node_id":"a","addr":"10.0.0.1:7070"}"#,
            br#"{"node_id":"a","addr":"10.0.0.1:7070","shards":0}"#,
            br#"{"node_id":"a","addr":"10.0.0.1:7070","shards":-1}"#,
            br#"{"node_id":"a","addr":"10.0.0.1:7070","shards":1.5}"#,
            br#"{"node_id":"a","addr":"10.0.0.1:7070","shards":4294967296}"#,
            br#"{"node_id":"a","addr":"10.0.0.1:7070","shards":1e400}"#,
        ];
        for case in cases {
            assert!(
                parse_member(case).is_err(),
                "{:?} parsed",
                String::from_utf8_lossy(case)
            );
        }
    }

    #[test]
    fn settings_are_validated() {
        let ok = |e: &[&str], p: &str, ttl: Duration| {
            Settings::new(
                e.iter().map(|s| s.to_string()).collect(),
                p.into(),
                ttl,
                160,
            )
        };
        let s = ok(
            &["http://127.0.0.1:2379", " "],
            "/sc/",
            Duration::from_millis(1500),
        )
        .unwrap();
        assert_eq!(s.endpoints, ["http://127.0.0.1:2379"]);
        assert_eq!(s.ttl_secs, 2, "rounded up");
        assert!(ok(&[], "/sc/", Duration::from_secs(5)).is_err());
        assert!(ok(&[""], "/sc/", Duration::from_secs(5)).is_err());
        assert!(ok(&["http://e:2379"], "", Duration::from_secs(5)).is_err());
        assert!(ok(&["http://e:2379"], "/sc/", Duration::ZERO).is_err());
    }

    #[test]
    fn backoff_doubles_to_its_cap_with_jitter_and_resets() {
        let mut b = Backoff::new("n");
        let mut step = BACKOFF_MIN;
        for _ in 0..8 {
            let wait = b.next();
            assert!(
                wait >= step / 2 && wait <= step,
                "{wait:?} for step {step:?}"
            );
            step = (step * 2).min(BACKOFF_MAX);
        }
        assert!(b.next() >= BACKOFF_MAX / 2);
        b.reset();
        assert!(b.next() <= BACKOFF_MIN);
    }
}
