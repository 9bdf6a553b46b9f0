//! The batch calls (GetMany, SetMany, DeleteMany) through a stock tonic
//! client against real nodes: results in request order with per-item
//! errors, across shards and across nodes, the limits on items and on the
//! response, and a dead owner failing only its own items.

mod common;

use common::cluster::{ring_of, rt, static_cluster};
use common::*;
use tonic::transport::Channel;

fn item(group: &str, key: &str, value: &[u8]) -> pb::Request {
    set_req(group, key, value, 0)
}

fn many(items: Vec<pb::Request>) -> pb::ManyRequest {
    pb::ManyRequest { items }
}

fn keys(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

fn value_of(key: &str) -> Vec<u8> {
    format!("value-of-{key}").into_bytes()
}

async fn get_many(c: &mut CacheClient<Channel>, ks: &[String]) -> Vec<pb::GetResult> {
    let items = ks.iter().map(|k| item("", k, b"")).collect();
    c.get_many(many(items)).await.unwrap().into_inner().results
}

#[test]
fn every_item_is_answered_in_order_with_its_own_error() {
    // Four shards on two CPUs: most items are handed to another shard.
    let node = Node::builder()
        .shards(4)
        .max_value("64KiB")
        .memory("64MiB")
        .start();
    let ks = keys("b", 300);
    rt().block_on(async {
        let mut c = node.client().await;
        let mut items: Vec<pb::Request> = ks.iter().map(|k| item("g", k, &value_of(k))).collect();
        items[5] = item("g", "", b"x");
        items[7] = item("g", "line\nbreak", b"x");
        items[9] = item("g", "big", &vec![1u8; 65 * 1024]);
        items[11] = item(&"g".repeat(129), "k", b"x");
        let r = c.set_many(many(items)).await.unwrap().into_inner().results;
        assert_eq!(r.len(), 300);
        for (i, res) in r.iter().enumerate() {
            match i {
                5 | 7 | 11 => {
                    assert_eq!(res.code, tonic::Code::InvalidArgument as i32, "item {i}");
                    assert!(!res.stored);
                }
                9 => {
                    assert_eq!(res.code, tonic::Code::ResourceExhausted as i32);
                    assert!(res.message.contains("--max-value"), "{}", res.message);
                }
                _ => assert!(res.stored && res.code == 0, "item {i}: {res:?}"),
            }
        }
        assert!(r[5].message.contains("key is empty"), "{}", r[5].message);
        assert!(
            r[7].message.contains("control character"),
            "{}",
            r[7].message
        );
        assert!(
            r[11].message.contains("group is 129 bytes"),
            "{}",
            r[11].message
        );

        // Single calls see what the batch stored, in every shard.
        assert_eq!(get(&mut c, "g", &ks[0]).await, Some(value_of(&ks[0])));
        assert_eq!(get(&mut c, "g", &ks[299]).await, Some(value_of(&ks[299])));

        // GetMany: hits, misses (another group, unknown keys) and a bad
        // key, interleaved; each answer where its item was.
        let mut items = Vec::new();
        for k in &ks {
            items.push(item("g", k, b""));
            items.push(item("other", k, b""));
        }
        items.push(item("g", "", b""));
        let r = c.get_many(many(items)).await.unwrap().into_inner().results;
        assert_eq!(r.len(), 601);
        for (i, k) in ks.iter().enumerate() {
            let (hit, miss) = (&r[2 * i], &r[2 * i + 1]);
            if [5, 7, 9, 11].contains(&i) {
                assert!(!hit.found, "item {i} was never stored");
            } else {
                assert!(hit.found && hit.code == 0, "{k}: {hit:?}");
                assert_eq!(hit.value, value_of(k), "{k}");
            }
            assert!(
                !miss.found && miss.code == 0 && miss.value.is_empty(),
                "{miss:?}"
            );
        }
        assert_eq!(r[600].code, tonic::Code::InvalidArgument as i32);

        // DeleteMany: whether each key existed.
        let items = vec![
            item("g", &ks[0], b""),
            item("g", "never", b""),
            item("g", &ks[1], b""),
        ];
        let r = c
            .delete_many(many(items))
            .await
            .unwrap()
            .into_inner()
            .results;
        let deleted: Vec<bool> = r.iter().map(|d| d.deleted).collect();
        assert_eq!(deleted, [true, false, true]);
        assert_eq!(get(&mut c, "g", &ks[0]).await, None);
        assert_eq!(get(&mut c, "g", &ks[2]).await, Some(value_of(&ks[2])));

        // An empty batch is a valid call with no results.
        let r = c.get_many(many(vec![])).await.unwrap().into_inner();
        assert!(r.results.is_empty());
    });
    let m = scrape(&node);
    assert!(
        total(&m, "shardcache_handoffs_total") > 0.0,
        "items crossed shards"
    );
    let calls = |method: &str| {
        m.get(
            "shardcache_requests_total",
            &[("interface", "grpc"), ("method", method), ("status", "OK")],
        )
        .unwrap_or(0.0)
    };
    assert_eq!(calls("set_many"), 1.0);
    assert_eq!(calls("get_many"), 2.0);
    assert_eq!(calls("delete_many"), 1.0);
    node.assert_alive();
}

#[test]
fn batches_are_bounded_in_items_and_response_bytes() {
    let node = Node::builder()
        .max_value("64KiB")
        .memory("64MiB")
        .args(&["--max-batch", "10"])
        .start();
    rt().block_on(async {
        let mut c = node.client().await;
        let items: Vec<pb::Request> = (0..11).map(|i| item("", &format!("k{i}"), b"v")).collect();
        let e = c.set_many(many(items)).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
        assert!(
            e.message().contains("11 items") && e.message().contains("--max-batch"),
            "{}",
            e.message()
        );
        // Nothing of a refused batch is stored.
        assert_eq!(get(&mut c, "", "k0").await, None);

        // Two 60 KiB values pass the response bound (64 KiB + 16 KiB of
        // framing): one of them (whichever answer comes last) fails alone,
        // and a Get of its own serves it. (A SetMany of both passes the
        // request's bound, the same.)
        let big = |b: u8| vec![b; 60 * 1024];
        set(&mut c, "", "a", &big(1)).await;
        set(&mut c, "", "b", &big(2)).await;
        set(&mut c, "", "c", b"small").await;
        let items = vec![item("", "a", &big(1)), item("", "b", &big(2))];
        let e = c.set_many(many(items)).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
        let ks: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let r = get_many(&mut c, &ks).await;
        let summary: Vec<(usize, i32, &str)> = r
            .iter()
            .map(|g| (g.value.len(), g.code, g.message.as_str()))
            .collect();
        let failed: Vec<usize> = (0..2).filter(|&i| r[i].code != 0).collect();
        assert_eq!(failed.len(), 1, "{summary:?}");
        let (f, ok) = (failed[0], 1 - failed[0]);
        assert_eq!(
            r[f].code,
            tonic::Code::ResourceExhausted as i32,
            "{summary:?}"
        );
        assert!(r[f].message.contains("call of its own"), "{summary:?}");
        assert!(
            r[ok].found && r[ok].value == big(ok as u8 + 1),
            "{summary:?}"
        );
        assert!(r[2].value == b"small", "{summary:?}");
        assert!(get(&mut c, "", &ks[f]).await == Some(big(f as u8 + 1)));
    });
    node.assert_alive();
}

#[test]
fn a_batch_spans_nodes_and_a_dead_owner_fails_only_its_items() {
    let (nodes, addrs) = static_cluster(3, "batch-", &[]);
    let ring = ring_of(&addrs);
    let ks = keys("x", 300);
    let on_dead: Vec<bool> = ks
        .iter()
        .map(|k| ring.owner(b"", k.as_bytes()).addr == addrs[2])
        .collect();
    assert!(on_dead.iter().any(|&d| d) && on_dead.iter().any(|&d| !d));
    rt().block_on(async {
        let mut c0 = nodes[0].client().await;
        let mut c1 = nodes[1].client().await;
        let items = ks.iter().map(|k| item("", k, &value_of(k))).collect();
        let r = c0.set_many(many(items)).await.unwrap().into_inner().results;
        assert!(r.iter().all(|s| s.stored && s.code == 0), "{r:?}");
        // Each key lives on its owner: node 1 reads them all back, its own
        // from its store and the others' through one hop.
        let r = get_many(&mut c1, &ks).await;
        for (k, res) in ks.iter().zip(&r) {
            assert!(res.found, "{k}: {res:?}");
            assert_eq!(res.value, value_of(k));
        }
        assert!(total(&scrape(&nodes[1]), "shardcache_forwarded_requests_total") > 0.0);

        nodes[2].kill();
        // Node 1 may answer some of the dead node's keys from the hot
        // copies its reads just made; node 0 only wrote them (a write drops
        // the copy), so it has none.
        for (i, c) in [&mut c0, &mut c1].into_iter().enumerate() {
            let r = get_many(c, &ks).await;
            for ((k, res), &dead) in ks.iter().zip(&r).zip(&on_dead) {
                if dead && (i == 0 || !res.found) {
                    assert_eq!(res.code, tonic::Code::Unavailable as i32, "{k}: {res:?}");
                    assert!(
                        res.message.contains(&addrs[2].to_string()),
                        "{}",
                        res.message
                    );
                } else {
                    assert!(res.found && res.code == 0, "{k}: {res:?}");
                    assert_eq!(res.value, value_of(k));
                }
            }
        }
    });
    for n in &nodes[..2] {
        n.assert_alive();
    }
}

#[test]
fn a_batch_waiting_on_a_stalled_owner_ends_by_its_deadline() {
    let (nodes, addrs) = static_cluster(3, "batchdl-", &[]);
    let ring = ring_of(&addrs);
    let ks = keys("s", 100);
    let (stalled, live): (Vec<String>, Vec<String>) = ks
        .iter()
        .cloned()
        .partition(|k| ring.owner(b"", k.as_bytes()).addr == addrs[2]);
    rt().block_on(async {
        let mut c = nodes[0].client().await;
        let items = ks.iter().map(|k| item("", k, &value_of(k))).collect();
        c.set_many(many(items)).await.unwrap();
        nodes[2].signal("STOP");
        let items = ks.iter().map(|k| item("", k, b"")).collect();
        let mut r = tonic::Request::new(many(items));
        r.set_timeout(std::time::Duration::from_millis(500));
        let e = c.get_many(r).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::DeadlineExceeded, "{e:?}");
        // The same connection serves the other keys meanwhile.
        let r = get_many(&mut c, &live).await;
        assert!(r.iter().all(|g| g.found && g.code == 0), "{r:?}");
        nodes[2].signal("CONT");
        let r = get_many(&mut c, &stalled).await;
        for (k, g) in stalled.iter().zip(&r) {
            assert!(g.found && g.value == value_of(k), "{k}: {g:?}");
        }
    });
    for n in &nodes {
        n.assert_alive();
    }
}

