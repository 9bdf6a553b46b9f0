//! HTTP/2 at the frame level, through the hand-written client in
//! tests/common (no code shared with the server): a well-formed gRPC call,
//! and protocol violations that must end the connection with GOAWAY and the
//! right error code, without harming the node.

mod common;

use common::h2raw::{self, RawConn};
use common::*;
use prost::Message;
use std::time::Duration;

const T: Duration = Duration::from_secs(10);

/// After the violation: GOAWAY with `code` (no stream was processed, so
/// last-stream-id is 0), then the server closes the connection; the node
/// still serves a new client.
fn expect_connection_error(node: &Node, c: &mut RawConn, code: u32, what: &str) {
    let ga = c.expect_goaway(T);
    assert_eq!(
        ga.code, code,
        "{what}: wrong GOAWAY code ({ga:?}); frames: {:?}",
        c.seen
    );
    assert_eq!(
        ga.last_stream, 0,
        "{what}: no stream was processed ({ga:?})"
    );
    c.expect_closed(T);
    node.assert_healthy_blocking();
}

#[test]
fn good_grpc_request_over_raw_http2() {
    let node = Node::start();
    let mut c = RawConn::handshake(node.addr);
    c.send_grpc(
        1,
        "/cache.Cache/Set",
        &[],
        &set_req("raw", "k", b"raw value", 0).encode_to_vec(),
    )
    .unwrap();
    let r = c.read_response(1, T);
    assert_eq!(r.header(":status"), Some("200"), "{r:?}");
    let ct = r.header("content-type").unwrap_or_default();
    assert!(ct.starts_with("application/grpc"), "content-type {ct:?}");
    assert!(r.data_frames >= 1, "no DATA frame: {r:?}");
    assert_eq!(r.grpc_status(), Some(0), "trailers: {r:?}");
    assert!(
        r.trailer("grpc-status").is_some(),
        "grpc-status must be in trailers: {r:?}"
    );
    let msgs = r.grpc_messages();
    assert_eq!(msgs.len(), 1, "exactly one message: {r:?}");
    assert_eq!(msgs[0].0, 0, "uncompressed");
    assert!(pb::SetResponse::decode(&msgs[0].1[..]).unwrap().stored);

    // Second stream on the same connection: the Get sees the Set.
    c.send_grpc(3, "/cache.Cache/Get", &[], &req("raw", "k").encode_to_vec())
        .unwrap();
    let r = c.read_response(3, T);
    assert_eq!(r.header(":status"), Some("200"));
    assert_eq!(r.grpc_status(), Some(0));
    let msgs = r.grpc_messages();
    assert_eq!(msgs.len(), 1);
    let g = pb::GetResponse::decode(&msgs[0].1[..]).unwrap();
    assert!(g.found);
    assert_eq!(g.value, b"raw value");

    // Several streams in flight at once, answered independently.
    for (i, sid) in [5u32, 7, 9, 11].iter().enumerate() {
        c.send_grpc(
            *sid,
            "/cache.Cache/Set",
            &[],
            &set_req("raw", &format!("m{i}"), &[i as u8; 3], 0).encode_to_vec(),
        )
        .unwrap();
    }
    // (Responses may come in any order.)
    let sids = [5u32, 7, 9, 11];
    for (sid, r) in sids.iter().zip(c.read_responses(&sids, T)) {
        assert_eq!(r.grpc_status(), Some(0), "stream {sid}: {r:?}");
        let msgs = r.grpc_messages();
        assert_eq!(msgs.len(), 1, "stream {sid}: {r:?}");
        assert!(pb::SetResponse::decode(&msgs[0].1[..]).unwrap().stored);
    }
    // The value is visible to a stock client.
    common::block_on(async {
        let mut tc = node.client().await;
        assert_eq!(get(&mut tc, "raw", "m2").await, Some(vec![2u8; 3]));
    });
}

