//! Forwarding to the owner node: one shard's client connections to the
//! other nodes of the cluster.
//!
//! Each shard keeps at most one connection per peer node, opened on first
//! use and shared by every call of the shard's connections: requests are
//! pipelined and multiplexed on it (the peer wire format is in
//! `protocol::peer`), everything queued in one turn leaves in one write,
//! and replies are delivered to the asking connection's mailbox exactly
//! like replies from another shard.
//!
//! Failure handling, per peer so that one bad node never slows the calls
//! for keys owned by others:
//! - a peer that cannot be reached fails its calls at once with
//!   UNAVAILABLE naming it, and is retried after a backoff (50 ms doubling
//!   to 2 s) rather than on every call; calls made while that retry
//!   connects fail at once too, so behind a partition every call fails
//!   fast instead of waiting out a connect;
//! - a lost connection fails the calls in flight on it (UNAVAILABLE); lost
//!   with calls in flight, the peer counts as unreachable (the backoff
//!   above) until a new connection succeeds;
//! - a peer behind a silent partition is noticed when TCP stops
//!   acknowledging what we sent ([`UNACKED_TIMEOUT`], TCP_USER_TIMEOUT),
//!   not only at each call's deadline;
//! - every call has a deadline, the client's or `--peer-timeout`, whichever
//!   is sooner; a stalled peer's calls end by it, and a write that stalls
//!   that long drops the connection;
//! - at most [`MAX_IN_FLIGHT`] calls wait on one peer, and at most
//!   [`PeerSettings::max_queued`] bytes of requests wait to be written; more
//!   are refused (UNAVAILABLE) instead of queueing without bound;
//! - a connection with nothing in flight for half the idle timeout is
//!   closed by us, before the peer's idle reaper would close it under a
//!   request (nodes of a cluster share --idle-timeout).
//!
//! The connection is a sans-IO [`ClientSession`] run by `driver`.
//!
//! Every forwarded call and every failed one is counted in the shard's
//! metrics (`forwarded_requests_total`, `peer_errors_total` by kind).

use super::driver::{self, Session};
use super::lifecycle::{ConnShared, Room};
use super::tls_session::TlsSession;
use crate::metrics::{Guard, PeerError};
use crate::protocol::grpc::{Code, Status};
use crate::protocol::peer::{self, PeerReply, PeerRequest};
use crate::protocol::CacheOp;
use crate::runtime::{self, Stream};
use crate::shard::{InTransit, Reply, ReplyTo, Shard};
use bytes::BytesMut;
use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Calls one shard may have waiting on one peer node.
pub const MAX_IN_FLIGHT: usize = 16_384;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Data sent to a peer and not acknowledged for this long ends the
/// connection. Three lost retransmissions of one segment at a 100 ms round
/// trip take ~2.1 s, so 5 % packet loss almost never trips it.
pub const UNACKED_TIMEOUT: Duration = Duration::from_secs(3);

/// Settings shared by every peer client of a node.
#[derive(Debug, Clone)]
pub struct PeerSettings {
    /// Longest a forwarded call may wait when its client set no deadline.
    pub timeout: Duration,
    /// Largest reply frame accepted (a value up to --max-value).
    pub max_frame: usize,
    /// Bytes of requests that may wait to be written to one peer
    /// (`--conn-buffer`).
    pub max_queued: usize,
    /// A connection idle this long is closed (half of --idle-timeout).
    pub idle_close: Duration,
    /// This shard's large values on their way to its connections, and
    /// their bound (shard/transit.rs): a large value read from a peer past
    /// it is dropped and its Get fails RESOURCE_EXHAUSTED.
    pub in_transit: InTransit,
    pub transit_limit: usize,
    /// --peer-secret-file: answers the CHALLENGE of peers that require it.
    pub secret: Option<Arc<crate::protocol::peer_auth::PeerSecret>>,
    /// --peer-ca: connections to peers are mutual TLS (read at each
    /// connect, so a SIGHUP reload reaches new connections).
    pub tls: Option<Arc<crate::tls::Tls>>,
}

