//! TLS on both ports, with real clients that are not ours: tonic over
//! rustls, Python grpcio with root certificates (gRPC C-core's TLS), curl
//! to the gateway. Certificates are made per test with rcgen (a CA, a
//! server certificate for localhost and 127.0.0.1, client certificates,
//! a second CA nobody trusts).

mod common;

use common::certs::{arg, curl, guard_events_tls, https, tls_channel, Ca, Dir};
use common::*;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// A node on TLS with a server certificate from `ca`, files in `dir`.
fn tls_node(dir: &Dir, ca: &Ca, client_ca: Option<&Path>) -> Node {
    let (cert, key) = ca.leaf("node", false, false);
    let cert = dir.write("node.pem", &cert);
    let key = dir.write("node.key", &key);
    let mut args = vec![
        "--tls-cert".to_string(),
        arg(&cert),
        "--tls-key".to_string(),
        arg(&key),
    ];
    if let Some(ca) = client_ca {
        args.push("--tls-client-ca".into());
        args.push(arg(ca));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Node::builder().shards(2).args(&args).start()
}

/// Set then Get of `key` on `ch`; Err names the failing call.
async fn set_get(ch: Channel, key: &str) -> Result<Vec<u8>, String> {
    let mut c = pb::cache_client::CacheClient::new(ch);
    let value = format!("value of {key}").into_bytes();
    c.set(set_req("tls", key, &value, 0))
        .await
        .map_err(|s| format!("Set: {s:?}"))?;
    let r = c
        .get(req("tls", key))
        .await
        .map_err(|s| format!("Get: {s:?}"))?
        .into_inner();
    Ok(r.value)
}

#[test]
fn tonic_grpcio_and_curl_reach_a_tls_node_and_plaintext_is_refused() {
    let dir = Dir::new("clients");
    let ca = Ca::new("test CA");
    let ca_path = dir.write("ca.pem", &ca.pem());
    let node = tls_node(&dir, &ca, None);

    // tonic over rustls.
    block_on(async {
        let ch = tls_channel(&node, &ca.pem(), None).await.unwrap();
        assert_eq!(
            set_get(ch.clone(), "tonic").await.unwrap(),
            b"value of tonic"
        );
        // A value of many TLS records each way.
        let big: Vec<u8> = (0..1 << 20).map(|i| (i * 31 % 251) as u8).collect();
        let mut c = pb::cache_client::CacheClient::new(ch)
            .max_decoding_message_size(8 << 20)
            .max_encoding_message_size(8 << 20);
        c.set(set_req("tls", "big", &big, 0)).await.unwrap();
        let r = c.get(req("tls", "big")).await.unwrap().into_inner();
        assert!(
            r.found && r.value == big,
            "1 MiB value did not round-trip over TLS"
        );
    });

    // Python grpcio (C-core's TLS) with the CA as root certificate.
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new(test_python())
        .arg(format!("{root}/tests/clients/grpcio_tls.py"))
        .args(["--target", &node.addr.to_string()])
        .args(["--proto", &format!("{root}/proto/cache.proto")])
        .args(["--ca", &arg(&ca_path)])
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("python for grpcio (./.ci/test makes target/test-venv)");
    let report = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(report.trim()).unwrap_or_else(|e| {
        panic!(
            "grpcio_tls.py printed no JSON ({e}): {report}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(v["set"], "OK", "{v}");
    assert_eq!(v["get"], "value from grpcio", "{v}");

    // curl to the gateway, verifying with --cacert.
    let (resolve, url) = https(&node, "/v1/tls/curl");
    let (ok, text) = curl(&[
        "--resolve",
        &resolve,
        "--cacert",
        &arg(&ca_path),
        "-X",
        "PUT",
        "--data-binary",
        "from curl",
        &url,
    ]);
    assert!(ok, "PUT over TLS: {text}");
    let (ok, text) = curl(&["--resolve", &resolve, "--cacert", &arg(&ca_path), &url]);
    assert!(ok, "GET over TLS: {text}");
    assert_eq!(text, "from curl");
    let (resolve, healthz) = https(&node, "/healthz");
    let (ok, text) = curl(&["--resolve", &resolve, "--cacert", &arg(&ca_path), &healthz]);
    assert!(ok, "GET /healthz over TLS: {text}");
    // TLS 1.2 too.
    let (ok, text) = curl(&[
        "--resolve",
        &resolve,
        "--cacert",
        &arg(&ca_path),
        "--tls-max",
        "1.2",
        &healthz,
    ]);
    assert!(ok, "GET /healthz over TLS 1.2: {text}");
    // curl without the CA does not trust the node.
    let (ok, _) = curl(&["--resolve", &resolve, &healthz]);
    assert!(!ok, "curl trusted a certificate from an unknown CA");

    // A plaintext gRPC client is told to use TLS (GOAWAY
    // INADEQUATE_SECURITY) and counted; a plaintext HTTP client fails.
    block_on(async {
        let plain = Endpoint::from_shared(node.url())
            .unwrap()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(5));
        let r = match plain.connect().await {
            Ok(ch) => set_get(ch, "plain").await,
            Err(e) => Err(format!("{e:?}")),
        };
        assert!(r.is_err(), "a plaintext client was served by a TLS node");
    });
    let (ok, _) = curl(&[&format!("http://{}/healthz", node.http_addr())]);
    assert!(!ok, "the gateway answered plaintext HTTP");
    assert!(guard_events_tls(&node, &ca_path, None, "plaintext_refused") >= 1.0);
    node.assert_alive();
}

#[test]
fn mutual_tls_admits_only_clients_with_a_trusted_certificate() {
    let dir = Dir::new("mtls");
    let ca = Ca::new("test CA");
    let stranger = Ca::new("someone else's CA");
    let ca_path = dir.write("ca.pem", &ca.pem());
    let node = tls_node(&dir, &ca, Some(&ca_path));
    let (good_cert, good_key) = ca.leaf("app", true, false);
    let (bad_cert, bad_key) = stranger.leaf("intruder", true, false);

    block_on(async {
        let ch = tls_channel(&node, &ca.pem(), Some((&good_cert, &good_key)))
            .await
            .unwrap();
        assert_eq!(set_get(ch, "mtls").await.unwrap(), b"value of mtls");

        for (who, identity) in [
            ("no client certificate", None),
            (
                "a certificate from an untrusted CA",
                Some((bad_cert.as_str(), bad_key.as_str())),
            ),
        ] {
            let r = match tls_channel(&node, &ca.pem(), identity).await {
                Ok(ch) => set_get(ch, "mtls").await,
                Err(e) => Err(e),
            };
            assert!(r.is_err(), "a client with {who} was served");
        }
    });

    // The gateway asks for certificates too.
    let good_cert_path = dir.write("app.pem", &good_cert);
    let good_key_path = dir.write("app.key", &good_key);
    let (resolve, url) = https(&node, "/healthz");
    let (ok, text) = curl(&["--resolve", &resolve, "--cacert", &arg(&ca_path), &url]);
    assert!(
        !ok,
        "the gateway served a client without a certificate: {text}"
    );
    let (ok, text) = curl(&[
        "--resolve",
        &resolve,
        "--cacert",
        &arg(&ca_path),
        "--cert",
        &arg(&good_cert_path),
        "--key",
        &arg(&good_key_path),
        &url,
    ]);
    assert!(
        ok,
        "a client with a trusted certificate was refused: {text}"
    );

    let failed = guard_events_tls(
        &node,
        &ca_path,
        Some((&good_cert_path, &good_key_path)),
        "tls_handshake_failed",
    );
    assert!(failed >= 3.0, "rejected handshakes counted: {failed}");
    node.assert_alive();
}

#[test]
fn sighup_reloads_the_certificate_and_open_connections_stay() {
    let dir = Dir::new("reload");
    let first = Ca::new("first CA");
    let second = Ca::new("second CA");
    let node = tls_node(&dir, &first, None);

    block_on(async {
        let open = tls_channel(&node, &first.pem(), None).await.unwrap();
        assert!(set_get(open.clone(), "before").await.is_ok());

        // New files in place, then SIGHUP.
        let (cert, key) = second.leaf("node", false, false);
        dir.write("node.pem", &cert);
        dir.write("node.key", &key);
        node.signal("HUP");
        wait_for_log(&node, "TLS certificate reloaded");
        node.assert_alive();

        // The connection opened before the reload still works.
        assert!(set_get(open, "after, old connection").await.is_ok());
        // New connections get the new certificate.
        let ch = tls_channel(&node, &second.pem(), None).await.unwrap();
        assert!(set_get(ch, "after, new CA").await.is_ok());
        let r = match tls_channel(&node, &first.pem(), None).await {
            Ok(ch) => set_get(ch, "after, old CA").await,
            Err(e) => Err(e),
        };
        assert!(r.is_err(), "a new connection still got the old certificate");

        // A reload that fails keeps serving with what it had.
        dir.write("node.key", "not a key");
        node.signal("HUP");
        wait_for_log(&node, "TLS reload failed");
        let ch = tls_channel(&node, &second.pem(), None).await.unwrap();
        assert!(set_get(ch, "after a failed reload").await.is_ok());
    });
}

/// Runs the binary on `args` and returns (exit code, stderr).
fn run(args: &[&str]) -> (Option<i32>, String) {
    let out = server_command()
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_tls_files_stop_start_up_with_the_option_and_file_named() {
    let dir = Dir::new("bad");
    let ca = Ca::new("test CA");
    let (cert, key) = ca.leaf("node", false, false);
    let (_, other_key) = ca.leaf("other", false, false);
    let (old_cert, old_key) = ca.leaf("old", false, true);
    let cert = dir.write("node.pem", &cert);
    let key = dir.write("node.key", &key);
    let other_key = dir.write("other.key", &other_key);
    let old_cert = dir.write("old.pem", &old_cert);
    let old_key = dir.write("old.key", &old_key);
    let garbage = dir.write("garbage.pem", "hello\n");
    let missing = dir.0.join("missing.pem");
    let (cert, key, other_key, old_cert, old_key, garbage, missing) = (
        arg(&cert),
        arg(&key),
        arg(&other_key),
        arg(&old_cert),
        arg(&old_key),
        arg(&garbage),
        arg(&missing),
    );
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (
            vec!["--tls-cert", &missing, "--tls-key", &key],
            vec!["--tls-cert", &missing, "cannot read"],
        ),
        (
            vec!["--tls-cert", &garbage, "--tls-key", &key],
            vec!["--tls-cert", &garbage, "no certificate in the file"],
        ),
        (
            vec!["--tls-cert", &cert, "--tls-key", &other_key],
            vec!["--tls-key", &other_key, "does not fit --tls-cert"],
        ),
        (
            vec!["--tls-cert", &old_cert, "--tls-key", &old_key],
            vec!["--tls-cert", &old_cert, "expired"],
        ),
        (
            vec![
                "--tls-cert",
                &cert,
                "--tls-key",
                &key,
                "--tls-client-ca",
                &garbage,
            ],
            vec!["--tls-client-ca", &garbage],
        ),
        (vec!["--tls-cert", &cert], vec!["--tls-key"]),
    ];
    for (flags, expected) in &cases {
        for sub in ["serve", "check-config"] {
            let mut argv = vec![sub, "--listen", "127.0.0.1:0", "--http", "off"];
            argv.extend(flags);
            let (code, err) = run(&argv);
            assert_eq!(code, Some(2), "{sub} {flags:?}: exit {code:?}\n{err}");
            for e in expected {
                assert!(err.contains(e), "{sub} {flags:?}: {e:?} not in:\n{err}");
            }
        }
    }
    let (code, err) = run(&["check-config", "--tls-cert", &cert, "--tls-key", &key]);
    assert_eq!(code, Some(0), "good files: {err}");
}

#[test]
fn plaintext_beyond_loopback_logs_what_it_exposes() {
    let node = Node::builder()
        .shards(1)
        .listen("0.0.0.0:0".parse().unwrap())
        .start();
    let log = node.log_tail();
    assert!(
        log.contains("reachable beyond this host") && log.contains("--tls-cert"),
        "{log}"
    );
    let quiet = Node::builder().shards(1).start();
    assert!(!quiet.log_tail().contains("reachable beyond this host"));
}

#[test]
fn etcd_over_mutual_tls_registers_and_a_node_without_a_certificate_cannot() {
    let dir = Dir::new("etcd");
    let ca = Ca::new("etcd CA");
    let ca_path = dir.write("ca.pem", &ca.pem());
    let (server_cert, server_key) = ca.leaf("etcd", false, false);
    let etcd = common::etcd::Etcd::start_tls(
        dir.write("etcd.pem", &server_cert),
        dir.write("etcd.key", &server_key),
        ca_path.clone(),
    );
    let (cert, key) = ca.leaf("cache-node", true, false);
    let (cert, key) = (dir.write("node.pem", &cert), dir.write("node.key", &key));
    let endpoint = etcd.endpoint();
    assert!(endpoint.starts_with("https://"));
    let (ca_arg, cert_arg, key_arg) = (arg(&ca_path), arg(&cert), arg(&key));

    // With the CA and a client certificate: registers, so it serves.
    let node = common::cluster::etcd_member(&etcd, "/tls/", "over-tls")
        .args(&[
            "--etcd-ca",
            &ca_arg,
            "--etcd-cert",
            &cert_arg,
            "--etcd-key",
            &key_arg,
        ])
        .start();
    block_on(async {
        let mut c = node.client().await;
        set(&mut c, "", "k", b"v").await;
        assert_eq!(get(&mut c, "", "k").await.as_deref(), Some(&b"v"[..]));
    });

    // Without a client certificate etcd refuses it: it never serves.
    let mut refused = common::cluster::etcd_member(&etcd, "/tls/", "no-cert")
        .args(&["--etcd-ca", &ca_arg])
        .spawn();
    assert!(
        !refused.listens_within(Duration::from_secs(4)),
        "a node without a client certificate registered in etcd"
    );

    // TLS options with a plaintext endpoint are a configuration error.
    let (code, err) = run(&[
        "check-config",
        "--etcd",
        "http://127.0.0.1:2379",
        "--etcd-ca",
        &ca_arg,
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("https://"), "{err}");
}
