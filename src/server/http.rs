//! One HTTP/1.1 gateway connection: requests are decoded by
//! `protocol::http1`, routed by `gateway`, and served through
//! [`dispatch`] exactly like gRPC calls (on this shard, on the owner shard,
//! or on the owner node), answers from elsewhere arriving in the
//! connection's mailbox. Owns the ordering of a pipelined connection and
//! its life: keep-alive, idle timeout, graceful shutdown.
//!
//! Pipelining: responses must leave in request order, yet a request for a
//! local key is answered at once while one for another shard or node
//! waits. The connection keeps a queue of response slots in request
//! order; a response is written straight into the output when every
//! earlier one has gone, and otherwise parked in its slot until they have.
//! Everything that became ready in one turn of the loop leaves in one write.
//!
//! Shutdown: the first notice lets a request that is part-way in finish
//! (and answers everything waiting), the final one (a second later) stops
//! decoding; the last response says `Connection: close`. An idle
//! connection closes at the first notice.

use super::batch::{Batch, Parts, PART_TAG};
use super::dispatch::{self, Local};
use super::driver::{self, Session};
use super::lifecycle::{linger, ConnShared, OpenGuard, Registry, Room};
use super::peer_client::Peers;
use super::tls_session::TlsSession;
use super::NodeShared;
use crate::cluster::EtcdState;
use crate::gateway::{self, Outcome, Response, Route};
use crate::metrics::{self, Guard, Interface, NodeInfo, ReplyStatus, ShardSnapshot};
use crate::protocol::grpc::{self, Code};
use crate::protocol::http1::{self, Decoder, Limits, Request};
use crate::protocol::CacheOp;
use crate::runtime::Stream;
use crate::shard::{Mailbox, Op, Reply, ReplyTo, Shard};
use bytes::BytesMut;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

/// Responses one connection may owe at once; past this it stops reading
/// until the oldest is answered, so a client that pipelines without
/// reading cannot make us queue without bound (nor can it in bytes: it
/// also stops while what it owes fills `--conn-buffer`).
const MAX_PIPELINED: usize = 64;

/// Serves one connection accepted on the gateway address. `refuse` (over
/// --max-connections, which counts both interfaces) answers 503 and closes.
pub async fn serve(
    mut stream: Stream,
    shard: Rc<Shard>,
    peers: Rc<Peers>,
    node: Arc<NodeShared>,
    registry: Rc<Registry>,
    refuse: bool,
    _guard: OpenGuard,
) {
    let _ = stream.set_nodelay();
    // A client that stops reading cannot hold a writer longer than an
    // idle one holds the connection.
    let _ = stream.set_write_timeout(node.config.idle_timeout);
    shard.connection_opened(Interface::Http);
    let shared = Rc::new(ConnShared::default());
    let id = registry.add(shared.clone());
    let tls = node.tls.as_ref().map(|t| t.current());
    if refuse && tls.is_some() {
        // A TLS client could not read a plaintext 503: it is just closed.
        registry.count(Guard::ConnectionLimit);
    } else if refuse {
        registry.count(Guard::ConnectionLimit);
        let mut out = Vec::new();
        let msg = format!(
            "connection limit reached (--max-connections {})",
            node.config.max_connections
        );
        Response::new(503, msg).encode(&mut out, false, false);
        let _ = stream.write_all(&out).await;
    } else {
        let max_value = node.config.max_value;
        let node_header_timeout = node.config.header_timeout;
        let now = Instant::now();
        let mut c = HttpConn {
            decoder: Decoder::new(Limits {
                max_body: usize::try_from(max_value).unwrap_or(usize::MAX),
                // A batch's JSON may take the framing allowance a gRPC
                // message has.
                max_post_body: node.config.max_message(),
                ..Limits::default()
            }),
            max_value,
            shard: shard.clone(),
            peers,
            node,
            mailbox: shared.mailbox().clone(),
            queue: VecDeque::new(),
            parked: 0,
            out: Vec::new(),
            text: String::new(),
            replies: Vec::new(),
            next_tag: 0,
            parts: Parts::default(),
            room: Room::UNLIMITED,
            closing: false,
            eof: false,
            input_left: false,
            draining: 0,
            last_read: now,
            request_started: now,
            header_timeout: node_header_timeout,
        };
        match tls.map(|t| rustls::ServerConnection::new(t.http.clone())) {
            Some(Ok(conn)) => {
                let mut t = TlsSession::new(conn, c, now + node_header_timeout);
                let _ = driver::drive(
                    &mut stream,
                    &mut t,
                    &shared,
                    Some(&registry),
                    BytesMut::new(),
                )
                .await;
                if t.handshake_failed() {
                    registry.count(Guard::TlsHandshakeFailed);
                }
            }
            Some(Err(_)) => {}
            None => {
                let _ = driver::drive(
                    &mut stream,
                    &mut c,
                    &shared,
                    Some(&registry),
                    BytesMut::new(),
                )
                .await;
            }
        }
    }
    shared.mailbox().close();
    registry.remove(id);
    shard.connection_closed(Interface::Http);
    linger(&mut stream).await;
}

