//! The cache contract through a stock tonic client: Get/Set/Delete
//! semantics, groups, binary and large values, TTLs, Stats, and many
//! concurrent calls on one connection.

mod common;

use common::*;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

#[tokio::test]
async fn set_then_get_returns_the_value() {
    let node = Node::start();
    let mut c = node.client().await;
    let r = c
        .set(set_req("", "user:42", b"hello", 0))
        .await
        .unwrap()
        .into_inner();
    assert!(r.stored);
    let g = c.get(req("", "user:42")).await.unwrap().into_inner();
    assert!(g.found);
    assert_eq!(g.value, b"hello");
}

#[tokio::test]
async fn get_miss_is_ok_with_found_false() {
    let node = Node::start();
    let mut c = node.client().await;
    // Status OK (unwrap), found=false, empty value.
    let g = c.get(req("", "never-set")).await.unwrap().into_inner();
    assert!(!g.found);
    assert!(g.value.is_empty());
    let g = c
        .get(req("some-group", "never-set"))
        .await
        .unwrap()
        .into_inner();
    assert!(!g.found);
}

#[tokio::test]
async fn delete_reports_whether_the_key_existed() {
    let node = Node::start();
    let mut c = node.client().await;
    assert!(!delete(&mut c, "", "k").await, "deleting a missing key");
    set(&mut c, "", "k", b"v").await;
    assert!(delete(&mut c, "", "k").await, "deleting an existing key");
    assert_eq!(
        get(&mut c, "", "k").await,
        None,
        "key still there after Delete"
    );
    assert!(!delete(&mut c, "", "k").await, "deleting twice");
}

#[tokio::test]
async fn set_overwrites() {
    let node = Node::start();
    let mut c = node.client().await;
    set(&mut c, "", "k", b"first").await;
    set(&mut c, "", "k", b"second, longer value").await;
    assert_eq!(
        get(&mut c, "", "k").await.as_deref(),
        Some(&b"second, longer value"[..])
    );
    set(&mut c, "", "k", b"3").await;
    assert_eq!(get(&mut c, "", "k").await.as_deref(), Some(&b"3"[..]));
    let s = stats(&mut c).await;
    assert_eq!(
        s.total.unwrap().items,
        1,
        "an overwrite must not add an item"
    );
}

#[tokio::test]
async fn groups_are_namespaces() {
    let node = Node::start();
    let mut c = node.client().await;
    set(&mut c, "a", "k", b"in a").await;
    set(&mut c, "b", "k", b"in b").await;
    set(&mut c, "", "k", b"in default").await;
    assert_eq!(get(&mut c, "a", "k").await.as_deref(), Some(&b"in a"[..]));
    assert_eq!(get(&mut c, "b", "k").await.as_deref(), Some(&b"in b"[..]));
    assert_eq!(
        get(&mut c, "", "k").await.as_deref(),
        Some(&b"in default"[..])
    );
    assert_eq!(get(&mut c, "c", "k").await, None);
    // Group/key boundaries must not be ambiguous: "a"+"bk" vs "ab"+"k".
    set(&mut c, "a", "bk", b"a/bk").await;
    assert_eq!(get(&mut c, "ab", "k").await, None);
    assert!(delete(&mut c, "a", "k").await);
    assert_eq!(get(&mut c, "a", "k").await, None);
    assert_eq!(get(&mut c, "b", "k").await.as_deref(), Some(&b"in b"[..]));
    assert_eq!(
        get(&mut c, "", "k").await.as_deref(),
        Some(&b"in default"[..])
    );
}

