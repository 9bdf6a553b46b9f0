//! Unary gRPC over the HTTP/2 client: request paths and headers, message
//! framing (the 5-byte length prefix), and per-call response state: the
//! HTTP status, the gRPC status from trailers (or a trailers-only reply),
//! and whether a Get found its key.

use crate::h2::StreamState;
use bytes::{BufMut, BytesMut};
use prost::Message;
use shardcache::protocol::http2::hpack::HeaderList;

pub const PATH_GET: &[u8] = b"/cache.Cache/Get";
pub const PATH_SET: &[u8] = b"/cache.Cache/Set";

pub const OK: u32 = 0;
pub const UNKNOWN: u32 = 2;
pub const INTERNAL: u32 = 13;
pub const UNAVAILABLE: u32 = 14;
/// Codes 0..=16 have names; the stats keep one counter per code.
pub const NAMED_CODES: usize = 17;

/// The gRPC status code name (as in the gRPC spec's status code table).
pub fn status_name(code: u32) -> Option<&'static str> {
    Some(match code {
        0 => "OK",
        1 => "CANCELLED",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => return None,
    })
}

/// gRPC status for a reply without `grpc-status`, from its HTTP status
/// (gRPC's "HTTP to gRPC Status Code Mapping").
pub fn status_from_http(http: u16) -> u32 {
    match http {
        400 => INTERNAL,
        401 => 16,
        403 => 7,
        404 => 12,
        429 | 502 | 503 | 504 => UNAVAILABLE,
        _ => UNKNOWN,
    }
}

fn parse_decimal(v: &[u8]) -> Option<u32> {
    if v.is_empty() || v.len() > 9 {
        return None;
    }
    v.iter().try_fold(0u32, |acc, &b| {
        b.is_ascii_digit().then(|| acc * 10 + (b - b'0') as u32)
    })
}

/// What kind of request a call is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Get,
    Set,
    /// A Set sent by `--preload`, counted apart from the measured run.
    Preload,
}

/// The part of `cache.GetResponse` the load generator needs. Wire-compatible
/// with the generated message: prost skips the `value` field (tag 1) instead
/// of copying it, which matters for multi-MiB values.
#[derive(Clone, PartialEq, Message)]
pub struct GetResponseFound {
    #[prost(bool, tag = "2")]
    pub found: bool,
}

/// One unary call in flight: the state the HTTP/2 stream carries.
#[derive(Debug)]
pub struct Call {
    /// When the request counts as sent, in ns since the run's base instant:
    /// the send time in closed loop, the scheduled time in open loop.
    pub start_ns: u64,
    pub op: Op,
    /// Sent (or scheduled) after warm-up, so it counts in the results.
    pub measured: bool,
    http_status: u16,
    grpc_status: Option<u32>,
    found: Option<bool>,
    /// A Get reply's message when it spans several DATA frames.
    body: Vec<u8>,
}

impl Call {
    pub fn new(start_ns: u64, op: Op, measured: bool) -> Call {
        Call {
            start_ns,
            op,
            measured,
            http_status: 0,
            grpc_status: None,
            found: None,
            body: Vec::new(),
        }
    }

    /// The call's gRPC status once the stream closed normally: the
    /// `grpc-status` of the trailers (or of a trailers-only reply); without
    /// one, the code mapped from a non-200 HTTP status; UNKNOWN otherwise.
    pub fn status(&self) -> u32 {
        match self.grpc_status {
            Some(s) => s,
            None if self.http_status != 200 && self.http_status != 0 => {
                status_from_http(self.http_status)
            }
            None => UNKNOWN,
        }
    }

    /// For a Get answered with a complete message: whether the key was found.
    pub fn found(&self) -> Option<bool> {
        self.found
    }

    /// Decodes one complete gRPC message (prefix included) if `buf` holds it.
    fn try_decode(buf: &[u8]) -> Option<Option<bool>> {
        if buf.len() < 5 {
            return None;
        }
        let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
        if buf.len() < 5 + len {
            return None;
        }
        if buf[0] != 0 {
            // Compressed although we offered no encoding: the call's status
            // still counts, the hit does not.
            return Some(None);
        }
        Some(
            GetResponseFound::decode(&buf[5..5 + len])
                .ok()
                .map(|m| m.found),
        )
    }
}

