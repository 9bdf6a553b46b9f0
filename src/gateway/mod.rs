//! The HTTP gateway's routes: what a decoded [`http1::Request`] asks the
//! node to do ([`route`]), and the HTTP response for what came of it
//! ([`respond`]). Pure: the connection loop decodes, calls these, executes
//! the operation on the owner shard and writes the bytes.
//!
//! | request | route |
//! |---|---|
//! | `GET`/`HEAD /v1/{group}/{key}` | [`CacheOp::Get`] |
//! | `PUT /v1/{group}/{key}[?ttl_ms=N]`, body = value | [`CacheOp::Set`] |
//! | `DELETE /v1/{group}/{key}` | [`CacheOp::Delete`] |
//! | `GET`/`HEAD /metrics`, `/healthz`, `/readyz` | [`Route::Metrics`] … |
//! | `POST /v1/getMany`, `/v1/setMany`, `/v1/deleteMany`, JSON body | [`Route::Batch`] ([`batch`]) |
//!
//! The path after `/v1/` is exactly two segments split on a literal `/`,
//! each then percent-decoded on its own, so a `/` inside a key or group is
//! written `%2F` and there is no other way to write one. The raw segment
//! `_` is the default group `""`; `%5F` is a group named `_`. Keys are
//! 1..=4096 bytes of UTF-8 after decoding (the gRPC contract). `ttl_ms=0`
//! (or none) never expires. Any other query parameter is an error, so a
//! typo is not silently ignored.
//!
//! Every error is one line of `text/plain` saying what was wrong, with the
//! status: 400 bad group/key/ttl/query, 404 unknown path, 405 known path
//! with another method (with `Allow`), 413 value over `--max-value`.

use crate::protocol::grpc::{self, Code};
use crate::protocol::http1::{self, Method};
use crate::protocol::{CacheOp, Invalid};

pub mod batch;
#[cfg(test)]
mod tests;

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// A cache operation. For a HEAD request the op is `Get`; answer with
    /// `respond(.., head = true, ..)`.
    Cache(CacheOp),
    /// A batch call; its items are in the body ([`batch::parse`]).
    Batch(grpc::Method),
    Metrics,
    Healthz,
    Readyz,
}

/// A response whose body is one line of text: every error, and the
/// health endpoints' answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// The `Allow` header of a 405.
    pub allow: Option<&'static str>,
    /// The body, without its final newline.
    pub message: String,
}

impl Response {
    pub fn new(status: u16, message: impl Into<String>) -> Response {
        Response {
            status,
            allow: None,
            message: message.into(),
        }
    }

    /// Appends this response; no body for a HEAD request.
    pub fn encode(&self, out: &mut Vec<u8>, head: bool, keep_alive: bool) {
        text(
            out,
            head,
            self.status,
            self.allow,
            &self.message,
            keep_alive,
        );
    }
}

/// The `Content-Type` of Prometheus' text exposition format.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

const ALLOW_CACHE: &str = "GET, HEAD, PUT, DELETE";
const ALLOW_READ: &str = "GET, HEAD";

/// Maps a request to its route, or to the error response it gets.
/// `max_value` is `--max-value`.
pub fn route(req: &http1::Request, max_value: u64) -> Result<Route, Response> {
    let (path, query) = split_target(&req.target);
    let read_only = match path {
        "/metrics" => Some(Route::Metrics),
        "/healthz" => Some(Route::Healthz),
        "/readyz" => Some(Route::Readyz),
        _ => None,
    };
    if let Some(route) = read_only {
        if !matches!(req.method, Method::Get | Method::Head) {
            return Err(not_allowed(&req.method, ALLOW_READ));
        }
        if let Some((name, _)) = params(query).next() {
            return Err(Response::new(
                400,
                format!("unknown query parameter '{name}': {path} takes none"),
            ));
        }
        return Ok(route);
    }
    if let Some(m) = batch::method_of(path) {
        if req.method != Method::Post {
            return Err(not_allowed(&req.method, "POST"));
        }
        if let Some((name, _)) = params(query).next() {
            return Err(Response::new(
                400,
                format!("unknown query parameter '{name}': {path} takes none"),
            ));
        }
        return Ok(Route::Batch(m));
    }
    let Some((group, key)) = path
        .strip_prefix("/v1/")
        .and_then(|rest| rest.split_once('/'))
    else {
        return Err(not_found());
    };
    if key.contains('/') {
        return Err(not_found());
    }
    let is_set = match req.method {
        Method::Get | Method::Head => false,
        Method::Put => true,
        Method::Delete => false,
        _ => return Err(not_allowed(&req.method, ALLOW_CACHE)),
    };
    let mut ttl_ms = None;
    for (name, value) in params(query) {
        match name {
            "ttl_ms" if !is_set => {
                return Err(Response::new(
                    400,
                    format!(
                        "query parameter 'ttl_ms' applies to PUT only, not {}",
                        req.method.as_str()
                    ),
                ))
            }
            "ttl_ms" if ttl_ms.is_some() => {
                return Err(Response::new(400, "query parameter 'ttl_ms' given twice"))
            }
            "ttl_ms" => ttl_ms = Some(parse_ttl(value.unwrap_or_default())?),
            other => {
                return Err(Response::new(
                    400,
                    format!("unknown query parameter '{other}': only ttl_ms (PUT) is accepted"),
                ))
            }
        }
    }
    let group = match group {
        "_" => String::new(),
        "" => {
            return Err(Response::new(
                400,
                "group is empty: write _ for the default group",
            ))
        }
        g => percent_decode(g, "group")?,
    };
    let key = percent_decode(key, "key")?;
    let op = match req.method {
        Method::Put => CacheOp::Set {
            group,
            key,
            value: req.body.clone(),
            ttl_ms: ttl_ms.unwrap_or(0),
        },
        Method::Delete => CacheOp::Delete { group, key },
        _ => CacheOp::Get { group, key },
    };
    if let Err(e) = op.validate(max_value) {
        let status = match e {
            Invalid::Name(_) => 400,
            Invalid::ValueTooLarge { .. } => 413,
        };
        return Err(Response::new(status, e.to_string()));
    }
    Ok(Route::Cache(op))
}

