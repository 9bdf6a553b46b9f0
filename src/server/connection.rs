//! One client connection: bytes from the socket go through the HTTP/2
//! state machine, each complete request becomes a gRPC call executed on this
//! shard's store or handed to the owner shard, and every reply produced in
//! one turn of the loop leaves in a single write.
//!
//! Each unary call is counted in the shard's metrics when its response is
//! queued (method, status, time since its HEADERS arrived); a call that
//! waits carries its method and start in [`Pending`].

use super::dispatch::{self, Local};
use super::peer_client::Peers;
use super::streaming::Streaming;
use super::{peer_session, NodeShared};
use crate::config::MAX_KEY_BYTES;
use crate::metrics::{self, Interface, ReplyStatus};
use crate::proto;
use crate::protocol::grpc::{self, Code, Method, Rejection, Status};
use crate::protocol::http2::{
    Connection, ErrorCode, Event, HeaderField, HeaderList, ServerSettings,
};
use crate::protocol::{peer, CacheOp};
use crate::runtime::{self, Stream};
use crate::shard::{Mailbox, Op, Reply, ReplyTo, Shard, ShardCounters};
use bytes::{Buf, Bytes, BytesMut};
use futures_lite::future;
use prost::Message;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 64 << 10;

/// Releases the node-wide connection count when a connection ends.
pub struct OpenGuard(pub Arc<NodeShared>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open_connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What the shard's housekeeping can see of a connection and tell it.
#[derive(Default)]
pub struct ConnShared {
    mailbox: Rc<Mailbox>,
    /// Bumped on every read; the idle reaper compares snapshots.
    activity: Cell<u64>,
    busy: Cell<bool>,
    seen: Cell<u64>,
    strikes: Cell<u8>,
    idle: Cell<bool>,
    shutdown: Cell<bool>,
}

impl ConnShared {
    pub fn mailbox(&self) -> &Rc<Mailbox> {
        &self.mailbox
    }

    /// Traffic arrived: not idle.
    pub fn touch(&self) {
        self.activity.set(self.activity.get().wrapping_add(1));
    }

    /// Calls are open: not idle however quiet the socket is.
    pub fn set_busy(&self, busy: bool) {
        self.busy.set(busy);
    }

    pub fn shutdown_requested(&self) -> bool {
        self.shutdown.get()
    }

    /// True once after the idle reaper judged the connection idle.
    pub fn take_idle(&self) -> bool {
        self.idle.replace(false)
    }

    /// True once after each shutdown request (the first, and the final
    /// one a shard sends to connections still open a second later).
    pub fn take_shutdown(&self) -> bool {
        self.shutdown.replace(false)
    }
}

/// The connections of one shard.
#[derive(Default)]
pub struct Registry {
    conns: RefCell<hashbrown::HashMap<u64, Rc<ConnShared>>>,
    next_id: Cell<u64>,
}

impl Registry {
    pub(super) fn add(&self, c: Rc<ConnShared>) -> u64 {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        self.conns.borrow_mut().insert(id, c);
        id
    }

    pub(super) fn remove(&self, id: u64) {
        self.conns.borrow_mut().remove(&id);
    }

    /// Asks every connection to finish its calls and close (GOAWAY).
    pub fn shut_down_all(&self) {
        for c in self.conns.borrow().values() {
            c.shutdown.set(true);
            c.mailbox.wake();
        }
    }

    pub fn is_empty(&self) -> bool {
        self.conns.borrow().is_empty()
    }
}

/// Closes connections that had no open stream and no traffic for
/// `idle_timeout` (checked every half period, so closing happens between
/// one and one and a half periods of silence). Costs nothing per request.
pub async fn reap_idle(registry: Rc<Registry>, idle_timeout: Duration) {
    let period = (idle_timeout / 2).max(Duration::from_millis(50));
    loop {
        runtime::sleep(period).await;
        for c in registry.conns.borrow().values() {
            let a = c.activity.get();
            if a != c.seen.get() || c.busy.get() {
                c.seen.set(a);
                c.strikes.set(0);
                continue;
            }
            c.strikes.set(c.strikes.get() + 1);
            if c.strikes.get() >= 2 {
                c.idle.set(true);
                c.mailbox.wake();
            }
        }
    }
}

/// What the metrics need to know of a call when its response is queued.
#[derive(Debug, Clone, Copy)]
struct Started {
    method: metrics::Method,
    at: Instant,
}

/// A call waiting for other shards to answer.
struct Pending {
    deadline: Option<Instant>,
    started: Started,
    /// For Stats: one slot per shard, filled as answers arrive.
    stats: Vec<Option<ShardCounters>>,
}

enum Wake {
    Read(std::io::Result<usize>),
    Mail,
    Deadline,
}

struct Conn {
    h2: Connection,
    shard: Rc<Shard>,
    peers: Rc<Peers>,
    node: Arc<NodeShared>,
    shared: Rc<ConnShared>,
    pending: hashbrown::HashMap<u32, Pending>,
    /// Reused buffers: an encoded reply, a percent-encoded status message.
    body: Vec<u8>,
    scratch: Vec<u8>,
    max_message: usize,
    shutdown_asked: bool,
    /// Open streaming calls (health Watch, reflection): server/streaming.rs.
    streaming: Streaming,
}

/// Serves one accepted connection: a client speaking HTTP/2, or a peer
/// node (its first bytes are the peer magic). `refuse` (over
/// --max-connections) turns clients away; peers are always served, since
/// the cluster cannot forward without them.
#[allow(clippy::too_many_arguments)]
pub async fn serve(
    mut stream: Stream,
    shard: Rc<Shard>,
    peers: Rc<Peers>,
    node: Arc<NodeShared>,
    registry: Rc<Registry>,
    settings: ServerSettings,
    refuse: bool,
    _guard: OpenGuard,
) {
    let _ = stream.set_nodelay();
    let shared = Rc::new(ConnShared::default());
    let id = registry.add(shared.clone());
    let mut input = BytesMut::with_capacity(READ_CHUNK);
    match sniff(&mut stream, &mut input, &shared).await {
        Some(Kind::Peer) => {
            input.advance(peer::MAGIC.len());
            let max_frame = node.config.max_message().saturating_add(64);
            peer_session::serve(&mut stream, input, shard, peers, shared.clone(), max_frame).await;
        }
        Some(Kind::Client) => {
            shard.connection_opened(Interface::Grpc);
            let max_message = node.config.max_message();
            let mut c = Conn {
                h2: Connection::new(settings),
                max_message,
                shard,
                peers,
                node,
                shared: shared.clone(),
                pending: hashbrown::HashMap::new(),
                body: Vec::new(),
                scratch: Vec::new(),
                shutdown_asked: false,
                streaming: Streaming::new(max_message),
            };
            if refuse {
                let msg = format!(
                    "connection limit reached (--max-connections {})",
                    c.node.config.max_connections
                );
                c.h2.go_away(ErrorCode::RefusedStream, msg.as_bytes());
                let _ = stream.write_all(c.h2.output()).await;
            } else {
                c.run(&mut stream, input).await;
            }
            c.shard.connection_closed(Interface::Grpc);
        }
        None => {}
    }
    shared.mailbox.close();
    registry.remove(id);
    linger(&mut stream).await;
}

enum Kind {
    Client,
    Peer,
}

/// Reads until the first bytes tell a peer (the full magic) from a client
/// (anything else; the HTTP/2 layer judges its preface). None when the
/// connection closed, went idle or the node shuts down first.
async fn sniff(stream: &mut Stream, input: &mut BytesMut, shared: &ConnShared) -> Option<Kind> {
    let mut rbuf = [0u8; 4096];
    loop {
        let n = input.len().min(peer::MAGIC.len());
        if input[..n] != peer::MAGIC[..n] {
            return Some(Kind::Client);
        }
        if n == peer::MAGIC.len() {
            return Some(Kind::Peer);
        }
        let read = future::or(async { Some(stream.read(&mut rbuf).await) }, async {
            shared.mailbox.wait().await;
            None
        })
        .await;
        match read {
            Some(Ok(0)) | Some(Err(_)) => return None,
            Some(Ok(n)) => {
                shared.touch();
                input.extend_from_slice(&rbuf[..n]);
            }
            None if shared.idle.get() => return None,
            // Shutting down before the first byte: treat it as a client,
            // whose HTTP/2 connection then gets a proper GOAWAY.
            None if shared.shutdown.get() => return Some(Kind::Client),
            None => {}
        }
    }
}

/// Closes our side, then reads and discards until the client closes its
/// side (bounded): closing a socket with unread input makes the kernel send
/// RST, which can destroy responses the client has not read yet.
pub(super) async fn linger(stream: &mut Stream) {
    let _ = stream.shutdown_write().await;
    let mut buf = [0u8; 4096];
    let until = Instant::now() + LINGER;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        let read = future::or(async { Some(stream.read(&mut buf).await) }, async {
            runtime::sleep(left).await;
            None
        })
        .await;
        match read {
            Some(Ok(n)) if n > 0 => continue,
            _ => return,
        }
    }
}

