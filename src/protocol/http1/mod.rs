//! HTTP/1.1, server side (RFC 9112), for the gateway: bytes in, typed
//! requests out, and an encoder for responses. No sockets, no clock.
//!
//! - `decode.rs`: the incremental [`Decoder`]; request heads are parsed by
//!   `httparse` (hand-parsed HTTP/1 is a classic source of smuggling bugs),
//!   the framing rules around it (Content-Length, Transfer-Encoding,
//!   keep-alive, `Expect`) are ours.
//! - `chunked.rs`: the chunked transfer coding, one byte scanned once.
//! - `encode.rs`: status line, Content-Length, Connection.
//! - `response.rs`: the client side, for loading from an HTTP origin: a GET
//!   encoder and a response decoder.
//!
//! An [`Http1Error`] means the request's framing could not be trusted: the
//! caller answers with its status (see [`encode_error`]) and closes the
//! connection, because where the next request starts is no longer known.
//! The decoder keeps returning an error after the first one.

mod chunked;
mod decode;
mod encode;
mod response;
#[cfg(test)]
mod tests;

pub use decode::{Decoder, HEADER_SLOTS};
pub use encode::{
    allows_body, encode_error, encode_head_response, encode_response, reason_phrase, CONTINUE,
};
pub use response::{encode_get, Response, ResponseDecoder};

use bytes::Bytes;
use std::fmt;

/// What one connection accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Request line plus header fields, and separately the trailer section
    /// of a chunked body; more is 431.
    pub max_head: usize,
    /// Header fields per request (at most [`HEADER_SLOTS`]); more is 431.
    pub max_headers: usize,
    /// Body bytes after de-chunking; more is 413, detected before buffering.
    pub max_body: usize,
    /// The same for POST requests (the gateway's batch calls carry many
    /// values in one body; a PUT carries one).
    pub max_post_body: usize,
}

impl Limits {
    /// The body limit of a request with this method.
    pub fn max_body_for(&self, method: &Method) -> usize {
        match method {
            Method::Post => self.max_post_body,
            _ => self.max_body,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head: 16 << 10,
            max_headers: 64,
            max_body: 4 << 20,
            max_post_body: 4 << 20,
        }
    }
}

/// The request method. Methods are case-sensitive (RFC 9110 §9.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Put,
    Post,
    Delete,
    Other(String),
}

impl Method {
    fn parse(m: &str) -> Method {
        match m {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "PUT" => Method::Put,
            "POST" => Method::Post,
            "DELETE" => Method::Delete,
            other => Method::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Put => "PUT",
            Method::Post => "POST",
            Method::Delete => "DELETE",
            Method::Other(m) => m,
        }
    }
}

/// One complete request, body included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    /// The request target as sent: path and query, not decoded.
    pub target: String,
    /// Minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    pub host: Option<String>,
    pub content_type: Option<String>,
    /// Whether the connection may carry another request after this one:
    /// HTTP/1.1 unless `Connection: close`, HTTP/1.0 only with
    /// `Connection: keep-alive`.
    pub keep_alive: bool,
    pub body: Bytes,
}

/// A request that cannot be decoded; the connection must be closed after
/// answering with `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Http1Error {
    /// 400, 413, 431, 501 or 505.
    pub status: u16,
    /// One line for a human: what was wrong.
    pub reason: String,
}

impl Http1Error {
    fn new(status: u16, reason: impl Into<String>) -> Http1Error {
        Http1Error {
            status,
            reason: reason.into(),
        }
    }

    fn bad(reason: impl Into<String>) -> Http1Error {
        Http1Error::new(400, reason)
    }
}

impl fmt::Display for Http1Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status,
            reason_phrase(self.status),
            self.reason
        )
    }
}

impl std::error::Error for Http1Error {}
