//! Attacks on a real node over real sockets, each bounded: the node's RSS
//! (read from /proc) stays under a stated ceiling while it is attacked and
//! comes back down afterwards, and a well-behaved client on another
//! connection keeps getting answers. Each is a regression test of a
//! measured attack (issue "every connection's memory is bounded").

mod common;

use common::h2raw::{self, RawConn};
use common::*;
use prost::Message;
use shardcache::protocol::peer::{self, PeerRequest};
use shardcache::protocol::CacheOp;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(10);

/// The node's RSS, sampled every 20 ms while `attack` runs (in this
/// thread: the attack functions below only send), and for `settle` after.
fn peak_rss_during(node: &Node, settle: Duration, attack: impl FnOnce()) -> u64 {
    let pid = node.pid();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(rss_bytes(pid));
                std::thread::sleep(Duration::from_millis(20));
            }
            peak
        })
    };
    attack();
    std::thread::sleep(settle);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    sampler.join().unwrap()
}

/// A well-behaved client on its own connection still gets its value.
fn normal_client_is_served(node: &Node, key: &str, value: &[u8]) {
    block_on(async {
        let mut c = node.client().await;
        let started = Instant::now();
        let got = tokio::time::timeout(T, get(&mut c, "", key))
            .await
            .expect("a normal client got no answer during the attack");
        assert_eq!(
            got.as_deref(),
            Some(value),
            "a normal client got a wrong answer"
        );
        started.elapsed()
    });
}

fn store(node: &Node, key: &str, value: &[u8]) {
    block_on(async {
        let mut c = node.client().await;
        set(&mut c, "", key, value).await;
    });
}

