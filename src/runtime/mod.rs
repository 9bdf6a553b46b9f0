//! The io_uring runtime, kept behind one small door.
//!
//! Everything shardcache needs from glommio — pinned executors, TCP
//! listeners and streams, timers, task spawning and the cross-core channel
//! mesh — is wrapped here with exactly the operations the server uses, so
//! that replacing glommio (0.9, no longer maintained upstream) touches this
//! module only. Nothing else in the crate names glommio.

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::channels::channel_mesh::{MeshBuilder, Receivers, Senders};
use glommio::net::{TcpListener, TcpStream};
use glommio::{LocalExecutorBuilder, Placement};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

/// Turns transparent huge pages off for this process. With THP the kernel
/// faulted heap memory in 2 MiB at a time: the idle node was several MiB
/// larger, each stored item cost ~4 bytes more of RSS (1M items of 64 B:
/// 109 vs 105 B/item, docs/benchmarks.md) and RSS followed `--memory` less
/// closely. Redis advises the same for the same reason. The kernel checks
/// the flag at every fault. Returns whether it took.
pub fn disable_transparent_huge_pages() -> bool {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0) passes no pointers; it
    // sets one flag on this process's memory map. Called by `main` (every
    // test that starts the binary runs it) and by `tests::thp_off` and
    // `tests::allocator_configured`.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) == 0
    }
    #[cfg(not(target_os = "linux"))]
    false
}

/// Blocks this large or larger bypass glibc's heap: each is its own
/// mapping, unmapped when freed. Connection buffers (up to `--conn-buffer`)
/// and values near `--max-value` then leave RSS the moment they are freed,
/// while the store's 64 KiB pages stay in the heap (one mapping each would
/// run into the kernel's map count on a large `--memory`).
const MMAP_THRESHOLD: usize = 256 << 10;

/// Sets up the system allocator for a long-lived node, first thing in
/// `main`: transparent huge pages off and a fixed mmap threshold. glibc
/// raises its threshold each time a mapped block is freed (up to 32 MiB),
/// after which megabyte buffers came from the heap and a burst of them
/// stayed resident in the shards' arenas. Returns whether both took.
pub fn configure_allocator() -> bool {
    let thp = disable_transparent_huge_pages();
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt takes two integers and only changes glibc malloc's
    // parameters (MT-Safe per its manual). Called by `main` and by
    // `tests::allocator_configured`.
    let mmap = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as i32) == 1 };
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let mmap = true;
    thp && mmap
}

/// Gives the allocator's free memory back to the kernel, now. glibc keeps
/// the chunks a program frees for reuse, resident; when a store's entries
/// of one size give way to another, memory the store gave back would stay
/// in RSS. `malloc_trim(0)` releases the whole pages inside every arena's
/// free chunks. It walks the heaps: call it after megabytes were freed, not
/// per request.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointer and only touches the allocator's
    // own state, under the arenas' locks (glibc documents it MT-Safe); the
    // pages it releases are free, so no live allocation is affected.
    // Exercised by `tests::released_memory_leaves_rss`.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The CPUs this process may run on (its affinity mask, as `taskset` sets
/// it), read from /proc so that no unsafe `sched_getaffinity` is needed.
pub fn allowed_cpus() -> Vec<usize> {
    let from_proc = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .map(|l| parse_cpu_list(l.trim()))
        })
        .filter(|v| !v.is_empty());
    from_proc.unwrap_or_else(|| {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        (0..n).collect()
    })
}

/// Parses a kernel CPU list such as "0-3,8,10-11".
pub fn parse_cpu_list(s: &str) -> Vec<usize> {
    let mut cpus = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let mut ends = part.splitn(2, '-').map(|x| x.trim().parse::<usize>());
        match (ends.next(), ends.next()) {
            (Some(Ok(a)), None) => cpus.push(a),
            (Some(Ok(a)), Some(Ok(b))) if a <= b && b - a < 65_536 => cpus.extend(a..=b),
            _ => return Vec::new(),
        }
    }
    cpus
}

