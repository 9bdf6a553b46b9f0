//! One shard's entries: a hashbrown table of slab indices (ahash), an
//! index-linked LRU threaded through the slab, TTLs and a byte budget.
//!
//! Touched by its shard's thread only, so it is plain `&mut self` code: no
//! locks, no `Rc`, no `RefCell`. It reads no clock (callers pass `now_ms`)
//! and knows nothing of sockets or protocols.

use std::hash::{BuildHasher, Hasher};

/// Counters reported by Stats.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub hits: u64,
    pub misses: u64,
    pub sets: u64,
    pub deletes: u64,
    pub evictions: u64,
    pub expirations: u64,
    pub items: u64,
    pub bytes: u64,
    pub capacity_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetError {
    /// The entry alone needs more than the whole budget.
    TooLarge { charge: u64, capacity: u64 },
}

const NIL: u32 = u32::MAX;

/// One slot of the slab. A free slot has an empty `key`.
struct Entry {
    /// u32-LE group length, group bytes, key bytes: one allocation that
    /// identifies the entry and that lookups compare against.
    key: Box<[u8]>,
    value: Box<[u8]>,
    /// Milliseconds on the caller's clock; 0 = never.
    expires_at: u64,
    hash: u64,
    prev: u32,
    next: u32,
}

/// Memory an entry costs beyond its key, group and value bytes: its slab
/// slot, its hash-table slot (a u32 and a control byte, at most half empty
/// after growth, so counted twice), the 4-byte group-length prefix, and the
/// allocator's header and rounding for its two heap blocks (~16 bytes each
/// with glibc malloc). Checked against resident memory in
/// `resident_memory_tracks_charges`.
pub const ENTRY_OVERHEAD: u64 = std::mem::size_of::<Entry>() as u64 + 2 * 5 + 4 + 2 * 16;

pub struct Store {
    table: hashbrown::HashTable<u32>,
    slab: Vec<Entry>,
    free: Vec<u32>,
    head: u32,
    tail: u32,
    hasher: ahash::RandomState,
    capacity: u64,
    sweep_cursor: usize,
    stats: StoreStats,
}

impl Store {
    pub fn new(capacity_bytes: u64) -> Self {
        Store {
            table: hashbrown::HashTable::new(),
            slab: Vec::new(),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
            hasher: ahash::RandomState::new(),
            capacity: capacity_bytes,
            sweep_cursor: 0,
            stats: StoreStats {
                capacity_bytes,
                ..StoreStats::default()
            },
        }
    }