/// (status, body) of a request made with a real HTTP client.
fn http(method: &str, url: &str, body: &str) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let req = ureq::http::Request::builder()
        .method(method)
        .uri(url)
        .header("Content-Type", "application/json")
        .body(body.as_bytes().to_vec())
        .expect("a valid request");
    let mut resp = agent
        .run(req)
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = resp.status().as_u16();
    (status, resp.body_mut().read_to_string().unwrap())
}

/// POSTs `{"items": items}`; the status and the body (JSON when it is).
fn post_items(url: &str, items: &[serde_json::Value]) -> (u16, serde_json::Value) {
    let (status, body) = http(
        "POST",
        url,
        &serde_json::json!({ "items": items }).to_string(),
    );
    let json = serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body));
    (status, json)
}

/// Items `{"group": "web", "key": k}`.
fn web_keys(keys: &[&str]) -> Vec<serde_json::Value> {
    keys.iter()
        .map(|k| serde_json::json!({"group": "web", "key": k}))
        .collect()
}

#[test]
fn the_gateway_takes_batches_as_json() {
    use serde_json::{json, Value};
    let node = Node::builder()
        .shards(4)
        .max_value("1KiB")
        .args(&["--max-batch", "50"])
        .start();
    let url = |p: &str| node.http_url(p);
    let mut items: Vec<Value> = (0..40)
        .map(|i| json!({"group": "web", "key": format!("k{i}"), "value": format!("v{i}")}))
        .collect();
    items[1] = json!({"group": "web", "key": "bin", "value_base64": "AAH/"});
    items[2] = json!({"group": "web", "key": ""});
    items[3] = json!({"group": "web", "key": "big", "value": "x".repeat(2000)});
    items[4] = json!({"group": "web", "key": "typo", "valeu": "x"});
    let (status, body) = post_items(&url("/v1/setMany"), &items);
    assert_eq!(status, 200, "{body}");
    let r = body["results"].as_array().unwrap();
    assert_eq!(r.len(), 40);
    assert_eq!(r[0], json!({"stored": true}));
    assert_eq!(r[1], json!({"stored": true}));
    assert_eq!(r[2]["error"]["code"], "INVALID_ARGUMENT", "{body}");
    assert_eq!(r[2]["error"]["status"], 400);
    assert_eq!(r[3]["error"]["code"], "RESOURCE_EXHAUSTED", "{body}");
    let typo = r[4]["error"]["message"].as_str().unwrap();
    assert!(typo.contains("'valeu'"), "{body}");

    // Read back through the gateway, and through gRPC: the same store.
    let keys = ["k0", "bin", "k39", "missing", "big"];
    let (status, body) = post_items(&url("/v1/getMany"), &web_keys(&keys));
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["results"],
        json!([
            {"found": true, "value": "v0"},
            {"found": true, "value_base64": "AAH/"},
            {"found": true, "value": "v39"},
            {"found": false},
            {"found": false},
        ])
    );
    rt().block_on(async {
        let mut c = node.client().await;
        assert_eq!(get(&mut c, "web", "bin").await, Some(vec![0, 1, 255]));
    });

    let (status, body) = post_items(&url("/v1/deleteMany"), &web_keys(&["k0", "missing"]));
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"results": [{"deleted": true}, {"deleted": false}]})
    );

    // Whole-call errors: what is wrong, with the right status.
    let (status, body) = http("GET", &url("/v1/getMany"), "");
    assert_eq!(status, 405, "{body}");
    let (status, body) = http("POST", &url("/v1/getMany"), "{not json");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("not valid JSON"), "{body}");
    let many: Vec<Value> = (0..51).map(|i| json!({"key": format!("k{i}")})).collect();
    let (status, body) = post_items(&url("/v1/getMany"), &many);
    assert_eq!(status, 413, "{body}");
    assert!(body.to_string().contains("--max-batch"), "{body}");
    node.assert_alive();
}
