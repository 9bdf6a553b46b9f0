//! Running a load test: one OS thread per `--threads`, each with a tokio
//! current-thread runtime driving its share of the connections (connection
//! `i` lives on thread `i % threads` and talks to target `i % targets`).
//!
//! Phases, separated by a gate all threads pass together: connect (and
//! `--preload`), then the measured run, which starts at one instant shared by
//! every thread so that the open-loop schedules interleave exactly.
//!
//! Each connection is one task running [`ConnTask::drive`]: read whatever
//! arrived, feed it to the HTTP/2 state machine, record completions, issue
//! as many new requests as the mode allows, and write them in one batch.
//! A lost connection fails its in-flight requests with a transport error
//! and is re-established with exponential backoff for the rest of the run.

use crate::cli::{Args, HeaderStyle};
use crate::grpc::{self, Call, Op};
use crate::h2::{frame, ClientConn, StreamEnd};
use crate::progress::{Live, LiveBuf, PHASE_RUN};
use crate::schedule::Pacer;
use crate::stats::{PreloadReport, Report, Stats, TransportError};
use crate::timer::{self, Timer};
use crate::workload::{value_pattern, KeySampler, Workload, WorkloadSpec};
use bytes::{Buf, BytesMut};
use shardcache::protocol::http2::hpack::HeaderField;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::LocalSet;

/// Bytes asked of the kernel per read: big reads amortise the syscall over
/// many responses.
const READ_CHUNK: usize = 256 << 10;
const BACKOFF_MIN: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
const PRELOAD_GRACE: Duration = Duration::from_secs(10);
/// Open-loop sends per second on one thread from which its connections
/// busy-poll rather than sleep between sends (a send every 50 µs or less).
const BUSY_POLL_RATE: f64 = 20_000.0;
/// How far ahead a busy-polling connection still yields rather than sleeps.
const BUSY_POLL_WINDOW_NS: u64 = 2_000_000;
/// Sent as `user-agent` in the nghttp2 header style.
const USER_AGENT: &str = concat!("shardcache-loadtest/", env!("CARGO_PKG_VERSION"));

/// A gRPC request's header fields as `style` codes them, and how many of
/// the array it sends. Indexed fields become one-byte table references
/// after the first request; nghttp2 (and so h2load) never indexes `:path`,
/// so a server decodes it, Huffman-coded, on every request.
pub fn request_fields<'a>(
    style: HeaderStyle,
    path: &'a [u8],
    authority: &'a [u8],
) -> ([HeaderField<'a>; 7], usize) {
    let nghttp2 = style == HeaderStyle::Nghttp2;
    let field =
        |name: &'static [u8], value: &'a [u8], index: bool| HeaderField { name, value, index };
    let fields = [
        field(b":method", b"POST", true),
        field(b":scheme", b"http", true),
        field(b":path", path, !nghttp2),
        field(b":authority", authority, true),
        field(b"content-type", b"application/grpc", true),
        field(b"te", b"trailers", true),
        field(b"user-agent", USER_AGENT.as_bytes(), true),
    ];
    (fields, if nghttp2 { 7 } else { 6 })
}

/// One server to load.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    /// HOST:PORT as given, sent as `:authority`.
    pub authority: Arc<str>,
}

/// Everything a run needs, derived from the flags.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub targets: Vec<Target>,
    pub threads: usize,
    pub connections: usize,
    pub inflight: usize,
    pub rate: Option<f64>,
    pub duration: Option<Duration>,
    pub requests: Option<u64>,
    pub warmup: Duration,
    pub grace: Duration,
    pub connect_timeout: Duration,
    pub give_up: Duration,
    pub preload: bool,
    pub seed: u64,
    pub headers: HeaderStyle,
    pub workload: Arc<WorkloadSpec>,
}

impl RunConfig {
    /// The report of a run of this configuration.
    pub fn report(
        &self,
        mode: &'static str,
        stats: Stats,
        preload: Option<PreloadReport>,
        duration_s: f64,
    ) -> Report {
        Report {
            mode,
            connections: self.connections,
            inflight: self.inflight,
            rate: self.rate,
            threads: self.threads,
            targets: self
                .targets
                .iter()
                .map(|t| t.authority.to_string())
                .collect(),
            warmup_s: self.warmup.as_secs_f64(),
            duration_s,
            stats,
            preload,
            batch: 1,
        }
    }

