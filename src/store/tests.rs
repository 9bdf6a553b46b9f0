//! Store tests: LRU order, overwrite, groups, TTLs and the sweep, the byte
//! budget, a randomized check against a plain reference model, and the
//! memory model measured against resident memory.

use super::*;

fn charge(g: &[u8], k: &[u8], v: usize) -> u64 {
    Store::entry_charge(g.len(), k.len(), v)
}

fn keys(s: &Store) -> Vec<Vec<u8>> {
    s.lru_order().into_iter().map(|(_, k)| k).collect()
}

#[test]
fn set_get_overwrite_delete() {
    let mut s = Store::new(1 << 20);
    assert_eq!(s.get(b"", b"k", 0), None);
    assert_eq!(
        s.set(b"", b"k", b"v1", 0, 0),
        Ok(true),
        "a new key is created"
    );
    assert_eq!(s.get(b"", b"k", 0), Some(&b"v1"[..]));
    assert_eq!(s.set(b"", b"k", b"value2", 0, 0), Ok(false), "an overwrite");
    assert_eq!(s.get(b"", b"k", 0), Some(&b"value2"[..]));
    assert_eq!(s.stats().bytes, charge(b"", b"k", 6));
    assert!(s.delete(b"", b"k", 0));
    assert!(!s.delete(b"", b"k", 0));
    assert_eq!(s.get(b"", b"k", 0), None);
    let st = s.stats();
    assert_eq!(
        (st.hits, st.misses, st.sets, st.deletes, st.items, st.bytes),
        (2, 2, 2, 1, 0, 0)
    );
    assert!(s.is_empty());
}

#[test]
fn groups_are_kept_apart() {
    let mut s = Store::new(1 << 20);
    let pairs: [(&[u8], &[u8]); 5] = [
        (b"a", b"bc"),
        (b"ab", b"c"),
        (b"", b"abc"),
        (b"abc", b""),
        (b"", b""),
    ];
    for (n, (g, k)) in pairs.iter().enumerate() {
        s.set(g, k, &[n as u8], 0, 0).unwrap();
    }
    assert_eq!(s.len(), pairs.len());
    for (n, (g, k)) in pairs.iter().enumerate() {
        assert_eq!(s.get(g, k, 0), Some(&[n as u8][..]));
    }
    assert!(s.delete(b"a", b"bc", 0));
    assert_eq!(s.get(b"ab", b"c", 0), Some(&[1][..]));
    assert_eq!(s.get(b"a", b"bc", 0), None);
}

#[test]
fn lru_evicts_the_coldest_and_reads_refresh() {
    let mut s = Store::new(3 * charge(b"", b"k0", 10));
    for k in [b"k0", b"k1", b"k2"] {
        s.set(b"", k, &[0; 10], 0, 0).unwrap();
    }
    assert_eq!(keys(&s), [b"k2", b"k1", b"k0"]);
    assert!(s.get(b"", b"k0", 0).is_some());
    assert_eq!(keys(&s), [b"k0", b"k2", b"k1"]);
    s.set(b"", b"k3", &[0; 10], 0, 0).unwrap();
    assert_eq!(keys(&s), [b"k3", b"k0", b"k2"]);
    s.set(b"", b"k4", &[0; 10], 0, 0).unwrap();
    assert_eq!(keys(&s), [b"k4", b"k3", b"k0"]);
    assert_eq!(s.stats().evictions, 2);
    assert_eq!(s.stats().bytes, s.stats().capacity_bytes);
    // A miss does not reorder anything.
    assert!(s.get(b"", b"k1", 0).is_none());
    assert_eq!(keys(&s), [b"k4", b"k3", b"k0"]);
}

#[test]
fn overwrite_replaces_in_place_and_moves_to_front() {
    let mut s = Store::new(1 << 20);
    s.set(b"g", b"a", &[1; 100], 0, 0).unwrap();
    s.set(b"g", b"b", &[2; 10], 0, 0).unwrap();
    for len in [100, 3, 0, 5000, 100] {
        s.set(b"g", b"a", &vec![len as u8; len], 0, 0).unwrap();
        assert_eq!(keys(&s), [b"a", b"b"]);
        s.set(b"g", b"b", &[2; 10], 0, 0).unwrap();
        assert_eq!(s.get(b"g", b"a", 0), Some(&vec![len as u8; len][..]));
        assert_eq!(
            s.stats().bytes,
            charge(b"g", b"a", len) + charge(b"g", b"b", 10)
        );
    }
    assert_eq!((s.len(), s.stats().sets), (2, 12));
}

