//! Cross-core consistency: connections land on any shard (SO_REUSEPORT) and
//! keys live on any shard, so most calls hop between cores. Whatever
//! connection a key was written on, every other connection must see it.

mod common;

use common::h2raw::{self, RawConn};
use common::*;
use prost::Message;
use std::time::Duration;
use tokio::task::JoinSet;

const CONNS: usize = 32;
const KEYS: usize = 200;

fn key(conn: usize, k: usize) -> String {
    format!("c{conn}-k{k}")
}

fn val(conn: usize, k: usize) -> Vec<u8> {
    value_for(
        &format!("written by connection {conn}, key {k}"),
        24 + (conn * 7 + k) % 300,
    )
}

/// Requests per pipelined batch on one raw connection (well under any
/// MAX_CONCURRENT_STREAMS a server would advertise).
const BATCH: usize = 100;

/// Sends `msgs` (path, message) pipelined in batches of [`BATCH`] streams and
/// returns the decoded single response message of each, in order. Stream ids
/// continue from `*next_sid`.
fn pipelined(c: &mut RawConn, next_sid: &mut u32, msgs: &[(&str, Vec<u8>)]) -> Vec<Vec<u8>> {
    let mut out = Vec::with_capacity(msgs.len());
    for chunk in msgs.chunks(BATCH) {
        let mut wire = Vec::new();
        let mut sids = Vec::with_capacity(chunk.len());
        for (path, m) in chunk {
            wire.extend(h2raw::grpc_request(*next_sid, path, &[], m));
            sids.push(*next_sid);
            *next_sid += 2;
        }
        c.send(&wire).expect("write pipelined requests");
        for (sid, r) in sids
            .iter()
            .zip(c.read_responses(&sids, Duration::from_secs(30)))
        {
            assert_eq!(r.header(":status"), Some("200"), "stream {sid}: {r:?}");
            assert_eq!(r.grpc_status(), Some(0), "stream {sid}: {r:?}");
            let mut m = r.grpc_messages();
            assert_eq!(m.len(), 1, "stream {sid}: {r:?}");
            out.push(m.pop().unwrap().1);
        }
    }
    out
}

