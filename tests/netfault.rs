//! Network faults between the nodes of a real cluster and between a node
//! and etcd: three `shardcache` processes and one etcd, each in its own
//! network namespace on a bridge (tests/common/netlab.rs), talked to with
//! the stock tonic client from the test's namespace.
//!
//! Peers reach each other through delay lines ([`Relay`], one in front of
//! each node: it is the node's `--advertise` address), which add latency;
//! nftables rules inside the namespaces drop packets for loss and for
//! one-way and two-way partitions. What must hold throughout:
//! - no call outlives its deadline (`grpc-timeout`; the client sets no
//!   timer of its own here, so the server's enforcement is what is timed);
//! - no wrong value: every value read is the last one written;
//! - keys whose owner cannot be reached fail fast with UNAVAILABLE once the
//!   partition is noticed, and are served again once it ends.
//!
//! Needs root, iproute2 and nftables (`.ci/test` installs them). Where
//! namespaces cannot be made, each test says so and returns, except under
//! CI (`CI` set), where that is a failure.

mod common;

use common::cluster::{logged_members, ring_of, rt, wait_members};
use common::etcd::Etcd;
use common::netlab::{Lab, Relay};
use common::{req, set_req, CacheClient, Node};
use shardcache::cluster::Ring;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

const TTL: &str = "2s";
/// Slack on top of a deadline for the answer to travel back.
const SLACK: Duration = Duration::from_millis(300);
const WAIT: Duration = Duration::from_secs(20);
const ETCD_OCTET: u8 = 2;

/// The lab, or None (after saying why) where namespaces cannot be made.
fn lab() -> Option<Lab> {
    match Lab::new() {
        Ok(lab) => Some(lab),
        Err(e) if std::env::var_os("CI").is_some() => {
            panic!("network namespaces are required under CI: {e}")
        }
        Err(e) => {
            eprintln!("SKIPPED: cannot make network namespaces here ({e}); run as root with iproute2 and nftables");
            None
        }
    }
}

/// Fields drop in order: the processes go before the lab's namespaces.
struct Cluster {
    nodes: Vec<Node>,
    _etcd: Etcd,
    relays: Vec<Relay>,
    rt: tokio::runtime::Runtime,
    /// Namespace of each node.
    ns: Vec<String>,
    /// Advertise addresses (the relays): the ring's identities.
    advertise: Vec<SocketAddr>,
    lab: Lab,
}

impl Cluster {
    fn start(mut lab: Lab) -> Cluster {
        let rt = rt();
        let etcd_ns = lab.add_host("etcd", ETCD_OCTET).expect("etcd host");
        let etcd = Etcd::start_in(&etcd_ns, lab.ip(ETCD_OCTET));
        let mut ns = Vec::new();
        let mut relays = Vec::new();
        for i in 0..3u8 {
            ns.push(lab.add_host(&format!("n{i}"), 10 + i).expect("node host"));
            // Relay i stands for node i; it connects from the alias of
            // whichever node calls, so node i's rules can tell callers apart.
            let aliases: Vec<(IpAddr, IpAddr)> =
                (0..3).map(|j| (lab.ip(10 + j), lab.alias(j))).collect();
            let bridge = lab.ip(1);
            relays.push(Relay::start(
                rt.handle(),
                SocketAddr::new(lab.ip(1), 0),
                SocketAddr::new(lab.ip(10 + i), 7070),
                move |from| {
                    aliases
                        .iter()
                        .find(|(node, _)| *node == from)
                        .map_or(bridge, |&(_, alias)| alias)
                },
            ));
        }
        let advertise: Vec<SocketAddr> = relays.iter().map(|r| r.addr).collect();
        let endpoint = format!("http://{}:2379", lab.ip(ETCD_OCTET));
        let starting: Vec<_> = (0..3u8)
            .map(|i| {
                let listen = SocketAddr::new(lab.ip(10 + i), 7070);
                Node::builder()
                    .netns(&ns[i as usize])
                    .node_id(&format!("n{i}"))
                    .listen(listen)
                    .shards(1)
                    .args(&[
                        "--advertise",
                        &advertise[i as usize].to_string(),
                        "--etcd",
                        &endpoint,
                        "--etcd-prefix",
                        "/netfault/",
                        "--lease-ttl",
                        TTL,
                        "--peer-timeout",
                        "2s",
                        // No hot copies: by design they may be served up to
                        // --hot-ttl after a write elsewhere (invalidations
                        // are best effort), which is not what is tested.
                        "--hot-fraction",
                        "0",
                    ])
                    .spawn()
            })
            .collect();
        let nodes: Vec<Node> = starting.into_iter().map(|s| s.wait(WAIT)).collect();
        wait_members(&nodes.iter().collect::<Vec<_>>(), 3, WAIT);
        Cluster {
            lab,
            _etcd: etcd,
            ns,
            nodes,
            relays,
            advertise,
            rt,
        }
    }

