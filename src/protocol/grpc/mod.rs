//! gRPC over our HTTP/2: which method a request calls, its deadline and
//! encoding, the 5-byte length-prefixed message framing, and the status /
//! trailer vocabulary of replies. Knows nothing of sockets or of the store.
//!
//! - [`streaming`]: the streaming methods and the incremental deframer.
//! - [`reflection`]: the server reflection service, request → response.
//! - [`batch`]: the items of GetMany/SetMany/DeleteMany and their response.

pub mod batch;
pub mod reflection;
mod status;
pub mod streaming;

pub use status::{Code, Status};
pub use streaming::{is_streaming_path, Deframer, StreamingMethod};

use super::http2::{HeaderField, HeaderList};
use bytes::{Buf, BufMut, Bytes};
use std::time::{Duration, Instant};

/// The methods of `service cache.Cache`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Set,
    Delete,
    Stats,
    /// `grpc.health.v1.Health/Check`.
    HealthCheck,
    /// Batch calls: [`batch`].
    GetMany,
    SetMany,
    DeleteMany,
    Topology,
}

impl Method {
    pub fn from_path(path: &[u8]) -> Option<Method> {
        match path {
            b"/cache.Cache/Get" => Some(Method::Get),
            b"/cache.Cache/Set" => Some(Method::Set),
            b"/cache.Cache/Delete" => Some(Method::Delete),
            b"/cache.Cache/Stats" => Some(Method::Stats),
            b"/grpc.health.v1.Health/Check" => Some(Method::HealthCheck),
            b"/cache.Cache/GetMany" => Some(Method::GetMany),
            b"/cache.Cache/SetMany" => Some(Method::SetMany),
            b"/cache.Cache/DeleteMany" => Some(Method::DeleteMany),
            b"/cache.Cache/Topology" => Some(Method::Topology),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Method::Get => "Get",
            Method::Set => "Set",
            Method::Delete => "Delete",
            Method::Stats => "Stats",
            Method::HealthCheck => "Health/Check",
            Method::GetMany => "GetMany",
            Method::SetMany => "SetMany",
            Method::DeleteMany => "DeleteMany",
            Method::Topology => "Topology",
        }
    }
}

/// What a request's headers ask for, once they are known to be a valid gRPC call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Call {
    pub method: Method,
    /// From `grpc-timeout`; None when the client set no deadline.
    pub timeout: Option<Duration>,
}

/// A request that cannot be answered as a gRPC call at all: not even a
/// `grpc-status` makes sense (wrong method or content type), so the reply
/// is a plain HTTP status, as the gRPC over HTTP/2 spec asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// Reply with this HTTP status, no gRPC status.
    Http(u16),
    /// Reply trailers-only with this gRPC status.
    Grpc(Status),
}

/// Checks a request's headers and finds the method.
pub fn parse_call(headers: &HeaderList) -> Result<Call, Rejection> {
    let (method, timeout) = parse_call_with(headers, Method::from_path)?;
    Ok(Call { method, timeout })
}

/// The checks of [`parse_call`] against another method table
/// (e.g. [`StreamingMethod::from_path`]): the method and the timeout.
pub fn parse_call_with<M>(
    headers: &HeaderList,
    from_path: fn(&[u8]) -> Option<M>,
) -> Result<(M, Option<Duration>), Rejection> {
    if headers.get(b":method") != Some(b"POST") {
        return Err(Rejection::Http(405));
    }
    let content_type = headers.get(b"content-type").unwrap_or(b"");
    if !is_grpc_content_type(content_type) {
        return Err(Rejection::Http(415));
    }
    if let Some(codec) = other_codec(content_type) {
        return Err(Rejection::Grpc(Status::new(
            Code::Unimplemented,
            format!(
                "content-type application/grpc+{} is not supported: this server speaks \
                 protobuf only (application/grpc or application/grpc+proto)",
                String::from_utf8_lossy(codec)
            ),
        )));
    }
    let path = headers.get(b":path").unwrap_or(b"");
    let Some(method) = from_path(path) else {
        return Err(Rejection::Grpc(Status::new(
            Code::Unimplemented,
            format!("unknown method {}", String::from_utf8_lossy(path)),
        )));
    };
    if let Some(enc) = headers.get(b"grpc-encoding") {
        if enc != b"identity" {
            // We advertise identity only; a client that compresses anyway is
            // told so before we look at its message.
            return Err(Rejection::Grpc(Status::new(
                Code::Unimplemented,
                format!(
                    "message compression ({}) is not supported; send identity-encoded messages",
                    String::from_utf8_lossy(enc)
                ),
            )));
        }
    }
    let timeout = match headers.get(b"grpc-timeout") {
        None => None,
        Some(v) => Some(parse_timeout(v).ok_or_else(|| {
            Rejection::Grpc(Status::new(
                Code::InvalidArgument,
                format!("malformed grpc-timeout '{}'", String::from_utf8_lossy(v)),
            ))
        })?),
    };
    Ok((method, timeout))
}

