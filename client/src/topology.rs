//! What the client knows of the cluster: the ring (from any node's
//! Topology), each member's shards and per-shard ports (from that member's
//! own Topology), and one lazily connected HTTP/2 channel per (node,
//! shard). Immutable once built: a ring change builds a new one that
//! reuses the channels of the members it keeps.

use crate::pb::cache_client::CacheClient;
use crate::pb::{TopologyRequest, TopologyResponse};
use crate::Error;
use shardcache_routing::{shard_of, Member, Ring, LAYOUT};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// One member: where to send each of its shards' keys.
pub struct NodeLayout {
    pub addr: SocketAddr,
    /// The node's shared gRPC port (any shard).
    pub main: Channel,
    /// One channel per shard (its own port); empty when the node has no
    /// per-shard ports or its layout is unknown (then `main` serves all).
    pub shards: Vec<Channel>,
}

impl NodeLayout {
    /// The channel for (group, key), a key this node owns.
    pub fn channel(&self, group: &str, key: &str) -> &Channel {
        if self.shards.is_empty() {
            return &self.main;
        }
        &self.shards[shard_of(group.as_bytes(), key.as_bytes(), self.shards.len())]
    }

    /// The index of (group, key)'s channel, for grouping a batch.
    pub fn channel_index(&self, group: &str, key: &str) -> usize {
        if self.shards.is_empty() {
            0
        } else {
            shard_of(group.as_bytes(), key.as_bytes(), self.shards.len())
        }
    }

    /// The channel with that index.
    pub fn channel_at(&self, i: usize) -> &Channel {
        self.shards.get(i).unwrap_or(&self.main)
    }
}

/// The cluster as the client routes by it.
pub struct Topology {
    pub epoch: u64,
    pub ring: Ring,
    /// Every ring member, by address, in ring order.
    pub nodes: Vec<Arc<NodeLayout>>,
}

impl Topology {
    /// The member that owns (group, key).
    pub fn owner(&self, group: &str, key: &str) -> &Arc<NodeLayout> {
        &self.nodes[self.ring.owner_index(group.as_bytes(), key.as_bytes())]
    }

    pub fn node(&self, addr: SocketAddr) -> Option<&Arc<NodeLayout>> {
        self.nodes.iter().find(|n| n.addr == addr)
    }

    /// Builds the topology `t` (one node's answer) describes, asking each
    /// member it does not know yet for its own layout, and reusing the
    /// channels of members `old` had.
    pub async fn build(
        t: TopologyResponse,
        old: Option<&Topology>,
        connect_timeout: Duration,
    ) -> Result<Topology, Error> {
        if t.layout != LAYOUT {
            return Err(Error::new(
                tonic::Code::FailedPrecondition,
                format!(
                    "the cluster places keys by layout '{}'; this client knows only '{LAYOUT}'",
                    t.layout
                ),
            ));
        }
        let mut members = Vec::with_capacity(t.members.len());
        for m in &t.members {
            let addr: SocketAddr = m.addr.parse().map_err(|e| {
                Error::new(
                    tonic::Code::Internal,
                    format!("member address '{}': {e}", m.addr),
                )
            })?;
            members.push(Member {
                node_id: m.node_id.clone(),
                addr,
                shards: m.shards,
            });
        }
        let ring = Ring::new(t.epoch, members, t.vnodes)
            .ok_or_else(|| Error::new(tonic::Code::Internal, "a topology without members"))?;
        let mut nodes = Vec::with_capacity(ring.len());
        for m in ring.members() {
            let known = old.and_then(|o| o.node(m.addr));
            let node = match known {
                Some(n) => n.clone(),
                None => Arc::new(layout_of(m.addr, connect_timeout).await),
            };
            nodes.push(node);
        }
        Ok(Topology {
            epoch: t.epoch,
            ring,
            nodes,
        })
    }
}

/// The topology of a node that cannot tell one (no Topology call): itself
/// alone, epoch 0, no shard ports. Every key goes to it.
pub fn lone(addr: SocketAddr) -> TopologyResponse {
    TopologyResponse {
        epoch: 0,
        vnodes: 1,
        members: vec![crate::pb::TopologyMember {
            node_id: addr.to_string(),
            addr: addr.to_string(),
            shards: 0,
        }],
        layout: LAYOUT.to_string(),
        node_id: addr.to_string(),
        addr: addr.to_string(),
        shards: 0,
        shard_port_base: 0,
    }
}

/// A lazily connected channel to `addr` (connects on first use, reconnects
/// after failures).
pub fn channel(addr: SocketAddr, connect_timeout: Duration) -> Channel {
    // A SocketAddr always makes a valid URI.
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("an http URI")
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(false)
        .connect_lazy()
}

/// One topology answer from the node at `channel`.
pub async fn ask(channel: Channel, timeout: Duration) -> Result<TopologyResponse, Error> {
    let mut req = tonic::Request::new(TopologyRequest {});
    req.set_timeout(timeout);
    Ok(CacheClient::new(channel).topology(req).await?.into_inner())
}

/// The layout of the member at `addr`: its shard ports when it has them
/// and answers; otherwise only its shared port.
async fn layout_of(addr: SocketAddr, connect_timeout: Duration) -> NodeLayout {
    let main = channel(addr, connect_timeout);
    let shards = match ask(main.clone(), connect_timeout).await {
        // Every shard port or none: the shard of a key is its index.
        Ok(own) if own.shard_port_base > 0 && own.shards > 0 => (0..own.shards)
            .map(|i| u16::try_from(own.shard_port_base + i).ok())
            .collect::<Option<Vec<u16>>>()
            .unwrap_or_default()
            .into_iter()
            .map(|port| channel(SocketAddr::new(addr.ip(), port), connect_timeout))
            .collect(),
        _ => Vec::new(),
    };
    NodeLayout { addr, main, shards }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_node_without_topology_gets_every_key() {
        // Port 1 on loopback refuses at once: its own layout is unknown too.
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let t = Topology::build(lone(addr), None, Duration::from_millis(200))
            .await
            .unwrap();
        assert_eq!((t.epoch, t.nodes.len()), (0, 1));
        for k in ["a", "b", "user:42"] {
            let owner = t.owner("g", k);
            assert_eq!(owner.addr, addr);
            assert!(owner.shards.is_empty(), "no shard ports: the shared port");
            assert_eq!(owner.channel_index("g", k), 0);
        }
    }

    #[tokio::test]
    async fn another_layout_is_refused() {
        let mut t = lone("127.0.0.1:1".parse().unwrap());
        t.layout = "ring-v9".into();
        let e = Topology::build(t, None, Duration::from_millis(200))
            .await
            .err()
            .expect("refused");
        assert_eq!(e.code(), tonic::Code::FailedPrecondition);
        assert!(e.message().contains("ring-v9"), "{e}");
    }
}
