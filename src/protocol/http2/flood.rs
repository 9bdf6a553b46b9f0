//! Floods: frames that cost a client next to nothing and the server work,
//! memory or both, sent over and over (CVE-2019-9512/9514/9515/9516/9518,
//! CVE-2023-44487 "rapid reset", CVE-2024-27316-style CONTINUATION
//! floods). Each kind has a token bucket per connection: a burst a
//! well-behaved client never reaches, refilled at a steady rate. A client
//! that empties one gets GOAWAY(ENHANCE_YOUR_CALM) naming the kind.
//! docs/protocol.md compares the limits with nginx, h2 and nghttp2.

use std::time::Instant;

/// What a client flooded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flood {
    /// Streams the client reset, or opened past MAX_CONCURRENT_STREAMS
    /// (rapid reset).
    Resets,
    /// SETTINGS frames (each one is acknowledged and may walk every stream).
    Settings,
    /// DATA without END_STREAM and HEADERS or CONTINUATION, all empty.
    EmptyFrames,
    /// WINDOW_UPDATEs of less than [`SMALL_WINDOW_UPDATE`] bytes while data
    /// waits for window: each releases a tiny DATA frame.
    WindowDribble,
    /// PING and SETTINGS acknowledgements queued and not read.
    UnreadAcks,
    /// CONTINUATION frames in one header block.
    Continuations,
}

impl Flood {
    pub const ALL: [Flood; 6] = [
        Flood::Resets,
        Flood::Settings,
        Flood::EmptyFrames,
        Flood::WindowDribble,
        Flood::UnreadAcks,
        Flood::Continuations,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Flood::Resets => "resets",
            Flood::Settings => "settings",
            Flood::EmptyFrames => "empty_frames",
            Flood::WindowDribble => "window_dribble",
            Flood::UnreadAcks => "unread_acks",
            Flood::Continuations => "continuations",
        }
    }

    /// (burst, refill per second) of the metered kinds.
    fn bucket(self) -> (f32, f32) {
        match self {
            Flood::Resets => (1000.0, 500.0),
            Flood::Settings => (100.0, 10.0),
            Flood::EmptyFrames => (100.0, 10.0),
            Flood::WindowDribble => (200.0, 50.0),
            // Counted, not metered (see `MAX_UNREAD_ACKS`, `MAX_CONTINUATIONS`).
            Flood::UnreadAcks | Flood::Continuations => (f32::MAX, 0.0),
        }
    }
}

/// A WINDOW_UPDATE smaller than this, while data waits, is a dribble.
pub const SMALL_WINDOW_UPDATE: u32 = 1024;

/// PING and SETTINGS ACKs that may wait unwritten (nghttp2's limit too).
pub const MAX_UNREAD_ACKS: usize = 1000;

/// CONTINUATION frames one header block may have: a 16 KiB header list
/// needs at most 2 at the smallest frame size.
pub const MAX_CONTINUATIONS: usize = 16;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f32,
    last: Instant,
}

/// One connection's buckets.
#[derive(Debug)]
pub struct Meters {
    buckets: [Bucket; 4],
}

impl Meters {
    pub fn new(now: Instant) -> Meters {
        let full = |k: Flood| Bucket {
            tokens: k.bucket().0,
            last: now,
        };
        Meters {
            buckets: [
                full(Flood::Resets),
                full(Flood::Settings),
                full(Flood::EmptyFrames),
                full(Flood::WindowDribble),
            ],
        }
    }

    /// Takes one token of `kind`; false when the bucket is empty.
    pub fn spend(&mut self, kind: Flood, now: Instant) -> bool {
        let i = match kind {
            Flood::Resets => 0,
            Flood::Settings => 1,
            Flood::EmptyFrames => 2,
            Flood::WindowDribble => 3,
            Flood::UnreadAcks | Flood::Continuations => return true,
        };
        let (burst, rate) = kind.bucket();
        let b = &mut self.buckets[i];
        let elapsed = now.saturating_duration_since(b.last).as_secs_f32();
        b.last = now;
        b.tokens = (b.tokens + elapsed * rate).min(burst);
        if b.tokens < 1.0 {
            return false;
        }
        b.tokens -= 1.0;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_steady_rate() {
        let t0 = Instant::now();
        let mut m = Meters::new(t0);
        for _ in 0..100 {
            assert!(m.spend(Flood::Settings, t0));
        }
        assert!(!m.spend(Flood::Settings, t0));
        // 10 per second: one more after 100 ms, not before.
        assert!(!m.spend(Flood::Settings, t0 + Duration::from_millis(50)));
        assert!(m.spend(Flood::Settings, t0 + Duration::from_millis(160)));
        // Kinds are independent; unmetered kinds never run out.
        assert!(m.spend(Flood::Resets, t0));
        assert!(m.spend(Flood::UnreadAcks, t0));
        // The bucket refills to its burst, not beyond.
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..100 {
            assert!(m.spend(Flood::Settings, later));
        }
        assert!(!m.spend(Flood::Settings, later));
    }
}