/// The codec of `application/grpc+CODEC` when it is not protobuf.
fn other_codec(ct: &[u8]) -> Option<&[u8]> {
    let rest = ct.strip_prefix(b"application/grpc+")?;
    let codec = rest.split(|&b| b == b';').next().unwrap_or_default();
    (!codec.eq_ignore_ascii_case(b"proto")).then_some(codec)
}

fn is_grpc_content_type(ct: &[u8]) -> bool {
    // "application/grpc", optionally "+proto" or ";params".
    ct.strip_prefix(b"application/grpc")
        .is_some_and(|rest| rest.is_empty() || rest[0] == b'+' || rest[0] == b';')
}

/// When the server gives up on a call that arrived at `opened_at` with
/// `timeout`: a little before the deadline itself (1/20 of the timeout,
/// between 0.5 and 100 ms), because the client started its own timer
/// earlier, when it sent the call; answering at the deadline would lose the
/// race, and clients that time out locally (tonic) then report CANCELLED
/// instead of our DEADLINE_EXCEEDED.
pub fn answer_by(opened_at: Instant, timeout: Duration) -> Instant {
    let margin = (timeout / 20).clamp(Duration::from_micros(500), Duration::from_millis(100));
    opened_at + timeout.saturating_sub(margin)
}

/// Parses `grpc-timeout`: 1 to 8 ASCII digits and a unit H, M, S, m, u, n.
pub fn parse_timeout(v: &[u8]) -> Option<Duration> {
    let (&unit, digits) = v.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = digits
        .iter()
        .fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0'));
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Extracts the single request message of a unary call from its body.
/// `max_message` bounds the message length (not counting the prefix).
pub fn unframe(mut body: Bytes, max_message: usize) -> Result<Bytes, Status> {
    if body.len() < 5 {
        return Err(Status::new(
            Code::InvalidArgument,
            if body.is_empty() {
                "the request has no message".to_string()
            } else {
                format!(
                    "the request body ({} bytes) is shorter than a message prefix",
                    body.len()
                )
            },
        ));
    }
    let compressed = body.get_u8();
    let len = body.get_u32() as usize;
    if compressed == 1 {
        return Err(Status::new(
            Code::Unimplemented,
            "compressed messages are not supported (grpc-accept-encoding: identity)",
        ));
    }
    if compressed > 1 {
        return Err(Status::new(
            Code::InvalidArgument,
            format!("invalid message compression flag {compressed}"),
        ));
    }
    if len > max_message {
        return Err(too_large(len, max_message));
    }
    if body.len() != len {
        return Err(Status::new(
            Code::InvalidArgument,
            format!(
                "a unary request carries exactly one message: the prefix says {len} bytes, the body holds {}",
                body.len()
            ),
        ));
    }
    Ok(body)
}

/// The status for a message over the size limit.
pub fn too_large(len: usize, max_message: usize) -> Status {
    Status::new(
        Code::ResourceExhausted,
        format!("request message of {len} bytes exceeds the limit of {max_message} bytes (--max-value plus framing)"),
    )
}

/// Appends a length-prefixed message to `dst`.
pub fn frame_message<M: prost::Message>(msg: &M, dst: &mut Vec<u8>) {
    let len = msg.encoded_len();
    dst.reserve(5 + len);
    dst.put_u8(0);
    dst.put_u32(len as u32);
    // Encoding into a Vec with reserved room cannot fail.
    let _ = msg.encode(dst);
}

/// Appends a framed `GetResponse { value, found }` without building the
/// message struct, so a hit copies the value once, straight from the store.
pub fn frame_get_response(value: Option<&[u8]>, dst: &mut Vec<u8>) {
    let body_len = found_value_len(value);
    dst.reserve(5 + body_len);
    dst.put_u8(0);
    dst.put_u32(body_len as u32);
    encode_found_value(value, dst);
}

/// The encoded length of `{ value = 1, found = 2 }` (GetResponse, and a
/// batch's GetResult without a status): field 1 is omitted when empty, as
/// proto3 does; a miss is the empty message.
fn found_value_len(value: Option<&[u8]>) -> usize {
    match value {
        Some([]) => 2,
        Some(v) => 1 + prost::encoding::encoded_len_varint(v.len() as u64) + v.len() + 2,
        None => 0,
    }
}

/// Appends `{ value = 1, found = 2 }` as [`found_value_len`] counts it.
fn encode_found_value(value: Option<&[u8]>, dst: &mut Vec<u8>) {
    use prost::encoding::{encode_key, encode_varint, WireType};
    if let Some(v) = value {
        if !v.is_empty() {
            encode_key(1, WireType::LengthDelimited, dst);
            encode_varint(v.len() as u64, dst);
            dst.extend_from_slice(v);
        }
        encode_key(2, WireType::Varint, dst);
        dst.put_u8(1);
    }
}

/// Response headers of every successful call.
pub const RESPONSE_HEADERS: &[HeaderField<'static>] = &[
    HeaderField {
        name: b":status",
        value: b"200",
        index: true,
    },
    HeaderField {
        name: b"content-type",
        value: b"application/grpc",
        index: true,
    },
    HeaderField {
        name: b"grpc-accept-encoding",
        value: b"identity",
        index: true,
    },
];

/// Trailers of a successful call.
pub const OK_TRAILERS: &[HeaderField<'static>] = &[HeaderField {
    name: b"grpc-status",
    value: b"0",
    index: true,
}];

