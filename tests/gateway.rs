//! The HTTP gateway of a real node over real sockets: every route and
//! error through a real HTTP client (ureq), and what a client library will
//! not send (pipelining, malformed heads, chunked uploads in pieces,
//! `Expect: 100-continue` answered by hand) through the raw client in
//! tests/common/http1.rs. Values written over HTTP are read back over gRPC
//! and the other way round: both front ends serve the same store.

mod common;

use common::http1::{request_bytes, Conn};
use common::{block_on, req, set_req, stats, Node};
use std::time::{Duration, Instant};

const MAX_VALUE: usize = 64 * 1024;

fn node() -> Node {
    Node::builder().shards(4).max_value("64KiB").start()
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into()
}

/// What a real client saw.
struct Got {
    status: u16,
    headers: ureq::http::HeaderMap,
    body: Vec<u8>,
}

impl Got {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn call(agent: &ureq::Agent, method: &str, url: &str, body: &[u8]) -> Got {
    let req = ureq::http::Request::builder()
        .method(method)
        .uri(url)
        .body(body.to_vec())
        .expect("a valid request");
    let mut resp = agent
        .run(req)
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let body = if method == "HEAD" {
        Vec::new()
    } else {
        resp.body_mut()
            .with_config()
            .limit(16 << 20)
            .read_to_vec()
            .expect("read the body")
    };
    Got {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        body,
    }
}

/// A one-line text error: the reason, then exactly one line feed.
fn assert_one_line(g: &Got, status: u16, says: &str) {
    assert_eq!(g.status, status, "body {:?}", g.text());
    assert_eq!(g.header("content-type"), Some("text/plain; charset=utf-8"));
    let text = g.text();
    assert!(
        text.ends_with('\n') && text.matches('\n').count() == 1,
        "{text:?}"
    );
    assert!(
        text.contains(says),
        "{status}: {text:?} should say {says:?}"
    );
}

#[test]
fn get_put_delete_round_trip_with_their_statuses() {
    let n = node();
    let a = agent();
    let url = n.http_url("/v1/users/alice");
    let put = call(&a, "PUT", &url, b"v1");
    assert_eq!(put.status, 201, "a new key is Created");
    assert_eq!(put.header("content-length"), Some("0"));
    let put = call(&a, "PUT", &url, b"value two");
    assert_eq!(put.status, 204, "a replaced key is No Content");
    let got = call(&a, "GET", &url, b"");
    assert_eq!(got.status, 200);
    assert_eq!(got.header("content-type"), Some("application/octet-stream"));
    assert_eq!(got.body, b"value two");
    let head = call(&a, "HEAD", &url, b"");
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("9"));
    assert_eq!(call(&a, "DELETE", &url, b"").status, 204);
    assert_one_line(&call(&a, "DELETE", &url, b""), 404, "not found");
    assert_one_line(&call(&a, "GET", &url, b""), 404, "not found");
    // An empty value is a value.
    assert_eq!(call(&a, "PUT", &url, b"").status, 201);
    let got = call(&a, "GET", &url, b"");
    assert_eq!((got.status, got.body.len()), (200, 0));
    // Binary values arrive byte for byte.
    let bin: Vec<u8> = (0..=255u8).cycle().take(MAX_VALUE).collect();
    assert_eq!(call(&a, "PUT", &n.http_url("/v1/b/bin"), &bin).status, 201);
    assert_eq!(call(&a, "GET", &n.http_url("/v1/b/bin"), b"").body, bin);
}

#[test]
fn ttl_ms_expires_the_value() {
    let n = node();
    let a = agent();
    let url = n.http_url("/v1/t/short");
    assert_eq!(
        call(&a, "PUT", &format!("{url}?ttl_ms=400"), b"soon gone").status,
        201
    );
    assert_eq!(
        call(&a, "PUT", &n.http_url("/v1/t/long?ttl_ms=0"), b"stays").status,
        201
    );
    assert_eq!(call(&a, "GET", &url, b"").body, b"soon gone");
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(
        call(&a, "GET", &url, b"").status,
        404,
        "expired after 400 ms"
    );
    assert_eq!(
        call(&a, "GET", &n.http_url("/v1/t/long"), b"").body,
        b"stays"
    );
}

