//! Topology for clients that route keys themselves: the Topology call and
//! the per-shard ports (`--shard-ports`). A client that places every key
//! with shardcache-routing (the crate the server itself routes by) and
//! sends it to the owner node's owner shard causes no forward and no
//! cross-core hand-off; a stale or wrong choice is only slower.

mod common;

use common::cluster::{etcd_member, free_ports, loopback, rt};
use common::*;
use shardcache_routing::{shard_of, Member, Ring};
use std::net::SocketAddr;
use tonic::transport::Channel;

async fn client_at(addr: SocketAddr) -> CacheClient<Channel> {
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    CacheClient::new(ch)
}

async fn topology(c: &mut CacheClient<Channel>) -> pb::TopologyResponse {
    c.topology(pb::TopologyRequest {})
        .await
        .unwrap()
        .into_inner()
}

#[test]
fn one_node_reports_its_shards_and_each_shard_port_is_that_shard() {
    let base = free_ports(4);
    let node = Node::builder()
        .shards(4)
        .node_id("topo-1")
        .args(&["--shard-ports", &base.to_string()])
        .start();
    rt().block_on(async {
        let mut c = node.client().await;
        let t = topology(&mut c).await;
        assert_eq!(t.layout, shardcache_routing::LAYOUT);
        assert_eq!((t.node_id.as_str(), t.shards), ("topo-1", 4));
        assert_eq!(t.shard_port_base, u32::from(base));
        assert_eq!(t.addr, node.addr.to_string());
        assert_eq!(t.vnodes, 160);
        assert!(t.epoch >= 1);
        assert_eq!(t.members.len(), 1);
        assert_eq!(t.members[0].addr, node.addr.to_string());

        // Every key sent to the port of its shard: no hand-off at all.
        let mut shard_clients = Vec::new();
        for i in 0..4u16 {
            shard_clients.push(client_at(loopback(base + i)).await);
        }
        let keys: Vec<String> = (0..400).map(|i| format!("direct-{i}")).collect();
        for k in &keys {
            let s = shard_of(b"", k.as_bytes(), 4);
            set(&mut shard_clients[s], "", k, k.as_bytes()).await;
            assert_eq!(
                get(&mut shard_clients[s], "", k).await.as_deref(),
                Some(k.as_bytes())
            );
        }
        assert_eq!(total(&scrape(&node), "shardcache_handoffs_total"), 0.0);

        // The wrong port still answers right, through a hand-off; and the
        // shared port too.
        for k in &keys[..20] {
            let wrong = (shard_of(b"", k.as_bytes(), 4) + 1) % 4;
            let got = get(&mut shard_clients[wrong], "", k).await;
            assert_eq!(got.as_deref(), Some(k.as_bytes()));
            assert_eq!(get(&mut c, "", k).await.as_deref(), Some(k.as_bytes()));
        }
        assert!(total(&scrape(&node), "shardcache_handoffs_total") >= 20.0);
    });
    node.assert_alive();
}

#[test]
fn a_client_routing_by_the_topology_causes_no_forward_and_no_handoff() {
    let bases: Vec<u16> = (0..3).map(|_| free_ports(2)).collect();
    // Each node with shard ports of its own (static_cluster gives every
    // node the same flags).
    let addrs: Vec<SocketAddr> = (0..3).map(|_| loopback(free_port())).collect();
    let peers = common::cluster::peer_list(&addrs);
    let nodes: Vec<Node> = (0..3)
        .map(|i| {
            Node::builder()
                .node_id(&format!("topo-{i}"))
                .listen(addrs[i])
                .shards(2)
                .args(&["--peers", &peers, "--shard-ports", &bases[i].to_string()])
                .start()
        })
        .collect();
    rt().block_on(async {
        // The ring from any node; each node's shard ports from itself.
        let mut c0 = nodes[0].client().await;
        let t = topology(&mut c0).await;
        assert_eq!(t.members.len(), 3);
        let members: Vec<Member> = t
            .members
            .iter()
            .map(|m| Member {
                node_id: m.node_id.clone(),
                addr: m.addr.parse().unwrap(),
                shards: m.shards,
            })
            .collect();
        let ring = Ring::new(t.epoch, members, t.vnodes).unwrap();
        let mut layout = Vec::new();
        for m in ring.members() {
            let mut c = client_at(m.addr).await;
            let own = topology(&mut c).await;
            assert_eq!(own.addr, m.addr.to_string());
            assert_eq!(own.epoch, t.epoch, "every node routes by the same ring");
            let mut shards = Vec::new();
            for s in 0..own.shards {
                let port = own.shard_port_base + s;
                shards.push(client_at(SocketAddr::new(m.addr.ip(), port as u16)).await);
            }
            layout.push(shards);
        }
        let keys: Vec<String> = (0..300).map(|i| format!("routed-{i}")).collect();
        let shard_counts: Vec<usize> = layout.iter().map(Vec::len).collect();
        let route = |k: &str| {
            let node = ring.owner_index(b"", k.as_bytes());
            (node, shard_of(b"", k.as_bytes(), shard_counts[node]))
        };
        for k in &keys {
            let (node, shard) = route(k);
            set(&mut layout[node][shard], "", k, k.as_bytes()).await;
        }
        for k in &keys {
            let (node, shard) = route(k);
            let got = get(&mut layout[node][shard], "", k).await;
            assert_eq!(got.as_deref(), Some(k.as_bytes()));
        }
        for n in &nodes {
            let m = scrape(n);
            for name in [
                "shardcache_handoffs_total",
                "shardcache_forwarded_requests_total",
            ] {
                assert_eq!(total(&m, name), 0.0, "{name} on {}", n.node_id);
            }
        }
        // The same keys through one node's shared port: forwarded where
        // another node owns them, and still right.
        for k in &keys[..30] {
            assert_eq!(get(&mut c0, "", k).await.as_deref(), Some(k.as_bytes()));
        }
        assert!(total(&scrape(&nodes[0]), "shardcache_forwarded_requests_total") > 0.0);
    });
}

