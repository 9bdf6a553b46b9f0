//! The Prometheus scrape, read back by the independent parser in
//! tests/common/prom.rs: the format is valid, the values are the sums the
//! shards recorded, and the parser itself rejects what it should.

#[path = "common/prom.rs"]
mod prom;

use shardcache::metrics::{
    render, Interface, Method, NodeInfo, PeerError, ReplyStatus, ShardMetrics, ShardSnapshot,
};
use shardcache::protocol::grpc::Code;
use shardcache::store::StoreStats;
use std::time::Duration;

fn node(etcd_state: &str) -> NodeInfo<'_> {
    NodeInfo {
        node_id: "n1 \"east\"\\rack\n2",
        ring_epoch: 7,
        ring_members: 3,
        etcd_state,
        ready: true,
    }
}

/// Four shards with deterministic, different activity.
fn shards() -> Vec<ShardSnapshot> {
    (0..4)
        .map(|i| {
            let mut m = ShardMetrics::new();
            for n in 0..=i as u64 {
                let us = 10 + 400 * n;
                m.record_request(
                    Interface::Grpc,
                    Method::Get,
                    ReplyStatus::Grpc(Code::Ok),
                    Duration::from_micros(us),
                );
                m.record_request(
                    Interface::Http,
                    Method::Set,
                    ReplyStatus::Http(201),
                    Duration::from_millis(3 * n),
                );
            }
            m.record_request(
                Interface::Grpc,
                Method::Set,
                ReplyStatus::Grpc(Code::ResourceExhausted),
                Duration::from_micros(5),
            );
            m.connection_opened(Interface::Grpc);
            m.connection_opened(Interface::Http);
            if i % 2 == 0 {
                m.connection_closed(Interface::Http);
            }
            m.handoffs_sent(i as u64 * 10);
            m.forwarded("10.0.0.2:7000");
            m.peer_error("10.0.0.3:7000", PeerError::Closed);
            m.singleflight_joins = i as u64;
            ShardSnapshot {
                shard: i,
                store: StoreStats {
                    hits: 100 + i as u64,
                    items: 10,
                    bytes: 1000,
                    capacity_bytes: 1 << 30,
                    ..StoreStats::default()
                },
                hot: StoreStats::default(),
                metrics: m.snapshot(),
                ring_epoch: 1,
            }
        })
        .collect()
}

