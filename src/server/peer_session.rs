//! The serving side of a peer connection: another node forwards requests
//! for keys this node owns. Each is served here whatever our ring says (a
//! request makes at most one hop between nodes), on this shard or, over
//! the mesh, on the shard that owns the key; replies go back in the peer
//! wire format (`protocol::peer`). A sans-IO session run by `driver`.
//!
//! With `--peer-secret-file` the session first sends a CHALLENGE and
//! serves nothing until the peer answers it (`protocol::peer_auth`) within
//! --header-timeout; a wrong, missing or late answer closes the connection
//! and is counted (`peer_auth_failed`).
//!
//! A peer connection obeys the same rules as a client's: the idle
//! timeout, the buffer budget (it stops decoding requests while its unsent
//! replies fill `--conn-buffer`, or while [`MAX_WAITING`] calls wait on
//! other shards), and the key, group and value rules of every front end.

use super::dispatch::{self, Local};
use super::driver::Session;
use super::grpc::invalid_status;
use super::lifecycle::Room;
use super::peer_client::Peers;
use super::NodeShared;
use crate::cluster::EtcdState;
use crate::metrics::Guard;
use crate::protocol::peer::{self, Inbound, PeerReply, PeerRequest};
use crate::protocol::peer_auth::{self, NONCE_LEN};
use crate::shard::{Mailbox, Op, Reply, ReplyTo, Shard};
use bytes::BytesMut;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Largest frame read before the peer has authenticated: an AUTH is 37.
const AUTH_FRAME_MAX: usize = 64;

/// Calls of one peer connection that may wait on other shards at once;
/// past this it stops decoding until answers come back.
pub const MAX_WAITING: usize = 32;

pub struct PeerSession {
    shard: Rc<Shard>,
    /// Whose etcd state a RING request reports.
    node: Arc<NodeShared>,
    peers: Rc<Peers>,
    mailbox: Rc<Mailbox>,
    max_frame: usize,
    max_value: u64,
    out: Vec<u8>,
    /// Answers from other shards not encoded yet for lack of room (on_wake).
    replies: Vec<(u32, Reply)>,
    /// Calls answered by mailbox that have not been answered yet.
    in_flight: usize,
    /// No more requests will be read: the peer closed, framing was lost,
    /// or the connection was idle.
    ended: bool,
    shutdown: bool,
    auth: Auth,
}

/// Where the peer handshake stands.
enum Auth {
    /// No secret configured: nothing to prove.
    Open,
    /// CHALLENGE sent with this nonce; the answer is due by the instant.
    Waiting {
        nonce: [u8; NONCE_LEN],
        by: Instant,
    },
    Passed,
}

impl PeerSession {
    pub fn new(
        shard: Rc<Shard>,
        peers: Rc<Peers>,
        node: Arc<NodeShared>,
        mailbox: Rc<Mailbox>,
    ) -> PeerSession {
        let mut out = Vec::new();
        let mut ended = false;
        let auth = match &node.peer_secret {
            None => Auth::Open,
            Some(_) => match peer_auth::challenge() {
                Some(nonce) => {
                    peer::encode_challenge(&mut out, &nonce);
                    Auth::Waiting {
                        nonce,
                        by: Instant::now() + node.config.header_timeout,
                    }
                }
                None => {
                    tracing::error!("no random bytes for a peer challenge: closing");
                    ended = true;
                    Auth::Open
                }
            },
        };
        PeerSession {
            shard,
            peers,
            mailbox,
            max_frame: node.config.max_message().saturating_add(64),
            max_value: node.config.max_value,
            node,
            out,
            replies: Vec::new(),
            in_flight: 0,
            ended,
            shutdown: false,
            auth,
        }
    }

    /// The connection did not prove it is a peer: it is closed unread.
    fn refuse(&mut self, input: &mut BytesMut, why: &str) {
        self.shard.record_guard(Guard::PeerAuthFailed, 1);
        // Counted, and logged at debug only: strangers must not be able to
        // flood the log. A misconfigured node logs its side at warn.
        tracing::debug!("closing a peer connection that did not authenticate: {why}");
        input.clear();
        self.ended = true;
    }

    /// While the handshake is due: takes the AUTH frame. True once the
    /// connection may be served.
    fn authenticate(&mut self, input: &mut BytesMut) -> bool {
        let (Auth::Waiting { nonce, .. }, Some(secret)) = (&self.auth, &self.node.peer_secret)
        else {
            return true;
        };
        // Before the answer, no frame larger than an AUTH is buffered for a
        // stranger.
        match peer::decode_request(input, AUTH_FRAME_MAX) {
            Ok(Some(Inbound::Auth { mac })) if secret.verify(nonce, &mac) => {
                self.auth = Auth::Passed;
                true
            }
            Ok(Some(Inbound::Auth { .. })) => {
                self.refuse(
                    input,
                    "wrong answer to the challenge (another --peer-secret-file?)",
                );
                false
            }
            Ok(Some(_)) => {
                self.refuse(input, "an operation before the answer to the challenge");
                false
            }
            Ok(None) => false,
            Err(e) => {
                self.refuse(input, &e.to_string());
                false
            }
        }
    }

    fn full(&self, room: Room) -> bool {
        !room.admits(self.held()) || self.in_flight >= MAX_WAITING
    }

