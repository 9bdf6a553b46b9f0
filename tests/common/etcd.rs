//! A real, single-member etcd for tests: `/usr/bin/etcd` (or `$ETCD_BIN`) on
//! free loopback ports with its own data directory under the temp dir.
//!
//! [`Etcd::start`] waits until `/health` answers `"health":"true"`;
//! [`Etcd::pause`]/[`Etcd::resume`] send SIGSTOP/SIGCONT (through the `kill`
//! command, so no `unsafe`), [`Etcd::stop`] kills it keeping its data,
//! [`Etcd::restart`] starts it again on the same ports and data. Dropping it
//! kills the process and removes the data directory. etcd's output goes to
//! `etcd.log` in the data directory; its tail is printed when a test panics.
//!
//! Standalone: tests use it as `#[path = "common/etcd.rs"] mod etcd;` or as
//! a module of `tests/common`.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How long etcd may take to become healthy.
pub const ETCD_START_DEADLINE: Duration = Duration::from_secs(30);

static INSTANCE: AtomicUsize = AtomicUsize::new(0);

pub struct Etcd {
    child: Option<Child>,
    client_addr: SocketAddr,
    peer_addr: SocketAddr,
    dir: PathBuf,
    /// Network namespace it runs in (`ip netns exec`), if any.
    netns: Option<String>,
    /// TLS for clients: (server certificate, key, client CA); clients
    /// must present a certificate from that CA. Health is then asked on
    /// the plaintext metrics address.
    tls: Option<[PathBuf; 3]>,
    metrics_addr: SocketAddr,
}

/// The etcd binary under test.
pub fn etcd_bin() -> String {
    std::env::var("ETCD_BIN").unwrap_or_else(|_| "/usr/bin/etcd".to_string())
}

/// A loopback port nobody listens on right now. (Racy by nature: another
/// process may take it before etcd binds it; start retries with new ports.)
fn free_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    l.local_addr().expect("local address")
}

impl Etcd {
    /// Starts a fresh etcd and waits until it is healthy.
    pub fn start() -> Etcd {
        let mut etcd = Etcd::unstarted(None, free_port(), free_port());
        let mut last_error = String::new();
        for _ in 0..3 {
            match etcd.spawn_and_wait() {
                Ok(()) => return etcd,
                Err(e) => {
                    // Perhaps a port was taken meanwhile: new ports, and an
                    // empty data directory for the new member.
                    last_error = e;
                    etcd.kill();
                    let _ = std::fs::remove_dir_all(etcd.data_dir());
                    etcd.client_addr = free_port();
                    etcd.peer_addr = free_port();
                }
            }
        }
        panic!("etcd did not start: {last_error}\n{}", etcd.log_tail(40));
    }

    /// Starts a fresh etcd inside network namespace `netns`, serving
    /// clients on `ip:2379`, and waits until it is healthy (asked from
    /// this namespace, so `ip` must be reachable from here).
    pub fn start_in(netns: &str, ip: std::net::IpAddr) -> Etcd {
        let mut etcd = Etcd::unstarted(
            Some(netns.to_string()),
            SocketAddr::new(ip, 2379),
            SocketAddr::new(ip, 2380),
        );
        if let Err(e) = etcd.spawn_and_wait() {
            panic!("etcd did not start in {netns}: {e}\n{}", etcd.log_tail(40));
        }
        etcd
    }

    /// Starts a fresh etcd serving clients over TLS only, requiring client
    /// certificates from `client_ca`, and waits until it is healthy.
    pub fn start_tls(cert: PathBuf, key: PathBuf, client_ca: PathBuf) -> Etcd {
        let mut etcd = Etcd::unstarted(None, free_port(), free_port());
        etcd.tls = Some([cert, key, client_ca]);
        if let Err(e) = etcd.spawn_and_wait() {
            panic!("etcd (TLS) did not start: {e}\n{}", etcd.log_tail(40));
        }
        etcd
    }

