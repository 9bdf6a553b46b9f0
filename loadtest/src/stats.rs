//! Results: per-connection counters and latency histogram (merged per thread
//! and then per run), and the final report in human and JSON form.
//!
//! Every measured request ends in exactly one bucket: a gRPC status (the
//! server answered) or a transport error kind (it did not), so
//! `requests == sum(by_status) + sum(transport_errors)` holds by construction.

use crate::grpc::{self, Op};
use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Highest latency the histogram tracks (larger values are clamped): 1 hour in µs.
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// Why a request got no gRPC status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportError {
    /// Open loop: the slot came due while no connection was up.
    NotConnected,
    /// The connection was reset (ECONNRESET, EPIPE) with the request in flight.
    ConnectionReset,
    /// The server closed the connection (EOF) with the request in flight.
    ConnectionClosed,
    /// The server's GOAWAY said it did not process the request.
    GoAway,
    /// RST_STREAM with REFUSED_STREAM: not processed.
    RefusedStream,
    /// RST_STREAM with another code.
    StreamReset,
    /// The server broke HTTP/2 or HPACK; the connection was dropped.
    Protocol,
    /// Any other socket error.
    Io,
    /// Runs without --duration: no byte arrived for --give-up while the
    /// request was in flight; the connection was dropped.
    Timeout,
    /// Still in flight (or still waiting to be sent) when the run ended and
    /// the grace period ran out.
    Unfinished,
}

impl TransportError {
    pub const ALL: [TransportError; 10] = [
        TransportError::NotConnected,
        TransportError::ConnectionReset,
        TransportError::ConnectionClosed,
        TransportError::GoAway,
        TransportError::RefusedStream,
        TransportError::StreamReset,
        TransportError::Protocol,
        TransportError::Io,
        TransportError::Timeout,
        TransportError::Unfinished,
    ];