/// A response owed to the client, in request order.
enum Slot {
    /// Encoded; waits only for the responses before it.
    Ready(Vec<u8>),
    /// Waits for another shard or node.
    Waiting(Waiting),
}

struct Waiting {
    /// The mailbox tag its answer comes back with.
    tag: u32,
    head: bool,
    /// What the request asked for; the response may still close.
    keep_alive: bool,
    method: metrics::Method,
    started: Instant,
    /// A scrape: one snapshot per shard, filled as they answer.
    snapshots: Option<Vec<Option<ShardSnapshot>>>,
    /// A batch call: its items' results, filled as they answer.
    batch: Option<Box<Batch>>,
}

struct HttpConn {
    decoder: Decoder,
    max_value: u64,
    shard: Rc<Shard>,
    peers: Rc<Peers>,
    node: Arc<NodeShared>,
    mailbox: Rc<Mailbox>,
    queue: VecDeque<Slot>,
    /// Bytes of the `Ready` slots in `queue`.
    parked: usize,
    /// What this turn writes: every response whose turn has come.
    out: Vec<u8>,
    /// Reused for /metrics, and for the replies of one drain.
    text: String,
    replies: Vec<(u32, Reply)>,
    /// The tag of the next waiting request (31 bits: see batch::PART_TAG).
    next_tag: u32,
    /// Batch items waiting elsewhere, by part tag.
    parts: Parts,
    /// The budget of the current turn (batch items admit values by it).
    room: Room,
    /// No request is decoded any more: the last one asked to close, or
    /// could not be decoded.
    closing: bool,
    /// The client closed its side: answer what is queued, then close.
    eof: bool,
    /// Bytes of a request not yet decoded were left in the input.
    input_left: bool,
    /// Shutdown notices seen: 1 lets a part-way request finish, 2 stops.
    draining: u8,
    last_read: Instant,
    /// When the first byte of the request being received arrived.
    request_started: Instant,
    /// --header-timeout: a request head must be complete this long after
    /// its first byte, and a body may not go this long without a byte.
    header_timeout: std::time::Duration,
}

impl Session for HttpConn {
    fn on_input(&mut self, input: &mut BytesMut, room: Room, now: Instant) -> bool {
        self.room = room;
        if !self.partial() {
            self.request_started = now;
        }
        self.last_read = now;
        let stopped = self.decode_all(input, room);
        self.input_left = !input.is_empty();
        stopped
    }

    fn on_eof(&mut self) {
        self.eof = true;
    }

    fn on_wake(&mut self, room: Room, now: Instant) {
        self.room = room;
        let mut replies = std::mem::take(&mut self.replies);
        self.mailbox.drain_into(&mut replies);
        for (tag, reply) in replies.drain(..) {
            self.on_reply(tag, reply);
        }
        self.replies = replies;
        if self.next_deadline().is_some_and(|d| d <= now) && !self.closing {
            self.shard.record_guard(Guard::HeaderTimeout, 1);
            let what = if self.decoder.is_between_requests() {
                "request head not completed within --header-timeout"
            } else {
                "request body stalled for --header-timeout"
            };
            let r = Response::new(408, what);
            self.respond(metrics::Method::Other, self.request_started, |out, _| {
                r.encode(out, false, false);
                408
            });
            self.closing = true;
            self.eof = true;
        }
    }