/// Waits until RSS is back within `slack` of `before` (allocators return
/// memory with some delay); returns the last reading.
fn rss_settles(node: &Node, before: u64, slack: u64) -> u64 {
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        let now = node.rss_bytes();
        if now <= before + slack || Instant::now() > until {
            return now;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The attack's peak stayed under `bound`, and once it ended RSS came back
/// to within 10 % (+4 MiB of allocator slack) of `before`.
fn assert_bounded_and_released(node: &Node, before: u64, peak: u64, bound: u64) {
    eprintln!(
        "peak RSS {:.0} MiB, before {:.0} MiB",
        mib(peak),
        mib(before)
    );
    assert!(
        peak < bound,
        "peak RSS {:.0} MiB (before {:.0} MiB, bound {:.0} MiB)",
        mib(peak),
        mib(before),
        mib(bound)
    );
    let slack = before / 10 + 4 * MIB;
    let after = rss_settles(node, before, slack);
    assert!(
        after <= before + slack,
        "RSS {:.0} MiB after the attack, {:.0} MiB before",
        mib(after),
        mib(before)
    );
}

fn mib(b: u64) -> f64 {
    b as f64 / MIB as f64
}

fn peer_get_frames(n: u32, key: &str) -> Vec<u8> {
    let mut out = peer::MAGIC.to_vec();
    for id in 0..n {
        peer::encode_request(
            &mut out,
            &PeerRequest {
                id,
                timeout_ms: 0,
                op: CacheOp::Get {
                    group: String::new(),
                    key: key.into(),
                },
            },
        );
    }
    out
}

/// Eight connections that claim to be peers pipeline 3,000 GETs each of a
/// stored 1 MiB value and read nothing (432 KB sent). Before the fix the
/// node grew to 11-15 GB.
#[test]
fn peer_get_amplification_is_bounded() {
    let node = Node::builder()
        .max_value("1MiB")
        .args(&["--conn-buffer", "4MiB"])
        .start();
    let value = value_for("big", (1 << 20) - 64);
    store(&node, "big", &value);
    store(&node, "small", b"hello");
    let before = node.rss_bytes();
    let frames = peer_get_frames(3000, "big");
    let mut socks = Vec::new();
    let peak = peak_rss_during(&node, Duration::from_millis(1500), || {
        for _ in 0..8 {
            let mut s = TcpStream::connect(node.addr).unwrap();
            s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
            // The server may stop reading: a write that cannot finish is
            // part of the attack, not a failure of the test.
            let _ = s.write_all(&frames);
            socks.push(s);
        }
    });
    normal_client_is_served(&node, "small", b"hello");
    // Per connection: its budget and one answer over it, plus the answers of the 32
    // calls it may have waiting on the other shard (1 MiB each, a copy
    // and its encoding), for 8 connections; nothing like 3,000 x 1 MiB.
    let bound = before + 8 * (4 + 1 + 2 * 32) * MIB;
    drop(socks);
    assert_bounded_and_released(&node, before, peak, bound);
    node.assert_healthy_blocking();
}

/// Two connections open 1,000 streams each, every one a Set whose gRPC
/// prefix announces 4 MiB, send 1.5 KB of body and never end. Before the
/// fix: 3 GB of RSS with --memory 64MiB, 227 MiB still held after close.
#[test]
fn unfinished_bodies_are_bounded_and_released() {
    let node = Node::builder().start();
    store(&node, "k", b"v");
    let before = node.rss_bytes();
    let mut conns: Vec<RawConn> = Vec::new();
    let peak = peak_rss_during(&node, Duration::from_millis(500), || {
        for _ in 0..2 {
            let mut c = RawConn::handshake(node.addr);
            let mut burst = Vec::new();
            for i in 0..1000u32 {
                let id = 2 * i + 1;
                let headers = h2raw::grpc_headers("/cache.Cache/Set", &[]);
                burst.extend(h2raw::frame(
                    h2raw::HEADERS,
                    h2raw::END_HEADERS,
                    id,
                    &h2raw::encode_headers(&headers),
                ));
                let mut body = vec![0u8];
                body.extend_from_slice(&(4u32 << 20).to_be_bytes());
                body.extend(std::iter::repeat_n(0x41, 1500));
                burst.extend(h2raw::frame(h2raw::DATA, 0, id, &body));
            }
            let _ = c.send(&burst);
            conns.push(c);
        }
    });
    normal_client_is_served(&node, "k", b"v");
    // 2 x 1,000 x 1.5 KB of bodies were really sent: that, with room for
    // buffers, is what the node may hold; not 4 MiB per announced body.
    let bound = before + 48 * MIB;
    drop(conns);
    assert_bounded_and_released(&node, before, peak, bound);
}

/// Unfinished streams count against MAX_CONCURRENT_STREAMS (1,024): the
/// 1,025th is refused while the others wait for their bodies.
#[test]
fn unfinished_streams_count_against_the_stream_limit() {
    let node = Node::builder().start();
    let mut c = RawConn::handshake(node.addr);
    let mut burst = Vec::new();
    for i in 0..1100u32 {
        let headers = h2raw::grpc_headers("/cache.Cache/Set", &[]);
        burst.extend(h2raw::frame(
            h2raw::HEADERS,
            h2raw::END_HEADERS,
            2 * i + 1,
            &h2raw::encode_headers(&headers),
        ));
    }
    c.send(&burst).unwrap();
    let deadline = Instant::now() + T;
    let mut refused = Vec::new();
    while refused.len() < 76 {
        match c.read_frame(deadline) {
            Ok(f) if f.typ == h2raw::RST_STREAM => {
                let code = u32::from_be_bytes(f.payload[..4].try_into().unwrap());
                assert_eq!(code, h2raw::REFUSED_STREAM, "stream {}", f.stream);
                refused.push(f.stream);
            }
            Ok(_) => {}
            Err(e) => panic!(
                "{e:?} after {} refusals; frames {:?}",
                refused.len(),
                c.seen
            ),
        }
    }
    // Exactly the streams beyond the 1,024th.
    assert_eq!(refused.first(), Some(&(2 * 1024 + 1)));
    assert_eq!(refused.len(), 76);
}

/// 50 connections that send only the peer magic: they count against
/// --max-connections and are closed when idle, after which clients get in.
#[test]
fn idle_peer_connections_are_closed_and_counted() {
    let node = Node::builder()
        .args(&["--max-connections", "50", "--idle-timeout", "1s"])
        .start();
    let mut socks: Vec<TcpStream> = (0..50)
        .map(|_| {
            let mut s = TcpStream::connect(node.addr).unwrap();
            s.write_all(peer::MAGIC).unwrap();
            s
        })
        .collect();
    // Over the limit now: a 51st connection (peer or client) is turned away.
    let mut extra = TcpStream::connect(node.addr).unwrap();
    extra.write_all(peer::MAGIC).unwrap();
    extra
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 64];
    assert!(
        matches!(extra.read(&mut buf), Ok(0) | Err(_)),
        "a peer connection over --max-connections was served"
    );
    // Idle for 1 s: every one is closed (the reaper checks every half
    // period, so within 1.5 s of silence; allow for a slow machine).
    for (i, s) in socks.iter_mut().enumerate() {
        s.set_read_timeout(Some(Duration::from_secs(6))).unwrap();
        match s.read(&mut buf) {
            Ok(0) => {}
            Err(e) if e.kind() != std::io::ErrorKind::WouldBlock => {}
            other => panic!("idle peer connection {i} still open: {other:?}"),
        }
    }
    // Our ends closed too, the slots are free for clients.
    drop(socks);
    drop(extra);
    std::thread::sleep(Duration::from_millis(200));
    node.assert_healthy_blocking();
    let text = http_get(&node, "/metrics");
    let limit = metric(
        &text,
        "shardcache_guard_events_total{event=\"connection_limit\"}",
    );
    let idle = metric(
        &text,
        "shardcache_guard_events_total{event=\"idle_closed\"}",
    );
    assert!(limit >= 1.0, "connection_limit not counted:\n{text}");
    assert!(idle >= 50.0, "idle_closed {idle}, expected >= 50");
}

/// A call whose body stalls still ends at its grpc-timeout (counted from
/// its HEADERS); a connection left with only a stalled stream is closed
/// at the idle timeout.
#[test]
fn stalled_bodies_end_by_deadline_and_idle_timeout() {
    let node = Node::builder().args(&["--idle-timeout", "1s"]).start();
    let mut c = RawConn::handshake(node.addr);
    let started = Instant::now();
    c.send_headers(
        1,
        &h2raw::grpc_headers("/cache.Cache/Get", &[("grpc-timeout", "200m")]),
        false,
    )
    .unwrap();
    // A prefix promising 16 bytes, and 3 of them.
    c.send_frame(h2raw::DATA, 0, 1, &[0, 0, 0, 0, 16, 1, 2, 3])
        .unwrap();
    let r = c.read_response(1, T);
    assert_eq!(r.grpc_status(), Some(4), "{r:?}"); // DEADLINE_EXCEEDED
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "answered after {took:?}");
    // Another stream on the same connection is unaffected.
    let msg = pb::Request {
        key: "absent".into(),
        ..Default::default()
    }
    .encode_to_vec();
    c.send_grpc(3, "/cache.Cache/Get", &[], &msg).unwrap();
    assert_eq!(c.read_response(3, T).grpc_status(), Some(0));

    // A stalled stream without a deadline: the connection is idle-closed.
    let mut c = RawConn::handshake(node.addr);
    c.send_headers(1, &h2raw::grpc_headers("/cache.Cache/Get", &[]), false)
        .unwrap();
    c.send_frame(h2raw::DATA, 0, 1, &[0, 0, 0, 0, 16, 1])
        .unwrap();
    let (goaway, _) = c.read_until_end(Duration::from_secs(8));
    let goaway = goaway.expect("no GOAWAY before the close");
    assert_eq!(goaway.debug, "idle timeout");
    let text = http_get(&node, "/metrics");
    assert!(
        metric(
            &text,
            "shardcache_guard_events_total{event=\"incomplete_deadline\"}"
        ) >= 1.0,
        "{text}"
    );
}

