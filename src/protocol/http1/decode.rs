//! The request decoder: finds the end of a head, has `httparse` parse it,
//! applies the framing rules of RFC 9112 §6 to find the body, and collects
//! the body, keeping its place between calls.
//!
//! The head is searched for its blank line once per byte and handed to
//! `httparse` only when complete (or over the limit), so a head trickling
//! in byte by byte costs O(n), not O(n²). A body is never re-scanned.

use super::chunked::Chunked;
use super::{Http1Error, Limits, Method, Request};
use bytes::{Buf, Bytes, BytesMut};

/// Header slots on the stack per parse; `Limits::max_headers` above this
/// is treated as this.
pub const HEADER_SLOTS: usize = 128;

/// Decodes the requests of one connection, in order.
#[derive(Debug)]
pub struct Decoder {
    limits: Limits,
    state: State,
    expect_continue: bool,
}

#[derive(Debug)]
enum State {
    /// Waiting for a complete head; `scanned` bytes of the input hold no
    /// end of head (a search resumes there).
    Head {
        scanned: usize,
    },
    /// Head decoded, waiting for `len` body bytes.
    Fixed {
        req: Request,
        len: usize,
    },
    Chunked {
        req: Request,
        body: Chunked,
    },
    /// An error ended the framing; it is returned again.
    Failed(Http1Error),
}

/// How the body of a request is delimited.
enum Framing {
    Empty,
    Length(usize),
    Chunked,
}

impl Decoder {
    pub fn new(limits: Limits) -> Decoder {
        Decoder {
            limits,
            state: State::Head { scanned: 0 },
            expect_continue: false,
        }
    }

    /// Takes one complete request off the front of `buf`, leaving any
    /// pipelined bytes after it. `Ok(None)`: more input is needed (what was
    /// consumed is remembered). After an `Err` the connection must be closed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Request>, Http1Error> {
        let r = self.step(buf);
        if let Err(e) = &r {
            self.state = State::Failed(e.clone());
            self.expect_continue = false;
        }
        r
    }

    /// True once per request whose head asked `Expect: 100-continue` and
    /// whose body has not fully arrived: the caller writes [`super::CONTINUE`]
    /// (curl waits up to a second for it before sending a body over 1 KiB).
    pub fn take_expect_continue(&mut self) -> bool {
        std::mem::take(&mut self.expect_continue)
    }

    /// True when no request is part-way through its body: a connection may
    /// be closed here (idle, shutdown) if its input buffer is also empty.
    pub fn is_between_requests(&self) -> bool {
        matches!(self.state, State::Head { .. })
    }

    fn step(&mut self, buf: &mut BytesMut) -> Result<Option<Request>, Http1Error> {
        if let State::Head { scanned } = &mut self.state {
            let Some(end) = find_head_end(buf, scanned, &self.limits)? else {
                return Ok(None);
            };
            let (req, framing, expect) =
                parse_head(buf.get(..end).unwrap_or_default(), &self.limits)?;
            buf.advance(end);
            self.state = match framing {
                Framing::Empty => {
                    self.state = State::Head { scanned: 0 };
                    return Ok(Some(req));
                }
                Framing::Length(len) => {
                    // One allocation for the whole body, however it arrives.
                    buf.reserve(len.saturating_sub(buf.len()));
                    State::Fixed { req, len }
                }
                Framing::Chunked => State::Chunked {
                    req,
                    body: Chunked::default(),
                },
            };
            self.expect_continue = expect;
        }
        let body = match &mut self.state {
            State::Head { .. } => None,
            State::Fixed { len, .. } => (buf.len() >= *len).then(|| buf.split_to(*len).freeze()),
            State::Chunked { body, req } => {
                let limits = Limits {
                    max_body: self.limits.max_body_for(&req.method),
                    ..self.limits
                };
                body.decode(buf, &limits)?
            }
            State::Failed(e) => return Err(e.clone()),
        };
        let Some(body) = body else {
            return Ok(None);
        };
        match std::mem::replace(&mut self.state, State::Head { scanned: 0 }) {
            State::Fixed { mut req, .. } | State::Chunked { mut req, .. } => {
                req.body = body;
                // The body is here: a 100 Continue now would only be noise.
                self.expect_continue = false;
                Ok(Some(req))
            }
            _ => Ok(None),
        }
    }
}