    fn on_idle(&mut self) {
        if !self.queue.is_empty() {
            return;
        }
        if self.partial() {
            let r = Response::new(408, "request not completed within --idle-timeout");
            self.respond(metrics::Method::Other, self.request_started, |out, _| {
                r.encode(out, false, false);
                408
            });
        }
        self.closing = true;
        self.eof = true;
    }

    fn on_shutdown(&mut self) {
        self.draining = (self.draining + 1).min(2);
    }

    fn output(&self) -> &[u8] {
        &self.out
    }

    fn clear_output(&mut self) {
        self.out.clear();
    }

    fn held(&self) -> usize {
        self.out.len() + self.parked + self.batch_values()
    }

    fn wants_input(&self, room: Room) -> bool {
        !self.eof
            && !self.closing
            && self.draining < 2
            && self.queue.len() < MAX_PIPELINED
            && room.admits(self.held())
    }

    fn next_deadline(&self) -> Option<Instant> {
        if self.closing || self.eof || !self.partial() {
            None
        } else if self.decoder.is_between_requests() {
            Some(self.request_started + self.header_timeout)
        } else {
            Some(self.last_read + self.header_timeout)
        }
    }

    fn busy(&self) -> bool {
        !self.queue.is_empty()
    }

    fn is_done(&self) -> bool {
        self.finished()
    }
}

impl HttpConn {
    /// Value bytes held by waiting batch calls.
    fn batch_values(&self) -> usize {
        self.queue
            .iter()
            .map(|s| match s {
                Slot::Waiting(Waiting { batch: Some(b), .. }) => b.held(),
                _ => 0,
            })
            .sum()
    }

    /// A tag for a request that waits (31 bits, never a part tag).
    fn call_tag(&mut self) -> u32 {
        let tag = self.next_tag;
        self.next_tag = tag.wrapping_add(1) & !PART_TAG;
        tag
    }

    /// True when part of a request has arrived (head or body).
    fn partial(&self) -> bool {
        self.input_left || !self.decoder.is_between_requests()
    }

    /// Nothing is owed and nothing more will be read.
    fn finished(&self) -> bool {
        self.queue.is_empty()
            && (self.closing
                || self.eof
                || self.draining == 2
                || (self.draining == 1 && !self.partial()))
    }

    /// Whether a response that is the last one owed ends the connection:
    /// no further request is coming (client close, shutdown with nothing
    /// part-way in).
    fn last_one(&self) -> bool {
        self.closing
            || (self.eof && !self.input_left)
            || self.draining == 2
            || (self.draining == 1 && !self.partial())
    }

    /// Decodes and serves every complete request in `input`; true when it
    /// stopped early with requests perhaps left (it owes too many
    /// responses, or too many bytes for `room`).
    fn decode_all(&mut self, input: &mut BytesMut, room: Room) -> bool {
        // Requests that arrived before the client half-closed are served.
        while !self.closing && self.draining < 2 {
            if self.queue.len() >= MAX_PIPELINED || !room.admits(self.held()) {
                return true;
            }
            let decoded = self.decoder.decode(input);
            // What is left decides whether a response is the last one.
            self.input_left = !input.is_empty();
            match decoded {
                Ok(Some(req)) => {
                    let started = self.request_started;
                    // Bytes after it came with the last read at the latest.
                    self.request_started = self.last_read;
                    self.on_request(req, started);
                }
                Ok(None) => {
                    if self.decoder.take_expect_continue() {
                        // An interim response, in order after those owed.
                        self.emit(|out| out.extend_from_slice(http1::CONTINUE));
                    }
                    return false;
                }
                Err(e) => {
                    self.closing = true;
                    let started = self.request_started;
                    self.respond(metrics::Method::Other, started, |out, _| {
                        http1::encode_error(out, &e);
                        e.status
                    });
                    return false;
                }
            }
        }
        false
    }

