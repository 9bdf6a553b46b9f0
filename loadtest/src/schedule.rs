//! The open-loop schedule: `--rate R` means global slot `i` is due at
//! `i / R` seconds after the run starts, and connection `c` of `C` owns the
//! slots with `i % C == c`. A request's latency counts from its slot's time,
//! not from when it actually went out, so a server that stalls (and thereby
//! delays our sends) is charged for the wait (coordinated omission
//! correction, as in wrk2). The schedule is arithmetic, so a backlog of
//! overdue slots costs no memory: it is the gap between the next slot to
//! send and the clock.

use std::time::Duration;

/// One scheduled request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// Scheduled send time, in ns since the run's base instant.
    pub start_ns: u64,
    /// After warm-up: counts in the results.
    pub measured: bool,
}

/// One connection's share of the schedule.
#[derive(Debug, Clone)]
pub struct Pacer {
    start_ns: u64,
    ns_per_slot: f64,
    conn: u64,
    conns: u64,
    /// Next local slot number `k` (global slot `k * conns + conn`).
    next: u64,
    /// Global slots from here on are past the end of the run.
    end_global: u64,
    /// Global slots before this are warm-up.
    first_measured: u64,
}

impl Pacer {
    /// The schedule of connection `conn` of `conns` for `rate` requests/s
    /// in total, starting at `start_ns` with `warmup` of unmeasured load,
    /// then measured load until `duration` passes or `requests` measured
    /// slots were scheduled (at least one of the two must be given).
    pub fn new(
        start_ns: u64,
        rate: f64,
        conn: usize,
        conns: usize,
        warmup: Duration,
        duration: Option<Duration>,
        requests: Option<u64>,
    ) -> Pacer {
        assert!(rate > 0.0 && conn < conns);
        assert!(
            duration.is_some() || requests.is_some(),
            "an unbounded schedule"
        );
        let first_measured = (rate * warmup.as_secs_f64()).ceil() as u64;
        let by_time = duration
            .map(|d| (rate * (warmup + d).as_secs_f64()).ceil() as u64)
            .unwrap_or(u64::MAX);
        let by_count = requests
            .map(|n| first_measured.saturating_add(n))
            .unwrap_or(u64::MAX);
        Pacer {
            start_ns,
            ns_per_slot: 1e9 / rate,
            conn: conn as u64,
            conns: conns as u64,
            next: 0,
            end_global: by_time.min(by_count),
            first_measured,
        }
    }

    #[inline]
    fn global(&self, k: u64) -> u64 {
        k * self.conns + self.conn
    }

    /// When local slot `k` is due.
    #[inline]
    pub fn slot_time(&self, k: u64) -> u64 {
        self.start_ns + (self.global(k) as f64 * self.ns_per_slot) as u64
    }

    /// When the run's schedule ends: the time the first slot past the end
    /// would be due. Slots still unsent by then count as unfinished.
    pub fn end_time(&self) -> u64 {
        self.start_ns + (self.end_global as f64 * self.ns_per_slot) as u64
    }

    /// No slot left in the run.
    #[inline]
    pub fn is_done(&self) -> bool {
        self.global(self.next) >= self.end_global
    }

    /// When the next slot is due, if any is left.
    #[inline]
    pub fn next_time(&self) -> Option<u64> {
        (!self.is_done()).then(|| self.slot_time(self.next))
    }

    /// Takes the next slot if it is due at `now_ns`.
    #[inline]
    pub fn next_due(&mut self, now_ns: u64) -> Option<Slot> {
        match self.next_time() {
            Some(t) if t <= now_ns => self.pop(),
            _ => None,
        }
    }

    /// Takes the next slot whatever its time.
    pub fn pop(&mut self) -> Option<Slot> {
        if self.is_done() {
            return None;
        }
        let slot = Slot {
            start_ns: self.slot_time(self.next),
            measured: self.global(self.next) >= self.first_measured,
        };
        self.next += 1;
        Some(slot)
    }