/// glommio registers buffers with io_uring, which may need locked memory
/// (kernels before 5.12 charge io_uring to RLIMIT_MEMLOCK). Raise the soft
/// limit to the hard limit; report, for the operator, when the result is
/// below what `shards` executors need. Whether that is fatal shows when the
/// executors start (see [`MEMLOCK_HINT`]).
pub fn raise_memlock(shards: usize) -> Result<u64, String> {
    use rlimit::Resource;
    let needed = shards as u64 * MEMLOCK_PER_SHARD;
    let (soft, hard) = Resource::MEMLOCK
        .get()
        .map_err(|e| format!("cannot read RLIMIT_MEMLOCK: {e}"))?;
    let limit = if soft < hard {
        match Resource::MEMLOCK.set(hard, hard) {
            Ok(()) => hard,
            Err(_) => soft,
        }
    } else {
        soft
    };
    if limit < needed {
        Err(format!(
            "RLIMIT_MEMLOCK is {limit} bytes but {shards} shards may lock up to {needed}; {MEMLOCK_HINT}"
        ))
    } else {
        Ok(limit)
    }
}

/// Locked memory one executor may register: its I/O buffer pool and rings.
const MEMLOCK_PER_SHARD: u64 = 512 << 10;

/// What an operator should change when io_uring cannot lock memory.
pub const MEMLOCK_HINT: &str = "raise the locked-memory limit: `ulimit -l unlimited` in the \
starting shell, or `LimitMEMLOCK=infinity` in the systemd unit";

/// A handle on one shard's executor thread.
pub struct ShardThread(glommio::ExecutorJoinHandle<()>);

impl ShardThread {
    pub fn join(self) -> Result<(), String> {
        self.0.join().map_err(|e| e.to_string())
    }
}

/// How long a shard runs tasks before it looks at I/O and timers again:
/// a connection that floods the shard yields to the others after this.
const PREEMPT_SLICE: Duration = Duration::from_micros(500);

/// Starts one executor on its own thread pinned to `cpu`, and runs the
/// future made by `make` on it. `spin` is how long the executor spins before
/// parking in the kernel when it runs out of work.
pub fn spawn_shard<G, F>(name: &str, cpu: usize, spin: Duration, make: G) -> io::Result<ShardThread>
where
    G: FnOnce() -> F + Send + 'static,
    F: Future<Output = ()> + 'static,
{
    let mut builder = LocalExecutorBuilder::new(Placement::Fixed(cpu))
        .name(name)
        // We do no file I/O: keep the registered (locked) buffer pool small.
        .io_memory(256 << 10)
        .preempt_timer(PREEMPT_SLICE);
    if !spin.is_zero() {
        builder = builder.spin_before_park(spin);
    }
    builder.spawn(make).map(ShardThread).map_err(|e| {
        let text = e.to_string();
        let lower = text.to_lowercase();
        if lower.contains("memory") || lower.contains("memlock") || lower.contains("enomem") {
            io::Error::other(format!(
                "{text} (io_uring could not lock memory: {MEMLOCK_HINT})"
            ))
        } else {
            io::Error::other(text)
        }
    })
}

/// Busy fraction at which an adaptive shard starts spinning before it
/// parks, and below which it stops (hysteresis, so that a load near the
/// line does not flip it every tick).
const SPIN_ON_BUSY: f64 = 0.5;
const SPIN_OFF_BUSY: f64 = 0.3;

/// Whether a shard that was (`spinning`) or was not spinning should spin,
/// given the fraction of the last interval it spent working.
pub fn spin_wanted(spinning: bool, busy: f64) -> bool {
    busy >= SPIN_ON_BUSY || (spinning && busy >= SPIN_OFF_BUSY)
}

/// The adaptive spin-before-park of one shard (`--spin-before-park auto`
/// with several shards). Spinning saves the wake-up of a parked shard
/// (~30 µs of latency here, and CPU for the kernel's sleep and wake) on
/// each cross-core hand-off and each request, but a shard that spins after
/// every piece of work at a moderate rate never parks: a fixed 100 µs spin
/// made 10k Gets/s cost 1.39 cores on two shards. So the shard spins only
/// while it is busy anyway: [`SpinGovernor::tick`], called every few tens of
/// milliseconds, measures the executor's working time (glommio counts it
/// without the spin and the sleep) over the interval and switches the spin
/// between `max` and zero by [`spin_wanted`].
pub struct SpinGovernor {
    max: Duration,
    spinning: bool,
    since: std::time::Instant,
}

