//! The client side of HTTP/1.1, as much as loading a value from an origin
//! needs: a GET request encoder and an incremental response decoder
//! (status, and a body framed by Content-Length, chunked, or the end of the
//! connection). Heads are parsed by `httparse`, chunked bodies by the same
//! decoder the server side uses.

use super::chunked::Chunked;
use super::{Http1Error, Limits};
use bytes::{Buf, Bytes, BytesMut};

/// A complete response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Bytes,
}

/// Writes `GET {path} HTTP/1.1` for `host`, asking the server to close the
/// connection after the response.
pub fn encode_get(out: &mut Vec<u8>, host: &str, path: &str) {
    out.extend_from_slice(b"GET ");
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(host.as_bytes());
    out.extend_from_slice(
        b"\r\nUser-Agent: shardcache\r\nAccept: */*\r\nConnection: close\r\n\r\n",
    );
}

#[derive(Debug, Default)]
enum State {
    #[default]
    Head,
    Length {
        status: u16,
        left: usize,
        body: BytesMut,
    },
    Chunked {
        status: u16,
        chunked: Chunked,
    },
    UntilClose {
        status: u16,
        body: BytesMut,
    },
}

/// Decodes one response, fed as bytes arrive.
#[derive(Debug)]
pub struct ResponseDecoder {
    limits: Limits,
    state: State,
}

impl ResponseDecoder {
    pub fn new(limits: Limits) -> ResponseDecoder {
        ResponseDecoder {
            limits,
            state: State::Head,
        }
    }

    /// The response once complete; None while more bytes are needed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Response>, Http1Error> {
        loop {
            match &mut self.state {
                State::Head => {
                    let Some(next) = self.head(buf)? else {
                        return Ok(None);
                    };
                    self.state = next;
                }
                State::Length { status, left, body } => {
                    let n = (*left).min(buf.len());
                    body.extend_from_slice(&buf[..n]);
                    buf.advance(n);
                    *left -= n;
                    if *left > 0 {
                        return Ok(None);
                    }
                    let r = Response {
                        status: *status,
                        body: std::mem::take(body).freeze(),
                    };
                    self.state = State::Head;
                    return Ok(Some(r));
                }
                State::Chunked { status, chunked } => {
                    let status = *status;
                    let Some(body) = chunked.decode(buf, &self.limits)? else {
                        return Ok(None);
                    };
                    self.state = State::Head;
                    return Ok(Some(Response { status, body }));
                }
                State::UntilClose { body, .. } => {
                    if body.len() + buf.len() > self.limits.max_body {
                        return Err(too_large(self.limits.max_body));
                    }
                    body.extend_from_slice(buf);
                    buf.clear();
                    return Ok(None);
                }
            }
        }
    }

    /// The connection ended: a close-delimited body is complete now; any
    /// other unfinished response is an error.
    pub fn finish(&mut self) -> Result<Response, Http1Error> {
        match std::mem::take(&mut self.state) {
            State::UntilClose { status, body } => Ok(Response {
                status,
                body: body.freeze(),
            }),
            State::Head => Err(Http1Error::bad("connection closed before a response")),
            _ => Err(Http1Error::bad(
                "connection closed in the middle of the body",
            )),
        }
    }

    fn head(&self, buf: &mut BytesMut) -> Result<Option<State>, Http1Error> {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        // Only the first max_head bytes are ever parsed, so a head over the
        // limit is refused whether it arrived whole or in pieces.
        let cut = buf.len().min(self.limits.max_head);
        let n = match resp.parse(&buf[..cut]) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => {
                if buf.len() > self.limits.max_head {
                    return Err(Http1Error::new(
                        502,
                        format!("response head over {} bytes", self.limits.max_head),
                    ));
                }
                return Ok(None);
            }
            Err(e) => return Err(Http1Error::bad(format!("malformed response head: {e}"))),
        };
        let status = resp.code.unwrap_or(0);
        let mut length: Option<usize> = None;
        let mut chunked = false;
        for h in resp.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                let v = std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .ok_or_else(|| Http1Error::bad("invalid Content-Length in response"))?;
                if length.is_some_and(|l| l != v) {
                    return Err(Http1Error::bad("conflicting Content-Length in response"));
                }
                length = Some(v);
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                let v = String::from_utf8_lossy(h.value).to_ascii_lowercase();
                if v.trim() != "chunked" {
                    return Err(Http1Error::new(
                        501,
                        format!("unsupported transfer coding in response: {v}"),
                    ));
                }
                chunked = true;
            }
        }
        buf.advance(n);
        if (100..200).contains(&status) {
            // An interim response (100 Continue): the real one follows.
            return Ok(Some(State::Head));
        }
        if length.is_some_and(|l| l > self.limits.max_body) {
            return Err(too_large(self.limits.max_body));
        }
        Ok(Some(if chunked {
            State::Chunked {
                status,
                chunked: Chunked::default(),
            }
        } else if let Some(left) = length {
            State::Length {
                status,
                left,
                body: BytesMut::with_capacity(left),
            }
        } else if status == 204 || status == 304 {
            State::Length {
                status,
                left: 0,
                body: BytesMut::new(),
            }
        } else {
            State::UntilClose {
                status,
                body: BytesMut::new(),
            }
        }))
    }
}