#[test]
fn default_group_and_percent_decoded_keys_match_grpc() {
    let n = node();
    let a = agent();
    // `_` is the default group "", `%5F` a group literally named "_".
    assert_eq!(
        call(&a, "PUT", &n.http_url("/v1/_/k"), b"default").status,
        201
    );
    assert_eq!(
        call(&a, "PUT", &n.http_url("/v1/%5F/k"), b"under").status,
        201
    );
    // A key with a slash, a space, a plus and UTF-8, escaped.
    let key = "a/b c+é";
    assert_eq!(
        call(&a, "PUT", &n.http_url("/v1/g/a%2Fb%20c+%C3%A9"), b"odd").status,
        201
    );
    block_on(async {
        let mut c = n.client().await;
        let g = c.get(req("", "k")).await.unwrap().into_inner();
        assert!(g.found && g.value == b"default");
        let g = c.get(req("_", "k")).await.unwrap().into_inner();
        assert!(g.found && g.value == b"under");
        let g = c.get(req("g", key)).await.unwrap().into_inner();
        assert!(g.found && g.value == b"odd", "gRPC sees the decoded key");
        // Written over gRPC, read over HTTP (lower-case escapes work too).
        c.set(set_req("g", "x/y", b"from grpc", 0)).await.unwrap();
    });
    let got = call(&a, "GET", &n.http_url("/v1/g/x%2fy"), b"");
    assert_eq!((got.status, got.body.as_slice()), (200, &b"from grpc"[..]));
}

#[test]
fn errors_have_their_status_and_a_one_line_reason() {
    let n = node();
    let a = agent();
    let cases: [(&str, &str, &[u8], u16, &str); 11] = [
        ("GET", "/nope", b"", 404, "no such resource"),
        ("GET", "/v1/g", b"", 404, "no such resource"),
        ("GET", "/v1/g/k/extra", b"", 404, "no such resource"),
        ("GET", "/v1/g/bad%zz", b"", 400, "percent-escape"),
        ("GET", "/v1/g/%FF", b"", 400, "not UTF-8"),
        ("GET", "/v1//k", b"", 400, "group is empty"),
        ("GET", "/v1/g/", b"", 400, "key is empty"),
        ("GET", "/v1/g/k?ttl_ms=5", b"", 400, "applies to PUT only"),
        ("PUT", "/v1/g/k?ttl_ms=soon", b"v", 400, "whole number"),
        ("PUT", "/v1/g/k?colour=red", b"v", 400, "colour"),
        ("GET", "/metrics?x=1", b"", 400, "takes none"),
    ];
    for (method, path, body, status, says) in cases {
        let g = call(&a, method, &n.http_url(path), body);
        assert_one_line(&g, status, says);
    }
    let long_key = "k".repeat(4097);
    let g = call(&a, "GET", &n.http_url(&format!("/v1/g/{long_key}")), b"");
    assert_one_line(&g, 400, "4097 bytes");
    // 405 names what is allowed.
    let g = call(&a, "POST", &n.http_url("/v1/g/k"), b"v");
    assert_one_line(&g, 405, "POST");
    assert_eq!(g.header("allow"), Some("GET, HEAD, PUT, DELETE"));
    for path in ["/metrics", "/healthz", "/readyz"] {
        let g = call(&a, "DELETE", &n.http_url(path), b"");
        assert_one_line(&g, 405, "DELETE");
        assert_eq!(g.header("allow"), Some("GET, HEAD"), "{path}");
    }
    // 413: a value over --max-value is refused before it is read, and the
    // connection closes (the rest of the body would be taken for requests).
    let mut c = Conn::connect(n.http_addr());
    c.send(&request_bytes(
        "PUT",
        "/v1/g/big",
        &[("Content-Length", &(MAX_VALUE + 1).to_string())],
        None,
    ));
    let r = c.expect_response(false);
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(r.text().contains("exceeds the limit"), "{}", r.text());
    assert!(r.closes());
    assert!(c.closed_within(Duration::from_secs(5)));
    // A value of exactly --max-value is fine.
    let full = vec![b'x'; MAX_VALUE];
    assert_eq!(
        call(&a, "PUT", &n.http_url("/v1/g/full"), &full).status,
        201
    );
}

