//! A latency histogram with fixed buckets, kept in integer nanoseconds:
//! recording is a search of 16 bounds and two additions, no float math
//! and no allocation. Seconds appear only when rendered.

use std::time::Duration;

/// Upper bounds of the finite buckets, in nanoseconds: 25 µs to 10 s.
pub const BUCKETS_NS: [u64; 16] = [
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    1_000_000_000,
    2_500_000_000,
    10_000_000_000,
];

/// The `le` label of each bucket, `+Inf` last, as Prometheus writes them.
pub(super) const LE: [&str; 17] = [
    "2.5e-05", "5e-05", "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025",
    "0.05", "0.1", "0.25", "1", "2.5", "10", "+Inf",
];

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Histogram {
    /// Per bucket, not cumulative; the last is above 10 s.
    counts: [u64; 17],
    sum_ns: u64,
}

impl Histogram {
    pub fn record(&mut self, elapsed: Duration) {
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        // Prometheus buckets count observations <= their bound.
        let i = BUCKETS_NS.partition_point(|&b| b < ns);
        if let Some(c) = self.counts.get_mut(i) {
            *c += 1;
        }
        self.sum_ns = self.sum_ns.saturating_add(ns);
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (c, o) in self.counts.iter_mut().zip(other.counts) {
            *c += o;
        }
        self.sum_ns = self.sum_ns.saturating_add(other.sum_ns);
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    pub fn sum_ns(&self) -> u64 {
        self.sum_ns
    }

    /// `(le, cumulative count)` per bucket, `+Inf` last.
    pub fn cumulative(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        LE.iter()
            .zip(self.counts.iter().scan(0u64, |acc, &c| {
                *acc += c;
                Some(*acc)
            }))
            .map(|(&le, n)| (le, n))
    }
}