    /// Resolves the targets and builds the workload from validated flags.
    pub fn from_args(a: &Args) -> Result<RunConfig, String> {
        let mut targets = Vec::new();
        for t in &a.targets {
            let addr = t
                .to_socket_addrs()
                .map_err(|e| format!("cannot resolve target {t}: {e}"))?
                .next()
                .ok_or_else(|| format!("target {t} resolves to no address"))?;
            targets.push(Target {
                addr,
                authority: Arc::from(t.as_str()),
            });
        }
        let seed = a.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0)
        });
        Ok(RunConfig {
            targets,
            threads: a.threads,
            connections: a.connections,
            inflight: a.effective_inflight(),
            rate: a.rate,
            duration: a.effective_duration(),
            requests: a.requests,
            warmup: a.warmup,
            grace: a.grace,
            connect_timeout: a.connect_timeout,
            give_up: a.give_up,
            preload: a.preload,
            seed,
            headers: a.headers,
            workload: Arc::new(WorkloadSpec {
                keys: KeySampler::new(a.keys, a.zipf)?,
                key_count: a.keys,
                key_size: a.key_size,
                get_ratio: a.get_ratio,
                value_size: a.value_size,
                values: value_pattern(a.value_size.max),
                group: a.group.clone(),
                ttl_ms: a.ttl_ms,
            }),
        })
    }
}

/// The phase gate: threads arrive after preload; the main thread then
/// publishes the common start instant and releases them.
#[derive(Default)]
struct Gate {
    state: Mutex<(usize, Option<u64>)>,
    cv: Condvar,
}

impl Gate {
    fn lock(&self) -> std::sync::MutexGuard<'_, (usize, Option<u64>)> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn arrive(&self) {
        self.lock().0 += 1;
        self.cv.notify_all();
    }
    fn wait_arrivals(&self, n: usize) {
        let mut g = self.lock();
        while g.0 < n {
            g = self.cv.wait(g).unwrap_or_else(|e| e.into_inner());
        }
    }
    fn release(&self, start_ns: u64) {
        self.lock().1 = Some(start_ns);
        self.cv.notify_all();
    }
    fn wait_release(&self) -> u64 {
        let mut g = self.lock();
        loop {
            if let Some(s) = g.1 {
                return s;
            }
            g = self.cv.wait(g).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// Arrives at the gate when dropped unless it already did, so a thread that
/// fails early never leaves the others waiting.
struct Arrival<'a> {
    gate: &'a Gate,
    done: bool,
}

impl Arrival<'_> {
    fn arrive(&mut self) {
        if !self.done {
            self.done = true;
            self.gate.arrive();
        }
    }
}

impl Drop for Arrival<'_> {
    fn drop(&mut self) {
        self.arrive();
    }
}

#[derive(Default)]
struct ThreadResult {
    stats: Stats,
    preload: Stats,
    end_ns: u64,
}