#[test]
fn malformed_requests_get_400_431_505_and_the_connection_closes() {
    let n = node();
    let cases: [(Vec<u8>, u16, &str); 5] = [
        (b"GARBAGE\r\n\r\n".to_vec(), 400, "malformed"),
        (b"GET /healthz HTTP/1.1\r\n\r\n".to_vec(), 400, "Host"),
        (
            b"PUT /v1/g/k HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"
                .to_vec(),
            400,
            "Content-Length",
        ),
        (
            format!(
                "GET /healthz HTTP/1.1\r\nHost: h\r\nX-Big: {}\r\n\r\n",
                "a".repeat(20 << 10)
            )
            .into_bytes(),
            431,
            "larger than",
        ),
        (
            b"GET /healthz HTTP/3.0\r\nHost: h\r\n\r\n".to_vec(),
            505,
            "HTTP/3.0",
        ),
    ];
    for (bytes, status, says) in cases {
        let mut c = Conn::connect(n.http_addr());
        c.send(&bytes);
        let r = c.expect_response(false);
        assert_eq!(r.status, status, "{:?}", r.text());
        assert!(r.text().contains(says), "{status}: {:?}", r.text());
        assert!(r.text().ends_with('\n') && r.text().matches('\n').count() == 1);
        assert!(r.closes(), "a framing error ends the connection");
        assert!(c.closed_within(Duration::from_secs(5)));
    }
    // Many headers: 431 too.
    let mut c = Conn::connect(n.http_addr());
    let many: Vec<(String, String)> = (0..100).map(|i| (format!("X-H{i}"), "v".into())).collect();
    let refs: Vec<(&str, &str)> = many.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    c.send(&request_bytes("GET", "/healthz", &refs, None));
    assert_eq!(c.expect_response(false).status, 431);
    n.assert_alive();
}

#[test]
fn chunked_uploads_arrive_whole() {
    let n = node();
    let mut c = Conn::connect(n.http_addr());
    c.send(b"PUT /v1/c/chunky HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n");
    // Chunks in separate writes, one split mid-size-line, an extension and
    // a trailer.
    for piece in [
        &b"5\r\nhello\r\n"[..],
        b"1",
        b"0;ext=1\r\n, chunked world!\r\n",
        b"0\r\nX-Trailer: t\r\n\r\n",
    ] {
        c.send(piece);
        std::thread::sleep(Duration::from_millis(30));
    }
    let r = c.expect_response(false);
    assert_eq!(r.status, 201, "{}", r.text());
    assert!(!r.closes());
    c.request("GET", "/v1/c/chunky", None);
    let r = c.expect_response(false);
    assert_eq!(r.text(), "hello, chunked world!");
    // Over the limit, decided from a chunk size before its data arrives.
    c.send(b"PUT /v1/c/huge HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n");
    c.send(format!("{:x}\r\n", MAX_VALUE + 1).as_bytes());
    let r = c.expect_response(false);
    assert_eq!(r.status, 413);
    assert!(c.closed_within(Duration::from_secs(5)));
}

/// The request and the response it must get, for pipelining checks.
struct Step {
    bytes: Vec<u8>,
    head: bool,
    status: u16,
    body: Option<Vec<u8>>,
}

fn step(method: &str, path: &str, body: Option<&[u8]>, status: u16, want: Option<&[u8]>) -> Step {
    Step {
        bytes: request_bytes(method, path, &[], body),
        head: method == "HEAD",
        status,
        body: want.map(<[u8]>::to_vec),
    }
}