    fn on_request(&mut self, req: Request, started: Instant) {
        let head = req.method == http1::Method::Head;
        if !req.keep_alive {
            self.closing = true; // nothing after this request is served
        }
        let keep_alive = req.keep_alive;
        let route = gateway::route(&req, self.max_value);
        let method = metric_method(&route, &req);
        match route {
            Err(r) => self.respond(method, started, |out, ka| {
                r.encode(out, head, keep_alive && ka);
                r.status
            }),
            Ok(Route::Healthz) => self.respond(method, started, |out, ka| {
                Response::new(200, "ok").encode(out, head, keep_alive && ka);
                200
            }),
            Ok(Route::Readyz) => {
                let r = match self.node.not_ready() {
                    None => Response::new(200, "ready"),
                    Some(why) => Response::new(503, format!("not ready: {why}")),
                };
                self.respond(method, started, |out, ka| {
                    r.encode(out, head, keep_alive && ka);
                    r.status
                })
            }
            Ok(Route::Metrics) => self.start_scrape(head, keep_alive, started),
            Ok(Route::Cache(c)) => self.cache(c, head, keep_alive, method, started),
            Ok(Route::Batch(m)) => self.batch(m, &req, method, started),
        }
    }

    /// A batch call: each item is dispatched like a single request; the
    /// JSON response goes out once every item is answered.
    fn batch(&mut self, m: grpc::Method, req: &Request, method: metrics::Method, started: Instant) {
        let keep_alive = req.keep_alive;
        let node = self.node.clone();
        let config = &node.config;
        let items = match gateway::batch::parse(m, &req.body, config.max_batch, config.max_value) {
            Ok(items) => items,
            Err(r) => {
                return self.respond(method, started, |out, ka| {
                    r.encode(out, false, keep_alive && ka);
                    r.status
                })
            }
        };
        let call = self.call_tag();
        let mut batch = Batch::new(m, items.len(), config.max_message());
        let items = items
            .into_iter()
            .map(|r| r.map_err(|e| gateway::batch::item_status(&e)));
        let budget = (self.room, self.held());
        let ends = (&self.shard, &self.peers);
        let (mailbox, parts) = (&self.mailbox, &mut self.parts);
        batch.serve(items, call, None, budget, ends, mailbox, parts);
        if batch.waiting() == 0 {
            return self.respond(method, started, |out, ka| {
                gateway::batch::respond(out, batch.results(), keep_alive && ka)
            });
        }
        self.queue.push_back(Slot::Waiting(Waiting {
            tag: call,
            head: false,
            keep_alive,
            method,
            started,
            snapshots: None,
            batch: Some(Box::new(batch)),
        }));
    }

    /// An answer to item `item` of the batch call tagged `call`.
    fn on_part(&mut self, call: u32, item: usize, reply: Reply) {
        let held = self.held();
        let room = self.room;
        let Some((i, w)) = self.waiting(call) else {
            return;
        };
        let Some(b) = &mut w.batch else {
            return;
        };
        let others = held - b.held();
        b.reply(item, reply, (room, others));
        if b.waiting() > 0 {
            return;
        }
        let Some(b) = w.batch.take() else {
            return;
        };
        self.complete(i, |out, ka| gateway::batch::respond(out, b.results(), ka));
    }

    /// The waiting slot answers tagged `tag` are for, and its place.
    fn waiting(&mut self, tag: u32) -> Option<(usize, &mut Waiting)> {
        self.queue
            .iter_mut()
            .enumerate()
            .find_map(|(i, s)| match s {
                Slot::Waiting(w) if w.tag == tag => Some((i, w)),
                _ => None,
            })
    }

    fn cache(
        &mut self,
        op: CacheOp,
        head: bool,
        keep_alive: bool,
        method: metrics::Method,
        started: Instant,
    ) {
        let tag = self.call_tag();
        // Served here: encoded at once, straight from the store's bytes.
        let ka = keep_alive && !(self.last_one());
        let direct = self.queue.is_empty();
        let mut parked = Vec::new();
        let buf = if direct { &mut self.out } else { &mut parked };
        let mut status = 0;
        let waits = dispatch::dispatch(
            &self.shard,
            &self.peers,
            op,
            true,
            None,
            || ReplyTo::Conn(self.mailbox.clone(), tag),
            |local| {
                let failed;
                let outcome = match local {
                    Local::Get(v) => Outcome::Value(v),
                    Local::Set(Ok(created)) => Outcome::Stored { created },
                    Local::Set(Err(e)) => {
                        failed = dispatch::set_error_status(&e);
                        Outcome::Failed {
                            code: failed.code,
                            message: &failed.message,
                        }
                    }
                    Local::Delete(d) => Outcome::Deleted(d),
                };
                status = gateway::respond(buf, head, outcome, ka);
            },
        );
        if waits {
            self.queue.push_back(Slot::Waiting(Waiting {
                tag,
                head,
                keep_alive,
                method,
                started,
                snapshots: None,
                batch: None,
            }));
            return;
        }
        if !direct {
            self.parked += parked.len();
            self.queue.push_back(Slot::Ready(parked));
        }
        self.answered(method, started, status, ka);
    }