    /// Local slots due by `now_ns` and not yet taken (the backlog).
    pub fn backlog(&self, now_ns: u64) -> u64 {
        let mut k = self.next;
        // Linear from `next`: callers only ask when the backlog is small or
        // about to be drained anyway.
        while self.global(k) < self.end_global && self.slot_time(k) <= now_ns {
            k += 1;
        }
        k - self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn all_slots(
        rate: f64,
        conns: usize,
        w: Duration,
        d: Option<Duration>,
        n: Option<u64>,
    ) -> Vec<Slot> {
        let mut v = vec![];
        for c in 0..conns {
            let mut p = Pacer::new(0, rate, c, conns, w, d, n);
            while let Some(s) = p.pop() {
                v.push(s);
            }
        }
        v.sort_by_key(|s| s.start_ns);
        v
    }

    #[test]
    fn rate_times_duration_slots_at_exact_times() {
        for conns in [1, 3, 7] {
            let slots = all_slots(
                1000.0,
                conns,
                Duration::ZERO,
                Some(Duration::from_secs(2)),
                None,
            );
            assert_eq!(slots.len(), 2000, "conns={conns}");
            for (i, s) in slots.iter().enumerate() {
                assert_eq!(s.start_ns, i as u64 * MS);
                assert!(s.measured);
            }
        }
        // A non-integer interval: 3 req/s over 1 s is slots at 0, 1/3, 2/3 s.
        let slots = all_slots(3.0, 2, Duration::ZERO, Some(Duration::from_secs(1)), None);
        let t: Vec<u64> = slots.iter().map(|s| s.start_ns).collect();
        assert_eq!(t, vec![0, 333_333_333, 666_666_666]);
    }

    #[test]
    fn warmup_slots_are_not_measured_and_requests_bound_counts_measured() {
        let slots = all_slots(
            100.0,
            2,
            Duration::from_secs(1),
            Some(Duration::from_secs(2)),
            None,
        );
        assert_eq!(slots.len(), 300);
        assert_eq!(slots.iter().filter(|s| s.measured).count(), 200);
        assert!(slots
            .iter()
            .all(|s| s.measured == (s.start_ns >= 1000 * MS)));

        let slots = all_slots(100.0, 3, Duration::from_secs(1), None, Some(50));
        assert_eq!(slots.iter().filter(|s| s.measured).count(), 50);
        assert_eq!(slots.len(), 150);
        let slots = all_slots(
            100.0,
            3,
            Duration::ZERO,
            Some(Duration::from_secs(1)),
            Some(1000),
        );
        assert_eq!(slots.len(), 100, "the duration ends the run first");
    }

    #[test]
    fn latency_counts_from_the_schedule_not_the_send() {
        // 1000 req/s on one connection; the sender stalls for 10.5 ms (say a
        // blocked socket), then catches up: the overdue requests keep their
        // scheduled times, so a response at 12 ms shows 12 ms of latency for
        // the first slot, not the ~1.5 ms since it actually went out.
        let mut p = Pacer::new(
            5 * MS,
            1000.0,
            0,
            1,
            Duration::ZERO,
            Some(Duration::from_secs(1)),
            None,
        );
        assert_eq!(p.next_due(5 * MS - 1), None);
        let now = 5 * MS + 10 * MS + MS / 2;
        assert_eq!(p.backlog(now), 11);
        let sent: Vec<Slot> = std::iter::from_fn(|| p.next_due(now)).collect();
        assert_eq!(sent.len(), 11);
        for (i, s) in sent.iter().enumerate() {
            assert_eq!(s.start_ns, 5 * MS + i as u64 * MS);
        }
        let done = 5 * MS + 12 * MS;
        let latency_ms: Vec<u64> = sent.iter().map(|s| (done - s.start_ns) / MS).collect();
        assert_eq!(latency_ms.first(), Some(&12));
        assert_eq!(latency_ms.last(), Some(&2));
        assert_eq!(p.next_time(), Some(5 * MS + 11 * MS));
        assert_eq!(p.backlog(now), 0);
    }

    #[test]
    fn schedule_ends() {
        let mut p = Pacer::new(0, 10.0, 1, 2, Duration::ZERO, None, Some(4));
        let t: Vec<u64> = std::iter::from_fn(|| p.pop())
            .map(|s| s.start_ns / MS)
            .collect();
        assert_eq!(t, vec![100, 300]);
        assert!(p.is_done() && p.next_time().is_none());
    }
}