/// How long a closing connection waits for the client to close its side.
const LINGER: Duration = Duration::from_secs(1);

impl Conn {
    async fn run(&mut self, stream: &mut Stream, mut input: BytesMut) {
        let mut events = Vec::new();
        if !input.is_empty() {
            // The bytes read while telling a client from a peer.
            let now = Instant::now();
            let result = self.h2.recv(&mut input, now, &mut events);
            for ev in events.drain(..) {
                self.on_event(ev, now);
            }
            if result.is_err() {
                let _ = stream.write_all(self.h2.output()).await;
                return;
            }
        }
        let mut rbuf = vec![0u8; READ_CHUNK];
        let mut replies = Vec::new();
        let mut closing = false;
        loop {
            if !self.h2.output().is_empty() {
                if stream.write_all(self.h2.output()).await.is_err() {
                    return;
                }
                self.h2.output().clear();
            }
            if closing || self.h2.is_closed() {
                return;
            }
            if self.shared.idle.replace(false) {
                self.h2.go_away(ErrorCode::NoError, b"idle timeout");
                closing = true;
                continue;
            }
            if self.shared.shutdown.replace(false) {
                // First request: two-phase GOAWAY, refusing nothing the
                // client already sent. A repeated request (the client never
                // acknowledged) sends the final GOAWAY at once. Accepted
                // streams are served until `is_closed`.
                if self.shutdown_asked {
                    self.h2
                        .go_away(ErrorCode::RefusedStream, b"server shutting down");
                } else {
                    self.shutdown_asked = true;
                    self.h2.begin_shutdown();
                    // Streaming calls never end by themselves: end them
                    // (UNAVAILABLE) so the connection can close.
                    self.streaming.shut_down(&mut self.h2);
                }
                continue;
            }
            let deadline = self.next_deadline();
            let mailbox = self.shared.mailbox.clone();
            let wake = future::or(
                async { Wake::Read(stream.read(&mut rbuf).await) },
                future::or(
                    async {
                        mailbox.wait().await;
                        Wake::Mail
                    },
                    async {
                        runtime::sleep_until(deadline).await;
                        Wake::Deadline
                    },
                ),
            )
            .await;
            match wake {
                Wake::Read(Ok(0)) | Wake::Read(Err(_)) => return,
                Wake::Read(Ok(n)) => {
                    self.shared.touch();
                    input.extend_from_slice(&rbuf[..n]);
                    let now = Instant::now();
                    let result = self.h2.recv(&mut input, now, &mut events);
                    for ev in events.drain(..) {
                        self.on_event(ev, now);
                    }
                    if let Err(e) = result {
                        tracing::debug!(code = ?e.code, reason = %e.reason, "closing connection after protocol error");
                        closing = true;
                    }
                }
                Wake::Mail => {}
                Wake::Deadline => self.expire_deadlines(),
            }
            self.shared.mailbox.drain_into(&mut replies);
            for (tag, reply) in replies.drain(..) {
                self.on_reply(tag, reply);
            }
            self.shared.busy.set(self.h2.active_streams() > 0);
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        if self.pending.is_empty() {
            return None;
        }
        self.pending.values().filter_map(|p| p.deadline).min()
    }

    fn expire_deadlines(&mut self) {
        let now = Instant::now();
        let expired: Vec<(u32, Started)> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline.is_some_and(|d| d <= now))
            .map(|(&id, p)| (id, p.started))
            .collect();
        for (id, started) in expired {
            self.pending.remove(&id);
            self.send_status(id, &deadline_exceeded(), started);
        }
    }