#[tokio::test]
async fn binary_values_round_trip() {
    let node = Node::start();
    let mut c = node.client().await;
    let all: Vec<u8> = (0..=255u8).collect();
    set(&mut c, "", "all-bytes", &all).await;
    assert_eq!(
        get(&mut c, "", "all-bytes").await.as_deref(),
        Some(&all[..])
    );
    let rev: Vec<u8> = (0..=255u8).rev().cycle().take(4096).collect();
    set(&mut c, "bin", "rev", &rev).await;
    assert_eq!(get(&mut c, "bin", "rev").await.as_deref(), Some(&rev[..]));
    // An empty value is a value: found=true, empty bytes.
    set(&mut c, "", "empty", b"").await;
    let g = c.get(req("", "empty")).await.unwrap().into_inner();
    assert!(g.found, "an empty value must be found");
    assert!(g.value.is_empty());
    // Keys are UTF-8 strings: non-ASCII keys are distinct keys.
    set(&mut c, "grüppe", "ключ-🔑", b"unicode").await;
    assert_eq!(
        get(&mut c, "grüppe", "ключ-🔑").await.as_deref(),
        Some(&b"unicode"[..])
    );
}

#[tokio::test]
async fn one_mib_values_round_trip() {
    let node = Node::start();
    let mut c = node.client().await;
    let mut rng = Rng::new(7);
    let big = rng.bytes(1 << 20);
    set(&mut c, "", "big", &big).await;
    let got = get(&mut c, "", "big").await.expect("1 MiB value not found");
    assert_eq!(got.len(), big.len());
    assert!(got == big, "1 MiB value corrupted");
    // A few more, interleaved with small calls, on the same connection.
    for i in 0..4 {
        let v = rng.bytes((1 << 20) - i * 977);
        set(&mut c, "big", &format!("b{i}"), &v).await;
        set(&mut c, "small", &format!("s{i}"), b"x").await;
        assert!(get(&mut c, "big", &format!("b{i}")).await.as_deref() == Some(&v[..]));
    }
}

#[tokio::test]
async fn ttl_expires_and_zero_never_expires() {
    let node = Node::start();
    let mut c = node.client().await;
    set_ttl(&mut c, "", "short", b"bye", 300).await;
    set_ttl(&mut c, "", "forever", b"stay", 0).await;
    set_ttl(&mut c, "", "long", b"later", 600_000).await;
    // Poll until the 300 ms entry is gone (deadline, not a tight bound).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if get(&mut c, "", "short").await.is_none() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "ttl_ms=300 entry still present after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Well past the short TTL (it expired at ~300 ms; wait ~600 ms total).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        get(&mut c, "", "forever").await.as_deref(),
        Some(&b"stay"[..])
    );
    assert_eq!(
        get(&mut c, "", "long").await.as_deref(),
        Some(&b"later"[..])
    );
    assert!(
        !delete(&mut c, "", "short").await,
        "an expired key must not count as deleted"
    );
    let s = stats(&mut c).await;
    assert_total_is_sum(&s);
    let t = s.total.unwrap();
    assert!(t.expirations >= 1, "expirations not counted: {t:?}");
    assert_eq!(t.items, 2, "the expired item is still counted: {t:?}");
}

#[tokio::test]
async fn set_with_ttl_replaces_ttl() {
    let node = Node::start();
    let mut c = node.client().await;
    // Overwriting a short-TTL entry with ttl_ms=0 makes it permanent.
    set_ttl(&mut c, "", "k", b"v1", 200).await;
    set_ttl(&mut c, "", "k", b"v2", 0).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(get(&mut c, "", "k").await.as_deref(), Some(&b"v2"[..]));
}

#[tokio::test]
async fn stats_shape_matches_flags() {
    let node = Node::builder()
        .shards(3)
        .memory("48MiB")
        .node_id("stats-node-7")
        .start();
    let mut c = node.client().await;
    let s = stats(&mut c).await;
    assert_eq!(s.node_id, "stats-node-7");
    assert_eq!(s.shards.len(), 3, "one ShardStats per shard");
    for (i, sh) in s.shards.iter().enumerate() {
        assert_eq!(sh.capacity_bytes, 48 * MIB / 3, "shard {i} capacity");
        assert_eq!(sh.items, 0);
        assert_eq!(sh.bytes, 0, "a fresh shard charges no bytes");
    }
    assert_total_is_sum(&s);
    assert_eq!(s.total.unwrap().capacity_bytes, 48 * MIB);
    // Still a sum after traffic spread over the shards.
    for i in 0..300 {
        set(
            &mut c,
            "g",
            &format!("k{i}"),
            &value_for(&format!("v{i}"), 100 + i),
        )
        .await;
    }
    let s = stats(&mut c).await;
    assert_total_is_sum(&s);
    let t = s.total.unwrap();
    assert_eq!(t.items, 300);
    assert_eq!(t.sets, 300);
    assert!(t.bytes > 0 && t.bytes <= t.capacity_bytes);
    let used = s.shards.iter().filter(|sh| sh.items > 0).count();
    assert!(
        used >= 2,
        "300 keys all landed on one shard of 3: {:?}",
        s.shards
    );
}

