//! The memory budget: LRU eviction keeps recently used keys, the byte
//! accounting stays within the budget, and resident memory tracks it.

mod common;

use common::*;

const VALUE: usize = 16 * 1024;
const BUDGET: u64 = 16 * MIB;
/// ~64 MiB of values written through a 16 MiB budget.
const COLD: usize = 4096;
const HOT: usize = 50;

fn hot_key(i: usize) -> String {
    format!("hot-{i}")
}

fn cold_key(i: usize) -> String {
    format!("cold-{i}")
}

#[tokio::test]
async fn lru_keeps_hot_keys_and_memory_tracks_the_budget() {
    let node = Node::builder().memory("16MiB").shards(1).start();
    let mut c = node.client().await;

    // Baseline after start-up and a first round trip (connection and
    // buffers set up).
    let s0 = stats(&mut c).await;
    assert_eq!(s0.shards.len(), 1);
    assert_eq!(s0.shards[0].capacity_bytes, BUDGET);
    set(&mut c, "", "warm-up", b"x").await;
    assert!(delete(&mut c, "", "warm-up").await);
    let rss0 = node.rss_bytes();

    for i in 0..HOT {
        set(&mut c, "", &hot_key(i), &value_for(&hot_key(i), VALUE)).await;
    }
    for i in 0..COLD {
        set(&mut c, "", &cold_key(i), &value_for(&cold_key(i), VALUE)).await;
        // Touch one hot key per cold write: each hot key is read again after
        // at most 50 newer writes (800 KiB), far less than the budget.
        let h = i % HOT;
        let got = get(&mut c, "", &hot_key(h)).await;
        assert!(
            got.as_deref() == Some(&value_for(&hot_key(h), VALUE)[..]),
            "hot key {h} lost or corrupted after {i} cold writes"
        );
    }

    let s = stats(&mut c).await;
    assert_total_is_sum(&s);
    let t = s.total.unwrap();
    assert!(
        t.evictions > 0,
        "64 MiB through a 16 MiB budget evicted nothing: {t:?}"
    );
    assert!(
        t.bytes <= t.capacity_bytes,
        "charged bytes over budget: {t:?}"
    );
    assert!(
        t.bytes > BUDGET / 2,
        "the budget is barely used ({t:?}): eviction is too eager"
    );
    assert!(
        (t.items as usize) < HOT + COLD,
        "every item is still there: {t:?}"
    );
    assert_eq!(
        t.items + t.evictions,
        (HOT + COLD) as u64,
        "items + evictions != sets: {t:?}"
    );
    let rss1 = node.rss_bytes();

    for i in 0..HOT {
        assert!(
            get(&mut c, "", &hot_key(i)).await.is_some(),
            "hot key {i} was evicted"
        );
    }
    for i in 0..100 {
        assert_eq!(
            get(&mut c, "", &cold_key(i)).await,
            None,
            "early cold key {i} was not evicted"
        );
    }
    for i in COLD - 20..COLD {
        assert_eq!(
            get(&mut c, "", &cold_key(i)).await,
            Some(value_for(&cold_key(i), VALUE)),
            "the most recent cold key {i} was evicted"
        );
    }

    // Resident memory: the values alone are 16 MiB at most; allow the same
    // again for per-entry overhead, allocator slack and buffers. Margin:
    // growth < 2 x budget (32 MiB) over the RSS measured after start-up.
    let growth = rss1.saturating_sub(rss0);
    assert!(
        growth < 2 * BUDGET,
        "RSS grew by {} MiB (from {} MiB to {} MiB) for a {} MiB budget; limit 2x budget",
        growth / MIB,
        rss0 / MIB,
        rss1 / MIB,
        BUDGET / MIB
    );
    eprintln!(
        "rss: {} KiB after start-up, {} KiB after 64 MiB of writes (growth {} KiB, limit {} KiB)",
        rss0 / 1024,
        rss1 / 1024,
        growth / 1024,
        2 * BUDGET / 1024
    );
}

#[tokio::test]
async fn deleting_and_overwriting_release_budget() {
    // 4 MiB over 2 shards (2 MiB each); 30 x 64 KiB = 1.9 MiB of live data
    // at any time, so even all 30 keys on one shard fit. Rewritten 20
    // times: with correct accounting nothing needs evicting.
    let node = Node::builder()
        .memory("4MiB")
        .shards(2)
        .max_value("1MiB")
        .start();
    let mut c = node.client().await;
    for round in 0..20 {
        for i in 0..30 {
            let v = value_for(&format!("r{round}-{i}"), 64 * 1024);
            set(&mut c, "", &format!("k{i}"), &v).await;
        }
        if round % 2 == 1 {
            for i in 0..30 {
                assert!(delete(&mut c, "", &format!("k{i}")).await);
            }
        }
    }
    let s = stats(&mut c).await;
    assert_total_is_sum(&s);
    let t = s.total.unwrap();
    assert_eq!(t.items, 0, "{t:?}");
    assert_eq!(t.bytes, 0, "bytes still charged with no items: {t:?}");
    assert_eq!(t.evictions, 0, "overwrites/deletes leaked budget: {t:?}");
    assert_eq!(t.sets, 600);
    assert_eq!(t.deletes, 300);
}
