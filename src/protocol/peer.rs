//! The node-to-node wire format: how a shard forwards a request for a key
//! owned by another node, and how the answer comes back. Pure encoding and
//! decoding, no sockets.
//!
//! A peer connection is an ordinary TCP connection to the other node's
//! gRPC port that opens with the 8-byte [`MAGIC`] instead of the HTTP/2
//! preface, so one listener serves clients and peers. After it, both sides
//! send frames, all integers big-endian:
//!
//! ```text
//! frame   = length:u32  id:u32  kind:u8  body       length counts id+kind+body
//! GET     kind 1: timeout_ms:u32 group_len:u32 group key
//! SET     kind 2: timeout_ms:u32 ttl_ms:u64 group_len:u32 group key_len:u32 key value
//! DELETE  kind 3: timeout_ms:u32 group_len:u32 group key
//! INVALIDATE kind 4 (no reply; id 0): group_len:u32 group key
//! RING    kind 5 (empty body): the ring the answering node routes by
//! AUTH    kind 6 (id 0): mac (32 bytes), the answer to CHALLENGE
//! CHALLENGE kind 0x86 (id 0, sent first by a node with --peer-secret-file):
//!         nonce (32 bytes); see `peer_auth`
//! replies kind 0x81 GET: found:u8 value | 0x82 SET: created:u8
//!         0x83 DELETE: deleted:u8       | 0xff ERROR: grpc_code:u8 message (UTF-8)
//!         0x85 RING: epoch:u64 registered:u8 count:u32, then per member
//!                    id_len:u32 node_id addr_len:u32 addr (text) shards:u32
//! ```
//!
//! RING lets a node that has lost etcd learn whether the cluster went on
//! without it (`cluster::etcd`): `registered` says whether the answering
//! node holds a live etcd registration now, and epochs are etcd revisions,
//! so a peer's newer epoch proves it heard from etcd later.
//!
//! Requests are pipelined and multiplexed: a reply carries its request's
//! `id` and replies may come in any order. `timeout_ms` is what is left of
//! the client's deadline (0: none). Why not gRPC: a peer hop needs neither
//! HPACK nor per-stream flow control, and this costs one small header per
//! request; docs/protocol.md has the full description.

use super::grpc::{Code, Status};
use super::CacheOp;
use crate::cluster::Member;
use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The first bytes a peer sends on a new connection.
pub const MAGIC: &[u8; 8] = b"SCPEER01";

/// length, id and kind.
const HEAD: usize = 9;

const GET: u8 = 1;
const SET: u8 = 2;
const DELETE: u8 = 3;
const INVALIDATE: u8 = 4;
const RING: u8 = 5;
const AUTH: u8 = 6;
const CHALLENGE: u8 = 0x86;
const REPLY_GET: u8 = 0x81;
const REPLY_SET: u8 = 0x82;
const REPLY_DELETE: u8 = 0x83;
const REPLY_RING: u8 = 0x85;
const REPLY_ERROR: u8 = 0xff;

/// What a peer sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    Call(PeerRequest),
    /// The key's owner changed it: drop any hot copy. Not answered.
    Invalidate {
        group: String,
        key: String,
    },
    /// Asks for the ring this node routes by (answered with
    /// [`encode_ring_reply`]).
    Ring {
        id: u32,
    },
    /// The answer to this node's CHALLENGE (`peer_auth`).
    Auth {
        mac: Bytes,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRequest {
    pub id: u32,
    /// Milliseconds left of the caller's deadline; 0 = none.
    pub timeout_ms: u32,
    pub op: CacheOp,
}

/// The owner's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerReply {
    Get(Option<Bytes>),
    Set {
        created: bool,
    },
    Delete(bool),
    Error(Status),
    /// The answer to a RING request.
    Ring(RingView),
    /// The serving node asks this one to prove it knows the peer secret
    /// (`peer_auth`); comes first, with id 0.
    Challenge(Bytes),
}

