//! `--peer-ca`: nodes talk to each other over mutual TLS. Three nodes
//! with certificates from one CA forward to each other; a fourth whose
//! certificate comes from another CA cannot forward to them, and
//! connections that open as a peer in plaintext, or over TLS without a
//! trusted certificate, are closed before their first operation and
//! counted. Clients reach the nodes with tonic over rustls; raw peers
//! speak the wire format with the library's own encoder over rustls.

mod common;

use common::certs::{arg, scrape_tls, tls_channel, Ca, Dir};
use common::cluster::{loopback, peer_get_frame, ring_of, write_then_read_across};
use common::*;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use shardcache::protocol::peer::{self, PeerReply};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// A node's files: (certificate, key), named for the node.
fn node_files(dir: &Dir, ca: &Ca, name: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = ca.node(name, "127.0.0.1");
    (
        dir.write(&format!("{name}.pem"), &cert),
        dir.write(&format!("{name}.key"), &key),
    )
}

/// A node on `addr` in a static cluster of `peers`, with its own
/// certificate from `ca` and `peer_ca` as the CA its peers must chain to.
fn start(dir: &Dir, ca: &Ca, name: &str, addr: SocketAddr, peers: &str, peer_ca: &str) -> Node {
    let (cert, key) = node_files(dir, ca, name);
    Node::builder()
        .node_id(name)
        .listen(addr)
        .args(&[
            "--peers",
            peers,
            "--tls-cert",
            &arg(&cert),
            "--tls-key",
            &arg(&key),
            "--peer-ca",
            peer_ca,
            "--hot-fraction",
            "0",
        ])
        .start()
}

/// What a connection that tried to act as a peer got back.
#[derive(Debug)]
struct Attempt {
    replies: Vec<(u32, PeerReply)>,
    /// The node ended the connection (EOF, an alert or a reset) rather
    /// than letting it wait.
    closed: bool,
}

/// Reads replies from `s` until it ends or 2 s pass.
fn read_replies(s: &mut impl Read) -> Attempt {
    let mut buf = bytes::BytesMut::new();
    let mut closed = false;
    let mut chunk = [0u8; 4096];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => break,
            Err(_) => {
                closed = true;
                break;
            }
        }
    }
    let mut replies = Vec::new();
    while let Ok(Some(r)) = peer::decode_reply(&mut buf, 1 << 20) {
        replies.push(r);
    }
    Attempt { replies, closed }
}

/// A peer connection over TLS offering the peer ALPN, trusting `ca` for
/// the node, presenting `identity` (certificate, key) if given; sends
/// `frames` once the handshake is done.
fn tls_peer(
    addr: SocketAddr,
    ca: &Ca,
    identity: Option<(&PathBuf, &PathBuf)>,
    frames: &[u8],
) -> Attempt {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.pem().as_bytes()).unwrap())
        .unwrap();
    #[allow(deprecated)] // ring, as the node uses (src/tls.rs)
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_file(cert).unwrap()],
                PrivateKeyDer::from_pem_file(key).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![shardcache::tls::PEER_ALPN.to_vec()];
    let conn =
        rustls::ClientConnection::new(Arc::new(config), ServerName::try_from("localhost").unwrap())
            .unwrap();
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut s = rustls::StreamOwned::new(conn, tcp);
    // A refused handshake shows up here or on the first read.
    if s.write_all(frames).and_then(|()| s.flush()).is_err() {
        return Attempt {
            replies: Vec::new(),
            closed: true,
        };
    }
    read_replies(&mut s)
}

/// A gRPC client of `n` over TLS, trusting `ca`.
async fn tls_client(n: &Node, ca: &Ca) -> pb::cache_client::CacheClient<tonic::transport::Channel> {
    pb::cache_client::CacheClient::new(tls_channel(n, &ca.pem(), None).await.unwrap())
}