/// One shard's clients, one per peer node it has talked to.
pub struct Peers {
    settings: PeerSettings,
    /// The shard these clients belong to: where their metrics go.
    shard: Rc<Shard>,
    clients: RefCell<hashbrown::HashMap<SocketAddr, Rc<PeerClient>>>,
}

impl Peers {
    pub fn new(settings: PeerSettings, shard: Rc<Shard>) -> Peers {
        Peers {
            settings,
            shard,
            clients: RefCell::new(hashbrown::HashMap::new()),
        }
    }

    /// Sends `op` to the node at `addr`; the reply (or the failure) goes to
    /// `reply_to`, by `deadline` or the peer timeout at the latest. A Get's
    /// value may be kept as a hot copy.
    pub fn forward(
        &self,
        addr: SocketAddr,
        op: CacheOp,
        deadline: Option<Instant>,
        reply_to: ReplyTo,
    ) {
        let client = self.client(addr);
        client.call(op, deadline, reply_to);
    }

    /// Tells the node at `addr` to drop its hot copy of (group, key). Best
    /// effort: not answered, dropped while the peer is unreachable.
    pub fn invalidate(&self, addr: SocketAddr, group: &str, key: &str) {
        self.client(addr).invalidate(group, key);
    }

    /// The client of the node at `addr`, made on first use (named by the
    /// node id the ring knows it by).
    fn client(&self, addr: SocketAddr) -> Rc<PeerClient> {
        if let Some(c) = self.clients.borrow().get(&addr) {
            return c.clone();
        }
        let c = Rc::new(PeerClient::new(
            addr,
            &self.shard.node_name(addr),
            self.settings.clone(),
            self.shard.clone(),
        ));
        self.clients.borrow_mut().insert(addr, c.clone());
        c
    }

    /// Forgets the peers not in `members` (they left the ring): their
    /// connections close and what waits on them fails.
    pub fn retain(&self, members: &[SocketAddr]) {
        self.clients.borrow_mut().retain(|addr, c| {
            let keep = members.contains(addr);
            if !keep {
                c.close();
            }
            keep
        });
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No connection and no task: the next call starts one.
    Idle,
    /// A task is connecting or connected.
    Active,
    /// The last connect failed, or a connection was lost under calls:
    /// calls fail at once until then.
    Down { until: Instant },
    /// Reconnecting after `Down`: calls still fail at once.
    Probing,
}

struct Waiter {
    reply_to: ReplyTo,
    /// A Get's (group, key), for a hot copy of its value.
    get: Option<(String, String)>,
    /// Whether the call's deadline is the client's own (DEADLINE_EXCEEDED
    /// when it passes) or the peer timeout (UNAVAILABLE).
    client_deadline: bool,
}

struct PeerClient {
    addr: SocketAddr,
    /// Where answers are delivered and hot copies kept.
    shard: Rc<Shard>,
    /// "node-id (addr)", for messages.
    name: String,
    /// The address as text: the `peer` label of its metrics.
    label: String,
    settings: PeerSettings,
    state: Cell<State>,
    backoff: Cell<Duration>,
    last_error: RefCell<String>,
    /// Request frames queued since the last write.
    out: RefCell<Vec<u8>>,
    waiting: RefCell<hashbrown::HashMap<u32, Waiter>>,
    /// (deadline, id), soonest first; ids already answered are skipped.
    deadlines: RefCell<BinaryHeap<Reverse<(Instant, u32)>>>,
    next_id: Cell<u32>,
    /// The connection's wake-ups (its mailbox carries no replies).
    conn: Rc<ConnShared>,
    closed: Cell<bool>,
}

impl PeerClient {
    fn new(
        addr: SocketAddr,
        node_id: &str,
        settings: PeerSettings,
        shard: Rc<Shard>,
    ) -> PeerClient {
        let name = if node_id == addr.to_string() {
            format!("peer {addr}")
        } else {
            format!("peer {node_id} ({addr})")
        };
        PeerClient {
            addr,
            shard,
            name,
            label: addr.to_string(),
            settings,
            state: Cell::new(State::Idle),
            backoff: Cell::new(BACKOFF_MIN),
            last_error: RefCell::new(String::new()),
            out: RefCell::new(Vec::new()),
            waiting: RefCell::new(hashbrown::HashMap::new()),
            deadlines: RefCell::new(BinaryHeap::new()),
            next_id: Cell::new(0),
            conn: Rc::new(ConnShared::default()),
            closed: Cell::new(false),
        }
    }

