//! Histogram buckets, status labels, recording, and the exact lines of a
//! rendered scrape. The format itself is checked by a separate parser in
//! tests/metrics_format.rs.

use super::*;
use crate::store::StoreStats;
use std::time::Duration;

#[test]
fn histogram_buckets_are_inclusive_upper_bounds() {
    let mut h = Histogram::default();
    for ns in [0, 25_000, 25_001, 10_000_000_000, 10_000_000_001] {
        h.record(Duration::from_nanos(ns));
    }
    let c: Vec<(&str, u64)> = h.cumulative().collect();
    assert_eq!(c.len(), 17);
    assert_eq!(c[0], ("2.5e-05", 2));
    assert_eq!(c[1], ("5e-05", 3));
    assert_eq!(c[14], ("2.5", 3));
    assert_eq!(c[15], ("10", 4));
    assert_eq!(c[16], ("+Inf", 5));
    assert_eq!(h.count(), 5);
    assert_eq!(h.sum_ns(), 20_000_050_002);

    let mut other = Histogram::default();
    other.record(Duration::MAX);
    assert_eq!(other.sum_ns(), u64::MAX);
    h.merge(&other);
    assert_eq!(h.count(), 6);
    assert_eq!(h.sum_ns(), u64::MAX, "the sum saturates");
    assert_eq!(h.cumulative().last(), Some(("+Inf", 6)));
}

#[test]
fn le_labels_match_the_bounds() {
    for (ns, (le, _)) in BUCKETS_NS.iter().zip(Histogram::default().cumulative()) {
        let secs: f64 = le.parse().unwrap();
        assert!((secs * 1e9 - *ns as f64).abs() < 1e-3, "{le} vs {ns} ns");
    }
}

#[test]
fn status_labels() {
    use crate::protocol::grpc::Code;
    let codes = (0..17).filter_map(Code::from_u32);
    for c in codes {
        assert_eq!(ReplyStatus::Grpc(c).label(), c.name());
    }
    for s in HTTP_STATUSES {
        assert_eq!(ReplyStatus::Http(s).label(), s.to_string());
    }
    assert_eq!(ReplyStatus::Http(418).label(), "other");
    assert_eq!(ReplyStatus::Http(0).label(), "other");
}

#[test]
fn recording() {
    let mut m = ShardMetrics::new();
    let ok = ReplyStatus::Grpc(crate::protocol::grpc::Code::Ok);
    m.record_request(Interface::Grpc, Method::Get, ok, Duration::from_micros(10));
    m.record_request(Interface::Grpc, Method::Get, ok, Duration::from_micros(10));
    m.record_request(
        Interface::Http,
        Method::Get,
        ReplyStatus::Http(404),
        Duration::ZERO,
    );
    assert_eq!(m.requests(Interface::Grpc, Method::Get, ok), 2);
    assert_eq!(m.requests(Interface::Http, Method::Get, ok), 0);
    assert_eq!(
        m.requests(Interface::Http, Method::Get, ReplyStatus::Http(404)),
        1
    );
    assert_eq!(m.latency(Interface::Grpc, Method::Get).count(), 2);
    m.connection_opened(Interface::Http);
    m.connection_opened(Interface::Http);
    m.connection_closed(Interface::Http);
    assert_eq!(m.connections(Interface::Http), (2, 1));
    m.forwarded("a:1");
    m.forwarded("b:1");
    m.forwarded("a:1");
    m.peer_error("b:1", PeerError::Remote);
    assert_eq!(m.peers().len(), 2);
    assert_eq!(
        (m.peers()[0].addr.as_str(), m.peers()[0].forwarded),
        ("a:1", 2)
    );
    assert_eq!(m.peers()[1].errors, [0, 0, 0, 1, 0]);
    m.handoffs_sent(3);
    assert_eq!(m.handoffs(), 3);
    let snap = m.snapshot();
    assert_eq!(snap, m);
    fn is_send<T: Send + Clone>(_: &T) {}
    is_send(&snap);
    assert_eq!(
        Method::from(crate::protocol::grpc::Method::HealthCheck),
        Method::Health
    );
}

