//! Metrics: each shard's counters and latency histograms, and their
//! rendering in Prometheus' text format. No I/O, no clock, no sharing.
//!
//! A shard's thread owns its [`ShardMetrics`] and records into it with
//! `&mut self`: plain `u64`s in fixed arrays indexed by the label enums
//! below, so recording is O(1), allocation-free and touches no atomic (the
//! data path stays shared-nothing). A scrape asks every shard for a copy
//! ([`ShardMetrics::snapshot`], `Send + Clone`) by message, and [`render`]
//! sums and prints them all together with the store's counters and the
//! node's cluster state.
//!
//! - `histogram.rs`: fixed-bucket latency histogram in nanoseconds.
//! - `shard.rs`: one shard's counters.
//! - `render.rs`: the text exposition format 0.0.4 and the metric families
//!   (listed in docs/operations.md).

mod histogram;
mod render;
mod shard;
#[cfg(test)]
mod tests;

pub use histogram::{Histogram, BUCKETS_NS};
pub use render::{render, NodeInfo, ShardSnapshot, ETCD_STATES};
pub use shard::{MetricsSnapshot, PeerStats, ShardMetrics};

use crate::protocol::grpc::{self, Code};
use crate::protocol::http2::Flood;

/// Which listener a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interface {
    Grpc = 0,
    Http = 1,
}

impl Interface {
    pub const ALL: [Interface; 2] = [Interface::Grpc, Interface::Http];

    pub fn label(self) -> &'static str {
        match self {
            Interface::Grpc => "grpc",
            Interface::Http => "http",
        }
    }
}

/// What the node did to protect itself from a client, counted in
/// `shardcache_guard_events_total{event}` (docs/operations.md says what
/// each means and when to worry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    /// A connection was refused over --max-connections.
    ConnectionLimit = 0,
    /// A connection was closed after --idle-timeout without traffic.
    IdleClosed = 1,
    /// A connection was closed because its client read none of its
    /// responses for --idle-timeout (the write stalled).
    WriteStalled = 2,
    /// A connection was closed for holding more than twice its buffer
    /// budget (--conn-buffer).
    BufferLimit = 3,
    /// A request stream was refused (REFUSED_STREAM) or input was held
    /// back because the connection or the node was at its buffer budget.
    Backpressure = 4,
    /// A call ended DEADLINE_EXCEEDED before its request had fully arrived.
    IncompleteDeadline = 5,
    /// A connection did not send its preface and SETTINGS, an HTTP/2
    /// header block, or an HTTP/1.1 request head or body in time
    /// (--header-timeout).
    HeaderTimeout = 6,
    /// An HTTP/2 client flooded (GOAWAY ENHANCE_YOUR_CALM), by kind.
    FloodResets = 7,
    FloodSettings = 8,
    FloodEmptyFrames = 9,
    FloodWindowDribble = 10,
    FloodUnreadAcks = 11,
    FloodContinuations = 12,
    /// A request's headers decoded past MAX_HEADER_LIST_SIZE (HPACK bomb);
    /// its stream was reset.
    OversizedHeaders = 13,
    /// A TLS handshake failed (no or an untrusted client certificate, no
    /// common version or ALPN, not TLS at all); the connection was closed.
    TlsHandshakeFailed = 14,
    /// A plaintext client reached a node that requires TLS (GOAWAY
    /// INADEQUATE_SECURITY).
    PlaintextRefused = 15,
    /// A connection opened as a peer but did not answer the
    /// --peer-secret-file challenge (wrong, missing or late): closed unread.
    PeerAuthFailed = 16,
}

impl Guard {
    pub const ALL: [Guard; 17] = [
        Guard::ConnectionLimit,
        Guard::IdleClosed,
        Guard::WriteStalled,
        Guard::BufferLimit,
        Guard::Backpressure,
        Guard::IncompleteDeadline,
        Guard::HeaderTimeout,
        Guard::FloodResets,
        Guard::FloodSettings,
        Guard::FloodEmptyFrames,
        Guard::FloodWindowDribble,
        Guard::FloodUnreadAcks,
        Guard::FloodContinuations,
        Guard::OversizedHeaders,
        Guard::TlsHandshakeFailed,
        Guard::PlaintextRefused,
        Guard::PeerAuthFailed,
    ];

    pub fn flood(kind: Flood) -> Guard {
        match kind {
            Flood::Resets => Guard::FloodResets,
            Flood::Settings => Guard::FloodSettings,
            Flood::EmptyFrames => Guard::FloodEmptyFrames,
            Flood::WindowDribble => Guard::FloodWindowDribble,
            Flood::UnreadAcks => Guard::FloodUnreadAcks,
            Flood::Continuations => Guard::FloodContinuations,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Guard::ConnectionLimit => "connection_limit",
            Guard::IdleClosed => "idle_closed",
            Guard::WriteStalled => "write_stalled",
            Guard::BufferLimit => "buffer_limit",
            Guard::Backpressure => "backpressure",
            Guard::IncompleteDeadline => "incomplete_deadline",
            Guard::HeaderTimeout => "header_timeout",
            Guard::FloodResets => "flood_resets",
            Guard::FloodSettings => "flood_settings",
            Guard::FloodEmptyFrames => "flood_empty_frames",
            Guard::FloodWindowDribble => "flood_window_dribble",
            Guard::FloodUnreadAcks => "flood_unread_acks",
            Guard::FloodContinuations => "flood_continuations",
            Guard::OversizedHeaders => "oversized_headers",
            Guard::TlsHandshakeFailed => "tls_handshake_failed",
            Guard::PlaintextRefused => "plaintext_refused",
            Guard::PeerAuthFailed => "peer_auth_failed",
        }
    }
}