    fn unstarted(netns: Option<String>, client_addr: SocketAddr, peer_addr: SocketAddr) -> Etcd {
        let dir = std::env::temp_dir().join(format!(
            "shardcache-etcd-{}-{}-{}",
            std::process::id(),
            INSTANCE.fetch_add(1, Ordering::Relaxed),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        std::fs::create_dir_all(&dir).expect("create the etcd data directory");
        Etcd {
            child: None,
            client_addr,
            peer_addr,
            dir,
            netns,
            tls: None,
            metrics_addr: free_port(),
        }
    }

    /// The client URL, e.g. `http://127.0.0.1:40123`.
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.client_addr)
    }

    pub fn client_addr(&self) -> SocketAddr {
        self.client_addr
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("etcd.log"))
            .map_err(|e| format!("open etcd.log: {e}"))?;
        let log2 = log.try_clone().map_err(|e| format!("dup etcd.log: {e}"))?;
        let client = self.endpoint();
        let peer = format!("http://{}", self.peer_addr);
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(etcd_bin());
                c
            }
            None => Command::new(etcd_bin()),
        };
        let child = cmd
            .arg("--name")
            .arg("test")
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--listen-client-urls")
            .arg(&client)
            .arg("--advertise-client-urls")
            .arg(&client)
            .arg("--listen-peer-urls")
            .arg(&peer)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer)
            .arg("--initial-cluster")
            .arg(format!("test={peer}"))
            .arg("--initial-cluster-state")
            .arg("new")
            // Fast election and a short minimum lease TTL (1.5 x election).
            .arg("--heartbeat-interval")
            .arg("50")
            .arg("--election-timeout")
            .arg("500")
            .arg("--log-level")
            .arg("warn")
            .args(match &self.tls {
                Some([cert, key, ca]) => vec![
                    "--cert-file".into(),
                    cert.clone().into_os_string(),
                    "--key-file".into(),
                    key.clone().into_os_string(),
                    "--trusted-ca-file".into(),
                    ca.clone().into_os_string(),
                    "--client-cert-auth".into(),
                    "--listen-metrics-urls".into(),
                    format!("http://{}", self.metrics_addr).into(),
                ],
                None => Vec::new(),
            })
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", etcd_bin()))?;
        self.child = Some(child);
        self.wait_healthy(ETCD_START_DEADLINE)
    }

    /// Polls `/health` until it reports healthy.
    pub fn wait_healthy(&mut self, deadline: Duration) -> Result<(), String> {
        let start = Instant::now();
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!("etcd exited: {status}"));
                }
            }
            let addr = if self.tls.is_some() {
                self.metrics_addr
            } else {
                self.client_addr
            };
            match health(addr) {
                Ok(true) => return Ok(()),
                Ok(false) | Err(_) if start.elapsed() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                Ok(false) => return Err("etcd answers but is not healthy".into()),
                Err(e) => return Err(format!("etcd not answering: {e}")),
            }
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("etcd is running").id()
    }

    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{sig} failed");
    }

    /// Freezes etcd (SIGSTOP): connections stay open, nothing is answered.
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// Thaws a paused etcd (SIGCONT).
    pub fn resume(&self) {
        self.signal("CONT");
    }

    /// Kills etcd, keeping its data directory for [`Etcd::restart`].
    pub fn stop(&mut self) {
        self.kill();
    }

    /// Starts etcd again on the same ports with the same data, and waits
    /// until it is healthy.
    pub fn restart(&mut self) {
        self.kill();
        if let Err(e) = self.spawn_and_wait() {
            panic!("etcd did not restart: {e}\n{}", self.log_tail(40));
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // A stopped process dies of SIGKILL too.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The last `lines` lines etcd logged.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.dir.join("etcd.log"), lines)
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- etcd log tail ---\n{}", self.log_tail(30));
        }
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One `GET /health` over HTTP/1.0; true when etcd reports healthy.
fn health(addr: SocketAddr) -> std::io::Result<bool> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.set_write_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(b"GET /health HTTP/1.0\r\nHost: etcd\r\n\r\n")?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    Ok(body.contains("\"health\":\"true\""))
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
