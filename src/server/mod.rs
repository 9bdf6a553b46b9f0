//! The node: starts one pinned executor per shard, joins them into the
//! cross-core mesh, binds every shard to the gRPC listen address and the
//! HTTP gateway address (SO_REUSEPORT) and runs each shard's accept loops,
//! cross-core sender/receiver tasks and background sweeps. Each
//! connection is a sans-IO session ([`grpc`], [`http`] for the gateway,
//! [`peer_session`], [`peer_client`]) run by the one loop in [`driver`];
//! [`lifecycle`] holds what every connection shares (limits, idleness,
//! shutdown, buffer accounting).

mod batch;
mod dispatch;
mod driver;
mod grpc;
mod http;
mod lifecycle;
mod peer_client;
mod peer_session;
mod streaming;

use crate::cluster::{self, ClusterConfig, Control, Membership, RingReceiver};
use crate::config::{ServeArgs, Spin};
use crate::groups::{GroupSpec, Groups, HttpOrigin};
use crate::protocol::http2::ServerSettings;
use crate::runtime::{self, Listener, Mesh, Stream};
use crate::shard::Notify;
use crate::shard::{Batch, InTransit, Router, Shard, ShardSettings};
use crate::systemd;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

/// Room in a request message beyond the value: key (up to 4096 bytes),
/// group and field tags.
const MESSAGE_OVERHEAD: u64 = 16 << 10;

/// Expired entries a shard reclaims per sweep tick, and how often it ticks:
/// bounded work per tick, the whole table covered over time.
const SWEEP_VISITS: usize = 2048;
const SWEEP_EVERY: Duration = Duration::from_millis(100);

/// "Not found" answers of groups' sources a shard remembers, at most.
const NEGATIVE_ENTRIES: usize = 65_536;

/// `--spin-before-park auto` with more than one shard: the spin of a busy
/// shard (runtime::SpinGovernor).
const AUTO_SPIN: Duration = Duration::from_micros(100);

/// Settings every shard applies, fixed at start-up.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub listen: SocketAddr,
    /// The HTTP gateway's address; None when `--http off`.
    pub http: Option<SocketAddr>,
    /// --shard-ports: shard i also listens on this port + i.
    pub shard_ports: Option<u16>,
    pub shards: usize,
    pub cpus: Vec<usize>,
    pub memory: u64,
    pub max_value: u64,
    /// Most items in one batch call.
    pub max_batch: usize,
    /// From --node-id; None means "the address we listen on".
    pub node_id: Option<String>,
    pub max_connections: u32,
    pub idle_timeout: Duration,
    pub header_timeout: Duration,
    /// --conn-buffer, resolved.
    pub conn_buffer: u64,
    /// --node-buffer, resolved.
    pub node_buffer: u64,
    /// How long an idle shard spins before it parks: fixed, or at most,
    /// when `spin_adaptive` (see `runtime::SpinGovernor`).
    pub spin_before_park: Duration,
    pub spin_adaptive: bool,
    pub shutdown_timeout: Duration,
    /// Longest a forwarded call waits for its owner node without a client deadline.
    pub peer_timeout: Duration,
    /// From --advertise; None means "the address we listen on".
    pub advertise: Option<SocketAddr>,
    pub peers: Vec<SocketAddr>,
    pub etcd: Vec<String>,
    pub etcd_prefix: String,
    pub lease_ttl: Duration,
    pub vnodes: u32,
    pub hot_fraction: f64,
    pub hot_ttl: Duration,
    pub groups: Vec<crate::config::GroupConfig>,
}

