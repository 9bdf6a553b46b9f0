//! The command line: bad flags exit 2 naming the flag, sizes take units,
//! `serve` is the default subcommand.

mod common;

use common::*;
use std::io::Read;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

/// Runs the server binary with `args`, expecting it to exit on its own
/// within 20 s (it is killed and the test fails otherwise).
fn run(args: &[&str]) -> Output {
    let mut child = server_command()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn server binary");
    // Drain both pipes in threads so the child never blocks on them.
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = so.read_to_end(&mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = se.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let err = t_err.join().unwrap();
            panic!(
                "`{args:?}` did not exit within 20 s; stderr:\n{}",
                String::from_utf8_lossy(&err)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: t_out.join().unwrap(),
        stderr: t_err.join().unwrap(),
    }
}

/// Exit status 2 and a message on stderr that names `flag`.
fn assert_usage_error(args: &[&str], flag: &str) {
    let out = run(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "`{args:?}`: exit status {:?}; stderr:\n{err}",
        out.status
    );
    assert!(
        err.contains(flag),
        "`{args:?}`: stderr does not name {flag}:\n{err}"
    );
}

#[test]
fn zero_shards_is_a_usage_error() {
    assert_usage_error(
        &["serve", "--listen", "127.0.0.1:0", "--shards", "0"],
        "--shards",
    );
}

#[test]
fn memory_without_a_number_is_a_usage_error() {
    assert_usage_error(
        &["serve", "--listen", "127.0.0.1:0", "--memory", "lots"],
        "--memory",
    );
}

#[test]
fn bad_max_value_is_a_usage_error() {
    assert_usage_error(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--max-value",
            "4 parsecs",
        ],
        "--max-value",
    );
}

#[test]
fn unparsable_listen_address_is_a_usage_error() {
    assert_usage_error(&["serve", "--listen", "nonsense"], "--listen");
}

#[test]
fn unknown_flag_is_a_usage_error() {
    assert_usage_error(
        &["serve", "--listen", "127.0.0.1:0", "--frobnicate", "3"],
        "--frobnicate",
    );
}

#[test]
fn flag_errors_without_the_serve_subcommand() {
    assert_usage_error(&["--shards", "0"], "--shards");
    assert_usage_error(&["--no-such-flag"], "--no-such-flag");
}

#[test]
fn help_lists_the_flags() {
    let out = run(&["serve", "--help"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--listen",
        "--shards",
        "--memory",
        "--max-value",
        "--node-id",
        "--max-connections",
        "--idle-timeout",
    ] {
        assert!(
            text.contains(flag),
            "`serve --help` does not mention {flag}:\n{text}"
        );
    }
}

#[tokio::test]
async fn serve_is_the_default_subcommand() {
    let node = Node::builder()
        .without_subcommand()
        .node_id("no-subcommand")
        .start();
    let mut c = node.client().await;
    let s = stats(&mut c).await;
    assert_eq!(s.node_id, "no-subcommand");
    assert_eq!(s.shards.len(), 2);
    node.assert_healthy().await;
}

#[tokio::test]
async fn sizes_accept_units() {
    // (--memory, --shards, expected capacity per shard)
    let cases: [(&str, usize, u64); 4] = [
        ("16MiB", 2, 8 * MIB),
        ("1GiB", 2, 512 * MIB),
        ("65536", 1, 64 * KIB),
        ("64KiB", 2, 32 * KIB),
    ];
    for (memory, shards, per_shard) in cases {
        // --max-value may not exceed a shard's share of --memory.
        let node = Node::builder()
            .memory(memory)
            .shards(shards)
            .max_value("16KiB")
            .start();
        let mut c = node.client().await;
        let s = stats(&mut c).await;
        assert_eq!(s.shards.len(), shards, "--memory {memory}");
        for sh in &s.shards {
            assert_eq!(
                sh.capacity_bytes, per_shard,
                "--memory {memory} --shards {shards}"
            );
        }
    }
    // --max-value with a unit: 64 KiB accepted, well above it refused.
    let node = Node::builder().max_value("64KiB").start();
    let mut c = node.client().await;
    set(&mut c, "", "at-limit", &value_for("a", 64 * 1024)).await;
    let r = c
        .set(set_req("", "over", &value_for("b", 200 * 1024), 0))
        .await;
    let s = r.expect_err("a 200 KiB value passed --max-value 64KiB");
    assert!(
        matches!(
            s.code(),
            tonic::Code::ResourceExhausted | tonic::Code::InvalidArgument
        ),
        "{s:?}"
    );
}

#[test]
fn a_busy_port_is_reported() {
    // Another socket holds the port (without SO_REUSEPORT): the node must
    // fail to start and say so, not hang or serve nothing.
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = holder.local_addr().unwrap().to_string();
    let out = run(&[
        "serve", "--listen", &addr, "--shards", "1", "--memory", "16MiB",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "started on a busy port; stderr:\n{err}"
    );
    assert!(
        err.contains(&addr) || err.to_lowercase().contains("address"),
        "the error should name the address:\n{err}"
    );
    drop(holder);
}

#[test]
fn the_shipped_example_config_is_valid() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/dist/shardcache.toml");
    let out = run(&["check-config", "--config", path]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("http: Some(") && text.contains("10.0.0.5:7071"),
        "{text}"
    );
}

#[test]
fn impossible_values_are_refused_naming_the_option() {
    for (args, names) in [
        (&["--memory", "0"][..], "--memory"),
        (&["--max-value", "0"], "--max-value"),
        (&["--max-value", "5GiB"], "--max-value"),
        (&["--idle-timeout", "0"], "--idle-timeout"),
        (&["--peer-timeout", "0"], "--peer-timeout"),
        (&["--spin-before-park", "10h"], "--spin-before-park"),
        (&["--conn-buffer", "1KiB"], "--conn-buffer"),
        // Combinations: a value that could never be stored or received.
        (&["--max-value", "1MiB", "--memory", "64KiB"], "--max-value"),
        (
            &["--max-value", "1MiB", "--conn-buffer", "512KiB"],
            "--conn-buffer",
        ),
    ] {
        let mut argv = vec!["check-config"];
        argv.extend_from_slice(args);
        let out = run(&argv);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{argv:?} accepted:\n{err}");
        assert!(
            err.contains(names),
            "{argv:?}: the error should name {names}:\n{err}"
        );
        // The node refuses the same values at start-up.
        argv[0] = "serve";
        argv.extend_from_slice(&["--listen", "127.0.0.1:0", "--http", "off"]);
        let out = run(&argv);
        assert_eq!(out.status.code(), Some(2), "{argv:?} started");
    }
}
