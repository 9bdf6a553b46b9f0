//! One shard's entries: a hashbrown table of slab indices (ahash), an
//! index-linked LRU threaded through the slab, TTLs and a byte budget.
//!
//! Touched by its shard's thread only, so it is plain `&mut self` code: no
//! locks, no `Rc`, no `RefCell`. It reads no clock (callers pass `now_ms`)
//! and knows nothing of sockets or protocols.
//!
//! - `slab.rs`: the slots, the LRU list and the free list.
//! - `charge.rs`: what an entry costs the budget (a measured memory model).
//!
//! An entry's group, key and value share one heap block, so a new key costs
//! one allocation. The table holds, per entry, its `u32` slab index and 32
//! bits of its hash; lookups compare the key in place in the slab, so no key
//! is stored twice and no lookup allocates. The 32 bits are worth their 6
//! bytes per entry: measured on 100k entries, a miss takes 23 ns instead of
//! 57-74 (a 7-bit control-byte false match no longer costs two cache misses
//! into the slab), and filling 1M entries 300 ms instead of 509 (the table
//! grows without reading the slab).

mod charge;
mod slab;

use std::hash::{BuildHasher, Hasher};

use hashbrown::HashTable;

pub use charge::ENTRY_OVERHEAD;
use slab::{Slab, MAX_SLOTS, NIL};

/// Counters reported by Stats.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub hits: u64,
    pub misses: u64,
    /// Successful sets, new keys and overwrites.
    pub sets: u64,
    /// Deletes that removed a live entry.
    pub deletes: u64,
    /// Live entries removed to make room.
    pub evictions: u64,
    /// Expired entries removed, by a read, a delete, an overwrite, the
    /// sweep, or when the eviction reached them first.
    pub expirations: u64,
    /// Entries held, including expired ones not yet reclaimed.
    pub items: u64,
    /// Sum of the entries' `entry_charge`.
    pub bytes: u64,
    pub capacity_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetError {
    /// The entry alone needs more than the whole budget.
    TooLarge { charge: u64, capacity: u64 },
}

pub struct Store {
    /// One `handle` (slab index and hash tag) per entry.
    table: HashTable<u64>,
    slab: Slab,
    /// One per store: the seeds differ between shards and runs, so keys
    /// chosen to collide in one cannot be replayed against another.
    hasher: ahash::RandomState,
    capacity: u64,
    /// Where the next `sweep_expired` call resumes.
    sweep_cursor: usize,
    /// All counters but `items`, which is the table's length.
    stats: StoreStats,
}

/// 32 bits of an entry's hash. The group's length goes first so that
/// ("a", "bc") and ("ab", "c") feed different input.
fn hash_key(hasher: &ahash::RandomState, group: &[u8], key: &[u8]) -> u32 {
    let mut h = hasher.build_hasher();
    h.write_usize(group.len());
    h.write(group);
    h.write(key);
    (h.finish() >> 32) as u32
}