/// A node's answer to RING: the ring it routes by, and whether it is
/// registered in etcd right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingView {
    pub epoch: u64,
    pub registered: bool,
    pub members: Vec<Member>,
}

/// The stream is not speaking this protocol (or lies about sizes): the
/// connection must be closed, since framing is lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerError(pub String);

impl std::fmt::Display for PeerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn put_frame(out: &mut Vec<u8>, id: u32, kind: u8, body_len: usize) {
    let len = u32::try_from(5 + body_len).unwrap_or(u32::MAX);
    out.reserve(HEAD + body_len);
    out.put_u32(len);
    out.put_u32(id);
    out.put_u8(kind);
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.put_u32(s.len() as u32);
    out.extend_from_slice(s);
}

pub fn encode_request(out: &mut Vec<u8>, req: &PeerRequest) {
    match &req.op {
        CacheOp::Get { group, key } | CacheOp::Delete { group, key } => {
            let kind = if matches!(req.op, CacheOp::Get { .. }) {
                GET
            } else {
                DELETE
            };
            put_frame(out, req.id, kind, 8 + group.len() + key.len());
            out.put_u32(req.timeout_ms);
            put_str(out, group.as_bytes());
            out.extend_from_slice(key.as_bytes());
        }
        CacheOp::Set {
            group,
            key,
            value,
            ttl_ms,
        } => {
            put_frame(out, req.id, SET, 20 + group.len() + key.len() + value.len());
            out.put_u32(req.timeout_ms);
            out.put_u64(*ttl_ms);
            put_str(out, group.as_bytes());
            put_str(out, key.as_bytes());
            out.extend_from_slice(value);
        }
    }
}

/// The serving node's CHALLENGE (`peer_auth`).
pub fn encode_challenge(out: &mut Vec<u8>, nonce: &[u8]) {
    put_frame(out, 0, CHALLENGE, nonce.len());
    out.extend_from_slice(nonce);
}

/// The connecting node's answer to a CHALLENGE.
pub fn encode_auth(out: &mut Vec<u8>, mac: &[u8]) {
    put_frame(out, 0, AUTH, mac.len());
    out.extend_from_slice(mac);
}

pub fn encode_invalidate(out: &mut Vec<u8>, group: &str, key: &str) {
    put_frame(out, 0, INVALIDATE, 4 + group.len() + key.len());
    put_str(out, group.as_bytes());
    out.extend_from_slice(key.as_bytes());
}

pub fn encode_ring_request(out: &mut Vec<u8>, id: u32) {
    put_frame(out, id, RING, 0);
}

pub fn encode_ring_reply(
    out: &mut Vec<u8>,
    id: u32,
    epoch: u64,
    registered: bool,
    members: &[Member],
) {
    let mut body = Vec::with_capacity(13 + members.len() * 40);
    body.put_u64(epoch);
    body.put_u8(u8::from(registered));
    body.put_u32(members.len() as u32);
    for m in members {
        put_str(&mut body, m.node_id.as_bytes());
        put_str(&mut body, m.addr.to_string().as_bytes());
        body.put_u32(m.shards);
    }
    put_frame(out, id, REPLY_RING, body.len());
    out.extend_from_slice(&body);
}

/// Encodes a GET reply straight from the store's bytes (no copy into a
/// `PeerReply` first).
pub fn encode_get_reply(out: &mut Vec<u8>, id: u32, value: Option<&[u8]>) {
    let v = value.unwrap_or_default();
    put_frame(out, id, REPLY_GET, 1 + v.len());
    out.put_u8(u8::from(value.is_some()));
    out.extend_from_slice(v);
}

