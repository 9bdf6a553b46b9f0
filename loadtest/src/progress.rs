//! The live progress line: connections push small batches of counts and an
//! interval histogram into one shared [`Live`] every ~200 ms (never per
//! request), and a dedicated thread turns them into a one-line indicatif
//! spinner on stderr with the current rate, recent p99 and error count.

use crate::stats::{fmt_count, fmt_us, new_histogram};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub const PHASE_PREPARE: u8 = 0;
pub const PHASE_RUN: u8 = 1;

/// How often a connection publishes its batch.
pub const FLUSH_NS: u64 = 200_000_000;

/// Shared between the connections and the progress thread.
#[derive(Debug)]
pub struct Live {
    pub phase: AtomicU8,
    /// Start of the load (warm-up included), ns since the run's base instant.
    pub start_ns: AtomicU64,
    pub responses: AtomicU64,
    pub errors: AtomicU64,
    pub preloaded: AtomicU64,
    pub hist: Mutex<Histogram<u64>>,
}

impl Default for Live {
    fn default() -> Self {
        Live {
            phase: AtomicU8::new(PHASE_PREPARE),
            start_ns: AtomicU64::new(0),
            responses: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            preloaded: AtomicU64::new(0),
            hist: Mutex::new(new_histogram()),
        }
    }
}

/// One connection's unpublished batch.
#[derive(Debug)]
pub struct LiveBuf {
    shared: Arc<Live>,
    hist: Histogram<u64>,
    responses: u64,
    errors: u64,
    preloaded: u64,
    last_flush_ns: u64,
}

impl LiveBuf {
    pub fn new(shared: Arc<Live>) -> LiveBuf {
        LiveBuf {
            shared,
            hist: new_histogram(),
            responses: 0,
            errors: 0,
            preloaded: 0,
            last_flush_ns: 0,
        }
    }

    #[inline]
    pub fn response(&mut self, ok: bool, latency_us: u64) {
        self.responses += 1;
        self.errors += !ok as u64;
        self.hist.saturating_record(latency_us.max(1));
    }

    #[inline]
    pub fn error(&mut self) {
        self.errors += 1;
    }

    #[inline]
    pub fn preloaded(&mut self) {
        self.preloaded += 1;
    }

    /// Publishes the batch if the last one is old enough (or `force`).
    pub fn maybe_flush(&mut self, now_ns: u64, force: bool) {
        if !force && now_ns.saturating_sub(self.last_flush_ns) < FLUSH_NS {
            return;
        }
        self.last_flush_ns = now_ns;
        let s = &self.shared;
        s.responses
            .fetch_add(std::mem::take(&mut self.responses), Ordering::Relaxed);
        s.errors
            .fetch_add(std::mem::take(&mut self.errors), Ordering::Relaxed);
        s.preloaded
            .fetch_add(std::mem::take(&mut self.preloaded), Ordering::Relaxed);
        if !self.hist.is_empty() {
            let mut h = s.hist.lock().unwrap_or_else(|e| e.into_inner());
            let _ = h.add(&self.hist);
            self.hist.reset();
        }
    }
}

/// The progress thread; dropping or [`Progress::finish`] clears the line.
pub struct Progress {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Progress {
    /// Starts drawing. `keys` is the preload size (0 without preload).
    pub fn start(live: Arc<Live>, base: Instant, warmup: Duration, keys: u64) -> Progress {
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("progress".into())
            .spawn(move || draw(live, base, warmup, keys, stop2))
            .ok();
        Progress { stop, thread }
    }

    pub fn finish(mut self) {
        self.stop_thread();
    }

    fn stop_thread(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

fn draw(live: Arc<Live>, base: Instant, warmup: Duration, keys: u64, stop: Arc<AtomicBool>) {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    let tick = Duration::from_millis(250);
    // (when, responses) at the last rate computation; None until the run starts.
    let mut last: Option<(Instant, u64)> = None;
    let mut window = new_histogram();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(tick);
        if live.phase.load(Ordering::Relaxed) == PHASE_PREPARE {
            let msg = if keys > 0 {
                format!(
                    "preloading: {} / {} keys",
                    live.preloaded.load(Ordering::Relaxed),
                    keys
                )
            } else {
                "connecting".to_string()
            };
            bar.set_message(msg);
            bar.tick();
            continue;
        }
        let now = Instant::now();
        let responses = live.responses.load(Ordering::Relaxed);
        let Some((then, before)) = last else {
            // The run just started: the first rate is computed from here.
            last = Some((now, responses));
            bar.set_message("starting");
            bar.tick();
            continue;
        };
        let dt = now.duration_since(then).as_secs_f64();
        // Rate and p99 over roughly the last second.
        if dt < 1.0 {
            bar.tick();
            continue;
        }
        let rate = (responses - before) as f64 / dt;
        last = Some((now, responses));
        {
            let mut h = live.hist.lock().unwrap_or_else(|e| e.into_inner());
            window.reset();
            let _ = window.add(&*h);
            h.reset();
        }
        let p99 = if window.is_empty() {
            0
        } else {
            window.value_at_quantile(0.99)
        };
        let start = base + Duration::from_nanos(live.start_ns.load(Ordering::Relaxed));
        let elapsed = now.saturating_duration_since(start);
        bar.set_message(format!(
            "{:>6.1}s{}  {:>10} req/s  p99 {:>8}  errors {}",
            elapsed.as_secs_f64(),
            if elapsed < warmup { " (warm-up)" } else { "" },
            fmt_count(rate),
            fmt_us(p99),
            live.errors.load(Ordering::Relaxed),
        ));
        bar.tick();
    }
    bar.finish_and_clear();
}
