//! `--peer-secret-file`: nodes that share the secret forward to each other;
//! a connection that opens as a peer without proving it knows the secret
//! is closed before its first operation, counted, and cannot use the peer
//! path to get past `--max-connections`. Raw peer clients here speak the
//! wire format with the library's own encoder (`protocol::peer`).

mod common;

use common::cluster::{peer_get_frame, ring_of, static_cluster, write_then_read_across};
use common::*;
use shardcache::protocol::peer::{self, PeerReply};
use shardcache::protocol::peer_auth::PeerSecret;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

const SECRET: &str = "correct horse battery staple, 32+";

fn secret_file(tag: &str, text: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!(
        "shardcache-peer-secret-{tag}-{}",
        std::process::id()
    ));
    std::fs::write(&p, format!("{text}\n")).unwrap();
    p
}

/// What a raw peer connection got back.
struct Exchange {
    challenged: bool,
    replies: Vec<(u32, PeerReply)>,
    /// The node closed the connection (EOF) rather than letting it idle.
    closed: bool,
}

/// Opens a peer connection to `addr`: with `answer`, waits for the
/// CHALLENGE and answers it with that secret before sending `frames`;
/// without, sends `frames` right after the magic. Reads until the node
/// closes or 2 s pass.
fn raw_peer(addr: SocketAddr, answer: Option<&PeerSecret>, frames: &[u8]) -> Exchange {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = bytes::BytesMut::new();
    let mut out = peer::MAGIC.to_vec();
    let mut challenged = false;
    let mut replies = Vec::new();
    if let Some(secret) = answer {
        s.write_all(&out).unwrap();
        out.clear();
        while !challenged {
            let mut chunk = [0u8; 4096];
            let n = s.read(&mut chunk).unwrap();
            assert!(n > 0, "closed before challenging");
            buf.extend_from_slice(&chunk[..n]);
            if let Some((_, PeerReply::Challenge(nonce))) =
                peer::decode_reply(&mut buf, 1 << 20).unwrap()
            {
                peer::encode_auth(&mut out, &secret.mac(&nonce));
                challenged = true;
            }
        }
    }
    out.extend_from_slice(frames);
    let _ = s.write_all(&out);
    let mut closed = false;
    loop {
        let mut chunk = [0u8; 4096];
        match s.read(&mut chunk) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => break, // timed out: still open
        }
        while let Ok(Some(r)) = peer::decode_reply(&mut buf, 1 << 20) {
            match r {
                (_, PeerReply::Challenge(_)) => challenged = true,
                r => replies.push(r),
            }
        }
    }
    while let Ok(Some(r)) = peer::decode_reply(&mut buf, 1 << 20) {
        match r {
            (_, PeerReply::Challenge(_)) => challenged = true,
            r => replies.push(r),
        }
    }
    Exchange {
        challenged,
        replies,
        closed,
    }
}

fn guard(node: &Node, event: &str) -> f64 {
    guard_events(&scrape(node), event)
}

#[test]
fn nodes_sharing_the_secret_forward_and_strangers_are_closed_unread() {
    let file = secret_file("cluster", SECRET);
    let f = file.display().to_string();
    let (nodes, addrs) = static_cluster(
        3,
        "auth",
        &["--peer-secret-file", &f, "--hot-fraction", "0"],
    );
    let ring = ring_of(&addrs);
    // Keys owned by each node, written through node 0 and read through
    // the others: every one of them crosses a peer connection.
    let rt = common::cluster::rt();
    rt.block_on(async {
        let mut c0 = nodes[0].client().await;
        let mut others = Vec::new();
        for n in &nodes[1..] {
            others.push((n.node_id.clone(), n.client().await));
        }
        write_then_read_across(&addrs, &mut c0, others).await;
    });

    // A key node 0 owns, asked for over raw peer connections to it.
    let key = (0..)
        .map(|i| format!("key-{i}"))
        .find(|k| ring.owner(b"", k.as_bytes()).addr == addrs[0])
        .unwrap();
    let right = PeerSecret::new(SECRET.as_bytes());
    let ok = raw_peer(addrs[0], Some(&right), &peer_get_frame(&key));
    assert!(ok.challenged);
    assert!(
        matches!(ok.replies.as_slice(), [(7, PeerReply::Get(Some(v)))] if v.as_ref() == key.as_bytes()),
        "an authenticated peer's GET: {:?}",
        ok.replies
    );

    let before = guard(&nodes[0], "peer_auth_failed");
    let mut invalidate_and_get = Vec::new();
    peer::encode_invalidate(&mut invalidate_and_get, "", &key);
    invalidate_and_get.extend(peer_get_frame(&key));
    let wrong = PeerSecret::new(b"a different secret, also long enough");
    for (who, answer) in [("no answer", None), ("a wrong secret", Some(&wrong))] {
        let e = raw_peer(addrs[0], answer, &invalidate_and_get);
        assert!(e.challenged, "{who}: no challenge");
        assert!(e.replies.is_empty(), "{who}: served {:?}", e.replies);
        assert!(e.closed, "{who}: the connection stayed open");
    }
    assert!(guard(&nodes[0], "peer_auth_failed") >= before + 2.0);
    // Nothing the strangers sent was applied: the value is still there.
    rt.block_on(async {
        let mut c = nodes[1].client().await;
        assert_eq!(get(&mut c, "", &key).await.as_deref(), Some(key.as_bytes()));
    });
    let _ = std::fs::remove_file(file);
}

