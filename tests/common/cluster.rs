//! Helpers for tests that run several nodes: loopback addresses, the ring
//! the nodes build (computed with the library's own `Ring`, whose layout
//! is part of the contract), and a static `--peers` cluster.

use super::Node;
use shardcache::cluster::{Member, Ring};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The ring of nodes at `addrs` at the default 160 points per node.
pub fn ring_of(addrs: &[SocketAddr]) -> Ring {
    let members = addrs
        .iter()
        .map(|&a| Member {
            node_id: a.to_string(),
            addr: a,
            shards: 2,
        })
        .collect();
    Ring::new(1, members, 160).expect("a ring of at least one node")
}

/// `n` nodes of a static cluster on free loopback ports, node ids
/// `{id_prefix}{i}`, each with `extra` flags; and their addresses.
/// Writes 60 keys through `first` and reads each back through every
/// client of `others` (named for the message). The keys have owners all
/// over the ring of `addrs` (asserted), so each crosses a peer connection.
pub async fn write_then_read_across(
    addrs: &[SocketAddr],
    first: &mut super::CacheClient<tonic::transport::Channel>,
    others: Vec<(String, super::CacheClient<tonic::transport::Channel>)>,
) {
    let ring = ring_of(addrs);
    let mut owners = vec![0usize; addrs.len()];
    for i in 0..60 {
        let key = format!("key-{i}");
        super::set(first, "", &key, key.as_bytes()).await;
        let owner = ring.owner(b"", key.as_bytes()).addr;
        owners[addrs.iter().position(|a| *a == owner).unwrap()] += 1;
    }
    assert!(owners.iter().all(|&n| n > 0), "keys per owner: {owners:?}");
    for (name, mut c) in others {
        for i in 0..60 {
            let key = format!("key-{i}");
            assert_eq!(
                super::get(&mut c, "", &key).await.as_deref(),
                Some(key.as_bytes()),
                "{key} through {name}"
            );
        }
    }
}

/// The `--peers` value naming `addrs`.
pub fn peer_list(addrs: &[SocketAddr]) -> String {
    addrs
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// A GET of `key` in the peer wire format (request id 7, 1 s timeout),
/// as a raw peer sends it.
pub fn peer_get_frame(key: &str) -> Vec<u8> {
    let mut out = Vec::new();
    shardcache::protocol::peer::encode_request(
        &mut out,
        &shardcache::protocol::peer::PeerRequest {
            id: 7,
            timeout_ms: 1000,
            op: shardcache::protocol::CacheOp::Get {
                group: String::new(),
                key: key.into(),
            },
        },
    );
    out
}

pub fn static_cluster(n: usize, id_prefix: &str, extra: &[&str]) -> (Vec<Node>, Vec<SocketAddr>) {
    let addrs: Vec<SocketAddr> = (0..n).map(|_| loopback(super::free_port())).collect();
    let peers = peer_list(&addrs);
    let nodes = addrs
        .iter()
        .enumerate()
        .map(|(i, &a)| {
            let mut args = vec!["--peers", &peers];
            args.extend_from_slice(extra);
            Node::builder()
                .node_id(&format!("{id_prefix}{i}"))
                .listen(a)
                .args(&args)
                .start()
        })
        .collect();
    (nodes, addrs)
}

/// A tokio runtime for a test's client side.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// The members count of the last ring a node logged ("cluster ring: ...
/// members=N").
pub fn logged_members(n: &Node) -> Option<usize> {
    n.log_tail()
        .lines()
        .rfind(|l| l.contains("cluster ring:"))
        .and_then(|l| l.split("members=").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Waits until every node routes by a ring of `members` nodes (logged by
/// its control plane, taken up by its shards within 50 ms).
pub fn wait_members(nodes: &[&Node], members: usize, within: Duration) {
    let deadline = Instant::now() + within;
    for n in nodes {
        while logged_members(n) != Some(members) {
            assert!(
                Instant::now() < deadline,
                "{} never saw a ring of {members} (last: {:?})\n{}",
                n.node_id,
                logged_members(n),
                n.log_tail()
            );
            n.assert_alive();
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    // Shards take a new ring up within 50 ms: wait until every shard of
    // every node routes by the node's ring (`shardcache_shard_ring_epoch`).
    for n in nodes {
        while !shards_caught_up(n, members) {
            assert!(
                Instant::now() < deadline,
                "{}'s shards never took the ring of {members} up",
                n.node_id
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Whether every shard of `n` routes by its node's ring, of `members`
/// nodes. A node whose gateway this process cannot reach (off, or inside a
/// network namespace) is given the 50 ms pick-up time, three times over.
fn shards_caught_up(n: &Node, members: usize) -> bool {
    let text = n.http.and_then(|h| {
        ureq::get(&format!("http://{h}/metrics"))
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_to_string().ok())
    });
    let Some(text) = text else {
        std::thread::sleep(Duration::from_millis(150));
        return true;
    };
    let Ok(m) = super::prom::parse(&text) else {
        return false;
    };
    let epoch = m.get("shardcache_ring_epoch", &[]);
    let shards = m.named("shardcache_shard_ring_epoch");
    m.get("shardcache_ring_members", &[]) == Some(members as f64)
        && !shards.is_empty()
        && shards.iter().all(|s| Some(s.value) == epoch)
}

/// A base port with `n` free ports from it.
pub fn free_ports(n: usize) -> u16 {
    for _ in 0..200 {
        let base = super::free_port();
        if usize::from(base) + n > 65535 {
            continue;
        }
        let held: Vec<_> = (0..n as u16)
            .map_while(|i| std::net::TcpListener::bind(loopback(base + i)).ok())
            .collect();
        if held.len() == n {
            return base;
        }
    }
    panic!("no {n} consecutive free ports");
}

/// A node of an etcd cluster (`--etcd`, `--etcd-prefix PREFIX`) named
/// `id`, two shards; add flags with `.args`.
pub fn etcd_member(etcd: &super::etcd::Etcd, prefix: &str, id: &str) -> super::NodeBuilder {
    Node::builder().node_id(id).shards(2).args(&[
        "--etcd",
        &etcd.endpoint(),
        "--etcd-prefix",
        prefix,
    ])
}
