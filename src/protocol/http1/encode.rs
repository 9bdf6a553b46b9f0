//! Response encoding: status line, the caller's headers, Content-Length
//! and Connection, appended to the connection's output buffer without any
//! allocation of its own.
//!
//! `Connection` is always sent: `close` when the connection ends after this
//! response, `keep-alive` otherwise, because an HTTP/1.0 client (`ab -k`)
//! assumes close unless told. `Date` is left to the caller (this module has
//! no clock; a per-second cached string is the usual way). `100 Continue`
//! is a fixed string the caller writes itself: [`CONTINUE`].

use super::Http1Error;

/// The interim response to `Expect: 100-continue`.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Appends a complete response with `body`. 1xx, 204 and 304 responses
/// carry neither body nor Content-Length (RFC 9110 §8.6, §15).
pub fn encode_response(
    out: &mut Vec<u8>,
    status: u16,
    headers: &[(&str, &str)],
    body: &[u8],
    keep_alive: bool,
) {
    write_head(out, status, headers, body.len(), keep_alive);
    if allows_body(status) {
        out.extend_from_slice(body);
    }
}

/// Appends the response to a HEAD request: the headers a GET would get,
/// Content-Length included (`content_length`), and no body.
pub fn encode_head_response(
    out: &mut Vec<u8>,
    status: u16,
    headers: &[(&str, &str)],
    content_length: usize,
    keep_alive: bool,
) {
    write_head(out, status, headers, content_length, keep_alive);
}

/// Appends the response to a request the decoder rejected: its status, the
/// reason as one line of text, and `Connection: close`.
pub fn encode_error(out: &mut Vec<u8>, err: &Http1Error) {
    let reason = err.reason.as_bytes();
    write_head(
        out,
        err.status,
        &[("Content-Type", "text/plain; charset=utf-8")],
        reason.len() + 1,
        false,
    );
    out.extend_from_slice(reason);
    out.push(b'\n');
}

/// Whether a response with `status` has a body (and Content-Length).
pub fn allows_body(status: u16) -> bool {
    !(100..200).contains(&status) && status != 204 && status != 304
}

fn write_head(
    out: &mut Vec<u8>,
    status: u16,
    headers: &[(&str, &str)],
    content_length: usize,
    keep_alive: bool,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    put_decimal(out, u64::from(status));
    out.push(b' ');
    out.extend_from_slice(reason_phrase(status).as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        debug_assert!(
            !value.contains(['\r', '\n']),
            "header {name} holds a line break"
        );
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if allows_body(status) {
        out.extend_from_slice(b"Content-Length: ");
        put_decimal(out, content_length as u64);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(if keep_alive {
        b"Connection: keep-alive\r\n\r\n"
    } else {
        b"Connection: close\r\n\r\n"
    });
}

/// Appends `n` in decimal.
fn put_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20]; // u64::MAX has 20 digits
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// The standard reason phrase of `status` (RFC 9110 §15), "" if unknown
/// (the status line then ends in "NNN ", which is valid).
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        421 => "Misdirected Request",
        422 => "Unprocessable Content",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}