/// 32 connections on a 4-shard node; each writes 200 keys, then each reads
/// every key written by every other connection (198,400 reads). The calls
/// go over raw HTTP/2 connections, pipelined, so the client is cheap enough
/// for a debug build on two cores; a stock client checks a sample at the end.
#[test]
fn every_connection_sees_every_other_connections_writes() {
    let node = Node::builder().shards(4).start();
    let mut conns: Vec<(RawConn, u32)> = (0..CONNS)
        .map(|_| (RawConn::handshake(node.addr), 1u32))
        .collect();

    // Phase 1: each connection writes its own 200 keys.
    std::thread::scope(|s| {
        for (conn, (c, sid)) in conns.iter_mut().enumerate() {
            s.spawn(move || {
                let msgs: Vec<(&str, Vec<u8>)> = (0..KEYS)
                    .map(|k| {
                        (
                            "/cache.Cache/Set",
                            set_req("xc", &key(conn, k), &val(conn, k), 0).encode_to_vec(),
                        )
                    })
                    .collect();
                for (k, m) in pipelined(c, sid, &msgs).iter().enumerate() {
                    let r = pb::SetResponse::decode(&m[..]).expect("SetResponse");
                    assert!(r.stored, "conn {conn}: Set {} not stored", key(conn, k));
                }
            });
        }
    });

    // Phase 2 (after every write has been acknowledged): each connection
    // reads every key of every other connection.
    let reads: Vec<u64> = std::thread::scope(|s| {
        let handles: Vec<_> = conns
            .iter_mut()
            .enumerate()
            .map(|(conn, (c, sid))| {
                s.spawn(move || {
                    let targets: Vec<(usize, usize)> = (0..CONNS)
                        .filter(|o| *o != conn)
                        .flat_map(|o| (0..KEYS).map(move |k| (o, k)))
                        .collect();
                    let msgs: Vec<(&str, Vec<u8>)> = targets
                        .iter()
                        .map(|(o, k)| ("/cache.Cache/Get", req("xc", &key(*o, *k)).encode_to_vec()))
                        .collect();
                    let mut n = 0u64;
                    for ((o, k), m) in targets.iter().zip(pipelined(c, sid, &msgs)) {
                        let r = pb::GetResponse::decode(&m[..]).expect("GetResponse");
                        assert!(
                            r.found,
                            "conn {conn} does not see {} written by conn {o}",
                            key(*o, *k)
                        );
                        assert!(
                            r.value == val(*o, *k),
                            "conn {conn} read a wrong value for {}",
                            key(*o, *k)
                        );
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("reader thread panicked"))
            .collect()
    });
    let total_reads: u64 = reads.iter().sum();
    assert_eq!(total_reads, (CONNS * (CONNS - 1) * KEYS) as u64);
    drop(conns);

    common::block_on(async {
        let mut c = node.client().await;
        for conn in (0..CONNS).step_by(5) {
            for k in (0..KEYS).step_by(37) {
                assert_eq!(get(&mut c, "xc", &key(conn, k)).await, Some(val(conn, k)));
            }
        }
        let s = stats(&mut c).await;
        assert_total_is_sum(&s);
        assert_eq!(s.shards.len(), 4);
        let t = s.total.unwrap();
        assert_eq!(t.items, (CONNS * KEYS) as u64, "{t:?}");
        assert_eq!(t.sets, (CONNS * KEYS) as u64, "{t:?}");
        assert!(t.hits >= total_reads, "{t:?}");
        assert_eq!(t.misses, 0, "{t:?}");
        for (i, sh) in s.shards.iter().enumerate() {
            assert!(
                sh.items > 0,
                "shard {i} holds none of {} keys: {:?}",
                CONNS * KEYS,
                s.shards
            );
        }
    });
}

/// The same, smaller, through 32 stock tonic connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tonic_connection_sees_the_others_writes() {
    const SAMPLE: usize = 20;
    let node = Node::builder().shards(4).start();
    let mut clients = Vec::with_capacity(CONNS);
    for _ in 0..CONNS {
        clients.push(node.client().await); // 32 separate connections
    }
    let mut js = JoinSet::new();
    for (conn, c) in clients.iter().enumerate() {
        let mut c = c.clone();
        js.spawn(async move {
            for k in 0..KEYS {
                let r = c.set(set_req("xt", &key(conn, k), &val(conn, k), 0)).await;
                assert!(r.expect("Set").into_inner().stored);
            }
        });
    }
    while let Some(r) = js.join_next().await {
        r.expect("writer task panicked");
    }
    // Each connection reads SAMPLE keys of every other connection.
    let mut js = JoinSet::new();
    for (conn, c) in clients.iter().enumerate() {
        let mut c = c.clone();
        js.spawn(async move {
            for other in (0..CONNS).filter(|o| *o != conn) {
                for k in (0..KEYS).skip(conn % 10).step_by(KEYS / SAMPLE) {
                    let r = c
                        .get(req("xt", &key(other, k)))
                        .await
                        .unwrap_or_else(|e| {
                            panic!("conn {conn}: Get {} failed: {e:?}", key(other, k))
                        })
                        .into_inner();
                    assert!(
                        r.found,
                        "conn {conn} does not see {} written by conn {other}",
                        key(other, k)
                    );
                    assert!(
                        r.value == val(other, k),
                        "conn {conn} read a wrong value for {}",
                        key(other, k)
                    );
                }
            }
        });
    }
    while let Some(r) = js.join_next().await {
        r.expect("reader task panicked");
    }
    let mut c = clients[0].clone();
    let t = stats(&mut c).await.total.unwrap();
    assert_eq!(t.items, (CONNS * KEYS) as u64, "{t:?}");
    assert_eq!(t.misses, 0, "{t:?}");
    assert_eq!(t.hits, (CONNS * (CONNS - 1) * SAMPLE) as u64, "{t:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overwrites_and_deletes_are_visible_across_connections() {
    let node = Node::builder().shards(4).start();
    let mut c: Vec<_> = Vec::new();
    for _ in 0..8 {
        c.push(node.client().await);
    }
    for i in 0..200 {
        let k = format!("k{i}");
        let (a, b, d, e) = (i % 8, (i + 1) % 8, (i + 2) % 8, (i + 3) % 8);
        set(&mut c[a], "g", &k, b"first").await;
        set(&mut c[b], "g", &k, b"second").await;
        assert_eq!(
            get(&mut c[d], "g", &k).await.as_deref(),
            Some(&b"second"[..]),
            "{k}"
        );
        assert!(
            delete(&mut c[e], "g", &k).await,
            "{k}: Delete on another connection"
        );
        assert_eq!(
            get(&mut c[a], "g", &k).await,
            None,
            "{k}: deleted key still visible"
        );
        assert!(!delete(&mut c[b], "g", &k).await, "{k}: deleted twice");
    }
    let t = stats(&mut c[5]).await.total.unwrap();
    assert_eq!(t.items, 0, "{t:?}");
    assert_eq!(t.sets, 400, "{t:?}");
    assert_eq!(t.deletes, 200, "{t:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_agree_from_every_connection() {
    let node = Node::builder().shards(4).start();
    let mut c: Vec<_> = Vec::new();
    for _ in 0..8 {
        c.push(node.client().await);
    }
    for i in 0..400 {
        set(&mut c[i % 8], "", &format!("k{i}"), b"v").await;
    }
    let first = stats(&mut c[0]).await;
    for (i, cl) in c.iter_mut().enumerate() {
        let s = stats(cl).await;
        assert_eq!(s, first, "Stats on connection {i} differ from connection 0");
    }
    assert_eq!(first.total.unwrap().items, 400);
}