#[test]
fn overwrite_that_grows_evicts_others_not_itself() {
    let small = charge(b"", b"k0", 10);
    let mut s = Store::new(3 * small);
    for k in [b"k0", b"k1", b"k2"] {
        s.set(b"", k, &[0; 10], 0, 0).unwrap();
    }
    // k0 is the coldest, yet it is the one being written: k1 and k2 go.
    let big = (3 * small - charge(b"", b"k0", 0)) as usize;
    s.set(b"", b"k0", &vec![9; big], 0, 0).unwrap();
    assert_eq!(keys(&s), [b"k0"]);
    assert_eq!(s.stats().evictions, 2);
    assert!(s.stats().bytes <= s.stats().capacity_bytes);
    assert_eq!(s.get(b"", b"k0", 0).map(<[u8]>::len), Some(big));
}

#[test]
fn too_large_is_refused_and_changes_nothing() {
    let mut s = Store::new(1000);
    s.set(b"", b"a", &[1; 10], 0, 0).unwrap();
    s.set(b"", b"b", &[1; 10], 0, 0).unwrap();
    let err = s.set(b"", b"a", &[1; 2000], 0, 0).unwrap_err();
    assert_eq!(
        err,
        SetError::TooLarge {
            charge: charge(b"", b"a", 2000),
            capacity: 1000
        }
    );
    assert_eq!(keys(&s), [b"b", b"a"]);
    assert_eq!(s.get(b"", b"a", 0), Some(&[1u8; 10][..]));
    let st = s.stats();
    assert_eq!((st.evictions, st.sets, st.items), (0, 2, 2));
    // Exactly the capacity fits.
    let mut exact = Store::new(charge(b"", b"a", 10));
    exact.set(b"", b"a", &[1; 10], 0, 0).unwrap();
    exact.set(b"", b"b", &[1; 10], 0, 0).unwrap();
    assert_eq!(keys(&exact), [b"b"]);
}

#[test]
fn capacity_zero_refuses_everything() {
    let mut s = Store::new(0);
    assert!(s.set(b"", b"", b"", 0, 0).is_err());
    assert!(s.set(b"g", b"a", b"v", 10, 0).is_err());
    assert_eq!(s.get(b"", b"", 0), None);
    assert!(!s.delete(b"", b"", 0));
    assert_eq!(s.sweep_expired(0, 100), 0);
    let st = s.stats();
    assert_eq!((st.items, st.bytes, st.sets, st.misses), (0, 0, 0, 1));
}

#[test]
fn odd_sizes_do_not_panic() {
    let mut s = Store::new(u64::MAX);
    s.set(b"", b"", b"", 0, 0).unwrap();
    assert_eq!(s.get(b"", b"", 0), Some(&b""[..]));
    let long_key = vec![b'k'; 4096];
    let long_group = vec![b'g'; 10_000];
    s.set(&long_group, &long_key, b"v", 0, 0).unwrap();
    assert_eq!(s.get(&long_group, &long_key, 0), Some(&b"v"[..]));
    let big = vec![3u8; 16 << 20];
    s.set(b"", b"big", &big, 0, 0).unwrap();
    assert_eq!(s.get(b"", b"big", 0).map(<[u8]>::len), Some(16 << 20));
    s.set(b"", b"big", b"small now", 0, 0).unwrap();
    assert_eq!(s.get(b"", b"big", 0), Some(&b"small now"[..]));
    s.set(b"", b"big", &big, u64::MAX, u64::MAX).unwrap();
    assert!(s.delete(b"", b"big", u64::MAX - 1));
    s.lru_order();
}