impl SpinGovernor {
    /// Starts not spinning. Call on the shard's executor.
    pub fn new(max: Duration) -> SpinGovernor {
        glommio::executor().set_spin_before_park(Duration::ZERO);
        let _ = glommio::executor().executor_stats(); // resets the counters
        SpinGovernor {
            max,
            spinning: false,
            since: std::time::Instant::now(),
        }
    }

    /// Re-decides from the time worked since the last call; returns whether
    /// the shard now spins.
    pub fn tick(&mut self) -> bool {
        let now = std::time::Instant::now();
        let wall = now.duration_since(self.since);
        self.since = now;
        let worked = glommio::executor().executor_stats().total_runtime();
        let busy = worked.as_secs_f64() / wall.as_secs_f64().max(1e-6);
        let want = spin_wanted(self.spinning, busy);
        if want != self.spinning {
            self.spinning = want;
            let spin = if want { self.max } else { Duration::ZERO };
            glommio::executor().set_spin_before_park(spin);
        }
        self.spinning
    }
}

/// Runs a task on the current shard; it lives on after the handle is dropped.
/// It starts at the executor's next turn, never inside the caller (glommio
/// would poll it at once, while the caller may still hold borrows the task
/// needs).
pub fn spawn<F: Future<Output = ()> + 'static>(fut: F) {
    glommio::spawn_local(async move {
        futures_lite::future::yield_now().await;
        fut.await
    })
    .detach();
}

/// Lets other tasks of this shard run if this one has had the CPU long enough.
pub async fn yield_if_needed() {
    glommio::yield_if_needed().await
}

pub async fn sleep(d: Duration) {
    glommio::timer::sleep(d).await
}

/// Completes at `deadline`; never, when there is none (for selects whose
/// timer arm is optional).
pub async fn sleep_until(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(d) => sleep(d.saturating_duration_since(std::time::Instant::now())).await,
        None => futures_lite::future::pending().await,
    }
}

/// A listening socket with SO_REUSEPORT: every shard binds the same address
/// and the kernel spreads connections over them.
pub struct Listener(TcpListener);

impl Listener {
    pub fn bind(addr: SocketAddr) -> io::Result<Listener> {
        TcpListener::bind(addr)
            .map(Listener)
            .map_err(|e| io::Error::other(e.to_string()))
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0
            .local_addr()
            .map_err(|e| io::Error::other(e.to_string()))
    }

    pub async fn accept(&self) -> io::Result<Stream> {
        let s = self
            .0
            .accept()
            .await
            .map_err(|e| io::Error::other(e.to_string()))?;
        Ok(Stream(s))
    }
}

/// One TCP connection. Reads are cancellation-safe: a read future dropped
/// before completion loses no bytes (glommio tries a non-blocking recv at
/// poll time and otherwise only waits for readiness).
pub struct Stream(TcpStream);

impl Stream {
    /// Connects to `addr`, giving up after `timeout` (a blackholed address
    /// would otherwise take the kernel's minutes).
    pub async fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<Stream> {
        TcpStream::connect_timeout(addr, timeout.max(Duration::from_millis(1)))
            .await
            .map(Stream)
            .map_err(|e| match e {
                glommio::GlommioError::IoError(e) => e,
                other => io::Error::other(other.to_string()),
            })
    }

    /// A write that makes no progress for this long fails (TimedOut), so
    /// a stalled peer cannot hold a writer forever.
    pub fn set_write_timeout(&self, timeout: Duration) -> io::Result<()> {
        self.0
            .set_write_timeout(Some(timeout.max(Duration::from_millis(1))))
            .map_err(|e| io::Error::other(e.to_string()))
    }

    /// Sent data left unacknowledged this long makes the kernel drop the
    /// connection (`TCP_USER_TIMEOUT`): reads and writes fail with
    /// ETIMEDOUT. Detects a peer behind a silent partition.
    pub fn set_unacked_timeout(&self, timeout: Duration) -> io::Result<()> {
        self.0
            .set_tcp_user_timeout(Some(timeout.max(Duration::from_millis(1))))
            .map_err(|e| io::Error::other(e.to_string()))
    }

    pub fn set_nodelay(&self) -> io::Result<()> {
        self.0
            .set_nodelay(true)
            .map_err(|e| io::Error::other(e.to_string()))
    }

