//! The routing client (`client/`, crate shardcache-client) against real
//! nodes: every key reaches its owner node and shard (no forward, no
//! hand-off in the nodes' metrics), batches come back in order with
//! per-key errors, a dead node fails only its own keys and fails them
//! fast, and a ring change under load never yields a wrong value.

mod common;

use common::cluster::{etcd_member, free_ports, loopback, rt, wait_members};
use common::etcd::Etcd;
use common::*;
use shardcache_client::{Client, Config};
use shardcache_routing::Ring;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// `n` nodes of a static cluster, two shards each with per-shard ports.
fn cluster(n: usize, prefix: &str) -> (Vec<Node>, Vec<SocketAddr>) {
    let addrs: Vec<SocketAddr> = (0..n).map(|_| loopback(free_port())).collect();
    let peers = common::cluster::peer_list(&addrs);
    let nodes = (0..n)
        .map(|i| {
            Node::builder()
                .node_id(&format!("{prefix}{i}"))
                .listen(addrs[i])
                .shards(2)
                .args(&[
                    "--peers",
                    &peers,
                    "--shard-ports",
                    &free_ports(2).to_string(),
                ])
                .start()
        })
        .collect();
    (nodes, addrs)
}

fn value_of(k: &str) -> Vec<u8> {
    format!("value-of-{k}").into_bytes()
}