    /// `now`: when the bytes that completed the event were read.
    fn on_event(&mut self, ev: Event, now: Instant) {
        match ev {
            Event::Request {
                stream_id,
                headers,
                body,
                opened_at,
            } => self.on_request(stream_id, &headers, body, opened_at),
            Event::RequestTooLarge { stream_id, headers } => {
                // The event carries no start time: the read that overflowed
                // the limit stands in for it.
                let method = headers
                    .get(b":path")
                    .and_then(Method::from_path)
                    .map_or(metrics::Method::Other, metrics::Method::from);
                let started = Started { method, at: now };
                let st = Status::new(
                    Code::ResourceExhausted,
                    format!(
                        "request message exceeds the limit of {} bytes (--max-value plus framing)",
                        self.max_message
                    ),
                );
                self.send_status(stream_id, &st, started);
            }
            Event::Reset { stream_id, .. } => {
                self.pending.remove(&stream_id);
                self.streaming.reset(stream_id);
            }
            // Streaming calls (health Watch, reflection): server/streaming.rs.
            Event::StreamOpened {
                stream_id, headers, ..
            } => self.streaming.opened(&mut self.h2, stream_id, &headers),
            Event::StreamData {
                stream_id,
                data,
                end_stream,
            } => self
                .streaming
                .data(&mut self.h2, &self.node, stream_id, &data, end_stream),
        }
    }