    /// What an entry is charged against the budget.
    pub fn entry_charge(group_len: usize, key_len: usize, value_len: usize) -> u64 {
        (group_len + key_len + value_len) as u64 + ENTRY_OVERHEAD
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    pub fn stats(&self) -> StoreStats {
        StoreStats {
            items: self.table.len() as u64,
            ..self.stats
        }
    }

    fn hash(&self, group: &[u8], key: &[u8]) -> u64 {
        let mut h = self.hasher.build_hasher();
        h.write_u32(group.len() as u32);
        h.write(group);
        h.write(key);
        h.finish()
    }

    fn matches(stored: &[u8], group: &[u8], key: &[u8]) -> bool {
        stored.len() == 4 + group.len() + key.len()
            && stored[..4] == (group.len() as u32).to_le_bytes()
            && &stored[4..4 + group.len()] == group
            && &stored[4 + group.len()..] == key
    }

    fn find(&self, hash: u64, group: &[u8], key: &[u8]) -> Option<u32> {
        let slab = &self.slab;
        self.table
            .find(hash, |&i| Self::matches(&slab[i as usize].key, group, key))
            .copied()
    }

    fn charge_of(e: &Entry) -> u64 {
        (e.key.len() - 4 + e.value.len()) as u64 + ENTRY_OVERHEAD
    }

    fn expired(e: &Entry, now: u64) -> bool {
        e.expires_at != 0 && e.expires_at <= now
    }

    fn unlink(&mut self, i: u32) {
        let (prev, next) = {
            let e = &self.slab[i as usize];
            (e.prev, e.next)
        };
        if prev == NIL {
            self.head = next;
        } else {
            self.slab[prev as usize].next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.slab[next as usize].prev = prev;
        }
    }

    fn push_front(&mut self, i: u32) {
        let old = self.head;
        {
            let e = &mut self.slab[i as usize];
            e.prev = NIL;
            e.next = old;
        }
        if old == NIL {
            self.tail = i;
        } else {
            self.slab[old as usize].prev = i;
        }
        self.head = i;
    }

    /// Removes entry `i` everywhere and frees its memory.
    fn remove(&mut self, i: u32) {
        self.unlink(i);
        let hash = self.slab[i as usize].hash;
        if let Ok(slot) = self.table.find_entry(hash, |&j| j == i) {
            slot.remove();
        }
        let e = &mut self.slab[i as usize];
        self.stats.bytes -= Self::charge_of(e);
        e.key = Box::new([]);
        e.value = Box::new([]);
        self.free.push(i);
    }

    pub fn get(&mut self, group: &[u8], key: &[u8], now_ms: u64) -> Option<&[u8]> {
        let hash = self.hash(group, key);
        let Some(i) = self.find(hash, group, key) else {
            self.stats.misses += 1;
            return None;
        };
        if Self::expired(&self.slab[i as usize], now_ms) {
            self.remove(i);
            self.stats.expirations += 1;
            self.stats.misses += 1;
            return None;
        }
        self.stats.hits += 1;
        if self.head != i {
            self.unlink(i);
            self.push_front(i);
        }
        Some(&self.slab[i as usize].value)
    }

    pub fn set(
        &mut self,
        group: &[u8],
        key: &[u8],
        value: &[u8],
        ttl_ms: u64,
        now_ms: u64,
    ) -> Result<(), SetError> {
        let charge = Self::entry_charge(group.len(), key.len(), value.len());
        if charge > self.capacity {
            return Err(SetError::TooLarge {
                charge,
                capacity: self.capacity,
            });
        }
        let expires_at = if ttl_ms == 0 {
            0
        } else {
            now_ms.saturating_add(ttl_ms).max(1)
        };
        let hash = self.hash(group, key);
        if let Some(i) = self.find(hash, group, key) {
            // Overwrite in place: release the old charge first so eviction
            // below never picks this entry.
            let old = Self::charge_of(&self.slab[i as usize]);
            self.stats.bytes -= old;
            self.unlink(i);
            self.evict_until_fits(charge);
            let e = &mut self.slab[i as usize];
            if e.value.len() == value.len() {
                e.value.copy_from_slice(value);
            } else {
                e.value = value.into();
            }
            e.expires_at = expires_at;
            self.stats.bytes += charge;
            self.push_front(i);
            self.stats.sets += 1;
            return Ok(());
        }
        self.evict_until_fits(charge);
        let mut k = Vec::with_capacity(4 + group.len() + key.len());
        k.extend_from_slice(&(group.len() as u32).to_le_bytes());
        k.extend_from_slice(group);
        k.extend_from_slice(key);
        let entry = Entry {
            key: k.into_boxed_slice(),
            value: value.into(),
            expires_at,
            hash,
            prev: NIL,
            next: NIL,
        };
        let i = match self.free.pop() {
            Some(i) => {
                self.slab[i as usize] = entry;
                i
            }
            None => {
                self.slab.push(entry);
                (self.slab.len() - 1) as u32
            }
        };
        let slab = &self.slab;
        self.table
            .insert_unique(hash, i, |&j| slab[j as usize].hash);
        self.push_front(i);
        self.stats.bytes += charge;
        self.stats.sets += 1;
        Ok(())
    }

    /// Evicts from the cold end until `charge` more bytes fit.
    fn evict_until_fits(&mut self, charge: u64) {
        while self.stats.bytes + charge > self.capacity && self.tail != NIL {
            let t = self.tail;
            self.remove(t);
            self.stats.evictions += 1;
        }
    }

    pub fn delete(&mut self, group: &[u8], key: &[u8], now_ms: u64) -> bool {
        let hash = self.hash(group, key);
        let Some(i) = self.find(hash, group, key) else {
            return false;
        };
        let live = !Self::expired(&self.slab[i as usize], now_ms);
        self.remove(i);
        if live {
            self.stats.deletes += 1;
        } else {
            self.stats.expirations += 1;
        }
        live
    }

    /// Reclaims expired entries nobody reads: visits at most `max_visits`
    /// slab slots from where the last call stopped.
    pub fn sweep_expired(&mut self, now_ms: u64, max_visits: usize) -> usize {
        let mut reclaimed = 0;
        for _ in 0..max_visits.min(self.slab.len()) {
            if self.sweep_cursor >= self.slab.len() {
                self.sweep_cursor = 0;
            }
            let i = self.sweep_cursor;
            self.sweep_cursor += 1;
            let e = &self.slab[i];
            if !e.key.is_empty() && Self::expired(e, now_ms) {
                self.remove(i as u32);
                self.stats.expirations += 1;
                reclaimed += 1;
            }
        }
        reclaimed
    }
}

#[cfg(test)]
mod tests;
