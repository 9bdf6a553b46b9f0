//! Criterion benches for one shard's store: get hit and miss, overwrite,
//! insert with eviction (a full store), delete + re-insert, and a sweep;
//! 16-byte keys, 64 B and 4 KiB values, 100k keys.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use shardcache::store::Store;
use std::hint::black_box;

const KEYS: u64 = 100_000;

fn key(i: u64) -> [u8; 16] {
    let mut k = *b"key-000000000000";
    let digits = format!("{i:012}");
    k[4..].copy_from_slice(digits.as_bytes());
    k
}

/// Keys made once, so the timed loops measure the store, not formatting.
fn keys(n: u64) -> Vec<[u8; 16]> {
    (0..n).map(key).collect()
}

fn filled(value_len: usize) -> Store {
    let mut s = Store::new(u64::MAX / 2);
    let v = vec![7u8; value_len];
    for i in 0..KEYS {
        let _ = s.set(b"", &key(i), &v, 0, 0);
    }
    s
}

fn bench(c: &mut Criterion) {
    for value_len in [64usize, 4096] {
        let mut g = c.benchmark_group(format!("store_{value_len}B"));
        let mut s = filled(value_len);
        let ks = keys(KEYS);
        let key = |i: u64| ks[i as usize];
        let mut i = 0u64;
        g.bench_function("get_hit", |b| {
            b.iter(|| {
                i = (i + 7919) % KEYS;
                black_box(s.get(b"", &key(i), 0).map(<[u8]>::len))
            })
        });
        g.bench_function("get_miss", |b| {
            b.iter(|| {
                i = (i + 7919) % KEYS;
                black_box(s.get(b"x", &key(i), 0).is_some())
            })
        });
        let v = vec![9u8; value_len];
        g.bench_function("set_overwrite", |b| {
            b.iter(|| {
                i = (i + 7919) % KEYS;
                black_box(s.set(b"", &key(i), &v, 0, 0).is_ok())
            })
        });
        // A store exactly full: every insert of a new key evicts the coldest.
        let cap = Store::entry_charge(0, 16, value_len) * KEYS;
        let mut full = Store::new(cap);
        for i in 0..KEYS {
            let _ = full.set(b"", &key(i), &v, 0, 0);
        }
        // Alternate between two key sets so every insert is a new key.
        let fresh = keys(2 * KEYS);
        let mut n = KEYS;
        g.bench_function("set_evicting", |b| {
            b.iter(|| {
                n = (n + 1) % (2 * KEYS);
                black_box(full.set(b"", &fresh[n as usize], &v, 0, 0).is_ok())
            })
        });
        g.bench_function("delete_then_set", |b| {
            b.iter(|| {
                i = (i + 7919) % KEYS;
                black_box(s.delete(b"", &key(i), 0));
                black_box(s.set(b"", &key(i), &v, 0, 0).is_ok())
            })
        });
        g.finish();
    }
    c.bench_function("sweep_2048_slots_nothing_expired", |b| {
        b.iter_batched_ref(
            || filled(64),
            |s| black_box(s.sweep_expired(1, 2048)),
            BatchSize::LargeInput,
        )
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