    pub async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf).await
    }

    pub async fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.0.write_all(buf).await
    }

    pub async fn shutdown_write(&mut self) -> io::Result<()> {
        self.0.close().await
    }
}

/// Reserves `addr` for the shards before any of them listens, so that port 0
/// resolves to one port for all of them: a bound, not listening SO_REUSEPORT
/// socket holds the port without taking connections. Drop it once every
/// shard has bound.
pub fn reserve_port(addr: SocketAddr) -> io::Result<(socket2::Socket, SocketAddr)> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    sock.set_reuse_port(true)?;
    sock.bind(&addr.into())?;
    let local = sock
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("bound address is not an IP address"))?;
    Ok((sock, local))
}

/// The all-to-all channel mesh between shards. Build one before starting
/// the shards and give each shard a clone; each joins from its own executor.
pub struct Mesh<T: Send + 'static>(MeshBuilder<T, glommio::channels::channel_mesh::Full>);

impl<T: Send + 'static> Clone for Mesh<T> {
    fn clone(&self) -> Self {
        Mesh(self.0.clone())
    }
}

impl<T: Send + 'static> Mesh<T> {
    pub fn new(shards: usize, capacity: usize) -> Self {
        Mesh(MeshBuilder::full(shards, capacity))
    }

    /// Joins from the calling shard's executor; returns once every shard
    /// joined. The shard's index in the mesh is `MeshSender::shard_id`.
    pub async fn join(self) -> io::Result<(MeshSender<T>, MeshReceiver<T>)> {
        let (s, r) = self
            .0
            .join()
            .await
            .map_err(|_| io::Error::other("joining the cross-core channel mesh failed"))?;
        Ok((MeshSender(s), MeshReceiver(r)))
    }
}

/// This shard's sending ends towards every other shard.
pub struct MeshSender<T: Send>(Senders<T>);

impl<T: Send> MeshSender<T> {
    pub fn shard_id(&self) -> usize {
        self.0.peer_id()
    }

    /// Waits while the channel to `to` is full. Fails when the peer has gone
    /// away (or `to` is not a peer); the message is returned when it can be.
    pub async fn send(&self, to: usize, msg: T) -> Result<(), Option<T>> {
        self.0.send_to(to, msg).await.map_err(|e| match e {
            glommio::GlommioError::Closed(glommio::ResourceType::Channel(m))
            | glommio::GlommioError::WouldBlock(glommio::ResourceType::Channel(m)) => Some(m),
            _ => None,
        })
    }
}

/// This shard's receiving ends from every other shard.
pub struct MeshReceiver<T: Send>(Receivers<T>);

/// The receiving end from one peer shard.
pub struct PeerReceiver<T: Send>(glommio::channels::shared_channel::ConnectedReceiver<T>);

impl<T: Send> PeerReceiver<T> {
    /// The next message, or None once the peer closed its end.
    pub async fn recv(&self) -> Option<T> {
        self.0.recv().await
    }
}