#[test]
fn nodes_with_certificates_from_the_peer_ca_forward_and_nothing_else_gets_in() {
    let dir = Dir::new("peer-mtls");
    let ca = Ca::new("nodes CA");
    let ca_path = dir.write("nodes-ca.pem", &ca.pem());
    let addrs: Vec<SocketAddr> = (0..3).map(|_| loopback(free_port())).collect();
    let peers = common::cluster::peer_list(&addrs);
    let nodes: Vec<Node> = addrs
        .iter()
        .enumerate()
        .map(|(i, &a)| start(&dir, &ca, &format!("node{i}"), a, &peers, &arg(&ca_path)))
        .collect();
    let ring = ring_of(&addrs);

    // Keys of every owner, written through node 0 and read through the
    // others: each crosses a peer connection, over mutual TLS.
    let rt = common::cluster::rt();
    rt.block_on(async {
        let mut c0 = tls_client(&nodes[0], &ca).await;
        let mut others = Vec::new();
        for n in &nodes[1..] {
            others.push((n.node_id.clone(), tls_client(n, &ca).await));
        }
        write_then_read_across(&addrs, &mut c0, others).await;
    });
    for n in &nodes {
        let e = scrape_tls(n, &ca_path, None);
        assert!(
            total(&e, "shardcache_forwarded_requests_total") > 0.0,
            "{} forwarded nothing",
            n.node_id
        );
        assert_eq!(guard_events(&e, "tls_handshake_failed"), 0.0);
    }

    // A key node 0 owns: an authenticated raw peer gets it.
    let key = (0..)
        .map(|i| format!("key-{i}"))
        .find(|k| ring.owner(b"", k.as_bytes()).addr == addrs[0])
        .unwrap();
    let (cert, key_file) = node_files(&dir, &ca, "raw");
    let ok = tls_peer(
        addrs[0],
        &ca,
        Some((&cert, &key_file)),
        &peer_get_frame(&key),
    );
    assert!(
        matches!(ok.replies.as_slice(), [(7, PeerReply::Get(Some(v)))] if v.as_ref() == key.as_bytes()),
        "a peer with a certificate from the peer CA: {ok:?}"
    );

    // Strangers: invalidate + get, each closed unserved and counted.
    let mut frames = Vec::new();
    peer::encode_invalidate(&mut frames, "", &key);
    frames.extend(peer_get_frame(&key));
    let rogue_ca = Ca::new("some other CA");
    let (rogue_cert, rogue_key) = node_files(&dir, &rogue_ca, "rogue");
    let before = scrape_tls(&nodes[0], &ca_path, None);
    let no_cert = tls_peer(addrs[0], &ca, None, &frames);
    let wrong_ca = tls_peer(addrs[0], &ca, Some((&rogue_cert, &rogue_key)), &frames);
    let plaintext = {
        let mut s = TcpStream::connect(addrs[0]).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut out = peer::MAGIC.to_vec();
        out.extend_from_slice(&frames);
        let _ = s.write_all(&out);
        read_replies(&mut s)
    };
    for (who, a) in [
        ("no certificate", &no_cert),
        ("a certificate of another CA", &wrong_ca),
        ("plaintext", &plaintext),
    ] {
        assert!(a.replies.is_empty(), "{who}: served {:?}", a.replies);
        assert!(a.closed, "{who}: the connection stayed open");
    }
    let after = scrape_tls(&nodes[0], &ca_path, None);
    assert!(
        guard_events(&after, "tls_handshake_failed")
            >= guard_events(&before, "tls_handshake_failed") + 2.0,
        "TLS refusals not counted"
    );
    assert!(
        guard_events(&after, "peer_auth_failed") >= guard_events(&before, "peer_auth_failed") + 1.0,
        "the plaintext peer was not counted"
    );

    // A fourth node whose certificate the cluster does not trust (it
    // trusts theirs) cannot forward: its calls for their keys fail fast
    // with UNAVAILABLE naming TLS, the cluster's values are untouched.
    let rogue_addr = loopback(free_port());
    let rogue_peers = format!("{peers},{rogue_addr}");
    let rogue = {
        Node::builder()
            .node_id("rogue")
            .listen(rogue_addr)
            .args(&[
                "--peers",
                &rogue_peers,
                "--tls-cert",
                &arg(&rogue_cert),
                "--tls-key",
                &arg(&rogue_key),
                "--peer-ca",
                &arg(&ca_path),
                "--hot-fraction",
                "0",
            ])
            .start()
    };
    let rogue_ring = ring_of(&[addrs.clone(), vec![rogue_addr]].concat());
    let theirs = (0..)
        .map(|i| format!("key-{i}"))
        .find(|k| rogue_ring.owner(b"", k.as_bytes()).addr == addrs[1])
        .unwrap();
    rt.block_on(async {
        let mut c = tls_client(&rogue, &rogue_ca).await;
        let err = c.get(req("", &theirs)).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
        assert!(err.message().contains("TLS"), "{err:?}");
        let err = c
            .set(set_req("", &theirs, b"overwritten", 0))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");

        let mut c = tls_client(&nodes[1], &ca).await;
        assert_eq!(
            get(&mut c, "", &theirs).await.as_deref(),
            Some(theirs.as_bytes())
        );
    });
    assert!(
        guard_events(
            &scrape_tls(&nodes[1], &ca_path, None),
            "tls_handshake_failed"
        ) >= 1.0,
        "the rogue node's handshakes were not counted"
    );
}