fn keys(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

fn assert_no_forward_no_handoff(nodes: &[Node]) {
    for n in nodes {
        let m = scrape(n);
        for name in [
            "shardcache_handoffs_total",
            "shardcache_forwarded_requests_total",
        ] {
            assert_eq!(total(&m, name), 0.0, "{name} on {}", n.node_id);
        }
    }
}

#[test]
fn every_key_reaches_its_owner_node_and_shard() {
    let (nodes, _) = cluster(3, "cl-");
    let ks = keys("k", 300);
    rt().block_on(async {
        let c = Client::connect([nodes[0].addr.to_string()]).await.unwrap();
        for k in &ks[..100] {
            c.set("g", k, value_of(k), None).await.unwrap();
        }
        let items: Vec<(String, Vec<u8>)> =
            ks[100..].iter().map(|k| (k.clone(), value_of(k))).collect();
        let stored = c
            .set_many("g", &items, Some(Duration::from_secs(600)))
            .await
            .unwrap();
        assert!(stored.iter().all(Result::is_ok), "{stored:?}");
        for k in &ks {
            assert_eq!(
                c.get("g", k).await.unwrap().as_deref(),
                Some(&value_of(k)[..])
            );
        }
        let got = c.get_many("g", &ks).await.unwrap();
        for (k, v) in ks.iter().zip(&got) {
            assert_eq!(
                v.as_ref().unwrap().as_deref(),
                Some(&value_of(k)[..]),
                "{k}"
            );
        }
        assert!(c.delete("g", &ks[0]).await.unwrap());
        let deleted = c.delete_many("g", &ks[..3]).await.unwrap();
        let deleted: Vec<bool> = deleted.into_iter().map(Result::unwrap).collect();
        assert_eq!(deleted, [false, true, true]);
        assert_eq!(c.get("g", &ks[1]).await.unwrap(), None);
    });
    assert_no_forward_no_handoff(&nodes);
}

#[test]
fn batch_results_come_in_order_with_per_key_errors() {
    let (nodes, _) = cluster(2, "clb-");
    rt().block_on(async {
        let c = Client::connect([nodes[1].addr.to_string()]).await.unwrap();
        c.set("", "a", "1", None).await.unwrap();
        c.set("", "c", "3", None).await.unwrap();
        let got = c
            .get_many("", &["a", "", "missing", "c", "bad\u{1}key"])
            .await
            .unwrap();
        assert_eq!(got[0].as_ref().unwrap().as_deref(), Some(&b"1"[..]));
        let e = got[1].as_ref().unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
        assert!(e.message().contains("key is empty"), "{e}");
        assert_eq!(got[2].as_ref().unwrap(), &None);
        assert_eq!(got[3].as_ref().unwrap().as_deref(), Some(&b"3"[..]));
        assert_eq!(
            got[4].as_ref().unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        // A single call's error is the server's status.
        let e = c.get("", "").await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
    });
}

#[test]
fn a_dead_node_fails_only_its_keys_and_fails_them_fast() {
    let (nodes, addrs) = cluster(3, "cld-");
    let ring = Ring::new(
        1,
        addrs
            .iter()
            .map(|&a| shardcache_routing::Member {
                node_id: a.to_string(),
                addr: a,
                shards: 2,
            })
            .collect(),
        160,
    )
    .unwrap();
    let ks = keys("d", 200);
    let (dead, live): (Vec<&String>, Vec<&String>) = ks
        .iter()
        .partition(|k| ring.owner(b"", k.as_bytes()).addr == addrs[2]);
    rt().block_on(async {
        let c = Client::connect([nodes[0].addr.to_string()]).await.unwrap();
        let items: Vec<(&String, Vec<u8>)> = ks.iter().map(|k| (k, value_of(k))).collect();
        assert!(c
            .set_many("", &items, None)
            .await
            .unwrap()
            .iter()
            .all(Result::is_ok));
        nodes[2].kill();
        for k in dead.iter().take(10) {
            let t0 = Instant::now();
            let e = c.get("", k).await.unwrap_err();
            assert_eq!(e.code(), tonic::Code::Unavailable, "{k}: {e}");
            assert!(e.message().contains(&addrs[2].to_string()), "{e}");
            // Retries with backoff, then the error: well inside the
            // default 5 s deadline.
            assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
        }
        for k in &live {
            assert_eq!(
                c.get("", k).await.unwrap().as_deref(),
                Some(&value_of(k)[..])
            );
        }
        let got = c.get_many("", &ks).await.unwrap();
        for (k, r) in ks.iter().zip(&got) {
            if dead.contains(&k) {
                assert_eq!(
                    r.as_ref().unwrap_err().code(),
                    tonic::Code::Unavailable,
                    "{k}"
                );
            } else {
                assert_eq!(
                    r.as_ref().unwrap().as_deref(),
                    Some(&value_of(k)[..]),
                    "{k}"
                );
            }
        }
    });
}

#[test]
fn a_ring_change_under_load_never_gives_a_wrong_value_and_forwarding_stops() {
    let etcd = Etcd::start();
    let prefix = format!("/shardcache-test-{}/client/", std::process::id());
    let node = |id: &str| {
        etcd_member(&etcd, &prefix, id)
            .args(&["--shard-ports", &free_ports(2).to_string()])
            .start()
    };
    let mut nodes = vec![node("clr-0"), node("clr-1")];
    wait_members(
        &nodes.iter().collect::<Vec<_>>(),
        2,
        Duration::from_secs(20),
    );
    let ks = keys("r", 300);
    rt().block_on(async {
        let config = Config {
            call_timeout: Duration::from_secs(2),
            ..Config::default()
        };
        let c = Client::connect_with([nodes[0].addr.to_string()], config)
            .await
            .unwrap();
        let items: Vec<(&String, Vec<u8>)> = ks.iter().map(|k| (k, value_of(k))).collect();
        assert!(c
            .set_many("", &items, None)
            .await
            .unwrap()
            .iter()
            .all(Result::is_ok));
        let epoch = c.epoch();

        // Readers check every answer while a third node joins.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut readers = Vec::new();
        for r in 0..4 {
            let (c, ks, stop) = (c.clone(), ks.clone(), stop.clone());
            readers.push(tokio::spawn(async move {
                let mut reads = 0u64;
                let mut i = r;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let k = &ks[i % ks.len()];
                    match c.get("", k).await {
                        // A miss is right for a key whose owner changed.
                        Ok(Some(v)) => assert_eq!(v, value_of(k), "wrong value for {k}"),
                        Ok(None) => {}
                        Err(e) => assert!(
                            matches!(
                                e.code(),
                                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded
                            ),
                            "{k}: {e}"
                        ),
                    }
                    reads += 1;
                    i += 4;
                }
                reads
            }));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        nodes.push(tokio::task::block_in_place(|| node("clr-2")));
        tokio::task::block_in_place(|| {
            wait_members(
                &nodes.iter().collect::<Vec<_>>(),
                3,
                Duration::from_secs(20),
            )
        });
        // The client hears of the new ring by its watch.
        let t0 = Instant::now();
        while c.epoch() == epoch {
            assert!(
                t0.elapsed() < Duration::from_secs(2),
                "the client never saw the new ring"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut reads = 0;
        for r in readers {
            reads += r.await.unwrap();
        }
        assert!(reads > 100, "{reads} reads");

        // Once the client routes by the new ring, nothing is forwarded.
        let before: Vec<f64> = nodes
            .iter()
            .map(|n| total(&scrape(n), "shardcache_forwarded_requests_total"))
            .collect();
        for k in &ks {
            if let Some(v) = c.get("", k).await.unwrap() {
                assert_eq!(v, value_of(k));
            }
        }
        for (n, b) in nodes.iter().zip(before) {
            let now = total(&scrape(n), "shardcache_forwarded_requests_total");
            assert_eq!(now, b, "forwarded on {} after the ring change", n.node_id);
        }
    });
}