/// The stderr of a node that must refuse to start with `args`.
fn refused(args: &[&str]) -> String {
    let out = server_command().args(args).output().unwrap();
    assert!(!out.status.success(), "started with {args:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn shard_ports_that_cannot_work_are_refused_at_start_up() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let below = (port - 1).to_string();
    let err = refused(&[
        "serve",
        "--listen",
        &listen,
        "--http",
        "off",
        "--shards",
        "2",
        "--shard-ports",
        &below,
    ]);
    assert!(err.contains("include --listen"), "{err}");
    let err = refused(&[
        "serve",
        "--shards",
        "2",
        "--shard-ports",
        "65535",
        "--http",
        "off",
    ]);
    assert!(err.contains("past 65535"), "{err}");
    let err = refused(&["serve", "--shard-ports", "0"]);
    assert!(err.contains("--shard-ports"), "{err}");
}

/// The next topology the watch sends with `members` members (earlier ones
/// are skipped), and how long it took.
async fn expect(
    stream: &mut tonic::Streaming<pb::TopologyResponse>,
    members: usize,
    what: &str,
) -> (pb::TopologyResponse, std::time::Duration) {
    let t0 = std::time::Instant::now();
    loop {
        let msg = tokio::time::timeout(std::time::Duration::from_secs(20), stream.message())
            .await
            .unwrap_or_else(|_| panic!("no topology with {members} members: {what}"))
            .unwrap_or_else(|e| panic!("{what}: {e:?}"))
            .unwrap_or_else(|| panic!("{what}: the watch ended"));
        if msg.members.len() == members {
            return (msg, t0.elapsed());
        }
    }
}

#[test]
fn watchers_hear_of_every_ring_change() {
    use common::etcd::Etcd;
    let etcd = Etcd::start();
    let prefix = format!("/shardcache-test-{}/watch/", std::process::id());
    let node = |id: &str| {
        etcd_member(&etcd, &prefix, id)
            .args(&["--lease-ttl", "2s"])
            .start()
    };
    let a = node("watch-a");
    rt().block_on(async {
        let mut c = a.client().await;
        let mut stream = c
            .watch_topology(pb::TopologyRequest {})
            .await
            .unwrap()
            .into_inner();
        let (first, _) = expect(&mut stream, 1, "at once").await;
        assert_eq!(first.node_id, "watch-a");
        let b = node("watch-b");
        let (joined, took) = expect(&mut stream, 2, "after watch-b joined").await;
        assert!(
            joined.epoch > first.epoch,
            "{} then {}",
            first.epoch,
            joined.epoch
        );
        assert!(joined.members.iter().any(|m| m.node_id == "watch-b"));
        eprintln!("join seen after {took:?}");
        drop(b); // SIGKILL: its lease expires
        let (left, took) = expect(&mut stream, 1, "after watch-b died").await;
        assert!(left.epoch > joined.epoch);
        eprintln!("departure seen after {took:?}");
    });
    a.assert_alive();
}