    /// `/metrics`: this shard's snapshot now, the others' by message.
    fn start_scrape(&mut self, head: bool, keep_alive: bool, started: Instant) {
        let n = self.shard.shard_count();
        let me = self.shard.id();
        let mut snapshots: Vec<Option<ShardSnapshot>> = vec![None; n];
        if let Some(s) = snapshots.get_mut(me) {
            *s = Some(self.shard.snapshot());
        }
        let tag = self.call_tag();
        for other in (0..n).filter(|&i| i != me) {
            let to = ReplyTo::Conn(self.mailbox.clone(), tag);
            self.shard.submit(other, Op::Metrics, to);
        }
        self.queue.push_back(Slot::Waiting(Waiting {
            tag,
            head,
            keep_alive,
            method: metrics::Method::Metrics,
            started,
            snapshots: Some(snapshots),
            batch: None,
        }));
        if n == 1 {
            let i = self.queue.len() - 1;
            self.complete_scrape(i);
        }
    }

    fn on_reply(&mut self, tag: u32, reply: Reply) {
        if let Some((call, item)) = self.parts.take(tag) {
            return self.on_part(call, item, reply);
        }
        let Some((i, w)) = self.waiting(tag) else {
            return;
        };
        let head = w.head;
        match reply {
            Reply::Metrics(snap) => {
                let all = match &mut w.snapshots {
                    Some(slots) => {
                        if let Some(s) = slots.get_mut(snap.shard) {
                            *s = Some(*snap);
                        }
                        slots.iter().all(Option::is_some)
                    }
                    None => false,
                };
                if all {
                    self.complete_scrape(i);
                }
            }
            Reply::Get(v) => self.complete(i, |out, ka| {
                gateway::respond(out, head, Outcome::Value(v.as_deref()), ka)
            }),
            Reply::Set(Ok(created)) => self.complete(i, |out, ka| {
                gateway::respond(out, head, Outcome::Stored { created }, ka)
            }),
            Reply::Set(Err(e)) => {
                let st = dispatch::set_error_status(&e);
                self.complete(i, |out, ka| {
                    let outcome = Outcome::Failed {
                        code: st.code,
                        message: &st.message,
                    };
                    gateway::respond(out, head, outcome, ka)
                })
            }
            Reply::Delete(d) => self.complete(i, |out, ka| {
                gateway::respond(out, head, Outcome::Deleted(d), ka)
            }),
            Reply::Failed(st) => self.complete(i, |out, ka| {
                let outcome = Outcome::Failed {
                    code: st.code,
                    message: &st.message,
                };
                gateway::respond(out, head, outcome, ka)
            }),
            Reply::Stats(..) => self.complete(i, |out, ka| {
                let outcome = Outcome::Failed {
                    code: Code::Internal,
                    message: "a shard answered a key request with Stats",
                };
                gateway::respond(out, head, outcome, ka)
            }),
        }
    }

    fn complete_scrape(&mut self, i: usize) {
        let Some(Slot::Waiting(w)) = self.queue.get_mut(i) else {
            return;
        };
        let head = w.head;
        let snapshots: Vec<ShardSnapshot> =
            w.snapshots.take().into_iter().flatten().flatten().collect();
        let status = self.node.control.status();
        let info = NodeInfo {
            node_id: &self.node.node_id,
            ring_epoch: status.epoch,
            ring_members: status.members as u64,
            etcd_state: etcd_label(status.etcd),
            ready: self.node.not_ready().is_none(),
        };
        let mut text = std::mem::take(&mut self.text);
        text.clear();
        metrics::render(&mut text, &info, &snapshots);
        self.complete(i, |out, ka| {
            gateway::respond_metrics(out, head, text.as_bytes(), ka);
            200
        });
        self.text = text;
    }