    pub fn name(self) -> &'static str {
        match self {
            TransportError::NotConnected => "not_connected",
            TransportError::ConnectionReset => "connection_reset",
            TransportError::ConnectionClosed => "connection_closed",
            TransportError::GoAway => "goaway",
            TransportError::RefusedStream => "refused_stream",
            TransportError::StreamReset => "stream_reset",
            TransportError::Protocol => "protocol_error",
            TransportError::Io => "io_error",
            TransportError::Timeout => "timeout",
            TransportError::Unfinished => "unfinished",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Counters and latencies of one phase (measured run or preload).
#[derive(Debug, Clone)]
pub struct Stats {
    /// Latency in µs of every request that got a gRPC status.
    pub latency: Histogram<u64>,
    /// Requests sent or scheduled.
    pub requests: u64,
    status: [u64; grpc::NAMED_CODES],
    other_status: BTreeMap<u32, u64>,
    transport: [u64; TransportError::ALL.len()],
    /// Get / Set requests actually sent on a connection.
    pub gets: u64,
    pub sets: u64,
    /// Gets answered OK with a decodable reply, and those with found = true.
    pub get_ok: u64,
    pub hits: u64,
    /// Failed connection attempts (not requests).
    pub connect_failures: u64,
    /// The first connection-level error seen, for the human summary.
    pub first_error: Option<String>,
}

impl Default for Stats {
    fn default() -> Self {
        Self::new()
    }
}

pub fn new_histogram() -> Histogram<u64> {
    // Constant, valid bounds: 1 µs .. 1 h at 3 significant digits.
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
}

impl Stats {
    pub fn new() -> Stats {
        Stats {
            latency: new_histogram(),
            requests: 0,
            status: [0; grpc::NAMED_CODES],
            other_status: BTreeMap::new(),
            transport: [0; TransportError::ALL.len()],
            gets: 0,
            sets: 0,
            get_ok: 0,
            hits: 0,
            connect_failures: 0,
            first_error: None,
        }
    }

    /// A request went out on a connection.
    #[inline]
    pub fn sent(&mut self, op: Op) {
        self.requests += 1;
        match op {
            Op::Get => self.gets += 1,
            Op::Set | Op::Preload => self.sets += 1,
        }
    }

    /// A request was scheduled but could not be sent at all.
    #[inline]
    pub fn not_sent(&mut self, why: TransportError) {
        self.requests += 1;
        self.transport_error(why);
    }

    /// A reply with a gRPC status arrived after `latency_us`.
    #[inline]
    pub fn response(&mut self, op: Op, status: u32, found: Option<bool>, latency_us: u64) {
        match self.status.get_mut(status as usize) {
            Some(n) => *n += 1,
            None => *self.other_status.entry(status).or_insert(0) += 1,
        }
        if op == Op::Get && status == grpc::OK {
            if let Some(found) = found {
                self.get_ok += 1;
                self.hits += found as u64;
            }
        }
        self.latency.saturating_record(latency_us.max(1));
    }

    #[inline]
    pub fn transport_error(&mut self, kind: TransportError) {
        self.transport[kind.index()] += 1;
    }

    pub fn note_error(&mut self, msg: impl FnOnce() -> String) {
        if self.first_error.is_none() {
            self.first_error = Some(msg());
        }
    }

    pub fn merge(&mut self, o: &Stats) {
        // Both histograms have the same bounds, so adding cannot fail.
        let _ = self.latency.add(&o.latency);
        self.requests += o.requests;
        for (a, b) in self.status.iter_mut().zip(o.status.iter()) {
            *a += b;
        }
        for (k, v) in &o.other_status {
            *self.other_status.entry(*k).or_insert(0) += v;
        }
        for (a, b) in self.transport.iter_mut().zip(o.transport.iter()) {
            *a += b;
        }
        self.gets += o.gets;
        self.sets += o.sets;
        self.get_ok += o.get_ok;
        self.hits += o.hits;
        self.connect_failures += o.connect_failures;
        if self.first_error.is_none() {
            self.first_error.clone_from(&o.first_error);
        }
    }

    pub fn ok(&self) -> u64 {
        self.status[grpc::OK as usize]
    }

    /// Requests that got a gRPC status, whatever it was.
    pub fn responses(&self) -> u64 {
        self.status.iter().sum::<u64>() + self.other_status.values().sum::<u64>()
    }

    pub fn transport_total(&self) -> u64 {
        self.transport.iter().sum()
    }

    /// Requests that failed: non-OK status or transport error.
    pub fn errors(&self) -> u64 {
        self.responses() - self.ok() + self.transport_total()
    }

    /// Count per gRPC status name; always includes OK.
    pub fn by_status(&self) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = self
            .status
            .iter()
            .enumerate()
            .filter(|&(code, &n)| n > 0 || code == 0)
            .map(|(code, &n)| (grpc::status_name(code as u32).unwrap_or("?").to_string(), n))
            .collect();
        v.extend(
            self.other_status
                .iter()
                .map(|(c, &n)| (format!("CODE_{c}"), n)),
        );
        v
    }

    pub fn transport_errors(&self) -> Vec<(&'static str, u64)> {
        TransportError::ALL
            .iter()
            .filter(|k| self.transport[k.index()] > 0)
            .map(|&k| (k.name(), self.transport[k.index()]))
            .collect()
    }

    pub fn count(&self, kind: TransportError) -> u64 {
        self.transport[kind.index()]
    }

    /// Latency in µs at quantile `q` (0 when nothing was recorded).
    pub fn quantile_us(&self, q: f64) -> u64 {
        if self.latency.is_empty() {
            0
        } else {
            self.latency.value_at_quantile(q)
        }
    }

    pub fn max_us(&self) -> u64 {
        if self.latency.is_empty() {
            0
        } else {
            self.latency.max()
        }
    }

    /// hits / Gets answered OK, if any were.
    pub fn hit_ratio(&self) -> Option<f64> {
        (self.get_ok > 0).then(|| self.hits as f64 / self.get_ok as f64)
    }
}

/// The preload phase's outcome.
#[derive(Debug, Clone)]
pub struct PreloadReport {
    pub stats: Stats,
    pub duration_s: f64,
}

/// Everything printed at the end of a run.
#[derive(Debug, Clone)]
pub struct Report {
    /// "closed" or "open".
    pub mode: &'static str,
    pub connections: usize,
    pub inflight: usize,
    pub rate: Option<f64>,
    pub threads: usize,
    pub targets: Vec<String>,
    pub warmup_s: f64,
    /// From the end of warm-up until the last measured request finished.
    pub duration_s: f64,
    pub stats: Stats,
    pub preload: Option<PreloadReport>,
    /// Keys per call (`--batch`); 1 for single-key calls.
    pub batch: u32,
}

impl Report {
    /// Responses (any gRPC status) per second of measured time.
    pub fn throughput(&self) -> f64 {
        if self.duration_s > 0.0 {
            self.stats.responses() as f64 / self.duration_s
        } else {
            0.0
        }
    }

