//! A real cluster: shardcache processes on loopback, membership from a real
//! etcd (Debian's etcd-server, started by `common::etcd` on free ports in a
//! temp dir) or a static `--peers` list, talked to with the stock tonic
//! client.
//!
//! Which node owns a key is computed with the library's own `Ring` over the
//! nodes' advertise addresses (the ring's layout is part of the contract and
//! frozen by its test vectors), so every placement below is checked
//! against Stats, which counts only what each node's own shards hold.
//! Every wait polls a condition under a deadline.

mod common;

use common::cluster::{loopback as addr, ring_of, rt, static_cluster, wait_members};
use common::etcd::Etcd;
use common::{req, set_req, CacheClient, Node, Starting};
use shardcache::cluster::Ring;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

const TTL_S: u64 = 2;
/// Upper bound of a wait for something that normally takes well under a second.
const DEADLINE: Duration = Duration::from_secs(20);

fn etcd_node(etcd: &Etcd, prefix: &str, id: &str, port: u16, ttl_s: u64) -> Starting {
    Node::builder()
        .node_id(id)
        .listen(addr(port))
        .args(&[
            "--etcd",
            &etcd.endpoint(),
            "--etcd-prefix",
            prefix,
            "--lease-ttl",
            &format!("{ttl_s}s"),
        ])
        .spawn()
}

async fn clients(nodes: &[&Node]) -> Vec<CacheClient<Channel>> {
    let mut v = Vec::new();
    for n in nodes {
        v.push(n.client().await);
    }
    v
}

fn value_of(key: &str) -> Vec<u8> {
    format!("value-of-{key}").into_bytes()
}

/// Sets `keys`, the i-th through node i % n.
async fn set_all(cs: &mut [CacheClient<Channel>], keys: &[String]) {
    let n = cs.len();
    for (i, k) in keys.iter().enumerate() {
        let r = cs[i % n]
            .set(set_req("", k, &value_of(k), 0))
            .await
            .unwrap_or_else(|e| panic!("Set {k} through node {}: {e:?}", i % n));
        assert!(r.into_inner().stored);
    }
}

/// What a Get of `key` through `c` finds (None on a miss).
async fn get(c: &mut CacheClient<Channel>, key: &str) -> Result<Option<Vec<u8>>, tonic::Status> {
    let r = c.get(req("", key)).await?.into_inner();
    Ok(r.found.then_some(r.value))
}

async fn items(c: &mut CacheClient<Channel>) -> (u64, String) {
    let s = c
        .stats(common::pb::StatsRequest {})
        .await
        .unwrap()
        .into_inner();
    common::assert_total_is_sum(&s);
    (s.total.unwrap().items, s.node_id)
}

/// Per node (in `addrs` order): how many of `keys` the ring gives it.
fn owned_counts(ring: &Ring, addrs: &[SocketAddr], keys: &[String]) -> Vec<u64> {
    let mut counts = vec![0u64; addrs.len()];
    for k in keys {
        let owner = ring.owner(b"", k.as_bytes()).addr;
        let i = addrs.iter().position(|&a| a == owner).unwrap();
        counts[i] += 1;
    }
    counts
}

/// Every key through every node: found with its value, and each node's
/// Stats holds exactly the keys the ring gives it (nothing twice).
async fn assert_placement(
    cs: &mut [CacheClient<Channel>],
    ids: &[&str],
    addrs: &[SocketAddr],
    keys: &[String],
) {
    for (ci, c) in cs.iter_mut().enumerate() {
        for k in keys {
            let got = get(c, k)
                .await
                .unwrap_or_else(|e| panic!("Get {k} through node {ci}: {e:?}"));
            assert_eq!(
                got.as_deref(),
                Some(&value_of(k)[..]),
                "{k} through node {ci}"
            );
        }
    }
    let expected = owned_counts(&ring_of(addrs), addrs, keys);
    for (i, c) in cs.iter_mut().enumerate() {
        let (held, node_id) = items(c).await;
        assert_eq!(node_id, ids[i], "Stats reports --node-id");
        assert_eq!(
            held, expected[i],
            "node {i} holds {held} items; the ring gives it {}",
            expected[i]
        );
    }
    assert_eq!(expected.iter().sum::<u64>(), keys.len() as u64);
}

