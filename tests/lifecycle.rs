//! Start-up and shutdown as a service manager sees them: sd_notify READY=1
//! once every shard listens and STOPPING=1 on SIGTERM; SIGTERM with calls in
//! flight ends every call with OK or UNAVAILABLE (never INTERNAL or a hang)
//! and the process exits 0. (tonic's client may also report CANCELLED for a
//! request it queued but never sent; that one is counted as refused.)

mod common;

use common::pb::cache_client::CacheClient;
use common::{parse_listening, server_bin, set_req, wait_for_log, Node};
use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn start(extra_env: &[(&str, &str)]) -> (Child, std::net::SocketAddr) {
    let mut cmd = Command::new(server_bin());
    cmd.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--shards",
        "2",
        "--memory",
        "64MiB",
        "--http",
        "127.0.0.1:0",
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("start shardcache");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(addr) = parse_listening(&line) {
                let _ = tx.send(addr);
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("node never logged 'listening on'");
    (child, addr)
}

fn sigterm(child: &Child) {
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(ok.success());
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the node did not exit within {within:?} of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn notify_socket_sees_ready_then_stopping() {
    let dir = std::env::temp_dir().join(format!("shardcache-notify-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("notify.sock");
    let _ = std::fs::remove_file(&path);
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let (mut child, _addr) = start(&[("NOTIFY_SOCKET", path.to_str().unwrap())]);
    let mut buf = [0u8; 512];
    let n = sock.recv(&mut buf).expect("no READY=1 datagram");
    let ready = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(
        ready.lines().any(|l| l == "READY=1"),
        "first datagram: {ready:?}"
    );
    sigterm(&child);
    let n = sock.recv(&mut buf).expect("no STOPPING=1 datagram");
    let stopping = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(
        stopping.lines().any(|l| l == "STOPPING=1"),
        "second datagram: {stopping:?}"
    );
    assert!(wait_exit(&mut child, Duration::from_secs(15)).success());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sigterm_with_calls_in_flight_loses_none_and_exits_zero() {
    let (mut child, addr) = start(&[]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (ok, unavailable, other) = rt.block_on(async move {
        let mut tasks = Vec::new();
        for t in 0..8 {
            let url = format!("http://{addr}");
            tasks.push(tokio::spawn(async move {
                let mut c = CacheClient::connect(url).await.expect("connect");
                let (mut ok, mut unavailable, mut other) = (0u32, 0u32, Vec::new());
                let until = Instant::now() + Duration::from_millis(1500);
                let mut i = 0u64;
                while Instant::now() < until {
                    i += 1;
                    let call = c.set(set_req("", &format!("k-{t}-{i}"), b"v", 0));
                    match tokio::time::timeout(Duration::from_secs(10), call).await {
                        Err(_) => other.push("hung for 10 s".to_string()),
                        Ok(Ok(r)) => {
                            assert!(r.into_inner().stored);
                            ok += 1
                        }
                        Ok(Err(s)) if s.code() == tonic::Code::Unavailable => {
                            unavailable += 1;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        // hyper's own cancellation of a request it had queued
                        // for a connection that closed: it never reached the
                        // server (no stream was opened), so it is safe to retry.
                        Ok(Err(s))
                            if s.code() == tonic::Code::Cancelled
                                && s.message() == "operation was canceled" =>
                        {
                            unavailable += 1
                        }
                        Ok(Err(s)) => other.push(format!("{:?}: {}", s.code(), s.message())),
                    }
                }
                (ok, unavailable, other)
            }));
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
        sigterm(&child);
        let mut totals = (0, 0, Vec::new());
        for t in tasks {
            let (o, u, x) = t.await.unwrap();
            totals.0 += o;
            totals.1 += u;
            totals.2.extend(x);
        }
        let status = wait_exit(&mut child, Duration::from_secs(15));
        assert!(status.success(), "exit status {status:?}");
        totals
    });
    assert!(
        other.is_empty(),
        "calls ended with neither OK nor UNAVAILABLE: {:?}",
        &other[..other.len().min(5)]
    );
    assert!(ok > 0, "no call succeeded before shutdown");
    assert!(
        unavailable > 0,
        "calls after shutdown should see UNAVAILABLE"
    );
}

/// The shipped unit: `systemctl reload` must not stop the node: its
/// ExecReload sends SIGHUP, which reloads the TLS files and nothing else
/// (a node without TLS logs that there is nothing to reload and serves
/// on); and `systemd-analyze verify` finds nothing wrong with the unit.
#[test]
fn the_shipped_systemd_unit_verifies_and_its_reload_keeps_the_node() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/dist/systemd/shardcache.service"
    );
    let unit = std::fs::read_to_string(path).unwrap();
    let reloads: Vec<&str> = unit
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("ExecReload="))
        .collect();
    assert_eq!(reloads, ["ExecReload=/bin/kill -HUP $MAINPID"], "{path}");
    let node = Node::builder().shards(1).start();
    node.signal("HUP");
    wait_for_log(&node, "nothing to reload");
    node.assert_healthy_blocking();
    // verify checks that ExecStart exists: point it at a binary that does.
    let dir = std::env::temp_dir().join(format!("unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join("shardcache.service");
    std::fs::write(
        &copy,
        unit.replace("/usr/local/bin/shardcache", &server_bin()),
    )
    .unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("systemd-analyze (Debian package systemd; .ci/test installs it)");
    let _ = std::fs::remove_dir_all(&dir);
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && text.trim().is_empty(),
        "systemd-analyze verify: {text}"
    );
}
