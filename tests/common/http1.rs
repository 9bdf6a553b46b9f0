//! A minimal HTTP/1.1 client over a raw TCP socket, for gateway tests that
//! a real client library will not send: pipelined requests, malformed
//! heads, chunked uploads in pieces, `Expect: 100-continue` answered by
//! hand. Written from RFC 9112; shares no code with the server. Responses
//! are framed by Content-Length (the server never sends chunked) or by
//! the status (1xx, 204, 304 and answers to HEAD have no body).

#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    /// Names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// `Connection: close` was sent.
    pub fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

/// How a read ended when no response came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The server closed the connection (EOF or reset).
    Closed,
    /// Nothing within the deadline.
    TimedOut,
}

pub struct Conn {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    pub fn connect(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect to the gateway at {addr}: {e}"));
        stream.set_nodelay(true).unwrap();
        Conn {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to the gateway");
    }

    /// Sends a request with `Host` and, when `body` is given, Content-Length.
    pub fn request(&mut self, method: &str, target: &str, body: Option<&[u8]>) {
        self.send(&request_bytes(method, target, &[], body));
    }

    /// The next response; `head` when it answers a HEAD request.
    pub fn read_response(&mut self, head: bool, timeout: Duration) -> Result<Response, End> {
        let deadline = Instant::now() + timeout;
        let end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i;
            }
            self.fill(deadline)?;
        };
        let head_text = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        let mut lines = head_text.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default();
        assert_eq!(version, "HTTP/1.1", "status line {status_line:?}");
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let reason = parts.next().unwrap_or_default().to_string();
        let headers: Vec<(String, String)> = lines
            .map(|l| {
                let (n, v) = l
                    .split_once(':')
                    .unwrap_or_else(|| panic!("bad header line {l:?}"));
                (n.trim().to_ascii_lowercase(), v.trim().to_string())
            })
            .collect();
        self.buf.drain(..end + 4);
        let mut resp = Response {
            status,
            reason,
            headers,
            body: Vec::new(),
        };
        let bodiless = head || (100..200).contains(&status) || status == 204 || status == 304;
        if !bodiless {
            let len: usize = resp
                .header("content-length")
                .unwrap_or_else(|| panic!("a {status} response without Content-Length"))
                .parse()
                .expect("Content-Length is a number");
            while self.buf.len() < len {
                self.fill(deadline)?;
            }
            resp.body = self.buf.drain(..len).collect();
        }
        Ok(resp)
    }

    /// Reads a response that must come.
    pub fn expect_response(&mut self, head: bool) -> Response {
        self.read_response(head, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("no response: {e:?}"))
    }

    /// True when the server closed the connection within `timeout` with no
    /// further bytes.
    pub fn closed_within(&mut self, timeout: Duration) -> bool {
        match self.fill(Instant::now() + timeout) {
            Err(End::Closed) => self.buf.is_empty(),
            Err(End::TimedOut) => false,
            Ok(()) => panic!(
                "unexpected bytes while waiting for the close: {:?}",
                String::from_utf8_lossy(&self.buf)
            ),
        }
    }

    /// Bytes received and not yet consumed as a response.
    pub fn pending(&self) -> &[u8] {
        &self.buf
    }

    fn fill(&mut self, deadline: Instant) -> Result<(), End> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(End::TimedOut);
        }
        self.stream.set_read_timeout(Some(left)).unwrap();
        let mut chunk = [0u8; 65536];
        match self.stream.read(&mut chunk) {
            Ok(0) => Err(End::Closed),
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                Err(End::TimedOut)
            }
            Err(_) => Err(End::Closed),
        }
    }
}

/// The bytes of one request: request line, `Host`, `extra` headers,
/// Content-Length when there is a body, then the body.
pub fn request_bytes(
    method: &str,
    target: &str,
    extra: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Vec<u8> {
    let mut out = format!("{method} {target} HTTP/1.1\r\nHost: test\r\n").into_bytes();
    for (n, v) in extra {
        out.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
    }
    if let Some(b) = body {
        out.extend_from_slice(format!("Content-Length: {}\r\n", b.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    if let Some(b) = body {
        out.extend_from_slice(b);
    }
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