impl NodeConfig {
    pub fn from_args(args: &ServeArgs) -> NodeConfig {
        let cpus = runtime::allowed_cpus();
        let shards = args.shard_count(cpus.len());
        NodeConfig {
            listen: args.listen,
            http: args.http.addr(),
            shard_ports: args.shard_ports.0,
            shards,
            cpus,
            memory: args.memory,
            max_value: args.max_value,
            max_batch: args.max_batch as usize,
            node_id: args.node_id.clone(),
            max_connections: args.max_connections,
            idle_timeout: args.idle_timeout,
            header_timeout: args.header_timeout,
            conn_buffer: args
                .conn_buffer
                .0
                .unwrap_or(2 * args.max_value.saturating_add(MESSAGE_OVERHEAD)),
            node_buffer: args
                .node_buffer
                .0
                .unwrap_or((args.memory / 4).max(64 << 20)),
            spin_before_park: match args.spin_before_park {
                Spin::For(d) => d,
                Spin::Auto if shards > 1 => AUTO_SPIN,
                Spin::Auto => Duration::ZERO,
            },
            spin_adaptive: matches!(args.spin_before_park, Spin::Auto) && shards > 1,
            shutdown_timeout: args.shutdown_timeout,
            peer_timeout: args.peer_timeout,
            advertise: args.advertise,
            peers: args.peers.clone(),
            etcd: args.etcd.clone(),
            etcd_prefix: args.etcd_prefix.clone(),
            lease_ttl: args.lease_ttl,
            vnodes: args.vnodes,
            hot_fraction: args.hot_fraction,
            hot_ttl: args.hot_ttl,
            groups: args.groups.clone(),
        }
    }

    /// One shard's budgets: (main store, hot store). A node alone has no
    /// other node's keys to keep copies of: all goes to the main store.
    pub fn shard_budgets(&self) -> (u64, u64) {
        let per_shard = self.memory / self.shards.max(1) as u64;
        if self.membership() == Membership::Alone {
            return (per_shard, 0);
        }
        let hot = (per_shard as f64 * self.hot_fraction) as u64;
        (per_shard - hot, hot)
    }

    /// The groups of the config file, their origins resolved.
    pub fn group_specs(&self) -> Result<Vec<GroupSpec>, String> {
        let max_body = usize::try_from(self.max_value).unwrap_or(usize::MAX);
        let mut specs = Vec::new();
        for g in &self.groups {
            let loader = match &g.origin {
                Some(url) => Some(
                    HttpOrigin::parse(url, max_body)
                        .map(|o| {
                            std::sync::Arc::new(o) as std::sync::Arc<dyn crate::groups::Loader>
                        })
                        .map_err(|e| format!("groups.{}.origin: {e}", g.name))?,
                ),
                None => None,
            };
            specs.push(GroupSpec {
                name: g.name.clone(),
                loader,
                ttl: g.ttl,
                load_timeout: g.load_timeout,
                negative_ttl: g.negative_ttl,
            });
        }
        Ok(specs)
    }

    /// Where the member list comes from.
    pub fn membership(&self) -> Membership {
        if !self.etcd.is_empty() {
            Membership::Etcd {
                endpoints: self.etcd.clone(),
                prefix: self.etcd_prefix.clone(),
                lease_ttl: self.lease_ttl,
            }
        } else if !self.peers.is_empty() {
            Membership::Static(self.peers.clone())
        } else {
            Membership::Alone
        }
    }

    /// This node's identity in the cluster once its listen address is
    /// bound: the advertise address and the node id derived from it.
    fn identity(&self, bound: SocketAddr) -> Result<(SocketAddr, String), String> {
        let advertise = self.advertise.unwrap_or(bound);
        if advertise.ip().is_unspecified() && self.membership() != Membership::Alone {
            return Err(format!(
                "--advertise: this node listens on {bound}, an address peers cannot reach; \
                 give --advertise IP:PORT with an address of this host"
            ));
        }
        if advertise.port() == 0 {
            return Err("--advertise: the port must not be 0".into());
        }
        let node_id = self
            .node_id
            .clone()
            .unwrap_or_else(|| advertise.to_string());
        Ok((advertise, node_id))
    }

    /// What no single option's parser can tell: combinations that cannot
    /// work. The node refuses to start with them; `check-config` reports them.
    pub fn check(&self) -> Result<(), String> {
        let per_shard = self.memory / self.shards.max(1) as u64;
        if self.conn_buffer < self.max_value.saturating_add(MESSAGE_OVERHEAD) {
            return Err(format!(
                "--conn-buffer {} is less than the largest request (--max-value {} plus \
                 {MESSAGE_OVERHEAD} bytes): such a request could never be received",
                self.conn_buffer, self.max_value
            ));
        }
        for g in &self.groups {
            if let Err(e) = crate::protocol::check_group(&g.name) {
                return Err(format!("groups.{}: {e}", g.name));
            }
        }
        if self.max_value > per_shard {
            return Err(format!(
                "--max-value {} is more than one shard's share of --memory ({} bytes over {} \
                 shards = {per_shard} bytes), so a value that large could never be stored: \
                 raise --memory, lower --max-value or use fewer --shards",
                self.max_value, self.memory, self.shards
            ));
        }
        Ok(())
    }

