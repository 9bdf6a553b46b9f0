//! A gRPC client's connection (`accept` tells clients from peers): its
//! HTTP/2 + gRPC calls are this module's [`GrpcSession`]: bytes go through the HTTP/2
//! state machine, each complete request becomes a call executed on this
//! shard's store or handed to its owner (another shard, another node),
//! and the replies go back on their streams. The session is sans-IO; the
//! connection loop is `driver`.
//!
//! Each unary call is counted in the shard's metrics when its response is
//! queued (method, status, time since its HEADERS arrived); a call that
//! waits carries its method and start in [`Pending`]. A call's
//! `grpc-timeout` runs from its HEADERS: a request whose body is still
//! arriving when it passes is answered DEADLINE_EXCEEDED all the same.
//!
//! Budget: while the connection holds its `--conn-buffer` in unsent or
//! flow-controlled responses and unfinished bodies, or has [`MAX_WAITING`]
//! calls waiting on other shards and nodes, the HTTP/2 layer is paused:
//! complete requests are held back (bounded by MAX_CONCURRENT_STREAMS and
//! the body budget) and served once there is room. Frames are still read
//! meanwhile: WINDOW_UPDATEs are what drain a full connection.

use super::batch::{Batch, Parts, PART_TAG};
use super::dispatch::{self, Local};
use super::driver::Session;
use super::lifecycle::Room;
use super::peer_client::Peers;
use super::streaming::Streaming;
use super::NodeShared;
use crate::metrics::{self, Guard, Interface, ReplyStatus};
use crate::proto;
use crate::protocol::grpc::{self, Code, Method, Rejection, Status};
use crate::protocol::http2::{
    Connection, ConnectionError, ErrorCode, Event, HeaderField, HeaderList, ServerSettings,
};
use crate::protocol::{CacheOp, Invalid};
use crate::shard::{Mailbox, Op, Reply, ReplyTo, Shard, ShardCounters};
use bytes::{Bytes, BytesMut};
use prost::Message;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

/// Calls of one connection that may wait on other shards or nodes at once;
/// past this its new streams are refused until answers come back. Each
/// waiting call's answer may be a value up to --max-value on its way, so
/// this bounds what a connection can have in flight.
pub const MAX_WAITING: usize = 16;

/// Requests handled between two looks at the connection's budget: what
/// one batch's answers add is the most a connection overshoots it by.
const BATCH: usize = 4;

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
    waits: Waits,
}

/// What a waiting call waits for.
enum Waits {
    /// The answer of its one key.
    Key,
    /// Stats: one slot per shard, filled as answers arrive.
    Stats(Vec<Option<ShardCounters>>),
    /// A batch call's items that are served elsewhere; each answer comes
    /// back under a part tag (`GrpcSession::parts`).
    Batch(Box<Batch>),
}

/// A call whose request is still arriving but whose `grpc-timeout` already
/// runs (from its HEADERS).
struct Arriving {
    deadline: Instant,
    started: Started,
}

/// One HTTP/2 client connection's gRPC state.
pub struct GrpcSession {
    h2: Connection,
    shard: Rc<Shard>,
    peers: Rc<Peers>,
    node: Arc<NodeShared>,
    mailbox: Rc<Mailbox>,
    pending: hashbrown::HashMap<u32, Pending>,
    /// Batch items waiting elsewhere, by part tag (call tag: stream id).
    parts: Parts,
    /// The budget of the current turn (batch items admit values by it).
    room: Room,
    /// Calls with a deadline whose request body has not all arrived.
    arriving: hashbrown::HashMap<u32, Arriving>,
    /// Reused buffers: events of one `recv` (and, below, an encoded reply,
    /// a percent-encoded status message).
    events: Vec<Event>,
    /// Answers from other shards not taken yet for lack of room (on_wake).
    replies: Vec<(u32, Reply)>,
    body: Vec<u8>,
    scratch: Vec<u8>,
    max_message: usize,
    shutdown_asked: bool,
    /// Write what is queued, then close.
    closing: bool,
    /// Open streaming calls (health Watch, reflection): server/streaming.rs.
    streaming: Streaming,
}