/// The path and query of a target, in origin-form or absolute-form
/// (`http://host/path`, which servers must accept, RFC 9112 §3.2.2).
fn split_target(target: &str) -> (&str, &str) {
    let target = match target.split_once("://") {
        Some((scheme, rest))
            if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https") =>
        {
            rest.find('/').map_or("/", |i| rest.get(i..).unwrap_or("/"))
        }
        _ => target,
    };
    target.split_once('?').unwrap_or((target, ""))
}

/// `name[=value]` pairs of a query, empty ones skipped. Names are compared
/// as written (no percent-decoding: every name we accept is plain ASCII).
fn params(query: &str) -> impl Iterator<Item = (&str, Option<&str>)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (p, None),
        })
}

fn parse_ttl(v: &str) -> Result<u64, Response> {
    let bad = || {
        Response::new(
            400,
            format!("ttl_ms must be a whole number of milliseconds (0 = never expires), not '{v}'"),
        )
    };
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    v.parse().map_err(|_| bad())
}

/// Decodes `%XX` escapes; the result must be UTF-8 (keys and groups are
/// proto3 strings). `what` names the segment in errors.
fn percent_decode(seg: &str, what: &str) -> Result<String, Response> {
    if !seg.contains('%') {
        return Ok(seg.to_string());
    }
    let mut out = Vec::with_capacity(seg.len());
    let mut bytes = seg.bytes();
    while let Some(b) = bytes.next() {
        if b != b'%' {
            out.push(b);
            continue;
        }
        match (bytes.next().and_then(hex), bytes.next().and_then(hex)) {
            (Some(hi), Some(lo)) => out.push(hi << 4 | lo),
            _ => {
                return Err(Response::new(
                    400,
                    format!(
                    "{what} has an invalid percent-escape: '%' must be followed by two hex digits"
                ),
                ))
            }
        }
    }
    String::from_utf8(out)
        .map_err(|_| Response::new(400, format!("{what} is not UTF-8 after percent-decoding")))
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn not_found() -> Response {
    Response::new(
        404,
        "no such resource: the gateway serves /v1/{group}/{key}, /metrics, /healthz and /readyz",
    )
}

fn not_allowed(method: &Method, allow: &'static str) -> Response {
    Response {
        status: 405,
        allow: Some(allow),
        message: format!(
            "method {} is not allowed here: use {allow}",
            method.as_str()
        ),
    }
}

/// What came of a cache operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome<'a> {
    /// Get: the value, or None on a miss.
    Value(Option<&'a [u8]>),
    /// Set: `created` when the key was not there before.
    Stored { created: bool },
    /// Delete: whether the key was there.
    Deleted(bool),
    /// The operation failed, as the gRPC interface would report it.
    Failed { code: Code, message: &'a str },
}

/// Appends the response for `outcome` (no body when `head`) and returns
/// its status, for the request counters.
pub fn respond(out: &mut Vec<u8>, head: bool, outcome: Outcome<'_>, keep_alive: bool) -> u16 {
    let (status, message) = match outcome {
        Outcome::Value(Some(v)) => {
            let headers = [("Content-Type", "application/octet-stream")];
            if head {
                http1::encode_head_response(out, 200, &headers, v.len(), keep_alive);
            } else {
                http1::encode_response(out, 200, &headers, v, keep_alive);
            }
            return 200;
        }
        Outcome::Stored { created } => {
            let status = if created { 201 } else { 204 };
            http1::encode_response(out, status, &[], &[], keep_alive);
            return status;
        }
        Outcome::Deleted(true) => {
            http1::encode_response(out, 204, &[], &[], keep_alive);
            return 204;
        }
        Outcome::Value(None) | Outcome::Deleted(false) => (404, "key not found"),
        Outcome::Failed { code, message } => (http_status(code), message),
    };
    text(out, head, status, None, message, keep_alive);
    status
}

/// Appends a 200 carrying a rendered Prometheus scrape.
pub fn respond_metrics(out: &mut Vec<u8>, head: bool, body: &[u8], keep_alive: bool) {
    let headers = [("Content-Type", METRICS_CONTENT_TYPE)];
    if head {
        http1::encode_head_response(out, 200, &headers, body.len(), keep_alive);
    } else {
        http1::encode_response(out, 200, &headers, body, keep_alive);
    }
}

/// The HTTP status of a failure the gRPC interface reports with `code`.
pub fn http_status(code: Code) -> u16 {
    match code {
        Code::InvalidArgument => 400,
        Code::NotFound => 404,
        Code::ResourceExhausted => 413,
        Code::Unavailable => 503,
        Code::DeadlineExceeded => 504,
        Code::Unimplemented => 501,
        _ => 500,
    }
}

/// A one-line `text/plain` response, written without building the body.
fn text(
    out: &mut Vec<u8>,
    head: bool,
    status: u16,
    allow: Option<&str>,
    message: &str,
    keep_alive: bool,
) {
    let ct = ("Content-Type", "text/plain; charset=utf-8");
    let len = message.len() + 1;
    match allow {
        Some(a) => http1::encode_head_response(out, status, &[ct, ("Allow", a)], len, keep_alive),
        None => http1::encode_head_response(out, status, &[ct], len, keep_alive),
    }
    if !head && http1::allows_body(status) {
        out.extend_from_slice(message.as_bytes());
        out.push(b'\n');
    }
}
