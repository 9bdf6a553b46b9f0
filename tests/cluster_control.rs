//! The cluster control plane against a real etcd: registration, watch,
//! graceful and crashed departures, etcd outages and pauses, lease loss,
//! malformed entries; and the static and alone rings.
//!
//! Nodes are `Control` instances with made-up advertise addresses (no cache
//! server runs), except the crashed one: a real `shardcache` process
//! registered under a made-up advertise address and killed with SIGKILL,
//! so nothing revokes its lease.
//! Every wait polls a condition under a generous deadline.

#[path = "common/etcd.rs"]
mod etcd;

use etcd::Etcd;
use shardcache::cluster::{ClusterConfig, Control, ControlStatus, EtcdState, Membership, Ring};
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::{mpsc, Arc, Once};
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

/// Upper bound of every wait; conditions normally hold within a second or
/// two (lease expiries within the TTL plus etcd's 500 ms expiry tick).
const DEADLINE: Duration = Duration::from_secs(20);
const TTL: Duration = Duration::from_secs(2);
static NO_STOP: AtomicBool = AtomicBool::new(false);

fn logging() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "shardcache=debug".into());
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    });
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn etcd_config(id: &str, port: u16, etcd: &Etcd, prefix: &str, ttl: Duration) -> ClusterConfig {
    ClusterConfig {
        node_id: id.into(),
        advertise: addr(port),
        shards: 2,
        vnodes: 160,
        membership: Membership::Etcd {
            endpoints: vec![etcd.endpoint()],
            prefix: prefix.into(),
            lease_ttl: ttl,
        },
        peer_secret: None,
        peer_tls: None,
        etcd_tls: None,
    }
}

/// A started node: its control handle and one shard's subscription.
struct TestNode {
    control: Control,
    rings: Receiver<Arc<Ring>>,
    /// Every ring received so far, in order.
    seen: Vec<Arc<Ring>>,
}

impl TestNode {
    fn start(config: ClusterConfig) -> TestNode {
        logging();
        let (control, mut rx) = Control::start(config, 1).expect("control starts");
        let rings = rx.pop().expect("one subscription");
        TestNode {
            control,
            rings,
            seen: Vec::new(),
        }
    }

    fn started(config: ClusterConfig) -> TestNode {
        let node = TestNode::start(config);
        node.control
            .wait_first_ring(DEADLINE, &NO_STOP)
            .expect("first ring");
        node
    }

    /// Waits for a ring on the subscription for which `pred` holds.
    fn wait_ring(&mut self, what: &str, pred: impl Fn(&Ring) -> bool) -> Arc<Ring> {
        let start = Instant::now();
        if let Some(r) = self.seen.last().filter(|r| pred(r)) {
            return r.clone();
        }
        loop {
            let left = DEADLINE.saturating_sub(start.elapsed());
            match self.rings.recv_timeout(left) {
                Ok(ring) => {
                    self.seen.push(ring.clone());
                    if pred(&ring) {
                        return ring;
                    }
                }
                Err(_) => panic!(
                    "no ring where {what} within {DEADLINE:?}; rings seen: {:?}; status {:?}",
                    self.seen.iter().map(|r| describe(r)).collect::<Vec<_>>(),
                    self.control.status()
                ),
            }
        }
    }

    /// Collects whatever rings have arrived, without waiting.
    fn drain(&mut self) {
        while let Ok(ring) = self.rings.try_recv() {
            self.seen.push(ring);
        }
    }