impl<T: Send> MeshReceiver<T> {
    /// One receiver per peer shard, with that peer's index.
    pub fn into_peers(mut self) -> Vec<(usize, PeerReceiver<T>)> {
        self.0
            .streams()
            .into_iter()
            .map(|(i, r)| (i, PeerReceiver(r)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thp_off() {
        assert!(disable_transparent_huge_pages());
        // The kernel reports the flag back (PR_GET_THP_DISABLE).
        // SAFETY: no pointers; reads one flag of this process.
        let on = unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) };
        assert_eq!(on, 1);
    }

    /// With the threshold fixed, a block above it stays a mapping of its
    /// own even after a larger mapped block was freed (glibc's dynamic
    /// threshold would have risen to 4 MiB and served it from the heap).
    /// A mapped block's data starts 16 bytes into a page; a heap block
    /// lands there by chance once in 256.
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn allocator_configured() {
        assert!(configure_allocator());
        drop(std::hint::black_box(vec![1u8; 4 << 20]));
        let big = std::hint::black_box(vec![2u8; MMAP_THRESHOLD * 2]);
        assert_eq!(big.as_ptr() as usize % 4096, 16, "not a mapping of its own");
        release_free_memory();
    }

    #[test]
    fn spin_follows_load_with_hysteresis() {
        assert!(!spin_wanted(false, 0.0));
        assert!(!spin_wanted(false, 0.45));
        assert!(spin_wanted(false, 0.6));
        assert!(spin_wanted(true, 0.45));
        assert!(!spin_wanted(true, 0.1));
    }

    /// A governor on a real executor: idle, it turns the spin off; made
    /// busy (a task that works without yielding to I/O), it turns it on.
    #[test]
    fn governor_tracks_the_executor() {
        let t = spawn_shard("gov-test", 0, Duration::ZERO, || async {
            let mut g = SpinGovernor::new(Duration::from_micros(100));
            sleep(Duration::from_millis(30)).await;
            assert!(!g.tick(), "idle executor spins");
            let start = std::time::Instant::now();
            while start.elapsed() < Duration::from_millis(30) {
                std::hint::black_box(0u64);
            }
            // glommio adds a turn's working time when the turn ends.
            sleep(Duration::from_millis(1)).await;
            assert!(g.tick(), "busy executor does not spin");
            sleep(Duration::from_millis(30)).await;
            assert!(!g.tick(), "idle again, still spinning");
        })
        .unwrap();
        t.join().unwrap();
    }

    /// Preemption is a clock deadline in the vendored glommio (no io_uring
    /// timer per turn): a task that works and only calls `yield_if_needed`
    /// must still give way, so that a timer and a socket's bytes reach the
    /// tasks waiting on them while it runs.
    #[test]
    fn busy_task_yields_to_timers_and_io() {
        use std::cell::Cell;
        use std::rc::Rc;
        let t = spawn_shard("preempt-test", 0, Duration::ZERO, || async {
            let listener = Listener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
            let addr = listener.local_addr().unwrap();
            let timer_fired = Rc::new(Cell::new(false));
            let bytes_read = Rc::new(Cell::new(0usize));
            let fired = timer_fired.clone();
            spawn(async move {
                sleep(Duration::from_millis(5)).await;
                fired.set(true);
            });
            let read = bytes_read.clone();
            spawn(async move {
                let mut server = listener.accept().await.unwrap();
                let mut buf = [0u8; 16];
                let n = server.read(&mut buf).await.unwrap();
                read.set(n);
            });
            // The peer writes from another thread, so the bytes arrive
            // while this shard is busy.
            let writer = std::thread::spawn(move || {
                use std::io::Write;
                let mut s = std::net::TcpStream::connect(addr).unwrap();
                s.write_all(b"hello").unwrap();
                std::thread::sleep(Duration::from_millis(500));
            });
            let start = std::time::Instant::now();
            while !(timer_fired.get() && bytes_read.get() > 0)
                && start.elapsed() < Duration::from_secs(10)
            {
                std::hint::black_box(0u64);
                yield_if_needed().await;
            }
            assert!(timer_fired.get(), "a busy task starved the timer");
            assert_eq!(bytes_read.get(), 5, "a busy task starved the socket");
            writer.join().unwrap();
        })
        .unwrap();
        t.join().unwrap();
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0"), vec![0]);
        assert_eq!(parse_cpu_list("0-3,8,10-11"), vec![0, 1, 2, 3, 8, 10, 11]);
        assert_eq!(parse_cpu_list("3-1"), Vec::<usize>::new());
        assert_eq!(parse_cpu_list("x"), Vec::<usize>::new());
        assert!(!allowed_cpus().is_empty());
    }

    fn resident() -> Option<u64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let kib = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
        Some(kib.split_whitespace().next()?.parse::<u64>().ok()? * 1024)
    }

    /// 64 MiB in heap-sized blocks, freed but for the last (which keeps
    /// the heap's top from being trimmed by `free` itself): only
    /// `release_free_memory` gives the freed pages back.
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn released_memory_leaves_rss() {
        let mut blocks: Vec<Vec<u8>> = (0..1024).map(|i| vec![i as u8; 64 << 10]).collect();
        let last = blocks.pop();
        let Some(full) = resident() else { return };
        drop(blocks);
        release_free_memory();
        let trimmed = resident().unwrap_or(full);
        assert!(
            full.saturating_sub(trimmed) >= 32 << 20,
            "RSS {full} -> {trimmed} after freeing 64 MiB"
        );
        drop(last);
    }
}