#[test]
fn ttl_expiry_and_zero() {
    let mut s = Store::new(1 << 20);
    s.set(b"", b"t", b"x", 100, 1000).unwrap();
    s.set(b"", b"p", b"y", 0, 1000).unwrap();
    assert!(s.get(b"", b"t", 1099).is_some());
    assert!(s.get(b"", b"t", 1100).is_none(), "expires at now + ttl");
    assert!(!s.holds(b"", b"t"), "a read of an expired entry removes it");
    assert!(s.get(b"", b"t", 1099).is_none());
    assert!(s.get(b"", b"p", u64::MAX).is_some(), "ttl 0 never expires");
    // Saturating: expires at u64::MAX, never reached before it.
    s.set(b"", b"far", b"z", u64::MAX, 5).unwrap();
    assert!(s.get(b"", b"far", u64::MAX - 1).is_some());
    assert!(s.get(b"", b"far", u64::MAX).is_none());
    s.set(b"", b"e", b"x", 10, 0).unwrap();
    assert_eq!(
        s.set(b"", b"e", b"x2", 10, 50),
        Ok(true),
        "replacing an expired entry creates the key anew"
    );
    s.set(b"", b"d", b"x", 10, 0).unwrap();
    assert!(!s.delete(b"", b"d", 50), "an expired entry was not deleted");
    assert!(!s.holds(b"", b"d"));
    let st = s.stats();
    assert_eq!(
        (st.expirations, st.deletes, st.hits, st.misses),
        (4, 0, 3, 3)
    );
    assert_eq!(
        (st.items, st.bytes),
        (2, charge(b"", b"p", 1) + charge(b"", b"e", 2))
    );
}

#[test]
fn sweep_retain_drops_what_is_not_kept_and_clear_empties() {
    let mut s = Store::new(1 << 20);
    for i in 0..100u32 {
        s.set(b"", format!("k{i}").as_bytes(), b"v", 0, 0).unwrap();
    }
    let mut removed = 0;
    while removed < 50 {
        removed += s.sweep_retain(0, 7, |_, k| {
            k.ends_with(b"0")
                || k.ends_with(b"2")
                || k.ends_with(b"4")
                || k.ends_with(b"6")
                || k.ends_with(b"8")
        });
    }
    assert_eq!(s.len(), 50);
    assert!(s.get(b"", b"k42", 0).is_some());
    assert!(s.get(b"", b"k43", 0).is_none());
    let st = s.stats();
    assert_eq!((st.expirations, st.evictions), (0, 0));
    s.lru_order();
    s.clear();
    assert!(s.is_empty());
    assert_eq!(s.stats().bytes, 0);
    s.set(b"", b"again", b"v", 0, 0).unwrap();
    assert_eq!(s.lru_order().len(), 1);
}

#[test]
fn overwrite_updates_the_ttl() {
    let mut s = Store::new(1 << 20);
    s.set(b"", b"o", b"x", 10, 0).unwrap();
    s.set(b"", b"o", b"x", 0, 0).unwrap();
    assert!(
        s.get(b"", b"o", 1_000_000).is_some(),
        "ttl 0 made it permanent"
    );
    s.set(b"", b"o", b"x", 10, 1_000_000).unwrap();
    assert!(s.get(b"", b"o", 1_000_010).is_none());
    // Writing over an expired entry reclaims it and stores the new one.
    s.set(b"", b"e", b"old", 5, 0).unwrap();
    s.set(b"", b"e", b"new", 0, 10).unwrap();
    assert_eq!(s.get(b"", b"e", 20), Some(&b"new"[..]));
    assert_eq!(s.stats().expirations, 2);
}

#[test]
fn expired_entries_at_the_cold_end_count_as_expirations() {
    let mut s = Store::new(2 * charge(b"", b"k0", 1));
    s.set(b"", b"k0", b"a", 5, 0).unwrap();
    s.set(b"", b"k1", b"b", 0, 0).unwrap();
    s.set(b"", b"k2", b"c", 0, 10).unwrap();
    s.set(b"", b"k3", b"d", 0, 10).unwrap();
    let st = s.stats();
    assert_eq!((st.expirations, st.evictions), (1, 1));
    assert_eq!(keys(&s), [b"k3", b"k2"]);
}