/// Two shards, given out of order, with a little of everything.
pub(super) fn sample_scrape() -> String {
    use crate::protocol::grpc::Code;
    let mut a = ShardMetrics::new();
    a.record_request(
        Interface::Grpc,
        Method::Get,
        ReplyStatus::Grpc(Code::Ok),
        Duration::from_micros(30),
    );
    a.record_request(
        Interface::Http,
        Method::Set,
        ReplyStatus::Http(201),
        Duration::from_millis(2),
    );
    a.connection_opened(Interface::Grpc);
    a.connection_opened(Interface::Grpc);
    a.connection_closed(Interface::Grpc);
    a.handoffs_sent(3);
    a.forwarded("10.0.0.2:7000");
    a.forwarded("10.0.0.2:7000");
    a.peer_error("10.0.0.2:7000", PeerError::Timeout);
    a.hot_hits = 5;
    let mut b = ShardMetrics::new();
    b.record_request(
        Interface::Grpc,
        Method::Get,
        ReplyStatus::Grpc(Code::Ok),
        Duration::from_micros(100),
    );
    b.record_request(
        Interface::Http,
        Method::Get,
        ReplyStatus::Http(404),
        Duration::from_secs(20),
    );
    b.connection_opened(Interface::Http);
    b.peer_error("10.0.0.1:7000", PeerError::Connect);
    b.loads = 2;
    let store = |hits| StoreStats {
        hits,
        misses: 1,
        sets: 2,
        deletes: 0,
        evictions: 0,
        expirations: 0,
        items: 2,
        bytes: 300,
        capacity_bytes: 1 << 20,
    };
    let shards = [
        ShardSnapshot {
            shard: 1,
            store: store(7),
            hot: StoreStats::default(),
            metrics: b,
            ring_epoch: 11,
        },
        ShardSnapshot {
            shard: 0,
            store: store(4),
            hot: StoreStats::default(),
            metrics: a,
            ring_epoch: 12,
        },
    ];
    let node = NodeInfo {
        node_id: "node \"a\"\\b\nc",
        ring_epoch: 12,
        ring_members: 3,
        etcd_state: "registered",
        ready: true,
    };
    let mut out = String::new();
    render(&mut out, &node, &shards);
    out
}