    fn call(self: &Rc<Self>, op: CacheOp, deadline: Option<Instant>, reply_to: ReplyTo) {
        let now = Instant::now();
        self.shard.record_forwarded(&self.label);
        let fail = |kind: PeerError, st: Status| {
            self.shard.record_peer_errors(&self.label, kind, 1);
            self.shard.reply(reply_to.clone(), Reply::Failed(st));
        };
        if let Some((kind, st)) = self.refusal(now) {
            return fail(kind, st);
        }
        if self.waiting.borrow().len() >= MAX_IN_FLIGHT {
            return fail(
                PeerError::Overloaded,
                Status::new(
                    Code::Unavailable,
                    format!(
                        "{} is not keeping up: {MAX_IN_FLIGHT} calls already wait on it",
                        self.name
                    ),
                ),
            );
        }
        if self.out.borrow().len() >= self.settings.max_queued {
            return fail(
                PeerError::Overloaded,
                Status::new(
                    Code::Unavailable,
                    format!(
                        "{} is not keeping up: {} bytes of requests wait to be written to it \
                         (--conn-buffer)",
                        self.name,
                        self.out.borrow().len()
                    ),
                ),
            );
        }
        let timeout_at = now + self.settings.timeout;
        let (deadline, client_deadline) = match deadline {
            Some(d) if d <= timeout_at => (d, true),
            _ => (timeout_at, false),
        };
        let id = self.next_id.get();
        self.next_id.set(id.wrapping_add(1));
        let left = deadline.saturating_duration_since(now).as_millis();
        let req = PeerRequest {
            id,
            // 0 means "no deadline" on the wire; an expired one is 1 ms.
            timeout_ms: u32::try_from(left).unwrap_or(u32::MAX).max(1),
            op,
        };
        peer::encode_request(&mut self.out.borrow_mut(), &req);
        let get = match (&req.op, self.shard.has_hot_cache()) {
            (CacheOp::Get { group, key }, true) => Some((group.clone(), key.clone())),
            _ => None,
        };
        self.waiting.borrow_mut().insert(
            id,
            Waiter {
                reply_to,
                get,
                client_deadline,
            },
        );
        self.deadlines.borrow_mut().push(Reverse((deadline, id)));
        self.start();
    }

    fn invalidate(self: &Rc<Self>, group: &str, key: &str) {
        if self.refusal(Instant::now()).is_some() {
            return;
        }
        peer::encode_invalidate(&mut self.out.borrow_mut(), group, key);
        self.start();
    }

    /// Why a call cannot be sent now: the peer left, or it is unreachable
    /// (in backoff, or being reconnected: past the backoff the first call
    /// starts that reconnection).
    fn refusal(self: &Rc<Self>, now: Instant) -> Option<(PeerError, Status)> {
        if self.closed.get() {
            return Some((
                PeerError::Closed,
                Status::new(Code::Unavailable, format!("{} left the cluster", self.name)),
            ));
        }
        let retry = match self.state.get() {
            State::Idle | State::Active => return None,
            State::Down { until } if now < until => {
                format!("retrying in {} ms", until.duration_since(now).as_millis())
            }
            State::Down { .. } => {
                self.state.set(State::Probing);
                runtime::spawn(self.clone().run());
                "reconnecting".to_string()
            }
            State::Probing => "reconnecting".to_string(),
        };
        Some((
            PeerError::Connect,
            Status::new(
                Code::Unavailable,
                format!(
                    "{} is unreachable ({}); {retry}",
                    self.name,
                    self.last_error.borrow()
                ),
            ),
        ))
    }