    pub fn to_json(&self) -> Value {
        let s = &self.stats;
        let by_status: Map<String, Value> = s
            .by_status()
            .into_iter()
            .map(|(k, v)| (k, json!(v)))
            .collect();
        let transport: Map<String, Value> = s
            .transport_errors()
            .into_iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        let preload = self.preload.as_ref().map(|p| {
            json!({
                "requests": p.stats.requests,
                "ok": p.stats.ok(),
                "errors": p.stats.errors(),
                "duration_s": p.duration_s,
            })
        });
        json!({
            "requests": s.requests,
            "duration_s": self.duration_s,
            "throughput": self.throughput(),
            "p50": s.quantile_us(0.50),
            "p90": s.quantile_us(0.90),
            "p99": s.quantile_us(0.99),
            "p999": s.quantile_us(0.999),
            "max": s.max_us(),
            "ok": s.ok(),
            "by_status": by_status,
            "transport_errors": transport,
            "gets": s.gets,
            "hits": s.hits,
            "hit_ratio": s.hit_ratio(),
            "sets": s.sets,
            "mode": self.mode,
            "connections": self.connections,
            "inflight": self.inflight,
            "rate": self.rate,
            "threads": self.threads,
            "targets": self.targets,
            "warmup_s": self.warmup_s,
            "connect_failures": s.connect_failures,
            "preload": preload,
            "batch": self.batch,
        })
    }

