//! Route and response tests: every route, every error, and the bytes of
//! each outcome's response.

use super::*;
use crate::protocol::http1::Request;
use crate::protocol::{MAX_GROUP_BYTES, MAX_KEY_BYTES};
use bytes::Bytes;

const MAX_VALUE: u64 = 100;

fn req(method: Method, target: &str, body: &'static [u8]) -> Request {
    Request {
        method,
        target: target.to_string(),
        version: 1,
        host: Some("h".into()),
        content_type: None,
        keep_alive: true,
        body: Bytes::from_static(body),
    }
}

fn get(target: &str) -> Result<Route, Response> {
    route(&req(Method::Get, target, b""), MAX_VALUE)
}

/// What a route asks of its key, for building the expected [`CacheOp`].
enum Kind {
    Get,
    Set { value: Bytes, ttl_ms: u64 },
    Delete,
}

fn cache(kind: Kind, group: &str, key: &str) -> Result<Route, Response> {
    let (group, key) = (group.to_string(), key.to_string());
    Ok(Route::Cache(match kind {
        Kind::Get => CacheOp::Get { group, key },
        Kind::Set { value, ttl_ms } => CacheOp::Set {
            group,
            key,
            value,
            ttl_ms,
        },
        Kind::Delete => CacheOp::Delete { group, key },
    }))
}

fn err(r: Result<Route, Response>) -> Response {
    match r {
        Err(resp) => resp,
        Ok(route) => panic!("routed to {route:?}"),
    }
}

#[test]
fn cache_routes() {
    assert_eq!(get("/v1/users/alice"), cache(Kind::Get, "users", "alice"));
    assert_eq!(
        route(&req(Method::Head, "/v1/_/k", b""), MAX_VALUE),
        cache(Kind::Get, "", "k")
    );
    assert_eq!(
        route(&req(Method::Delete, "/v1/g/k", b""), MAX_VALUE),
        cache(Kind::Delete, "g", "k")
    );
    assert_eq!(
        route(&req(Method::Put, "/v1/g/k", b"v"), MAX_VALUE),
        cache(
            Kind::Set {
                value: Bytes::from_static(b"v"),
                ttl_ms: 0
            },
            "g",
            "k"
        )
    );
    assert_eq!(
        route(&req(Method::Put, "/v1/g/k?ttl_ms=1500", b""), MAX_VALUE),
        cache(
            Kind::Set {
                value: Bytes::new(),
                ttl_ms: 1500
            },
            "g",
            "k"
        )
    );
    // a value of exactly max_value is fine; empty query parts are skipped
    let full = &[b'x'; MAX_VALUE as usize];
    assert!(route(&req(Method::Put, "/v1/g/k?&ttl_ms=0&", full), MAX_VALUE).is_ok());
    // absolute-form targets
    assert_eq!(get("http://node:8080/v1/g/k"), cache(Kind::Get, "g", "k"));
    assert_eq!(get("HTTP://node:8080/healthz"), Ok(Route::Healthz));
}

#[test]
fn percent_decoding() {
    assert_eq!(get("/v1/a%2Fb/c%2fd"), cache(Kind::Get, "a/b", "c/d"));
    assert_eq!(get("/v1/%5F/k"), cache(Kind::Get, "_", "k"));
    assert_eq!(
        get("/v1/g/caf%C3%A9%20au%20lait"),
        cache(Kind::Get, "g", "café au lait")
    );
    assert_eq!(get("/v1/g/a+b"), cache(Kind::Get, "g", "a+b"));
    for (target, what) in [
        ("/v1/g/%", "key has an invalid percent-escape"),
        ("/v1/g/%4", "key has an invalid percent-escape"),
        ("/v1/g/%zz", "key has an invalid percent-escape"),
        ("/v1/%g1/k", "group has an invalid percent-escape"),
        ("/v1/g/%FF", "key is not UTF-8 after percent-decoding"),
        ("/v1/%C3/k", "group is not UTF-8 after percent-decoding"),
    ] {
        let e = err(get(target));
        assert_eq!(e.status, 400, "{target}");
        assert!(e.message.starts_with(what), "{target}: {}", e.message);
    }
}