    fn ring(&self) -> Ring {
        ring_of(&self.advertise)
    }

    /// Keys `prefix-N` owned by node `i` on the three-node ring.
    fn keys_of(&self, i: usize, prefix: &str, n: usize) -> Vec<String> {
        let ring = self.ring();
        (0..)
            .map(|k| format!("{prefix}-{k}"))
            .filter(|k| ring.owner(b"", k.as_bytes()).addr == self.advertise[i])
            .take(n)
            .collect()
    }

    fn clients(&self) -> Vec<CacheClient<Channel>> {
        self.rt.block_on(async {
            let mut v = Vec::new();
            for n in &self.nodes {
                v.push(n.client().await);
            }
            v
        })
    }

    /// nftables rules that drop what node `from` sends to node `to`, on
    /// connections either of them opened: to `to`'s relay, and to the
    /// alias `from`'s relay uses for `to`.
    fn drop_to(&self, to: usize) -> Vec<String> {
        vec![
            format!(
                "ip daddr {} tcp dport {} drop",
                self.lab.ip(1),
                self.relays[to].addr.port()
            ),
            format!("ip daddr {} drop", self.lab.alias(to as u8)),
        ]
    }

    /// Loss of `pct` % on everything node traffic to peers and etcd.
    fn loss(&self, pct: u32) -> Vec<String> {
        let ports = self
            .relays
            .iter()
            .map(|r| r.addr.port().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let aliases = (0..3u8)
            .map(|j| self.lab.alias(j).to_string())
            .collect::<Vec<_>>()
            .join(", ");
        vec![
            format!(
                "ip daddr {} tcp dport {{ {ports} }} numgen random mod 100 < {pct} drop",
                self.lab.ip(1)
            ),
            format!("ip daddr {{ {aliases} }} numgen random mod 100 < {pct} drop"),
            format!(
                "ip daddr {} numgen random mod 100 < {pct} drop",
                self.lab.ip(ETCD_OCTET)
            ),
        ]
    }

    fn heal_all(&self) {
        for ns in &self.ns {
            self.lab.heal(ns);
        }
    }
}

fn value(tag: &str, key: &str) -> Vec<u8> {
    format!("{tag}:{key}").into_bytes()
}

/// A Get with `grpc-timeout: deadline`, and how long it took.
async fn timed_get(
    c: &mut CacheClient<Channel>,
    key: &str,
    deadline: Duration,
) -> (Result<Option<Vec<u8>>, tonic::Status>, Duration) {
    let mut r = tonic::Request::new(req("", key));
    r.set_timeout(deadline);
    let start = Instant::now();
    let res = c
        .get(r)
        .await
        .map(|g| g.into_inner())
        .map(|g| g.found.then_some(g.value));
    (res, start.elapsed())
}

async fn set(
    c: &mut CacheClient<Channel>,
    key: &str,
    v: &[u8],
    deadline: Duration,
) -> Result<(), tonic::Status> {
    let mut r = tonic::Request::new(set_req("", key, v, 0));
    r.set_timeout(deadline);
    c.set(r).await.map(|_| ())
}

/// A Get that must end by its deadline and, if it answers, answer `want`.
async fn checked_get(
    c: &mut CacheClient<Channel>,
    key: &str,
    want: &[u8],
    deadline: Duration,
    what: &str,
) -> Result<(), tonic::Status> {
    check_get(c, key, want, deadline, what, false).await
}

/// As [`checked_get`]; with `miss_ok` a miss is also right: the key's
/// owner changed (the new owner holds nothing yet), which is a cache's to do.
async fn check_get(
    c: &mut CacheClient<Channel>,
    key: &str,
    want: &[u8],
    deadline: Duration,
    what: &str,
    miss_ok: bool,
) -> Result<(), tonic::Status> {
    let (res, took) = timed_get(c, key, deadline).await;
    assert!(
        took <= deadline + SLACK,
        "{what}: Get {key} took {took:?}, past its {deadline:?} deadline ({res:?})"
    );
    match res {
        Ok(None) if miss_ok => Ok(()),
        Ok(v) => {
            assert_eq!(v.as_deref(), Some(want), "{what}: wrong value for {key}");
            Ok(())
        }
        Err(e) => {
            assert!(
                matches!(
                    e.code(),
                    tonic::Code::Unavailable | tonic::Code::DeadlineExceeded
                ),
                "{what}: Get {key}: {e:?}"
            );
            Err(e)
        }
    }
}

#[test]
fn latency_and_loss_between_nodes_keep_answers_right_and_within_deadlines() {
    let Some(lab) = lab() else { return };
    let cl = Cluster::start(lab);
    let mut cs = cl.clients();
    let keys: Vec<String> = (0..150).map(|k| format!("lat-{k}")).collect();
    let ring = cl.ring();
    cl.rt.block_on(async {
        for (i, k) in keys.iter().enumerate() {
            set(&mut cs[i % 3], k, &value("v1", k), Duration::from_secs(5))
                .await
                .unwrap();
        }
    });
    // 50 ms each way between nodes, and 5 % of their packets lost (to
    // peers and to etcd alike).
    for r in &cl.relays {
        r.set_delay(Duration::from_millis(50));
    }
    for ns in &cl.ns {
        cl.lab.rules(ns, &cl.loss(5), &[]);
    }
    let deadline = Duration::from_secs(3);
    let (mut ok, mut failed) = (0, 0);
    let mut forwarded_ms = Vec::new();
    cl.rt.block_on(async {
        for round in 0..2 {
            let mut tasks = Vec::new();
            for (i, k) in keys.iter().enumerate() {
                let via = (i + round) % 3;
                let mut c = cs[via].clone();
                let k = k.clone();
                let remote = ring.owner(b"", k.as_bytes()).addr != cl.advertise[via];
                tasks.push(tokio::spawn(async move {
                    let (res, took) = timed_get(&mut c, &k, deadline).await;
                    (k, res, took, remote)
                }));
            }
            for t in tasks {
                let (k, res, took, remote) = t.await.unwrap();
                assert!(took <= deadline + SLACK, "Get {k} took {took:?}: {res:?}");
                match res {
                    Ok(v) => {
                        assert_eq!(v.as_deref(), Some(&value("v1", &k)[..]), "{k}");
                        ok += 1;
                        if remote {
                            forwarded_ms.push(took.as_millis());
                        }
                    }
                    Err(e) => {
                        assert!(
                            matches!(
                                e.code(),
                                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded
                            ),
                            "{k}: {e:?}"
                        );
                        failed += 1;
                    }
                }
            }
        }
        // Writes through any node are read back through the others.
        for (i, k) in keys.iter().take(30).enumerate() {
            if set(&mut cs[i % 3], k, &value("v2", k), deadline)
                .await
                .is_ok()
            {
                for c in cs.iter_mut() {
                    let _ = checked_get(c, k, &value("v2", k), deadline, "after a Set").await;
                }
            }
        }
    });
    forwarded_ms.sort_unstable();
    let median = forwarded_ms[forwarded_ms.len() / 2];
    eprintln!("latency+loss: {ok} answered, {failed} failed; forwarded Gets median {median} ms");
    assert!(
        median >= 100,
        "the delay line adds 2 x 50 ms to a hop: median {median} ms"
    );
    assert!(
        failed * 20 <= ok + failed,
        "more than 5 % failed: {failed} of {}",
        ok + failed
    );
    // Keep-alives got through: nobody was dropped from the ring.
    for n in &cl.nodes {
        assert_eq!(logged_members(n), Some(3), "{}", n.log_tail());
    }
}

#[test]
fn partitions_between_two_nodes_fail_fast_and_heal() {
    let Some(lab) = lab() else { return };
    let cl = Cluster::start(lab);
    let mut cs = cl.clients();
    let (a, b, c) = (0usize, 1usize, 2usize);
    let keys_b = cl.keys_of(b, "part", 60);
    let keys_ac: Vec<String> = [cl.keys_of(a, "part", 20), cl.keys_of(c, "part", 20)].concat();
    let deadline = Duration::from_secs(1);
    cl.rt.block_on(async {
        for k in keys_b.iter().chain(&keys_ac) {
            set(&mut cs[c], k, &value("v1", k), deadline * 5)
                .await
                .unwrap();
        }
        // A has a live connection to B before the partition.
        for k in &keys_b[..5] {
            checked_get(&mut cs[a], k, &value("v1", k), deadline, "before")
                .await
                .unwrap();
        }
    });

    for (round, two_way) in [(0, true), (1, false)] {
        let what = if two_way { "two-way" } else { "one-way A->B" };
        cl.lab.rules(&cl.ns[a], &cl.drop_to(b), &[]);
        if two_way {
            cl.lab.rules(&cl.ns[b], &cl.drop_to(a), &[]);
        }
        cl.rt.block_on(async {
            // Until A notices (TCP_USER_TIMEOUT of 3 s; ~6 s from the
            // first unanswered call, measured), B's keys
            // through A end by their deadline; then they fail fast.
            let start = Instant::now();
            let mut i = 0;
            loop {
                let k = &keys_b[i % keys_b.len()];
                i += 1;
                if let Err(e) = checked_get(&mut cs[a], k, &value("v1", k), deadline, what).await {
                    if e.code() == tonic::Code::Unavailable {
                        break;
                    }
                }
                assert!(
                    start.elapsed() < WAIT,
                    "{what}: A never declared B unreachable\n{}",
                    cl.nodes[a].log_tail()
                );
            }
            eprintln!("{what}: A gave up on B after {:?}", start.elapsed());
            for k in keys_b.iter().skip(round * 20).take(20) {
                let (res, took) = timed_get(&mut cs[a], k, deadline).await;
                assert!(
                    took < Duration::from_millis(250),
                    "{what}: {k} not fast: {took:?} {res:?}"
                );
                let e = res.expect_err("B is unreachable from A");
                assert_eq!(e.code(), tonic::Code::Unavailable, "{what}: {e:?}");
                assert!(
                    e.message().contains("n1"),
                    "names the peer: {}",
                    e.message()
                );
                let mut r = tonic::Request::new(set_req("", k, b"never stored", 0));
                r.set_timeout(deadline);
                let e = cs[a].set(r).await.expect_err("B is unreachable from A");
                assert_eq!(e.code(), tonic::Code::Unavailable, "{what}: Set: {e:?}");
            }
            // Everything else is unaffected: A's and C's keys through A,
            // B's keys through B and through C.
            for k in &keys_ac {
                checked_get(&mut cs[a], k, &value("v1", k), deadline, what)
                    .await
                    .unwrap();
            }
            for k in keys_b.iter().take(20) {
                checked_get(&mut cs[b], k, &value("v1", k), deadline, what)
                    .await
                    .unwrap();
                checked_get(&mut cs[c], k, &value("v1", k), deadline, what)
                    .await
                    .unwrap();
            }
            // B's calls to A's keys end by their deadline whatever they meet.
            for k in keys_ac.iter().take(10) {
                let _ = checked_get(&mut cs[b], k, &value("v1", k), deadline, what).await;
            }
        });
        cl.heal_all();
        cl.rt.block_on(async {
            let start = Instant::now();
            while checked_get(
                &mut cs[a],
                &keys_b[59],
                &value("v1", &keys_b[59]),
                deadline,
                "healing",
            )
            .await
            .is_err()
            {
                assert!(start.elapsed() < WAIT, "{what}: A never reached B again");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            eprintln!("{what}: healed after {:?}", start.elapsed());
            for k in &keys_b {
                checked_get(&mut cs[a], k, &value("v1", k), deadline, "healed")
                    .await
                    .unwrap();
            }
        });
        // The ring never changed: etcd was reachable throughout.
        for n in &cl.nodes {
            assert_eq!(logged_members(n), Some(3));
        }
    }
}

#[test]
fn a_node_cut_off_from_etcd_never_serves_stale_values_and_rejoins_empty() {
    let Some(lab) = lab() else { return };
    let cl = Cluster::start(lab);
    let mut cs = cl.clients();
    let cut = 2usize;
    let keys_cut = cl.keys_of(cut, "cut", 30);
    let others = cl.keys_of(0, "cut", 10);
    let deadline = Duration::from_secs(1);
    cl.rt.block_on(async {
        for k in keys_cut.iter().chain(&others) {
            set(&mut cs[0], k, &value("v1", k), deadline * 5)
                .await
                .unwrap();
        }
    });
    let etcd = cl.lab.ip(ETCD_OCTET);
    cl.lab.rules(
        &cl.ns[cut],
        &[format!("ip daddr {etcd} drop")],
        &[format!("ip saddr {etcd} drop")],
    );
    let started = Instant::now();
    // Until the others drop it, its keys hold v1 wherever they are read
    // (or the cut node refuses them once it doubts its lease); as each of
    // the others drops it, they move, and a miss is right.
    let (a, b) = (&cl.nodes[0], &cl.nodes[1]);
    cl.rt.block_on(async {
        while logged_members(a) != Some(2) || logged_members(b) != Some(2) {
            assert!(
                started.elapsed() < WAIT,
                "the others never dropped the cut node"
            );
            for (i, k) in keys_cut.iter().enumerate().take(10) {
                let _ = check_get(&mut cs[i % 3], k, &value("v1", k), deadline, "cut", true).await;
            }
        }
    });
    eprintln!(
        "the others dropped the cut node after {:?}",
        started.elapsed()
    );
    std::thread::sleep(Duration::from_millis(150)); // shards take rings every 50 ms
    cl.rt.block_on(async {
        // Its former keys now live on A and B: write new values there.
        for k in &keys_cut {
            set(&mut cs[0], k, &value("v2", k), deadline).await.unwrap();
        }
        // Nobody answers v1 any more; the cut node refuses (fenced) or,
        // once it has followed the others' ring, forwards to the new owner.
        let follow = Instant::now();
        let mut cut_answers = 0;
        while follow.elapsed() < Duration::from_secs(4) {
            for k in &keys_cut {
                for (i, c) in cs.iter_mut().enumerate() {
                    match checked_get(c, k, &value("v2", k), deadline, "after the drop").await {
                        Ok(()) if i == cut => cut_answers += 1,
                        Ok(()) => {}
                        Err(e) => assert!(
                            i == cut && e.code() == tonic::Code::Unavailable,
                            "node {i}: {e:?}"
                        ),
                    }
                }
            }
        }
        assert!(
            cut_answers > 0,
            "the cut node never routed its former keys to their new owners\n{}",
            cl.nodes[cut].log_tail()
        );
        // Other keys are unaffected through every node.
        for k in &others {
            for c in cs.iter_mut() {
                checked_get(c, k, &value("v1", k), deadline, "others")
                    .await
                    .unwrap();
            }
        }
    });
    cl.heal_all();
    wait_members(&cl.nodes.iter().collect::<Vec<_>>(), 3, WAIT);
    assert!(
        cl.nodes[cut]
            .log_tail()
            .contains("rejoined the cluster: dropped"),
        "the returning node drops what it kept\n{}",
        cl.nodes[cut].log_tail()
    );
    cl.rt.block_on(async {
        // Back in the ring, it owns those keys again and holds none of them:
        // a miss, never the v1 it had before.
        for k in &keys_cut {
            for c in cs.iter_mut() {
                let (res, _) = timed_get(c, k, deadline).await;
                let v = res.unwrap_or_else(|e| panic!("{k} after rejoining: {e:?}"));
                assert_ne!(v.as_deref(), Some(&value("v1", k)[..]), "{k}: stale");
            }
        }
        for k in &keys_cut {
            set(&mut cs[0], k, &value("v3", k), deadline).await.unwrap();
            for c in cs.iter_mut() {
                checked_get(c, k, &value("v3", k), deadline, "rejoined")
                    .await
                    .unwrap();
            }
        }
    });
}
