//! End-to-end: runs the `shardcache-loadtest` binary against a real server
//! process and checks the JSON report's bookkeeping, including a server that
//! is killed mid-run.
//!
//! The server is `<target>/debug/shardcache` (built on demand with `cargo
//! build -p shardcache --bin shardcache`), or any server of the same contract
//! named by LOADTEST_SERVER_BIN (e.g. shared/bench's tonic-ref), started as
//! `BIN serve --listen 127.0.0.1:PORT --shards 2 --memory 64MiB`.

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const START_DEADLINE: Duration = Duration::from_secs(20);
/// Generous: these runs take seconds; this only stops a hung run.
const RUN_DEADLINE: Duration = Duration::from_secs(120);

struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

fn server_bin() -> (PathBuf, bool) {
    if let Some(p) = std::env::var_os("LOADTEST_SERVER_BIN") {
        return (PathBuf::from(p), true);
    }
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_shardcache-loadtest")).with_file_name("shardcache");
    if !bin.exists() {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "shardcache", "--bin", "shardcache"])
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build -p shardcache failed");
    }
    assert!(bin.exists(), "no server binary at {}", bin.display());
    (bin, false)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

/// Starts the server and waits (up to 20 s) for its "listening on ADDR" line.
fn start_server() -> Server {
    let (bin, custom) = server_bin();
    // tonic-ref echoes the configured address, so it gets a concrete port;
    // shardcache picks one itself and reports it.
    let listen = if custom {
        format!("127.0.0.1:{}", free_port())
    } else {
        "127.0.0.1:0".to_string()
    };
    let mut args = vec![
        "serve", "--listen", &listen, "--shards", "2", "--memory", "64MiB",
    ];
    if !custom {
        // Tests run side by side: no gateway on its default port.
        args.extend(["--http", "off"]);
    }
    let mut child = Command::new(&bin)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = mpsc::channel::<String>();
    // Keeps draining stderr for the server's whole life so it never blocks on logging.
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + START_DEADLINE;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = match rx.recv_timeout(left) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("server did not report `listening on` within 20 s; stderr: {seen:#?}");
            }
        };
        if let Some(rest) = line.split("listening on ").nth(1) {
            let token = rest
                .split(|c: char| c.is_whitespace() || c == ',' || c == ')')
                .next()
                .unwrap_or("");
            let mut addr: SocketAddr = token
                .parse()
                .unwrap_or_else(|e| panic!("bad address in {line:?}: {e}"));
            if addr.port() == 0 {
                addr = listen.parse().expect("listen address");
            }
            return Server { child, addr };
        }
        seen.push(line);
    }
}

fn loadtest(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_shardcache-loadtest"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start shardcache-loadtest")
}

/// Waits for a loadtest run, killing it past the deadline.
fn finish(mut child: Child) -> Output {
    let deadline = Instant::now() + RUN_DEADLINE;
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("shardcache-loadtest did not finish within {RUN_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("collect output")
}

/// Parses the single JSON object and checks the invariants every run must keep.
fn report(out: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("panicked"),
        "the load generator panicked: {stderr}"
    );
    let j: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!("stdout is not one JSON object ({e}): {stdout}\nstderr: {stderr}")
    });
    let sum = |v: &Value| -> u64 {
        v.as_object()
            .expect("an object")
            .values()
            .map(|n| n.as_u64().expect("a count"))
            .sum()
    };
    let requests = j["requests"].as_u64().expect("requests");
    let by_status = sum(&j["by_status"]);
    let transport = sum(&j["transport_errors"]);
    assert_eq!(
        requests,
        by_status + transport,
        "requests != sum(by_status) + sum(transport_errors): {j}"
    );
    assert_eq!(j["ok"], j["by_status"]["OK"]);
    j
}

#[test]
fn counts_add_up_and_preloaded_keys_all_hit() {
    let server = start_server();
    let target = server.addr.to_string();
    let out = finish(loadtest(&[
        "--target",
        &target,
        "--requests",
        "20000",
        "--connections",
        "4",
        "--inflight",
        "8",
        "--preload",
        "--keys",
        "1000",
        "--get-ratio",
        "1.0",
        "--json",
    ]));
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let j = report(&out);
    assert_eq!(j["requests"], 20000);
    assert_eq!(j["ok"], 20000, "{j}");
    assert_eq!(j["gets"], 20000);
    assert_eq!(j["hits"], 20000);
    assert_eq!(j["hit_ratio"], 1.0);
    assert_eq!(j["mode"], "closed");
    assert_eq!(j["preload"]["requests"], 1000);
    assert_eq!(j["preload"]["ok"], 1000);
    assert!(j["p50"].as_u64().unwrap() <= j["p99"].as_u64().unwrap());
    assert!(j["p99"].as_u64().unwrap() <= j["max"].as_u64().unwrap());
}