#[test]
fn peer_ca_needs_a_certificate_and_names_a_bad_file() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shardcache"))
        .args(["check-config", "--peer-ca", "/nonexistent/ca.pem"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--tls-cert"), "{err}");

    let dir = Dir::new("peer-ca-bad");
    let ca = Ca::new("nodes CA");
    let (cert, key) = node_files(&dir, &ca, "node");
    let bad = dir.write("not-a-ca.pem", "not PEM at all\n");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shardcache"))
        .args([
            "check-config",
            "--tls-cert",
            &arg(&cert),
            "--tls-key",
            &arg(&key),
            "--peer-ca",
            &arg(&bad),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--peer-ca") && err.contains("not-a-ca.pem"),
        "{err}"
    );
}

#[test]
fn only_a_peer_with_a_trusted_certificate_gets_past_max_connections() {
    let dir = Dir::new("peer-mtls-limit");
    let ca = Ca::new("nodes CA");
    let ca_path = dir.write("nodes-ca.pem", &ca.pem());
    let (cert, key) = node_files(&dir, &ca, "node");
    let node = Node::builder()
        .args(&[
            "--tls-cert",
            &arg(&cert),
            "--tls-key",
            &arg(&key),
            "--peer-ca",
            &arg(&ca_path),
            "--max-connections",
            "1",
        ])
        .start();
    let rt = common::cluster::rt();
    rt.block_on(async {
        // The one connection allowed, kept open.
        let mut c = tls_client(&node, &ca).await;
        set(&mut c, "", "limited", b"value").await;
        let (peer_cert, peer_key) = node_files(&dir, &ca, "peer");
        let frames = peer_get_frame("limited");
        let admitted = tls_peer(node.addr, &ca, Some((&peer_cert, &peer_key)), &frames);
        assert!(
            matches!(admitted.replies.as_slice(), [(7, PeerReply::Get(Some(v)))] if v.as_ref() == b"value"),
            "a trusted peer over the limit: {admitted:?}"
        );
        let stranger = tls_peer(node.addr, &ca, None, &frames);
        assert!(stranger.replies.is_empty() && stranger.closed, "{stranger:?}");
        // A second client is still turned away.
        let second = tls_channel(&node, &ca.pem(), None).await;
        let refused = match second {
            Err(_) => true,
            Ok(ch) => pb::cache_client::CacheClient::new(ch)
                .get(req("", "limited"))
                .await
                .is_err(),
        };
        assert!(refused, "a second client got past --max-connections 1");
        // The first still works.
        assert_eq!(get(&mut c, "", "limited").await.as_deref(), Some(&b"value"[..]));
    });
}
