//! The streaming gRPC calls of one connection: `grpc.health.v1.Health/Watch`
//! (one request, then a status message whenever it changes),
//! `cache.Cache/WatchTopology` (one request, then the topology whenever the
//! ring changes) and server reflection's `ServerReflectionInfo` (v1 and
//! v1alpha; one response per request on a bidirectional stream). Owns their per-connection state and
//! is driven by the connection loop through a few hooks: the stream events
//! of the HTTP/2 layer, a client reset, and the start of shutdown, which
//! ends every open call with UNAVAILABLE so that a GOAWAY'd connection can
//! close. Kept apart from the unary dispatch in `connection.rs`.

use super::grpc::topology;
use super::NodeShared;
use crate::cluster::Ring;
use crate::proto::health::{
    health_check_response::ServingStatus, HealthCheckRequest, HealthCheckResponse,
};
use crate::proto::TopologyRequest;
use crate::protocol::grpc::{self, reflection, Code, Deframer, Rejection, Status, StreamingMethod};
use crate::protocol::http2::{Connection, HeaderField, HeaderList};
use prost::Message;
use std::sync::atomic::Ordering;

/// Unread response bytes a reflection call may pile up (a client that
/// sends requests but never reads): past this it ends RESOURCE_EXHAUSTED
/// rather than growing the queue without bound.
const MAX_QUEUED: usize = 1 << 20;

/// The open streaming calls of one connection.
pub struct Streaming {
    calls: hashbrown::HashMap<u32, Call>,
    max_message: usize,
    /// This connection's shutdown has begun: new calls end at once.
    closing: bool,
    /// Reused buffers: an encoded message, a percent-encoded status message.
    body: Vec<u8>,
    scratch: Vec<u8>,
}

struct Call {
    method: StreamingMethod,
    deframer: Deframer,
    headers_sent: bool,
    /// Watch only: the status last sent, once the request has arrived.
    watched: Option<ServingStatus>,
    /// WatchTopology only: the ring epoch last sent, once the request has
    /// arrived.
    epoch: Option<u64>,
}

impl Streaming {
    /// `max_message` bounds each request message (the node's limit).
    pub fn new(max_message: usize) -> Streaming {
        Streaming {
            calls: hashbrown::HashMap::new(),
            max_message,
            closing: false,
            body: Vec::new(),
            scratch: Vec::new(),
        }
    }

    /// `Event::StreamOpened`: checks the call's headers and starts it.
    pub fn opened(&mut self, h2: &mut Connection, stream_id: u32, headers: &HeaderList) {
        // grpc-timeout is parsed (a malformed one is refused) but not
        // enforced here: clients end streaming calls at their deadline
        // themselves (RST_STREAM CANCEL).
        let method = match grpc::parse_call_with(headers, StreamingMethod::from_path) {
            Ok((method, _timeout)) => method,
            Err(Rejection::Http(code)) => {
                let code = code.to_string();
                let fields = [HeaderField {
                    name: b":status",
                    value: code.as_bytes(),
                    index: false,
                }];
                return h2.send_trailers_only(stream_id, &fields);
            }
            Err(Rejection::Grpc(st)) => {
                let fields = grpc::error_fields(&st, &mut self.scratch);
                return h2.send_trailers_only(stream_id, &fields);
            }
        };
        self.calls.insert(
            stream_id,
            Call {
                method,
                deframer: Deframer::new(self.max_message),
                headers_sent: false,
                watched: None,
                epoch: None,
            },
        );
        if self.closing {
            self.end(h2, stream_id, &shutting_down());
        }
    }

