//! gRPC error statuses: key limits, message and value size limits, shard
//! budget, unknown methods, malformed bodies, compression, deadlines.

mod common;

use common::h2raw::{self, RawConn};
use common::*;
use prost::Message;
use std::time::Duration;
use tonic::Code;

fn assert_code<T: std::fmt::Debug>(
    r: Result<T, tonic::Status>,
    code: Code,
    what: &str,
) -> tonic::Status {
    match r {
        Ok(v) => panic!("{what}: expected {code:?}, got OK {v:?}"),
        Err(s) => {
            assert_eq!(s.code(), code, "{what}: wrong status: {s:?}");
            s
        }
    }
}

#[tokio::test]
async fn empty_key_is_invalid_argument() {
    let node = Node::start();
    let mut c = node.client().await;
    let msgs = [
        assert_code(
            c.get(req("", "")).await,
            Code::InvalidArgument,
            "Get empty key",
        ),
        assert_code(
            c.set(set_req("", "", b"v", 0)).await,
            Code::InvalidArgument,
            "Set empty key",
        ),
        assert_code(
            c.delete(req("g", "")).await,
            Code::InvalidArgument,
            "Delete empty key",
        ),
    ];
    for s in msgs {
        let m = s.message().to_lowercase();
        assert!(
            m.contains("key") && m.contains("empty"),
            "message should say the key is empty: {:?}",
            s.message()
        );
    }
    // Nothing was stored or counted as a set, and the connection is fine.
    let t = stats(&mut c).await.total.unwrap();
    assert_eq!((t.items, t.sets), (0, 0), "{t:?}");
    set(&mut c, "", "k", b"v").await;
}

#[tokio::test]
async fn key_length_limit_is_4096_bytes() {
    let node = Node::start();
    let mut c = node.client().await;
    let k4096 = "k".repeat(4096);
    let k4097 = "k".repeat(4097);
    set(&mut c, "", &k4096, b"max key").await;
    assert_eq!(
        get(&mut c, "", &k4096).await.as_deref(),
        Some(&b"max key"[..])
    );
    assert!(delete(&mut c, "", &k4096).await);

    let msgs = [
        assert_code(
            c.set(set_req("", &k4097, b"v", 0)).await,
            Code::InvalidArgument,
            "Set 4097-byte key",
        ),
        assert_code(
            c.get(req("", &k4097)).await,
            Code::InvalidArgument,
            "Get 4097-byte key",
        ),
        assert_code(
            c.delete(req("", &k4097)).await,
            Code::InvalidArgument,
            "Delete 4097-byte key",
        ),
    ];
    for s in msgs {
        assert!(
            s.message().contains("4096"),
            "message should name the limit: {:?}",
            s.message()
        );
    }
    // The limit is in bytes, not characters: 2048 two-byte chars = 4096 bytes.
    let wide = "é".repeat(2048);
    set(&mut c, "", &wide, b"wide").await;
    assert_eq!(get(&mut c, "", &wide).await.as_deref(), Some(&b"wide"[..]));
    let wider = format!("{wide}a");
    assert_code(
        c.set(set_req("", &wider, b"v", 0)).await,
        Code::InvalidArgument,
        "Set 4097-byte UTF-8 key",
    );
}

#[tokio::test]
async fn oversized_message_is_resource_exhausted_and_the_connection_survives() {
    let node = Node::builder().max_value("1MiB").start();
    let mut c = node.client().await.max_encoding_message_size(64 << 20);
    let mut rng = Rng::new(3);
    let huge = rng.bytes(2 << 20);
    for round in 0..2 {
        let s = assert_code(
            c.set(set_req("", &format!("huge{round}"), &huge, 0)).await,
            Code::ResourceExhausted,
            "Set of a 2 MiB value with --max-value 1MiB",
        );
        assert!(
            !s.message().is_empty(),
            "the status should say what was too large"
        );
        // The SAME channel (connection) keeps working.
        set(&mut c, "", &format!("after{round}"), b"still fine").await;
        assert_eq!(
            get(&mut c, "", &format!("after{round}")).await.as_deref(),
            Some(&b"still fine"[..])
        );
        assert_eq!(get(&mut c, "", &format!("huge{round}")).await, None);
    }
    // A value at the limit is accepted on the same connection.
    let max = rng.bytes(1 << 20);
    set(&mut c, "", "at-limit", &max).await;
    assert!(get(&mut c, "", "at-limit").await.as_deref() == Some(&max[..]));
    let t = stats(&mut c).await.total.unwrap();
    assert_eq!(t.sets, 3, "only the accepted Sets count: {t:?}");
}