#[test]
fn scrape_parses_and_sums() {
    let mut out = String::new();
    let mut snaps = shards();
    snaps.reverse(); // the order shards answer in does not matter
    render(&mut out, &node("registered"), &snaps);
    let exp = prom::parse(&out).unwrap_or_else(|e| panic!("{e}\n{out}"));

    for (name, kind) in &exp.types {
        assert!(name.starts_with("shardcache_"), "{name}");
        assert_eq!(
            *kind == prom::Kind::Counter,
            name.ends_with("_total"),
            "counters, and only counters, end in _total: {name}"
        );
        assert!(exp.help.contains_key(name), "{name} has HELP");
    }
    assert_eq!(
        exp.get(
            "shardcache_node_info",
            &[("node_id", "n1 \"east\"\\rack\n2")]
        ),
        Some(1.0),
        "label escaping round-trips"
    );
    assert_eq!(exp.get("shardcache_ring_epoch", &[]), Some(7.0));
    assert_eq!(exp.get("shardcache_ring_members", &[]), Some(3.0));
    assert_eq!(exp.get("shardcache_ready", &[]), Some(1.0));
    let states = exp.named("shardcache_etcd_session_state");
    assert_eq!(states.len(), 4);
    assert_eq!(states.iter().map(|s| s.value).sum::<f64>(), 1.0);
    assert_eq!(
        exp.get("shardcache_etcd_session_state", &[("state", "registered")]),
        Some(1.0)
    );

    for i in 0..4 {
        let shard = i.to_string();
        let l = [("shard", shard.as_str())];
        assert_eq!(
            exp.get("shardcache_store_hits_total", &l),
            Some(100.0 + i as f64)
        );
        assert_eq!(
            exp.get("shardcache_store_capacity_bytes", &l),
            Some(1073741824.0)
        );
        assert_eq!(
            exp.get("shardcache_handoffs_total", &l),
            Some(i as f64 * 10.0)
        );
    }

    let req = |i, m, s| {
        exp.get(
            "shardcache_requests_total",
            &[("interface", i), ("method", m), ("status", s)],
        )
    };
    assert_eq!(req("grpc", "get", "OK"), Some(10.0));
    assert_eq!(req("http", "set", "201"), Some(10.0));
    assert_eq!(req("grpc", "set", "RESOURCE_EXHAUSTED"), Some(4.0));
    assert_eq!(exp.named("shardcache_requests_total").len(), 3);

    // 10 gRPC gets: 4 at 10 µs, 3 at 410 µs, 2 at 810 µs, 1 at 1210 µs
    let l = [("interface", "grpc"), ("method", "get")];
    let bucket = |le| {
        let mut l = l.to_vec();
        l.push(("le", le));
        exp.get("shardcache_request_duration_seconds_bucket", &l)
    };
    assert_eq!(bucket("2.5e-05"), Some(4.0));
    assert_eq!(bucket("0.0005"), Some(7.0));
    assert_eq!(bucket("0.001"), Some(9.0));
    assert_eq!(bucket("0.0025"), Some(10.0));
    assert_eq!(bucket("+Inf"), Some(10.0));
    assert_eq!(
        exp.get("shardcache_request_duration_seconds_count", &l),
        Some(10.0)
    );
    let sum = exp
        .get("shardcache_request_duration_seconds_sum", &l)
        .unwrap();
    assert!((sum - 0.0041).abs() < 1e-12, "{sum}");

    assert_eq!(
        exp.get(
            "shardcache_connections_opened_total",
            &[("interface", "http")]
        ),
        Some(4.0)
    );
    assert_eq!(
        exp.get("shardcache_connections_open", &[("interface", "http")]),
        Some(2.0)
    );
    assert_eq!(
        exp.get("shardcache_connections_open", &[("interface", "grpc")]),
        Some(4.0)
    );
    assert_eq!(
        exp.get(
            "shardcache_forwarded_requests_total",
            &[("peer", "10.0.0.2:7000")]
        ),
        Some(4.0)
    );
    assert_eq!(
        exp.get(
            "shardcache_forwarded_requests_total",
            &[("peer", "10.0.0.3:7000")]
        ),
        Some(0.0)
    );
    assert_eq!(
        exp.get(
            "shardcache_peer_errors_total",
            &[("peer", "10.0.0.3:7000"), ("kind", "closed")]
        ),
        Some(4.0)
    );
    assert_eq!(
        exp.named("shardcache_peer_errors_total").len(),
        2 * PeerError::ALL.len(),
        "2 peers × every kind"
    );
    assert_eq!(
        exp.get("shardcache_singleflight_joins_total", &[]),
        Some(6.0)
    );
    assert_eq!(exp.get("shardcache_hot_hits_total", &[]), Some(0.0));
}

#[test]
fn empty_node_scrape_parses() {
    let mut out = String::new();
    render(&mut out, &node("not_used"), &[]);
    let exp = prom::parse(&out).unwrap_or_else(|e| panic!("{e}\n{out}"));
    assert_eq!(
        exp.get("shardcache_etcd_session_state", &[("state", "not_used")]),
        Some(1.0)
    );
    assert!(exp
        .named("shardcache_request_duration_seconds_bucket")
        .is_empty());
}