/// Runs the whole test and returns the merged report.
pub fn run(cfg: Arc<RunConfig>, live: Option<Arc<Live>>, base: Instant) -> Report {
    let gate = Arc::new(Gate::default());
    let mut handles = Vec::new();
    let mut spawn_error = None;
    for t in 0..cfg.threads {
        let (cfg, gate, live) = (cfg.clone(), gate.clone(), live.clone());
        match std::thread::Builder::new()
            .name(format!("load-{t}"))
            .spawn(move || thread_main(t, cfg, base, &gate, live))
        {
            Ok(h) => handles.push(h),
            Err(e) => spawn_error = Some(format!("could not start load thread {t}: {e}")),
        }
    }
    gate.wait_arrivals(handles.len());
    let start_ns = base.elapsed().as_nanos() as u64;
    let preload_s = start_ns as f64 / 1e9;
    if let Some(l) = &live {
        l.start_ns
            .store(start_ns, std::sync::atomic::Ordering::Relaxed);
        l.phase
            .store(PHASE_RUN, std::sync::atomic::Ordering::Relaxed);
    }
    gate.release(start_ns);

    let measure_start = start_ns + cfg.warmup.as_nanos() as u64;
    let mut stats = Stats::new();
    let mut preload = Stats::new();
    let mut end_ns = measure_start;
    if let Some(e) = spawn_error {
        stats.note_error(|| e);
    }
    for h in handles {
        match h.join() {
            Ok(r) => {
                stats.merge(&r.stats);
                preload.merge(&r.preload);
                end_ns = end_ns.max(r.end_ns);
            }
            Err(_) => stats.note_error(|| "a load thread panicked".into()),
        }
    }
    let mode = if cfg.rate.is_some() { "open" } else { "closed" };
    let preload = cfg.preload.then_some(PreloadReport {
        stats: preload,
        duration_s: preload_s,
    });
    cfg.report(mode, stats, preload, (end_ns - measure_start) as f64 / 1e9)
}

fn thread_main(
    tid: usize,
    cfg: Arc<RunConfig>,
    base: Instant,
    gate: &Gate,
    live: Option<Arc<Live>>,
) -> ThreadResult {
    let mut arrival = Arrival { gate, done: false };
    timer::lower_timer_slack();
    let mut result = ThreadResult::default();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            result
                .stats
                .note_error(|| format!("cannot start a runtime: {e}"));
            return result;
        }
    };
    let local = LocalSet::new();
    let tasks: Vec<ConnTask> = (tid..cfg.connections)
        .step_by(cfg.threads)
        .map(|i| ConnTask::new(i, cfg.clone(), base, live.clone()))
        .collect();
    let tasks = local.block_on(&rt, run_all(tasks, |t| t.prepare()));
    arrival.arrive();
    let start_ns = gate.wait_release();
    let tasks = local.block_on(&rt, run_all(tasks, move |t| t.measure(start_ns)));
    for t in tasks {
        result.stats.merge(&t.stats);
        result.preload.merge(&t.preload_stats);
        result.end_ns = result.end_ns.max(t.end_ns);
    }
    result
}

/// Runs `f` on every task concurrently on this thread; returns the tasks
/// that did not panic.
async fn run_all<F, Fut>(tasks: Vec<ConnTask>, f: F) -> Vec<ConnTask>
where
    F: Fn(ConnTask) -> Fut,
    Fut: std::future::Future<Output = ConnTask> + 'static,
{
    let handles: Vec<_> = tasks
        .into_iter()
        .map(|t| tokio::task::spawn_local(f(t)))
        .collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        if let Ok(t) = h.await {
            out.push(t);
        }
    }
    out
}

/// What a connection still has to send.
#[derive(Debug)]
enum Plan {
    /// Set keys `next_key`, `next_key + stride`, ... below `key_count`.
    Preload {
        next_key: u64,
        stride: u64,
        key_count: u64,
        inflight: usize,
    },
    /// Keep `inflight` outstanding; `remaining` measured requests to send
    /// (None: unbounded); stop issuing at `stop_ns`.
    Closed {
        inflight: usize,
        remaining: Option<u64>,
        warm_end_ns: u64,
        stop_ns: Option<u64>,
    },
    /// Follow the schedule, with at most `cap` outstanding.
    Open { pacer: Pacer, cap: usize },
}

impl Plan {
    /// Nothing more to issue.
    fn exhausted(&self, now: u64) -> bool {
        match self {
            Plan::Preload {
                next_key,
                key_count,
                ..
            } => next_key >= key_count,
            Plan::Closed {
                remaining, stop_ns, ..
            } => *remaining == Some(0) || stop_ns.is_some_and(|s| now >= s),
            Plan::Open { pacer, .. } => pacer.is_done() || now >= pacer.end_time(),
        }
    }

