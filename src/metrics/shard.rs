//! One shard's counters. Owned by the shard's thread and updated through
//! `&mut self`; every update is a fixed array slot, except the first call
//! to or error from a new peer node, which adds it to a short list.

use super::{Guard, Histogram, Interface, Method, PeerError, ReplyStatus, STATUS_SLOTS};
use std::time::Duration;

const INTERFACES: usize = Interface::ALL.len();
const METHODS: usize = Method::ALL.len();

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardMetrics {
    requests: [[[u64; STATUS_SLOTS]; METHODS]; INTERFACES],
    latency: [[Histogram; METHODS]; INTERFACES],
    connections_opened: [u64; INTERFACES],
    connections_closed: [u64; INTERFACES],
    handoffs: u64,
    guards: [u64; Guard::ALL.len()],
    /// Bytes the shard's connections hold now (gauge): unsent responses,
    /// unfinished requests.
    pub connection_buffers: u64,
    /// A handful of nodes: a linear search beats hashing their addresses.
    peers: Vec<PeerStats>,
    /// Reads answered by the hot cache of remote keys.
    pub hot_hits: u64,
    /// Values loaded into the cache on a miss, and loads that failed.
    pub loads: u64,
    pub load_errors: u64,
    /// Misses that waited for a load already in flight.
    pub singleflight_joins: u64,
    /// Misses answered by a remembered "not found" of the group's source.
    pub negative_hits: u64,
    pub invalidations_sent: u64,
    pub invalidations_received: u64,
}

/// What a scrape collects from a shard: a copy of its counters, sent to
/// the scraping shard by value.
pub type MetricsSnapshot = ShardMetrics;

/// Calls forwarded to one peer node and how they failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStats {
    pub addr: String,
    pub forwarded: u64,
    /// Indexed by [`PeerError`].
    pub errors: [u64; PeerError::ALL.len()],
}

impl Default for ShardMetrics {
    fn default() -> Self {
        ShardMetrics {
            requests: [[[0; STATUS_SLOTS]; METHODS]; INTERFACES],
            latency: [[Histogram::default(); METHODS]; INTERFACES],
            connections_opened: [0; INTERFACES],
            connections_closed: [0; INTERFACES],
            handoffs: 0,
            guards: [0; Guard::ALL.len()],
            connection_buffers: 0,
            peers: Vec::new(),
            hot_hits: 0,
            loads: 0,
            load_errors: 0,
            singleflight_joins: 0,
            negative_hits: 0,
            invalidations_sent: 0,
            invalidations_received: 0,
        }
    }
}

impl ShardMetrics {
    pub fn new() -> ShardMetrics {
        ShardMetrics::default()
    }

    /// Counts a finished request and its latency (from its first byte to
    /// its response being queued).
    pub fn record_request(
        &mut self,
        interface: Interface,
        method: Method,
        status: ReplyStatus,
        elapsed: Duration,
    ) {
        let (i, m) = (interface as usize, method as usize);
        self.requests[i][m][status.slot()] += 1;
        self.latency[i][m].record(elapsed);
    }

    pub fn connection_opened(&mut self, interface: Interface) {
        self.connections_opened[interface as usize] += 1;
    }

    pub fn connection_closed(&mut self, interface: Interface) {
        self.connections_closed[interface as usize] += 1;
    }

    pub fn guard(&mut self, event: Guard, n: u64) {
        self.guards[event as usize] += n;
    }

    pub fn guards(&self, event: Guard) -> u64 {
        self.guards[event as usize]
    }

    /// Counts `n` requests handed to other shards of this node.
    pub fn handoffs_sent(&mut self, n: u64) {
        self.handoffs += n;
    }

    /// Counts a request forwarded to the peer node at `addr`.
    pub fn forwarded(&mut self, addr: &str) {
        self.peer(addr).forwarded += 1;
    }

    pub fn peer_error(&mut self, addr: &str, kind: PeerError) {
        self.peer_errors(addr, kind, 1);
    }

    /// Counts `n` calls to `addr` that failed the same way at once (a
    /// failed connect or a lost connection fails every call waiting on it).
    pub fn peer_errors(&mut self, addr: &str, kind: PeerError, n: u64) {
        self.peer(addr).errors[kind as usize] += n;
    }

    fn peer(&mut self, addr: &str) -> &mut PeerStats {
        let i = match self.peers.iter().position(|p| p.addr == addr) {
            Some(i) => i,
            None => {
                self.peers.push(PeerStats {
                    addr: addr.to_string(),
                    forwarded: 0,
                    errors: [0; PeerError::ALL.len()],
                });
                self.peers.len() - 1
            }
        };
        &mut self.peers[i]
    }

    pub fn snapshot(&self) -> MetricsSnapshot {
        self.clone()
    }

    pub fn requests(&self, interface: Interface, method: Method, status: ReplyStatus) -> u64 {
        self.requests[interface as usize][method as usize][status.slot()]
    }

    /// The request counts of one (interface, method), by status slot.
    pub(super) fn request_counts(
        &self,
        interface: Interface,
        method: Method,
    ) -> impl Iterator<Item = (usize, u64)> + '_ {
        self.requests[interface as usize][method as usize]
            .iter()
            .copied()
            .enumerate()
    }

    pub fn latency(&self, interface: Interface, method: Method) -> &Histogram {
        &self.latency[interface as usize][method as usize]
    }

    /// Connections opened and closed on `interface`.
    pub fn connections(&self, interface: Interface) -> (u64, u64) {
        let i = interface as usize;
        (self.connections_opened[i], self.connections_closed[i])
    }

    pub fn handoffs(&self) -> u64 {
        self.handoffs
    }

    pub fn peers(&self) -> &[PeerStats] {
        &self.peers
    }
}