pub fn encode_reply(out: &mut Vec<u8>, id: u32, reply: &PeerReply) {
    match reply {
        PeerReply::Get(v) => encode_get_reply(out, id, v.as_deref()),
        PeerReply::Set { created } => {
            put_frame(out, id, REPLY_SET, 1);
            out.put_u8(u8::from(*created));
        }
        PeerReply::Delete(deleted) => {
            put_frame(out, id, REPLY_DELETE, 1);
            out.put_u8(u8::from(*deleted));
        }
        PeerReply::Error(st) => {
            put_frame(out, id, REPLY_ERROR, 1 + st.message.len());
            out.put_u8(st.code as u8);
            out.extend_from_slice(st.message.as_bytes());
        }
        PeerReply::Ring(r) => encode_ring_reply(out, id, r.epoch, r.registered, &r.members),
        PeerReply::Challenge(nonce) => {
            put_frame(out, id, CHALLENGE, nonce.len());
            out.extend_from_slice(nonce);
        }
    }
}

/// Splits one whole frame off `buf`: (id, kind, body). None until it has
/// fully arrived.
fn split_frame(
    buf: &mut BytesMut,
    max_frame: usize,
) -> Result<Option<(u32, u8, Bytes)>, PeerError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len < 5 {
        return Err(PeerError(format!("peer frame of length {len} (minimum 5)")));
    }
    if len > max_frame {
        return Err(PeerError(format!(
            "peer frame of {len} bytes exceeds the limit of {max_frame}"
        )));
    }
    if buf.len() < 4 + len {
        buf.reserve(4 + len - buf.len());
        return Ok(None);
    }
    buf.advance(4);
    let mut frame = buf.split_to(len).freeze();
    let id = frame.get_u32();
    let kind = frame.get_u8();
    Ok(Some((id, kind, frame)))
}

fn take_u32(b: &mut Bytes, what: &str) -> Result<u32, PeerError> {
    if b.remaining() < 4 {
        return Err(PeerError(format!("peer frame too short for {what}")));
    }
    Ok(b.get_u32())
}

fn take_u64(b: &mut Bytes, what: &str) -> Result<u64, PeerError> {
    if b.remaining() < 8 {
        return Err(PeerError(format!("peer frame too short for {what}")));
    }
    Ok(b.get_u64())
}

fn take_u8(b: &mut Bytes, what: &str) -> Result<u8, PeerError> {
    if b.remaining() < 1 {
        return Err(PeerError(format!("peer frame too short for {what}")));
    }
    Ok(b.get_u8())
}

fn utf8(b: Bytes, what: &str) -> Result<String, PeerError> {
    String::from_utf8(b.to_vec()).map_err(|_| PeerError(format!("peer {what} is not UTF-8")))
}

fn take_str(b: &mut Bytes, what: &str) -> Result<String, PeerError> {
    let n = take_u32(b, what)? as usize;
    if b.remaining() < n {
        return Err(PeerError(format!("peer {what} runs past its frame")));
    }
    utf8(b.split_to(n), what)
}

/// The next request in `buf`, consuming it; None until one is complete.
/// An unknown kind is an error too: the two sides of a peer connection run
/// the same protocol version (the magic says which).
pub fn decode_request(buf: &mut BytesMut, max_frame: usize) -> Result<Option<Inbound>, PeerError> {
    let Some((id, kind, mut b)) = split_frame(buf, max_frame)? else {
        return Ok(None);
    };
    if kind == INVALIDATE {
        let group = take_str(&mut b, "group")?;
        let key = utf8(b, "key")?;
        return Ok(Some(Inbound::Invalidate { group, key }));
    }
    if kind == AUTH {
        if b.len() != super::peer_auth::MAC_LEN {
            return Err(PeerError(format!("peer AUTH with a {}-byte MAC", b.len())));
        }
        return Ok(Some(Inbound::Auth { mac: b }));
    }
    if kind == RING {
        if !b.is_empty() {
            return Err(PeerError(format!(
                "peer RING request with a {}-byte body",
                b.len()
            )));
        }
        return Ok(Some(Inbound::Ring { id }));
    }
    let timeout_ms = take_u32(&mut b, "timeout")?;
    let op = match kind {
        GET | DELETE => {
            let group = take_str(&mut b, "group")?;
            let key = utf8(b, "key")?;
            if kind == GET {
                CacheOp::Get { group, key }
            } else {
                CacheOp::Delete { group, key }
            }
        }
        SET => {
            let ttl_ms = take_u64(&mut b, "ttl")?;
            let group = take_str(&mut b, "group")?;
            let key = take_str(&mut b, "key")?;
            CacheOp::Set {
                group,
                key,
                value: b,
                ttl_ms,
            }
        }
        other => return Err(PeerError(format!("unknown peer request kind {other:#x}"))),
    };
    Ok(Some(Inbound::Call(PeerRequest { id, timeout_ms, op })))
}

