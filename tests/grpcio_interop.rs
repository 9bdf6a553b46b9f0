//! Interop with a second, independent stock client: Python grpcio (gRPC
//! C-core's HTTP/2 and HPACK, not hyper/h2). Runs
//! tests/clients/grpcio_client.py against a node and checks its JSON report.
//!
//! The Python comes from SHARDCACHE_TEST_PYTHON, else
//! `<crate>/target/test-venv/bin/python3`, which `./.ci/test` creates (with
//! grpcio, grpcio-tools and protobuf). A missing interpreter FAILS the test.

mod common;

use common::*;
use serde_json::{json, Value};
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn python_grpcio_client_interoperates() {
    let py = test_python();
    assert!(
        py.exists(),
        "no Python for the grpcio interop test at {} (set SHARDCACHE_TEST_PYTHON, or run \
         `./.ci/test`, which creates target/test-venv with grpcio, grpcio-tools and protobuf)",
        py.display()
    );
    let node = Node::builder().node_id("grpcio-interop").start();
    let root = env!("CARGO_MANIFEST_DIR");
    let mut child = Command::new(&py)
        .arg(format!("{root}/tests/clients/grpcio_client.py"))
        .arg("--target")
        .arg(node.addr.to_string())
        .arg("--proto")
        .arg(format!("{root}/proto/cache.proto"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env_remove("GRPC_TRACE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {}: {e} (run `./.ci/test` to create the venv)",
                py.display()
            )
        });
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = so.read_to_string(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = se.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "grpcio client did not finish within 120 s; stderr:\n{}",
                t_err.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = t_out.join().unwrap();
    let err = t_err.join().unwrap();
    assert!(
        status.success(),
        "grpcio client failed ({status}); if grpc/grpc_tools are missing, run `./.ci/test`.\nstdout:\n{out}\nstderr:\n{err}"
    );
    let line = out
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .unwrap_or_else(|| {
            panic!("no JSON line from the grpcio client.\nstdout:\n{out}\nstderr:\n{err}")
        });
    let r: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("bad JSON {line:?}: {e}"));
    assert!(
        r.get("error").is_none(),
        "grpcio scenario aborted: {r}\nstderr:\n{err}"
    );

    let b = |k: &str| {
        r[k].as_bool()
            .unwrap_or_else(|| panic!("{k} missing or not a bool in {r}"))
    };
    let u = |k: &str| {
        r[k].as_u64()
            .unwrap_or_else(|| panic!("{k} missing or not a number in {r}"))
    };
    let s = |k: &str| {
        r[k].as_str()
            .unwrap_or_else(|| panic!("{k} missing or not a string in {r}"))
            .to_string()
    };

    assert!(b("set_stored"), "{r}");
    assert!(b("get_found"), "{r}");
    assert_eq!(s("get_value"), "hello", "{r}");
    assert!(!b("miss_found"), "{r}");
    assert_eq!(u("miss_value_len"), 0, "{r}");
    assert!(b("delete_deleted"), "{r}");
    assert!(!b("delete_again_deleted"), "{r}");
    assert!(!b("get_after_delete_found"), "{r}");
    assert!(b("binary_roundtrip"), "{r}");
    assert!(b("big_roundtrip"), "1 MiB value through grpcio: {r}");
    assert_eq!(s("empty_key_code"), "INVALID_ARGUMENT", "{r}");
    let m = s("empty_key_message").to_lowercase();
    assert!(m.contains("key") && m.contains("empty"), "{r}");
    assert_eq!(s("long_key_code"), "INVALID_ARGUMENT", "{r}");
    assert_eq!(u("concurrent_sets_stored"), 200, "{r}");
    assert_eq!(u("concurrent_gets_ok"), 200, "{r}");
    assert_eq!(s("stats_node_id"), "grpcio-interop", "{r}");
    assert_eq!(u("stats_shards"), 2, "{r}");
    assert!(b("stats_total_is_sum"), "{r}");
    let t = &r["stats_total"];
    // Sets: k1, bin, big, 200 concurrent. Deletes: one that existed.
    assert_eq!(t["sets"].as_u64(), Some(203), "{r}");
    assert_eq!(t["deletes"].as_u64(), Some(1), "{r}");
    assert_eq!(t["items"].as_u64(), Some(202), "{r}");
    assert_eq!(t["capacity_bytes"].as_u64(), Some(64 * MIB), "{r}");

    // Batch calls: per-item results in order, with per-item errors.
    let set_many = r["set_many"].as_array().expect("set_many");
    assert_eq!(set_many.len(), 50, "{r}");
    for (i, x) in set_many.iter().enumerate() {
        let want = if i == 3 {
            json!([false, 3])
        } else {
            json!([true, 0])
        };
        assert_eq!(x, &want, "SetMany item {i}: {r}");
    }
    let get_many = r["get_many"].as_array().expect("get_many");
    assert_eq!(get_many.len(), 52, "{r}");
    for (i, x) in get_many.iter().enumerate() {
        let want = match i {
            3 | 50 => json!([false, "", 0]),
            51 => json!([false, "", 3]),
            _ => json!([true, format!("b{i}"), 0]),
        };
        assert_eq!(x, &want, "GetMany item {i}: {r}");
    }
    assert!(
        s("get_many_bad_message").contains("control character"),
        "{r}"
    );
    assert_eq!(r["delete_many"], json!([true, false]), "{r}");

    // The node is fine for a tonic client afterwards, and saw the same data.
    common::block_on(async {
        let mut c = node.client().await;
        assert_eq!(
            get(&mut c, "py", "bin").await,
            Some((0..=255u8).collect::<Vec<u8>>())
        );
        assert_eq!(get(&mut c, "conc", "k7").await.as_deref(), Some(&b"v7"[..]));
    });
    node.assert_alive();
}
