//! What an operator sees of a real node over real sockets: the Prometheus
//! scrape (parsed by the independent tests/common/prom.rs) moving by
//! exactly the traffic sent, `/healthz` and `/readyz` through start-up and
//! shutdown, and the gateway in a static cluster, where a key written
//! through one node's gateway is read through another's and over gRPC.

mod common;

use common::cluster::{ring_of, static_cluster};
use common::http1::Conn;
use common::prom::{self, Exposition};
use common::{block_on, get, req, set, set_req, stats, Node};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into()
}

/// (status, body) of a request made with a real client.
fn call(a: &ureq::Agent, method: &str, url: &str, body: &[u8]) -> (u16, String) {
    let req = ureq::http::Request::builder()
        .method(method)
        .uri(url)
        .body(body.to_vec())
        .expect("a valid request");
    let mut resp = a.run(req).unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = resp.status().as_u16();
    (
        status,
        resp.body_mut().read_to_string().expect("a text body"),
    )
}

fn scrape(a: &ureq::Agent, n: &Node) -> Exposition {
    let (status, text) = call(a, "GET", &n.http_url("/metrics"), b"");
    assert_eq!(status, 200, "{text}");
    prom::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// A series' value, 0 when absent (request series appear once nonzero).
fn value(e: &Exposition, name: &str, labels: &[(&str, &str)]) -> f64 {
    e.get(name, labels).unwrap_or(0.0)
}

fn requests(e: &Exposition, interface: &str, method: &str, status: &str) -> f64 {
    value(
        e,
        "shardcache_requests_total",
        &[
            ("interface", interface),
            ("method", method),
            ("status", status),
        ],
    )
}

/// The sum over every series named `name` whose labels include `with`.
fn sum(e: &Exposition, name: &str, with: &[(&str, &str)]) -> f64 {
    e.named(name)
        .iter()
        .filter(|s| {
            with.iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}

#[test]
fn metrics_move_by_exactly_the_traffic_sent() {
    let n = Node::builder().shards(2).start();
    let a = agent();
    block_on(async {
        let mut c = n.client().await;
        set(&mut c, "m", "present", b"v").await;
        let before = scrape(&a, &n);
        for i in 0..10 {
            let key = if i % 2 == 0 { "present" } else { "absent" };
            get(&mut c, "m", key).await;
        }
        for i in 0..5 {
            let (status, _) = call(&a, "PUT", &n.http_url(&format!("/v1/m/h{i}")), b"x");
            assert_eq!(status, 201);
        }
        let after = scrape(&a, &n);
        let delta = |f: &dyn Fn(&Exposition) -> f64| f(&after) - f(&before);

        assert_eq!(delta(&|e| requests(e, "grpc", "get", "OK")), 10.0);
        assert_eq!(delta(&|e| requests(e, "grpc", "set", "OK")), 0.0);
        assert_eq!(delta(&|e| requests(e, "http", "set", "201")), 5.0);
        // The first scrape is counted once it has been answered.
        assert_eq!(delta(&|e| requests(e, "http", "metrics", "200")), 1.0);
        let count = |e: &Exposition, i: &str, m: &str| {
            value(
                e,
                "shardcache_request_duration_seconds_count",
                &[("interface", i), ("method", m)],
            )
        };
        assert_eq!(delta(&|e| count(e, "grpc", "get")), 10.0);
        assert_eq!(delta(&|e| count(e, "http", "set")), 5.0);
        let inf = value(
            &after,
            "shardcache_request_duration_seconds_bucket",
            &[("interface", "grpc"), ("method", "get"), ("le", "+Inf")],
        );
        assert_eq!(inf, count(&after, "grpc", "get"));
        let sum_s = value(
            &after,
            "shardcache_request_duration_seconds_sum",
            &[("interface", "grpc"), ("method", "get")],
        );
        assert!(sum_s > 0.0 && sum_s < 10.0, "latency sum {sum_s} s");

        // The store's counters are the ones Stats reports, shard by shard.
        let s = stats(&mut c).await;
        assert_eq!(s.shards.len(), 2);
        for (i, sh) in s.shards.iter().enumerate() {
            let id = i.to_string();
            let l = [("shard", id.as_str())];
            assert_eq!(
                value(&after, "shardcache_store_hits_total", &l),
                sh.hits as f64
            );
            assert_eq!(
                value(&after, "shardcache_store_misses_total", &l),
                sh.misses as f64
            );
            assert_eq!(
                value(&after, "shardcache_store_sets_total", &l),
                sh.sets as f64
            );
            assert_eq!(value(&after, "shardcache_store_items", &l), sh.items as f64);
            assert_eq!(value(&after, "shardcache_store_bytes", &l), sh.bytes as f64);
            assert_eq!(
                value(&after, "shardcache_store_capacity_bytes", &l),
                sh.capacity_bytes as f64
            );
        }
        let total = s.total.unwrap();
        assert_eq!((total.hits, total.misses, total.items), (5, 5, 6));

        // Node state.
        assert_eq!(
            value(&after, "shardcache_node_info", &[("node_id", &n.node_id)]),
            1.0
        );
        assert_eq!(value(&after, "shardcache_ready", &[]), 1.0);
        assert_eq!(value(&after, "shardcache_ring_members", &[]), 1.0);
        assert_eq!(value(&after, "shardcache_ring_epoch", &[]), 1.0);
        assert_eq!(
            value(
                &after,
                "shardcache_etcd_session_state",
                &[("state", "not_used")]
            ),
            1.0
        );
        // This scrape's own connection and the gRPC client are open.
        for i in ["grpc", "http"] {
            let open = value(&after, "shardcache_connections_open", &[("interface", i)]);
            assert!(open >= 1.0, "{i} connections open: {open}");
            let opened = value(
                &after,
                "shardcache_connections_opened_total",
                &[("interface", i)],
            );
            assert!(opened >= open);
        }
        // Every family has HELP and TYPE (the parser checks placement).
        for family in [
            "shardcache_requests_total",
            "shardcache_request_duration_seconds",
            "shardcache_handoffs_total",
            "shardcache_forwarded_requests_total",
            "shardcache_peer_errors_total",
        ] {
            assert!(after.types.contains_key(family), "{family}");
        }
    });
}

#[test]
fn handoffs_are_counted_by_the_shard_that_hands_off() {
    let n = Node::builder().shards(4).start();
    let a = agent();
    // One connection, so one shard does all the handing off.
    let mut c = Conn::connect(n.http_addr());
    for i in 0..40 {
        c.request("PUT", &format!("/v1/h/k{i}"), Some(b"v"));
        assert_eq!(c.expect_response(false).status, 201);
    }
    let e = scrape(&a, &n);
    let handoffs = sum(&e, "shardcache_handoffs_total", &[]);
    // 40 puts over 4 shards: about 30 leave the accepting shard, and the
    // scrape itself asks the 3 other shards.
    assert!(handoffs >= 15.0, "handoffs {handoffs}");
    let per_shard: Vec<f64> = (0..4)
        .map(|i| {
            value(
                &e,
                "shardcache_handoffs_total",
                &[("shard", &i.to_string())],
            )
        })
        .collect();
    assert!(
        per_shard.iter().filter(|&&h| h > 0.0).count() <= 2,
        "hand-offs come from the shards that accepted the two connections: {per_shard:?}"
    );
    assert_eq!(sum(&e, "shardcache_store_items", &[]), 40.0);
}

#[test]
fn healthz_and_readyz_through_start_and_shutdown() {
    let n = Node::start();
    let a = agent();
    assert_eq!(
        call(&a, "GET", &n.http_url("/healthz"), b""),
        (200, "ok\n".into())
    );
    assert_eq!(
        call(&a, "GET", &n.http_url("/readyz"), b""),
        (200, "ready\n".into())
    );
    assert_eq!(call(&a, "HEAD", &n.http_url("/readyz"), b"").0, 200);
    drop(a);
    // A slow client has started a request when SIGTERM arrives; it
    // finishes it during the drain and is told the node is not ready.
    let mut slow = Conn::connect(n.http_addr());
    slow.send(b"GET /readyz HTTP/1.1\r\nHost: t\r\n");
    std::thread::sleep(Duration::from_millis(100));
    n.sigterm();
    // The listeners close: no new connection gets in.
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect_timeout(&n.http_addr(), Duration::from_millis(200)).is_ok() {
        assert!(
            Instant::now() < deadline,
            "the gateway still accepts after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    slow.send(b"\r\n");
    let r = slow.expect_response(false);
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.text(), "not ready: shutting down\n");
    assert!(r.closes(), "the last response closes the connection");
    assert!(slow.closed_within(Duration::from_secs(5)));
    let status = n
        .wait_exit(Duration::from_secs(15))
        .expect("the node exits after draining");
    assert!(status.success(), "{status:?}");
}

#[test]
fn a_node_waiting_for_a_stopped_etcd_does_not_listen_so_is_never_ready() {
    let mut etcd = common::etcd::Etcd::start();
    let endpoint = etcd.endpoint();
    etcd.stop();
    let http = SocketAddr::from(([127, 0, 0, 1], common::free_port()));
    let mut starting = Node::builder()
        .http(&http.to_string())
        .args(&["--etcd", &endpoint])
        .spawn();
    assert!(
        !starting.listens_within(Duration::from_secs(2)),
        "listening without etcd\n{}",
        starting.log_tail()
    );
    for _ in 0..10 {
        let r = TcpStream::connect_timeout(&http, Duration::from_millis(200));
        let e = r.expect_err("the gateway accepted before the ring was known");
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn gateway_in_a_static_cluster_forwards_to_the_owner_and_counts_it() {
    let (nodes, addrs) = static_cluster(3, "gw-", &[]);
    let ring = ring_of(&addrs);
    let owner = |k: &str| {
        let addr = ring.owner(b"", k.as_bytes()).addr;
        addrs.iter().position(|&a| a == addr).unwrap()
    };
    let keys: Vec<String> = (0..60).map(|i| format!("c{i}")).collect();
    let agents: Vec<ureq::Agent> = (0..3).map(|_| agent()).collect();
    // Through node 0 only: every request for a key it does not own is
    // forwarded, and counted per peer.
    let mut expected_forwards = [0u64; 3];
    for (i, k) in keys.iter().enumerate() {
        let via = i % 3;
        let url = nodes[via].http_url(&format!("/v1/_/{k}"));
        assert_eq!(call(&agents[via], "PUT", &url, k.as_bytes()).0, 201, "{k}");
        if via == 0 && owner(k) != 0 {
            expected_forwards[owner(k)] += 1;
        }
        // Read through the next node's gateway...
        let next = (via + 1) % 3;
        let url = nodes[next].http_url(&format!("/v1/_/{k}"));
        assert_eq!(call(&agents[next], "GET", &url, b""), (200, k.clone()));
        if next == 0 && owner(k) != 0 {
            expected_forwards[owner(k)] += 1;
        }
    }
    // ...and over gRPC through the third.
    block_on(async {
        let mut cs = Vec::new();
        for n in &nodes {
            cs.push(n.client().await);
        }
        for (i, k) in keys.iter().enumerate() {
            let via = (i + 2) % 3;
            let got = cs[via].get(req("", k)).await.unwrap().into_inner();
            assert!(got.found && got.value == k.as_bytes(), "{k} via gRPC {via}");
            if via == 0 && owner(k) != 0 {
                expected_forwards[owner(k)] += 1;
            }
        }
        // Each key lives on its owner only.
        for (j, c) in cs.iter_mut().enumerate() {
            let held = stats(c).await.total.unwrap().items;
            let owned = keys.iter().filter(|k| owner(k) == j).count() as u64;
            assert_eq!(held, owned, "node {j}");
        }
    });
    for (j, n) in nodes.iter().enumerate() {
        let e = scrape(&agents[j], n);
        assert_eq!(value(&e, "shardcache_ring_members", &[]), 3.0, "node {j}");
    }
    let e = scrape(&agents[0], &nodes[0]);
    for (j, addr) in addrs.iter().enumerate().skip(1) {
        let peer = addr.to_string();
        let forwarded = value(
            &e,
            "shardcache_forwarded_requests_total",
            &[("peer", &peer)],
        );
        assert_eq!(forwarded, expected_forwards[j] as f64, "to node {j}");
        assert_eq!(
            sum(&e, "shardcache_peer_errors_total", &[("peer", &peer)]),
            0.0
        );
    }
    // gRPC writes are seen by every gateway.
    block_on(async {
        let mut c = nodes[1].client().await;
        c.set(set_req("g", "from-grpc", b"v", 0)).await.unwrap();
    });
    for (j, n) in nodes.iter().enumerate() {
        assert_eq!(
            call(&agents[j], "GET", &n.http_url("/v1/g/from-grpc"), b""),
            (200, "v".into())
        );
    }
    // A dead owner: the gateway answers 503 naming it, and counts the error.
    // (A key node 0 never read: one it read may be served from its hot copy.)
    let k = (0..)
        .map(|i| format!("unread-{i}"))
        .find(|k| owner(k) == 2)
        .unwrap();
    nodes[2].kill();
    let (status, body) = call(
        &agents[0],
        "GET",
        &nodes[0].http_url(&format!("/v1/_/{k}")),
        b"",
    );
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("peer gw-2") || body.contains(&addrs[2].to_string()),
        "{body}"
    );
    let e = scrape(&agents[0], &nodes[0]);
    let errors = sum(
        &e,
        "shardcache_peer_errors_total",
        &[("peer", &addrs[2].to_string())],
    );
    assert!(errors >= 1.0, "peer errors for the dead node: {errors}");
}