/// The next reply in `buf`, consuming it; None until one is complete.
pub fn decode_reply(
    buf: &mut BytesMut,
    max_frame: usize,
) -> Result<Option<(u32, PeerReply)>, PeerError> {
    let Some((id, kind, mut b)) = split_frame(buf, max_frame)? else {
        return Ok(None);
    };
    let reply = match kind {
        REPLY_GET => match take_u8(&mut b, "found")? {
            0 => PeerReply::Get(None),
            _ => PeerReply::Get(Some(b)),
        },
        REPLY_SET => PeerReply::Set {
            created: take_u8(&mut b, "created")? != 0,
        },
        REPLY_DELETE => PeerReply::Delete(take_u8(&mut b, "deleted")? != 0),
        REPLY_ERROR => {
            let code = take_u8(&mut b, "status code")?;
            let code = Code::from_u32(u32::from(code)).unwrap_or(Code::Unknown);
            let message = String::from_utf8_lossy(&b).into_owned();
            PeerReply::Error(Status::new(code, message))
        }
        CHALLENGE => {
            if b.len() != super::peer_auth::NONCE_LEN {
                return Err(PeerError(format!(
                    "peer CHALLENGE with a {}-byte nonce",
                    b.len()
                )));
            }
            PeerReply::Challenge(b)
        }
        REPLY_RING => {
            let epoch = take_u64(&mut b, "epoch")?;
            let registered = take_u8(&mut b, "registered")? != 0;
            let count = take_u32(&mut b, "member count")? as usize;
            // Each member takes at least 12 bytes: a count cannot make us
            // reserve more than the frame could hold.
            let mut members = Vec::with_capacity(count.min(b.remaining() / 12));
            for _ in 0..count {
                let node_id = take_str(&mut b, "node id")?;
                let addr = take_str(&mut b, "member address")?;
                let addr = addr
                    .parse()
                    .map_err(|_| PeerError(format!("peer ring member address {addr:?}")))?;
                let shards = take_u32(&mut b, "shard count")?;
                members.push(Member {
                    node_id,
                    addr,
                    shards,
                });
            }
            PeerReply::Ring(RingView {
                epoch,
                registered,
                members,
            })
        }
        other => return Err(PeerError(format!("unknown peer reply kind {other:#x}"))),
    };
    Ok(Some((id, reply)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1 << 20;

    fn requests() -> Vec<PeerRequest> {
        vec![
            PeerRequest {
                id: 1,
                timeout_ms: 0,
                op: CacheOp::Get {
                    group: String::new(),
                    key: "k".into(),
                },
            },
            PeerRequest {
                id: u32::MAX,
                timeout_ms: 250,
                op: CacheOp::Set {
                    group: "users".into(),
                    key: "user:42".into(),
                    value: Bytes::from(vec![0u8, 1, 2, 255]),
                    ttl_ms: u64::MAX,
                },
            },
            PeerRequest {
                id: 7,
                timeout_ms: 9,
                op: CacheOp::Delete {
                    group: "g".into(),
                    key: "ü".into(),
                },
            },
            PeerRequest {
                id: 8,
                timeout_ms: 0,
                op: CacheOp::Set {
                    group: String::new(),
                    key: "empty".into(),
                    value: Bytes::new(),
                    ttl_ms: 0,
                },
            },
        ]
    }

    fn replies() -> Vec<(u32, PeerReply)> {
        vec![
            (1, PeerReply::Get(None)),
            (2, PeerReply::Get(Some(Bytes::from_static(b"value")))),
            (3, PeerReply::Get(Some(Bytes::new()))),
            (4, PeerReply::Set { created: true }),
            (5, PeerReply::Delete(false)),
            (
                6,
                PeerReply::Error(Status::new(Code::ResourceExhausted, "too big: ü")),
            ),
            (
                7,
                PeerReply::Ring(RingView {
                    epoch: 42,
                    registered: true,
                    members: vec![
                        Member {
                            node_id: "a".into(),
                            addr: "10.0.0.1:7070".parse().unwrap(),
                            shards: 2,
                        },
                        Member {
                            node_id: "b-ü".into(),
                            addr: "[::1]:7071".parse().unwrap(),
                            shards: 0,
                        },
                    ],
                }),
            ),
        ]
    }

    #[test]
    fn requests_round_trip_whole_and_byte_by_byte() {
        let mut wire = Vec::new();
        for r in requests() {
            encode_request(&mut wire, &r);
        }
        encode_invalidate(&mut wire, "users", "k");
        encode_ring_request(&mut wire, 9);
        let mut want: Vec<Inbound> = requests().into_iter().map(Inbound::Call).collect();
        want.push(Inbound::Invalidate {
            group: "users".into(),
            key: "k".into(),
        });
        want.push(Inbound::Ring { id: 9 });
        let mut buf = BytesMut::from(&wire[..]);
        let mut got = Vec::new();
        while let Some(r) = decode_request(&mut buf, MAX).unwrap() {
            got.push(r);
        }
        assert_eq!(got, want);
        assert!(buf.is_empty());
        // The same bytes arriving one at a time.
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for b in &wire {
            buf.put_u8(*b);
            while let Some(r) = decode_request(&mut buf, MAX).unwrap() {
                got.push(r);
            }
        }
        assert_eq!(got, want);
    }

    #[test]
    fn replies_round_trip() {
        let mut wire = Vec::new();
        for (id, r) in replies() {
            encode_reply(&mut wire, id, &r);
        }
        let mut buf = BytesMut::from(&wire[..]);
        let mut got = Vec::new();
        while let Some(r) = decode_reply(&mut buf, MAX).unwrap() {
            got.push(r);
        }
        assert_eq!(got, replies());
    }

    #[test]
    fn the_layout_is_the_documented_one() {
        let mut wire = Vec::new();
        encode_request(
            &mut wire,
            &PeerRequest {
                id: 0x0102_0304,
                timeout_ms: 5,
                op: CacheOp::Get {
                    group: "g".into(),
                    key: "ab".into(),
                },
            },
        );
        assert_eq!(
            wire,
            [0, 0, 0, 16, 1, 2, 3, 4, 1, 0, 0, 0, 5, 0, 0, 0, 1, b'g', b'a', b'b']
        );
        wire.clear();
        encode_reply(&mut wire, 9, &PeerReply::Delete(true));
        assert_eq!(wire, [0, 0, 0, 6, 0, 0, 0, 9, 0x83, 1]);
    }

    #[test]
    fn malformed_frames_are_errors_not_panics() {
        let bad: &[&[u8]] = &[
            &[0, 0, 0, 4, 0, 0, 0, 1],         // length below the minimum
            &[0, 0, 0, 5, 0, 0, 0, 1, 9],      // unknown kind
            &[0, 0, 0, 6, 0, 0, 0, 1, GET, 0], // timeout cut short
            &[0, 0, 0, 13, 0, 0, 0, 1, GET, 0, 0, 0, 0, 0, 0, 0, 9], // group past the end
            &[0, 0, 0, 10, 0, 0, 0, 1, GET, 0, 0, 0, 0, 0xff], // short group length
            &[0, 0, 0, 14, 0, 0, 0, 1, GET, 0, 0, 0, 0, 0, 0, 0, 0, 0xff], // key not UTF-8
            &[0, 0, 0, 6, 0, 0, 0, 1, RING, 0], // RING takes no body
        ];
        for b in bad {
            let mut buf = BytesMut::from(*b);
            assert!(decode_request(&mut buf, MAX).is_err(), "{b:?}");
        }
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff][..]);
        assert!(decode_request(&mut buf, MAX)
            .unwrap_err()
            .0
            .contains("limit"));
        let mut buf = BytesMut::from(&[0, 0, 0, 5, 0, 0, 0, 1, REPLY_SET][..]);
        assert!(decode_reply(&mut buf, MAX).is_err());
        // A RING reply that claims 2^32-1 members in an 18-byte body, and
        // one whose address is not ip:port.
        let mut buf = BytesMut::from(
            &[
                0, 0, 0, 18, 0, 0, 0, 1, REPLY_RING, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0xff, 0xff, 0xff,
                0xff,
            ][..],
        );
        assert!(decode_reply(&mut buf, MAX).is_err());
        let mut wire = Vec::new();
        let mut m = Member {
            node_id: "a".into(),
            addr: "10.0.0.1:7070".parse().unwrap(),
            shards: 1,
        };
        encode_ring_reply(&mut wire, 1, 3, false, std::slice::from_ref(&m));
        let at = wire.windows(12).position(|w| w == b"10.0.0.1:707").unwrap();
        wire[at + 2] = b'x';
        let mut buf = BytesMut::from(&wire[..]);
        assert!(decode_reply(&mut buf, MAX)
            .unwrap_err()
            .0
            .contains("address"));
        m.shards = 2;
        wire.clear();
        encode_ring_reply(&mut wire, 1, 3, false, std::slice::from_ref(&m));
        let mut buf = BytesMut::from(&wire[..]);
        assert_eq!(
            decode_reply(&mut buf, MAX).unwrap(),
            Some((
                1,
                PeerReply::Ring(RingView {
                    epoch: 3,
                    registered: false,
                    members: vec![m]
                })
            ))
        );
        // Seeded random bytes: errors or incomplete frames, never a panic.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            let mut v = Vec::new();
            for _ in 0..(x % 40) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                v.push(x as u8);
            }
            // Keep lengths small so that frames complete sometimes.
            if v.len() > 4 {
                v[0] = 0;
                v[1] = 0;
                v[2] = 0;
            }
            let mut buf = BytesMut::from(&v[..]);
            let _ = decode_request(&mut buf, MAX);
            let mut buf = BytesMut::from(&v[..]);
            let _ = decode_reply(&mut buf, MAX);
        }
    }

    #[test]
    fn the_handshake_frames_round_trip_and_bad_sizes_are_refused() {
        let nonce = [7u8; 32];
        let mut wire = Vec::new();
        encode_challenge(&mut wire, &nonce);
        let mut buf = BytesMut::from(&wire[..]);
        assert_eq!(
            decode_reply(&mut buf, MAX),
            Ok(Some((0, PeerReply::Challenge(Bytes::from(nonce.to_vec())))))
        );
        let mut wire = Vec::new();
        encode_auth(&mut wire, &[9u8; 32]);
        let mut buf = BytesMut::from(&wire[..]);
        assert_eq!(
            decode_request(&mut buf, MAX),
            Ok(Some(Inbound::Auth {
                mac: Bytes::from(vec![9u8; 32])
            }))
        );
        let mut wire = Vec::new();
        encode_auth(&mut wire, &[9u8; 31]);
        assert!(decode_request(&mut BytesMut::from(&wire[..]), MAX).is_err());
        let mut wire = Vec::new();
        encode_challenge(&mut wire, &[1u8; 33]);
        assert!(decode_reply(&mut BytesMut::from(&wire[..]), MAX).is_err());
    }
}