#[test]
fn pipelined_requests_are_answered_in_order_across_shards() {
    let n = node();
    // Keys spread over 4 shards: some requests are served by the shard
    // that accepted the connection at once, others wait on other shards,
    // and a scrape waits on all of them.
    let keys: Vec<String> = (0..24).map(|i| format!("pipe-{i}")).collect();
    let mut steps = Vec::new();
    for k in &keys {
        let v = format!("value of {k}");
        steps.push(step(
            "PUT",
            &format!("/v1/p/{k}"),
            Some(v.as_bytes()),
            201,
            None,
        ));
    }
    steps.push(step("GET", "/metrics", None, 200, None));
    for (i, k) in keys.iter().enumerate() {
        let v = format!("value of {k}");
        steps.push(step(
            "GET",
            &format!("/v1/p/{k}"),
            None,
            200,
            Some(v.as_bytes()),
        ));
        if i % 5 == 0 {
            steps.push(step("GET", "/healthz", None, 200, Some(b"ok\n")));
            steps.push(step("HEAD", &format!("/v1/p/{k}"), None, 200, None));
            steps.push(step("GET", "/v1/p/missing", None, 404, None));
        }
    }
    for k in keys.iter().step_by(3) {
        steps.push(step("DELETE", &format!("/v1/p/{k}"), None, 204, None));
        steps.push(step("GET", &format!("/v1/p/{k}"), None, 404, None));
    }
    let mut c = Conn::connect(n.http_addr());
    let all: Vec<u8> = steps.iter().flat_map(|s| s.bytes.clone()).collect();
    c.send(&all); // one write: everything arrives before any answer
    for (i, s) in steps.iter().enumerate() {
        let r = c.expect_response(s.head);
        assert_eq!(
            r.status,
            s.status,
            "response {i} out of order: {:?}",
            r.text()
        );
        if let Some(b) = &s.body {
            assert_eq!(&r.body, b, "response {i}");
        }
        assert!(!r.closes());
    }
    assert!(c.pending().is_empty(), "no extra bytes");
    // The keys really went to every shard.
    block_on(async {
        let mut g = n.client().await;
        let s = stats(&mut g).await;
        assert!(
            s.shards.iter().all(|sh| sh.sets > 0),
            "every shard stored some of the keys: {:?}",
            s.shards
        );
    });
}