impl StreamState for Call {
    fn on_headers(&mut self, headers: &HeaderList, _end_stream: bool) {
        if self.http_status == 0 {
            if let Some(s) = headers.get(b":status") {
                self.http_status = parse_decimal(s).unwrap_or(0).min(999) as u16;
            }
        }
        if let Some(v) = headers.get(b"grpc-status") {
            self.grpc_status = Some(parse_decimal(v).unwrap_or(UNKNOWN));
        }
    }

    fn on_data(&mut self, data: &[u8]) {
        if self.op != Op::Get || self.found.is_some() {
            return;
        }
        // Common case: the whole message in one DATA frame, decoded in place.
        if self.body.is_empty() {
            if let Some(found) = Self::try_decode(data) {
                self.found = Some(found.unwrap_or(false));
                return;
            }
        }
        self.body.extend_from_slice(data);
        if let Some(found) = Self::try_decode(&self.body) {
            self.found = Some(found.unwrap_or(false));
            self.body = Vec::new();
        }
    }
}

/// Writes `msg` as one gRPC length-prefixed message; returns nothing since
/// the caller sized the frame with [`framed_len`].
pub fn write_message(msg: &impl Message, dst: &mut BytesMut) {
    let len = msg.encoded_len();
    dst.reserve(5 + len);
    dst.put_u8(0);
    dst.put_u32(len as u32);
    // Encoding into a BytesMut cannot run out of space.
    let encoded = msg.encode(dst);
    debug_assert!(encoded.is_ok());
}

/// Size of `msg` framed as a gRPC message.
pub fn framed_len(msg: &impl Message) -> usize {
    5 + msg.encoded_len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto;

    fn headers(fields: &[(&[u8], &[u8])]) -> HeaderList {
        let mut h = HeaderList::new();
        for (n, v) in fields {
            h.push(n, v);
        }
        h
    }

    fn framed(msg: &impl Message) -> BytesMut {
        let mut b = BytesMut::new();
        write_message(msg, &mut b);
        assert_eq!(b.len(), framed_len(msg));
        b
    }

    #[test]
    fn status_from_trailers() {
        let mut c = Call::new(0, Op::Set, true);
        c.on_headers(&headers(&[(b":status", b"200")]), false);
        c.on_headers(
            &headers(&[(b"grpc-status", b"8"), (b"grpc-message", b"big")]),
            true,
        );
        assert_eq!(c.status(), 8);
        assert_eq!(status_name(c.status()), Some("RESOURCE_EXHAUSTED"));
    }

    #[test]
    fn trailers_only_and_missing_status() {
        let mut c = Call::new(0, Op::Get, true);
        c.on_headers(
            &headers(&[(b":status", b"200"), (b"grpc-status", b"14")]),
            true,
        );
        assert_eq!(c.status(), UNAVAILABLE);

        let mut c = Call::new(0, Op::Get, true);
        c.on_headers(&headers(&[(b":status", b"503")]), true);
        assert_eq!(c.status(), UNAVAILABLE);

        let mut c = Call::new(0, Op::Get, true);
        c.on_headers(&headers(&[(b":status", b"200")]), true);
        assert_eq!(c.status(), UNKNOWN);

        let mut c = Call::new(0, Op::Get, true);
        c.on_headers(
            &headers(&[(b":status", b"200"), (b"grpc-status", b"x")]),
            true,
        );
        assert_eq!(c.status(), UNKNOWN);
    }

    #[test]
    fn get_found_in_one_frame_and_split() {
        let reply = proto::GetResponse {
            value: vec![7u8; 3000],
            found: true,
        };
        let msg = framed(&reply);
        let mut c = Call::new(0, Op::Get, true);
        c.on_data(&msg);
        assert_eq!(c.found(), Some(true));

        let mut c = Call::new(0, Op::Get, true);
        for chunk in msg.chunks(1000) {
            assert_eq!(c.found(), None);
            c.on_data(chunk);
        }
        assert_eq!(c.found(), Some(true));

        let miss = framed(&proto::GetResponse::default());
        let mut c = Call::new(0, Op::Get, true);
        c.on_data(&miss);
        assert_eq!(c.found(), Some(false));
    }

    #[test]
    fn request_framing() {
        let req = proto::Request {
            group: "g".into(),
            key: "k1".into(),
            value: bytes::Bytes::from_static(b"v"),
            ttl_ms: 5,
        };
        let b = framed(&req);
        assert_eq!(b[0], 0);
        let len = u32::from_be_bytes([b[1], b[2], b[3], b[4]]) as usize;
        assert_eq!(len, b.len() - 5);
        assert_eq!(proto::Request::decode(&b[5..]).unwrap(), req);
    }
}