/// Writes the trailers-only header set for a failed call into `fields`,
/// using `scratch` to hold the percent-encoded message.
pub fn error_fields<'a>(status: &Status, scratch: &'a mut Vec<u8>) -> [HeaderField<'a>; 5] {
    scratch.clear();
    percent_encode(status.message.as_bytes(), scratch);
    [
        HeaderField {
            name: b":status",
            value: b"200",
            index: true,
        },
        HeaderField {
            name: b"content-type",
            value: b"application/grpc",
            index: true,
        },
        HeaderField {
            name: b"grpc-accept-encoding",
            value: b"identity",
            index: true,
        },
        HeaderField {
            name: b"grpc-status",
            value: status.code.as_str().as_bytes(),
            index: true,
        },
        HeaderField {
            name: b"grpc-message",
            value: scratch,
            index: false,
        },
    ]
}

/// gRPC's percent-encoding of `grpc-message`: printable ASCII except '%'
/// is kept, everything else becomes %XX.
pub fn percent_encode(msg: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in msg {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::GetResponse;
    use prost::Message;

    fn headers(fields: &[(&str, &str)]) -> HeaderList {
        let mut h = HeaderList::new();
        for (n, v) in fields {
            h.push(n.as_bytes(), v.as_bytes());
        }
        h
    }

    fn grpc_headers(path: &str) -> Vec<(&str, &str)> {
        vec![
            (":method", "POST"),
            (":scheme", "http"),
            (":path", path),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ]
    }

    #[test]
    fn answers_a_little_before_the_deadline() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        assert_eq!(answer_by(t0, ms(700)), t0 + ms(665));
        assert_eq!(answer_by(t0, ms(10)), t0 + Duration::from_micros(9500));
        assert_eq!(answer_by(t0, Duration::from_secs(60)), t0 + ms(59_900));
        assert_eq!(answer_by(t0, Duration::from_micros(100)), t0);
    }

    #[test]
    fn parses_methods_and_timeouts() {
        let h = headers(&grpc_headers("/cache.Cache/Get"));
        assert_eq!(
            parse_call(&h),
            Ok(Call {
                method: Method::Get,
                timeout: None
            })
        );
        let mut f = grpc_headers("/cache.Cache/Set");
        f.push(("grpc-timeout", "250m"));
        assert_eq!(
            parse_call(&headers(&f)),
            Ok(Call {
                method: Method::Set,
                timeout: Some(Duration::from_millis(250))
            })
        );
        assert_eq!(parse_timeout(b"1H"), Some(Duration::from_secs(3600)));
        assert_eq!(
            parse_timeout(b"99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
        assert_eq!(parse_timeout(b"123456789S"), None);
        assert_eq!(parse_timeout(b"10x"), None);
        assert_eq!(parse_timeout(b"S"), None);
    }

    #[test]
    fn rejections() {
        let h = headers(&grpc_headers("/cache.Cache/Nope"));
        match parse_call(&h) {
            Err(Rejection::Grpc(s)) => {
                assert_eq!(s.code, Code::Unimplemented);
                assert!(s.message.contains("/cache.Cache/Nope"));
            }
            other => panic!("{other:?}"),
        }
        let mut f = grpc_headers("/cache.Cache/Get");
        f[3] = ("content-type", "text/plain");
        assert_eq!(parse_call(&headers(&f)), Err(Rejection::Http(415)));
        let mut f = grpc_headers("/cache.Cache/Get");
        f[0] = (":method", "GET");
        assert_eq!(parse_call(&headers(&f)), Err(Rejection::Http(405)));
        let mut f = grpc_headers("/cache.Cache/Get");
        f.push(("grpc-encoding", "gzip"));
        match parse_call(&headers(&f)) {
            Err(Rejection::Grpc(s)) => assert_eq!(s.code, Code::Unimplemented),
            other => panic!("{other:?}"),
        }
        let mut f = grpc_headers("/cache.Cache/Get");
        f[3] = ("content-type", "application/grpc+json");
        match parse_call(&headers(&f)) {
            Err(Rejection::Grpc(s)) => {
                assert_eq!(s.code, Code::Unimplemented);
                assert!(s.message.contains("application/grpc+json"), "{}", s.message);
            }
            other => panic!("{other:?}"),
        }
        f[3] = ("content-type", "application/grpc+proto;charset=utf-8");
        assert!(parse_call(&headers(&f)).is_ok());
        f[3] = ("content-type", "application/grpc+proto");
        assert!(parse_call(&headers(&f)).is_ok());
    }

    #[test]
    fn unframing() {
        let mut v = Vec::new();
        frame_message(&crate::proto::SetResponse { stored: true }, &mut v);
        assert_eq!(v, [0, 0, 0, 0, 2, 8, 1]);
        assert_eq!(
            unframe(Bytes::from(v.clone()), 100).unwrap(),
            Bytes::from_static(&[8, 1])
        );
        assert_eq!(
            unframe(Bytes::from(v.clone()), 1).unwrap_err().code,
            Code::ResourceExhausted
        );
        let mut c = v.clone();
        c[0] = 1;
        assert_eq!(
            unframe(Bytes::from(c), 100).unwrap_err().code,
            Code::Unimplemented
        );
        assert_eq!(
            unframe(Bytes::new(), 100).unwrap_err().code,
            Code::InvalidArgument
        );
        let mut two = v.clone();
        two.extend_from_slice(&v);
        assert_eq!(
            unframe(Bytes::from(two), 100).unwrap_err().code,
            Code::InvalidArgument
        );
    }

    #[test]
    fn get_response_matches_prost() {
        for value in [
            None,
            Some(&b""[..]),
            Some(&b"hello"[..]),
            Some(&[7u8; 300][..]),
        ] {
            let mut ours = Vec::new();
            frame_get_response(value, &mut ours);
            let mut theirs = Vec::new();
            let msg = GetResponse {
                value: value.unwrap_or_default().to_vec(),
                found: value.is_some(),
            };
            frame_message(&msg, &mut theirs);
            assert_eq!(ours, theirs, "value {value:?}");
            assert_eq!(GetResponse::decode(&ours[5..]).unwrap(), msg);
        }
    }

    #[test]
    fn percent_encoding() {
        let mut out = Vec::new();
        percent_encode("key is 100% empty\n€".as_bytes(), &mut out);
        assert_eq!(out, b"key is 100%25 empty%0A%E2%82%AC");
    }
}
