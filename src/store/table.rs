//! The index: key hash → entry id, in buckets of fourteen slots, each a
//! 16-bit hash tag and a `u32` id (6.3 bytes a slot).
//!
//! Written for this store instead of using hashbrown because of its size:
//! hashbrown's `HashTable<u64>` (id and a 32-bit tag, the previous index)
//! costs 9 bytes a bucket and doubles at 7/8 full, so at 1M entries it held
//! 2^21 buckets, 19 bytes an entry. Here the table grows by half when 7/8
//! full (load 0.58 to 0.875: 7.2 to 10.8 bytes an entry), and the bucket
//! index is `hash * buckets >> 32`, so any bucket count works.
//!
//! The tags live apart from the ids (32 bytes of tags a bucket, two buckets
//! a cache line), so a lookup that misses reads one line of a table a third
//! the size of the whole, and a 16-bit tag settles all but 1 in 65,534
//! false matches without reading the entry. Collisions probe the next
//! buckets; each bucket counts the entries that passed it while it was full
//! (as in F14), so a lookup stops at the first bucket nobody overflowed, and
//! a removal leaves no tombstone.
//!
//! The table keeps no full hash, so growing it rehashes the keys: the store
//! walks its pages in memory order (`Store::rebuild_table`).

const SLOTS: usize = 14;

/// A bucket's tags (0 = empty slot) and its overflow count.
#[derive(Clone, Copy)]
#[repr(C, align(32))]
struct Tags {
    tags: [u16; SLOTS],
    /// Entries stored further on that passed this bucket while it was full;
    /// sticks at `u16::MAX`.
    overflow: u16,
    _pad: u16,
}

const EMPTY: Tags = Tags {
    tags: [0; SLOTS],
    overflow: 0,
    _pad: 0,
};

pub struct Table {
    tags: Vec<Tags>,
    /// By bucket, the ids of the slots whose tag is set.
    ids: Vec<[u32; SLOTS]>,
    len: usize,
}

fn tag(hash: u64) -> u16 {
    // 0 marks an empty slot; 0xffff pads `Table::words`.
    ((hash >> 48) as u16).clamp(1, 0xfffe)
}

impl Table {
    pub fn new() -> Self {
        Table {
            tags: Vec::new(),
            ids: Vec::new(),
            len: 0,
        }
    }

    pub fn with_buckets(n: usize) -> Self {
        Table {
            tags: vec![EMPTY; n],
            ids: vec![[0; SLOTS]; n],
            len: 0,
        }
    }