    fn on_request(
        &mut self,
        stream_id: u32,
        headers: &HeaderList,
        body: Bytes,
        opened_at: Instant,
    ) {
        let mut started = Started {
            method: metrics::Method::Other,
            at: opened_at,
        };
        let call = match grpc::parse_call(headers) {
            Ok(call) => call,
            Err(Rejection::Http(code)) => return self.send_http_status(stream_id, code, started),
            Err(Rejection::Grpc(st)) => return self.send_status(stream_id, &st, started),
        };
        started.method = call.method.into();
        // The deadline runs from when the call's HEADERS arrived.
        let deadline = call.timeout.map(|t| grpc::answer_by(opened_at, t));
        if deadline.is_some_and(|d| d <= Instant::now()) {
            return self.send_status(stream_id, &deadline_exceeded(), started);
        }
        let payload = match grpc::unframe(body, self.max_message) {
            Ok(p) => p,
            Err(st) => return self.send_status(stream_id, &st, started),
        };
        match call.method {
            Method::Stats => return self.start_stats(stream_id, payload, deadline, started),
            Method::HealthCheck => return self.health_check(stream_id, payload, started),
            _ => {}
        }
        let req = match proto::Request::decode(payload) {
            Ok(r) => r,
            Err(e) => {
                let st = Status::new(
                    Code::InvalidArgument,
                    format!("malformed Request message: {e}"),
                );
                return self.send_status(stream_id, &st, started);
            }
        };
        if let Err(st) = self.validate(call.method, &req) {
            return self.send_status(stream_id, &st, started);
        }
        let op = match call.method {
            Method::Get => CacheOp::Get {
                group: req.group,
                key: req.key,
            },
            Method::Set => CacheOp::Set {
                group: req.group,
                key: req.key,
                value: req.value.into(),
                ttl_ms: req.ttl_ms,
            },
            _ => CacheOp::Delete {
                group: req.group,
                key: req.key,
            },
        };
        // Served here: a hit is framed straight from the store's bytes.
        let mut answered: Option<Reply> = None;
        let body = &mut self.body;
        let mailbox = &self.shared.mailbox;
        let waits = dispatch::dispatch(
            &self.shard,
            &self.peers,
            op,
            true,
            deadline,
            || ReplyTo::Conn(mailbox.clone(), stream_id),
            |local| match local {
                Local::Get(v) => {
                    body.clear();
                    grpc::frame_get_response(v, body);
                }
                Local::Set(r) => answered = Some(Reply::Set(r)),
                Local::Delete(d) => answered = Some(Reply::Delete(d)),
            },
        );
        if waits {
            self.pending.insert(
                stream_id,
                Pending {
                    deadline,
                    started,
                    stats: Vec::new(),
                },
            );
        } else {
            match answered {
                Some(reply) => self.answer(stream_id, reply, started),
                None => self.send_body(stream_id, started),
            }
        }
    }