/// The length of the head at the front of `buf` (through its blank line),
/// once it is all there. Empty lines before a request line are dropped
/// (RFC 9112 §2.2), so that they cannot pass for the end of a head.
fn find_head_end(
    buf: &mut BytesMut,
    scanned: &mut usize,
    limits: &Limits,
) -> Result<Option<usize>, Http1Error> {
    loop {
        let skip = if buf.starts_with(b"\r\n") {
            2
        } else if buf.starts_with(b"\n") {
            1
        } else {
            break;
        };
        buf.advance(skip);
        *scanned = scanned.saturating_sub(skip);
    }
    // A blank line is LF LF or LF CR LF (httparse accepts bare LF endings).
    let mut i = (*scanned).min(buf.len());
    let end = loop {
        let Some(lf) = buf
            .get(i..)
            .and_then(|r| r.iter().position(|&b| b == b'\n'))
        else {
            i = buf.len();
            break None;
        };
        let lf = i + lf;
        match (buf.get(lf + 1), buf.get(lf + 2)) {
            (Some(b'\n'), _) => break Some(lf + 2),
            (Some(b'\r'), Some(b'\n')) => break Some(lf + 3),
            (None, _) | (Some(b'\r'), None) => {
                i = lf; // look at this LF again when more has arrived
                break None;
            }
            _ => i = lf + 1,
        }
    };
    *scanned = i;
    match end {
        Some(end) if end <= limits.max_head => Ok(Some(end)),
        None if buf.len() <= limits.max_head => Ok(None),
        _ => {
            // Over the limit: a head that is malformed anyway says so.
            let cut = buf.get(..limits.max_head).unwrap_or_default();
            let mut slots = [httparse::EMPTY_HEADER; HEADER_SLOTS];
            if let Err(e) = httparse::Request::new(&mut slots).parse(cut) {
                if e != httparse::Error::TooManyHeaders {
                    return Err(head_error(e, cut, limits));
                }
            }
            Err(Http1Error::new(
                431,
                format!("request head larger than {} bytes", limits.max_head),
            ))
        }
    }
}

fn head_error(e: httparse::Error, head: &[u8], limits: &Limits) -> Http1Error {
    match e {
        httparse::Error::TooManyHeaders => Http1Error::new(
            431,
            format!(
                "more than {} header fields",
                limits.max_headers.min(HEADER_SLOTS)
            ),
        ),
        httparse::Error::Version => version_error(head),
        e => Http1Error::bad(format!("malformed request head: {e}")),
    }
}

/// httparse knows HTTP/1.0 and 1.1 only; anything else that looks like an
/// HTTP version is 505, the rest a malformed request line.
fn version_error(head: &[u8]) -> Http1Error {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let token = line.rsplit(|&b| b == b' ').next().unwrap_or_default();
    let looks_like_version = token.len() <= 16
        && token
            .strip_prefix(b"HTTP/")
            .is_some_and(|v| !v.is_empty() && v.iter().all(|&b| b.is_ascii_digit() || b == b'.'));
    if looks_like_version {
        Http1Error::new(
            505,
            format!(
                "{} is not supported: use HTTP/1.1 or HTTP/1.0",
                String::from_utf8_lossy(token)
            ),
        )
    } else {
        Http1Error::bad("malformed request line: expected METHOD TARGET HTTP/1.x")
    }
}