    /// Calls fail at once until the backoff has passed; the backoff doubles.
    fn mark_down(&self, error: String) {
        let backoff = self.backoff.get();
        self.backoff.set((backoff * 2).min(BACKOFF_MAX));
        *self.last_error.borrow_mut() = error;
        self.state.set(State::Down {
            until: Instant::now() + backoff,
        });
    }

    /// Makes sure a connection task runs, and wakes it to write.
    fn start(self: &Rc<Self>) {
        if self.state.get() == State::Idle {
            self.state.set(State::Active);
            runtime::spawn(self.clone().run());
        }
        self.conn.mailbox().wake();
    }

    fn close(&self) {
        self.closed.set(true);
        self.conn.mailbox().wake();
    }

    /// Fails every waiting call with `status`, counted as `kind`.
    fn fail_all(&self, kind: PeerError, status: &Status) {
        self.out.borrow_mut().clear();
        self.deadlines.borrow_mut().clear();
        let waiting = std::mem::take(&mut *self.waiting.borrow_mut());
        self.shard
            .record_peer_errors(&self.label, kind, waiting.len() as u64);
        for (_, w) in waiting {
            self.shard.reply(w.reply_to, Reply::Failed(status.clone()));
        }
    }

    /// Ends the calls whose deadline has passed; returns the next deadline.
    fn expire(&self, now: Instant) -> Option<Instant> {
        let mut heap = self.deadlines.borrow_mut();
        while let Some(&Reverse((at, id))) = heap.peek() {
            if at > now {
                return Some(at);
            }
            heap.pop();
            let Some(w) = self.waiting.borrow_mut().remove(&id) else {
                continue; // answered already
            };
            self.shard
                .record_peer_errors(&self.label, PeerError::Timeout, 1);
            let st = if w.client_deadline {
                Status::new(
                    Code::DeadlineExceeded,
                    format!("deadline exceeded waiting for {}", self.name),
                )
            } else {
                Status::new(
                    Code::Unavailable,
                    format!(
                        "{} did not answer within {} ms (--peer-timeout)",
                        self.name,
                        self.settings.timeout.as_millis()
                    ),
                )
            };
            self.shard.reply(w.reply_to, Reply::Failed(st));
        }
        None
    }

    fn deliver(&self, id: u32, reply: PeerReply) {
        let Some(w) = self.waiting.borrow_mut().remove(&id) else {
            return; // timed out already
        };
        let reply = match reply {
            PeerReply::Get(v) => {
                if let (Some((group, key)), Some(v)) = (&w.get, &v) {
                    self.shard.admit_hot(group, key, v);
                }
                match v.map(|v| {
                    let len = v.len();
                    let s = &self.settings;
                    s.in_transit.admit(v, s.transit_limit).map_err(|w| (len, w))
                }) {
                    None => Reply::Get(None),
                    Some(Ok(v)) => Reply::Get(Some(v)),
                    Some(Err((len, waiting))) => {
                        self.shard.record_guard(Guard::Backpressure, 1);
                        Reply::Failed(super::dispatch::transit_full(len, waiting))
                    }
                }
            }
            PeerReply::Set { created } => Reply::Set(Ok(created)),
            PeerReply::Delete(d) => Reply::Delete(d),
            PeerReply::Error(st) => {
                self.shard
                    .record_peer_errors(&self.label, PeerError::Remote, 1);
                Reply::Failed(st)
            }
            // Never asked on this connection (only the control thread asks).
            PeerReply::Ring(_) => Reply::Failed(Status::new(
                Code::Internal,
                format!("{} answered a call with its ring", self.name),
            )),
            // Taken by the session before delivery; never an answer.
            PeerReply::Challenge(_) => Reply::Failed(Status::new(
                Code::Internal,
                format!("{} answered a call with a challenge", self.name),
            )),
        };
        self.shard.reply(w.reply_to, reply);
    }

