//! Criterion benches for one shard's `Store`: get hit and miss, overwrite,
//! insert into a full store (every insert evicts), delete, and the expiry
//! sweep; 16-byte keys, 64 B and 4 KiB values, 100k keys. `store_1M_64B`
//! repeats get, overwrite and evicting insert with 1M keys (the size the
//! memory figures are measured at). `store_growth` fills an empty store with
//! 1M keys, table and slab growth included.
//!
//! Keys are visited in a fixed pseudo-random order (a prime stride), so the
//! figures include the cache misses of a working set bigger than L2; the
//! `_hot_1k` variant cycles through 1,024 keys to show the CPU cost alone.
//! Work that restores the store between timed runs (re-inserting what a
//! delete or a sweep removed) is left out of the timing with `iter_custom`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use shardcache::store::Store;

const KEYS: usize = 100_000;
/// Prime and coprime with `KEYS`: `j * STRIDE % KEYS` visits every key once.
const STRIDE: usize = 7919;
const HOT: usize = 1024;
const SWEEP_VISITS: usize = 1024;

/// `n` distinct 16-byte keys starting with `prefix`, made before timing.
fn key_set(prefix: u8, n: usize) -> Vec<[u8; 16]> {
    (0..n)
        .map(|i| {
            let mut k = [prefix; 16];
            k[4..].copy_from_slice(format!("{i:012}").as_bytes());
            k
        })
        .collect()
}

/// `keys` in the stride's order, laid out so the bench reads them
/// sequentially: only the store's own accesses are random.
fn shuffled(keys: &[[u8; 16]]) -> Vec<[u8; 16]> {
    (0..keys.len())
        .map(|j| keys[j * STRIDE % keys.len()])
        .collect()
}

fn filled(keys: &[[u8; 16]], value: &[u8], capacity: u64, ttl_ms: u64) -> Store {
    let mut s = Store::new(capacity);
    for k in keys {
        let _ = s.set(b"", k, value, ttl_ms, 0);
    }
    s
}

fn store_ops(c: &mut Criterion, value_len: usize) {
    store_ops_n(c, &format!("store_{value_len}B"), KEYS, value_len, true);
}

/// get hit and miss, overwrite and evicting insert on `n_keys` keys; `all` adds
/// the hot get and the delete.
fn store_ops_n(c: &mut Criterion, name: &str, n_keys: usize, value_len: usize, all: bool) {
    let keys = key_set(b'k', n_keys);
    let probe = shuffled(&keys);
    let value = vec![7u8; value_len];
    let mut g = c.benchmark_group(name);

    let mut s = filled(&keys, &value, u64::MAX, 0);
    let mut j = 0;
    g.bench_function("get_hit", |b| {
        b.iter(|| {
            j = (j + 1) % n_keys;
            black_box(s.get(b"", &probe[j], 0).map(<[u8]>::len))
        })
    });
    if all {
        g.bench_function("get_hit_hot_1k", |b| {
            b.iter(|| {
                j = (j + 1) % HOT;
                black_box(s.get(b"", &keys[j], 0).map(<[u8]>::len))
            })
        });
    }
    let absent = shuffled(&key_set(b'm', n_keys));
    g.bench_function("get_miss", |b| {
        b.iter(|| {
            j = (j + 1) % n_keys;
            black_box(s.get(b"", &absent[j], 0).is_some())
        })
    });
    let other = vec![9u8; value_len];
    g.bench_function("set_overwrite", |b| {
        b.iter(|| {
            j = (j + 1) % n_keys;
            black_box(s.set(b"", &probe[j], &other, 0, 0).is_ok())
        })
    });
    if all {
        g.bench_function("delete", |b| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                let mut done = 0;
                while done < iters {
                    let n = (iters - done).min(n_keys as u64) as usize;
                    let start = Instant::now();
                    for k in &probe[..n] {
                        black_box(s.delete(b"", k, 0));
                    }
                    timed += start.elapsed();
                    for k in &probe[..n] {
                        let _ = s.set(b"", k, &value, 0, 0);
                    }
                    done += n as u64;
                }
                timed
            })
        });
    }
    drop(s);

    // Exactly full: each new key evicts the coldest. Inserting `fresh`
    // then `keys` again, in order, makes every insert a new key.
    let capacity = Store::entry_charge(0, 16, value_len) * n_keys as u64;
    let mut full = filled(&keys, &value, capacity, 0);
    let fresh = key_set(b'n', n_keys);
    let mut n = 0;
    g.bench_function("set_evicting", |b| {
        b.iter(|| {
            n = (n + 1) % (2 * n_keys);
            let k = if n < n_keys {
                &fresh[n]
            } else {
                &keys[n - n_keys]
            };
            black_box(full.set(b"", k, &value, 0, 0).is_ok())
        })
    });
    g.finish();
}

fn sweep(c: &mut Criterion) {
    let keys = key_set(b'k', KEYS);
    let value = [7u8; 64];
    let mut g = c.benchmark_group("store_sweep");
    g.throughput(Throughput::Elements(SWEEP_VISITS as u64));
    let mut live = filled(&keys, &value, u64::MAX, 0);
    g.bench_function("scan_1024_live", |b| {
        b.iter(|| black_box(live.sweep_expired(1, SWEEP_VISITS)))
    });
    drop(live);
    // Everything expired: each call reclaims 1,024 entries; refilling the
    // store when it runs dry is not timed.
    let mut dead = filled(&keys, &value, u64::MAX, 1);
    g.bench_function("reclaim_1024_expired", |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                if dead.is_empty() {
                    for k in &keys {
                        let _ = dead.set(b"", k, &value, 1, 0);
                    }
                }
                let start = Instant::now();
                black_box(dead.sweep_expired(10, SWEEP_VISITS));
                timed += start.elapsed();
            }
            timed
        })
    });
    g.finish();
}

/// Inserting into a growing store: the table's rehashes are part of it.
fn growth(c: &mut Criterion) {
    let keys = key_set(b'k', 1_000_000);
    let value = [7u8; 64];
    let mut g = c.benchmark_group("store_growth");
    g.sample_size(10);
    g.bench_function("fill_1M", |b| {
        b.iter(|| black_box(filled(&keys, &value, u64::MAX, 0).len()))
    });
    g.finish();
}

fn bench(c: &mut Criterion) {
    store_ops(c, 64);
    store_ops_n(c, "store_1M_64B", 1_000_000, 64, false);
    store_ops(c, 4096);
    sweep(c);
    growth(c);
}

criterion_group!(benches, bench);
criterion_main!(benches);
