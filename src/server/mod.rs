//! The node: starts one pinned executor per shard, joins them into the
//! cross-core mesh, reserves the ports, starts the control plane, waits
//! for every shard to listen, and handles signals and the systemd
//! watchdog until shutdown (this file). Around it:
//!
//! - [`node_config`]: the settings derived from the flags, and the
//!   combinations refused at start-up; [`ports`]: port reservation;
//! - [`shard_main`]: one shard's life: listeners, accept loops, its
//!   cross-core tasks, sweep, housekeeping, drain;
//! - the connections: each a sans-IO session ([`grpc`], [`http`] for the
//!   gateway, [`peer_session`], [`peer_client`]) run by the one loop in
//!   [`driver`]; [`lifecycle`] holds what every connection shares
//!   (limits, idleness, shutdown, buffer accounting); [`dispatch`] is
//!   where a request is served, [`batch`] a batch call's items.

mod accept;
mod batch;
mod dispatch;
mod driver;
mod grpc;
mod http;
mod lifecycle;
mod node_config;
mod peer_client;
mod peer_session;
mod ports;
mod shard_main;
mod streaming;
mod tls_session;

pub use node_config::NodeConfig;

use crate::cluster::{ClusterConfig, Control};
use crate::groups::{GroupSpec, Groups};
use crate::runtime::{self, Mesh};
use crate::shard::{Batch, InTransit};
use crate::systemd;
use ports::{reserve, reserve_http, reserve_shard_ports};
use shard_main::{run_shard, Addrs};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

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
    /// --tls-cert: the TLS settings every shard accepts with; None: plaintext.
    pub tls: Option<Arc<crate::tls::Tls>>,
    /// --peer-secret-file: peers must prove they know it; None: they need not.
    pub peer_secret: Option<Arc<crate::protocol::peer_auth::PeerSecret>>,
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

/// Runs the node until its shards stop. Returns an error message for the
/// operator when start-up fails.
/// `tls`: the node's TLS settings, already loaded by [`load_tls`] (so
/// that a bad file is reported as a configuration error first).
pub fn run(config: NodeConfig, tls: Option<Arc<crate::tls::Tls>>) -> Result<(), String> {
    // Registered before any shard starts so that an early SIGTERM is not lost.
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
    ])
    .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    // Signals go to a thread of their own, so that SIGTERM also works
    // while the node waits for etcd. SIGHUP reloads the TLS files there.
    let (signal_tx, signal_rx) = mpsc::channel::<i32>();
    let reloadable = tls.clone();
    std::thread::spawn(move || {
        for sig in signals.forever() {
            if sig == signal_hook::consts::SIGHUP {
                reload_tls(reloadable.as_deref());
                continue;
            }
            if signal_tx.send(sig).is_err() {
                return;
            }
        }
    });
    let hooks = Hooks {
        tls,
        ..Hooks::default()
    };
    serve(config, hooks, signal_rx)
}

/// Reads --tls-cert/--tls-key/--tls-client-ca/--peer-ca; the error names the option and file.
pub fn load_tls(config: &NodeConfig) -> Result<Option<Arc<crate::tls::Tls>>, String> {
    let Some(files) = config.tls.clone() else {
        return Ok(None);
    };
    let tls = crate::tls::Tls::load(files)?;
    tracing::info!(
        cert = %tls.files().cert.display(),
        valid_until = %tls.current().not_after,
        client_certificates = if tls.files().client_ca.is_some() { "required" } else { "not asked for" },
        peers = if tls.files().peer_ca.is_some() { "mutual TLS (--peer-ca)" } else { "plaintext" },
        "TLS on the gRPC port and the gateway"
    );
    Ok(Some(Arc::new(tls)))
}

/// SIGHUP: new connections get the files as they are now; open ones keep
/// theirs. A failed reload keeps the current settings.
fn reload_tls(tls: Option<&crate::tls::Tls>) {
    let Some(tls) = tls else {
        tracing::info!("SIGHUP: nothing to reload (the node has no --tls-cert)");
        return;
    };
    match tls.reload() {
        Ok(c) => tracing::info!(
            cert = %tls.files().cert.display(),
            valid_until = %c.not_after,
            "SIGHUP: TLS certificate reloaded; new connections use it"
        ),
        Err(e) => {
            tracing::error!("SIGHUP: TLS reload failed, keeping the current certificate: {e}")
        }
    }
}

/// Plaintext on an address other hosts can reach: say what that exposes.
fn warn_if_exposed(config: &NodeConfig, grpc: SocketAddr, http: Option<SocketAddr>) {
    if config.tls.is_some() {
        return;
    }
    for (port, addr) in [("gRPC", Some(grpc)), ("gateway", http)] {
        if let Some(addr) = addr.filter(|a| !a.ip().is_loopback()) {
            tracing::warn!(
                "the {port} port {addr} is reachable beyond this host and serves plaintext \
                 without authentication: anyone who can reach it can read, overwrite and \
                 delete every key, and see the traffic; start with --tls-cert and --tls-key \
                 (and --tls-client-ca to require client certificates), or keep it on a \
                 trusted network"
            );
        }
    }
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
    /// TLS settings already loaded (`run` loads them first so that its
    /// SIGHUP handler can reload them); None: loaded from the config.
    pub tls: Option<Arc<crate::tls::Tls>>,
}

/// Runs a node until a stop request (a signal number) arrives on `stop`
/// and its shards have drained.
pub fn serve(config: NodeConfig, hooks: Hooks, stop: mpsc::Receiver<i32>) -> Result<(), String> {
    let signal_rx = stop;
    config.check()?;
    let tls = match hooks.tls.clone() {
        Some(tls) => Some(tls),
        None => load_tls(&config)?,
    };
    let (reservation, addr) = reserve(config.listen, "")?;
    let http_reservation = reserve_http(config.http, addr)?;
    let http_addr = http_reservation.as_ref().map(|(_, a)| *a);
    warn_if_exposed(&config, addr, http_addr);
    let shards = config.shards;
    let shard_reservations = reserve_shard_ports(config.shard_ports, shards, addr, http_addr)?;
    let (advertise, node_id) = config.identity(addr)?;
    let peer_secret = config.peer_secret()?;
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
            peer_secret: peer_secret.clone(),
            peer_tls: tls.clone().filter(|t| t.files().peer_ca.is_some()),
            etcd_tls: config.etcd_tls()?,
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
        tls,
        peer_secret,
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