    /// The connection's task: connect, then write what is queued and read
    /// replies until the connection fails or the peer leaves the ring.
    async fn run(self: Rc<Self>) {
        let stream = match Stream::connect(self.addr, CONNECT_TIMEOUT).await {
            Ok(s) => s,
            Err(e) => {
                self.mark_down(e.to_string());
                tracing::warn!(peer = %self.addr, "cannot connect to {}: {e}", self.name);
                self.fail_all(
                    PeerError::Connect,
                    &Status::new(
                        Code::Unavailable,
                        format!("cannot connect to {}: {e}", self.name),
                    ),
                );
                return;
            }
        };
        if self.state.get() == State::Probing {
            tracing::info!(peer = %self.addr, "{} is reachable again", self.name);
        }
        self.state.set(State::Active);
        self.backoff.set(BACKOFF_MIN);
        let reason = self.session(stream).await;
        if self.waiting.borrow().is_empty() || self.closed.get() {
            self.state.set(State::Idle);
            tracing::debug!(peer = %self.addr, "connection to {} ended: {reason}", self.name);
        } else {
            // Lost under calls: a reset, a partition (TCP_USER_TIMEOUT), a
            // crash. Fail fast until a new connection proves it back.
            tracing::warn!(peer = %self.addr, "connection to {} lost: {reason}", self.name);
            self.mark_down(format!("connection lost: {reason}"));
        }
        let st = if self.closed.get() {
            Status::new(Code::Unavailable, format!("{} left the cluster", self.name))
        } else {
            Status::new(
                Code::Unavailable,
                format!("connection to {} lost: {reason}", self.name),
            )
        };
        // Calls made from now on start a new connection.
        self.fail_all(PeerError::Closed, &st);
    }

    async fn session(self: &Rc<Self>, mut stream: Stream) -> String {
        let _ = stream.set_nodelay();
        let _ = stream.set_write_timeout(self.settings.timeout);
        let _ = stream.set_unacked_timeout(UNACKED_TIMEOUT);
        let now = Instant::now();
        let tls = self.settings.tls.as_ref().and_then(|t| t.peer_client());
        let mut s = ClientSession {
            client: self.clone(),
            // Over TLS the peer ALPN says what the magic says in plaintext.
            sending: match tls {
                Some(_) => Vec::new(),
                None => peer::MAGIC.to_vec(),
            },
            last_used: now,
            ended: None,
            // With a secret, requests wait for the peer's CHALLENGE.
            challenge_by: self
                .settings
                .secret
                .is_some()
                .then(|| now + self.settings.timeout),
        };
        let conn = self.conn.clone();
        let Some(config) = tls else {
            if let Err(e) = driver::drive(&mut stream, &mut s, &conn, None, BytesMut::new()).await {
                return format!("write failed: {e}");
            }
            return s.ended.unwrap_or_else(|| "closed".into());
        };
        // The peer's certificate must chain to --peer-ca and name the
        // address we reach it at.
        let tls = match rustls::ClientConnection::new(config, crate::tls::peer_name(self.addr)) {
            Ok(tls) => tls,
            Err(e) => return format!("TLS set-up: {e}"),
        };
        let mut t = TlsSession::new(tls, s, now + self.settings.timeout);
        let written = driver::drive(&mut stream, &mut t, &conn, None, BytesMut::new()).await;
        if let Some(e) = t.error() {
            return format!("TLS: {e}");
        }
        if let Err(e) = written {
            return format!("write failed: {e}");
        }
        t.inner().ended.clone().unwrap_or_else(|| "closed".into())
    }
}

/// One connection to a peer node: requests queued by the shard's
/// connections go out, replies come back to their waiters.
struct ClientSession {
    client: Rc<PeerClient>,
    /// Request frames to write now (the magic first).
    sending: Vec<u8>,
    /// When a call last waited on the connection: it closes once idle.
    last_used: Instant,
    /// Why the connection ends, once it does.
    ended: Option<String>,
    /// --peer-secret-file: the peer's CHALLENGE is due by then; requests
    /// are held until it is answered. None: nothing (more) to wait for.
    challenge_by: Option<Instant>,
}

impl ClientSession {
    /// Answers the peer's CHALLENGE, then lets the held requests go.
    fn answer(&mut self, nonce: &[u8]) {
        let Some(secret) = self.client.settings.secret.as_deref() else {
            self.ended =
                Some("the peer requires --peer-secret-file, which this node does not have".into());
            return;
        };
        if self.challenge_by.take().is_none() {
            self.ended = Some("protocol error: a second challenge".into());
            return;
        }
        peer::encode_auth(&mut self.sending, &secret.mac(nonce));
        self.sending.append(&mut self.client.out.borrow_mut());
    }