#[tokio::test]
async fn value_over_max_value_is_rejected() {
    let node = Node::builder().max_value("64KiB").start();
    let mut c = node.client().await;
    let ok = value_for("ok", 64 * 1024);
    set(&mut c, "", "exactly-max", &ok).await;
    assert_eq!(
        get(&mut c, "", "exactly-max").await.map(|v| v.len()),
        Some(64 * 1024)
    );
    // One byte over --max-value (the message itself is within any framing slack).
    let over = value_for("over", 64 * 1024 + 1);
    let s = c
        .set(set_req("", "one-over", &over, 0))
        .await
        .expect_err("a value over --max-value was accepted");
    assert!(
        matches!(s.code(), Code::ResourceExhausted | Code::InvalidArgument),
        "expected RESOURCE_EXHAUSTED (or INVALID_ARGUMENT), got {s:?}"
    );
    assert_eq!(get(&mut c, "", "one-over").await, None);
}

#[tokio::test]
async fn value_larger_than_a_shard_budget_is_rejected_without_evicting() {
    // 4 MiB over 4 shards: 1 MiB per shard; a 1 MiB value is within
    // --max-value (which may not exceed a shard's share) but, with its key
    // and the entry's overhead, can never fit a shard.
    let node = Node::builder()
        .memory("4MiB")
        .shards(4)
        .max_value("1MiB")
        .start();
    let mut c = node.client().await;
    let s0 = stats(&mut c).await;
    for sh in &s0.shards {
        assert_eq!(sh.capacity_bytes, MIB);
    }
    for i in 0..40 {
        set(
            &mut c,
            "",
            &format!("small{i}"),
            &value_for(&format!("s{i}"), 8 * 1024),
        )
        .await;
    }
    let big = value_for("big", 1 << 20);
    let s = c
        .set(set_req("", "big", &big, 0))
        .await
        .expect_err("a value larger than a shard was stored");
    assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
    assert_eq!(get(&mut c, "", "big").await, None);
    for i in 0..40 {
        assert_eq!(
            get(&mut c, "", &format!("small{i}")).await,
            Some(value_for(&format!("s{i}"), 8 * 1024)),
            "small{i} was evicted by a Set that could not fit"
        );
    }
    let st = stats(&mut c).await;
    assert_total_is_sum(&st);
    let t = st.total.unwrap();
    assert_eq!(t.evictions, 0, "{t:?}");
    assert_eq!(t.items, 40, "{t:?}");
    for sh in &st.shards {
        assert!(sh.bytes <= sh.capacity_bytes, "{sh:?}");
    }
}

#[tokio::test]
async fn unknown_method_is_unimplemented() {
    let node = Node::start();
    let ch = node.channel().await;
    let body = req("", "k").encode_to_vec();
    for path in ["/cache.Cache/Nope", "/cache.Other/Get", "/cache.Cache/get"] {
        let r = raw_codec::call(ch.clone(), path, body.clone()).await;
        assert_code(r, Code::Unimplemented, path);
    }
    // The same connection still serves real methods.
    let mut c = CacheClient::new(ch);
    set(&mut c, "", "k", b"v").await;
    assert_eq!(get(&mut c, "", "k").await.as_deref(), Some(&b"v"[..]));
}