impl Session for GrpcSession {
    fn on_input(&mut self, input: &mut BytesMut, room: Room, now: Instant) -> bool {
        self.room = room;
        loop {
            self.h2.set_paused(self.full(room));
            let mut events = std::mem::take(&mut self.events);
            let result = self.h2.recv_batch(input, now, &mut events, BATCH);
            let batch = events.len();
            self.on_events(&mut events, now);
            self.events = events;
            if let Err(e) = result {
                self.failed(&e);
                return false;
            }
            if batch < BATCH {
                // Every complete frame is consumed. HTTP/2 never stops
                // reading: over budget it holds requests back instead.
                return false;
            }
        }
    }

    fn on_eof(&mut self) {
        self.closing = true;
    }

    fn on_wake(&mut self, room: Room, now: Instant) {
        // Answers are taken only while the connection has room: the rest
        // wait as they are (large values stay counted by the shard's
        // InTransit bound) until the client reads, instead of all becoming
        // response bytes at once for a client that reads nothing.
        // Answers to batch items are always taken: their batch bounds what
        // they add, and holding them back could stall the batch forever.
        self.room = room;
        let mut replies = std::mem::take(&mut self.replies);
        self.mailbox.drain_into(&mut replies);
        replies.retain_mut(|(tag, reply)| {
            if *tag & PART_TAG == 0 && !room.admits(self.held()) {
                return true;
            }
            let reply = std::mem::replace(reply, Reply::Delete(false));
            self.on_reply(*tag, reply);
            false
        });
        self.replies = replies;
        // Topology watchers hear of a new ring (housekeeping wakes every
        // connection when one arrives).
        if self.streaming.watches_topology() {
            let ring = self.shard.ring();
            self.streaming
                .ring_changed(&mut self.h2, (&*self.node, &*ring));
        }
        if self.next_deadline().is_some_and(|d| d <= now) {
            self.expire_deadlines(now);
            if let Err(e) = self.h2.expire(now) {
                self.shard.record_guard(Guard::HeaderTimeout, 1);
                self.failed(&e);
                return;
            }
        }
        // Requests held back while the connection was full.
        loop {
            let full = self.full(room);
            self.h2.set_paused(full);
            if full {
                return;
            }
            let mut events = std::mem::take(&mut self.events);
            self.h2.resume(&mut events, BATCH);
            let batch = events.len();
            self.on_events(&mut events, now);
            self.events = events;
            if batch < BATCH {
                return;
            }
        }
    }

    fn on_idle(&mut self) {
        self.h2.go_away(ErrorCode::NoError, b"idle timeout");
        self.closing = true;
    }

    fn on_shutdown(&mut self) {
        // First request: two-phase GOAWAY, refusing nothing the client
        // already sent. A repeated request (the client never acknowledged)
        // sends the final GOAWAY at once. Accepted streams are served until
        // `is_closed`.
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
    }

    fn output(&self) -> &[u8] {
        self.h2.pending_output()
    }

    fn clear_output(&mut self) {
        self.h2.output_written();
    }

    fn held(&self) -> usize {
        self.h2.pending_output().len()
            + self.h2.queued_total()
            + self.h2.buffered_bodies()
            + self.batch_values()
    }

    fn wants_input(&self, _room: Room) -> bool {
        !self.closing
    }

    fn next_deadline(&self) -> Option<Instant> {
        let waiting = self.pending.values().filter_map(|p| p.deadline);
        let arriving = self.arriving.values().map(|a| a.deadline);
        waiting.chain(arriving).chain(self.h2.deadline()).min()
    }

    fn busy(&self) -> bool {
        !self.pending.is_empty() || !self.streaming.is_empty() || self.h2.has_held()
    }

    fn backlog(&self) -> bool {
        self.h2.has_held() || !self.replies.is_empty()
    }

    fn is_done(&self) -> bool {
        self.closing || self.h2.is_closed()
    }
}