#[test]
fn request_split_over_continuation_and_several_data_frames() {
    let node = Node::start();
    let mut c = RawConn::handshake(node.addr);
    let block = h2raw::encode_headers(&h2raw::grpc_headers("/cache.Cache/Set", &[]));
    let (a, b) = block.split_at(block.len() / 2);
    c.send_frame(h2raw::HEADERS, 0, 1, a).unwrap();
    c.send_frame(h2raw::CONTINUATION, h2raw::END_HEADERS, 1, b)
        .unwrap();
    let value: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
    let msg = h2raw::grpc_message(&set_req("", "split", &value, 0).encode_to_vec(), false);
    let chunks: Vec<&[u8]> = msg.chunks(7000).collect();
    for (i, ch) in chunks.iter().enumerate() {
        let flags = if i + 1 == chunks.len() {
            h2raw::END_STREAM
        } else {
            0
        };
        c.send_frame(h2raw::DATA, flags, 1, ch).unwrap();
    }
    let r = c.read_response(1, T);
    assert_eq!(r.grpc_status(), Some(0), "{r:?}");
    common::block_on(async {
        let mut tc = node.client().await;
        assert!(get(&mut tc, "", "split").await == Some(value.clone()));
    });
}

#[test]
fn ping_is_acknowledged() {
    let node = Node::start();
    let mut c = RawConn::handshake(node.addr);
    c.ping(T).expect("PING ACK");
    c.ping(T).expect("second PING ACK");
}