#[tokio::test]
async fn malformed_protobuf_is_invalid_argument() {
    let node = Node::start();
    let ch = node.channel().await;
    let bodies: [(&str, &'static str, Vec<u8>); 3] = [
        // field 2 (key), length 100, but only 2 bytes follow
        (
            "truncated string",
            "/cache.Cache/Get",
            vec![0x12, 0x64, b'a', b'b'],
        ),
        // field 1 with wire type 7 (does not exist)
        ("bad wire type", "/cache.Cache/Set", vec![0x0f, 0x01]),
        // varint that never ends (ttl_ms, field 4)
        (
            "endless varint",
            "/cache.Cache/Set",
            vec![
                0x20, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            ],
        ),
    ];
    for (what, path, body) in bodies {
        let r = raw_codec::call(ch.clone(), path, body).await;
        assert_code(r, Code::InvalidArgument, what);
    }
    // A well-formed body through the same raw path works (the codec is sound).
    let ok = raw_codec::call(ch.clone(), "/cache.Cache/Get", req("", "k").encode_to_vec())
        .await
        .expect("well-formed raw Get");
    let g = pb::GetResponse::decode(&ok[..]).expect("GetResponse");
    assert!(!g.found);
    let mut c = CacheClient::new(ch);
    let t = stats(&mut c).await.total.unwrap();
    assert_eq!(t.sets, 0, "a malformed Set was applied: {t:?}");
}

#[tokio::test]
async fn calls_with_a_client_deadline_succeed() {
    let node = Node::start();
    let mut c = node.client().await;
    // tonic sends grpc-timeout (e.g. "5000000u"); the server must accept it.
    let mut r = tonic::Request::new(set_req("", "k", b"v", 0));
    r.set_timeout(Duration::from_secs(5));
    assert!(
        c.set(r)
            .await
            .expect("Set with grpc-timeout")
            .into_inner()
            .stored
    );
    let mut r = tonic::Request::new(req("", "k"));
    r.set_timeout(Duration::from_secs(30));
    let g = c.get(r).await.expect("Get with grpc-timeout").into_inner();
    assert_eq!(g.value, b"v");
}

// ------------------------------------------------------- raw HTTP/2 cases

const T: Duration = Duration::from_secs(10);

#[test]
fn compressed_message_is_unimplemented() {
    let node = Node::start();
    let mut c = RawConn::handshake(node.addr);
    let hdrs = h2raw::grpc_headers(
        "/cache.Cache/Set",
        &[("grpc-encoding", "gzip"), ("grpc-accept-encoding", "gzip")],
    );
    c.send_headers(1, &hdrs, false).unwrap();
    // Flag byte 1; the bytes need not be valid gzip: the server must refuse
    // compression before looking inside.
    let msg = h2raw::grpc_message(
        b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03not-really-gzip",
        true,
    );
    c.send_frame(h2raw::DATA, h2raw::END_STREAM, 1, &msg)
        .unwrap();
    let r = c.read_response(1, T);
    assert_eq!(r.header(":status"), Some("200"), "{r:?}");
    assert_eq!(r.grpc_status(), Some(12), "expected UNIMPLEMENTED: {r:?}");
    let m = r.grpc_message().to_lowercase();
    assert!(
        m.contains("compress") || m.contains("encoding"),
        "message should mention compression: {m:?}"
    );
    let accept = r
        .header("grpc-accept-encoding")
        .or_else(|| r.trailer("grpc-accept-encoding"))
        .unwrap_or_else(|| panic!("no grpc-accept-encoding in the response: {r:?}"));
    assert!(
        accept.split(',').any(|e| e.trim() == "identity"),
        "grpc-accept-encoding: {accept}"
    );
    assert!(
        !accept.contains("gzip"),
        "must not advertise gzip: {accept}"
    );
    // The connection still works for an uncompressed call.
    c.send_grpc(3, "/cache.Cache/Get", &[], &req("", "x").encode_to_vec())
        .unwrap();
    let r = c.read_response(3, T);
    assert_eq!(r.grpc_status(), Some(0), "{r:?}");
    node.assert_healthy_blocking();
}

#[test]
fn responses_advertise_identity_encoding() {
    let node = Node::start();
    let mut c = RawConn::handshake(node.addr);
    c.send_grpc(1, "/cache.Cache/Get", &[], &req("", "k").encode_to_vec())
        .unwrap();
    let r = c.read_response(1, T);
    assert_eq!(r.grpc_status(), Some(0), "{r:?}");
    assert_eq!(r.header("grpc-accept-encoding"), Some("identity"), "{r:?}");
    assert!(
        r.header("grpc-encoding").is_none_or(|e| e == "identity"),
        "{r:?}"
    );
}

#[test]
fn grpc_timeout_expiring_before_the_body_is_deadline_exceeded() {
    let node = Node::start();
    let mut c = RawConn::handshake(node.addr);
    let hdrs = h2raw::grpc_headers("/cache.Cache/Set", &[("grpc-timeout", "100m")]);
    c.send_headers(1, &hdrs, false).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // The server may already have answered and reset the stream; a late
    // DATA frame must then be ignored, not kill the connection.
    let _ = c.send_frame(
        h2raw::DATA,
        h2raw::END_STREAM,
        1,
        &h2raw::grpc_message(&set_req("", "late", b"v", 0).encode_to_vec(), false),
    );
    let r = c.read_response(1, T);
    assert_eq!(
        r.grpc_status(),
        Some(4),
        "expected DEADLINE_EXCEEDED: {r:?}"
    );
    // Same connection, new stream, no deadline: works, and the late Set was not applied.
    c.send_grpc(3, "/cache.Cache/Get", &[], &req("", "late").encode_to_vec())
        .unwrap();
    let r = c.read_response(3, T);
    assert_eq!(r.grpc_status(), Some(0), "{r:?}");
    let msgs = r.grpc_messages();
    assert_eq!(msgs.len(), 1);
    let g = pb::GetResponse::decode(&msgs[0].1[..]).unwrap();
    assert!(!g.found, "a Set whose deadline passed was applied");
    node.assert_healthy_blocking();
}