#[tokio::test]
async fn stats_counters_follow_traffic_exactly() {
    let node = Node::start();
    let mut c = node.client().await;
    for i in 0..10 {
        set(&mut c, "", &format!("k{i}"), b"value").await;
    }
    for i in 0..7 {
        assert!(get(&mut c, "", &format!("k{i}")).await.is_some());
    }
    for i in 0..3 {
        assert!(get(&mut c, "", &format!("missing{i}")).await.is_none());
    }
    assert!(delete(&mut c, "", "k0").await);
    assert!(delete(&mut c, "", "k1").await);
    let s = stats(&mut c).await;
    assert_total_is_sum(&s);
    assert_eq!(s.shards.len(), 2);
    let t = s.total.unwrap();
    assert_eq!(t.sets, 10, "{t:?}");
    assert_eq!(t.hits, 7, "{t:?}");
    assert_eq!(t.misses, 3, "{t:?}");
    assert_eq!(t.deletes, 2, "{t:?}");
    assert_eq!(t.items, 8, "{t:?}");
    assert_eq!(t.evictions, 0, "{t:?}");
    assert_eq!(t.expirations, 0, "{t:?}");
    assert!(
        t.bytes >= 8 * (2 + 5),
        "bytes must charge at least key+value: {t:?}"
    );
    assert_eq!(t.capacity_bytes, 64 * MIB);
    // Stats itself is not cache traffic.
    let again = stats(&mut c).await.total.unwrap();
    assert_eq!(again, t, "a Stats call changed the counters");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_concurrent_calls_on_one_connection() {
    let node = Node::start();
    let client = node.client().await; // one Channel = one HTTP/2 connection
    const N: usize = 2000;
    let mut set = JoinSet::new();
    for i in 0..N {
        let mut c = client.clone();
        set.spawn(async move {
            let v = value_for(&format!("value-{i}"), 16 + i % 200);
            c.set(set_req("conc", &format!("key-{i}"), &v, 0))
                .await
                .map(|r| r.into_inner().stored)
        });
    }
    let mut ok = 0;
    while let Some(r) = set.join_next().await {
        assert!(r.unwrap().expect("concurrent Set failed"), "stored=false");
        ok += 1;
    }
    assert_eq!(ok, N);
    let mut gets = JoinSet::new();
    for i in 0..N {
        let mut c = client.clone();
        gets.spawn(async move {
            let r = c
                .get(req("conc", &format!("key-{i}")))
                .await
                .map(|r| r.into_inner());
            (i, r)
        });
    }
    let mut ok = 0;
    while let Some(r) = gets.join_next().await {
        let (i, r) = r.unwrap();
        let r = r.unwrap_or_else(|e| panic!("concurrent Get {i} failed: {e:?}"));
        assert!(r.found, "key-{i} not found");
        assert_eq!(
            r.value,
            value_for(&format!("value-{i}"), 16 + i % 200),
            "key-{i} has another key's value"
        );
        ok += 1;
    }
    assert_eq!(ok, N);
    let mut c = client.clone();
    let t = stats(&mut c).await.total.unwrap();
    assert_eq!(t.sets, N as u64);
    assert_eq!(t.hits, N as u64);
    assert_eq!(t.items, N as u64);
}