    fn validate(&self, method: Method, req: &proto::Request) -> Result<(), Status> {
        if req.key.is_empty() {
            return Err(Status::new(
                Code::InvalidArgument,
                "key is empty: a key must be 1 to 4096 bytes",
            ));
        }
        if req.key.len() > MAX_KEY_BYTES {
            return Err(Status::new(
                Code::InvalidArgument,
                format!(
                    "key is {} bytes: the limit is {MAX_KEY_BYTES} bytes",
                    req.key.len()
                ),
            ));
        }
        let max_value = self.node.config.max_value;
        if method == Method::Set && req.value.len() as u64 > max_value {
            return Err(Status::new(
                Code::ResourceExhausted,
                format!(
                    "value is {} bytes: the limit is {max_value} bytes (--max-value)",
                    req.value.len()
                ),
            ));
        }
        Ok(())
    }

    fn start_stats(
        &mut self,
        stream_id: u32,
        payload: Bytes,
        deadline: Option<Instant>,
        started: Started,
    ) {
        if let Err(e) = proto::StatsRequest::decode(payload) {
            let st = Status::new(
                Code::InvalidArgument,
                format!("malformed StatsRequest message: {e}"),
            );
            return self.send_status(stream_id, &st, started);
        }
        let n = self.shard.shard_count();
        let mut stats = vec![None; n];
        stats[self.shard.id()] = Some(self.shard.counters());
        for other in (0..n).filter(|&i| i != self.shard.id()) {
            let to = ReplyTo::Conn(self.shared.mailbox.clone(), stream_id);
            self.shard.submit(other, Op::Stats, to);
        }
        let p = Pending {
            deadline,
            started,
            stats,
        };
        if n == 1 {
            self.finish_stats(stream_id, &p.stats, started);
        } else {
            self.pending.insert(stream_id, p);
        }
    }

    /// gRPC health: the node ("") and `cache.Cache` are SERVING until
    /// shutdown starts, NOT_SERVING while draining; other names NOT_FOUND.
    fn health_check(&mut self, stream_id: u32, payload: Bytes, started: Started) {
        use proto::health::{
            health_check_response::ServingStatus, HealthCheckRequest, HealthCheckResponse,
        };
        let req = match HealthCheckRequest::decode(payload) {
            Ok(r) => r,
            Err(e) => {
                let st = Status::new(
                    Code::InvalidArgument,
                    format!("malformed HealthCheckRequest message: {e}"),
                );
                return self.send_status(stream_id, &st, started);
            }
        };
        if !matches!(req.service.as_str(), "" | "cache.Cache") {
            let st = Status::new(Code::NotFound, format!("unknown service '{}'", req.service));
            return self.send_status(stream_id, &st, started);
        }
        let status = if self.node.shutting_down.load(Ordering::Relaxed) {
            ServingStatus::NotServing
        } else {
            ServingStatus::Serving
        };
        self.reply_message(
            stream_id,
            &HealthCheckResponse {
                status: status as i32,
            },
            started,
        );
    }

    fn on_reply(&mut self, stream_id: u32, reply: Reply) {
        let Some(p) = self.pending.get_mut(&stream_id) else {
            return; // answered already (deadline) or reset by the client
        };
        let started = p.started;
        match reply {
            Reply::Stats(shard, st) => {
                if let Some(slot) = p.stats.get_mut(shard) {
                    *slot = Some(st);
                }
                if p.stats.iter().all(Option::is_some) {
                    if let Some(p) = self.pending.remove(&stream_id) {
                        self.finish_stats(stream_id, &p.stats, started);
                    }
                }
            }
            other => {
                self.pending.remove(&stream_id);
                self.answer(stream_id, other, started);
            }
        }
    }

    /// Answers a key call (Get, Set, Delete) with its outcome.
    fn answer(&mut self, stream_id: u32, reply: Reply, started: Started) {
        match reply {
            Reply::Get(v) => {
                self.body.clear();
                grpc::frame_get_response(v.as_deref(), &mut self.body);
                self.send_body(stream_id, started);
            }
            Reply::Set(Ok(_)) => {
                self.reply_message(stream_id, &proto::SetResponse { stored: true }, started)
            }
            Reply::Set(Err(e)) => {
                self.send_status(stream_id, &dispatch::set_error_status(&e), started)
            }
            Reply::Delete(deleted) => {
                self.reply_message(stream_id, &proto::DeleteResponse { deleted }, started)
            }
            Reply::Failed(st) => self.send_status(stream_id, &st, started),
            Reply::Stats(..) | Reply::Metrics(..) => {
                let st = Status::new(
                    Code::Internal,
                    "a shard answered a key call with Stats or Metrics",
                );
                self.send_status(stream_id, &st, started);
            }
        }
    }