fn keys(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

#[test]
fn static_peers_any_node_answers_and_each_key_lives_on_its_owner() {
    let (nodes, addrs) = static_cluster(3, "static-", &[]);
    let refs: Vec<&Node> = nodes.iter().collect();
    let ids = ["static-0", "static-1", "static-2"];
    rt().block_on(async {
        let mut cs = clients(&refs).await;
        let ks = keys("s", 600);
        set_all(&mut cs, &ks).await;
        assert_placement(&mut cs, &ids, &addrs, &ks).await;

        // A forwarded request keeps its group, its TTL and a large value.
        let ring = ring_of(&addrs);
        let (via, owner) = (0usize, 1usize);
        let far: Vec<String> = keys("far", 200)
            .into_iter()
            .filter(|k| ring.owner(b"", k.as_bytes()).addr == addrs[owner])
            .take(3)
            .collect();
        let big = vec![0xa5u8; 1 << 20];
        let c = &mut cs[via];
        c.set(set_req("", &far[0], &big, 0)).await.unwrap();
        assert_eq!(
            get(&mut cs[owner], &far[0]).await.unwrap().as_deref(),
            Some(&big[..])
        );
        let c = &mut cs[via];
        c.set(set_req("other-group", &far[0], b"in another group", 0))
            .await
            .unwrap();
        let g = c
            .get(req("other-group", &far[0]))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(g.value, b"in another group");
        assert_eq!(get(c, &far[0]).await.unwrap().as_deref(), Some(&big[..]));
        c.set(set_req("", &far[1], b"short-lived", 300))
            .await
            .unwrap();
        assert!(get(&mut cs[owner], &far[1]).await.unwrap().is_some());
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(
            get(&mut cs[via], &far[1]).await.unwrap(),
            None,
            "the TTL travelled"
        );
        // Deletes forward too, and say whether the key existed.
        let c = &mut cs[via];
        let d = c.delete(req("", &far[0])).await.unwrap().into_inner();
        assert!(d.deleted);
        let d = c.delete(req("", &far[0])).await.unwrap().into_inner();
        assert!(!d.deleted);
        assert_eq!(get(&mut cs[owner], &far[0]).await.unwrap(), None);
    });
    for n in &nodes {
        n.assert_alive();
    }
}

#[test]
fn a_dead_peer_fails_fast_naming_it_and_other_keys_are_unaffected() {
    let (nodes, addrs) = static_cluster(3, "static-", &[]);
    let ring = ring_of(&addrs);
    let ks = keys("d", 300);
    let (dead_keys, live_keys): (Vec<String>, Vec<String>) = ks
        .iter()
        .cloned()
        .partition(|k| ring.owner(b"", k.as_bytes()).addr == addrs[2]);
    assert!(!dead_keys.is_empty() && !live_keys.is_empty());
    rt().block_on(async {
        let refs: Vec<&Node> = nodes.iter().collect();
        let mut cs = clients(&refs).await;
        set_all(&mut cs, &ks).await;
        nodes[2].kill();
        for c in cs.iter_mut().take(2) {
            for k in &dead_keys[..dead_keys.len().min(20)] {
                let e = get(c, k).await.expect_err("the owner is dead");
                assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
                assert!(
                    e.message().contains(&addrs[2].to_string()),
                    "the error names the peer: {}",
                    e.message()
                );
            }
            for k in &live_keys {
                assert_eq!(get(c, k).await.unwrap().as_deref(), Some(&value_of(k)[..]));
            }
        }
    });
}

#[test]
fn a_stalled_peer_ends_calls_by_their_deadline_and_holds_up_nobody_else() {
    let (nodes, addrs) = static_cluster(3, "static-", &["--peer-timeout", "1s"]);
    let ring = ring_of(&addrs);
    let ks = keys("st", 300);
    let (stalled_keys, live_keys): (Vec<String>, Vec<String>) = ks
        .iter()
        .cloned()
        .partition(|k| ring.owner(b"", k.as_bytes()).addr == addrs[2]);
    rt().block_on(async {
        let refs: Vec<&Node> = nodes.iter().collect();
        let mut cs = clients(&refs).await;
        set_all(&mut cs, &ks).await;
        nodes[2].signal("STOP");
        // Calls for the stalled node's keys, with a client deadline...
        let mut stalled = Vec::new();
        for k in stalled_keys.iter().take(10) {
            let mut c = cs[0].clone();
            let k = k.clone();
            stalled.push(tokio::spawn(async move {
                let mut r = tonic::Request::new(req("", &k));
                r.set_timeout(Duration::from_millis(700));
                c.get(r).await
            }));
        }
        // ...and without one (ended by --peer-timeout).
        let mut c = cs[1].clone();
        let k = stalled_keys[0].clone();
        let no_deadline = tokio::spawn(async move { c.get(req("", &k)).await });
        // Meanwhile every other key is served, on the same connections.
        for c in cs.iter_mut().take(2) {
            for k in &live_keys {
                assert_eq!(get(c, k).await.unwrap().as_deref(), Some(&value_of(k)[..]));
            }
        }
        for t in stalled {
            let e = t.await.unwrap().expect_err("the owner is stalled");
            assert!(
                matches!(
                    e.code(),
                    tonic::Code::DeadlineExceeded | tonic::Code::Unavailable
                ),
                "{e:?}"
            );
        }
        let e = no_deadline.await.unwrap().expect_err("peer timeout");
        assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
        assert!(e.message().contains("did not answer"), "{}", e.message());
        nodes[2].signal("CONT");
        // Once it wakes up, its keys are served again.
        let deadline = Instant::now() + DEADLINE;
        loop {
            match get(&mut cs[0], &stalled_keys[0]).await {
                Ok(v) => {
                    assert_eq!(v.as_deref(), Some(&value_of(&stalled_keys[0])[..]));
                    break;
                }
                Err(e) => assert!(Instant::now() < deadline, "never recovered: {e:?}"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
}

#[test]
fn etcd_cluster_places_keys_and_a_fourth_node_takes_about_a_quarter() {
    let etcd = Etcd::start();
    let prefix = format!("/shardcache-test-{}/join/", std::process::id());
    let addrs: Vec<SocketAddr> = (0..4).map(|_| addr(common::free_port())).collect();
    let ids = ["e0", "e1", "e2", "e3"];
    let mut nodes: Vec<Node> = (0..3)
        .map(|i| etcd_node(&etcd, &prefix, ids[i], addrs[i].port(), TTL_S).wait(DEADLINE))
        .collect();
    wait_members(&nodes.iter().collect::<Vec<_>>(), 3, DEADLINE);
    let ks = keys("j", 1000);
    rt().block_on(async {
        let refs: Vec<&Node> = nodes.iter().collect();
        let mut cs = clients(&refs).await;
        set_all(&mut cs, &ks).await;
        assert_placement(&mut cs, &ids[..3], &addrs[..3], &ks).await;
    });

    nodes.push(etcd_node(&etcd, &prefix, ids[3], addrs[3].port(), TTL_S).wait(DEADLINE));
    wait_members(&nodes.iter().collect::<Vec<_>>(), 4, DEADLINE);
    let new_ring = ring_of(&addrs);
    let moved: Vec<&String> = ks
        .iter()
        .filter(|k| new_ring.owner(b"", k.as_bytes()).addr == addrs[3])
        .collect();
    let share = moved.len() as f64 / ks.len() as f64;
    assert!(
        (0.15..=0.35).contains(&share),
        "the fourth node owns {share:.3} of the keys"
    );
    let moved = rt().block_on(async {
        let refs: Vec<&Node> = nodes.iter().collect();
        let mut cs = clients(&refs).await;
        // Reads through every node agree: keys that stayed with their owner
        // are found, keys now owned by the new node are misses there
        // (nothing migrates); no key moved between the old nodes.
        for (ci, c) in cs.iter_mut().enumerate() {
            for k in &ks {
                let got = get(c, k).await.unwrap();
                if new_ring.owner(b"", k.as_bytes()).addr == addrs[3] {
                    assert_eq!(got, None, "{k} through node {ci}: owned by the new node");
                } else {
                    assert_eq!(got.as_deref(), Some(&value_of(k)[..]), "{k} via {ci}");
                }
            }
        }
        // Writing the moved keys again lands exactly them on the new node.
        let moved: Vec<String> = moved.into_iter().cloned().collect();
        set_all(&mut cs, &moved).await;
        let (held, node_id) = items(&mut cs[3]).await;
        assert_eq!(node_id, "e3");
        assert_eq!(held, moved.len() as u64);
        moved
    });
    // The new node leaves again: its keys go back to their old owners,
    // which dropped their copies when the ring changed (a stale value
    // would otherwise come back).
    nodes[3].sigterm();
    assert!(nodes[3].wait_exit(DEADLINE).is_some_and(|s| s.success()));
    wait_members(&nodes[..3].iter().collect::<Vec<_>>(), 3, DEADLINE);
    rt().block_on(async {
        let refs: Vec<&Node> = nodes[..3].iter().collect();
        let mut cs = clients(&refs).await;
        for c in cs.iter_mut() {
            for k in &moved {
                assert_eq!(get(c, k).await.unwrap(), None, "{k}: no stale copy");
            }
        }
    });
}

#[test]
fn etcd_sigkill_spares_other_keys_and_the_ring_heals_after_the_ttl() {
    let etcd = Etcd::start();
    let prefix = format!("/shardcache-test-{}/kill/", std::process::id());
    let addrs: Vec<SocketAddr> = (0..3).map(|_| addr(common::free_port())).collect();
    let ids = ["k0", "k1", "k2"];
    let nodes: Vec<Node> = (0..3)
        .map(|i| etcd_node(&etcd, &prefix, ids[i], addrs[i].port(), TTL_S).wait(DEADLINE))
        .collect();
    wait_members(&nodes.iter().collect::<Vec<_>>(), 3, DEADLINE);
    let ring = ring_of(&addrs);
    let ks = keys("x", 600);
    let (dead_keys, live_keys): (Vec<String>, Vec<String>) = ks
        .iter()
        .cloned()
        .partition(|k| ring.owner(b"", k.as_bytes()).addr == addrs[2]);
    rt().block_on(async {
        let refs: Vec<&Node> = nodes.iter().collect();
        let mut cs = clients(&refs).await;
        set_all(&mut cs, &ks).await;
        nodes[2].kill();
        // For the lease TTL + 1 s, keys the dead node did not own never fail.
        let until = Instant::now() + Duration::from_secs(TTL_S + 1);
        let mut reads = 0;
        while Instant::now() < until {
            for (via, c) in cs.iter_mut().enumerate().take(2) {
                for k in live_keys.iter().step_by(7) {
                    let got = get(c, k)
                        .await
                        .unwrap_or_else(|e| panic!("{k} via node {via} failed: {e:?}"));
                    assert_eq!(got.as_deref(), Some(&value_of(k)[..]));
                    reads += 1;
                }
            }
        }
        assert!(reads > 0);
    });
    // Then the survivors drop it from their rings...
    wait_members(&[&nodes[0], &nodes[1]], 2, DEADLINE);
    rt().block_on(async {
        let refs: Vec<&Node> = nodes[..2].iter().collect();
        let mut cs = clients(&refs).await;
        // ...and route around it: its keys are now misses on their new
        // owners, served without error, and can be written again.
        for c in cs.iter_mut() {
            for k in &dead_keys {
                assert_eq!(get(c, k).await.unwrap(), None);
            }
            for k in &live_keys {
                assert_eq!(get(c, k).await.unwrap().as_deref(), Some(&value_of(k)[..]));
            }
        }
        set_all(&mut cs, &dead_keys).await;
        for c in cs.iter_mut() {
            for k in &dead_keys {
                assert_eq!(get(c, k).await.unwrap().as_deref(), Some(&value_of(k)[..]));
            }
        }
    });
}

#[test]
fn etcd_graceful_stop_revokes_the_lease_so_peers_drop_the_node_at_once() {
    let etcd = Etcd::start();
    let prefix = format!("/shardcache-test-{}/term/", std::process::id());
    // A long TTL: only the revocation can drop the node quickly.
    let ttl = 30;
    let addrs: Vec<SocketAddr> = (0..3).map(|_| addr(common::free_port())).collect();
    let ids = ["t0", "t1", "t2"];
    let nodes: Vec<Node> = (0..3)
        .map(|i| etcd_node(&etcd, &prefix, ids[i], addrs[i].port(), ttl).wait(DEADLINE))
        .collect();
    wait_members(&nodes.iter().collect::<Vec<_>>(), 3, DEADLINE);
    let ring = ring_of(&addrs);
    let gone: Vec<String> = keys("g", 300)
        .into_iter()
        .filter(|k| ring.owner(b"", k.as_bytes()).addr == addrs[2])
        .collect();
    let stopped = Instant::now();
    nodes[2].sigterm();
    let status = nodes[2].wait_exit(DEADLINE).expect("the node exits");
    assert!(status.success(), "{status:?}");
    wait_members(&[&nodes[0], &nodes[1]], 2, Duration::from_secs(ttl / 2));
    assert!(
        stopped.elapsed() < Duration::from_secs(ttl),
        "dropped by the revocation, not by the lease's expiry"
    );
    rt().block_on(async {
        let mut c = nodes[0].client().await;
        for k in &gone {
            assert_eq!(get(&mut c, k).await.unwrap(), None);
        }
    });
}

#[test]
fn etcd_outage_keeps_the_last_ring_and_a_node_started_meanwhile_joins_later() {
    let mut etcd = Etcd::start();
    let prefix = format!("/shardcache-test-{}/outage/", std::process::id());
    let addrs: Vec<SocketAddr> = (0..3).map(|_| addr(common::free_port())).collect();
    let ids = ["o0", "o1", "o2"];
    let mut nodes: Vec<Node> = (0..2)
        .map(|i| etcd_node(&etcd, &prefix, ids[i], addrs[i].port(), TTL_S).wait(DEADLINE))
        .collect();
    wait_members(&nodes.iter().collect::<Vec<_>>(), 2, DEADLINE);
    let ks = keys("o", 400);
    let outage = Instant::now();
    etcd.stop();
    let mut late = etcd_node(&etcd, &prefix, ids[2], addrs[2].port(), TTL_S);
    rt().block_on(async {
        let refs: Vec<&Node> = nodes.iter().collect();
        let mut cs = clients(&refs).await;
        set_all(&mut cs, &ks).await;
        // For 10 s without etcd both nodes keep serving with the last ring:
        // every key stays where it was written.
        while outage.elapsed() < Duration::from_secs(10) {
            assert_placement(&mut cs, &ids[..2], &addrs[..2], &ks).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    // The node started during the outage does not listen without its ring.
    assert!(
        !late.listens_within(Duration::from_millis(100)),
        "a node must not serve before it knows its ring\n{}",
        late.log_tail()
    );
    etcd.restart();
    nodes.push(late.wait(DEADLINE));
    wait_members(&nodes.iter().collect::<Vec<_>>(), 3, DEADLINE);
    rt().block_on(async {
        let refs: Vec<&Node> = nodes.iter().collect();
        let mut cs = clients(&refs).await;
        let ks = keys("after", 300);
        set_all(&mut cs, &ks).await;
        for c in cs.iter_mut() {
            for k in &ks {
                assert_eq!(get(c, k).await.unwrap().as_deref(), Some(&value_of(k)[..]));
            }
        }
        // The late node holds exactly the new keys the 3-node ring gives it.
        let expected = owned_counts(&ring_of(&addrs), &addrs, &ks)[2];
        let (held, node_id) = items(&mut cs[2]).await;
        assert_eq!((held, node_id.as_str()), (expected, "o2"));
        assert!(expected > 0);
    });
}