    /// Serves one request; true when its answer will come by mailbox.
    fn handle(&mut self, req: PeerRequest) -> bool {
        let out = &mut self.out;
        if let Err(e) = req.op.validate(self.max_value) {
            peer::encode_reply(out, req.id, &PeerReply::Error(invalid_status(&e)));
            return false;
        }
        let id = req.id;
        let deadline = (req.timeout_ms > 0)
            .then(|| Instant::now() + Duration::from_millis(u64::from(req.timeout_ms)));
        let mailbox = &self.mailbox;
        dispatch::dispatch(
            &self.shard,
            &self.peers,
            req.op,
            false,
            deadline,
            || ReplyTo::Conn(mailbox.clone(), id),
            |answer| match answer {
                Local::Get(v) => peer::encode_get_reply(out, id, v),
                Local::Set(r) => encode(out, id, Reply::Set(r)),
                Local::Delete(d) => encode(out, id, Reply::Delete(d)),
            },
        )
    }
}

impl Session for PeerSession {
    fn on_input(&mut self, input: &mut BytesMut, room: Room, _now: Instant) -> bool {
        if !self.ended && !self.authenticate(input) {
            return false;
        }
        while !self.ended {
            if self.full(room) {
                return true;
            }
            match peer::decode_request(input, self.max_frame) {
                Ok(Some(Inbound::Call(req))) => {
                    self.in_flight += usize::from(self.handle(req));
                }
                Ok(Some(Inbound::Ring { id })) => {
                    let ring = self.shard.ring();
                    let registered = self.node.control.status().etcd == EtcdState::Registered;
                    peer::encode_ring_reply(
                        &mut self.out,
                        id,
                        ring.epoch(),
                        registered,
                        ring.members(),
                    );
                }
                Ok(Some(Inbound::Invalidate { group, key })) => {
                    let home = self.shard.home_of(group.as_bytes(), key.as_bytes());
                    if home == self.shard.id() {
                        self.shard.invalidate(&group, &key);
                    } else {
                        self.shard.notify_shard(home, Op::Invalidate { group, key });
                    }
                }
                Ok(Some(Inbound::Auth { .. })) => {
                    tracing::warn!("closing peer connection: AUTH without a challenge");
                    input.clear();
                    self.ended = true;
                }
                Ok(None) => return false,
                Err(e) => {
                    // Framing is lost: answer what is in flight, then close.
                    tracing::warn!("closing peer connection: {e}");
                    input.clear();
                    self.ended = true;
                }
            }
        }
        false
    }

    fn on_eof(&mut self) {
        self.ended = true;
    }

    /// Answers from other shards are encoded only while the output has
    /// room: a peer that asks for large values and reads nothing would
    /// otherwise turn each of its MAX_WAITING calls into a copy in `out`
    /// (80 such connections held 1.5 GB). The rest wait as they are, still
    /// counted by the shard's `InTransit` bound, until the output is written.
    fn on_wake(&mut self, room: Room, now: Instant) {
        if let Auth::Waiting { by, .. } = self.auth {
            if now >= by && !self.ended {
                self.refuse(&mut BytesMut::new(), "no answer to the challenge in time");
            }
        }
        self.mailbox.drain_into(&mut self.replies);
        let mut taken = 0;
        for (id, reply) in self.replies.iter_mut() {
            if !room.admits(self.out.len()) {
                break;
            }
            let reply = std::mem::replace(reply, Reply::Delete(false));
            self.in_flight = self.in_flight.saturating_sub(1);
            encode(&mut self.out, *id, reply);
            taken += 1;
        }
        self.replies.drain(..taken);
    }

    fn on_idle(&mut self) {
        self.ended = true;
    }

    fn on_shutdown(&mut self) {
        self.shutdown = true;
    }

    fn output(&self) -> &[u8] {
        &self.out
    }

    fn clear_output(&mut self) {
        self.out.clear();
    }

    fn held(&self) -> usize {
        self.out.len()
    }

    fn wants_input(&self, room: Room) -> bool {
        !self.ended && !self.full(room)
    }

    fn next_deadline(&self) -> Option<Instant> {
        match self.auth {
            Auth::Waiting { by, .. } if !self.ended => Some(by),
            _ => None,
        }
    }

    fn busy(&self) -> bool {
        self.in_flight > 0
    }

    fn backlog(&self) -> bool {
        !self.replies.is_empty()
    }

    fn is_done(&self) -> bool {
        self.in_flight == 0 && (self.ended || self.shutdown)
    }
}

fn encode(out: &mut Vec<u8>, id: u32, reply: Reply) {
    let r = match reply {
        Reply::Get(v) => return peer::encode_get_reply(out, id, v.as_deref()),
        Reply::Set(Ok(created)) => PeerReply::Set { created },
        Reply::Set(Err(e)) => PeerReply::Error(dispatch::set_error_status(&e)),
        Reply::Delete(d) => PeerReply::Delete(d),
        Reply::Failed(st) => PeerReply::Error(st),
        Reply::Stats(..) | Reply::Metrics(..) => {
            PeerReply::Error(crate::protocol::grpc::Status::new(
                crate::protocol::grpc::Code::Internal,
                "a shard answered a key request with Stats or Metrics",
            ))
        }
    };
    peer::encode_reply(out, id, &r);
}