    fn finish_stats(&mut self, stream_id: u32, stats: &[Option<ShardCounters>], started: Started) {
        let shards: Vec<proto::ShardStats> = stats
            .iter()
            .map(|s| to_proto(&s.unwrap_or_default()))
            .collect();
        let mut total = proto::ShardStats::default();
        for s in &shards {
            add_stats(&mut total, s);
        }
        let resp = proto::StatsResponse {
            total: Some(total),
            shards,
            node_id: self.node.node_id.clone(),
        };
        self.reply_message(stream_id, &resp, started);
    }

    fn reply_message<M: Message>(&mut self, stream_id: u32, msg: &M, started: Started) {
        self.body.clear();
        grpc::frame_message(msg, &mut self.body);
        self.send_body(stream_id, started);
    }

    fn send_body(&mut self, stream_id: u32, started: Started) {
        self.h2.send_response(
            stream_id,
            grpc::RESPONSE_HEADERS,
            &self.body,
            grpc::OK_TRAILERS,
        );
        self.record(started, ReplyStatus::Grpc(Code::Ok));
    }

    fn send_status(&mut self, stream_id: u32, st: &Status, started: Started) {
        let fields = grpc::error_fields(st, &mut self.scratch);
        self.h2.send_trailers_only(stream_id, &fields);
        self.record(started, ReplyStatus::Grpc(st.code));
    }

    fn record(&self, started: Started, status: ReplyStatus) {
        self.shard
            .record_request(Interface::Grpc, started.method, status, started.at);
    }

    fn send_http_status(&mut self, stream_id: u32, code: u16, started: Started) {
        self.record(started, ReplyStatus::Http(code));
        let code = code.to_string();
        let fields = [HeaderField {
            name: b":status",
            value: code.as_bytes(),
            index: false,
        }];
        self.h2.send_trailers_only(stream_id, &fields);
    }
}

fn deadline_exceeded() -> Status {
    Status::new(
        Code::DeadlineExceeded,
        "deadline (grpc-timeout) exceeded before the call completed",
    )
}

fn to_proto(c: &ShardCounters) -> proto::ShardStats {
    let s = &c.store;
    proto::ShardStats {
        hits: s.hits,
        misses: s.misses,
        sets: s.sets,
        deletes: s.deletes,
        evictions: s.evictions,
        expirations: s.expirations,
        items: s.items,
        bytes: s.bytes,
        capacity_bytes: s.capacity_bytes,
        hot_hits: c.hot.hits,
        hot_items: c.hot.items,
        hot_bytes: c.hot.bytes,
        hot_capacity_bytes: c.hot.capacity_bytes,
        loads: c.loads,
        load_errors: c.load_errors,
        singleflight_joins: c.singleflight_joins,
        negative_hits: c.negative_hits,
        invalidations_sent: c.invalidations_sent,
        invalidations_received: c.invalidations_received,
    }
}

/// Adds every counter of `s` to `total`.
fn add_stats(total: &mut proto::ShardStats, s: &proto::ShardStats) {
    total.hits += s.hits;
    total.misses += s.misses;
    total.sets += s.sets;
    total.deletes += s.deletes;
    total.evictions += s.evictions;
    total.expirations += s.expirations;
    total.items += s.items;
    total.bytes += s.bytes;
    total.capacity_bytes += s.capacity_bytes;
    total.hot_hits += s.hot_hits;
    total.hot_items += s.hot_items;
    total.hot_bytes += s.hot_bytes;
    total.hot_capacity_bytes += s.hot_capacity_bytes;
    total.loads += s.loads;
    total.load_errors += s.load_errors;
    total.singleflight_joins += s.singleflight_joins;
    total.negative_hits += s.negative_hits;
    total.invalidations_sent += s.invalidations_sent;
    total.invalidations_received += s.invalidations_received;
}