impl GrpcSession {
    /// Whether the connection must hold requests back: its buffers are at
    /// their budget, or enough of its calls wait elsewhere.
    fn full(&self, room: Room) -> bool {
        self.pending.len() >= MAX_WAITING || !room.admits(self.held())
    }

    /// Value bytes held by waiting batch calls.
    fn batch_values(&self) -> usize {
        self.pending
            .values()
            .map(|p| match &p.waits {
                Waits::Batch(b) => b.held(),
                _ => 0,
            })
            .sum()
    }

    /// The HTTP/2 layer ended the connection (GOAWAY is queued).
    fn failed(&mut self, e: &ConnectionError) {
        tracing::debug!(code = ?e.code, reason = %e.reason, "closing connection after protocol error");
        if let Some(kind) = e.flood {
            self.shard.record_guard(Guard::flood(kind), 1);
        }
        self.closing = true;
    }

    fn on_events(&mut self, events: &mut Vec<Event>, now: Instant) {
        for ev in events.drain(..) {
            self.on_event(ev, now);
        }
    }

    pub fn new(
        shard: Rc<Shard>,
        peers: Rc<Peers>,
        node: Arc<NodeShared>,
        mailbox: Rc<Mailbox>,
        settings: ServerSettings,
    ) -> GrpcSession {
        let max_message = node.config.max_message();
        GrpcSession {
            h2: Connection::new(settings),
            max_message,
            shard,
            peers,
            node,
            mailbox,
            pending: hashbrown::HashMap::new(),
            parts: Parts::default(),
            room: Room::UNLIMITED,
            arriving: hashbrown::HashMap::new(),
            events: Vec::new(),
            replies: Vec::new(),
            body: Vec::new(),
            scratch: Vec::new(),
            shutdown_asked: false,
            closing: false,
            streaming: Streaming::new(max_message),
        }
    }

    /// Queues GOAWAY with `code` and a reason: the connection ends.
    pub fn go_away(&mut self, code: ErrorCode, reason: &[u8]) {
        self.h2.go_away(code, reason);
    }