#[test]
fn open_loop_counts_every_scheduled_request() {
    let server = start_server();
    let target = server.addr.to_string();
    let out = finish(loadtest(&[
        "--target",
        &target,
        "--rate",
        "2000",
        "--duration",
        "1s",
        "--connections",
        "2",
        "--keys",
        "100",
        "--value-size",
        "16..=256",
        "--zipf",
        "0.99",
        "--json",
    ]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j = report(&out);
    // Every slot of the schedule is a request, answered or not.
    assert_eq!(j["requests"], 2000, "{j}");
    assert!(j["ok"].as_u64().unwrap() > 0);
    assert_eq!(j["mode"], "open");
    assert_eq!(j["rate"], 2000.0);
}

#[test]
fn server_killed_mid_run_is_counted_not_fatal() {
    let mut server = start_server();
    let target = server.addr.to_string();
    let run = loadtest(&[
        "--target",
        &target,
        "--duration",
        "4s",
        "--connections",
        "4",
        "--inflight",
        "8",
        "--keys",
        "1000",
        "--json",
    ]);
    std::thread::sleep(Duration::from_millis(1500));
    server.kill();
    let out = finish(run);
    // Exit 0: requests were answered before the kill; the errors are data.
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let j = report(&out);
    assert!(j["ok"].as_u64().unwrap() > 0, "{j}");
    let transport = j["transport_errors"].as_object().unwrap();
    assert!(
        !transport.is_empty(),
        "in-flight requests at the kill must count: {j}"
    );
    // The tool kept trying to reconnect for the rest of the run.
    assert!(j["connect_failures"].as_u64().unwrap() > 0, "{j}");
}

#[test]
fn requests_bound_run_gives_up_when_the_server_is_gone() {
    let mut server = start_server();
    let target = server.addr.to_string();
    let run = loadtest(&[
        "--target",
        &target,
        "--requests",
        "1000000000",
        "--connections",
        "2",
        "--give-up",
        "1s",
        "--json",
    ]);
    std::thread::sleep(Duration::from_millis(1000));
    server.kill();
    let started = Instant::now();
    let out = finish(run);
    assert!(started.elapsed() < Duration::from_secs(60));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j = report(&out);
    assert!(j["ok"].as_u64().unwrap() > 0);
    assert!(j["requests"].as_u64().unwrap() < 1_000_000_000);
}

/// Sends `sig` (e.g. "STOP", "CONT") to the server process.
fn signal(server: &Server, sig: &str) {
    let status = Command::new("kill")
        .args([&format!("-{sig}"), &server.child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{sig} failed");
}

#[test]
fn requests_bound_run_ends_when_the_server_hangs() {
    // A stopped server keeps its sockets open (the kernel even accepts new
    // connections) but never answers: without a clock the run must still end.
    let mut server = start_server();
    let target = server.addr.to_string();
    let run = loadtest(&[
        "--target",
        &target,
        "--requests",
        "1000000000",
        "--connections",
        "2",
        "--inflight",
        "4",
        "--give-up",
        "1s",
        "--connect-timeout",
        "500ms",
        "--json",
    ]);
    std::thread::sleep(Duration::from_millis(1000));
    signal(&server, "STOP");
    let started = Instant::now();
    let out = finish(run);
    let took = started.elapsed();
    signal(&server, "CONT");
    server.kill();
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let j = report(&out);
    assert!(j["ok"].as_u64().unwrap() > 0, "{j}");
    // Every request in flight at the stop timed out: 2 connections x 4.
    assert_eq!(j["transport_errors"]["timeout"], 8, "{j}");
    assert!(
        took < Duration::from_secs(60),
        "the run went on for {took:?} against a hung server"
    );
}

#[test]
fn bad_flags_exit_2() {
    let out = finish(loadtest(&["--connections", "0"]));
    assert_eq!(out.status.code(), Some(2));
    let out = finish(loadtest(&["--keys", "100000", "--key-size", "3"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--key-size"));
}

#[test]
fn nothing_listening_exits_1_with_counted_errors() {
    let port = free_port();
    let target = format!("127.0.0.1:{port}");
    let out = finish(loadtest(&[
        "--target",
        &target,
        "--rate",
        "100",
        "--duration",
        "500ms",
        "--connections",
        "1",
        "--json",
    ]));
    assert_eq!(out.status.code(), Some(1));
    let j = report(&out);
    assert_eq!(j["requests"], 50);
    assert_eq!(j["transport_errors"]["not_connected"], 50);
}

#[test]
fn stock_tonic_and_the_routing_client_drive_the_same_workload() {
    let server = start_server();
    let target = server.addr.to_string();
    for (client, mode, batch) in [
        ("tonic", "closed (tonic)", "1"),
        ("sharded", "closed (shardcache-client)", "1"),
        ("tonic", "closed (tonic)", "10"),
        ("sharded", "closed (shardcache-client)", "10"),
    ] {
        let args = [
            "--target",
            &target,
            "--client",
            client,
            "--duration",
            "1s",
            "--connections",
            "2",
            "--inflight",
            "4",
            "--preload",
            "--keys",
            "500",
            "--get-ratio",
            "0.8",
            "--json",
            "--batch",
            batch,
        ];
        let out = finish(loadtest(&args));
        assert!(
            out.status.success(),
            "--client {client} --batch {batch}: exit {:?}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let j = report(&out);
        assert_eq!(j["batch"].to_string(), batch);
        assert_eq!(j["mode"], mode);
        assert_eq!(j["preload"]["ok"], 500, "{j}");
        let requests = j["requests"].as_u64().unwrap();
        assert!(requests > 100, "--client {client}: {j}");
        assert_eq!(j["ok"], j["requests"], "--client {client}: {j}");
        // Every key was preloaded: every Get hits.
        assert_eq!(j["hits"], j["gets"], "--client {client}: {j}");
        assert!(j["gets"].as_u64().unwrap() > 0);
    }
}