/// What a request did, whichever interface carried it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get = 0,
    Set = 1,
    Delete = 2,
    Stats = 3,
    /// gRPC Health/Check, `/healthz`, `/readyz`.
    Health = 4,
    /// `/metrics`.
    Metrics = 5,
    /// Anything else: unknown paths and methods, undecodable requests.
    Other = 6,
    /// Batch calls: one request each, whatever their number of keys.
    GetMany = 7,
    SetMany = 8,
    DeleteMany = 9,
    Topology = 10,
}

impl Method {
    pub const ALL: [Method; 11] = [
        Method::Get,
        Method::Set,
        Method::Delete,
        Method::Stats,
        Method::Health,
        Method::Metrics,
        Method::Other,
        Method::GetMany,
        Method::SetMany,
        Method::DeleteMany,
        Method::Topology,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Method::Get => "get",
            Method::Set => "set",
            Method::Delete => "delete",
            Method::Stats => "stats",
            Method::Health => "health",
            Method::Metrics => "metrics",
            Method::Other => "other",
            Method::GetMany => "get_many",
            Method::SetMany => "set_many",
            Method::DeleteMany => "delete_many",
            Method::Topology => "topology",
        }
    }
}

impl From<grpc::Method> for Method {
    fn from(m: grpc::Method) -> Method {
        match m {
            grpc::Method::Get => Method::Get,
            grpc::Method::Set => Method::Set,
            grpc::Method::Delete => Method::Delete,
            grpc::Method::Stats => Method::Stats,
            grpc::Method::HealthCheck => Method::Health,
            grpc::Method::GetMany => Method::GetMany,
            grpc::Method::SetMany => Method::SetMany,
            grpc::Method::DeleteMany => Method::DeleteMany,
            grpc::Method::Topology => Method::Topology,
        }
    }
}

/// How a request ended: a gRPC status, or an HTTP status (the gateway,
/// and gRPC requests refused before any gRPC status, e.g. 415).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyStatus {
    Grpc(Code),
    Http(u16),
}

/// The HTTP statuses counted one by one; others share the label "other".
const HTTP_STATUSES: [u16; 17] = [
    200, 201, 204, 400, 404, 405, 408, 413, 415, 429, 431, 500, 501, 502, 503, 504, 505,
];

/// Counter slots per (interface, method): 17 gRPC codes, the HTTP
/// statuses above, and "other".
pub(crate) const STATUS_SLOTS: usize = 17 + HTTP_STATUSES.len() + 1;

/// The `status` label of each HTTP slot, and of "other".
const HTTP_LABELS: [&str; 18] = [
    "200", "201", "204", "400", "404", "405", "408", "413", "415", "429", "431", "500", "501",
    "502", "503", "504", "505", "other",
];

/// The `status` label of counter slot `slot`: a gRPC code's name, an HTTP
/// status, or "other".
pub(crate) fn status_label(slot: usize) -> &'static str {
    match u32::try_from(slot).ok().and_then(Code::from_u32) {
        Some(code) => code.name(),
        None => HTTP_LABELS
            .get(slot.saturating_sub(17))
            .copied()
            .unwrap_or("other"),
    }
}

impl ReplyStatus {
    fn slot(self) -> usize {
        match self {
            ReplyStatus::Grpc(c) => c as usize,
            ReplyStatus::Http(s) => {
                17 + HTTP_STATUSES
                    .iter()
                    .position(|&h| h == s)
                    .unwrap_or(HTTP_STATUSES.len())
            }
        }
    }

    /// The `status` label: the gRPC code name, or the HTTP status.
    pub fn label(self) -> &'static str {
        status_label(self.slot())
    }
}

/// Why a call to a peer node failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerError {
    /// Could not connect.
    Connect = 0,
    /// No answer within the deadline.
    Timeout = 1,
    /// The connection closed with the call outstanding.
    Closed = 2,
    /// The peer answered with an error status.
    Remote = 3,
    /// Refused before sending: too many calls already wait on the peer.
    Overloaded = 4,
}

impl PeerError {
    pub const ALL: [PeerError; 5] = [
        PeerError::Connect,
        PeerError::Timeout,
        PeerError::Closed,
        PeerError::Remote,
        PeerError::Overloaded,
    ];

    pub fn label(self) -> &'static str {
        match self {
            PeerError::Connect => "connect",
            PeerError::Timeout => "timeout",
            PeerError::Closed => "closed",
            PeerError::Remote => "remote",
            PeerError::Overloaded => "overloaded",
        }
    }
}