    /// Heap bytes held.
    pub fn bytes(&self) -> usize {
        self.tags.len() * std::mem::size_of::<Tags>() + self.ids.len() * 4 * SLOTS
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether one more entry would pass 7/8 of the slots.
    pub fn needs_growth(&self) -> bool {
        (self.len + 1) * 8 > self.tags.len() * SLOTS * 7
    }

    /// The bucket count to grow to: half as many more. (By a quarter, the
    /// load would stay higher, 0.70 to 0.875, but each entry's key would be
    /// hashed again ~4.7 times on the way to 1M entries instead of ~2.3:
    /// filling 1M entries took 0.82 s instead of 0.22 before this table.)
    pub fn grown_buckets(&self) -> usize {
        let n = self.tags.len();
        (n + n / 2).max(n + 1)
    }

    fn home(&self, hash: u64) -> usize {
        ((hash as u32 as u64 * self.tags.len() as u64) >> 32) as usize
    }

    fn next(&self, b: usize) -> usize {
        if b + 1 == self.tags.len() {
            0
        } else {
            b + 1
        }
    }

    /// Bit 16j + 15 of word j / 4 set where slot j's tag is `t` (SWAR,
    /// exact: the sum below cannot carry across lanes).
    #[inline]
    fn matches(bucket: &Tags, t: u16) -> [u64; 4] {
        const LOW: u64 = 0x7fff_7fff_7fff_7fff;
        let pattern = u64::from(t) * 0x0001_0001_0001_0001;
        Self::words(bucket).map(|w| {
            let x = w ^ pattern;
            !(((x & LOW) + LOW) | x | LOW)
        })
    }

    /// The tags as four little-endian words of four lanes.
    #[inline]
    fn words(bucket: &Tags) -> [u64; 4] {
        let t = &bucket.tags;
        let w = |i: usize| {
            u64::from(t[i])
                | u64::from(t[i + 1]) << 16
                | u64::from(t[i + 2]) << 32
                | u64::from(t[i + 3]) << 48
        };
        // The last word's two lanes past the slots read 0xffff, never a
        // tag nor empty (see `tag`).
        [
            w(0),
            w(4),
            w(8),
            u64::from(t[12]) | u64::from(t[13]) << 16 | 0xffff_ffff_0000_0000,
        ]
    }

    /// The id of the entry with this hash for which `eq` holds.
    pub fn find(&self, hash: u64, mut eq: impl FnMut(u32) -> bool) -> Option<u32> {
        if self.tags.is_empty() {
            return None;
        }
        let t = tag(hash);
        let mut b = self.home(hash);
        for _ in 0..self.tags.len() {
            let bucket = &self.tags[b];
            for (w, mut m) in Self::matches(bucket, t).into_iter().enumerate() {
                while m != 0 {
                    let id = self.ids[b][w * 4 + (m.trailing_zeros() / 16) as usize];
                    if eq(id) {
                        return Some(id);
                    }
                    m &= m - 1;
                }
            }
            if bucket.overflow == 0 {
                return None;
            }
            b = self.next(b);
        }
        None
    }

    /// The first empty slot of bucket `b`.
    fn free_slot(&self, b: usize) -> Option<usize> {
        let empty = Self::matches(&self.tags[b], 0);
        let (w, m) = empty.iter().enumerate().find(|(_, &m)| m != 0)?;
        Some(w * 4 + (m.trailing_zeros() / 16) as usize)
    }

    /// Adds `id` under `hash`. The caller grows the table first when
    /// `needs_growth` says so, so a free slot exists.
    pub fn insert(&mut self, hash: u64, id: u32) {
        let t = tag(hash);
        let mut b = self.home(hash);
        loop {
            if let Some(i) = self.free_slot(b) {
                self.tags[b].tags[i] = t;
                self.ids[b][i] = id;
                self.len += 1;
                return;
            }
            let o = &mut self.tags[b].overflow;
            *o = o.saturating_add(1);
            b = self.next(b);
        }
    }

    /// Removes `id`, stored under `hash`; false when it is not there.
    pub fn remove(&mut self, hash: u64, id: u32) -> bool {
        if self.tags.is_empty() {
            return false;
        }
        let t = tag(hash);
        let home = self.home(hash);
        let mut b = home;
        for _ in 0..self.tags.len() {
            let tags = &self.tags[b].tags;
            let found = (0..SLOTS).find(|&i| tags[i] == t && self.ids[b][i] == id);
            if let Some(i) = found {
                self.tags[b].tags[i] = 0;
                self.len -= 1;
                // The buckets it passed have one overflow fewer.
                let mut p = home;
                while p != b {
                    let o = &mut self.tags[p].overflow;
                    if *o != u16::MAX {
                        *o -= 1;
                    }
                    p = self.next(p);
                }
                return true;
            }
            if self.tags[b].overflow == 0 {
                return false;
            }
            b = self.next(b);
        }
        false
    }

    /// Every id held, in bucket order.
    #[cfg(test)]
    pub fn ids(&self) -> Vec<u32> {
        let mut out = Vec::new();
        for (b, tags) in self.tags.iter().enumerate() {
            for i in 0..SLOTS {
                if tags.tags[i] != 0 {
                    out.push(self.ids[b][i]);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A table with the store's growth rule and `hash` as the only key.
    fn grow_insert(t: &mut Table, hashes: &[u64], hash: u64, id: u32) {
        if t.needs_growth() {
            let mut bigger = Table::with_buckets(t.grown_buckets());
            for &i in &t.ids() {
                bigger.insert(hashes[i as usize], i);
            }
            *t = bigger;
        }
        t.insert(hash, id);
    }

    #[test]
    fn collisions_overflow_and_removal_keeps_the_rest_reachable() {
        // Every hash has home bucket 0 of 3 and the same tag: the worst case.
        let mut t = Table::with_buckets(3);
        let n = 3 * SLOTS - 2;
        let hashes: Vec<u64> = (0..n as u64).map(|i| 0xabcd_0000_0000_0000 | i).collect();
        for (i, &h) in hashes.iter().enumerate() {
            t.insert(h, i as u32);
        }
        assert_eq!(t.len(), n);
        for (i, &h) in hashes.iter().enumerate() {
            assert_eq!(t.find(h, |id| id == i as u32), Some(i as u32));
        }
        assert_eq!(t.tags[0].overflow as usize, n - SLOTS);
        assert_eq!(t.tags[1].overflow as usize, n - 2 * SLOTS);
        assert_eq!(t.tags[2].overflow, 0);
        // Remove from the first bucket: the overflowed ones stay found.
        for i in 0..SLOTS as u32 {
            assert!(t.remove(hashes[i as usize], i));
            assert!(!t.remove(hashes[i as usize], i));
        }
        for i in SLOTS as u32..n as u32 {
            assert_eq!(t.find(hashes[i as usize], |id| id == i), Some(i));
            assert!(t.remove(hashes[i as usize], i));
        }
        assert_eq!(t.len(), 0);
        assert!(t.tags.iter().all(|b| b.overflow == 0));
        assert_eq!(t.find(hashes[3], |_| true), None);
        // Padding lanes and empty slots never match a tag.
        assert_eq!(Table::matches(&EMPTY, 0xfffe), [0; 4]);
        assert_eq!(Table::matches(&EMPTY, 0)[3], 0x8000_8000);
    }

    #[test]
    fn grows_by_half_and_finds_everything() {
        let mut t = Table::new();
        assert!(t.find(1, |_| true).is_none());
        assert!(!t.remove(1, 0));
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let hashes: Vec<u64> = (0..20_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x
            })
            .collect();
        for (i, &h) in hashes.iter().enumerate() {
            grow_insert(&mut t, &hashes, h, i as u32);
            assert!(t.len() * 8 <= t.tags.len() * SLOTS * 7);
        }
        let load = t.len() as f64 / (t.tags.len() * SLOTS) as f64;
        assert!((0.58..=0.875).contains(&load), "load {load}");
        for (i, &h) in hashes.iter().enumerate() {
            assert_eq!(t.find(h, |id| id == i as u32), Some(i as u32));
        }
        for (i, &h) in hashes.iter().enumerate().step_by(2) {
            assert!(t.remove(h, i as u32));
        }
        for (i, &h) in hashes.iter().enumerate() {
            let want = (i % 2 == 1).then_some(i as u32);
            assert_eq!(t.find(h, |id| id == i as u32), want);
        }
        assert_eq!(std::mem::size_of::<Tags>(), 32);
    }
}
