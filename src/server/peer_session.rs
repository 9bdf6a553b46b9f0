//! The serving side of a peer connection: another node forwards requests
//! for keys this node owns. Each is served here whatever our ring says (a
//! request makes at most one hop between nodes), on this shard or, over
//! the mesh, on the shard that owns the key; replies go back in the peer
//! wire format (`protocol::peer`), all those of one turn in one write.

use super::connection::ConnShared;
use super::dispatch::{self, Local};
use super::peer_client::Peers;
use crate::config::MAX_KEY_BYTES;
use crate::protocol::grpc::{Code, Status};
use crate::protocol::peer::{self, Inbound, PeerReply, PeerRequest};
use crate::runtime::Stream;
use crate::shard::{Op, Reply, ReplyTo, Shard};
use bytes::BytesMut;
use futures_lite::future;
use std::rc::Rc;
use std::time::{Duration, Instant};

const READ_CHUNK: usize = 64 << 10;

/// Serves one peer connection whose first bytes (the magic already
/// stripped) are in `input`. Ends when the peer closes, on a protocol
/// error, or on shutdown once nothing is in flight.
pub async fn serve(
    stream: &mut Stream,
    mut input: BytesMut,
    shard: Rc<Shard>,
    peers: Rc<Peers>,
    shared: Rc<ConnShared>,
    max_frame: usize,
) {
    let mut out: Vec<u8> = Vec::new();
    let mut rbuf = vec![0u8; READ_CHUNK];
    let mut replies = Vec::new();
    let mut in_flight = 0usize;
    let mut peer_closed = false;
    loop {
        match peer::decode_request(&mut input, max_frame) {
            Ok(Some(Inbound::Call(req))) => {
                in_flight += usize::from(handle(&shard, &peers, &shared, req, &mut out));
                continue;
            }
            Ok(Some(Inbound::Invalidate { group, key })) => {
                let home = shard.home_of(group.as_bytes(), key.as_bytes());
                if home == shard.id() {
                    shard.invalidate(&group, &key);
                } else {
                    shard.notify_shard(home, Op::Invalidate { group, key });
                }
                continue;
            }
            Ok(None) => {}
            Err(e) => {
                // Framing is lost: answer what is in flight, then close.
                tracing::warn!("closing peer connection: {e}");
                input.clear();
                peer_closed = true;
            }
        }
        shared.mailbox().drain_into(&mut replies);
        for (id, reply) in replies.drain(..) {
            in_flight = in_flight.saturating_sub(1);
            encode(&mut out, id, reply);
        }
        if !out.is_empty() {
            if stream.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
        if in_flight == 0 && (peer_closed || shared.shutdown_requested()) {
            return;
        }
        shared.set_busy(in_flight > 0);
        let mailbox = shared.mailbox().clone();
        let read = future::or(
            async {
                if peer_closed {
                    future::pending().await
                } else {
                    Some(stream.read(&mut rbuf).await)
                }
            },
            async {
                mailbox.wait().await;
                None
            },
        )
        .await;
        match read {
            Some(Ok(0)) | Some(Err(_)) => peer_closed = true,
            Some(Ok(n)) => {
                shared.touch();
                input.extend_from_slice(&rbuf[..n]);
            }
            None => {}
        }
    }
}

/// Serves one request; true when its answer will come by mailbox.
fn handle(
    shard: &Rc<Shard>,
    peers: &Rc<Peers>,
    shared: &ConnShared,
    req: PeerRequest,
    out: &mut Vec<u8>,
) -> bool {
    let key_len = req.op.key().len();
    if key_len == 0 || key_len > MAX_KEY_BYTES {
        let st = Status::new(
            Code::InvalidArgument,
            format!("key is {key_len} bytes: a key must be 1 to {MAX_KEY_BYTES} bytes"),
        );
        peer::encode_reply(out, req.id, &PeerReply::Error(st));
        return false;
    }
    let id = req.id;
    let deadline = (req.timeout_ms > 0)
        .then(|| Instant::now() + Duration::from_millis(u64::from(req.timeout_ms)));
    dispatch::dispatch(
        shard,
        peers,
        req.op,
        false,
        deadline,
        || ReplyTo::Conn(shared.mailbox().clone(), id),
        |answer| match answer {
            Local::Get(v) => peer::encode_get_reply(out, id, v),
            Local::Set(r) => encode(out, id, Reply::Set(r)),
            Local::Delete(d) => encode(out, id, Reply::Delete(d)),
        },
    )
}

fn encode(out: &mut Vec<u8>, id: u32, reply: Reply) {
    let r = match reply {
        Reply::Get(v) => return peer::encode_get_reply(out, id, v.as_deref()),
        Reply::Set(Ok(created)) => PeerReply::Set { created },
        Reply::Set(Err(e)) => PeerReply::Error(dispatch::set_error_status(&e)),
        Reply::Delete(d) => PeerReply::Delete(d),
        Reply::Failed(st) => PeerReply::Error(st),
        Reply::Stats(..) | Reply::Metrics(..) => PeerReply::Error(Status::new(
            Code::Internal,
            "a shard answered a key request with Stats or Metrics",
        )),
    };
    peer::encode_reply(out, id, &r);
}
