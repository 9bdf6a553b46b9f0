//! Renders a scrape in the Prometheus text exposition format 0.0.4: every
//! family once, `# HELP` and `# TYPE` before its samples, names prefixed
//! `shardcache_`, counters ending in `_total`, label values escaped.
//!
//! Series whose label space is small and fixed (shards, interfaces, peer
//! error kinds, etcd states) are always present, zeros included; requests
//! and latencies, whose space is sparse (interface × method × status),
//! appear once they are nonzero. Per-shard series carry `shard`; the rest
//! are summed over the shards.

use super::{Guard, Histogram, Interface, Method, MetricsSnapshot, PeerError, STATUS_SLOTS};
use crate::store::StoreStats;
use std::collections::BTreeMap;
use std::fmt::{Display, Write};

/// The node-wide state a scrape reports besides the shards' counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeInfo<'a> {
    pub node_id: &'a str,
    pub ring_epoch: u64,
    pub ring_members: u64,
    /// One of [`ETCD_STATES`].
    pub etcd_state: &'a str,
    pub ready: bool,
}

/// The states of the etcd session; `shardcache_etcd_session_state` has one
/// series each, 1 for the current one.
pub const ETCD_STATES: [&str; 4] = ["not_used", "connecting", "registered", "unreachable"];

/// What one shard answers to a scrape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardSnapshot {
    pub shard: usize,
    pub store: StoreStats,
    /// The hot store (copies of other nodes' keys); all zero without one.
    pub hot: StoreStats,
    pub metrics: MetricsSnapshot,
    /// The epoch of the ring this shard routes by (it takes a new ring up
    /// within 50 ms of the node's control plane).
    pub ring_epoch: u64,
}

type StoreField = (
    &'static str,
    &'static str,
    &'static str,
    fn(&StoreStats) -> u64,
);

const STORE_FAMILIES: [StoreField; 9] = [
    (
        "shardcache_store_hits_total",
        "counter",
        "Gets that found a live entry.",
        |s| s.hits,
    ),
    (
        "shardcache_store_misses_total",
        "counter",
        "Gets that found no live entry.",
        |s| s.misses,
    ),
    (
        "shardcache_store_sets_total",
        "counter",
        "Values stored, new keys and overwrites.",
        |s| s.sets,
    ),
    (
        "shardcache_store_deletes_total",
        "counter",
        "Deletes that removed a live entry.",
        |s| s.deletes,
    ),
    (
        "shardcache_store_evictions_total",
        "counter",
        "Live entries evicted to make room.",
        |s| s.evictions,
    ),
    (
        "shardcache_store_expirations_total",
        "counter",
        "Expired entries removed.",
        |s| s.expirations,
    ),
    (
        "shardcache_store_items",
        "gauge",
        "Entries held, including expired ones not yet reclaimed.",
        |s| s.items,
    ),
    (
        "shardcache_store_bytes",
        "gauge",
        "Bytes charged against the shard's memory budget.",
        |s| s.bytes,
    ),
    (
        "shardcache_store_capacity_bytes",
        "gauge",
        "The shard's memory budget in bytes.",
        |s| s.capacity_bytes,
    ),
];

/// (name, help, field): gauges of a shard's hot store.
type HotField = (&'static str, &'static str, fn(&StoreStats) -> u64);

const HOT_STORE_FAMILIES: [HotField; 3] = [
    (
        "shardcache_hot_items",
        "Hot copies of keys owned by other nodes.",
        |s| s.items,
    ),
    (
        "shardcache_hot_bytes",
        "Bytes charged against the hot cache's budget.",
        |s| s.bytes,
    ),
    (
        "shardcache_hot_capacity_bytes",
        "The shard's hot cache budget in bytes (0: no hot cache).",
        |s| s.capacity_bytes,
    ),
];

type NodeCounter = (&'static str, &'static str, fn(&MetricsSnapshot) -> u64);

const READ_THROUGH_FAMILIES: [NodeCounter; 7] = [
    (
        "shardcache_hot_hits_total",
        "Reads answered by the hot cache of keys owned by other nodes.",
        |m| m.hot_hits,
    ),
    ("shardcache_loads_total", "Values loaded on a miss.", |m| {
        m.loads
    }),
    ("shardcache_load_errors_total", "Loads that failed.", |m| {
        m.load_errors
    }),
    (
        "shardcache_singleflight_joins_total",
        "Misses that waited for a load already in flight.",
        |m| m.singleflight_joins,
    ),
    (
        "shardcache_negative_hits_total",
        "Misses answered by a remembered not-found of the group's source.",
        |m| m.negative_hits,
    ),
    (
        "shardcache_invalidations_sent_total",
        "Invalidations sent to other nodes.",
        |m| m.invalidations_sent,
    ),
    (
        "shardcache_invalidations_received_total",
        "Invalidations received from other nodes.",
        |m| m.invalidations_received,
    ),
];

