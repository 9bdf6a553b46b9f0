//! Read-through groups against a real origin (tests/common/origin.rs, an
//! HTTP server on loopback) and real nodes: single-flight across a 3-node
//! cluster, errors and timeouts reaching every waiter, negative caching,
//! and the hot cache with its invalidation.

mod common;

use common::cluster::{ring_of, rt, static_cluster};
use common::origin::Origin;
use common::{req, set_req, CacheClient, Node};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

fn config_file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("shardcache-groups-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("shardcache.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn groups_toml(origin: &Origin, load_timeout: &str, negative_ttl: &str) -> String {
    format!(
        "[groups.users]\norigin = \"{}\"\nttl = \"5m\"\nload_timeout = \"{load_timeout}\"\n\
         negative_ttl = \"{negative_ttl}\"\n",
        origin.template()
    )
}

/// Three nodes of a static cluster reading `config`.
fn cluster(name: &str, config: &str, extra: &[&str]) -> (Vec<Node>, Vec<SocketAddr>) {
    let path = config_file(name, config);
    let mut args = vec!["--config", path.to_str().unwrap()];
    args.extend_from_slice(extra);
    static_cluster(3, "g", &args)
}

async fn get(
    c: &mut CacheClient<Channel>,
    group: &str,
    key: &str,
) -> Result<Option<Vec<u8>>, tonic::Status> {
    let r = c.get(req(group, key)).await?.into_inner();
    Ok(r.found.then_some(r.value))
}

async fn stats(c: &mut CacheClient<Channel>) -> common::pb::ShardStats {
    let s = c
        .stats(common::pb::StatsRequest {})
        .await
        .unwrap()
        .into_inner();
    s.total.unwrap()
}

/// `n` concurrent Gets of (group, key), spread over `nodes` with 4
/// connections each; every outcome.
async fn storm(
    nodes: &[Node],
    group: &str,
    key: &str,
    n: usize,
) -> Vec<Result<Option<Vec<u8>>, tonic::Status>> {
    let mut clients = Vec::new();
    for node in nodes {
        for _ in 0..4 {
            clients.push(node.client().await);
        }
    }
    let mut tasks = Vec::new();
    for i in 0..n {
        let mut c = clients[i % clients.len()].clone();
        let (g, k) = (group.to_string(), key.to_string());
        tasks.push(tokio::spawn(async move {
            let mut r = tonic::Request::new(req(&g, &k));
            r.set_timeout(Duration::from_secs(20));
            match c.get(r).await {
                Ok(r) => {
                    let r = r.into_inner();
                    Ok(r.found.then_some(r.value))
                }
                Err(e) => Err(e),
            }
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[test]
fn a_thousand_concurrent_gets_of_a_cold_key_through_three_nodes_make_one_origin_request() {
    let origin = Origin::start();
    let (nodes, _) = cluster("storm", &groups_toml(&origin, "5s", "0s"), &[]);
    rt().block_on(async {
        let results = storm(&nodes, "users", "slow-cold", 1000).await;
        for r in &results {
            assert_eq!(
                r.as_ref().unwrap().as_deref(),
                Some(&b"origin:users/slow-cold"[..])
            );
        }
        assert_eq!(origin.requests("users", "slow-cold"), 1, "one load for all");
        // Now it is cached: no more origin requests, from any node.
        for n in &nodes {
            let mut c = n.client().await;
            assert!(get(&mut c, "users", "slow-cold").await.unwrap().is_some());
        }
        assert_eq!(origin.requests("users", "slow-cold"), 1);
        // Counters: one load on the owner, joins for the rest.
        let mut loads = 0;
        let mut joins = 0;
        for n in &nodes {
            let s = stats(&mut n.client().await).await;
            loads += s.loads;
            joins += s.singleflight_joins;
        }
        assert_eq!(loads, 1);
        assert!(joins >= 1, "callers joined the load in flight: {joins}");
        // A plain group and the default group stay plain caches.
        let mut c = nodes[0].client().await;
        assert_eq!(get(&mut c, "", "slow-cold").await.unwrap(), None);
        assert_eq!(get(&mut c, "other", "slow-cold").await.unwrap(), None);
        assert_eq!(origin.total_requests(), 1);
    });
}

#[test]
fn an_origin_error_reaches_every_waiter_and_the_next_get_retries() {
    let origin = Origin::start();
    let (nodes, _) = cluster("fail", &groups_toml(&origin, "5s", "0s"), &[]);
    rt().block_on(async {
        let results = storm(&nodes, "users", "fail-1", 60).await;
        for r in &results {
            let e = r.as_ref().expect_err("the origin failed");
            assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
            assert!(
                e.message().contains("500") && e.message().contains(&origin.addr.to_string()),
                "names the origin and its answer: {}",
                e.message()
            );
        }
        let after_storm = origin.requests("users", "fail-1");
        assert!(after_storm >= 1);
        // Nothing is stuck and nothing failed is cached: the next Get loads again.
        origin.heal("users", "fail-1");
        let mut c = nodes[1].client().await;
        assert_eq!(
            get(&mut c, "users", "fail-1").await.unwrap().as_deref(),
            Some(&b"origin:users/fail-1"[..])
        );
        assert_eq!(origin.requests("users", "fail-1"), after_storm + 1);
        let mut errors = 0;
        for n in &nodes {
            errors += stats(&mut n.client().await).await.load_errors;
        }
        assert_eq!(errors as usize, after_storm);
    });
}

#[test]
fn a_hung_origin_times_out_at_load_timeout_and_nothing_stays_stuck() {
    let origin = Origin::start();
    let (nodes, _) = cluster("hang", &groups_toml(&origin, "500ms", "0s"), &[]);
    rt().block_on(async {
        let started = Instant::now();
        let results = storm(&nodes, "users", "hang-1", 30).await;
        for r in &results {
            let e = r.as_ref().expect_err("the origin hangs");
            assert_eq!(e.code(), tonic::Code::DeadlineExceeded, "{e:?}");
            assert!(e.message().contains("load_timeout"), "{}", e.message());
        }
        assert!(started.elapsed() < Duration::from_secs(15));
        assert_eq!(origin.requests("users", "hang-1"), 1);
        // Other keys of the group load meanwhile and after.
        let mut c = nodes[2].client().await;
        assert!(get(&mut c, "users", "fine").await.unwrap().is_some());
        // The failed flight is gone: a new Get starts a new load.
        let e = get(&mut c, "users", "hang-1").await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::DeadlineExceeded);
        assert_eq!(origin.requests("users", "hang-1"), 2);
    });
}

#[test]
fn not_found_is_remembered_for_negative_ttl() {
    let origin = Origin::start();
    let (nodes, _) = cluster("neg", &groups_toml(&origin, "2s", "1s"), &[]);
    rt().block_on(async {
        let mut cs = Vec::new();
        for n in &nodes {
            cs.push(n.client().await);
        }
        assert_eq!(get(&mut cs[0], "users", "missing-1").await.unwrap(), None);
        assert_eq!(origin.requests("users", "missing-1"), 1);
        for c in cs.iter_mut() {
            for _ in 0..5 {
                assert_eq!(get(c, "users", "missing-1").await.unwrap(), None);
            }
        }
        assert_eq!(origin.requests("users", "missing-1"), 1, "remembered");
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert_eq!(get(&mut cs[1], "users", "missing-1").await.unwrap(), None);
        assert_eq!(
            origin.requests("users", "missing-1"),
            2,
            "forgotten after 1 s"
        );
        // A Set of the key overrides the remembered "not found" at once.
        cs[2]
            .set(set_req("users", "missing-1", b"set by hand", 0))
            .await
            .unwrap();
        assert_eq!(
            get(&mut cs[0], "users", "missing-1")
                .await
                .unwrap()
                .as_deref(),
            Some(&b"set by hand"[..])
        );
    });
}

#[test]
fn a_hot_key_is_served_from_the_hot_cache_and_a_delete_reaches_every_copy() {
    let (nodes, addrs) = cluster("hot", "", &[]);
    let ring = ring_of(&addrs);
    // A key owned by node 1, read through nodes 0 and 2.
    let key = (0..)
        .map(|i| format!("hot-{i}"))
        .find(|k| ring.owner(b"", k.as_bytes()).addr == addrs[1])
        .unwrap();
    rt().block_on(async {
        let mut cs = Vec::new();
        for n in &nodes {
            cs.push(n.client().await);
        }
        cs[1].set(set_req("", &key, b"hot value", 0)).await.unwrap();
        // Popular: read it until both readers keep a copy (admission is
        // sampled, so it takes a few reads).
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            for via in [0, 2] {
                for _ in 0..20 {
                    let v = get(&mut cs[via], "", &key).await.unwrap();
                    assert_eq!(v.as_deref(), Some(&b"hot value"[..]));
                }
            }
            let owner_before = stats(&mut cs[1]).await.hits;
            for via in [0, 2] {
                for _ in 0..50 {
                    get(&mut cs[via], "", &key).await.unwrap();
                }
            }
            if stats(&mut cs[1]).await.hits == owner_before {
                break; // the owner saw none of those 100 reads
            }
            assert!(Instant::now() < deadline, "the key never became hot");
        }
        let hot_hits_0 = stats(&mut cs[0]).await.hot_hits;
        let hot_hits_2 = stats(&mut cs[2]).await.hot_hits;
        assert!(
            hot_hits_0 >= 50 && hot_hits_2 >= 50,
            "{hot_hits_0} {hot_hits_2}"
        );
        // A Delete through node 2 reaches the owner and every hot copy:
        // the node that forwarded it dropped its own copy before, so it
        // reads its write at once; the owner's invalidation reaches the
        // others one network hop after (best effort, hot_ttl the backstop).
        let d = cs[2].delete(req("", &key)).await.unwrap().into_inner();
        assert!(d.deleted);
        for via in [2, 1] {
            assert_eq!(
                get(&mut cs[via], "", &key).await.unwrap(),
                None,
                "via {via}"
            );
        }
        let lag = eventually(&mut cs[0], &key, None).await;
        // A Set through the owner replaces the copies too.
        cs[1].set(set_req("", &key, b"v2", 0)).await.unwrap();
        eventually(&mut cs[0], &key, Some(b"v2")).await;
        eventually(&mut cs[2], &key, Some(b"v2")).await;
        for _ in 0..200 {
            get(&mut cs[0], "", &key).await.unwrap();
        }
        cs[1].set(set_req("", &key, b"v3", 0)).await.unwrap();
        let lag3 = eventually(&mut cs[0], &key, Some(b"v3")).await;
        eprintln!("hot copies dropped after {lag:?} (delete) and {lag3:?} (set)");
        let sent = stats(&mut cs[1]).await.invalidations_sent;
        let received: u64 = {
            let mut r = 0;
            for via in [0, 2] {
                r += stats(&mut cs[via]).await.invalidations_received;
            }
            r
        };
        assert!(
            sent >= 3 && received >= 3,
            "sent {sent}, received {received}"
        );
    });
}

/// Reads `key` through `c` until it is `want`; how long that took. A
/// read-through node may serve its old hot copy until the owner's
/// invalidation arrives (one network hop): bounded well below hot_ttl.
async fn eventually(c: &mut CacheClient<Channel>, key: &str, want: Option<&[u8]>) -> Duration {
    let start = Instant::now();
    loop {
        let got = get(c, "", key).await.unwrap();
        if got.as_deref() == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "still {got:?} instead of {want:?} after 2 s (hot_ttl is 30 s)"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[test]
fn without_a_hot_cache_every_read_goes_to_the_owner() {
    let (nodes, addrs) = cluster("nohot", "", &["--hot-fraction", "0"]);
    let ring = ring_of(&addrs);
    let key = (0..)
        .map(|i| format!("cold-{i}"))
        .find(|k| ring.owner(b"", k.as_bytes()).addr == addrs[1])
        .unwrap();
    rt().block_on(async {
        let mut c0 = nodes[0].client().await;
        let mut c1 = nodes[1].client().await;
        c1.set(set_req("", &key, b"v", 0)).await.unwrap();
        let before = stats(&mut c1).await.hits;
        for _ in 0..100 {
            assert!(get(&mut c0, "", &key).await.unwrap().is_some());
        }
        assert_eq!(stats(&mut c1).await.hits, before + 100);
        assert_eq!(stats(&mut c0).await.hot_hits, 0);
    });
}