fn too_large(limit: usize) -> Http1Error {
    Http1Error::new(
        413,
        format!("response body exceeds the limit of {limit} bytes"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_head: 4096,
            max_headers: 64,
            max_body: 1 << 20,
            max_post_body: 1 << 20,
        }
    }

    fn decode_all(wire: &[u8], split: usize) -> Result<Response, Http1Error> {
        let mut d = ResponseDecoder::new(limits());
        let mut buf = BytesMut::new();
        for piece in wire.chunks(split.max(1)) {
            buf.extend_from_slice(piece);
            if let Some(r) = d.decode(&mut buf)? {
                return Ok(r);
            }
        }
        d.finish()
    }

    /// Found by the http1_decode fuzz target: a head over the limit was
    /// accepted when it arrived in one read, refused when it trickled in.
    #[test]
    fn head_limit_does_not_depend_on_the_split() {
        let wire = b"HTTP/1.1 404 Not Found\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\nContent-Length: 2\r\n\r\nok";
        let small = Limits {
            max_head: 64,
            ..limits()
        };
        for split in [1, 7, 64, wire.len()] {
            let mut d = ResponseDecoder::new(small);
            let mut buf = BytesMut::new();
            let mut got = Ok(None);
            for piece in wire.chunks(split) {
                buf.extend_from_slice(piece);
                got = d.decode(&mut buf);
                if got.is_err() {
                    break;
                }
            }
            assert_eq!(got.unwrap_err().status, 502, "split {split}");
        }
        // Within the limit, the same response decodes.
        assert_eq!(decode_all(wire, 5).unwrap().body, &b"ok"[..]);
    }

    #[test]
    fn request_line() {
        let mut out = Vec::new();
        encode_get(&mut out, "origin:9000", "/users/a%2Fb");
        assert!(out.starts_with(b"GET /users/a%2Fb HTTP/1.1\r\nHost: origin:9000\r\n"));
        assert!(out.ends_with(b"Connection: close\r\n\r\n"));
    }

    #[test]
    fn bodies_by_length_chunked_and_close_in_any_split() {
        let cases: [(&[u8], u16, &[u8]); 5] = [
            (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", 200, b"hello"),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n",
                200,
                b"hello",
            ),
            (b"HTTP/1.0 200 OK\r\n\r\nuntil close", 200, b"until close"),
            (b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", 404, b""),
            (
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 500 Oops\r\nContent-Length: 2\r\n\r\nno",
                500,
                b"no",
            ),
        ];
        for (wire, status, body) in cases {
            for split in [1, 2, 7, wire.len()] {
                let r = decode_all(wire, split).unwrap();
                assert_eq!((r.status, &r.body[..]), (status, body), "{split}");
            }
        }
    }

    #[test]
    fn bad_and_oversized_responses_are_errors() {
        assert!(decode_all(b"NOT HTTP\r\n\r\n", 100).is_err());
        assert!(decode_all(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", 100).is_err());
        assert!(decode_all(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort", 100).is_err());
        let big = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", 2 << 20);
        assert_eq!(decode_all(big.as_bytes(), 100).unwrap_err().status, 413);
        let mut close = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
        close.extend(std::iter::repeat_n(b'x', (1 << 20) + 1));
        assert_eq!(decode_all(&close, 4096).unwrap_err().status, 413);
        assert!(decode_all(b"", 1).is_err());
        assert_eq!(
            decode_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", 100)
                .unwrap_err()
                .status,
            501
        );
    }
}