    /// Encodes the answer of waiting slot `i` with `f` (given whether the
    /// connection stays open; returns the status), and sends it and every
    /// parked response after it if its turn has come.
    fn complete(&mut self, i: usize, f: impl FnOnce(&mut Vec<u8>, bool) -> u16) {
        let last = i + 1 == self.queue.len();
        let last_one = last && self.last_one();
        let Some(Slot::Waiting(w)) = self.queue.get(i) else {
            return;
        };
        let (method, started) = (w.method, w.started);
        let ka = w.keep_alive && !last_one;
        let status = if i == 0 {
            let status = f(&mut self.out, ka);
            self.queue.pop_front();
            while let Some(Slot::Ready(_)) = self.queue.front() {
                if let Some(Slot::Ready(bytes)) = self.queue.pop_front() {
                    self.parked -= bytes.len();
                    self.out.extend_from_slice(&bytes);
                }
            }
            status
        } else {
            let mut bytes = Vec::new();
            let status = f(&mut bytes, ka);
            if let Some(slot) = self.queue.get_mut(i) {
                self.parked += bytes.len();
                *slot = Slot::Ready(bytes);
            }
            status
        };
        self.answered(method, started, status, ka);
    }

    /// Appends a response that is ready now (`f` is given whether the
    /// connection stays open and returns the status), behind those owed.
    fn respond(
        &mut self,
        method: metrics::Method,
        started: Instant,
        f: impl FnOnce(&mut Vec<u8>, bool) -> u16,
    ) {
        let ka = !self.last_one();
        let status = if self.queue.is_empty() {
            f(&mut self.out, ka)
        } else {
            let mut bytes = Vec::new();
            let status = f(&mut bytes, ka);
            self.parked += bytes.len();
            self.queue.push_back(Slot::Ready(bytes));
            status
        };
        // f may have closed regardless (a request that asked to, an error).
        self.answered(method, started, status, ka && !self.closing);
    }

    /// Appends bytes that are no request's answer (100 Continue), in order.
    fn emit(&mut self, f: impl FnOnce(&mut Vec<u8>)) {
        if self.queue.is_empty() {
            f(&mut self.out);
        } else {
            let mut bytes = Vec::new();
            f(&mut bytes);
            self.parked += bytes.len();
            self.queue.push_back(Slot::Ready(bytes));
        }
    }

    /// Counts an answered request; a response that closed the connection
    /// ends decoding.
    fn answered(&mut self, method: metrics::Method, started: Instant, status: u16, kept: bool) {
        self.shard
            .record_request(Interface::Http, method, ReplyStatus::Http(status), started);
        if !kept {
            self.closing = true;
        }
    }
}

/// The `method` label of a request: what it asked, even when refused.
fn metric_method(route: &Result<Route, Response>, req: &Request) -> metrics::Method {
    match route {
        Ok(Route::Cache(op)) => match op {
            CacheOp::Get { .. } => metrics::Method::Get,
            CacheOp::Set { .. } => metrics::Method::Set,
            CacheOp::Delete { .. } => metrics::Method::Delete,
        },
        Ok(Route::Batch(m)) => (*m).into(),
        Ok(Route::Metrics) => metrics::Method::Metrics,
        Ok(Route::Healthz | Route::Readyz) => metrics::Method::Health,
        Err(_) if req.target.contains("/v1/") => match req.method {
            http1::Method::Get | http1::Method::Head => metrics::Method::Get,
            http1::Method::Put => metrics::Method::Set,
            http1::Method::Delete => metrics::Method::Delete,
            _ => metrics::Method::Other,
        },
        Err(_) => metrics::Method::Other,
    }
}

/// The `state` label of `shardcache_etcd_session_state`.
fn etcd_label(s: EtcdState) -> &'static str {
    match s {
        EtcdState::NotUsed => "not_used",
        EtcdState::Connecting => "connecting",
        EtcdState::Registered => "registered",
        EtcdState::Unreachable => "unreachable",
        EtcdState::Stopped => "stopped",
    }
}