#[test]
fn bad_preface_is_protocol_error() {
    let node = Node::start();
    let mut c = RawConn::connect(node.addr);
    c.send(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    expect_connection_error(&node, &mut c, h2raw::PROTOCOL_ERROR, "bad preface");
}

#[test]
fn first_frame_not_settings_is_protocol_error() {
    let node = Node::start();
    let mut c = RawConn::connect(node.addr);
    c.send(h2raw::PREFACE).unwrap();
    c.send_frame(h2raw::PING, 0, 0, b"12345678").unwrap();
    expect_connection_error(&node, &mut c, h2raw::PROTOCOL_ERROR, "PING before SETTINGS");
}

#[test]
fn frame_larger_than_max_frame_size_is_frame_size_error() {
    let node = Node::start();
    let mut c = RawConn::handshake(node.addr);
    // A HEADERS frame (which would alter connection state) of 16385 bytes:
    // one more than the default SETTINGS_MAX_FRAME_SIZE.
    let mut payload = h2raw::encode_headers(&h2raw::grpc_headers("/cache.Cache/Get", &[]));
    payload.resize(16385, 0);
    let _ = c.send_frame(h2raw::HEADERS, h2raw::END_HEADERS, 1, &payload);
    expect_connection_error(&node, &mut c, h2raw::FRAME_SIZE_ERROR, "16385-byte frame");
}

#[test]
fn ping_of_length_7_is_frame_size_error() {
    let node = Node::start();
    let mut c = RawConn::handshake(node.addr);
    c.send_frame(h2raw::PING, 0, 0, b"1234567").unwrap();
    expect_connection_error(&node, &mut c, h2raw::FRAME_SIZE_ERROR, "7-byte PING");
}

#[test]
fn settings_of_bad_length_is_frame_size_error() {
    let node = Node::start();
    let mut c = RawConn::handshake(node.addr);
    c.send_frame(h2raw::SETTINGS, 0, 0, &[0, 3, 0, 0, 0])
        .unwrap();
    expect_connection_error(&node, &mut c, h2raw::FRAME_SIZE_ERROR, "5-byte SETTINGS");
}

#[test]
fn headers_on_even_stream_is_protocol_error() {
    let node = Node::start();
    let mut c = RawConn::handshake(node.addr);
    c.send_headers(2, &h2raw::grpc_headers("/cache.Cache/Get", &[]), true)
        .unwrap();
    expect_connection_error(&node, &mut c, h2raw::PROTOCOL_ERROR, "HEADERS on stream 2");
}

#[test]
fn invalid_hpack_is_compression_error() {
    let node = Node::start();
    let mut c = RawConn::handshake(node.addr);
    // 0x80: indexed header field with index 0, which RFC 7541 forbids.
    c.send_frame(
        h2raw::HEADERS,
        h2raw::END_HEADERS | h2raw::END_STREAM,
        1,
        &[0x80],
    )
    .unwrap();
    expect_connection_error(&node, &mut c, h2raw::COMPRESSION_ERROR, "HPACK index 0");
}

#[test]
fn hpack_index_past_the_tables_is_compression_error() {
    let node = Node::start();
    let mut c = RawConn::handshake(node.addr);
    // Indexed field 200: the static table has 61 entries and the dynamic one is empty.
    let mut block = Vec::new();
    h2raw::hpack_int(&mut block, 0x80, 7, 200);
    c.send_frame(
        h2raw::HEADERS,
        h2raw::END_HEADERS | h2raw::END_STREAM,
        1,
        &block,
    )
    .unwrap();
    expect_connection_error(&node, &mut c, h2raw::COMPRESSION_ERROR, "HPACK index 200");
}

#[test]
fn connection_window_overflow_is_flow_control_error() {
    let node = Node::start();
    let mut c = RawConn::handshake(node.addr);
    // The server's send window starts at 65535; adding 2^31-1 overflows it.
    c.send_frame(h2raw::WINDOW_UPDATE, 0, 0, &0x7fff_ffffu32.to_be_bytes())
        .unwrap();
    expect_connection_error(
        &node,
        &mut c,
        h2raw::FLOW_CONTROL_ERROR,
        "connection window overflow",
    );
}

#[test]
fn data_on_idle_stream_is_protocol_error() {
    let node = Node::start();
    let mut c = RawConn::handshake(node.addr);
    let msg = h2raw::grpc_message(&req("", "k").encode_to_vec(), false);
    c.send_frame(h2raw::DATA, h2raw::END_STREAM, 1, &msg)
        .unwrap();
    expect_connection_error(
        &node,
        &mut c,
        h2raw::PROTOCOL_ERROR,
        "DATA on idle stream 1",
    );
}

#[test]
fn continuation_without_headers_is_protocol_error() {
    let node = Node::start();
    let mut c = RawConn::handshake(node.addr);
    let block = h2raw::encode_headers(&h2raw::grpc_headers("/cache.Cache/Get", &[]));
    c.send_frame(h2raw::CONTINUATION, h2raw::END_HEADERS, 1, &block)
        .unwrap();
    expect_connection_error(
        &node,
        &mut c,
        h2raw::PROTOCOL_ERROR,
        "CONTINUATION without HEADERS",
    );
}

#[test]
fn frame_interleaved_in_a_header_block_is_protocol_error() {
    let node = Node::start();
    let mut c = RawConn::handshake(node.addr);
    let block = h2raw::encode_headers(&h2raw::grpc_headers("/cache.Cache/Get", &[]));
    // HEADERS without END_HEADERS, then a PING instead of CONTINUATION.
    c.send_frame(h2raw::HEADERS, 0, 1, &block).unwrap();
    c.send_frame(h2raw::PING, 0, 0, b"12345678").unwrap();
    let ga = c.expect_goaway(T);
    assert_eq!(ga.code, h2raw::PROTOCOL_ERROR, "{ga:?}");
    c.expect_closed(T);
    node.assert_healthy_blocking();
}

#[test]
fn push_promise_from_client_is_protocol_error() {
    let node = Node::start();
    let mut c = RawConn::handshake(node.addr);
    let mut p = 2u32.to_be_bytes().to_vec();
    p.extend(h2raw::encode_headers(&[(":method", "GET")]));
    c.send_frame(h2raw::PUSH_PROMISE, h2raw::END_HEADERS, 1, &p)
        .unwrap();
    expect_connection_error(&node, &mut c, h2raw::PROTOCOL_ERROR, "client PUSH_PROMISE");
}

#[test]
fn unknown_frame_types_are_ignored() {
    let node = Node::start();
    let mut c = RawConn::handshake(node.addr);
    c.send_frame(0xfa, 0xff, 0, b"extension frame").unwrap();
    c.send_frame(0xfb, 0, 1, b"on an idle stream").unwrap();
    c.send_grpc(1, "/cache.Cache/Get", &[], &req("", "k").encode_to_vec())
        .unwrap();
    let r = c.read_response(1, T);
    assert_eq!(r.grpc_status(), Some(0), "{r:?}");
}

#[test]
fn malformed_request_headers_reset_only_the_stream() {
    let node = Node::start();
    let mut c = RawConn::handshake(node.addr);
    // No :path: a malformed request, a stream error (RFC 9113 §8.1.1).
    let hdrs = [
        (":method", "POST"),
        (":scheme", "http"),
        (":authority", "localhost"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ];
    c.send_headers(1, &hdrs, true).unwrap();
    let r = c.read_response(1, T);
    assert!(
        r.rst == Some(h2raw::PROTOCOL_ERROR)
            || r.header(":status").is_some_and(|s| s.starts_with('4')),
        "expected RST_STREAM(PROTOCOL_ERROR) or a 4xx: {r:?}"
    );
    // The connection itself survives.
    c.send_grpc(3, "/cache.Cache/Get", &[], &req("", "k").encode_to_vec())
        .unwrap();
    let r = c.read_response(3, T);
    assert_eq!(r.grpc_status(), Some(0), "{r:?}");
}