    fn idle_close_at(&self) -> Option<Instant> {
        self.client
            .waiting
            .borrow()
            .is_empty()
            .then(|| self.last_used + self.client.settings.idle_close)
    }
}

impl Session for ClientSession {
    fn on_input(&mut self, input: &mut BytesMut, _room: Room, _now: Instant) -> bool {
        while self.ended.is_none() {
            match peer::decode_reply(input, self.client.settings.max_frame) {
                Ok(Some((_, PeerReply::Challenge(nonce)))) => self.answer(&nonce),
                Ok(Some(_)) if self.challenge_by.is_some() => {
                    self.ended = Some(
                        "the peer answered before challenging this node: it has no \
                         --peer-secret-file while this node has one"
                            .into(),
                    );
                }
                Ok(Some((id, reply))) => self.client.deliver(id, reply),
                Ok(None) => break,
                Err(e) => self.ended = Some(format!("protocol error: {e}")),
            }
        }
        false
    }

    fn on_eof(&mut self) {
        self.ended
            .get_or_insert_with(|| "closed by the peer".into());
    }

    fn on_read_error(&mut self, error: std::io::Error) {
        let why = if error.kind() == std::io::ErrorKind::TimedOut {
            format!(
                "nothing acknowledged for {} s ({error})",
                UNACKED_TIMEOUT.as_secs()
            )
        } else {
            format!("read failed: {error}")
        };
        self.ended.get_or_insert(why);
    }

    fn on_wake(&mut self, _room: Room, now: Instant) {
        if self.client.closed.get() {
            self.ended = Some("the peer left the ring".into());
            return;
        }
        if let Some(by) = self.challenge_by {
            if now >= by {
                self.ended = Some(format!(
                    "no challenge from the peer within {:?}: it has no --peer-secret-file \
                     while this node has one",
                    self.client.settings.timeout
                ));
            }
            self.client.expire(now);
            return;
        }
        self.sending.append(&mut self.client.out.borrow_mut());
        self.client.expire(now);
        if !self.client.waiting.borrow().is_empty() {
            self.last_used = now;
        } else if self.sending.is_empty() && self.idle_close_at().is_some_and(|at| at <= now) {
            self.ended = Some("idle".into());
        }
    }

    fn on_idle(&mut self) {}

    fn on_shutdown(&mut self) {}

    fn output(&self) -> &[u8] {
        &self.sending
    }

    fn clear_output(&mut self) {
        self.sending.clear();
    }

    fn held(&self) -> usize {
        self.sending.len()
    }

    fn wants_input(&self, _room: Room) -> bool {
        self.ended.is_none()
    }

    fn next_deadline(&self) -> Option<Instant> {
        let call = self.client.deadlines.borrow().peek().map(|r| r.0 .0);
        [call, self.idle_close_at(), self.challenge_by]
            .into_iter()
            .flatten()
            .min()
    }

    fn busy(&self) -> bool {
        !self.client.waiting.borrow().is_empty()
    }

    fn is_done(&self) -> bool {
        self.ended.is_some()
    }
}
