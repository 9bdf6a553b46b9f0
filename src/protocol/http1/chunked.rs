//! The chunked transfer coding of a request body (RFC 9112 §7.1), decoded
//! incrementally: each call consumes what it can from the input and keeps
//! its place, so every byte is looked at once however the body is split.
//!
//! Strict where leniency lets two parsers disagree about where a body ends
//! (the root of request smuggling): lines end in CRLF, never a bare LF or
//! CR; chunk sizes are hex digits only, checked for overflow. Extensions and
//! trailer fields are skipped, within bounds.

use super::{Http1Error, Limits};
use bytes::{Buf, Bytes, BytesMut};

/// Longest chunk-size line, extensions included.
const MAX_SIZE_LINE: usize = 4096;

#[derive(Debug, Default)]
pub(super) struct Chunked {
    state: State,
    body: BytesMut,
    /// Bytes at the front of the input already searched for a line's LF.
    scanned: usize,
    trailer_bytes: usize,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Expecting a chunk-size line.
    #[default]
    Size,
    /// Inside a chunk's data, with this many bytes to go.
    Data(u64),
    /// After a chunk's data: its CRLF.
    DataEnd,
    /// After the last chunk: trailer lines up to an empty one.
    Trailer,
}

impl Chunked {
    /// Consumes body bytes from `buf`; the whole de-chunked body once the
    /// last chunk and the trailer section are in, leaving what follows.
    pub(super) fn decode(
        &mut self,
        buf: &mut BytesMut,
        limits: &Limits,
    ) -> Result<Option<Bytes>, Http1Error> {
        loop {
            match self.state {
                State::Size => {
                    let Some(n) = self.line(buf, MAX_SIZE_LINE).map_err(|()| {
                        Http1Error::bad(format!(
                            "chunk-size line longer than {MAX_SIZE_LINE} bytes"
                        ))
                    })?
                    else {
                        return Ok(None);
                    };
                    let size = parse_size_line(buf.get(..n).unwrap_or_default())?;
                    buf.advance(n);
                    let room = limits.max_body.saturating_sub(self.body.len());
                    if size > room as u64 {
                        return Err(Http1Error::new(
                            413,
                            format!(
                                "chunked body exceeds the limit of {} bytes",
                                limits.max_body
                            ),
                        ));
                    }
                    self.state = if size == 0 {
                        State::Trailer
                    } else {
                        self.body.reserve(size as usize);
                        State::Data(size)
                    };
                }
                State::Data(left) => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    let n = left.min(buf.len() as u64) as usize;
                    self.body
                        .extend_from_slice(buf.get(..n).unwrap_or_default());
                    buf.advance(n);
                    let left = left - n as u64;
                    self.state = if left == 0 {
                        State::DataEnd
                    } else {
                        State::Data(left)
                    };
                }
                State::DataEnd => {
                    if buf.len() < 2 && b"\r\n".starts_with(&buf[..]) {
                        return Ok(None);
                    }
                    if !buf.starts_with(b"\r\n") {
                        return Err(Http1Error::bad("chunk data not followed by CRLF"));
                    }
                    buf.advance(2);
                    self.state = State::Size;
                }
                State::Trailer => {
                    let room = limits.max_head.saturating_sub(self.trailer_bytes);
                    let Some(n) = self.line(buf, room).map_err(|()| {
                        Http1Error::new(
                            431,
                            format!("trailer section larger than {} bytes", limits.max_head),
                        )
                    })?
                    else {
                        return Ok(None);
                    };
                    let field = buf
                        .get(..n)
                        .and_then(|line| line.strip_suffix(b"\r\n"))
                        .filter(|field| !field.contains(&b'\r'));
                    let Some(field) = field else {
                        return Err(Http1Error::bad("trailer line not terminated by CRLF"));
                    };
                    let last = field.is_empty();
                    buf.advance(n);
                    if last {
                        self.state = State::Size;
                        return Ok(Some(std::mem::take(&mut self.body).freeze()));
                    }
                    self.trailer_bytes += n;
                }
            }
        }
    }

    /// The length, LF included, of the line at the front of `buf`, if it is
    /// all there. Err when the line is, or will be, longer than `max`.
    fn line(&mut self, buf: &BytesMut, max: usize) -> Result<Option<usize>, ()> {
        let from = self.scanned.min(buf.len());
        match buf
            .get(from..)
            .and_then(|rest| rest.iter().position(|&b| b == b'\n'))
        {
            Some(i) => {
                self.scanned = 0;
                let n = from + i + 1;
                if n > max {
                    return Err(());
                }
                Ok(Some(n))
            }
            None => {
                self.scanned = buf.len();
                if buf.len() > max {
                    return Err(());
                }
                Ok(None)
            }
        }
    }
}

/// `chunk-size [ chunk-ext ] CRLF`: hex digits, then optionally
/// whitespace and `;`-led extensions, which are ignored.
fn parse_size_line(line: &[u8]) -> Result<u64, Http1Error> {
    let Some(line) = line.strip_suffix(b"\r\n") else {
        return Err(Http1Error::bad("chunk-size line not terminated by CRLF"));
    };
    if line.contains(&b'\r') {
        return Err(Http1Error::bad("bare CR in chunk-size line"));
    }
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    let (hex, rest) = line.split_at_checked(digits).unwrap_or((line, b""));
    if hex.is_empty() {
        return Err(Http1Error::bad("chunk size is not a hexadecimal number"));
    }
    let mut size: u64 = 0;
    for &d in hex {
        let v = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            _ => d - b'A' + 10,
        };
        size = size
            .checked_mul(16)
            .and_then(|s| s.checked_add(u64::from(v)))
            .ok_or_else(|| Http1Error::bad("chunk size overflows 64 bits"))?;
    }
    let ext = rest.trim_ascii_start();
    if !(rest.is_empty() || ext.starts_with(b";")) {
        return Err(Http1Error::bad("invalid characters after the chunk size"));
    }
    Ok(size)
}