#[test]
fn sweep_reclaims_unread_expired_entries_in_bounded_calls() {
    let mut s = Store::new(64 << 20);
    let n = 10_000u32;
    for i in 0..n {
        let ttl = if i % 2 == 0 { 5 } else { 0 };
        s.set(b"", &i.to_le_bytes(), b"v", ttl, 0).unwrap();
    }
    assert_eq!(s.sweep_expired(4, 1_000_000), 0, "nothing expired yet");
    let per_call = 1000;
    let mut reclaimed = 0;
    for _ in 0..n as usize / per_call {
        let r = s.sweep_expired(10, per_call);
        assert!(r <= per_call);
        reclaimed += r;
    }
    assert_eq!(reclaimed, n as usize / 2, "one lap reclaims everything");
    assert_eq!(s.len(), n as usize / 2);
    assert_eq!(s.stats().expirations, n as u64 / 2);
    assert_eq!(s.stats().bytes, s.len() as u64 * charge(b"", b"0000", 1));
    assert_eq!(s.sweep_expired(10, 0), 0);
    // Freed slots are reused: refilling does not grow the slab.
    for i in 0..n {
        s.set(b"", &i.to_le_bytes(), b"v", 0, 10).unwrap();
    }
    assert_eq!((s.slab.slot_count(), s.len()), (n as usize, n as usize));
    s.lru_order();
}

#[test]
fn sweep_resumes_where_it_stopped_and_wraps() {
    let mut s = Store::new(1 << 20);
    assert_eq!(s.sweep_expired(0, 10), 0, "empty store");
    for i in 0..10u8 {
        s.set(b"", &[i], b"v", 1, 0).unwrap();
    }
    // 4 visits per call over 10 slots: 4, 4, then 2 before the wrap.
    assert_eq!(s.sweep_expired(1, 4), 4);
    assert_eq!(s.sweep_expired(1, 4), 4);
    assert_eq!(s.sweep_expired(1, 4), 2);
    assert!(s.is_empty());
    s.set(b"", b"x", b"v", 1, 5).unwrap();
    assert_eq!(s.sweep_expired(6, 100), 1, "a lap of all slots at most");
    assert_eq!(s.stats().expirations, 11);
}

#[test]
fn a_full_slab_gives_the_coldest_slot() {
    let mut s = Store::with_slot_limit(1 << 20, 3);
    for k in [b"a", b"b", b"c", b"d", b"e"] {
        s.set(b"", k, b"v", 0, 0).unwrap();
    }
    assert_eq!(keys(&s), [b"e", b"d", b"c"]);
    assert_eq!((s.stats().evictions, s.slab.slot_count()), (2, 3));
}

/// A plain reference: a Vec in LRU order (front = most recent), with the
/// counters the store should report.
#[derive(Default)]
struct Model {
    items: Vec<ModelEntry>,
    cap: u64,
    stats: StoreStats,
}

struct ModelEntry {
    group: Vec<u8>,
    key: Vec<u8>,
    value: Vec<u8>,
    expires_at: u64,
}

impl ModelEntry {
    fn charge(&self) -> u64 {
        charge(&self.group, &self.key, self.value.len())
    }
    fn expired(&self, now: u64) -> bool {
        self.expires_at != 0 && self.expires_at <= now
    }
}

impl Model {
    fn bytes(&self) -> u64 {
        self.items.iter().map(ModelEntry::charge).sum()
    }

    fn stats(&self) -> StoreStats {
        StoreStats {
            items: self.items.len() as u64,
            bytes: self.bytes(),
            capacity_bytes: self.cap,
            ..self.stats
        }
    }

    fn position(&self, g: &[u8], k: &[u8]) -> Option<usize> {
        self.items.iter().position(|e| e.group == g && e.key == k)
    }

    fn get(&mut self, g: &[u8], k: &[u8], now: u64) -> Option<Vec<u8>> {
        let Some(p) = self.position(g, k) else {
            self.stats.misses += 1;
            return None;
        };
        if self.items[p].expired(now) {
            self.items.remove(p);
            self.stats.expirations += 1;
            self.stats.misses += 1;
            return None;
        }
        self.stats.hits += 1;
        let e = self.items.remove(p);
        let v = e.value.clone();
        self.items.insert(0, e);
        Some(v)
    }

