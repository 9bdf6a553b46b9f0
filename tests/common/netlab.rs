//! Test hosts on one machine: Linux network namespaces on a bridge, with
//! nftables rules for partitions and packet loss, and a userspace delay
//! line for latency.
//!
//! Layout of a [`Lab`] (subnet `10.A.B.0/24`, A.B from the test's pid):
//! the bridge in this (the test's) namespace is `.1`, plus `.101`, `.102`,
//! ... as extra addresses that [`Relay`]s connect from; every host is a
//! namespace with one veth on the bridge at the octet it asks for.
//!
//! Why a delay line: the kernels these tests run on are built without the
//! netem qdisc (`tc qdisc add ... netem` answers "Specified qdisc kind is
//! unknown"), so latency is added in userspace by a [`Relay`] that holds
//! every chunk for a set time in each direction. Loss and partitions are
//! nftables `drop` rules inside the hosts (nftables is in every kernel
//! here), so they act on real packets: TCP retransmits, times out and sees
//! silence exactly as across a real network.
//!
//! Needs root, `ip` (iproute2) and `nft` (nftables); [`Lab::new`] says why
//! when it cannot build the lab. Dropping the lab deletes its namespaces
//! (and with them their veths and rules) and the bridge.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub struct Lab {
    net: [u8; 3],
    bridge: String,
    /// Namespace names, in creation order.
    hosts: Vec<String>,
    tag: String,
}

/// Runs a command; its stderr on failure.
fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Lab {
    /// The bridge and its addresses; no hosts yet. Errors when this
    /// process cannot make namespaces (not root, no iproute2, no nft).
    pub fn new() -> Result<Lab, String> {
        let pid = std::process::id();
        let tag = format!("{pid}");
        let net = [10, 200 + (pid % 50) as u8, ((pid / 50) % 250) as u8];
        let lab = Lab {
            net,
            bridge: format!("scb{tag}"),
            hosts: Vec::new(),
            tag,
        };
        run(&["nft", "--version"]).map_err(|e| format!("nftables is missing: {e}"))?;
        run(&["ip", "link", "add", &lab.bridge, "type", "bridge"])?;
        run(&["ip", "link", "set", &lab.bridge, "up"])?;
        for octet in std::iter::once(1).chain(101..=109) {
            let cidr = format!("{}/24", lab.ip(octet));
            run(&["ip", "addr", "add", &cidr, "dev", &lab.bridge])?;
        }
        Ok(lab)
    }

    /// The address `10.A.B.octet`.
    pub fn ip(&self, octet: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(self.net[0], self.net[1], self.net[2], octet))
    }

    /// The bridge-side address relays connect from on behalf of host `octet`
    /// (`.101 + index`): rules in the target host can tell who is calling.
    pub fn alias(&self, index: u8) -> IpAddr {
        self.ip(101 + index)
    }

    /// A new host (namespace) at `10.A.B.octet`; returns its namespace name.
    pub fn add_host(&mut self, name: &str, octet: u8) -> Result<String, String> {
        let ns = format!("sc{}-{name}", self.tag);
        let veth = format!("scv{}{octet}", self.tag);
        run(&["ip", "netns", "add", &ns])?;
        self.hosts.push(ns.clone());
        run(&[
            "ip", "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ])?;
        run(&["ip", "link", "set", &veth, "master", &self.bridge])?;
        run(&["ip", "link", "set", &veth, "up"])?;
        let cidr = format!("{}/24", self.ip(octet));
        run(&["ip", "-n", &ns, "addr", "add", &cidr, "dev", "eth0"])?;
        run(&["ip", "-n", &ns, "link", "set", "eth0", "up"])?;
        run(&["ip", "-n", &ns, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Replaces the nftables rules of host `ns` with `out` (rules on what
    /// it sends) and `inp` (on what it receives), one rule per entry.
    pub fn rules(&self, ns: &str, out: &[String], inp: &[String]) {
        let mut script = String::from("flush ruleset\ntable inet fault {\n");
        script.push_str("  chain out {\n    type filter hook output priority 0; policy accept;\n");
        for r in out {
            script.push_str(&format!("    {r}\n"));
        }
        script.push_str(
            "  }\n  chain inp {\n    type filter hook input priority 0; policy accept;\n",
        );
        for r in inp {
            script.push_str(&format!("    {r}\n"));
        }
        script.push_str("  }\n}\n");
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run nft");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "nft in {ns} refused:\n{script}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Removes every rule of host `ns`.
    pub fn heal(&self, ns: &str) {
        self.rules(ns, &[], &[]);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in &self.hosts {
            let _ = run(&["ip", "netns", "del", ns]);
        }
        let _ = run(&["ip", "link", "del", &self.bridge]);
    }
}

/// A TCP delay line in this namespace: accepts on `listen`, connects to
/// `target` from the address `source_for(caller's ip)` picks, and holds
/// every chunk `delay` long in each direction (changeable while it runs).
/// A connection it cannot make within 1 s closes the caller's.
pub struct Relay {
    pub addr: SocketAddr,
    pub delay: Arc<AtomicU64>,
}

impl Relay {
    pub fn start(
        rt: &tokio::runtime::Handle,
        listen: SocketAddr,
        target: SocketAddr,
        source_for: impl Fn(IpAddr) -> IpAddr + Send + Sync + 'static,
    ) -> Relay {
        let listener = rt
            .block_on(tokio::net::TcpListener::bind(listen))
            .unwrap_or_else(|e| panic!("relay bind {listen}: {e}"));
        let addr = listener.local_addr().unwrap();
        let delay = Arc::new(AtomicU64::new(0));
        let d = delay.clone();
        let source_for = Arc::new(source_for);
        rt.spawn(async move {
            loop {
                let Ok((inbound, from)) = listener.accept().await else {
                    continue;
                };
                let d = d.clone();
                let source = source_for(from.ip());
                tokio::spawn(async move {
                    let socket = tokio::net::TcpSocket::new_v4().unwrap();
                    if socket.bind(SocketAddr::new(source, 0)).is_err() {
                        return;
                    }
                    let outbound =
                        match tokio::time::timeout(Duration::from_secs(1), socket.connect(target))
                            .await
                        {
                            Ok(Ok(s)) => s,
                            _ => return, // the caller's connection closes
                        };
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    let (ri, wi) = inbound.into_split();
                    let (ro, wo) = outbound.into_split();
                    tokio::spawn(delay_pipe(ri, wo, d.clone()));
                    tokio::spawn(delay_pipe(ro, wi, d));
                });
            }
        });
        Relay { addr, delay }
    }

    pub fn set_delay(&self, delay: Duration) {
        self.delay
            .store(delay.as_micros() as u64, Ordering::Relaxed);
    }
}

/// Copies `from` to `to`, each chunk held until `delay` after it was read.
async fn delay_pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Arc<AtomicU64>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let writer = tokio::spawn(async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    });
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let due = tokio::time::Instant::now()
                    + Duration::from_micros(delay.load(Ordering::Relaxed));
                if tx.send((due, buf[..n].to_vec())).is_err() {
                    break;
                }
            }
        }
    }
    drop(tx);
    let _ = writer.await;
}