/// The table's 64-bit hash, rebuilt from the tag kept in each table entry,
/// so growing the table rehashes without reading the slab. Multiplying by an
/// odd constant spreads the 32 bits to both ends that hashbrown uses: the
/// low bits (bucket) and the top 7 (control byte).
fn spread(tag: u32) -> u64 {
    u64::from(tag).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// A table entry: the slab index in the low half, the tag in the high half.
/// The tag settles almost every control-byte false match (1 in 9 probes at
/// 7 bits) without the two cache misses of reading the slot and its key.
fn handle(i: u32, tag: u32) -> u64 {
    u64::from(tag) << 32 | u64::from(i)
}

fn handle_index(h: u64) -> u32 {
    h as u32
}

fn handle_tag(h: u64) -> u32 {
    (h >> 32) as u32
}

/// The tag of live slot `i`, recomputed from its key for the rare removals
/// that start from the slab (evictions, the sweep).
fn slot_tag(hasher: &ahash::RandomState, slab: &Slab, i: u32) -> u32 {
    let s = slab.slot(i);
    hash_key(hasher, s.group(), s.key())
}

fn slot_charge(slab: &Slab, i: u32) -> u64 {
    let (g, k, v) = slab.slot(i).lens();
    charge::entry_charge(g, k, v)
}

impl Store {
    pub fn new(capacity_bytes: u64) -> Self {
        Self::with_slot_limit(capacity_bytes, MAX_SLOTS)
    }

    /// A store that holds at most `slots` entries whatever their size (the
    /// `u32` index limit; tests lower it to reach that path).
    fn with_slot_limit(capacity_bytes: u64, slots: usize) -> Self {
        Store {
            table: HashTable::new(),
            slab: Slab::new(slots),
            hasher: ahash::RandomState::new(),
            capacity: capacity_bytes,
            sweep_cursor: 0,
            stats: StoreStats {
                capacity_bytes,
                ..StoreStats::default()
            },
        }
    }

    /// What an entry is charged against the budget: its bytes, one slab
    /// slot, its share of the hash table and the allocator's real block size
    /// for its bytes (see `charge.rs`).
    pub fn entry_charge(group_len: usize, key_len: usize, value_len: usize) -> u64 {
        charge::entry_charge(group_len, key_len, value_len)
    }

    /// Entries held, including expired ones not yet reclaimed.
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

    fn find(&self, tag: u32, group: &[u8], key: &[u8]) -> Option<u32> {
        let slab = &self.slab;
        self.table
            .find(spread(tag), |&h| {
                handle_tag(h) == tag && slab.slot(handle_index(h)).is(group, key)
            })
            .map(|&h| handle_index(h))
    }

    /// Removes live entry `i`, whose tag is `tag`, and frees its bytes.
    fn remove(&mut self, i: u32, tag: u32) {
        let h = handle(i, tag);
        if let Ok(found) = self.table.find_entry(spread(tag), |&x| x == h) {
            found.remove();
        }
        self.stats.bytes -= slot_charge(&self.slab, i);
        self.slab.release(i);
    }

    /// Removes the least recently used entry; false when there is none.
    fn evict_one(&mut self, now_ms: u64) -> bool {
        let tail = self.slab.tail();
        if tail == NIL {
            return false;
        }
        // An expired entry was dead already: evicting it loses nothing.
        if self.slab.slot(tail).expired(now_ms) {
            self.stats.expirations += 1;
        } else {
            self.stats.evictions += 1;
        }
        let tag = slot_tag(&self.hasher, &self.slab, tail);
        self.remove(tail, tag);
        true
    }

    /// Evicts from the cold end until `charge` more bytes fit.
    fn make_room(&mut self, charge: u64, now_ms: u64) {
        while self.stats.bytes.saturating_add(charge) > self.capacity {
            if !self.evict_one(now_ms) {
                break;
            }
        }
    }

    pub fn get(&mut self, group: &[u8], key: &[u8], now_ms: u64) -> Option<&[u8]> {
        let tag = hash_key(&self.hasher, group, key);
        let Some(i) = self.find(tag, group, key) else {
            self.stats.misses += 1;
            return None;
        };
        if self.slab.slot(i).expired(now_ms) {
            self.remove(i, tag);
            self.stats.expirations += 1;
            self.stats.misses += 1;
            return None;
        }
        self.stats.hits += 1;
        self.slab.touch(i);
        Some(self.slab.slot(i).value())
    }

    /// Stores `value` under `(group, key)` as the most recent entry,
    /// evicting the least recent ones until it fits. `ttl_ms` 0 never
    /// expires. An entry bigger than the whole budget is refused and
    /// changes nothing, not even an existing entry under that key.
    /// `Ok(true)` when no live entry held the key before (the HTTP gateway
    /// answers 201 then, 204 for a replaced value).
    pub fn set(
        &mut self,
        group: &[u8],
        key: &[u8],
        value: &[u8],
        ttl_ms: u64,
        now_ms: u64,
    ) -> Result<bool, SetError> {
        let charge = charge::entry_charge(group.len(), key.len(), value.len());
        // The slot keeps the lengths as u32; a longer group or key (4 GiB)
        // is refused like an entry over budget.
        let representable = u32::try_from(group.len()).is_ok()
            && u32::try_from(key.len()).is_ok()
            && charge < isize::MAX as u64;
        if charge > self.capacity || !representable {
            return Err(SetError::TooLarge {
                charge,
                capacity: self.capacity,
            });
        }
        let expires_at = if ttl_ms == 0 {
            0
        } else {
            now_ms.saturating_add(ttl_ms)
        };
        let tag = hash_key(&self.hasher, group, key);
        let created;
        if let Some(i) = self.find(tag, group, key) {
            created = self.slab.slot(i).expired(now_ms);
            if created {
                self.stats.expirations += 1;
            }
            // Out of the list and the byte count while room is made, so
            // the eviction never picks the entry being overwritten.
            self.stats.bytes -= slot_charge(&self.slab, i);
            self.slab.detach(i);
            self.make_room(charge, now_ms);
            let slot = self.slab.slot_mut(i);
            slot.replace_value(value);
            slot.set_expiry(expires_at);
            self.slab.attach_front(i);
        } else {
            created = true;
            self.make_room(charge, now_ms);
            if !self.slab.has_room() {
                // Every index is in use: the coldest entry gives its slot.
                self.evict_one(now_ms);
            }
            let i = self.slab.insert(group, key, value, expires_at);
            self.table
                .insert_unique(spread(tag), handle(i, tag), |&h| spread(handle_tag(h)));
        }
        self.stats.bytes += charge;
        self.stats.sets += 1;
        Ok(created)
    }

    /// Removes `(group, key)`; true when a live entry existed. An expired
    /// entry is removed too but counts as an expiration, and gives false.
    pub fn delete(&mut self, group: &[u8], key: &[u8], now_ms: u64) -> bool {
        let tag = hash_key(&self.hasher, group, key);
        let Some(i) = self.find(tag, group, key) else {
            return false;
        };
        let live = !self.slab.slot(i).expired(now_ms);
        self.remove(i, tag);
        if live {
            self.stats.deletes += 1;
        } else {
            self.stats.expirations += 1;
        }
        live
    }

    /// Reclaims expired entries nobody reads: visits at most `max_visits`
    /// slab slots (live or free), resuming where the last call stopped and
    /// wrapping at the end, so repeated calls cover every slot while each
    /// call's work stays bounded. Returns the entries reclaimed.
    pub fn sweep_expired(&mut self, now_ms: u64, max_visits: usize) -> usize {
        self.sweep_retain(now_ms, max_visits, |_, _| true)
    }

    /// [`Store::sweep_expired`] that also removes the live entries for
    /// which `keep(group, key)` is false (say, keys this node no longer
    /// owns); those count as neither expirations nor evictions.
    pub fn sweep_retain(
        &mut self,
        now_ms: u64,
        max_visits: usize,
        mut keep: impl FnMut(&[u8], &[u8]) -> bool,
    ) -> usize {
        let slots = self.slab.slot_count();
        let mut reclaimed = 0;
        for _ in 0..max_visits.min(slots) {
            if self.sweep_cursor >= slots {
                self.sweep_cursor = 0;
            }
            let i = self.sweep_cursor as u32;
            self.sweep_cursor += 1;
            let slot = self.slab.slot(i);
            if !slot.is_live() {
                continue;
            }
            let expired = slot.expired(now_ms);
            if expired || !keep(slot.group(), slot.key()) {
                let tag = slot_tag(&self.hasher, &self.slab, i);
                self.remove(i, tag);
                if expired {
                    self.stats.expirations += 1;
                }
                reclaimed += 1;
            }
        }
        reclaimed
    }

    /// Slab slots, live or free: what one full sweep visits.
    pub fn slots(&self) -> usize {
        self.slab.slot_count()
    }

    /// Removes every entry (counters stay).
    pub fn clear(&mut self) {
        while self.slab.tail() != NIL {
            let tail = self.slab.tail();
            let tag = slot_tag(&self.hasher, &self.slab, tail);
            self.remove(tail, tag);
        }
    }

    /// Whether `(group, key)` is held, expired or not, without counting or
    /// touching anything.
    #[cfg(test)]
    fn holds(&self, group: &[u8], key: &[u8]) -> bool {
        self.find(hash_key(&self.hasher, group, key), group, key)
            .is_some()
    }

    /// (group, key) from most to least recent, after checking the list, the
    /// table and the byte count against each other.
    #[cfg(test)]
    fn lru_order(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let order = self.slab.lru_order();
        assert_eq!(order.len(), self.table.len(), "table and list disagree");
        let mut bytes = 0;
        let mut out = Vec::with_capacity(order.len());
        for &i in &order {
            let s = self.slab.slot(i);
            assert_eq!(
                self.find(slot_tag(&self.hasher, &self.slab, i), s.group(), s.key()),
                Some(i)
            );
            bytes += slot_charge(&self.slab, i);
            out.push((s.group().to_vec(), s.key().to_vec()));
        }
        assert_eq!(bytes, self.stats.bytes, "bytes is not the sum of charges");
        out
    }
}

#[cfg(test)]
mod tests;