    fn set(&mut self, g: &[u8], k: &[u8], v: &[u8], ttl: u64, now: u64) -> bool {
        if charge(g, k, v.len()) > self.cap {
            return false;
        }
        if let Some(p) = self.position(g, k) {
            if self.items.remove(p).expired(now) {
                self.stats.expirations += 1;
            }
        }
        let e = ModelEntry {
            group: g.to_vec(),
            key: k.to_vec(),
            value: v.to_vec(),
            expires_at: if ttl == 0 { 0 } else { now + ttl },
        };
        while self.bytes() + e.charge() > self.cap {
            let Some(cold) = self.items.pop() else { break };
            if cold.expired(now) {
                self.stats.expirations += 1;
            } else {
                self.stats.evictions += 1;
            }
        }
        self.items.insert(0, e);
        self.stats.sets += 1;
        true
    }

    fn delete(&mut self, g: &[u8], k: &[u8], now: u64) -> bool {
        let Some(p) = self.position(g, k) else {
            return false;
        };
        let live = !self.items.remove(p).expired(now);
        if live {
            self.stats.deletes += 1;
        } else {
            self.stats.expirations += 1;
        }
        live
    }

    /// Which expired entries a bounded sweep reaches depends on slab
    /// layout, so the model follows the store: it drops the expired entries
    /// the store no longer holds, and those must be all the sweep returned.
    fn follow_sweep(&mut self, s: &Store, now: u64) -> usize {
        let before = self.items.len();
        self.items
            .retain(|e| !e.expired(now) || s.holds(&e.group, &e.key));
        let swept = before - self.items.len();
        self.stats.expirations += swept as u64;
        swept
    }

    fn order(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.items
            .iter()
            .map(|e| (e.group.clone(), e.key.clone()))
            .collect()
    }
}

/// xorshift64: deterministic and dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn matches_a_reference_model() {
    const GROUPS: [&[u8]; 3] = [b"", b"a", b"ab"];
    const KEYS: [&[u8]; 8] = [b"bc", b"c", b"", b"abc", b"k1", b"k2", b"k3", b"k4"];
    let cap = 12 * charge(b"a", b"bc", 60);
    let mut s = Store::new(cap);
    let mut m = Model {
        cap,
        ..Model::default()
    };
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut now = 1_000;
    for op in 0..50_000 {
        now += rng.below(3);
        let g = GROUPS[rng.below(3) as usize];
        let k = KEYS[rng.below(8) as usize];
        match rng.below(100) {
            0..=39 => assert_eq!(
                s.get(g, k, now).map(<[u8]>::to_vec),
                m.get(g, k, now),
                "op {op}: get"
            ),
            40..=79 => {
                let len = match rng.below(50) {
                    0 => 5_000, // over the whole budget
                    _ => rng.below(120) as usize,
                };
                let v = vec![rng.next() as u8; len];
                let ttl = match rng.below(3) {
                    0 => 0,
                    _ => 1 + rng.below(60),
                };
                assert_eq!(
                    s.set(g, k, &v, ttl, now).is_ok(),
                    m.set(g, k, &v, ttl, now),
                    "op {op}: set"
                );
            }
            80..=94 => assert_eq!(s.delete(g, k, now), m.delete(g, k, now), "op {op}: delete"),
            _ => {
                let swept = s.sweep_expired(now, rng.below(10) as usize);
                assert_eq!(swept, m.follow_sweep(&s, now), "op {op}: sweep");
            }
        }
        assert_eq!(s.stats(), m.stats(), "op {op}: stats");
        assert!(s.stats().bytes <= cap);
        if op % 16 == 0 {
            assert_eq!(s.lru_order(), m.order(), "op {op}: LRU order");
        }
    }
    let st = s.stats();
    // The mix reached every path.
    assert!(st.hits > 0 && st.misses > 0 && st.evictions > 0 && st.expirations > 0);
    assert!(st.deletes > 0 && st.items > 0);
}

/// VmRSS of this process, in bytes.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Entry shapes measured: key length, value length, entries. 229,400 is
/// just past a table doubling (7/8 of 2^18 buckets), its emptiest point.
const RSS_SHAPES: [(usize, usize, u64); 4] = [
    (16, 64, 200_000),
    (16, 64, 229_400),
    (16, 1, 200_000),
    (16, 4096, 20_000),
];
const RSS_PROBE: &str = "SHARDCACHE_STORE_RSS_PROBE";