/// Appends the whole scrape to `out`. `shards` may come in any order.
pub fn render(out: &mut String, node: &NodeInfo<'_>, shards: &[ShardSnapshot]) {
    let mut shards: Vec<&ShardSnapshot> = shards.iter().collect();
    shards.sort_by_key(|s| s.shard);
    let ids: Vec<String> = shards.iter().map(|s| s.shard.to_string()).collect();
    let metrics = || shards.iter().map(|s| &s.metrics);
    let mut w = Writer { out };

    w.family(
        "shardcache_node_info",
        "gauge",
        "Always 1; labelled with this node's id.",
    );
    w.sample("shardcache_node_info", &[("node_id", node.node_id)], 1);
    w.family(
        "shardcache_ready",
        "gauge",
        "1 when the node serves traffic (the /readyz answer).",
    );
    w.sample("shardcache_ready", &[], u8::from(node.ready));
    w.family(
        "shardcache_ring_epoch",
        "gauge",
        "Epoch of the cluster ring this node routes by.",
    );
    w.sample("shardcache_ring_epoch", &[], node.ring_epoch);
    w.family(
        "shardcache_ring_members",
        "gauge",
        "Nodes in the cluster ring.",
    );
    w.sample("shardcache_ring_members", &[], node.ring_members);
    w.family(
        "shardcache_shard_ring_epoch",
        "gauge",
        "Epoch of the ring each shard routes by; equal to shardcache_ring_epoch once every shard has taken the latest ring up.",
    );
    for (s, id) in shards.iter().zip(&ids) {
        w.sample(
            "shardcache_shard_ring_epoch",
            &[("shard", id)],
            s.ring_epoch,
        );
    }
    w.family(
        "shardcache_etcd_session_state",
        "gauge",
        "1 for the current state of the etcd session, 0 for the others.",
    );
    for state in ETCD_STATES {
        w.sample(
            "shardcache_etcd_session_state",
            &[("state", state)],
            u8::from(state == node.etcd_state),
        );
    }
    if !ETCD_STATES.contains(&node.etcd_state) {
        w.sample(
            "shardcache_etcd_session_state",
            &[("state", node.etcd_state)],
            1,
        );
    }

    for (name, kind, help, field) in STORE_FAMILIES {
        w.family(name, kind, help);
        for (s, id) in shards.iter().zip(&ids) {
            w.sample(name, &[("shard", id)], field(&s.store));
        }
    }
    for (name, help, field) in HOT_STORE_FAMILIES {
        w.family(name, "gauge", help);
        for (s, id) in shards.iter().zip(&ids) {
            w.sample(name, &[("shard", id)], field(&s.hot));
        }
    }

    w.family(
        "shardcache_requests_total",
        "counter",
        "Requests answered, by interface, method and status (gRPC code name or HTTP status).",
    );
    for i in Interface::ALL {
        for m in Method::ALL {
            let mut counts = [0u64; STATUS_SLOTS];
            for s in metrics() {
                for (slot, n) in s.request_counts(i, m) {
                    counts[slot] += n;
                }
            }
            for (slot, n) in counts.into_iter().enumerate() {
                let status = super::status_label(slot);
                if n > 0 {
                    let labels = [
                        ("interface", i.label()),
                        ("method", m.label()),
                        ("status", status),
                    ];
                    w.sample("shardcache_requests_total", &labels, n);
                }
            }
        }
    }

    let name = "shardcache_request_duration_seconds";
    w.family(
        name,
        "histogram",
        "Time from a request's arrival to its response being queued.",
    );
    for i in Interface::ALL {
        for m in Method::ALL {
            let mut h = Histogram::default();
            for s in metrics() {
                h.merge(s.latency(i, m));
            }
            if h.count() > 0 {
                w.histogram(name, &[("interface", i.label()), ("method", m.label())], &h);
            }
        }
    }

    w.family(
        "shardcache_connections_opened_total",
        "counter",
        "Client connections accepted, by interface.",
    );
    for i in Interface::ALL {
        let opened: u64 = metrics().map(|s| s.connections(i).0).sum();
        w.sample(
            "shardcache_connections_opened_total",
            &[("interface", i.label())],
            opened,
        );
    }
    w.family(
        "shardcache_connections_open",
        "gauge",
        "Client connections open now, by interface.",
    );
    for i in Interface::ALL {
        let (opened, closed) = metrics().fold((0u64, 0u64), |(o, c), s| {
            let (so, sc) = s.connections(i);
            (o + so, c + sc)
        });
        w.sample(
            "shardcache_connections_open",
            &[("interface", i.label())],
            opened.saturating_sub(closed),
        );
    }

    w.family(
        "shardcache_handoffs_total",
        "counter",
        "Cache calls (from clients and peers) handed by a shard to the key's shard on this node.",
    );
    for (s, id) in shards.iter().zip(&ids) {
        w.sample(
            "shardcache_handoffs_total",
            &[("shard", id)],
            s.metrics.handoffs(),
        );
    }

    w.family(
        "shardcache_guard_events_total",
        "counter",
        "What the node did to protect itself from a client, by event.",
    );
    for g in Guard::ALL {
        let n: u64 = metrics().map(|s| s.guards(g)).sum();
        w.sample("shardcache_guard_events_total", &[("event", g.label())], n);
    }
    w.family(
        "shardcache_connection_buffer_bytes",
        "gauge",
        "Bytes held by client and peer connections: unsent responses, unfinished requests.",
    );
    w.sample(
        "shardcache_connection_buffer_bytes",
        &[],
        metrics().map(|s| s.connection_buffers).sum::<u64>(),
    );

    let mut peers: BTreeMap<&str, (u64, [u64; PeerError::ALL.len()])> = BTreeMap::new();
    for s in metrics() {
        for p in s.peers() {
            let e = peers.entry(p.addr.as_str()).or_default();
            e.0 += p.forwarded;
            for (t, n) in e.1.iter_mut().zip(p.errors) {
                *t += n;
            }
        }
    }
    w.family(
        "shardcache_forwarded_requests_total",
        "counter",
        "Requests forwarded to the peer node that owns the key.",
    );
    for (peer, (forwarded, _)) in &peers {
        w.sample(
            "shardcache_forwarded_requests_total",
            &[("peer", peer)],
            forwarded,
        );
    }
    w.family(
        "shardcache_peer_errors_total",
        "counter",
        "Failed calls to peer nodes, by peer and kind.",
    );
    for (peer, (_, errors)) in &peers {
        for (kind, n) in PeerError::ALL.iter().zip(errors) {
            w.sample(
                "shardcache_peer_errors_total",
                &[("peer", peer), ("kind", kind.label())],
                n,
            );
        }
    }

    for (name, help, field) in READ_THROUGH_FAMILIES {
        w.family(name, "counter", help);
        w.sample(name, &[], metrics().map(field).sum::<u64>());
    }
}

