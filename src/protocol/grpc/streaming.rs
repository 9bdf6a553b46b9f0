//! Streaming gRPC calls: which paths are streaming methods (the HTTP/2
//! layer asks this when a stream's HEADERS arrive), and the incremental
//! deframer that cuts a stream's DATA payloads into length-prefixed
//! messages as they arrive. Pure: bytes in, messages or a status out.

use super::{too_large, Code, Status};
use bytes::{Buf, Bytes, BytesMut};

/// The streaming methods we serve. Kept apart from the unary
/// [`super::Method`]: their requests arrive piecewise and are answered
/// piecewise, so they go through another path of the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamingMethod {
    /// `grpc.health.v1.Health/Watch`: one request, a stream of statuses.
    HealthWatch,
    /// `grpc.reflection.v1.ServerReflection/ServerReflectionInfo`: bidi.
    ReflectionV1,
    /// The same under its older package name `grpc.reflection.v1alpha`.
    ReflectionV1Alpha,
    /// `cache.Cache/WatchTopology`: one request, the topology at once and
    /// again whenever the ring changes.
    WatchTopology,
}

impl StreamingMethod {
    pub fn from_path(path: &[u8]) -> Option<StreamingMethod> {
        match path {
            b"/grpc.health.v1.Health/Watch" => Some(StreamingMethod::HealthWatch),
            b"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo" => {
                Some(StreamingMethod::ReflectionV1)
            }
            b"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo" => {
                Some(StreamingMethod::ReflectionV1Alpha)
            }
            WATCH_TOPOLOGY => Some(StreamingMethod::WatchTopology),
            _ => None,
        }
    }
}

/// For `ServerSettings::is_streaming`: true for the paths of
/// [`StreamingMethod`]. Every other path, known or not, stays unary (an
/// unknown one is answered UNIMPLEMENTED on the unary path).
pub fn is_streaming_path(path: &[u8]) -> bool {
    // Cheap first test: every streaming path but one starts with "/grpc.",
    // so no other cache.Cache call pays for the full comparison.
    (path.starts_with(b"/grpc.") && StreamingMethod::from_path(path).is_some())
        || path == WATCH_TOPOLOGY
}

const WATCH_TOPOLOGY: &[u8] = b"/cache.Cache/WatchTopology";

/// Cuts a stream of DATA payloads into gRPC messages: a 5-byte prefix
/// (compressed flag, big-endian length) then the message, which may span
/// DATA frames, several of which may share one frame. Holds at most one
/// partial message (bounded by `max_message`) plus the last payload pushed.
#[derive(Debug)]
pub struct Deframer {
    buf: BytesMut,
    max_message: usize,
}

impl Deframer {
    pub fn new(max_message: usize) -> Deframer {
        Deframer {
            buf: BytesMut::new(),
            max_message,
        }
    }

    /// Appends received bytes; take the messages out with [`Deframer::next_message`].
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete message, `Ok(None)` while more bytes are needed.
    /// An error (compressed or oversized message) leaves the stream
    /// unusable: the call must end with that status.
    pub fn next_message(&mut self) -> Result<Option<Bytes>, Status> {
        let Some(prefix) = self.buf.get(..5) else {
            return Ok(None);
        };
        let flag = prefix[0];
        let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
        match flag {
            0 => {}
            1 => {
                return Err(Status::new(
                    Code::Unimplemented,
                    "compressed messages are not supported (grpc-accept-encoding: identity)",
                ))
            }
            other => {
                return Err(Status::new(
                    Code::InvalidArgument,
                    format!("invalid message compression flag {other}"),
                ))
            }
        }
        // Checked from the prefix, before the body is buffered.
        if len > self.max_message {
            return Err(too_large(len, self.max_message));
        }
        if self.buf.len() - 5 < len {
            return Ok(None);
        }
        self.buf.advance(5);
        Ok(Some(self.buf.split_to(len).freeze()))
    }

    /// True when no partial message is buffered: a client half-closing
    /// now ended its stream cleanly.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(msg: &[u8]) -> Vec<u8> {
        let mut v = vec![0];
        v.extend_from_slice(&(msg.len() as u32).to_be_bytes());
        v.extend_from_slice(msg);
        v
    }

    fn drain(d: &mut Deframer) -> Vec<Bytes> {
        let mut out = Vec::new();
        while let Some(m) = d.next_message().unwrap() {
            out.push(m);
        }
        out
    }

    #[test]
    fn paths() {
        assert!(is_streaming_path(b"/grpc.health.v1.Health/Watch"));
        assert!(is_streaming_path(
            b"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
        ));
        assert!(!is_streaming_path(b"/grpc.health.v1.Health/Check"));
        assert!(!is_streaming_path(b"/cache.Cache/Get"));
        assert!(is_streaming_path(b"/cache.Cache/WatchTopology"));
        assert!(!is_streaming_path(b"/cache.Cache/Topology"));
        assert_eq!(
            StreamingMethod::from_path(
                b"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
            ),
            Some(StreamingMethod::ReflectionV1)
        );
    }

    #[test]
    fn message_spanning_frames_byte_by_byte() {
        let mut d = Deframer::new(100);
        let wire = framed(b"hello world");
        for (i, b) in wire.iter().enumerate() {
            assert!(d.next_message().unwrap().is_none(), "byte {i}");
            d.push(&[*b]);
        }
        assert_eq!(drain(&mut d), vec![Bytes::from_static(b"hello world")]);
        assert!(d.is_empty());
    }

    #[test]
    fn several_messages_in_one_frame_and_a_partial_one() {
        let mut d = Deframer::new(100);
        let mut wire = framed(b"a");
        wire.extend(framed(b""));
        wire.extend(framed(b"ccc"));
        let tail = framed(b"dddd");
        wire.extend_from_slice(&tail[..3]);
        d.push(&wire);
        assert_eq!(
            drain(&mut d),
            vec![
                Bytes::from_static(b"a"),
                Bytes::new(),
                Bytes::from_static(b"ccc")
            ]
        );
        assert!(!d.is_empty(), "a partial prefix is held");
        d.push(&tail[3..]);
        assert_eq!(drain(&mut d), vec![Bytes::from_static(b"dddd")]);
        assert!(d.is_empty());
    }

    #[test]
    fn compressed_flag_and_bad_flag() {
        let mut wire = framed(b"x");
        wire[0] = 1;
        let mut d = Deframer::new(100);
        d.push(&wire);
        assert_eq!(d.next_message().unwrap_err().code, Code::Unimplemented);
        wire[0] = 7;
        let mut d = Deframer::new(100);
        d.push(&wire);
        assert_eq!(d.next_message().unwrap_err().code, Code::InvalidArgument);
    }

    #[test]
    fn size_limit_is_checked_from_the_prefix() {
        let mut d = Deframer::new(4);
        d.push(&framed(b"1234"));
        assert_eq!(drain(&mut d), vec![Bytes::from_static(b"1234")]);
        // Only the prefix of a 5-byte message: refused before its body comes.
        d.push(&framed(b"12345")[..5]);
        assert_eq!(d.next_message().unwrap_err().code, Code::ResourceExhausted);
        let mut d = Deframer::new(4);
        d.push(&[0, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(d.next_message().unwrap_err().code, Code::ResourceExhausted);
    }
}