#[test]
fn key_and_group_errors() {
    let e = err(get("/v1/g/"));
    assert_eq!(
        (e.status, e.message.as_str()),
        (400, "key is empty: a key must be 1 to 4096 bytes")
    );
    let long = format!("/v1/g/{}", "k".repeat(MAX_KEY_BYTES + 1));
    let e = err(get(&long));
    assert_eq!(
        (e.status, e.message.as_str()),
        (400, "key is 4097 bytes: the limit is 4096 bytes")
    );
    // the limit is on decoded bytes: 4096 escapes of one byte each are fine
    assert!(get(&format!("/v1/g/{}", "%41".repeat(MAX_KEY_BYTES))).is_ok());
    let e = err(get("/v1//k"));
    assert_eq!(
        (e.status, e.message.as_str()),
        (400, "group is empty: write _ for the default group")
    );
    // the same rules as gRPC and peers: no control characters, groups
    // of at most 128 bytes
    let e = err(get("/v1/g/a%00b"));
    assert_eq!(e.status, 400);
    assert!(
        e.message.starts_with("key has a control character"),
        "{}",
        e.message
    );
    let e = err(get("/v1/g%0A/k"));
    assert!(
        e.message.starts_with("group has a control character"),
        "{}",
        e.message
    );
    let e = err(get(&format!("/v1/{}/k", "g".repeat(MAX_GROUP_BYTES + 1))));
    assert_eq!(
        (e.status, e.message.as_str()),
        (400, "group is 129 bytes: the limit is 128 bytes")
    );
}

#[test]
fn query_errors() {
    let put = |target: &str| err(route(&req(Method::Put, target, b""), MAX_VALUE));
    for (target, message) in [
        (
            "/v1/g/k?ttl_ms=abc",
            "ttl_ms must be a whole number of milliseconds (0 = never expires), not 'abc'",
        ),
        (
            "/v1/g/k?ttl_ms=",
            "ttl_ms must be a whole number of milliseconds (0 = never expires), not ''",
        ),
        (
            "/v1/g/k?ttl_ms",
            "ttl_ms must be a whole number of milliseconds (0 = never expires), not ''",
        ),
        (
            "/v1/g/k?ttl_ms=-1",
            "ttl_ms must be a whole number of milliseconds (0 = never expires), not '-1'",
        ),
        (
            "/v1/g/k?ttl_ms=99999999999999999999",
            "ttl_ms must be a whole number of milliseconds (0 = never expires), not '99999999999999999999'",
        ),
        (
            "/v1/g/k?ttl_ms=1&ttl_ms=2",
            "query parameter 'ttl_ms' given twice",
        ),
        (
            "/v1/g/k?ttl=5",
            "unknown query parameter 'ttl': only ttl_ms (PUT) is accepted",
        ),
    ] {
        let e = put(target);
        assert_eq!((e.status, e.message.as_str()), (400, message), "{target}");
    }
    let e = err(get("/v1/g/k?ttl_ms=5"));
    assert_eq!(
        e.message,
        "query parameter 'ttl_ms' applies to PUT only, not GET"
    );
    let e = err(route(&req(Method::Delete, "/v1/g/k?x", b""), MAX_VALUE));
    assert_eq!(
        e.message,
        "unknown query parameter 'x': only ttl_ms (PUT) is accepted"
    );
    let e = err(get("/metrics?name[]=x"));
    assert_eq!(
        (e.status, e.message.as_str()),
        (400, "unknown query parameter 'name[]': /metrics takes none")
    );
}

#[test]
fn value_too_large() {
    let big = &[b'x'; MAX_VALUE as usize + 1];
    let e = err(route(&req(Method::Put, "/v1/g/k", big), MAX_VALUE));
    assert_eq!(
        (e.status, e.message.as_str()),
        (
            413,
            "value is 101 bytes: the limit is 100 bytes (--max-value)"
        )
    );
}

#[test]
fn node_routes() {
    assert_eq!(get("/metrics"), Ok(Route::Metrics));
    assert_eq!(get("/healthz"), Ok(Route::Healthz));
    assert_eq!(get("/readyz"), Ok(Route::Readyz));
    assert_eq!(
        route(&req(Method::Head, "/readyz", b""), MAX_VALUE),
        Ok(Route::Readyz)
    );
}

#[test]
fn unknown_paths() {
    for target in [
        "/",
        "/v1",
        "/v1/",
        "/v1/g",
        "/v1/g/k/extra",
        "/v2/g/k",
        "/metrics/",
        "/healthz/x",
        "*",
        "/V1/g/k",
    ] {
        let e = err(get(target));
        assert_eq!(e.status, 404, "{target}");
        assert_eq!(
            e.message,
            "no such resource: the gateway serves /v1/{group}/{key}, /metrics, /healthz and /readyz"
        );
    }
    // unknown paths are 404 whatever the method
    assert_eq!(
        err(route(&req(Method::Post, "/nope", b""), MAX_VALUE)).status,
        404
    );
}