/// Parses a complete head and decides how its body is framed and whether
/// it asked for 100 Continue.
fn parse_head(head: &[u8], limits: &Limits) -> Result<(Request, Framing, bool), Http1Error> {
    let mut slots = [httparse::EMPTY_HEADER; HEADER_SLOTS];
    let n = limits.max_headers.min(HEADER_SLOTS);
    let mut parsed = httparse::Request::new(slots.get_mut(..n).unwrap_or_default());
    match parsed.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(Http1Error::bad("incomplete request head")),
        Err(e) => return Err(head_error(e, head, limits)),
    }
    let version = parsed.version.unwrap_or(1);
    let mut req = Request {
        method: Method::parse(parsed.method.unwrap_or_default()),
        target: parsed.path.unwrap_or_default().to_string(),
        version,
        host: None,
        content_type: None,
        keep_alive: false,
        body: Bytes::new(),
    };
    let mut length: Option<u64> = None;
    let mut coding = Coding::default();
    let (mut close, mut keep_alive, mut expect) = (false, false, false);
    for h in parsed.headers.iter() {
        let (name, value) = (h.name, h.value);
        if name.eq_ignore_ascii_case("content-length") {
            content_length(value, &mut length)?;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            coding.add(value);
        } else if name.eq_ignore_ascii_case("connection") {
            for token in list(value) {
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case("host") {
            if req.host.is_some() {
                return Err(Http1Error::bad("more than one Host header"));
            }
            req.host = Some(String::from_utf8_lossy(value).into_owned());
        } else if name.eq_ignore_ascii_case("content-type") {
            if req.content_type.is_none() {
                req.content_type = Some(String::from_utf8_lossy(value).into_owned());
            }
        } else if name.eq_ignore_ascii_case("expect") {
            expect |= value.eq_ignore_ascii_case(b"100-continue");
        }
    }
    if version == 1 && req.host.is_none() {
        return Err(Http1Error::bad("HTTP/1.1 request without a Host header"));
    }
    req.keep_alive = !close && (version == 1 || keep_alive);
    let framing = match (coding.seen, length) {
        (true, Some(_)) => {
            return Err(Http1Error::bad(
                "both Content-Length and Transfer-Encoding: the body length is ambiguous",
            ))
        }
        (true, None) => {
            coding.check(version)?;
            Framing::Chunked
        }
        (false, Some(0) | None) => Framing::Empty,
        (false, Some(len)) => {
            let max_body = limits.max_body_for(&req.method);
            if len > max_body as u64 {
                return Err(Http1Error::new(
                    413,
                    format!("body of {len} bytes exceeds the limit of {max_body} bytes"),
                ));
            }
            Framing::Length(len as usize)
        }
    };
    // RFC 9110 §10.1.1: an HTTP/1.0 client cannot expect 100 Continue.
    let expect = expect && version == 1 && !matches!(framing, Framing::Empty);
    Ok((req, framing, expect))
}

/// The elements of a comma-separated header list, whitespace trimmed,
/// empty elements skipped (RFC 9110 §5.6.1).
fn list(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// Folds one Content-Length field into `length`. A list of identical values
/// (`5, 5`, or repeated fields) is one value (RFC 9112 §6.3); differing
/// values, non-digits, empty values and overflow are errors.
fn content_length(value: &[u8], length: &mut Option<u64>) -> Result<(), Http1Error> {
    let mut any = false;
    for element in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
        any = true;
        if element.is_empty() || !element.iter().all(u8::is_ascii_digit) {
            return Err(Http1Error::bad("Content-Length is not a decimal number"));
        }
        let n = element
            .iter()
            .try_fold(0u64, |acc, &d| {
                acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
            })
            .ok_or_else(|| Http1Error::bad("Content-Length overflows 64 bits"))?;
        if length.is_some_and(|l| l != n) {
            return Err(Http1Error::bad("conflicting Content-Length values"));
        }
        *length = Some(n);
    }
    if !any {
        return Err(Http1Error::bad("empty Content-Length"));
    }
    Ok(())
}

/// The transfer codings named by every Transfer-Encoding field together.
#[derive(Default)]
struct Coding {
    seen: bool,
    chunked: usize,
    /// The first coding other than chunked.
    unknown: Option<String>,
}

impl Coding {
    fn add(&mut self, value: &[u8]) {
        self.seen = true;
        for token in list(value) {
            if token.eq_ignore_ascii_case(b"chunked") {
                self.chunked += 1;
            } else if self.unknown.is_none() {
                self.unknown = Some(String::from_utf8_lossy(token).into_owned());
            }
        }
    }

    /// Only `chunked`, exactly once, is supported; HTTP/1.0 has no
    /// Transfer-Encoding at all (RFC 9112 §6.1 calls its framing faulty).
    fn check(&self, version: u8) -> Result<(), Http1Error> {
        if version == 0 {
            return Err(Http1Error::bad("Transfer-Encoding in an HTTP/1.0 request"));
        }
        if let Some(c) = &self.unknown {
            return Err(Http1Error::new(
                501,
                format!("transfer coding '{c}' is not supported (only chunked)"),
            ));
        }
        match self.chunked {
            0 => Err(Http1Error::bad("empty Transfer-Encoding")),
            1 => Ok(()),
            _ => Err(Http1Error::bad("chunked applied more than once")),
        }
    }
}