#[test]
fn keep_alive_reuses_one_connection_and_close_is_honoured() {
    let n = node();
    let mut c = Conn::connect(n.http_addr());
    for i in 0..5 {
        c.request("PUT", &format!("/v1/ka/{i}"), Some(b"v"));
        let r = c.expect_response(false);
        assert_eq!(r.status, 201);
        assert_eq!(r.header("connection"), Some("keep-alive"));
    }
    // `Connection: close`: answered, then closed.
    c.send(&request_bytes(
        "GET",
        "/v1/ka/0",
        &[("Connection", "close")],
        None,
    ));
    let r = c.expect_response(false);
    assert_eq!((r.status, r.closes()), (200, true));
    assert!(c.closed_within(Duration::from_secs(5)));
    // HTTP/1.0 without keep-alive: closed after one answer.
    let mut c = Conn::connect(n.http_addr());
    c.send(b"GET /healthz HTTP/1.0\r\n\r\n");
    let r = c.expect_response(false);
    assert_eq!((r.status, r.closes()), (200, true));
    assert!(c.closed_within(Duration::from_secs(5)));
    // HTTP/1.0 with keep-alive (ab -k): kept.
    let mut c = Conn::connect(n.http_addr());
    for _ in 0..2 {
        c.send(b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        assert_eq!(
            c.expect_response(false).header("connection"),
            Some("keep-alive")
        );
    }
    // A real client's pool: many requests, one connection (the gateway's
    // own counter of accepted connections moves by one).
    let a = agent();
    let opened = |a: &ureq::Agent| -> f64 {
        let text = call(a, "GET", &n.http_url("/metrics"), b"").text();
        let exp = common::prom::parse(&text).unwrap();
        exp.get(
            "shardcache_connections_opened_total",
            &[("interface", "http")],
        )
        .unwrap()
    };
    let before = opened(&a);
    for i in 0..20 {
        assert_eq!(
            call(&a, "PUT", &n.http_url(&format!("/v1/ka/x{i}")), b"v").status,
            201
        );
    }
    assert_eq!(opened(&a), before, "ureq's pooled connection was reused");
}

#[test]
fn expect_100_continue_like_curl() {
    let n = node();
    let mut c = Conn::connect(n.http_addr());
    let body = vec![b'c'; 4096];
    // curl sends the head, waits up to a second for 100 Continue, then the body.
    c.send(&request_bytes(
        "PUT",
        "/v1/e/k",
        &[
            ("Expect", "100-continue"),
            ("Content-Length", &body.len().to_string()),
        ],
        None,
    ));
    let t = Instant::now();
    let interim = c
        .read_response(false, Duration::from_secs(1))
        .expect("100 Continue within curl's one-second wait");
    assert_eq!(interim.status, 100);
    assert!(t.elapsed() < Duration::from_secs(1));
    c.send(&body);
    let r = c.expect_response(false);
    assert_eq!(r.status, 201);
    c.request("GET", "/v1/e/k", None);
    assert_eq!(c.expect_response(false).body, body);
    // A body that is too large gets 413 at once, never 100: curl then does
    // not send it.
    c.send(&request_bytes(
        "PUT",
        "/v1/e/big",
        &[
            ("Expect", "100-continue"),
            ("Content-Length", &(MAX_VALUE + 1).to_string()),
        ],
        None,
    ));
    let r = c.expect_response(false);
    assert_eq!(r.status, 413);
    assert!(c.closed_within(Duration::from_secs(5)));
    // When the body comes with the head (no wait), no 100 is sent.
    let mut c = Conn::connect(n.http_addr());
    c.send(&request_bytes(
        "PUT",
        "/v1/e/k2",
        &[("Expect", "100-continue")],
        Some(b"all at once"),
    ));
    assert_eq!(c.expect_response(false).status, 201);
}

#[test]
fn idle_connections_close_after_the_idle_timeout() {
    let n = Node::builder().args(&["--idle-timeout", "300ms"]).start();
    let mut idle = Conn::connect(n.http_addr());
    idle.request("GET", "/healthz", None);
    assert_eq!(idle.expect_response(false).status, 200);
    let mut partial = Conn::connect(n.http_addr());
    partial.send(b"GET /healthz HTTP/1.1\r\nHost:");
    // Closed between one and one and a half periods of silence.
    assert!(
        idle.closed_within(Duration::from_secs(5)),
        "idle connection kept"
    );
    let r = partial.expect_response(false);
    assert_eq!(r.status, 408, "a request left part-way: {}", r.text());
    assert!(r.closes());
    assert!(partial.closed_within(Duration::from_secs(5)));
}

#[test]
fn max_connections_counts_gateway_connections_and_refuses_with_503() {
    let n = Node::builder().args(&["--max-connections", "2"]).start();
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = Conn::connect(n.http_addr());
        c.request("GET", "/healthz", None);
        assert_eq!(c.expect_response(false).status, 200);
        held.push(c);
    }
    let mut third = Conn::connect(n.http_addr());
    let r = third.expect_response(false);
    assert_eq!(r.status, 503);
    assert!(r.text().contains("--max-connections 2"), "{}", r.text());
    assert!(r.closes());
    assert!(third.closed_within(Duration::from_secs(5)));
    // gRPC connections share the limit: a gRPC client is refused too.
    let refused = block_on(async {
        let ep = tonic::transport::Endpoint::from_shared(n.url()).unwrap();
        match ep.connect().await {
            Err(_) => true,
            Ok(ch) => common::CacheClient::new(ch)
                .get(req("", "k"))
                .await
                .is_err(),
        }
    });
    assert!(refused, "a third connection over gRPC was served");
    drop(held);
    // Once one closes, a new connection is served again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut c = Conn::connect(n.http_addr());
        c.request("GET", "/healthz", None);
        match c.read_response(false, Duration::from_secs(5)) {
            Ok(r) if r.status == 200 => break,
            _ => assert!(Instant::now() < deadline, "never served again"),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn gateway_off_and_port_conflicts() {
    let n = Node::builder().http("off").start();
    assert!(n.http.is_none());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !n.log_tail().contains("http gateway off") {
        assert!(Instant::now() < deadline, "{}", n.log_tail());
        std::thread::sleep(Duration::from_millis(10));
    }
    n.assert_healthy_blocking();
    // Asking for the gRPC port: refused at start-up, naming both flags.
    let port = common::free_port();
    let out = common::server_command()
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--http",
            &format!("127.0.0.1:{port}"),
            "--shards",
            "1",
            "--memory",
            "16MiB",
        ])
        .output()
        .expect("run the server");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("--http") && err.contains("--listen"), "{err}");
    // A second node on the first one's gateway port (SO_REUSEPORT would
    // let it share the port silently): refused, naming the address.
    let first = Node::start();
    let taken = first.http_addr().to_string();
    let out = common::server_command()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--http",
            &taken,
            "--shards",
            "1",
            "--memory",
            "16MiB",
        ])
        .output()
        .expect("run the server");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&taken) && err.contains("already listens"),
        "{err}"
    );
    first.assert_healthy_blocking();
}