    /// `Event::StreamData`: request bytes of an open call, answered as
    /// each message completes.
    /// `node`: the node, and the ring this shard routes by.
    pub fn data(
        &mut self,
        h2: &mut Connection,
        node: (&NodeShared, &Ring),
        stream_id: u32,
        data: &[u8],
        end_stream: bool,
    ) {
        let Some(call) = self.calls.get_mut(&stream_id) else {
            return; // ended by us already
        };
        call.deframer.push(data);
        loop {
            let Some(call) = self.calls.get_mut(&stream_id) else {
                return; // a message ended the call
            };
            match call.deframer.next_message() {
                Ok(Some(msg)) => self.on_message(h2, node, stream_id, &msg),
                Ok(None) => break,
                Err(st) => return self.end(h2, stream_id, &st),
            }
        }
        if !end_stream {
            return;
        }
        let Some(call) = self.calls.get(&stream_id) else {
            return;
        };
        if !call.deframer.is_empty() {
            let st = Status::new(
                Code::InvalidArgument,
                "the client half-closed the stream inside a message",
            );
            return self.end(h2, stream_id, &st);
        }
        match call.method {
            // Done asking: every answer is queued, the trailers follow them.
            StreamingMethod::ReflectionV1 | StreamingMethod::ReflectionV1Alpha => {
                self.end(h2, stream_id, &Status::new(Code::Ok, ""))
            }
            // A watcher half-closes after its request and keeps listening.
            StreamingMethod::HealthWatch | StreamingMethod::WatchTopology
                if call.watched.is_some() || call.epoch.is_some() => {}
            StreamingMethod::HealthWatch | StreamingMethod::WatchTopology => {
                let (name, request) = match call.method {
                    StreamingMethod::HealthWatch => ("Watch", "HealthCheckRequest"),
                    _ => ("WatchTopology", "TopologyRequest"),
                };
                let st = Status::new(
                    Code::InvalidArgument,
                    format!("{name} takes one {request} message; the stream ended without one"),
                );
                self.end(h2, stream_id, &st)
            }
        }
    }

    /// Whether a WatchTopology call is open.
    pub fn watches_topology(&self) -> bool {
        self.calls.values().any(|c| c.epoch.is_some())
    }

    /// Sends the topology to every watcher that has not seen this ring.
    pub fn ring_changed(&mut self, h2: &mut Connection, (node, ring): (&NodeShared, &Ring)) {
        let stale: Vec<u32> = self
            .calls
            .iter()
            .filter(|(_, c)| c.epoch.is_some_and(|e| e != ring.epoch()))
            .map(|(&id, _)| id)
            .collect();
        for id in stale {
            self.send_topology(h2, id, (node, ring));
        }
    }

    /// Sends a WatchTopology message and remembers its epoch.
    fn send_topology(
        &mut self,
        h2: &mut Connection,
        stream_id: u32,
        (node, ring): (&NodeShared, &Ring),
    ) {
        if let Some(call) = self.calls.get_mut(&stream_id) {
            call.epoch = Some(ring.epoch());
        }
        self.send_message(h2, stream_id, &topology(ring, node));
    }

    /// No streaming call is open.
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// `Event::Reset`: the client cancelled (or we reset) the stream.
    pub fn reset(&mut self, stream_id: u32) {
        self.calls.remove(&stream_id);
    }

    /// The connection starts shutting down: watchers of a served service
    /// see NOT_SERVING, then every call ends with UNAVAILABLE (after what
    /// is queued), so the connection can close once they are out.
    pub fn shut_down(&mut self, h2: &mut Connection) {
        self.closing = true;
        let ids: Vec<u32> = self.calls.keys().copied().collect();
        for id in ids {
            if self.calls.get(&id).and_then(|c| c.watched) == Some(ServingStatus::Serving) {
                self.send_status(h2, id, ServingStatus::NotServing);
            }
            self.end(h2, id, &shutting_down());
        }
    }