    /// Largest request message accepted: the value limit plus room for the rest.
    pub fn max_message(&self) -> usize {
        usize::try_from(self.max_value.saturating_add(MESSAGE_OVERHEAD)).unwrap_or(usize::MAX)
    }

    /// The buffer limits of one shard's connections.
    fn buffer_limits(&self) -> lifecycle::BufferLimits {
        lifecycle::BufferLimits {
            per_connection: usize::try_from(self.conn_buffer).unwrap_or(usize::MAX),
            per_shard: usize::try_from(self.node_buffer / self.shards.max(1) as u64)
                .unwrap_or(usize::MAX),
            write_stall: self.idle_timeout,
        }
    }

    fn http2_settings(&self) -> ServerSettings {
        ServerSettings {
            // The 5-byte gRPC prefix rides in the body too.
            max_body_size: self.max_message().saturating_add(5),
            body_budget: usize::try_from(self.conn_buffer).unwrap_or(usize::MAX),
            header_timeout: self.header_timeout,
            // Health Watch and reflection: see server/streaming.rs.
            is_streaming: crate::protocol::grpc::is_streaming_path,
            ..ServerSettings::default()
        }
    }
}

/// How often a shard looks at the node-wide flags (shutdown) and proves it
/// is alive (for the systemd watchdog).
const HOUSEKEEPING_EVERY: Duration = Duration::from_millis(50);

/// Housekeeping ticks between two `runtime::release_free_memory` calls
/// (once a second): besides the store's pages (trimmed by the sweep as it
/// frees them), buffers freed here that another shard allocated (a value
/// copied for this shard's request) stay in glibc's arenas until a trim.
const TRIM_EVERY_TICKS: u32 = 20;

/// How long a draining shard waits for clients to acknowledge the first
/// GOAWAY before sending the final one regardless.
const FINAL_GOAWAY_AFTER: Duration = Duration::from_millis(1000);

/// State shared by every shard of the node (touched on connect/close and by
/// housekeeping only, never per request).
pub struct NodeShared {
    pub config: NodeConfig,
    /// Reported by Stats: --node-id, else the advertise address.
    pub node_id: String,
    /// Where peers reach this node: its identity on the ring.
    pub advertise: SocketAddr,
    /// The cluster control plane (membership, ring publication).
    pub control: Control,
    /// Read-through groups (settings and loaders), cloned by every shard.
    pub groups: Groups,
    pub open_connections: AtomicUsize,
    /// Set by the main thread on SIGTERM/SIGINT.
    pub shutting_down: AtomicBool,
    /// Shards that still have connections to drain.
    pub draining: AtomicUsize,
    /// Set by the main thread once every shard listens (on both addresses).
    pub listening: AtomicBool,
    /// Per shard: bumped by its housekeeping task, read by the watchdog.
    pub heartbeats: Vec<AtomicU64>,
    /// Per shard: bytes of large values on their way to its connections
    /// (shard/transit.rs), bounded by its share of --node-buffer.
    pub in_transit: Vec<InTransit>,
}

impl NodeShared {
    /// Why the node is not ready to serve (`/readyz`), or None when it is:
    /// every shard listens (which happens only once the ring is known) and
    /// shutdown has not begun.
    pub fn not_ready(&self) -> Option<&'static str> {
        if self.shutting_down.load(Ordering::Relaxed) {
            Some("shutting down")
        } else if !self.listening.load(Ordering::Relaxed) {
            Some("starting: not every shard listens yet")
        } else {
            None
        }
    }
}

