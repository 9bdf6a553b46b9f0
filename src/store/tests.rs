//! Store tests: LRU order, TTLs, budget, and a model check against a plain
//! reference implementation.

use super::*;

fn c(g: &str, k: &str, v: usize) -> u64 {
    Store::entry_charge(g.len(), k.len(), v)
}

#[test]
fn set_get_overwrite_delete() {
    let mut s = Store::new(1 << 20);
    assert_eq!(s.get(b"", b"k", 0), None);
    s.set(b"", b"k", b"v1", 0, 0).unwrap();
    assert_eq!(s.get(b"", b"k", 0), Some(&b"v1"[..]));
    s.set(b"", b"k", b"value2", 0, 0).unwrap();
    assert_eq!(s.get(b"", b"k", 0), Some(&b"value2"[..]));
    assert_eq!(s.stats().bytes, c("", "k", 6));
    assert!(s.delete(b"", b"k", 0));
    assert!(!s.delete(b"", b"k", 0));
    let st = s.stats();
    assert_eq!(
        (st.hits, st.misses, st.sets, st.deletes, st.items, st.bytes),
        (2, 1, 2, 1, 0, 0)
    );
}

#[test]
fn groups_are_apart() {
    let mut s = Store::new(1 << 20);
    s.set(b"a", b"bc", b"1", 0, 0).unwrap();
    s.set(b"ab", b"c", b"2", 0, 0).unwrap();
    s.set(b"", b"abc", b"3", 0, 0).unwrap();
    assert_eq!(s.get(b"a", b"bc", 0), Some(&b"1"[..]));
    assert_eq!(s.get(b"ab", b"c", 0), Some(&b"2"[..]));
    assert_eq!(s.get(b"", b"abc", 0), Some(&b"3"[..]));
    assert_eq!(s.len(), 3);
}

#[test]
fn lru_evicts_the_coldest_and_reads_refresh() {
    let per = c("", "k0", 10);
    let mut s = Store::new(per * 3);
    for k in ["k0", "k1", "k2"] {
        s.set(b"", k.as_bytes(), &[0; 10], 0, 0).unwrap();
    }
    assert!(s.get(b"", b"k0", 0).is_some()); // k1 is now the coldest
    s.set(b"", b"k3", &[0; 10], 0, 0).unwrap();
    assert!(s.get(b"", b"k1", 0).is_none());
    assert!(s.get(b"", b"k0", 0).is_some());
    assert!(s.get(b"", b"k2", 0).is_some());
    assert_eq!(s.stats().evictions, 1);
    assert!(s.stats().bytes <= s.stats().capacity_bytes);
}

#[test]
fn too_large_is_refused_without_evicting() {
    let mut s = Store::new(1000);
    s.set(b"", b"a", &[1; 10], 0, 0).unwrap();
    let err = s.set(b"", b"a", &[1; 2000], 0, 0).unwrap_err();
    assert!(matches!(err, SetError::TooLarge { capacity: 1000, .. }));
    assert_eq!(s.get(b"", b"a", 0), Some(&[1u8; 10][..]));
    assert_eq!(s.stats().evictions, 0);
    let mut zero = Store::new(0);
    assert!(zero.set(b"", b"a", b"", 0, 0).is_err());
}

#[test]
fn ttl_expiry_and_zero() {
    let mut s = Store::new(1 << 20);
    s.set(b"", b"t", b"x", 100, 1000).unwrap();
    s.set(b"", b"p", b"y", 0, 1000).unwrap();
    assert!(s.get(b"", b"t", 1099).is_some());
    assert!(s.get(b"", b"t", 1100).is_none());
    assert!(s.get(b"", b"p", u64::MAX).is_some());
    s.set(b"", b"d", b"x", 10, 0).unwrap();
    assert!(
        !s.delete(b"", b"d", 50),
        "an expired entry is not deleted, it expired"
    );
    assert_eq!(s.stats().expirations, 2);
    // Overwriting with ttl 0 makes an entry permanent.
    s.set(b"", b"o", b"x", 10, 0).unwrap();
    s.set(b"", b"o", b"x", 0, 0).unwrap();
    assert!(s.get(b"", b"o", 1_000_000).is_some());
}

