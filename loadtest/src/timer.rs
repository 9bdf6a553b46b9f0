//! A microsecond-precise one-shot timer for the open-loop schedule.
//!
//! tokio's timer wheel has 1 ms granularity and fires late, and in open
//! loop every microsecond a send is late is charged to the server as
//! latency. A `timerfd` registered with the runtime's reactor wakes the task
//! on time (with the thread's timer slack lowered to 1 µs, see
//! [`lower_timer_slack`]) at the price of one syscall to arm it. Where no
//! timerfd can be had, [`Timer`] falls back to tokio's sleep plus yielding
//! through the last millisecond.

use rustix::fd::OwnedFd;
use rustix::time::{
    timerfd_create, timerfd_settime, Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags,
};
use std::io;
use std::num::NonZeroU64;
use std::pin::Pin;
use std::time::{Duration, Instant};
use tokio::io::unix::AsyncFd;

/// Closer than this to the deadline, waiting is not worth a syscall: the
/// caller yields and checks the clock again.
pub const SPIN_NS: u64 = 20_000;
/// The fallback's spin window: tokio's timer resolution.
const COARSE_SPIN_NS: u64 = 1_000_000;

/// Asks the kernel to fire this thread's timers within 1 µs of their
/// deadline instead of the default 50 µs. Best effort.
pub fn lower_timer_slack() {
    let _ = rustix::thread::set_current_timer_slack(NonZeroU64::new(1_000));
}

/// Registers the timerfd with the reactor. `AsyncFd::new` is deprecated
/// (tokio#8587) because a `T` that can swap its descriptor while registered
/// breaks I/O safety; an `OwnedFd` cannot, so the safe constructor is sound
/// here and spares this crate any `unsafe`.
#[allow(deprecated)]
fn register(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    AsyncFd::new(fd)
}

enum Kind {
    Fd(AsyncFd<OwnedFd>),
    Coarse(Pin<Box<tokio::time::Sleep>>),
}

/// A re-armable one-shot timer with deadlines in ns since `base`.
pub struct Timer {
    kind: Kind,
    base: Instant,
    /// Deadline currently armed (None: disarmed or already fired).
    armed: Option<u64>,
}

impl Timer {
    /// Must be called inside a tokio runtime with I/O enabled.
    pub fn new(base: Instant) -> Timer {
        let fd = timerfd_create(
            TimerfdClockId::Monotonic,
            TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
        )
        .map_err(io::Error::from)
        .and_then(register);
        let kind = match fd {
            Ok(fd) => Kind::Fd(fd),
            Err(_) => Kind::Coarse(Box::pin(tokio::time::sleep(Duration::from_secs(86_400)))),
        };
        Timer {
            kind,
            base,
            armed: None,
        }
    }

    /// How close to a deadline the caller should stop waiting on the timer
    /// and yield instead.
    pub fn spin_ns(&self) -> u64 {
        match self.kind {
            Kind::Fd(_) => SPIN_NS,
            Kind::Coarse(_) => COARSE_SPIN_NS,
        }
    }

    pub fn is_armed(&self) -> bool {
        self.armed.is_some()
    }

    /// Arms the timer for `at_ns` (a no-op when already armed for it).
    pub fn arm(&mut self, at_ns: u64, now_ns: u64) {
        if self.armed == Some(at_ns) {
            return;
        }
        match &mut self.kind {
            Kind::Fd(fd) => {
                // Relative: the monotonic clock behind `Instant` is the
                // timerfd's clock, so only the difference matters.
                let delay = at_ns.saturating_sub(now_ns).max(1);
                let spec = Itimerspec {
                    it_interval: rustix::time::Timespec {
                        tv_sec: 0,
                        tv_nsec: 0,
                    },
                    it_value: rustix::time::Timespec {
                        tv_sec: (delay / 1_000_000_000) as i64,
                        tv_nsec: (delay % 1_000_000_000) as i64,
                    },
                };
                if timerfd_settime(fd.get_ref(), TimerfdTimerFlags::empty(), &spec).is_err() {
                    return;
                }
            }
            Kind::Coarse(sleep) => {
                // Wake a tick early; the caller yields through the rest.
                let at = self.base + Duration::from_nanos(at_ns.saturating_sub(COARSE_SPIN_NS));
                sleep.as_mut().reset(tokio::time::Instant::from_std(at));
            }
        }
        self.armed = Some(at_ns);
    }

    /// Completes when the armed deadline passes (never if disarmed). Cancel
    /// safe: dropping it early leaves the timer armed.
    pub async fn fired(&mut self) {
        if self.armed.is_none() {
            return std::future::pending().await;
        }
        match &mut self.kind {
            Kind::Fd(fd) => loop {
                let Ok(mut guard) = fd.readable().await else {
                    // The reactor failed us; treat as fired rather than hang.
                    break;
                };
                let mut expirations = [0u8; 8];
                match guard.try_io(|fd| {
                    rustix::io::read(fd.get_ref(), &mut expirations).map_err(io::Error::from)
                }) {
                    Ok(_) => {
                        // A one-shot timer is drained by one read: saves
                        // the EAGAIN read tokio would otherwise need.
                        guard.clear_ready();
                        break;
                    }
                    Err(_would_block) => continue,
                }
            },
            Kind::Coarse(sleep) => sleep.as_mut().await,
        }
        self.armed = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_at_the_deadline_and_rearms() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            lower_timer_slack();
            let base = Instant::now();
            let mut t = Timer::new(base);
            assert!(!t.is_armed());
            for delay_us in [300u64, 2_000, 50] {
                let now = base.elapsed().as_nanos() as u64;
                let at = now + delay_us * 1_000;
                t.arm(at, now);
                t.fired().await;
                // Never early; lateness is not asserted (no timing thresholds).
                assert!(base.elapsed().as_nanos() as u64 >= at.saturating_sub(t.spin_ns()));
                assert!(!t.is_armed());
            }
        });
    }
}