    fn on_message(
        &mut self,
        h2: &mut Connection,
        (node, ring): (&NodeShared, &Ring),
        stream_id: u32,
        msg: &[u8],
    ) {
        let Some(call) = self.calls.get(&stream_id) else {
            return;
        };
        match call.method {
            StreamingMethod::WatchTopology => {
                let seen = call.epoch.is_some();
                match only_request::<TopologyRequest>(msg, seen, "WatchTopology", "TopologyRequest")
                {
                    Ok(_) => self.send_topology(h2, stream_id, (node, ring)),
                    Err(st) => self.end(h2, stream_id, &st),
                }
            }
            StreamingMethod::ReflectionV1 | StreamingMethod::ReflectionV1Alpha => {
                if h2.queued_bytes(stream_id) > MAX_QUEUED {
                    let st = Status::new(
                        Code::ResourceExhausted,
                        format!(
                            "more than {MAX_QUEUED} bytes of reflection responses are unread; \
                             read responses before sending more requests"
                        ),
                    );
                    return self.end(h2, stream_id, &st);
                }
                // v1 and v1alpha messages are the same bytes: one handler.
                match reflection::respond(msg) {
                    Ok(resp) => self.send_message(h2, stream_id, &resp),
                    Err(st) => self.end(h2, stream_id, &st),
                }
            }
            StreamingMethod::HealthWatch => {
                let seen = call.watched.is_some();
                match only_request::<HealthCheckRequest>(msg, seen, "Watch", "HealthCheckRequest") {
                    Ok(req) => {
                        let status = serving_status(&req.service, node);
                        self.send_status(h2, stream_id, status);
                    }
                    Err(st) => self.end(h2, stream_id, &st),
                }
            }
        }
    }

    /// Sends a Watch status message and remembers it.
    fn send_status(&mut self, h2: &mut Connection, stream_id: u32, status: ServingStatus) {
        if let Some(call) = self.calls.get_mut(&stream_id) {
            call.watched = Some(status);
        }
        let msg = HealthCheckResponse {
            status: status as i32,
        };
        self.send_message(h2, stream_id, &msg);
    }

    /// One response message (response headers first, the first time).
    fn send_message<M: Message>(&mut self, h2: &mut Connection, stream_id: u32, msg: &M) {
        let Some(call) = self.calls.get_mut(&stream_id) else {
            return;
        };
        if !call.headers_sent {
            call.headers_sent = true;
            h2.send_headers(stream_id, grpc::RESPONSE_HEADERS);
        }
        self.body.clear();
        grpc::frame_message(msg, &mut self.body);
        h2.send_data(stream_id, &self.body);
    }

    /// Ends a call with `status`: trailers after the queued messages, or a
    /// trailers-only response when nothing was sent.
    fn end(&mut self, h2: &mut Connection, stream_id: u32, status: &Status) {
        let Some(call) = self.calls.remove(&stream_id) else {
            return;
        };
        let fields = grpc::error_fields(status, &mut self.scratch);
        if !call.headers_sent {
            h2.send_trailers_only(stream_id, &fields);
        } else if status.code == Code::Ok {
            h2.send_trailers(stream_id, grpc::OK_TRAILERS);
        } else {
            // After response headers, trailers carry only the status.
            h2.send_trailers(stream_id, &fields[3..]);
        }
    }
}

/// The health of `service` as Check reports it: the node ("") and
/// cache.Cache serve until shutdown begins; other names are unknown (Watch
/// says SERVICE_UNKNOWN and keeps the stream open, as the protocol asks).
fn serving_status(service: &str, node: &NodeShared) -> ServingStatus {
    match service {
        "" | "cache.Cache" if node.shutting_down.load(Ordering::Relaxed) => {
            ServingStatus::NotServing
        }
        "" | "cache.Cache" => ServingStatus::Serving,
        _ => ServingStatus::ServiceUnknown,
    }
}

/// The one request message of a watch (`seen`: one came already).
fn only_request<M: Message + Default>(
    msg: &[u8],
    seen: bool,
    call: &str,
    name: &str,
) -> Result<M, Status> {
    if seen {
        return Err(Status::new(
            Code::InvalidArgument,
            format!("{call} takes exactly one {name} message"),
        ));
    }
    M::decode(msg).map_err(|e| {
        Status::new(
            Code::InvalidArgument,
            format!("malformed {name} message: {e}"),
        )
    })
}

fn shutting_down() -> Status {
    Status::new(Code::Unavailable, "server shutting down")
}