/// Reserves `addr` for the shards (port 0 becomes one port for all of
/// them). SO_REUSEPORT lets another process of the same user bind the same
/// port and silently take half its connections (two nodes on one host
/// left on the default --http port), so a fixed port that something
/// already accepts on is refused: one connect on loopback at start-up.
fn reserve(addr: SocketAddr, flag: &str) -> Result<(socket2::Socket, SocketAddr), String> {
    if addr.port() != 0 {
        let mut probe = addr;
        if probe.ip().is_unspecified() {
            probe.set_ip(match addr {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        if std::net::TcpStream::connect_timeout(&probe, Duration::from_millis(200)).is_ok() {
            return Err(format!(
                "cannot bind {flag}{addr}: another process already listens on it \
                 (is another node running on this host? give each its own --listen and --http)"
            ));
        }
    }
    runtime::reserve_port(addr).map_err(|e| format!("cannot bind {flag}{addr}: {e}"))
}

/// Reserves the gateway's address like the gRPC one. Refuses an address
/// that would share the gRPC port: with SO_REUSEPORT both listeners would
/// take its connections.
fn reserve_http(
    http: Option<SocketAddr>,
    grpc: SocketAddr,
) -> Result<Option<(socket2::Socket, SocketAddr)>, String> {
    let Some(want) = http else {
        return Ok(None);
    };
    let (reservation, bound) = reserve(want, "--http ")?;
    let overlaps = bound.port() == grpc.port()
        && (bound.ip() == grpc.ip() || bound.ip().is_unspecified() || grpc.ip().is_unspecified());
    if overlaps {
        return Err(format!(
            "--http {want} and --listen {grpc} share a port: give the gateway a port of its own"
        ));
    }
    Ok(Some((reservation, bound)))
}

/// Reserves the per-shard ports (--shard-ports BASE: BASE+i for shard i on
/// the gRPC address), refusing ones past 65535, ones the gRPC or gateway
/// address uses, and ones another process accepts on.
fn reserve_shard_ports(
    base: Option<u16>,
    shards: usize,
    grpc: SocketAddr,
    http: Option<SocketAddr>,
) -> Result<Vec<socket2::Socket>, String> {
    let Some(base) = base else {
        return Ok(Vec::new());
    };
    let last = u32::from(base) + shards as u32 - 1;
    if last > u32::from(u16::MAX) {
        return Err(format!(
            "--shard-ports {base}: {shards} shards need ports {base}-{last}, past 65535"
        ));
    }
    let ports = u32::from(base)..=last;
    for (what, taken) in [("--listen", Some(grpc)), ("--http", http)] {
        if let Some(t) = taken.filter(|t| ports.contains(&u32::from(t.port()))) {
            return Err(format!(
                "--shard-ports {base}: ports {base}-{last} include {what} {t}; \
                 give the shard ports a range of their own"
            ));
        }
    }
    ports
        .map(|p| {
            let addr = SocketAddr::new(grpc.ip(), p as u16);
            reserve(addr, "--shard-ports ").map(|(socket, _)| socket)
        })
        .collect()
}

/// Runs the node until its shards stop. Returns an error message for the
/// operator when start-up fails.
pub fn run(config: NodeConfig) -> Result<(), String> {
    // Registered before any shard starts so that an early SIGTERM is not lost.
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])
    .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    // Signals go to a thread of their own, so that SIGTERM also works
    // while the node waits for etcd.
    let (signal_tx, signal_rx) = mpsc::channel::<i32>();
    std::thread::spawn(move || {
        for sig in signals.forever() {
            if signal_tx.send(sig).is_err() {
                return;
            }
        }
    });
    serve(config, Hooks::default(), signal_rx)
}

/// What a program that embeds a node adds to it (see `crate::embed`).
#[derive(Default)]
pub struct Hooks {
    /// Groups whose loader is code; they override file groups of the same name.
    pub loaders: Vec<GroupSpec>,
    /// Told the gRPC and HTTP addresses once every shard listens.
    pub on_listening: Option<mpsc::Sender<(SocketAddr, Option<SocketAddr>)>>,
    /// An embedded node never ends its host process: no exit on a second
    /// stop request or on --shutdown-timeout.
    pub embedded: bool,
}

/// Runs a node until a stop request (a signal number) arrives on `stop`
/// and its shards have drained.
pub fn serve(config: NodeConfig, hooks: Hooks, stop: mpsc::Receiver<i32>) -> Result<(), String> {
    let signal_rx = stop;
    config.check()?;
    let (reservation, addr) = reserve(config.listen, "")?;
    let http_reservation = reserve_http(config.http, addr)?;
    let http_addr = http_reservation.as_ref().map(|(_, a)| *a);
    let shards = config.shards;
    let shard_reservations = reserve_shard_ports(config.shard_ports, shards, addr, http_addr)?;
    let (advertise, node_id) = config.identity(addr)?;
    let mut specs = config.group_specs()?;
    specs.extend(hooks.loaders);
    let groups = Groups::new(specs);
    let (control, rings) = Control::start(
        ClusterConfig {
            node_id: node_id.clone(),
            advertise,
            shards: shards as u32,
            vnodes: config.vnodes,
            membership: config.membership(),
        },
        shards,
    )?;
    let node = Arc::new(NodeShared {
        node_id,
        advertise,
        control,
        groups,
        config,
        open_connections: AtomicUsize::new(0),
        shutting_down: AtomicBool::new(false),
        draining: AtomicUsize::new(shards),
        listening: AtomicBool::new(false),
        heartbeats: (0..shards).map(|_| AtomicU64::new(0)).collect(),
        in_transit: (0..shards).map(|_| InTransit::default()).collect(),
    });
    // No shard listens before the ring is known: a node never serves a
    // key it does not own because its ring was empty.
    let ring = {
        let waiting = node.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let abort = stop.clone();
        let (got_signal_tx, got_signal_rx) = mpsc::channel();
        let watcher = std::thread::spawn(move || {
            // Forward the first signal that arrives while we wait.
            loop {
                match signal_rx.recv_timeout(Duration::from_millis(100)) {
                    Ok(sig) => {
                        abort.store(true, Ordering::SeqCst);
                        let _ = got_signal_tx.send(sig);
                        return signal_rx;
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) if abort.load(Ordering::SeqCst) => {
                        return signal_rx;
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => return signal_rx,
                }
            }
        });
        let result = waiting
            .control
            .wait_first_ring(Duration::from_secs(u32::MAX as u64), &stop);
        stop.store(true, Ordering::SeqCst);
        let signal_rx = watcher
            .join()
            .map_err(|_| "the signal watcher thread panicked".to_string())?;
        if got_signal_rx.try_recv().is_ok() {
            tracing::info!("stopped before the cluster ring was known");
            node.control.shutdown();
            return Ok(());
        }
        (result?, signal_rx)
    };
    let (ring, signal_rx) = ring;
    let mut rings = rings.into_iter();
    let mesh: Mesh<Batch> = Mesh::new(shards, 1024);
    let (bound_tx, bound_rx) = mpsc::channel::<Result<usize, String>>();

    let mut threads = Vec::with_capacity(shards);
    for i in 0..shards {
        let cpu = node.config.cpus[i % node.config.cpus.len()];
        let (node, mesh, bound_tx) = (node.clone(), mesh.clone(), bound_tx.clone());
        // An adaptive spin starts at zero; the shard's housekeeping raises it.
        let spin = if node.config.spin_adaptive {
            Duration::ZERO
        } else {
            node.config.spin_before_park
        };
        let ring = ring.clone();
        let ring_rx = rings
            .next()
            .ok_or_else(|| "one ring receiver per shard".to_string())?;
        let thread = runtime::spawn_shard(&format!("shard-{i}"), cpu, spin, move || async move {
            let addrs = Addrs {
                grpc: addr,
                http: http_addr,
            };
            if let Err(e) = run_shard(node, mesh, addrs, cpu, (ring, ring_rx), &bound_tx).await {
                let _ = bound_tx.send(Err(e));
            }
        })
        .map_err(|e| format!("cannot start shard {i} on CPU {cpu}: {e}"))?;
        threads.push(thread);
    }
    drop(bound_tx);
    for _ in 0..shards {
        match bound_rx.recv() {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err("a shard stopped during start-up".to_string()),
        }
    }
    // Every shard listens now; the placeholder sockets can let go of the ports.
    drop(reservation);
    drop(http_reservation);
    drop(shard_reservations);
    node.listening.store(true, Ordering::SeqCst);
    tracing::info!("listening on {addr}");
    if let Some(base) = node.config.shard_ports {
        let last = u32::from(base) + shards as u32 - 1;
        tracing::info!(
            "shard ports {base}-{last} on {} (shard i on {base}+i)",
            addr.ip()
        );
    }
    let status = match http_addr {
        Some(h) => {
            tracing::info!("http gateway listening on {h}");
            format!("serving gRPC on {addr}, HTTP on {h}")
        }
        None => {
            tracing::info!("http gateway off (--http off)");
            format!("serving gRPC on {addr}")
        }
    };
    systemd::notify(&format!("READY=1\nSTATUS={status}"));
    if let Some(tx) = hooks.on_listening {
        let _ = tx.send((addr, http_addr));
    }
    if let Some(interval) = systemd::watchdog_interval() {
        let node = node.clone();
        std::thread::spawn(move || watchdog(&node, interval));
    }

    // Wait for the first signal. Leave the ring first (revoke the etcd
    // lease, so peers stop sending us keys at once), then drain; a second
    // signal exits at once.
    let first = signal_rx.recv().ok();
    tracing::info!(signal = ?first, "shutting down: leaving the cluster, then finishing calls in flight");
    systemd::notify("STOPPING=1\nSTATUS=draining");
    if !hooks.embedded {
        std::thread::spawn(move || {
            if let Ok(sig) = signal_rx.recv() {
                tracing::warn!(signal = sig, "second signal: exiting now");
                std::process::exit(1);
            }
        });
        let timeout = node.config.shutdown_timeout;
        std::thread::spawn(move || {
            std::thread::sleep(timeout);
            tracing::warn!("shutdown timeout ({timeout:?}) reached: exiting with calls still open");
            std::process::exit(0);
        });
    }
    node.control.shutdown();
    node.shutting_down.store(true, Ordering::SeqCst);
    for t in threads {
        t.join()?;
    }
    tracing::info!("all shards stopped");
    Ok(())
}

/// Pings systemd's watchdog at half its interval while every shard's
/// housekeeping task keeps running, so a wedged shard gets the node restarted.
fn watchdog(node: &NodeShared, interval: Duration) {
    let mut last: Vec<u64> = node
        .heartbeats
        .iter()
        .map(|h| h.load(Ordering::Relaxed))
        .collect();
    loop {
        std::thread::sleep(interval / 2);
        let now: Vec<u64> = node
            .heartbeats
            .iter()
            .map(|h| h.load(Ordering::Relaxed))
            .collect();
        if now.iter().zip(&last).all(|(n, l)| n != l) {
            systemd::notify("WATCHDOG=1");
        } else {
            tracing::error!("a shard stopped making progress; withholding the watchdog ping");
        }
        last = now;
    }
}

/// The addresses every shard binds (SO_REUSEPORT, shared by all shards).
#[derive(Clone, Copy)]
struct Addrs {
    grpc: SocketAddr,
    http: Option<SocketAddr>,
}

async fn run_shard(
    node: Arc<NodeShared>,
    mesh: Mesh<Batch>,
    Addrs {
        grpc: addr,
        http: http_addr,
    }: Addrs,
    cpu: usize,
    (ring, rings): (Arc<cluster::Ring>, RingReceiver),
    bound: &mpsc::Sender<Result<usize, String>>,
) -> Result<(), String> {
    let (tx, rx) = mesh
        .join()
        .await
        .map_err(|e| format!("shard failed to join the cross-core mesh: {e}"))?;
    let shards = node.config.shards;
    let (capacity, hot_capacity) = node.config.shard_budgets();
    let shard = Rc::new(Shard::new(
        Router::new(shards),
        tx,
        ShardSettings {
            capacity_bytes: capacity,
            hot_capacity_bytes: hot_capacity,
            hot_ttl: node.config.hot_ttl,
            groups: node.groups.clone(),
            negative_entries: NEGATIVE_ENTRIES,
            me: node.advertise,
            ring,
            rings,
        },
    ));
    let id = shard.id();
    let listener =
        Listener::bind(addr).map_err(|e| format!("shard {id} cannot bind {addr}: {e}"))?;
    let peers = Rc::new(peer_client::Peers::new(
        peer_client::PeerSettings {
            timeout: node.config.peer_timeout,
            max_frame: node.config.max_message().saturating_add(64),
            max_queued: usize::try_from(node.config.conn_buffer).unwrap_or(usize::MAX),
            idle_close: node.config.idle_timeout / 2,
            in_transit: node.in_transit.get(id).cloned().unwrap_or_default(),
            transit_limit: node.config.buffer_limits().per_shard,
        },
        shard.clone(),
    ));
    let http_listener = match http_addr {
        Some(a) => {
            Some(Listener::bind(a).map_err(|e| format!("shard {id} cannot bind --http {a}: {e}"))?)
        }
        None => None,
    };
    // This shard's own port: its connections are this shard's alone.
    let own_listener = match node.config.shard_ports {
        Some(base) => {
            let a = SocketAddr::new(addr.ip(), base + id as u16);
            Some(
                Listener::bind(a)
                    .map_err(|e| format!("shard {id} cannot bind --shard-ports {a}: {e}"))?,
            )
        }
        None => None,
    };

    for (peer, rx) in rx.into_peers() {
        let handed_over = peers.clone();
        let transit = node.in_transit.get(peer).cloned().unwrap_or_default();
        let limit = node.config.buffer_limits().per_shard;
        runtime::spawn(shard.clone().run_receiver(peer, rx, move |shard, op, to| {
            dispatch::serve_handed_over(shard, &handed_over, op, to, (&transit, limit))
        }));
        runtime::spawn(shard.clone().run_sender(peer));
    }
    let sweeper = shard.clone();
    runtime::spawn(async move {
        loop {
            runtime::sleep(SWEEP_EVERY).await;
            sweeper.sweep(SWEEP_VISITS);
        }
    });
    let conns = Rc::new(lifecycle::Registry::new(
        shard.clone(),
        node.config.buffer_limits(),
    ));
    runtime::spawn(lifecycle::reap_idle(
        conns.clone(),
        node.config.idle_timeout,
    ));
    // One wake-up flag per accept loop: a Notify has a single waiter.
    let (stop_grpc, stop_http) = (Rc::new(Notify::default()), Rc::new(Notify::default()));
    let stop_own = Rc::new(Notify::default());
    runtime::spawn(housekeeping(
        node.clone(),
        (shard.clone(), peers.clone(), conns.clone()),
        vec![stop_grpc.clone(), stop_http.clone(), stop_own.clone()],
    ));

    tracing::info!(
        shard = id,
        cpu,
        capacity_bytes = capacity,
        hot_capacity_bytes = hot_capacity,
        "shard started"
    );
    let _ = bound.send(Ok(id));
    let settings = node.config.http2_settings();
    let serve_grpc = |(shard, peers, node, conns): (Rc<Shard>, _, Arc<NodeShared>, _)| {
        let settings = settings.clone();
        move |stream, refuse, guard| {
            runtime::spawn(grpc::serve(
                stream,
                Rc::clone(&shard),
                Rc::clone(&peers),
                Arc::clone(&node),
                Rc::clone(&conns),
                settings.clone(),
                refuse,
                guard,
            ))
        }
    };
    let parts = (shard.clone(), peers.clone(), node.clone(), conns.clone());
    let grpc = accept_loop(listener, &stop_grpc, &node, id, serve_grpc(parts.clone()));
    // The gateway's accept loop is a task of its own, not a future beside
    // the gRPC one in this task: glommio's accept adds a waker to its
    // pending request each time it is polled, so every gRPC accept would
    // leave one more on the gateway's (and the reverse) until glommio's
    // 16-bit task reference count overflowed: a panic after ~32,767 gRPC
    // connections with no gateway connection in between.
    let gateway_done = Rc::new(Notify::default());
    match http_listener {
        Some(l) => {
            let (shard, peers, node, conns) =
                (shard.clone(), peers.clone(), node.clone(), conns.clone());
            let (stop, done) = (stop_http.clone(), gateway_done.clone());
            runtime::spawn(async move {
                accept_loop(l, &stop, &node, id, |stream, refuse, guard| {
                    runtime::spawn(http::serve(
                        stream,
                        shard.clone(),
                        peers.clone(),
                        node.clone(),
                        conns.clone(),
                        refuse,
                        guard,
                    ))
                })
                .await;
                done.notify();
            });
        }
        None => gateway_done.notify(),
    }
    // The shard's own port, served like the shared gRPC port (a task of
    // its own for the same reason as the gateway's).
    let own_done = Rc::new(Notify::default());
    match own_listener {
        Some(l) => {
            let (stop, done, node) = (stop_own.clone(), own_done.clone(), node.clone());
            let serve = serve_grpc(parts);
            runtime::spawn(async move {
                accept_loop(l, &stop, &node, id, serve).await;
                done.notify();
            });
        }
        None => own_done.notify(),
    }
    grpc.await;
    gateway_done.notified().await;
    own_done.notified().await;
    // Shutdown: the listeners are closed; ask every connection to finish
    // (GOAWAY, or Connection: close), wait until they have, then until
    // every shard has (cross-core calls need their owners alive).
    conns.shut_down_all();
    let mut waited = Duration::ZERO;
    while !conns.is_empty() {
        runtime::sleep(Duration::from_millis(5)).await;
        waited += Duration::from_millis(5);
        if waited == FINAL_GOAWAY_AFTER {
            // Clients that have not acknowledged the first GOAWAY get the
            // final one now.
            conns.shut_down_all();
        }
    }
    tracing::info!(shard = id, "shard drained");
    node.draining.fetch_sub(1, Ordering::SeqCst);
    while node.draining.load(Ordering::SeqCst) > 0 {
        runtime::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// Accepts on `listener` until `stop`, then drops it (the kernel refuses
/// further connections). Each connection is counted against
/// --max-connections and handed to `serve` with whether it is over.
async fn accept_loop(
    listener: Listener,
    stop: &Notify,
    node: &Arc<NodeShared>,
    shard: usize,
    mut serve: impl FnMut(Stream, bool, lifecycle::OpenGuard),
) {
    loop {
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            stop.notified().await;
            None
        })
        .await;
        let Some(accepted) = accepted else { break };
        match accepted {
            Ok(stream) => {
                let open = node.open_connections.fetch_add(1, Ordering::Relaxed) + 1;
                let guard = lifecycle::OpenGuard(node.clone());
                serve(stream, open > node.config.max_connections as usize, guard);
            }
            Err(e) => {
                // Out of file descriptors and the like: back off, keep serving.
                tracing::warn!(shard, "accept failed: {e}");
                runtime::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Per-shard periodic work that must not sit on the request path: the
/// watchdog heartbeat, picking up a new cluster ring, and noticing the
/// node-wide shutdown flag.
async fn housekeeping(
    node: Arc<NodeShared>,
    (shard, peers, conns): (Rc<Shard>, Rc<peer_client::Peers>, Rc<lifecycle::Registry>),
    stops: Vec<Rc<Notify>>,
) {
    let mut tick = 0u32;
    let mut spin = node
        .config
        .spin_adaptive
        .then(|| runtime::SpinGovernor::new(node.config.spin_before_park));
    loop {
        runtime::sleep(HOUSEKEEPING_EVERY).await;
        if let Some(h) = node.heartbeats.get(shard.id()) {
            h.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(g) = spin.as_mut() {
            g.tick();
        }
        tick = tick.wrapping_add(1);
        if tick % TRIM_EVERY_TICKS == 0 {
            runtime::release_free_memory();
        }
        if let Some(ring) = shard.refresh_ring() {
            let members: Vec<SocketAddr> = ring.members().iter().map(|m| m.addr).collect();
            peers.retain(&members);
            // Topology watchers send the new ring when woken.
            conns.wake_all();
        }
        if node.shutting_down.load(Ordering::SeqCst) {
            for stop in &stops {
                stop.notify();
            }
            return;
        }
    }
}