#[test]
fn wrong_methods() {
    for (method, target, allow) in [
        (Method::Post, "/v1/g/k", "GET, HEAD, PUT, DELETE"),
        (
            Method::Other("PATCH".into()),
            "/v1/_/k",
            "GET, HEAD, PUT, DELETE",
        ),
        (Method::Put, "/metrics", "GET, HEAD"),
        (Method::Delete, "/healthz", "GET, HEAD"),
        (Method::Post, "/readyz", "GET, HEAD"),
    ] {
        let name = method.as_str().to_string();
        let e = err(route(&req(method, target, b""), MAX_VALUE));
        assert_eq!(e.status, 405, "{target}");
        assert_eq!(e.allow, Some(allow));
        assert_eq!(
            e.message,
            format!("method {name} is not allowed here: use {allow}")
        );
    }
    // the method is checked before the key and the query
    assert_eq!(
        err(route(&req(Method::Post, "/v1/g/?bad", b""), MAX_VALUE)).status,
        405
    );
}

fn respond_str(head: bool, outcome: Outcome<'_>, keep_alive: bool) -> (u16, String) {
    let mut out = Vec::new();
    let status = respond(&mut out, head, outcome, keep_alive);
    (status, String::from_utf8(out).unwrap())
}

#[test]
fn outcome_responses() {
    assert_eq!(
        respond_str(false, Outcome::Value(Some(b"abc")), true),
        (
            200,
            "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 3\r\n\
             Connection: keep-alive\r\n\r\nabc"
                .into()
        )
    );
    assert_eq!(
        respond_str(true, Outcome::Value(Some(b"abc")), true),
        (
            200,
            "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 3\r\n\
             Connection: keep-alive\r\n\r\n"
                .into()
        )
    );
    let not_found = "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain; charset=utf-8\r\n\
                     Content-Length: 14\r\nConnection: close\r\n\r\nkey not found\n";
    assert_eq!(
        respond_str(false, Outcome::Value(None), false),
        (404, not_found.into())
    );
    assert_eq!(
        respond_str(false, Outcome::Deleted(false), false),
        (404, not_found.into())
    );
    assert_eq!(
        respond_str(false, Outcome::Stored { created: true }, true),
        (
            201,
            "HTTP/1.1 201 Created\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n".into()
        )
    );
    let no_content = "HTTP/1.1 204 No Content\r\nConnection: keep-alive\r\n\r\n";
    assert_eq!(
        respond_str(false, Outcome::Stored { created: false }, true),
        (204, no_content.into())
    );
    assert_eq!(
        respond_str(false, Outcome::Deleted(true), true),
        (204, no_content.into())
    );
    assert_eq!(
        respond_str(
            false,
            Outcome::Failed {
                code: Code::Unavailable,
                message: "peer 10.0.0.2:7000 unreachable"
            },
            true
        ),
        (
            503,
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Content-Length: 31\r\nConnection: keep-alive\r\n\r\npeer 10.0.0.2:7000 unreachable\n"
                .into()
        )
    );
}

#[test]
fn failure_statuses() {
    for (code, status) in [
        (Code::InvalidArgument, 400),
        (Code::NotFound, 404),
        (Code::ResourceExhausted, 413),
        (Code::Unavailable, 503),
        (Code::DeadlineExceeded, 504),
        (Code::Unimplemented, 501),
        (Code::Internal, 500),
        (Code::Unknown, 500),
        (Code::Aborted, 500),
    ] {
        assert_eq!(http_status(code), status, "{code:?}");
        let (got, _) = respond_str(true, Outcome::Failed { code, message: "m" }, true);
        assert_eq!(got, status);
    }
}

#[test]
fn error_and_metrics_responses() {
    let mut out = Vec::new();
    err(route(&req(Method::Post, "/metrics", b""), MAX_VALUE)).encode(&mut out, false, true);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "HTTP/1.1 405 Method Not Allowed\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Allow: GET, HEAD\r\nContent-Length: 47\r\nConnection: keep-alive\r\n\r\n\
         method POST is not allowed here: use GET, HEAD\n"
    );
    let mut out = Vec::new();
    Response::new(503, "not ready").encode(&mut out, true, false);
    assert!(String::from_utf8(out)
        .unwrap()
        .ends_with("Content-Length: 10\r\nConnection: close\r\n\r\n"));
    let mut out = Vec::new();
    respond_metrics(&mut out, false, b"a 1\n", true);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
         Content-Length: 4\r\nConnection: keep-alive\r\n\r\na 1\n"
    );
    let mut out = Vec::new();
    respond_metrics(&mut out, true, b"a 1\n", true);
    assert!(String::from_utf8(out)
        .unwrap()
        .ends_with("Content-Length: 4\r\nConnection: keep-alive\r\n\r\n"));
}