#[test]
fn renders_known_lines() {
    let out = sample_scrape();
    let lines: Vec<&str> = out.lines().collect();
    for want in [
        "# HELP shardcache_node_info Always 1; labelled with this node's id.",
        "# TYPE shardcache_node_info gauge",
        r#"shardcache_node_info{node_id="node \"a\"\\b\nc"} 1"#,
        "shardcache_ready 1",
        "shardcache_ring_epoch 12",
        "shardcache_ring_members 3",
        "shardcache_shard_ring_epoch{shard=\"0\"} 12",
        "shardcache_shard_ring_epoch{shard=\"1\"} 11",
        r#"shardcache_etcd_session_state{state="not_used"} 0"#,
        r#"shardcache_etcd_session_state{state="connecting"} 0"#,
        r#"shardcache_etcd_session_state{state="registered"} 1"#,
        r#"shardcache_etcd_session_state{state="unreachable"} 0"#,
        "# TYPE shardcache_store_hits_total counter",
        r#"shardcache_store_hits_total{shard="0"} 4"#,
        r#"shardcache_store_hits_total{shard="1"} 7"#,
        "# TYPE shardcache_store_capacity_bytes gauge",
        r#"shardcache_store_capacity_bytes{shard="1"} 1048576"#,
        r#"shardcache_requests_total{interface="grpc",method="get",status="OK"} 2"#,
        r#"shardcache_requests_total{interface="http",method="get",status="404"} 1"#,
        r#"shardcache_requests_total{interface="http",method="set",status="201"} 1"#,
        "# TYPE shardcache_request_duration_seconds histogram",
        r#"shardcache_request_duration_seconds_bucket{interface="grpc",method="get",le="2.5e-05"} 0"#,
        r#"shardcache_request_duration_seconds_bucket{interface="grpc",method="get",le="5e-05"} 1"#,
        r#"shardcache_request_duration_seconds_bucket{interface="grpc",method="get",le="0.0001"} 2"#,
        r#"shardcache_request_duration_seconds_bucket{interface="grpc",method="get",le="+Inf"} 2"#,
        r#"shardcache_request_duration_seconds_sum{interface="grpc",method="get"} 0.00013"#,
        r#"shardcache_request_duration_seconds_count{interface="grpc",method="get"} 2"#,
        r#"shardcache_request_duration_seconds_bucket{interface="http",method="get",le="10"} 0"#,
        r#"shardcache_request_duration_seconds_bucket{interface="http",method="get",le="+Inf"} 1"#,
        r#"shardcache_request_duration_seconds_sum{interface="http",method="get"} 20"#,
        r#"shardcache_request_duration_seconds_bucket{interface="http",method="set",le="0.001"} 0"#,
        r#"shardcache_request_duration_seconds_bucket{interface="http",method="set",le="0.0025"} 1"#,
        r#"shardcache_request_duration_seconds_sum{interface="http",method="set"} 0.002"#,
        r#"shardcache_connections_opened_total{interface="grpc"} 2"#,
        r#"shardcache_connections_opened_total{interface="http"} 1"#,
        r#"shardcache_connections_open{interface="grpc"} 1"#,
        r#"shardcache_connections_open{interface="http"} 1"#,
        r#"shardcache_handoffs_total{shard="0"} 3"#,
        r#"shardcache_handoffs_total{shard="1"} 0"#,
        r#"shardcache_forwarded_requests_total{peer="10.0.0.1:7000"} 0"#,
        r#"shardcache_forwarded_requests_total{peer="10.0.0.2:7000"} 2"#,
        r#"shardcache_peer_errors_total{peer="10.0.0.1:7000",kind="connect"} 1"#,
        r#"shardcache_peer_errors_total{peer="10.0.0.2:7000",kind="connect"} 0"#,
        r#"shardcache_peer_errors_total{peer="10.0.0.2:7000",kind="timeout"} 1"#,
        "# TYPE shardcache_hot_hits_total counter",
        "shardcache_hot_hits_total 5",
        "shardcache_loads_total 2",
        "shardcache_load_errors_total 0",
        "shardcache_singleflight_joins_total 0",
        "shardcache_invalidations_sent_total 0",
        "shardcache_invalidations_received_total 0",
    ] {
        assert!(lines.contains(&want), "missing line {want:?} in\n{out}");
    }
    // shards in shard order; zero request series are left out
    let hits = lines
        .iter()
        .position(|l| l.starts_with("shardcache_store_hits_total{shard=\"0\"}"));
    let hits1 = lines
        .iter()
        .position(|l| l.starts_with("shardcache_store_hits_total{shard=\"1\"}"));
    assert!(hits < hits1);
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.starts_with("shardcache_requests_total"))
            .count(),
        3
    );
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.starts_with("shardcache_request_duration_seconds_bucket"))
            .count(),
        3 * 17
    );
    // one HELP and one TYPE per family
    let types = lines.iter().filter(|l| l.starts_with("# TYPE ")).count();
    let helps = lines.iter().filter(|l| l.starts_with("# HELP ")).count();
    assert_eq!((types, helps), (34, 34));
    assert!(out.ends_with('\n'));
}

#[test]
fn unknown_etcd_state_is_shown() {
    let node = NodeInfo {
        node_id: "n",
        ring_epoch: 0,
        ring_members: 1,
        etcd_state: "weird",
        ready: false,
    };
    let mut out = String::new();
    render(&mut out, &node, &[]);
    assert!(out.contains("shardcache_etcd_session_state{state=\"weird\"} 1\n"));
    assert!(out.contains("shardcache_etcd_session_state{state=\"not_used\"} 0\n"));
    assert!(out.contains("shardcache_ready 0\n"));
}