    pub fn human(&self) -> String {
        let s = &self.stats;
        let mut o = String::new();
        let load = match self.rate {
            Some(r) => format!(
                "open loop at {} req/s (cap {} in flight per connection)",
                fmt_count(r),
                self.inflight
            ),
            None => format!("closed loop, {} in flight per connection", self.inflight),
        };
        let _ = writeln!(
            o,
            "{load}; {} connection(s) on {} thread(s) to {}",
            self.connections,
            self.threads,
            self.targets.join(", ")
        );
        if let Some(p) = &self.preload {
            let _ = writeln!(
                o,
                "preload       {} Sets in {:.2}s: {} OK, {} errors",
                p.stats.requests,
                p.duration_s,
                p.stats.ok(),
                p.stats.errors()
            );
        }
        let _ = writeln!(
            o,
            "requests      {} in {:.3}s{}",
            s.requests,
            self.duration_s,
            if self.warmup_s > 0.0 {
                format!(" (after {:.1}s warm-up)", self.warmup_s)
            } else {
                String::new()
            }
        );
        let _ = writeln!(
            o,
            "throughput    {} responses/s",
            fmt_count(self.throughput())
        );
        let _ = writeln!(
            o,
            "latency       p50 {}  p90 {}  p99 {}  p99.9 {}  max {}{}",
            fmt_us(s.quantile_us(0.5)),
            fmt_us(s.quantile_us(0.9)),
            fmt_us(s.quantile_us(0.99)),
            fmt_us(s.quantile_us(0.999)),
            fmt_us(s.max_us()),
            if self.rate.is_some() {
                "  (from scheduled send times)"
            } else {
                ""
            }
        );
        let statuses: Vec<String> = s
            .by_status()
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let _ = writeln!(o, "status        {}", statuses.join(", "));
        let transport: Vec<String> = s
            .transport_errors()
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let _ = writeln!(
            o,
            "transport     {}",
            if transport.is_empty() {
                "no errors".to_string()
            } else {
                transport.join(", ")
            }
        );
        let hit = match s.hit_ratio() {
            Some(r) => format!("{} hits ({:.1}%)", s.hits, r * 100.0),
            None => "no Get answered".to_string(),
        };
        let _ = writeln!(o, "gets / sets   {} / {}; {hit}", s.gets, s.sets);
        if s.connect_failures > 0 {
            let _ = writeln!(o, "connects      {} failed attempts", s.connect_failures);
        }
        if let Some(e) = &s.first_error {
            let _ = writeln!(o, "first error   {e}");
        }
        o
    }
}

/// 1234567.8 → "1,234,568".
pub fn fmt_count(x: f64) -> String {
    let n = x.round() as u64;
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// µs → "850µs", "1.25ms", "2.50s".
pub fn fmt_us(us: u64) -> String {
    if us < 1_000 {
        format!("{us}µs")
    } else if us < 1_000_000 {
        format!("{:.2}ms", us as f64 / 1e3)
    } else {
        format!("{:.2}s", us as f64 / 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_known_data() {
        let mut s = Stats::new();
        // 1..=10000 µs once each: the q-quantile is about q * 10000.
        for us in 1..=10_000u64 {
            s.sent(Op::Get);
            s.response(Op::Get, 0, Some(us % 2 == 0), us);
        }
        let close = |got: u64, want: u64| {
            let err = (got as f64 - want as f64).abs() / want as f64;
            assert!(err < 0.002, "got {got}, want ~{want}");
        };
        close(s.quantile_us(0.5), 5_000);
        close(s.quantile_us(0.9), 9_000);
        close(s.quantile_us(0.99), 9_900);
        close(s.quantile_us(0.999), 9_990);
        close(s.max_us(), 10_000);
        assert_eq!(s.hit_ratio(), Some(0.5));
        // A skewed set: 99 fast, 1 very slow: p99 is fast, max is the outlier.
        let mut s = Stats::new();
        for _ in 0..99 {
            s.response(Op::Set, 0, None, 100);
        }
        s.response(Op::Set, 0, None, 1_000_000);
        assert_eq!(s.quantile_us(0.99), 100);
        close(s.quantile_us(0.999), 1_000_000);
        close(s.max_us(), 1_000_000);
    }

    #[test]
    fn empty_histogram_reports_zero() {
        let s = Stats::new();
        assert_eq!(s.quantile_us(0.99), 0);
        assert_eq!(s.max_us(), 0);
        assert_eq!(s.hit_ratio(), None);
    }

    #[test]
    fn counts_add_up_and_merge() {
        let mut a = Stats::new();
        a.sent(Op::Get);
        a.response(Op::Get, 0, Some(true), 10);
        a.sent(Op::Set);
        a.response(Op::Set, 14, None, 10);
        a.sent(Op::Set);
        a.transport_error(TransportError::ConnectionReset);
        a.not_sent(TransportError::NotConnected);
        let mut b = Stats::new();
        b.sent(Op::Get);
        b.response(Op::Get, 99, None, 10);
        b.sent(Op::Get);
        b.transport_error(TransportError::Unfinished);
        a.merge(&b);
        assert_eq!(a.requests, 6);
        assert_eq!(a.responses() + a.transport_total(), a.requests);
        assert_eq!(a.ok(), 1);
        assert_eq!(a.errors(), 5);
        assert_eq!(
            a.by_status(),
            vec![
                ("OK".into(), 1),
                ("UNAVAILABLE".into(), 1),
                ("CODE_99".into(), 1)
            ]
        );
        assert_eq!(
            a.transport_errors(),
            vec![
                ("not_connected", 1),
                ("connection_reset", 1),
                ("unfinished", 1)
            ]
        );
        assert_eq!((a.gets, a.sets, a.hits, a.get_ok), (3, 2, 1, 1));
    }

    #[test]
    fn json_has_the_documented_fields() {
        let mut s = Stats::new();
        s.sent(Op::Get);
        s.response(Op::Get, 0, Some(true), 250);
        let r = Report {
            mode: "closed",
            connections: 2,
            inflight: 8,
            rate: None,
            threads: 1,
            targets: vec!["a:1".into()],
            warmup_s: 0.0,
            duration_s: 0.5,
            stats: s,
            preload: None,
            batch: 1,
        };
        let j = r.to_json();
        for k in [
            "requests",
            "duration_s",
            "throughput",
            "p50",
            "p90",
            "p99",
            "p999",
            "max",
            "ok",
            "by_status",
            "transport_errors",
            "gets",
            "hits",
            "hit_ratio",
            "sets",
            "mode",
            "connections",
            "inflight",
            "rate",
        ] {
            assert!(j.get(k).is_some(), "missing {k}");
        }
        assert_eq!(j["throughput"], 2.0);
        assert_eq!(j["by_status"]["OK"], 1);
        assert_eq!(j["hit_ratio"], 1.0);
        assert_eq!(j["rate"], Value::Null);
        assert!(r.human().contains("p99"));
        assert_eq!(fmt_count(1234567.4), "1,234,567");
        assert_eq!(fmt_us(1500), "1.50ms");
    }
}