#[test]
fn sweep_reclaims_unread_expired_entries() {
    let mut s = Store::new(64 << 20);
    for i in 0..10_000u32 {
        s.set(
            b"",
            &i.to_le_bytes(),
            b"v",
            if i % 2 == 0 { 5 } else { 0 },
            0,
        )
        .unwrap();
    }
    let mut reclaimed = 0;
    for _ in 0..10 {
        reclaimed += s.sweep_expired(10, 1000);
    }
    assert_eq!(reclaimed, 5000);
    assert_eq!(s.len(), 5000);
    assert_eq!(s.stats().expirations, 5000);
    assert_eq!(s.stats().bytes, 5000 * Store::entry_charge(0, 4, 1));
}

/// A plain reference: a Vec in LRU order (front = most recent).
struct Model {
    items: Vec<(Vec<u8>, Vec<u8>)>,
    cap: u64,
}

impl Model {
    fn bytes(&self) -> u64 {
        self.items
            .iter()
            .map(|(k, v)| Store::entry_charge(1, k.len(), v.len()))
            .sum()
    }
    fn get(&mut self, k: &[u8]) -> Option<Vec<u8>> {
        let i = self.items.iter().position(|(x, _)| x == k)?;
        let e = self.items.remove(i);
        self.items.insert(0, e.clone());
        Some(e.1)
    }
    fn set(&mut self, k: &[u8], v: &[u8]) {
        let charge = Store::entry_charge(1, k.len(), v.len());
        if charge > self.cap {
            return;
        }
        if let Some(i) = self.items.iter().position(|(x, _)| x == k) {
            self.items.remove(i);
        }
        while self.bytes() + charge > self.cap {
            self.items.pop();
        }
        self.items.insert(0, (k.to_vec(), v.to_vec()));
    }
    fn delete(&mut self, k: &[u8]) -> bool {
        match self.items.iter().position(|(x, _)| x == k) {
            Some(i) => {
                self.items.remove(i);
                true
            }
            None => false,
        }
    }
}

#[test]
fn matches_a_reference_model() {
    let cap = 20 * Store::entry_charge(1, 2, 30);
    let mut s = Store::new(cap);
    let mut m = Model {
        items: Vec::new(),
        cap,
    };
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..30_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let key = [b'k', (x % 40) as u8];
        match (x >> 8) % 10 {
            0..=4 => assert_eq!(s.get(b"g", &key, 0).map(<[u8]>::to_vec), m.get(&key)),
            5..=8 => {
                let v = vec![(x >> 16) as u8; ((x >> 24) % 60) as usize];
                let _ = s.set(b"g", &key, &v, 0, 0);
                m.set(&key, &v);
            }
            _ => assert_eq!(s.delete(b"g", &key, 0), m.delete(&key)),
        }
        assert_eq!(s.len(), m.items.len());
        assert_eq!(s.stats().bytes, m.bytes());
        assert!(s.stats().bytes <= cap);
    }
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// The charge must be honest: resident memory grows about as much as the
/// sum of charges (the tolerance absorbs allocator and test-harness noise).
#[test]
fn resident_memory_tracks_charges() {
    let before = rss_bytes();
    let mut s = Store::new(u64::MAX);
    for i in 0..200_000u64 {
        let key = format!("key-{i:012}");
        s.set(b"", key.as_bytes(), &[7u8; 64], 0, 0).unwrap();
    }
    let grown = rss_bytes().saturating_sub(before) as f64;
    let charged = s.stats().bytes as f64;
    let ratio = grown / charged;
    assert!(
        (0.6..1.5).contains(&ratio),
        "RSS grew {grown} for {charged} charged (ratio {ratio:.2})"
    );
}