struct Writer<'a> {
    out: &'a mut String,
}

impl Writer<'_> {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        // Help texts are ours: nothing in them needs escaping.
        debug_assert!(!help.contains(['\\', '\n']));
        let _ = write!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.out.push_str(name);
        self.labels(labels, None);
        let _ = writeln!(self.out, " {value}");
    }

    fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &Histogram) {
        for (le, n) in h.cumulative() {
            let _ = write!(self.out, "{name}_bucket");
            self.labels(labels, Some(le));
            let _ = writeln!(self.out, " {n}");
        }
        let _ = write!(self.out, "{name}_sum");
        self.labels(labels, None);
        // Seconds; f64's Display is the shortest string that reads back exactly.
        let _ = writeln!(self.out, " {}", h.sum_ns() as f64 / 1e9);
        let _ = write!(self.out, "{name}_count");
        self.labels(labels, None);
        let _ = writeln!(self.out, " {}", h.count());
    }

    fn labels(&mut self, labels: &[(&str, &str)], le: Option<&str>) {
        if labels.is_empty() && le.is_none() {
            return;
        }
        self.out.push('{');
        let le = le.map(|v| ("le", v));
        for (n, (name, value)) in labels.iter().copied().chain(le).enumerate() {
            if n > 0 {
                self.out.push(',');
            }
            self.out.push_str(name);
            self.out.push_str("=\"");
            escape_label_value(self.out, value);
            self.out.push('"');
        }
        self.out.push('}');
    }
}

/// Label values escape `\`, `"` and line feed (format 0.0.4).
fn escape_label_value(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}