    /// When the plan ends by the clock, if it does.
    fn deadline(&self) -> Option<u64> {
        match self {
            Plan::Preload { .. } => None,
            Plan::Closed { stop_ns, .. } => *stop_ns,
            Plan::Open { pacer, .. } => Some(pacer.end_time()),
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum DriveEnd {
    /// The plan is complete; the connection stays usable.
    Done,
    /// The connection failed; its in-flight requests were counted.
    Lost,
    /// GOAWAY or stream ids used up, and drained: open a new connection.
    Retired,
}

struct Session {
    stream: TcpStream,
    h2: ClientConn<Call>,
    inbuf: BytesMut,
    /// `ConnTask::completions` when this session started.
    completions_at_start: u64,
}

/// One connection's whole life: its workload, its stats, its session.
struct ConnTask {
    cfg: Arc<RunConfig>,
    base: Instant,
    idx: usize,
    target: Target,
    session: Option<Session>,
    work: Workload,
    stats: Stats,
    preload_stats: Stats,
    live: Option<LiveBuf>,
    completions: u64,
    end_ns: u64,
    /// Open loop with many sends per second on this thread: yield between
    /// sends instead of arming a timer for each (the thread is busy anyway,
    /// and a timer syscall per send would cost more than the sends).
    busy_poll: bool,
}

fn io_kind(e: &io::Error) -> TransportError {
    match e.kind() {
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => TransportError::ConnectionReset,
        io::ErrorKind::UnexpectedEof => TransportError::ConnectionClosed,
        _ => TransportError::Io,
    }
}

fn reset_kind(code: u32) -> TransportError {
    if code == frame::REFUSED_STREAM {
        TransportError::RefusedStream
    } else {
        TransportError::StreamReset
    }
}

/// Writes as much queued output as the socket takes without blocking.
fn flush(sess: &mut Session) -> io::Result<()> {
    loop {
        let out = sess.h2.out();
        if out.is_empty() {
            return Ok(());
        }
        match sess.stream.try_write(out) {
            Ok(n) => out.advance(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

impl ConnTask {
    fn new(idx: usize, cfg: Arc<RunConfig>, base: Instant, live: Option<Arc<Live>>) -> ConnTask {
        let target = cfg.targets[idx % cfg.targets.len()].clone();
        // Distinct, reproducible streams per connection.
        let seed = cfg.seed ^ (idx as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        ConnTask {
            work: Workload::new(cfg.workload.clone(), seed),
            cfg,
            base,
            idx,
            target,
            session: None,
            stats: Stats::new(),
            preload_stats: Stats::new(),
            live: live.map(LiveBuf::new),
            completions: 0,
            end_ns: 0,
            busy_poll: false,
        }
    }

    #[inline]
    fn now(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }

    fn instant(&self, ns: u64) -> tokio::time::Instant {
        tokio::time::Instant::from_std(self.base + Duration::from_nanos(ns))
    }

    /// Phase 1: connect, and preload this connection's share of the keys.
    async fn prepare(mut self) -> ConnTask {
        if self.cfg.preload {
            let mut plan = Plan::Preload {
                next_key: self.idx as u64,
                stride: self.cfg.connections as u64,
                key_count: self.cfg.workload.key_count,
                inflight: self.cfg.inflight,
            };
            self.run_plan(&mut plan).await;
        } else {
            match self.connect(self.cfg.connect_timeout).await {
                Ok(s) => self.session = Some(s),
                Err(e) => self.connect_failed(&e),
            }
        }
        self.flush_live(true);
        self
    }

    /// Phase 2: the measured run (with warm-up), starting at `start_ns`.
    async fn measure(mut self, start_ns: u64) -> ConnTask {
        let cfg = self.cfg.clone();
        let warm_end_ns = start_ns + cfg.warmup.as_nanos() as u64;
        if let Some(rate) = cfg.rate {
            let on_this_thread = (self.idx % cfg.threads..cfg.connections)
                .step_by(cfg.threads)
                .count();
            self.busy_poll =
                rate * on_this_thread as f64 / cfg.connections as f64 >= BUSY_POLL_RATE;
        }
        let mut plan = match cfg.rate {
            Some(rate) => Plan::Open {
                pacer: Pacer::new(
                    start_ns,
                    rate,
                    self.idx,
                    cfg.connections,
                    cfg.warmup,
                    cfg.duration,
                    cfg.requests,
                ),
                cap: cfg.inflight,
            },
            None => Plan::Closed {
                inflight: cfg.inflight,
                // An even split of --requests over the connections.
                remaining: cfg.requests.map(|n| {
                    let c = cfg.connections as u64;
                    n / c + ((self.idx as u64) < n % c) as u64
                }),
                warm_end_ns,
                stop_ns: cfg.duration.map(|d| warm_end_ns + d.as_nanos() as u64),
            },
        };
        self.run_plan(&mut plan).await;
        self.end_ns = self.now();
        if let Some(mut sess) = self.session.take() {
            // Best effort: tell the server we are leaving, then close.
            sess.h2.close();
            let _ = flush(&mut sess);
        }
        self.flush_live(true);
        self
    }

    /// Works through `plan`, reconnecting as needed, until it is done (or,
    /// when the plan has no deadline, until reconnecting has failed for
    /// `--give-up`).
    async fn run_plan(&mut self, plan: &mut Plan) {
        let mut backoff = BACKOFF_MIN;
        let mut down_since: Option<u64> = None;
        loop {
            let now = self.now();
            if plan.exhausted(now) {
                if self.session.is_none() {
                    self.fail_unsent(plan, now);
                }
                self.abandon(plan);
                return;
            }
            let failed = match self.session.take() {
                None => {
                    self.fail_unsent(plan, now);
                    // Never let a hanging connect outlast the run.
                    let timeout = match plan.deadline() {
                        Some(d) => self.cfg.connect_timeout.min(Duration::from_nanos(d - now)),
                        None => self.cfg.connect_timeout,
                    };
                    match self.connect(timeout).await {
                        Ok(s) => {
                            self.session = Some(s);
                            false
                        }
                        Err(e) => {
                            self.connect_failed(&e);
                            true
                        }
                    }
                }
                Some(mut sess) => match self.drive(&mut sess, plan).await {
                    DriveEnd::Done => {
                        self.session = Some(sess);
                        return;
                    }
                    // A connection that died before answering anything is
                    // treated as a failed connect, so a server that accepts
                    // and drops at once is not hammered in a tight loop.
                    // The backoff resets only once a connection has been
                    // useful, not merely accepted.
                    end => {
                        let progressed = self.completions > sess.completions_at_start;
                        if progressed {
                            backoff = BACKOFF_MIN;
                            down_since = None;
                        }
                        end == DriveEnd::Lost && !progressed
                    }
                },
            };
            if !failed {
                continue;
            }
            let now = self.now();
            let since = *down_since.get_or_insert(now);
            let deadline = plan.deadline();
            if deadline.is_none() && now - since >= self.cfg.give_up.as_nanos() as u64 {
                self.stats.note_error(|| {
                    format!(
                        "gave up reconnecting to {} after {:?}",
                        self.target.authority, self.cfg.give_up
                    )
                });
                self.abandon(plan);
                return;
            }
            let mut wake = now + backoff.as_nanos() as u64;
            if let Some(d) = deadline {
                wake = wake.min(d);
            }
            tokio::time::sleep_until(self.instant(wake)).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    fn connect_failed(&mut self, e: &io::Error) {
        self.stats.connect_failures += 1;
        let target = &self.target.authority;
        self.stats
            .note_error(|| format!("connect to {target}: {e}"));
    }

    /// TCP connect plus the HTTP/2 handshake: our preface and SETTINGS out,
    /// the server's SETTINGS in (so its limits are known before the first
    /// request), all within `timeout`.
    async fn connect(&self, timeout: Duration) -> io::Result<Session> {
        let addr = self.target.addr;
        let completions_at_start = self.completions;
        let handshake = async move {
            let stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let mut sess = Session {
                stream,
                h2: ClientConn::with_huffman(self.cfg.headers == HeaderStyle::Nghttp2),
                inbuf: BytesMut::with_capacity(READ_CHUNK),
                completions_at_start,
            };
            loop {
                while sess.h2.has_output() {
                    let out = sess.h2.out();
                    let n = sess.stream.write(out).await?;
                    out.advance(n);
                }
                if sess.h2.is_ready() {
                    return Ok(sess);
                }
                sess.inbuf.reserve(READ_CHUNK);
                if sess.stream.read_buf(&mut sess.inbuf).await? == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed during the HTTP/2 handshake",
                    ));
                }
                let used = sess
                    .h2
                    .recv(&sess.inbuf, &mut |_, _| {})
                    .map_err(io::Error::other)?;
                sess.inbuf.advance(used);
            }
        };
        match tokio::time::timeout(timeout, handshake).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")),
        }
    }

    /// Drives one connected session until the plan is done or the session ends.
    async fn drive(&mut self, sess: &mut Session, plan: &mut Plan) -> DriveEnd {
        // Preload has no clock to keep: its last Sets get at least 10 s.
        let grace = match plan {
            Plan::Preload { .. } => self.cfg.grace.max(PRELOAD_GRACE),
            _ => self.cfg.grace,
        };
        let grace_ns = grace.as_nanos() as u64;
        let mut grace_end: Option<u64> = None;
        // A plan without a clock (preload, or a run bounded only by
        // --requests) would wait forever on a server that stops answering
        // without closing: after --give-up with requests in flight and no
        // byte received, the connection is dropped and they count as
        // `timeout`.
        let stall_ns = plan
            .deadline()
            .is_none()
            .then(|| self.cfg.give_up.as_nanos() as u64);
        let mut last_rx = self.now();
        let mut timer = Timer::new(self.base);
        loop {
            let now = match self.read(sess) {
                Ok((now, got)) => {
                    if got || sess.h2.open_streams() == 0 {
                        last_rx = now;
                    }
                    now
                }
                Err((kind, msg)) => {
                    if sess.h2.open_streams() > 0 || kind != TransportError::ConnectionClosed {
                        self.stats.note_error(|| msg);
                    }
                    self.fail_all(sess, kind);
                    return DriveEnd::Lost;
                }
            };
            self.flush_live(false);
            // Slots that came due before the end are still sent, however
            // late this loop got to them: only those that cannot be sent
            // (connection at its cap) end up unfinished.
            if matches!(plan, Plan::Open { .. }) && !sess.h2.is_retired() {
                self.issue(sess, plan, now);
            }
            let stopping = plan.exhausted(now);
            if stopping {
                self.abandon(plan);
                if sess.h2.open_streams() == 0 {
                    let _ = flush(sess);
                    return DriveEnd::Done;
                }
                let end = *grace_end.get_or_insert(now + grace_ns);
                if now >= end {
                    self.fail_all(sess, TransportError::Unfinished);
                    let _ = flush(sess);
                    return DriveEnd::Done;
                }
            } else if sess.h2.is_retired() {
                if sess.h2.open_streams() == 0 {
                    return DriveEnd::Retired;
                }
            } else if !matches!(plan, Plan::Open { .. }) {
                self.issue(sess, plan, now);
            }
            let stall_at = match stall_ns {
                Some(st) if !stopping && sess.h2.open_streams() > 0 => Some(last_rx + st),
                _ => None,
            };
            if stall_at.is_some_and(|t| now >= t) {
                self.stats.note_error(|| {
                    format!(
                        "{}: no response for {:?} with requests in flight",
                        self.target.authority, self.cfg.give_up
                    )
                });
                self.fail_all(sess, TransportError::Timeout);
                return DriveEnd::Lost;
            }
            if let Err(e) = flush(sess) {
                let kind = io_kind(&e);
                self.stats
                    .note_error(|| format!("write to {}: {e}", self.target.authority));
                self.fail_all(sess, kind);
                return DriveEnd::Lost;
            }

            // Wake up without I/O for: the next open-loop send, the end of
            // the plan, the end of the grace period, a stalled server.
            let wake = if stopping {
                grace_end
            } else {
                let next_send = match plan {
                    Plan::Open { pacer, cap }
                        if sess.h2.open_streams() < *cap && sess.h2.can_open() =>
                    {
                        pacer.next_time()
                    }
                    _ => None,
                };
                [next_send, plan.deadline(), stall_at]
                    .into_iter()
                    .flatten()
                    .min()
            };
            if let Some(w) = wake {
                let spin = if self.busy_poll && !stopping {
                    BUSY_POLL_WINDOW_NS
                } else {
                    timer.spin_ns()
                };
                if w <= now + spin {
                    // Too close to sleep: let other tasks and the reactor
                    // run, then look at the clock again.
                    tokio::task::yield_now().await;
                    continue;
                }
                timer.arm(w, self.now());
            }
            let want_write = sess.h2.has_output();
            let ready = tokio::select! {
                biased;
                r = sess.stream.readable() => r,
                r = sess.stream.writable(), if want_write => r,
                () = timer.fired(), if wake.is_some() => Ok(()),
            };
            if let Err(e) = ready {
                let kind = io_kind(&e);
                self.stats
                    .note_error(|| format!("{}: {e}", self.target.authority));
                self.fail_all(sess, kind);
                return DriveEnd::Lost;
            }
        }
    }

    /// One non-blocking read, processed. Returns the time the bytes were
    /// seen and whether any arrived.
    fn read(&mut self, sess: &mut Session) -> Result<(u64, bool), (TransportError, String)> {
        sess.inbuf.reserve(READ_CHUNK);
        match sess.stream.try_read_buf(&mut sess.inbuf) {
            Ok(0) => Err((
                TransportError::ConnectionClosed,
                format!("{} closed the connection", self.target.authority),
            )),
            Ok(_) => {
                let now = self.now();
                let res = sess
                    .h2
                    .recv(&sess.inbuf, &mut |call, end| self.complete(call, end, now));
                match res {
                    Ok(used) => {
                        sess.inbuf.advance(used);
                        Ok((now, true))
                    }
                    Err(e) => Err((
                        TransportError::Protocol,
                        format!("{}: {e}", self.target.authority),
                    )),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok((self.now(), false)),
            Err(e) => Err((
                io_kind(&e),
                format!("read from {}: {e}", self.target.authority),
            )),
        }
    }

    /// Issues what the plan allows now.
    fn issue(&mut self, sess: &mut Session, plan: &mut Plan, now: u64) {
        match plan {
            Plan::Closed {
                inflight,
                remaining,
                warm_end_ns,
                ..
            } => {
                let measured = now >= *warm_end_ns;
                while sess.h2.open_streams() < *inflight
                    && sess.h2.can_open()
                    && *remaining != Some(0)
                {
                    if measured {
                        if let Some(r) = remaining.as_mut() {
                            *r -= 1;
                        }
                    }
                    let op = self.work.next_op();
                    self.send(sess, op, None, now, measured);
                }
            }
            Plan::Open { pacer, cap } => {
                while sess.h2.open_streams() < *cap && sess.h2.can_open() {
                    let Some(slot) = pacer.next_due(now) else {
                        break;
                    };
                    let op = self.work.next_op();
                    self.send(sess, op, None, slot.start_ns, slot.measured);
                }
            }
            Plan::Preload {
                next_key,
                stride,
                key_count,
                inflight,
            } => {
                while sess.h2.open_streams() < *inflight
                    && sess.h2.can_open()
                    && *next_key < *key_count
                {
                    self.send(sess, Op::Preload, Some(*next_key), now, true);
                    *next_key += *stride;
                }
            }
        }
    }

    /// Encodes one request into the connection's output buffer.
    fn send(
        &mut self,
        sess: &mut Session,
        op: Op,
        key: Option<u64>,
        start_ns: u64,
        measured: bool,
    ) {
        if op == Op::Preload {
            self.preload_stats.sent(op);
        } else if measured {
            self.stats.sent(op);
        }
        let req = self.work.request(op, key);
        let path = if op == Op::Get {
            grpc::PATH_GET
        } else {
            grpc::PATH_SET
        };
        let (all, n) = request_fields(self.cfg.headers, path, self.target.authority.as_bytes());
        let fields = &all[..n];
        sess.h2.send_request(
            fields,
            Some(op as usize),
            grpc::framed_len(req),
            |dst| grpc::write_message(req, dst),
            Call::new(start_ns, op, measured),
        );
    }

    /// A stream ended: count it.
    fn complete(&mut self, call: Call, end: StreamEnd, now: u64) {
        self.completions += 1;
        let latency_us = now.saturating_sub(call.start_ns) / 1_000;
        if call.op == Op::Preload {
            match end {
                StreamEnd::Closed => {
                    self.preload_stats
                        .response(call.op, call.status(), None, latency_us)
                }
                StreamEnd::Reset(code) => self.preload_stats.transport_error(reset_kind(code)),
                StreamEnd::GoAway(_) => self.preload_stats.transport_error(TransportError::GoAway),
            }
            if let Some(l) = &mut self.live {
                l.preloaded();
            }
            return;
        }
        if let Some(l) = &mut self.live {
            match end {
                StreamEnd::Closed => l.response(call.status() == grpc::OK, latency_us),
                _ => l.error(),
            }
        }
        if !call.measured {
            return;
        }
        match end {
            StreamEnd::Closed => {
                self.stats
                    .response(call.op, call.status(), call.found(), latency_us)
            }
            StreamEnd::Reset(code) => self.stats.transport_error(reset_kind(code)),
            StreamEnd::GoAway(_) => self.stats.transport_error(TransportError::GoAway),
        }
    }

    /// Counts a request that never got an answer.
    fn fail_call(&mut self, call: &Call, kind: TransportError) {
        let stats = match call.op {
            Op::Preload => &mut self.preload_stats,
            _ if call.measured => &mut self.stats,
            _ => return,
        };
        stats.transport_error(kind);
        if let Some(l) = &mut self.live {
            l.error();
        }
    }

    /// Ends every in-flight request of `sess` with `kind`.
    fn fail_all(&mut self, sess: &mut Session, kind: TransportError) {
        let calls: Vec<Call> = sess.h2.drain().collect();
        for call in &calls {
            self.fail_call(call, kind);
        }
    }

    /// Open loop without a connection: slots that came due fail at once
    /// (a client without a connection fails fast).
    fn fail_unsent(&mut self, plan: &mut Plan, now: u64) {
        if let Plan::Open { pacer, .. } = plan {
            while let Some(slot) = pacer.next_due(now) {
                if slot.measured {
                    self.stats.not_sent(TransportError::NotConnected);
                    if let Some(l) = &mut self.live {
                        l.error();
                    }
                }
            }
        }
    }

    /// The run ended: open-loop slots still waiting to be sent count as
    /// unfinished.
    fn abandon(&mut self, plan: &mut Plan) {
        if let Plan::Open { pacer, .. } = plan {
            while let Some(slot) = pacer.pop() {
                if slot.measured {
                    self.stats.not_sent(TransportError::Unfinished);
                }
            }
        }
    }

    fn flush_live(&mut self, force: bool) {
        let now = self.now();
        if let Some(l) = &mut self.live {
            l.maybe_flush(now, force);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_releases_all_threads_with_one_start() {
        let gate = Arc::new(Gate::default());
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let g = gate.clone();
                std::thread::spawn(move || {
                    let mut a = Arrival {
                        gate: &g,
                        done: false,
                    };
                    a.arrive();
                    g.wait_release()
                })
            })
            .collect();
        gate.wait_arrivals(4);
        gate.release(42);
        for h in handles {
            assert_eq!(h.join().unwrap(), 42);
        }
    }

    #[test]
    fn closed_plan_ends_on_quota_or_time() {
        let p = Plan::Closed {
            inflight: 1,
            remaining: Some(0),
            warm_end_ns: 0,
            stop_ns: None,
        };
        assert!(p.exhausted(0));
        let p = Plan::Closed {
            inflight: 1,
            remaining: None,
            warm_end_ns: 0,
            stop_ns: Some(10),
        };
        assert!(!p.exhausted(9) && p.exhausted(10));
        assert_eq!(p.deadline(), Some(10));
    }
}