    fn wait_status(&self, what: &str, pred: impl Fn(ControlStatus) -> bool) -> ControlStatus {
        let start = Instant::now();
        loop {
            let s = self.control.status();
            if pred(s) {
                return s;
            }
            assert!(start.elapsed() < DEADLINE, "status never {what}: {s:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn ports(ring: &Ring) -> BTreeSet<u16> {
    ring.members().iter().map(|m| m.addr.port()).collect()
}

fn has(ring: &Ring, want: &[u16]) -> bool {
    ports(ring) == want.iter().copied().collect()
}

fn describe(ring: &Ring) -> String {
    format!("epoch {} {:?}", ring.epoch(), ports(ring))
}

/// A raw etcd client for checks from outside the nodes.
struct Raw {
    rt: tokio::runtime::Runtime,
    client: etcd_client::Client,
}

impl Raw {
    fn new(etcd: &Etcd) -> Raw {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = rt
            .block_on(etcd_client::Client::connect([etcd.endpoint()], None))
            .unwrap();
        Raw { rt, client }
    }

    /// (key, value, lease) under `prefix`.
    fn list(&mut self, prefix: &str) -> Vec<(String, String, i64)> {
        let options = etcd_client::GetOptions::new().with_prefix();
        let resp = self
            .rt
            .block_on(self.client.get(prefix, Some(options)))
            .unwrap();
        resp.kvs()
            .iter()
            .map(|kv| {
                (
                    String::from_utf8_lossy(kv.key()).into_owned(),
                    String::from_utf8_lossy(kv.value()).into_owned(),
                    kv.lease(),
                )
            })
            .collect()
    }

    fn put(&mut self, key: &str, value: &[u8]) {
        self.rt.block_on(self.client.put(key, value, None)).unwrap();
    }

    fn revoke(&mut self, lease: i64) {
        self.rt.block_on(self.client.lease_revoke(lease)).unwrap();
    }

    fn lease_alive(&mut self, lease: i64) -> bool {
        let resp = self
            .rt
            .block_on(self.client.lease_time_to_live(lease, None))
            .unwrap();
        resp.ttl() > 0
    }

    fn wait_key(
        &mut self,
        key: &str,
        what: &str,
        pred: impl Fn(Option<i64>) -> bool,
    ) -> Option<i64> {
        let start = Instant::now();
        let prefix = &key[..=key.rfind('/').unwrap()];
        loop {
            let lease = self
                .list(prefix)
                .into_iter()
                .find(|(k, _, _)| k == key)
                .map(|(_, _, l)| l);
            if pred(lease) {
                return lease;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "{key}: never {what} (lease {lease:?})"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn registration_and_watch() {
    let etcd = Etcd::start();
    let prefix = "/t/reg/";
    let mut a = TestNode::started(etcd_config("a", 7001, &etcd, prefix, TTL));
    let first = a.wait_ring("A alone", |r| has(r, &[7001]));
    assert_eq!(a.control.status().etcd, EtcdState::Registered);

    let mut b = TestNode::started(etcd_config("b", 7002, &etcd, prefix, TTL));
    let both = a.wait_ring("A and B", |r| has(r, &[7001, 7002]));
    assert!(
        both.epoch() > first.epoch(),
        "{} then {}",
        first.epoch(),
        both.epoch()
    );
    let at_b = b.wait_ring("A and B at B", |r| has(r, &[7001, 7002]));
    assert_eq!(at_b.epoch(), both.epoch(), "same membership, same epoch");
    assert_eq!(at_b.members(), both.members());
    let a_member = both.member_by_addr(addr(7001)).unwrap();
    assert_eq!((a_member.node_id.as_str(), a_member.shards), ("a", 2));
    let s = a.wait_status("two members", |s| s.members == 2);
    assert_eq!(s.epoch, both.epoch());

    // The documented key and value format.
    let keys = Raw::new(&etcd).list(prefix);
    let names: Vec<&str> = keys.iter().map(|(k, _, _)| k.as_str()).collect();
    assert_eq!(names, ["/t/reg/a", "/t/reg/b"]);
    assert_eq!(
        keys[0].1,
        r#"{"node_id":"a","addr":"127.0.0.1:7001","shards":2}"#
    );
    assert!(keys.iter().all(|(_, _, lease)| *lease != 0));

    // A third node: epochs keep increasing.
    let _c = TestNode::started(etcd_config("c", 7003, &etcd, prefix, TTL));
    let three = a.wait_ring("A, B and C", |r| has(r, &[7001, 7002, 7003]));
    assert!(three.epoch() > both.epoch());
}

#[test]
fn graceful_shutdown_revokes_the_lease() {
    let etcd = Etcd::start();
    let prefix = "/t/leave/";
    let mut a = TestNode::started(etcd_config("a", 7001, &etcd, prefix, TTL));
    // B's TTL is long: only a revocation removes it quickly.
    let b_ttl = Duration::from_secs(30);
    let b = TestNode::started(etcd_config("b", 7002, &etcd, prefix, b_ttl));
    a.wait_ring("A and B", |r| has(r, &[7001, 7002]));

    let t0 = Instant::now();
    b.control.shutdown();
    assert_eq!(b.control.status().etcd, EtcdState::Stopped);
    a.wait_ring("B gone", |r| has(r, &[7001]));
    let took = t0.elapsed();
    println!("B left A's ring {took:?} after its shutdown began");
    assert!(took < b_ttl / 2, "took {took:?}: the lease was not revoked");
    assert!(Raw::new(&etcd)
        .list(prefix)
        .iter()
        .all(|(k, _, _)| k != "/t/leave/b"));
    b.control.shutdown(); // idempotent
}

#[test]
fn crashed_node_expires_after_its_ttl() {
    let etcd = Etcd::start();
    let prefix = "/t/crash/";
    let mut a = TestNode::started(etcd_config("a", 7001, &etcd, prefix, TTL));
    let mut child = ChildNode::spawn(&etcd, prefix, "b", 7002);
    child.wait_ready();
    a.wait_ring("A and B", |r| has(r, &[7001, 7002]));

    let t0 = Instant::now();
    child.kill();
    a.wait_ring("B gone", |r| has(r, &[7001]));
    let took = t0.elapsed();
    println!("crashed B left A's ring {took:?} after SIGKILL (TTL {TTL:?})");
    // Its last keep-alive was at most TTL/3 before the kill: the key can
    // only go by expiry, at least 2/3 TTL later.
    assert!(
        took >= TTL / 2,
        "B left after {took:?}, before its lease could expire"
    );
}

/// A real node process (the `shardcache` binary) registered in etcd as
/// `id` with advertise address 127.0.0.1:`port`, to be killed with SIGKILL.
struct ChildNode {
    child: Option<Child>,
    lines: mpsc::Receiver<String>,
}

impl ChildNode {
    fn spawn(etcd: &Etcd, prefix: &str, id: &str, port: u16) -> ChildNode {
        let advertise = format!("127.0.0.1:{port}");
        let ttl = format!("{}s", TTL.as_secs());
        let mut child = Command::new(env!("CARGO_BIN_EXE_shardcache"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--http",
                "off",
                "--shards",
                "1",
                "--memory",
                "16MiB",
                "--node-id",
                id,
                "--advertise",
                &advertise,
                "--etcd",
                &etcd.endpoint(),
                "--etcd-prefix",
                prefix,
                "--lease-ttl",
                &ttl,
            ])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        ChildNode {
            child: Some(child),
            lines,
        }
    }

    fn wait_ready(&mut self) {
        let start = Instant::now();
        loop {
            let left = DEADLINE.saturating_sub(start.elapsed());
            match self.lines.recv_timeout(left) {
                // It listens once registered and its first ring is read.
                Ok(line) if line.contains("listening on") => return,
                Ok(_) => {}
                Err(_) => panic!("child node not ready within {DEADLINE:?}"),
            }
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap(); // SIGKILL: no revoke, no goodbye
            child.wait().unwrap();
        }
    }
}

impl Drop for ChildNode {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn etcd_outage_keeps_the_last_ring_and_resyncs() {
    let mut etcd = Etcd::start();
    let prefix = "/t/outage/";
    let ttl = Duration::from_secs(5);
    let mut a = TestNode::started(etcd_config("a", 7001, &etcd, prefix, ttl));
    let _b = TestNode::started(etcd_config("b", 7002, &etcd, prefix, ttl));
    a.wait_ring("A and B", |r| has(r, &[7001, 7002]));
    let before = a.seen.len();

    etcd.stop();
    a.wait_status("unreachable", |s| s.etcd == EtcdState::Unreachable);
    // C starts while etcd is down: it cannot get a ring yet.
    let c = Arc::new(TestNode::start(etcd_config("c", 7003, &etcd, prefix, ttl)).control);
    let waiting = {
        let c = c.clone();
        std::thread::spawn(move || c.wait_first_ring(DEADLINE, &NO_STOP))
    };
    std::thread::sleep(Duration::from_secs(2)); // the outage lasts a while
    assert!(!waiting.is_finished(), "C got a ring while etcd was down");
    assert_eq!(a.control.status().etcd, EtcdState::Unreachable);
    a.drain();
    assert_eq!(
        a.seen.len(),
        before,
        "A published a ring while etcd was down"
    );
    assert!(
        has(&a.control.latest().unwrap(), &[7001, 7002]),
        "A kept its last ring"
    );

    etcd.restart();
    let c_ring = waiting
        .join()
        .unwrap()
        .expect("C's first ring once etcd is back");
    assert!(ports(&c_ring).contains(&7003));
    a.wait_ring("A, B and C", |r| has(r, &[7001, 7002, 7003]));
    a.wait_status("registered again", |s| s.etcd == EtcdState::Registered);
    c.shutdown();
    let after = &a.seen[before..];
    assert!(
        after.iter().all(|r| ports(r).contains(&7002)),
        "B dropped out of A's ring: {:?}",
        after.iter().map(|r| describe(r)).collect::<Vec<_>>()
    );
}

#[test]
fn registration_survives_etcd_paused_past_the_ttl() {
    let etcd = Etcd::start();
    let prefix = "/t/pause/";
    let mut a = TestNode::started(etcd_config("a", 7001, &etcd, prefix, TTL));
    let mut b = TestNode::started(etcd_config("b", 7002, &etcd, prefix, TTL));
    b.wait_ring("A and B at B", |r| has(r, &[7001, 7002]));
    let mut raw = Raw::new(&etcd);
    let lease_before = raw.wait_key("/t/pause/a", "registered", |l| l.is_some());

    etcd.pause();
    std::thread::sleep(TTL * 2); // frozen well past the TTL
    etcd.resume();

    // A's key is back (or never left) under a live lease, without help.
    let start = Instant::now();
    let lease = loop {
        let lease = raw.wait_key("/t/pause/a", "registered", |l| l.is_some());
        if let Some(id) = lease.filter(|&id| raw.lease_alive(id)) {
            break id;
        }
        assert!(start.elapsed() < DEADLINE, "A's key has no live lease");
        std::thread::sleep(Duration::from_millis(50));
    };
    println!(
        "A's lease after the pause: {lease:#x} (before: {:#x}, {})",
        lease_before.unwrap(),
        if Some(lease) == lease_before {
            "kept"
        } else {
            "re-granted"
        }
    );
    a.wait_status("registered", |s| s.etcd == EtcdState::Registered);
    b.wait_status("registered", |s| s.etcd == EtcdState::Registered);
    b.drain();
    b.wait_ring("A and B at B after the pause", |r| has(r, &[7001, 7002]));
    a.wait_ring("A and B at A after the pause", |r| has(r, &[7001, 7002]));
}

#[test]
fn a_revoked_lease_is_replaced() {
    let etcd = Etcd::start();
    let prefix = "/t/revoke/";
    let mut a = TestNode::started(etcd_config("a", 7001, &etcd, prefix, TTL));
    let mut b = TestNode::started(etcd_config("b", 7002, &etcd, prefix, TTL));
    b.wait_ring("A and B at B", |r| has(r, &[7001, 7002]));
    let mut raw = Raw::new(&etcd);
    let old = raw
        .wait_key("/t/revoke/a", "registered", |l| l.is_some())
        .unwrap();

    // As if the lease had expired: etcd deletes A's key.
    raw.revoke(old);
    let new = raw
        .wait_key("/t/revoke/a", "under a new lease", |l| {
            l.is_some_and(|l| l != old)
        })
        .unwrap();
    assert!(raw.lease_alive(new));
    assert!(!raw.lease_alive(old));
    // B saw A leave and come back, and ends with both.
    b.wait_ring("A back at B", |r| has(r, &[7001, 7002]));
    // A was out of the cluster meanwhile (B served its keys), so it
    // publishes a ring without itself before the one with it: its shards
    // drop what they kept (Shard::refresh_ring).
    a.wait_ring("A back at A", |r| has(r, &[7001, 7002]));
    a.drain();
    let away = a
        .seen
        .iter()
        .position(|r| !ports(r).contains(&7001))
        .unwrap_or_else(|| {
            panic!(
                "A never marked its absence: {:?}",
                a.seen.iter().map(|r| describe(r)).collect::<Vec<_>>()
            )
        });
    assert_eq!(ports(&a.seen[away]), BTreeSet::from([7002]));
    assert!(
        a.seen[away..].iter().any(|r| has(r, &[7001, 7002])),
        "A comes back after it"
    );
    assert!(ports(a.seen.last().unwrap()).contains(&7001));
}

#[test]
fn malformed_and_conflicting_entries_are_ignored() {
    let etcd = Etcd::start();
    let prefix = "/t/junk/";
    let mut raw = Raw::new(&etcd);
    raw.put("/t/junk/garbage", b"\xff not json");
    raw.put(
        "/t/junk/half",
        br#"{"node_id":"x","addr":"127.0.0.1:7009"}"#,
    );
    // Claims A's address under another id.
    raw.put(
        "/t/junk/impostor",
        br#"{"node_id":"impostor","addr":"127.0.0.1:7001","shards":1}"#,
    );
    let mut a = TestNode::started(etcd_config("a", 7001, &etcd, prefix, TTL));
    let first = a.wait_ring("A alone", |r| has(r, &[7001]));
    assert_eq!(first.member_by_addr(addr(7001)).unwrap().node_id, "a");

    // A valid entry written by hand counts; turning it into junk removes it.
    raw.put(
        "/t/junk/manual",
        br#"{"node_id":"manual","addr":"127.0.0.1:7005","shards":3}"#,
    );
    let with = a.wait_ring("the manual entry", |r| has(r, &[7001, 7005]));
    assert_eq!(with.member_by_addr(addr(7005)).unwrap().shards, 3);
    raw.put("/t/junk/manual", b"{\"node_id\":");
    a.wait_ring("the manual entry gone", |r| has(r, &[7001]));
    assert_eq!(a.control.status().etcd, EtcdState::Registered);
}

#[test]
fn static_and_alone_rings() {
    logging();
    let config = |membership| ClusterConfig {
        node_id: "me".into(),
        advertise: addr(7002),
        shards: 4,
        vnodes: 160,
        membership,
        peer_secret: None,
        peer_tls: None,
        etcd_tls: None,
    };
    let (alone, rx) = Control::start(config(Membership::Alone), 3).unwrap();
    assert_eq!(rx.len(), 3);
    for r in &rx {
        let ring = r.try_recv().unwrap();
        assert_eq!((ring.epoch(), ports(&ring)), (1, [7002].into()));
    }
    assert_eq!(alone.status().etcd, EtcdState::NotUsed);

    let peers = vec![addr(7001), addr(7003), addr(7001)];
    let (fixed, rx) = Control::start(config(Membership::Static(peers)), 2).unwrap();
    let ring = fixed.wait_first_ring(DEADLINE, &NO_STOP).unwrap();
    assert_eq!((ring.epoch(), ports(&ring)), (1, [7001, 7002, 7003].into()));
    assert_eq!(ring.member_by_addr(addr(7002)).unwrap().node_id, "me");
    for r in &rx {
        assert!(Arc::ptr_eq(&r.try_recv().unwrap(), &ring));
    }
    // Static and etcd nodes place keys alike: identity is the address.
    let owners: Vec<u16> = (0..100)
        .map(|k| ring.owner(b"g", format!("k{k}").as_bytes()).addr.port())
        .collect();
    assert!(owners.iter().collect::<BTreeSet<_>>().len() == 3);
}

#[test]
fn wait_first_ring_gives_up_on_deadline_and_stop() {
    logging();
    // Nothing listens there: etcd is unreachable from the start.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let config = ClusterConfig {
        node_id: "lonely".into(),
        advertise: addr(7001),
        shards: 1,
        vnodes: 160,
        membership: Membership::Etcd {
            endpoints: vec![endpoint],
            prefix: "/t/none/".into(),
            lease_ttl: TTL,
        },
        peer_secret: None,
        peer_tls: None,
        etcd_tls: None,
    };
    let (control, rx) = Control::start(config, 1).unwrap();
    let err = control
        .wait_first_ring(Duration::from_millis(500), &NO_STOP)
        .unwrap_err();
    assert!(err.contains("no cluster ring"), "{err}");
    let stop = AtomicBool::new(true);
    let err = control.wait_first_ring(DEADLINE, &stop).unwrap_err();
    assert!(err.contains("stopped"), "{err}");
    assert!(
        rx[0].try_recv().is_err(),
        "no ring of only this node while etcd is down"
    );
    let t0 = Instant::now();
    control.shutdown();
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "shutdown is bounded"
    );
    assert_eq!(control.status().etcd, EtcdState::Stopped);
}