#[test]
fn a_node_without_the_secret_cannot_forward_to_nodes_that_require_it() {
    let file = secret_file("odd-one-out", SECRET);
    let f = file.display().to_string();
    let a = common::cluster::loopback(free_port());
    let b = common::cluster::loopback(free_port());
    let peers = format!("{a},{b}");
    let with = Node::builder()
        .node_id("with-secret")
        .listen(a)
        .args(&[
            "--peers",
            &peers,
            "--peer-secret-file",
            &f,
            "--hot-fraction",
            "0",
        ])
        .start();
    let without = Node::builder()
        .node_id("without-secret")
        .listen(b)
        .args(&["--peers", &peers, "--hot-fraction", "0"])
        .start();
    let ring = ring_of(&[a, b]);
    let key = (0..)
        .map(|i| format!("k{i}"))
        .find(|k| ring.owner(b"", k.as_bytes()).addr == a)
        .unwrap();
    common::cluster::rt().block_on(async {
        let mut c = without.client().await;
        let err = c
            .get(req("", &key))
            .await
            .expect_err("a node without the secret was served by one that requires it");
        assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
        let mut c = with.client().await;
        set(&mut c, "", &key, b"v").await;
        assert_eq!(get(&mut c, "", &key).await.as_deref(), Some(&b"v"[..]));
    });
    assert!(guard(&with, "peer_auth_failed") >= 1.0);
    let _ = std::fs::remove_file(file);
}

#[test]
fn only_authenticated_peers_get_past_the_connection_limit() {
    let file = secret_file("limit", SECRET);
    let f = file.display().to_string();
    let node = Node::builder()
        .shards(1)
        .args(&["--max-connections", "1", "--peer-secret-file", &f])
        .start();
    // One client connection takes the only slot.
    let rt = common::cluster::rt();
    let _held = rt.block_on(async {
        let mut c = node.client().await;
        set(&mut c, "", "k", b"v").await;
        c
    });
    let right = PeerSecret::new(SECRET.as_bytes());
    let ok = raw_peer(node.addr, Some(&right), &peer_get_frame("k"));
    assert!(
        matches!(ok.replies.as_slice(), [(7, PeerReply::Get(Some(v)))] if v.as_ref() == b"v"),
        "an authenticated peer over the limit: {:?}",
        ok.replies
    );
    let stranger = raw_peer(node.addr, None, &peer_get_frame("k"));
    assert!(stranger.replies.is_empty() && stranger.closed);
}

#[test]
fn a_short_or_missing_secret_file_stops_start_up() {
    let short = secret_file("short", "tooshort");
    for (path, expected) in [
        (short.display().to_string(), "at least 16"),
        ("/nonexistent/secret".to_string(), "cannot read"),
    ] {
        for sub in ["serve", "check-config"] {
            let out = server_command()
                .args([sub, "--listen", "127.0.0.1:0", "--http", "off"])
                .args(["--peer-secret-file", &path])
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{sub} {path}: {err}");
            assert!(
                err.contains("--peer-secret-file") && err.contains(&path) && err.contains(expected),
                "{sub}: {err}"
            );
        }
    }
    let _ = std::fs::remove_file(short);
}