/// A peer SET is held to --max-value exactly like a gRPC Set, and keys
/// with control characters are refused on every front end.
#[test]
fn peer_requests_obey_the_value_and_key_rules() {
    let node = Node::builder().max_value("64KiB").start();
    let mut s = TcpStream::connect(node.addr).unwrap();
    let mut out = peer::MAGIC.to_vec();
    let set = |id, key: &str, len| PeerRequest {
        id,
        timeout_ms: 0,
        op: CacheOp::Set {
            group: String::new(),
            key: key.into(),
            value: vec![7u8; len].into(),
            ttl_ms: 0,
        },
    };
    peer::encode_request(&mut out, &set(1, "over", 64 * 1024 + 1));
    peer::encode_request(&mut out, &set(2, "bad\nkey", 10));
    peer::encode_request(&mut out, &set(3, "fits", 64 * 1024));
    s.write_all(&out).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    let mut input = bytes::BytesMut::new();
    let mut replies = std::collections::HashMap::new();
    while replies.len() < 3 {
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).expect("peer replies");
        assert!(n > 0, "closed after {} replies", replies.len());
        input.extend_from_slice(&buf[..n]);
        while let Some((id, r)) = peer::decode_reply(&mut input, 1 << 20).unwrap() {
            replies.insert(id, r);
        }
    }
    match &replies[&1] {
        peer::PeerReply::Error(st) => {
            assert_eq!(st.code, shardcache::protocol::grpc::Code::ResourceExhausted);
            assert!(st.message.contains("--max-value"), "{}", st.message);
        }
        other => panic!("oversized peer SET answered {other:?}"),
    }
    match &replies[&2] {
        peer::PeerReply::Error(st) => {
            assert_eq!(st.code, shardcache::protocol::grpc::Code::InvalidArgument);
            assert!(st.message.contains("control character"), "{}", st.message);
        }
        other => panic!("bad key answered {other:?}"),
    }
    assert_eq!(replies[&3], peer::PeerReply::Set { created: true });
    block_on(async {
        let mut c = node.client().await;
        assert_eq!(get(&mut c, "", "over").await, None);
        let st = c
            .get(req("", "bad\u{1}key"))
            .await
            .expect_err("a key with a control character was accepted over gRPC");
        assert_eq!(st.code(), tonic::Code::InvalidArgument, "{st:?}");
        assert_eq!(
            get(&mut c, "", "fits").await.map(|v| v.len()),
            Some(64 * 1024)
        );
    });
}

