//! HTTP/2 and HTTP/1.1 clients that abuse the protocol's cheap frames or
//! never finish what they start, against a real node: each is ended
//! (GOAWAY ENHANCE_YOUR_CALM naming the flood, or the timeout's error),
//! counted in /metrics, and a well-behaved client on another connection
//! keeps being served. docs/protocol.md lists the limits.

mod common;

use common::h2raw::{self, RawConn};
use common::*;
use prost::Message;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(10);
const ENHANCE_YOUR_CALM: u32 = 0xb;

fn get_msg(key: &str) -> Vec<u8> {
    pb::Request {
        key: key.into(),
        ..Default::default()
    }
    .encode_to_vec()
}

/// Sends `bytes` (the server may stop reading part-way: that is fine) and
/// expects GOAWAY(ENHANCE_YOUR_CALM) whose debug text contains `what`.
fn expect_calm(c: &mut RawConn, bytes: &[u8], what: &str) {
    let _ = c.send(bytes);
    let g = c.expect_goaway(T);
    assert_eq!(g.code, ENHANCE_YOUR_CALM, "{g:?}");
    assert!(g.debug.contains(what), "{g:?}");
}

fn guard(node: &Node, event: &str) -> f64 {
    let mut s = TcpStream::connect(node.http_addr()).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let series = format!("shardcache_guard_events_total{{event=\"{event}\"}}");
    text.lines()
        .find_map(|l| l.strip_prefix(&series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series}"))
}

fn still_served(node: &Node) {
    node.assert_healthy_blocking();
}

/// CVE-2023-44487: streams opened and reset at once, thousands of them.
#[test]
fn rapid_reset_is_ended() {
    let node = Node::start();
    let mut c = RawConn::handshake(node.addr);
    let msg = get_msg("k");
    let mut burst = Vec::new();
    for i in 0..3000u32 {
        let id = 2 * i + 1;
        burst.extend(h2raw::grpc_request(id, "/cache.Cache/Get", &[], &msg));
        burst.extend(h2raw::frame(h2raw::RST_STREAM, 0, id, &8u32.to_be_bytes()));
    }
    expect_calm(&mut c, &burst, "too many resets");
    still_served(&node);
    assert!(guard(&node, "flood_resets") >= 1.0);
}

/// Opening streams past MAX_CONCURRENT_STREAMS, over and over, counts as
/// resets too (each is refused with RST_STREAM).
#[test]
fn streams_past_the_limit_again_and_again_are_ended() {
    let node = Node::start();
    let mut c = RawConn::handshake(node.addr);
    let block = h2raw::encode_headers(&h2raw::grpc_headers("/cache.Cache/Get", &[]));
    let mut burst = Vec::new();
    for i in 0..3100u32 {
        burst.extend(h2raw::frame(
            h2raw::HEADERS,
            h2raw::END_HEADERS,
            2 * i + 1,
            &block,
        ));
    }
    expect_calm(&mut c, &burst, "too many resets");
    still_served(&node);
}

#[test]
fn settings_flood_is_ended() {
    let node = Node::start();
    let mut c = RawConn::handshake(node.addr);
    let mut burst = Vec::new();
    for _ in 0..150 {
        burst.extend(h2raw::frame(h2raw::SETTINGS, 0, 0, &[0, 4, 0, 1, 0, 0]));
    }
    expect_calm(&mut c, &burst, "too many settings");
    assert!(guard(&node, "flood_settings") >= 1.0);
}

/// PINGs whose ACKs pile up faster than they can be written.
#[test]
fn ping_flood_is_ended() {
    let node = Node::start();
    let mut c = RawConn::handshake(node.addr);
    let burst: Vec<u8> = (0..3000u32)
        .flat_map(|_| h2raw::frame(h2raw::PING, 0, 0, b"pingpong"))
        .collect();
    expect_calm(&mut c, &burst, "too many unread acks");
    assert!(guard(&node, "flood_unread_acks") >= 1.0);
    still_served(&node);
}

#[test]
fn empty_data_and_headers_floods_are_ended() {
    let node = Node::start();
    let mut c = RawConn::handshake(node.addr);
    c.send_headers(1, &h2raw::grpc_headers("/cache.Cache/Get", &[]), false)
        .unwrap();
    let burst: Vec<u8> = (0..200)
        .flat_map(|_| h2raw::frame(h2raw::DATA, 0, 1, &[]))
        .collect();
    expect_calm(&mut c, &burst, "too many empty frames");

    // Zero-length HEADERS (a header block of nothing), each on a new stream.
    let mut c = RawConn::handshake(node.addr);
    let burst: Vec<u8> = (0..200u32)
        .flat_map(|i| h2raw::frame(h2raw::HEADERS, h2raw::END_HEADERS, 2 * i + 1, &[]))
        .collect();
    let _ = c.send(&burst);
    let g = c.expect_goaway(T);
    // An empty block has no pseudo-headers: each stream is reset, and
    // the flood ends the connection.
    assert_eq!(g.code, ENHANCE_YOUR_CALM, "{g:?}");
    assert!(guard(&node, "flood_empty_frames") >= 2.0);
}

/// CONTINUATION frames without end (a tiny one each), and a header block
/// that never completes.
#[test]
fn continuation_flood_and_stalled_header_block_are_ended() {
    let node = Node::builder().args(&["--header-timeout", "1s"]).start();
    let mut c = RawConn::handshake(node.addr);
    let block = h2raw::encode_headers(&h2raw::grpc_headers("/cache.Cache/Get", &[]));
    let mut burst = h2raw::frame(h2raw::HEADERS, 0, 1, &block[..4]);
    for _ in 0..100 {
        burst.extend(h2raw::frame(h2raw::CONTINUATION, 0, 1, &[0x40]));
    }
    expect_calm(&mut c, &burst, "too many continuations");
    assert!(guard(&node, "flood_continuations") >= 1.0);

    let mut c = RawConn::handshake(node.addr);
    let started = Instant::now();
    c.send_frame(h2raw::HEADERS, 0, 1, &block[..4]).unwrap();
    let g = c.expect_goaway(T);
    assert_eq!(g.code, h2raw::PROTOCOL_ERROR, "{g:?}");
    assert!(g.debug.contains("header block not completed"), "{g:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    still_served(&node);
}

/// WINDOW_UPDATEs of one byte each while a response waits for window:
/// each would release a 1-byte DATA frame.
#[test]
fn window_update_dribble_is_ended() {
    let node = Node::start();
    block_on(async {
        let mut cl = node.client().await;
        set(&mut cl, "", "big", &value_for("big", 256 * 1024)).await;
    });
    let mut c = RawConn::connect(node.addr);
    let mut hello = h2raw::PREFACE.to_vec();
    // INITIAL_WINDOW_SIZE 0: nothing flows until we say so.
    hello.extend(h2raw::frame(h2raw::SETTINGS, 0, 0, &[0, 4, 0, 0, 0, 0]));
    c.send(&hello).unwrap();
    c.wait_settings(T);
    c.send_grpc(1, "/cache.Cache/Get", &[], &get_msg("big"))
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let burst: Vec<u8> = (0..400)
        .flat_map(|_| h2raw::frame(h2raw::WINDOW_UPDATE, 0, 1, &1u32.to_be_bytes()))
        .collect();
    expect_calm(&mut c, &burst, "too many window dribble");
    assert!(guard(&node, "flood_window_dribble") >= 1.0);
}

/// An HPACK bomb: one 4 KB header inserted in the dynamic table, then
/// referenced again and again so the list decodes to far more than
/// MAX_HEADER_LIST_SIZE. The stream is reset; the connection goes on.
#[test]
fn hpack_bomb_resets_the_stream_only() {
    let node = Node::start();
    let mut c = RawConn::handshake(node.addr);
    let mut block = h2raw::encode_headers(&h2raw::grpc_headers("/cache.Cache/Get", &[]));
    // Literal with incremental indexing, new name "x-bomb", 4000-byte value.
    block.push(0x40);
    block.push(6);
    block.extend_from_slice(b"x-bomb");
    h2raw::hpack_int(&mut block, 0x00, 7, 4000);
    block.extend(std::iter::repeat_n(b'a', 4000));
    // ... then 200 references to it (dynamic index 62).
    for _ in 0..200 {
        block.push(0x80 | 62);
    }
    c.send_frame(
        h2raw::HEADERS,
        h2raw::END_HEADERS | h2raw::END_STREAM,
        1,
        &block,
    )
    .unwrap();
    let r = c.read_response(1, T);
    assert_eq!(r.rst, Some(h2raw::PROTOCOL_ERROR), "{r:?}");
    // The same connection still works (HPACK state kept in sync).
    c.send_grpc(3, "/cache.Cache/Get", &[], &get_msg("absent"))
        .unwrap();
    assert_eq!(c.read_response(3, T).grpc_status(), Some(0));
    assert!(guard(&node, "oversized_headers") >= 1.0);
}

/// A connection that never sends its preface, or half of it, is closed
/// at --header-timeout; so is a gateway request head or body that stalls.
#[test]
fn prefaces_and_request_heads_must_arrive_in_time() {
    let node = Node::builder().args(&["--header-timeout", "1s"]).start();
    let mut silent = TcpStream::connect(node.addr).unwrap();
    let mut half = TcpStream::connect(node.addr).unwrap();
    half.write_all(&h2raw::PREFACE[..10]).unwrap();
    let mut preface_only = RawConn::connect(node.addr);
    preface_only.send(h2raw::PREFACE).unwrap();
    for s in [&mut silent, &mut half] {
        s.set_read_timeout(Some(Duration::from_secs(6))).unwrap();
        let mut buf = [0u8; 256];
        let mut closed = false;
        loop {
            match s.read(&mut buf) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(_) => continue, // our SETTINGS, then GOAWAY
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    closed = true;
                    break;
                }
            }
        }
        assert!(closed, "a connection without a preface stayed open");
    }
    let (g, _) = preface_only.read_until_end(Duration::from_secs(6));
    let g = g.expect("GOAWAY for a preface without SETTINGS");
    assert!(g.debug.contains("not received within"), "{g:?}");

    let mut head = common::http1::Conn::connect(node.http_addr());
    head.send(b"GET /healthz HTTP/1.1\r\nHost:");
    let r = head.expect_response(false);
    assert_eq!(r.status, 408, "{}", r.text());
    let mut body = common::http1::Conn::connect(node.http_addr());
    body.send(b"PUT /v1/_/k HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc");
    let r = body.expect_response(false);
    assert_eq!(r.status, 408, "{}", r.text());
    assert!(guard(&node, "header_timeout") >= 4.0);
    still_served(&node);
}