/// Fills an unbounded store with one shape; returns (RSS growth, charges).
fn measure_rss(shape: usize) -> Option<(u64, u64)> {
    let (key_len, value_len, count) = RSS_SHAPES[shape];
    let value = vec![7u8; value_len];
    let mut key = vec![b'k'; key_len];
    let mut s = Store::new(u64::MAX);
    let before = resident_bytes()?;
    for i in 0..count {
        key[..8].copy_from_slice(&i.to_le_bytes());
        s.set(b"", &key, &value, 0, 0).ok()?;
    }
    let grown = resident_bytes()?.saturating_sub(before);
    Some((grown, s.stats().bytes))
}

/// The charge must be honest: resident memory grows about as much as the
/// sum of charges. Each shape is measured in a child process running only
/// this test, so neither the other tests' allocations nor memory freed by
/// an earlier shape blur the figure.
#[test]
fn resident_memory_tracks_charges() {
    if let Ok(shape) = std::env::var(RSS_PROBE) {
        let shape = shape.parse().unwrap_or(0);
        if let Some((grown, charged)) = measure_rss(shape) {
            println!("rss-probe {grown} {charged}");
        }
        return;
    }
    let test = format!(
        "{}::resident_memory_tracks_charges",
        module_path!().split_once("::").map_or("", |(_, rest)| rest)
    );
    if resident_bytes().is_none() {
        eprintln!("no VmRSS in /proc/self/status: resident memory not measured");
        return;
    }
    for (shape, &(k, v, n)) in RSS_SHAPES.iter().enumerate() {
        let child = std::env::current_exe().and_then(|exe| {
            std::process::Command::new(exe)
                .args([&test, "--exact", "--nocapture", "--test-threads=1"])
                .env(RSS_PROBE, shape.to_string())
                .output()
        });
        let (grown, charged) = match child {
            Ok(out) => {
                let stdout = String::from_utf8_lossy(&out.stdout);
                stdout
                    .lines()
                    .find_map(|l| l.split_once("rss-probe ")?.1.split_once(' '))
                    .and_then(|(g, c)| Some((g.parse().ok()?, c.trim().parse().ok()?)))
                    .unwrap_or_else(|| panic!("no measurement from the probe:\n{stdout}"))
            }
            // No child process here: measure in-process, noisier.
            Err(_) => measure_rss(shape).expect("measured"),
        };
        let ratio = grown as f64 / charged as f64;
        eprintln!(
            "{n} entries of {k} B keys + {v} B values: RSS grew {grown} B, charged {charged} B \
             ({:.1} vs {:.1} B/entry, ratio {ratio:.3})",
            grown as f64 / n as f64,
            charged as f64 / n as f64,
        );
        assert!(
            (1.0 / 1.5..=1.5).contains(&ratio),
            "RSS grew {grown} B for {charged} B charged (ratio {ratio:.2})"
        );
    }
}

#[test]
fn expiry_base_moves_and_far_expiries_stay_exact() {
    let mut s = Store::new(1 << 20);
    let base_move = REBASE_AFTER;
    // Fits the 32-bit field from base 0; beyond it (~49.7 days): far.
    s.set(b"", b"near", b"v", base_move + 1000, 0).unwrap();
    s.set(b"", b"soon", b"v", base_move + 5, 0).unwrap();
    s.set(b"", b"far", b"v", 5_000_000_000, 0).unwrap();
    s.set(b"", b"never", b"v", 0, 0).unwrap();
    let before = s.stats().bytes;
    assert_eq!(s.far.len(), 1);
    assert_eq!(
        before,
        3 * charge(b"", b"near", 1) + charge(b"", b"far", 1) + charge::FAR_BYTES
    );
    s.lru_order();
    // The first sweep past 2^31 ms visits everything once: `soon` has
    // expired, `far` now fits the field relative to the new base.
    assert_eq!(s.sweep_expired(base_move + 10, 1), 1);
    assert_eq!(s.base, base_move + 10);
    assert!(s.far.is_empty());
    assert_eq!(s.stats().bytes, 3 * charge(b"", b"near", 1));
    s.lru_order();
    assert!(s.get(b"", b"near", base_move + 999).is_some());
    assert!(s.get(b"", b"near", base_move + 1000).is_none());
    assert!(s.get(b"", b"far", 4_999_999_999).is_some());
    assert!(s.get(b"", b"far", 5_000_000_000).is_none());
    assert!(s.get(b"", b"never", u64::MAX).is_some());
    assert_eq!(s.stats().expirations, 3);
    // An overwrite that drops a far expiry gives its bytes back.
    s.set(b"", b"x", b"v", u64::MAX, 0).unwrap();
    assert_eq!(s.far.len(), 1);
    s.set(b"", b"x", b"v", 10, base_move + 20).unwrap();
    assert!(s.far.is_empty());
    assert_eq!(s.stats().bytes, 2 * charge(b"", b"x", 1));
    s.lru_order();
}