#[test]
fn parser_accepts_the_format() {
    let text = "# A comment\n\
        # HELP http_requests_total The total number of \\\\ requests.\\nSecond line.\n\
        # TYPE http_requests_total counter\n\
        http_requests_total{method=\"post\",code=\"200\"} 1027 1395066363000\n\
        http_requests_total{method=\"post\",code=\"400\",} 3\n\
        \n\
        # HELP x Untyped.\n\
        # TYPE x untyped\n\
        x NaN\n\
        # HELP lat A histogram.\n\
        # TYPE lat histogram\n\
        lat_bucket{le=\"0.05\"} 24054\n\
        lat_bucket{le=\"0.1\"} 33444\n\
        lat_bucket{le=\"+Inf\"} 144320\n\
        lat_sum 53423\n\
        lat_count 144320\n\
        # HELP g Gauge.\n\
        # TYPE g gauge\n\
        g{path=\"C:\\\\dir\\\"x\\\"\"} -1.5e3\n";
    let exp = prom::parse(text).unwrap();
    assert_eq!(
        exp.help["http_requests_total"],
        "The total number of \\ requests.\nSecond line."
    );
    assert_eq!(
        exp.get(
            "http_requests_total",
            &[("method", "post"), ("code", "400")]
        ),
        Some(3.0)
    );
    assert_eq!(exp.get("g", &[("path", "C:\\dir\"x\"")]), Some(-1500.0));
    assert!(exp.get("x", &[]).unwrap().is_nan());
    assert_eq!(exp.samples.len(), 9);
}

#[test]
fn parser_rejects_malformed_text() {
    let head = "# HELP a A.\n# TYPE a counter\n";
    let hist = "# HELP h H.\n# TYPE h histogram\n";
    for (text, why) in [
        ("a 1\n".to_string(), "TYPE"),
        ("# TYPE a counter\na 1\n".to_string(), "HELP"),
        (format!("{head}a 1"), "line feed"),
        (format!("{head}a 1\n# TYPE a counter\n"), "second TYPE"),
        (format!("{head}a 1\n# HELP a again\n"), "second HELP"),
        (format!("{head}a{{x=\"1\"}} 1\n# HELP b B.\n# TYPE b gauge\nb 1\na{{x=\"2\"}} 2\n"), "contiguous"),
        (format!("{head}a 1\na 2\n"), "twice"),
        (format!("{head}a{{x=\"1\",x=\"2\"}} 1\n"), "label x twice"),
        (format!("{head}a{{x=\"\\t\"}} 1\n"), "invalid escape"),
        (format!("{head}a{{x=\"1}} 1\n"), "unterminated"),
        (format!("{head}a{{x=1}} 1\n"), "not quoted"),
        (format!("{head}a{{__x=\"1\"}} 1\n"), "invalid label name"),
        (format!("{head}a{{x=\"1\"}}\n"), "no space"),
        (format!("{head}a one\n"), "not a number"),
        (format!("{head}a -1\n"), "below zero"),
        (format!("{head}a 1 2 3\n"), "junk"),
        (format!("{head}a 1\r\n"), "not a number"),
        (format!("{head}1a 1\n"), "invalid metric name"),
        ("# HELP a A.\n# TYPE a bogus\n".to_string(), "unknown type"),
        (format!("{hist}h_bucket{{le=\"1\"}} 2\nh_bucket{{le=\"+Inf\"}} 1\nh_sum 1\nh_count 1\n"), "decrease"),
        (format!("{hist}h_bucket{{le=\"2\"}} 1\nh_bucket{{le=\"1\"}} 1\nh_bucket{{le=\"+Inf\"}} 1\nh_sum 1\nh_count 1\n"), "ascending"),
        (format!("{hist}h_bucket{{le=\"1\"}} 1\nh_sum 1\nh_count 1\n"), "+Inf"),
        (format!("{hist}h_bucket{{le=\"+Inf\"}} 2\nh_sum 1\nh_count 3\n"), "_count"),
        (format!("{hist}h_bucket{{le=\"+Inf\"}} 2\nh_count 2\n"), "_sum"),
        (format!("{hist}h_bucket 2\n"), "without le"),
        (format!("{hist}h 2\n"), "own name"),
        (format!("{hist}h_sum 1\nh_count 0\n"), "without buckets"),
    ] {
        match prom::parse(&text) {
            Ok(_) => panic!("accepted {text:?} (expected: {why})"),
            Err(e) => assert!(e.contains(why), "{text:?}: {e} (expected: {why})"),
        }
    }
}