/// An HTTP/2 client that grants the largest windows, asks for a stored
/// 1 MiB value 2,000 times and reads nothing. Before the fix the node
/// grew from 7 MiB to 621 MiB.
#[test]
fn a_client_that_never_reads_is_bounded() {
    let node = Node::builder()
        .max_value("1MiB")
        .args(&["--conn-buffer", "4MiB"])
        .start();
    let value = value_for("big", (1 << 20) - 64);
    store(&node, "big", &value);
    store(&node, "small", b"hello");
    let before = node.rss_bytes();
    let mut conns = Vec::new();
    let peak = peak_rss_during(&node, Duration::from_millis(1500), || {
        for _ in 0..4 {
            let mut c = RawConn::connect(node.addr);
            let mut hello = h2raw::PREFACE.to_vec();
            // SETTINGS_INITIAL_WINDOW_SIZE 2^31-1, and the connection window.
            let mut settings = vec![0, 4];
            settings.extend_from_slice(&0x7fff_ffffu32.to_be_bytes());
            hello.extend(h2raw::frame(h2raw::SETTINGS, 0, 0, &settings));
            hello.extend(h2raw::frame(
                h2raw::WINDOW_UPDATE,
                0,
                0,
                &(0x7fff_ffffu32 - 65_535).to_be_bytes(),
            ));
            let msg = pb::Request {
                key: "big".into(),
                ..Default::default()
            }
            .encode_to_vec();
            for i in 0..2000u32 {
                hello.extend(h2raw::grpc_request(
                    2 * i + 1,
                    "/cache.Cache/Get",
                    &[],
                    &msg,
                ));
            }
            let _ = c.send(&hello);
            conns.push(c);
        }
    });
    normal_client_is_served(&node, "small", b"hello");
    // Per connection: its 4 MiB budget, the answers of one batch of 8
    // requests that may overshoot it, and its 16 calls waiting on the
    // other shard (1 MiB each, a copy and its encoding).
    let bound = before + 4 * (4 + 8 + 2 * 16) * MIB;
    drop(conns);
    assert_bounded_and_released(&node, before, peak, bound);
}

/// application/grpc+json is refused, not decoded as protobuf.
#[test]
fn other_codecs_are_refused() {
    let node = Node::builder().start();
    let mut c = RawConn::handshake(node.addr);
    let msg = pb::Request {
        key: "k".into(),
        ..Default::default()
    }
    .encode_to_vec();
    let mut headers = h2raw::grpc_headers("/cache.Cache/Get", &[]);
    headers[4] = ("content-type", "application/grpc+json");
    c.send_headers(1, &headers, false).unwrap();
    c.send_frame(
        h2raw::DATA,
        h2raw::END_STREAM,
        1,
        &h2raw::grpc_message(&msg, false),
    )
    .unwrap();
    let r = c.read_response(1, T);
    assert_eq!(r.grpc_status(), Some(12), "{r:?}"); // UNIMPLEMENTED
    assert!(r.grpc_message().contains("application/grpc+json"), "{r:?}");
}

fn http_get(node: &Node, path: &str) -> String {
    let mut s = TcpStream::connect(node.http_addr()).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text
}

/// The value of one sample line of a Prometheus text page.
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in the scrape"))
}