#[test]
fn pages_of_an_old_size_are_given_back_when_the_mix_shifts() {
    // 2 MiB of budget: 32 pages' worth.
    let cap = 2 << 20;
    let mut s = Store::new(cap);
    let mut n = 0u64;
    let mut fill = |s: &mut Store, len: usize, bytes: u64| {
        let v = vec![1u8; len];
        let mut written = 0;
        while written < bytes {
            s.set(b"", &n.to_le_bytes(), &v, 0, 0).unwrap();
            n += 1;
            written += len as u64;
        }
    };
    fill(&mut s, 50, 3 * cap);
    let held = s.slab.bytes() as u64;
    assert!(held <= cap + slab::PAGE_BYTES as u64, "{held}");
    // Another class entirely, then large blocks: the 80-byte chunks'
    // pages all go, and what is held stays within the budget plus one
    // page per class in use.
    fill(&mut s, 700, 3 * cap);
    let held = s.slab.bytes() as u64;
    assert!(held <= cap + 2 * slab::PAGE_BYTES as u64, "{held}");
    fill(&mut s, 3000, 3 * cap);
    assert!(s.slab.bytes() as u64 <= cap, "{}", s.slab.bytes());
    assert_eq!(s.slab.live_ids().count(), s.len());
    s.lru_order();
    // Every chunk page went back: only blocks are held.
    assert_eq!(s.slots(), s.slab.live_ids().count());
}

#[test]
fn the_sweep_gives_memory_back() {
    let mut s = Store::new(64 << 20);
    for i in 0..20_000u32 {
        let len = if i % 10 == 0 { 5000 } else { 60 };
        s.set(b"", &i.to_le_bytes(), &vec![0; len], 5, 0).unwrap();
    }
    assert!(s.slab.bytes() > 10 << 20);
    let mut reclaimed = 0;
    while reclaimed < 20_000 {
        let r = s.sweep_expired(10, 4096);
        assert!(r > 0, "a lap of the sweep reclaims");
        reclaimed += r;
    }
    assert_eq!((s.slab.bytes(), s.stats().bytes, s.len()), (0, 0, 0));
    s.lru_order();
}

#[test]
fn entries_stay_where_they_were_written() {
    let mut s = Store::new(1 << 30);
    let keys: Vec<[u8; 4]> = (0..200u32).map(|i| i.to_le_bytes()).collect();
    let mut at = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        let len = if i % 3 == 0 { 3000 } else { 50 };
        s.set(b"", k, &vec![i as u8; len], 0, 0).unwrap();
    }
    for k in &keys {
        at.push(s.get(b"", k, 0).unwrap().as_ptr());
    }
    // Large values in and out, overwrites of other sizes, small entries
    // filling new pages: nothing written before moves.
    let big = vec![9u8; 4 << 20];
    for i in 0..40u32 {
        s.set(b"big", &i.to_le_bytes(), &big, 0, 0).unwrap();
        s.set(
            b"big",
            &(i / 2).to_le_bytes(),
            &big[..i as usize * 1000],
            0,
            0,
        )
        .unwrap();
        for j in 0..200u32 {
            s.set(b"small", &(i * 200 + j).to_le_bytes(), b"v", 0, 0)
                .unwrap();
        }
        s.delete(b"big", &i.to_le_bytes(), 0);
    }
    for (k, &p) in keys.iter().zip(&at) {
        assert_eq!(s.get(b"", k, 0).map(<[u8]>::as_ptr), Some(p));
    }
    s.lru_order();
}
