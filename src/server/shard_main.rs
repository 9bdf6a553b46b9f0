//! One shard's life once its thread runs: join the mesh, build the shard
//! (store, metrics, ring), bind the listeners, start the cross-core
//! sender/receiver tasks, the sweep, the idle reaper and housekeeping, and
//! accept connections until shutdown; then drain.

use super::{accept, dispatch, http, lifecycle, peer_client, NodeShared};
use crate::cluster::{self, RingReceiver};
use crate::runtime::{self, Listener, Mesh, Stream};
use crate::shard::{Batch, Notify, Router, Shard, ShardSettings};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::Duration;

/// Expired entries a shard reclaims per sweep tick, and how often it ticks:
/// bounded work per tick, the whole table covered over time.
const SWEEP_VISITS: usize = 2048;
const SWEEP_EVERY: Duration = Duration::from_millis(100);

/// "Not found" answers of groups' sources a shard remembers, at most.
const NEGATIVE_ENTRIES: usize = 65_536;

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

/// The addresses every shard binds (SO_REUSEPORT, shared by all shards).
#[derive(Clone, Copy)]
pub(super) struct Addrs {
    pub(super) grpc: SocketAddr,
    pub(super) http: Option<SocketAddr>,
}

pub(super) async fn run_shard(
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
            secret: node.peer_secret.clone(),
            tls: node.tls.clone(),
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
            runtime::spawn(accept::serve(
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