    fn expire_deadlines(&mut self, now: Instant) {
        let expired: Vec<(u32, Started)> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline.is_some_and(|d| d <= now))
            .map(|(&id, p)| (id, p.started))
            .collect();
        for (id, started) in expired {
            self.forget(id);
            self.send_status(id, &deadline_exceeded(), started);
        }
        let expired: Vec<(u32, Started)> = self
            .arriving
            .iter()
            .filter(|(_, a)| a.deadline <= now)
            .map(|(&id, a)| (id, a.started))
            .collect();
        for (id, started) in expired {
            self.arriving.remove(&id);
            self.shard.record_guard(Guard::IncompleteDeadline, 1);
            // The request never completed: the stream is answered and
            // reset (NO_ERROR), and what still arrives for it is dropped.
            self.send_status(id, &deadline_exceeded(), started);
        }
    }

    /// HEADERS of a unary call arrived without the whole body: its
    /// deadline starts now, whatever its body does.
    fn on_started(&mut self, stream_id: u32, opened_at: Instant) {
        let Some(headers) = self.h2.request_headers(stream_id) else {
            return;
        };
        // A malformed call is refused when it completes; only a valid
        // timeout starts a clock here.
        let Ok(call) = grpc::parse_call(headers) else {
            return;
        };
        if let Some(t) = call.timeout {
            self.arriving.insert(
                stream_id,
                Arriving {
                    deadline: grpc::answer_by(opened_at, t),
                    started: Started {
                        method: call.method.into(),
                        at: opened_at,
                    },
                },
            );
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
            } => {
                self.arriving.remove(&stream_id);
                self.on_request(stream_id, &headers, body, opened_at)
            }
            Event::RequestStarted {
                stream_id,
                opened_at,
            } => self.on_started(stream_id, opened_at),
            Event::Refused { .. } => self.shard.record_guard(Guard::Backpressure, 1),
            Event::HeadersTooLarge { .. } => self.shard.record_guard(Guard::OversizedHeaders, 1),
            Event::RequestTooLarge { stream_id, headers } => {
                self.arriving.remove(&stream_id);
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
                self.forget(stream_id);
                self.arriving.remove(&stream_id);
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
            } => {
                let ring = self.shard.ring();
                let node = (&*self.node, &*ring);
                self.streaming
                    .data(&mut self.h2, node, stream_id, &data, end_stream)
            }
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
            Method::Topology => return self.topology(stream_id, payload, started),
            Method::GetMany | Method::SetMany | Method::DeleteMany => {
                return self.start_batch(stream_id, call.method, payload, deadline, started)
            }
            Method::Get | Method::Set | Method::Delete => {}
        }
        let req: proto::Request = match decode(payload, "Request") {
            Ok(r) => r,
            Err(st) => return self.send_status(stream_id, &st, started),
        };
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
        if let Err(e) = op.validate(self.node.config.max_value) {
            return self.send_status(stream_id, &invalid_status(&e), started);
        }
        // Served here: a hit is framed straight from the store's bytes.
        let mut answered: Option<Reply> = None;
        let body = &mut self.body;
        let mailbox = &self.mailbox;
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
                    waits: Waits::Key,
                },
            );
        } else {
            match answered {
                Some(reply) => self.answer(stream_id, reply, started),
                None => self.send_body(stream_id, started),
            }
        }
    }

    fn start_stats(
        &mut self,
        stream_id: u32,
        payload: Bytes,
        deadline: Option<Instant>,
        started: Started,
    ) {
        if let Err(st) = decode::<proto::StatsRequest>(payload, "StatsRequest") {
            return self.send_status(stream_id, &st, started);
        }
        let n = self.shard.shard_count();
        let mut stats = vec![None; n];
        stats[self.shard.id()] = Some(self.shard.counters());
        for other in (0..n).filter(|&i| i != self.shard.id()) {
            let to = ReplyTo::Conn(self.mailbox.clone(), stream_id);
            self.shard.submit(other, Op::Stats, to);
        }
        if n == 1 {
            self.finish_stats(stream_id, &stats, started);
        } else {
            let waits = Waits::Stats(stats);
            let p = Pending {
                deadline,
                started,
                waits,
            };
            self.pending.insert(stream_id, p);
        }
    }

    /// A batch call: each item is dispatched like a single call; the
    /// response goes out once every item is answered (at once when all
    /// were served here).
    fn start_batch(
        &mut self,
        stream_id: u32,
        method: Method,
        payload: Bytes,
        deadline: Option<Instant>,
        started: Started,
    ) {
        let config = &self.node.config;
        let items =
            match grpc::batch::decode_many(method, payload, config.max_batch, config.max_value) {
                Ok(items) => items,
                Err(st) => return self.send_status(stream_id, &st, started),
            };
        let mut batch = Batch::new(method, items.len(), self.max_message);
        let items = items.into_iter().map(|r| r.map_err(|e| invalid_status(&e)));
        let budget = (self.room, self.held());
        let ends = (&self.shard, &self.peers);
        let (mailbox, parts) = (&self.mailbox, &mut self.parts);
        batch.serve(items, stream_id, deadline, budget, ends, mailbox, parts);
        if batch.waiting() == 0 {
            self.finish_batch(stream_id, &batch, started);
        } else {
            let waits = Waits::Batch(Box::new(batch));
            let p = Pending {
                deadline,
                started,
                waits,
            };
            self.pending.insert(stream_id, p);
        }
    }

    fn finish_batch(&mut self, stream_id: u32, batch: &Batch, started: Started) {
        self.body.clear();
        batch.encode(&mut self.body);
        self.send_body(stream_id, started);
    }

    /// The call on `stream_id` no longer waits (answered by its deadline,
    /// or reset): forget it, and the batch items it still waited for.
    fn forget(&mut self, stream_id: u32) {
        if let Some(p) = self.pending.remove(&stream_id) {
            if let Waits::Batch(_) = p.waits {
                self.parts.forget(stream_id);
            }
        }
    }

    /// Where keys live: the ring this shard routes by, and this node's
    /// shards and shard ports.
    fn topology(&mut self, stream_id: u32, payload: Bytes, started: Started) {
        if let Err(st) = decode::<proto::TopologyRequest>(payload, "TopologyRequest") {
            return self.send_status(stream_id, &st, started);
        }
        let resp = topology(&self.shard.ring(), &self.node);
        self.reply_message(stream_id, &resp, started);
    }

    /// gRPC health: the node ("") and `cache.Cache` are SERVING until
    /// shutdown starts, NOT_SERVING while draining; other names NOT_FOUND.
    fn health_check(&mut self, stream_id: u32, payload: Bytes, started: Started) {
        use proto::health::{
            health_check_response::ServingStatus, HealthCheckRequest, HealthCheckResponse,
        };
        let req: HealthCheckRequest = match decode(payload, "HealthCheckRequest") {
            Ok(r) => r,
            Err(st) => return self.send_status(stream_id, &st, started),
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

    fn on_reply(&mut self, tag: u32, reply: Reply) {
        let (stream_id, item) = match self.parts.take(tag) {
            Some((stream_id, i)) => (stream_id, Some(i)),
            None if tag & PART_TAG != 0 => return, // its call is answered or reset
            None => (tag, None),
        };
        let others = match item {
            Some(_) => self.held(),
            None => 0,
        };
        let room = self.room;
        let Some(p) = self.pending.get_mut(&stream_id) else {
            return; // answered already (deadline) or reset by the client
        };
        let started = p.started;
        let done = match (&mut p.waits, reply) {
            (Waits::Stats(stats), Reply::Stats(shard, st)) => {
                if let Some(slot) = stats.get_mut(shard) {
                    *slot = Some(st);
                }
                stats.iter().all(Option::is_some)
            }
            (Waits::Batch(batch), reply) => {
                if let Some(i) = item {
                    let others = others - batch.held();
                    batch.reply(i, reply, (room, others));
                }
                batch.waiting() == 0
            }
            (_, reply) => {
                self.pending.remove(&stream_id);
                return self.answer(stream_id, reply, started);
            }
        };
        if !done {
            return;
        }
        match self.pending.remove(&stream_id).map(|p| p.waits) {
            Some(Waits::Stats(stats)) => self.finish_stats(stream_id, &stats, started),
            Some(Waits::Batch(batch)) => self.finish_batch(stream_id, &batch, started),
            _ => {}
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

/// The gRPC status of a request the shared rules refuse.
pub(super) fn invalid_status(e: &Invalid) -> Status {
    let code = match e {
        Invalid::Name(_) => Code::InvalidArgument,
        Invalid::ValueTooLarge { .. } => Code::ResourceExhausted,
    };
    Status::new(code, e.to_string())
}

/// Where keys live (the Topology call and its watch): the ring `ring`
/// and this node's shards and shard ports.
pub(super) fn topology(ring: &crate::cluster::Ring, node: &NodeShared) -> proto::TopologyResponse {
    let config = &node.config;
    proto::TopologyResponse {
        epoch: ring.epoch(),
        vnodes: config.vnodes,
        members: ring
            .members()
            .iter()
            .map(|m| proto::TopologyMember {
                node_id: m.node_id.clone(),
                addr: m.addr.to_string(),
                shards: m.shards,
            })
            .collect(),
        layout: shardcache_routing::LAYOUT.to_string(),
        node_id: node.node_id.clone(),
        addr: node.advertise.to_string(),
        shards: config.shards as u32,
        shard_port_base: config.shard_ports.map_or(0, u32::from),
    }
}

/// A request message, or INVALID_ARGUMENT naming its type.
fn decode<M: Message + Default>(payload: Bytes, name: &str) -> Result<M, Status> {
    M::decode(payload).map_err(|e| {
        Status::new(
            Code::InvalidArgument,
            format!("malformed {name} message: {e}"),
        )
    })
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
