//! One shard's entries: an exact LRU cache with TTLs and a byte budget,
//! laid out to cost little more than the bytes it holds.
//!
//! Touched by its shard's thread only, so it is plain `&mut self` code: no
//! locks, no `Rc`, no `RefCell`, no `unsafe`. It reads no clock (callers
//! pass `now_ms`) and knows nothing of sockets or protocols.
//!
//! - `item.rs`: an entry's bytes: LRU links, expiry, lengths, group, key and
//!   value in one run of memory.
//! - `slab.rs`: where entries live (size-class chunks of 64 KiB pages, or a
//!   heap block each above 1 KiB) and the LRU list threaded through them.
//! - `table.rs`: the index, hash → entry id, 6.3 bytes a slot.
//! - `charge.rs`: what an entry costs the budget (a measured memory model).
//!
//! A 16-byte key with a 64-byte value costs a 96-byte chunk and about
//! 8-9 bytes of index: see docs/benchmarks.md for the measured budget.

mod charge;
mod item;
mod slab;
mod table;

use std::hash::{BuildHasher, Hasher};

pub use charge::ENTRY_OVERHEAD;
use item::{EXP_FAR, EXP_NEVER, NIL};
use slab::{Slab, MAX_ENTRIES};
use table::Table;

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
    /// Sum of the entries' charges (`Store::entry_charge`, plus `FAR_BYTES`
    /// for an expiry past the 32-bit field's reach).
    pub bytes: u64,
    pub capacity_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetError {
    /// The entry alone needs more than the whole budget.
    TooLarge { charge: u64, capacity: u64 },
}

/// The sweep's filter: false for a (group, key) to drop.
type Keep<'a> = &'a mut dyn FnMut(&[u8], &[u8]) -> bool;

/// The expiry field's time base moves to `now` once `now` is this far past
/// it, so that 32 bits keep reaching ~24 days ahead of `now` at least.
const REBASE_AFTER: u64 = 1 << 31;

pub struct Store {
    table: Table,
    slab: Slab,
    /// One per store: the seeds differ between shards and runs, so keys
    /// chosen to collide in one cannot be replayed against another.
    hasher: ahash::RandomState,
    capacity: u64,
    /// An entry's expiry field `x` (neither `EXP_NEVER` nor `EXP_FAR`)
    /// means it expires at `base + x`.
    base: u64,
    /// Absolute expiries of the entries whose field is `EXP_FAR` (expiries
    /// more than 2^32 ms past `base`; rare: TTLs beyond ~49 days).
    far: hashbrown::HashMap<u32, u64>,
    /// Where the next `sweep_expired` call resumes (see `Slab::scan`).
    sweep_cursor: (usize, u32),
    /// The sweep's list of entries to remove, kept to reuse its memory.
    doomed: Vec<(u32, bool)>,
    /// Bytes of the tables growth replaced (see `released_bytes`).
    released_tables: u64,
    /// All counters but `items`, which is the slab's length.
    stats: StoreStats,
}

#[inline]
fn hash_key(hasher: &ahash::RandomState, group: &[u8], key: &[u8]) -> u64 {
    let mut h = hasher.build_hasher();
    // The group's length goes first so that ("a", "bc") and ("ab", "c")
    // feed different input.
    h.write_usize(group.len());
    h.write(group);
    h.write(key);
    h.finish()
}

/// The absolute expiry (0: never) of entry `id` with expiry field `field`.
fn decode_expiry(field: u32, id: u32, base: u64, far: &hashbrown::HashMap<u32, u64>) -> u64 {
    match field {
        EXP_NEVER => 0,
        EXP_FAR => far.get(&id).copied().unwrap_or(u64::MAX),
        d => base + u64::from(d),
    }
}

impl Store {
    pub fn new(capacity_bytes: u64) -> Self {
        Self::with_slot_limit(capacity_bytes, MAX_ENTRIES)
    }

    /// A store that holds at most `slots` entries whatever their size (the
    /// `u32` id limit; tests lower it to reach that path).
    fn with_slot_limit(capacity_bytes: u64, slots: usize) -> Self {
        Store {
            table: Table::new(),
            slab: Slab::new(slots),
            hasher: ahash::RandomState::new(),
            capacity: capacity_bytes,
            base: 0,
            far: hashbrown::HashMap::new(),
            sweep_cursor: (0, 0),
            doomed: Vec::new(),
            released_tables: 0,
            stats: StoreStats {
                capacity_bytes,
                ..StoreStats::default()
            },
        }
    }

    /// What an entry is charged against the budget: the memory that holds
    /// it (its chunk, or its heap block) and its share of the index (see
    /// `charge.rs`).
    pub fn entry_charge(group_len: usize, key_len: usize, value_len: usize) -> u64 {
        charge::entry_charge(group_len, key_len, value_len)
    }

    /// Entries held, including expired ones not yet reclaimed.
    pub fn len(&self) -> usize {
        self.slab.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slab.len() == 0
    }

    pub fn stats(&self) -> StoreStats {
        StoreStats {
            items: self.slab.len() as u64,
            ..self.stats
        }
    }

    #[inline]
    fn hash(&self, group: &[u8], key: &[u8]) -> u64 {
        hash_key(&self.hasher, group, key)
    }

    fn find(&self, hash: u64, group: &[u8], key: &[u8]) -> Option<u32> {
        let slab = &self.slab;
        self.table
            .find(hash, |id| item::is(slab.entry(id), group, key))
    }

    /// The hash of live entry `id`, from its key (for the removals that
    /// start from the slab: evictions, the sweep).
    fn hash_of(&self, id: u32) -> u64 {
        let e = self.slab.entry(id);
        let l = item::lens(e);
        self.hash(item::group(e, &l), item::key(e, &l))
    }

    /// The expiry field for an absolute expiry (0: never).
    fn encode_expiry(&self, expires_at: u64) -> u32 {
        if expires_at == 0 {
            return EXP_NEVER;
        }
        match expires_at.checked_sub(self.base) {
            Some(d) if d > 0 && d < u64::from(EXP_FAR) => d as u32,
            _ => EXP_FAR,
        }
    }

    fn expires_at(&self, id: u32) -> u64 {
        decode_expiry(item::expiry(self.slab.entry(id)), id, self.base, &self.far)
    }

    fn expired(&self, id: u32, now_ms: u64) -> bool {
        let at = self.expires_at(id);
        at != 0 && at <= now_ms
    }

    /// What live entry `id` is charged.
    fn charge_of(&self, id: u32) -> u64 {
        let e = self.slab.entry(id);
        let l = item::lens(e);
        let far = if item::expiry(e) == EXP_FAR {
            charge::FAR_BYTES
        } else {
            0
        };
        charge::entry_charge(l.group, l.key, l.value) + far
    }

    /// Removes live entry `id`, whose hash is `hash`, and frees its memory.
    fn remove(&mut self, id: u32, hash: u64) {
        self.table.remove(hash, id);
        self.stats.bytes -= self.charge_of(id);
        if item::expiry(self.slab.entry(id)) == EXP_FAR {
            self.far.remove(&id);
        }
        self.slab.release(id);
    }

    /// Removes the least recently used entry; false when there is none.
    fn evict_one(&mut self, now_ms: u64) -> bool {
        let tail = self.slab.tail();
        if tail == NIL {
            return false;
        }
        // An expired entry was dead already: evicting it loses nothing.
        if self.expired(tail, now_ms) {
            self.stats.expirations += 1;
        } else {
            self.stats.evictions += 1;
        }
        let hash = self.hash_of(tail);
        self.remove(tail, hash);
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
        let hash = self.hash(group, key);
        let Some(id) = self.find(hash, group, key) else {
            self.stats.misses += 1;
            return None;
        };
        let field = item::expiry(self.slab.entry(id));
        if field != EXP_NEVER && decode_expiry(field, id, self.base, &self.far) <= now_ms {
            self.remove(id, hash);
            self.stats.expirations += 1;
            self.stats.misses += 1;
            return None;
        }
        self.stats.hits += 1;
        self.slab.touch(id);
        let e = self.slab.entry(id);
        Some(item::value(e, &item::lens(e)))
    }

    /// Stores `value` under `(group, key)` as the most recent entry,
    /// evicting the least recent ones until it fits. `ttl_ms` 0 never
    /// expires. An entry bigger than the whole budget is refused and
    /// changes nothing, not even an existing entry under that key.
    /// `Ok(true)` when no live entry held the key before (the HTTP gateway
    /// answers 201 then, 204 for a replaced value).
    ///
    /// The value is copied once, from `value` into the entry's final place;
    /// no other entry is moved or copied.
    pub fn set(
        &mut self,
        group: &[u8],
        key: &[u8],
        value: &[u8],
        ttl_ms: u64,
        now_ms: u64,
    ) -> Result<bool, SetError> {
        let expires_at = if ttl_ms == 0 {
            0
        } else {
            now_ms.saturating_add(ttl_ms)
        };
        let expiry = self.encode_expiry(expires_at);
        let far = if expiry == EXP_FAR {
            charge::FAR_BYTES
        } else {
            0
        };
        let charge = charge::entry_charge(group.len(), key.len(), value.len()).saturating_add(far);
        let len = item::len(group.len(), key.len(), value.len());
        // A group or key of 4 GiB is refused like an entry over budget.
        let representable = u32::try_from(group.len()).is_ok()
            && u32::try_from(key.len()).is_ok()
            && charge < isize::MAX as u64;
        let (Some(len), true, false) = (len, representable, charge > self.capacity) else {
            return Err(SetError::TooLarge {
                charge,
                capacity: self.capacity,
            });
        };
        let (header, header_len) = item::header(group.len(), key.len(), value.len(), expiry);
        let header = &header[..header_len];
        let hash = self.hash(group, key);
        let mut created = true;
        if let Some(id) = self.find(hash, group, key) {
            created = self.expired(id, now_ms);
            if created {
                self.stats.expirations += 1;
            }
            if self.slab.same_place(id, len) {
                // Out of the list and the byte count while room is made,
                // so the eviction never picks the entry being overwritten.
                self.stats.bytes -= self.charge_of(id);
                if item::expiry(self.slab.entry(id)) == EXP_FAR {
                    self.far.remove(&id);
                }
                self.slab.detach(id);
                self.make_room(charge, now_ms);
                self.slab.rewrite(id, header, [group, key, value]);
                self.slab.attach_front(id);
                self.finish_set(id, expires_at, charge);
                return Ok(created);
            }
            // Another size class: the entry goes and comes back new.
            self.remove(id, hash);
        }
        self.make_room(charge, now_ms);
        while !self.slab.has_room(len) {
            // Every id is taken, or no chunk of this size is free and no
            // page can be added: the coldest entries give theirs.
            if !self.evict_one(now_ms) {
                break;
            }
        }
        let Some(id) = self.slab.insert(header, [group, key, value]) else {
            return Err(SetError::TooLarge {
                charge,
                capacity: self.capacity,
            });
        };
        if self.table.needs_growth() {
            self.rebuild_table(self.table.grown_buckets());
        } else {
            self.table.insert(hash, id);
        }
        self.finish_set(id, expires_at, charge);
        Ok(created)
    }

    fn finish_set(&mut self, id: u32, expires_at: u64, charge: u64) {
        if item::expiry(self.slab.entry(id)) == EXP_FAR {
            self.far.insert(id, expires_at);
        }
        self.stats.bytes += charge;
        self.stats.sets += 1;
    }

    /// A new index of `buckets` buckets holding every entry, their keys
    /// hashed again in the slab's memory order (the table keeps no full
    /// hashes: see `table.rs`).
    fn rebuild_table(&mut self, buckets: usize) {
        let mut table = Table::with_buckets(buckets);
        let hasher = &self.hasher;
        let mut all = (0, 0);
        self.slab.scan(&mut all, self.slab.slot_count(), |id, e| {
            let l = item::lens(e);
            table.insert(hash_key(hasher, item::group(e, &l), item::key(e, &l)), id);
        });
        self.released_tables += self.table.bytes() as u64;
        self.table = table;
    }

    /// Removes `(group, key)`; true when a live entry existed. An expired
    /// entry is removed too but counts as an expiration, and gives false.
    pub fn delete(&mut self, group: &[u8], key: &[u8], now_ms: u64) -> bool {
        let hash = self.hash(group, key);
        let Some(id) = self.find(hash, group, key) else {
            return false;
        };
        let live = !self.expired(id, now_ms);
        self.remove(id, hash);
        if live {
            self.stats.deletes += 1;
        } else {
            self.stats.expirations += 1;
        }
        live
    }

    /// Reclaims expired entries nobody reads: visits at most `max_visits`
    /// slots (chunks and blocks, live or free), resuming where the last
    /// call stopped and wrapping at the end, so repeated calls cover every
    /// slot while each call's work stays bounded. Returns the entries
    /// reclaimed.
    pub fn sweep_expired(&mut self, now_ms: u64, max_visits: usize) -> usize {
        self.sweep(now_ms, max_visits, None)
    }

    /// [`Store::sweep_expired`] that also removes the live entries for
    /// which `keep(group, key)` is false (say, keys this node no longer
    /// owns); those count as neither expirations nor evictions.
    ///
    /// Once in 2^31 ms (~24.8 days) of `now_ms`, the call visits every
    /// entry instead, to move the expiry fields' time base to `now_ms`.
    pub fn sweep_retain(
        &mut self,
        now_ms: u64,
        max_visits: usize,
        mut keep: impl FnMut(&[u8], &[u8]) -> bool,
    ) -> usize {
        self.sweep(now_ms, max_visits, Some(&mut keep))
    }

    /// The sweep; without `keep`, live entries' keys are not even read.
    fn sweep(&mut self, now_ms: u64, max_visits: usize, mut keep: Option<Keep<'_>>) -> usize {
        if now_ms >= self.base.saturating_add(REBASE_AFTER) {
            return self.rebase(now_ms, keep);
        }
        let mut pos = self.sweep_cursor;
        let visits = max_visits.min(self.slab.slot_count());
        // Found first, removed after: the scan reads the slab in place.
        let mut doomed = std::mem::take(&mut self.doomed);
        doomed.clear();
        let (base, far) = (self.base, &self.far);
        self.slab.scan(&mut pos, visits, |id, e| {
            let field = item::expiry(e);
            if field != EXP_NEVER && decode_expiry(field, id, base, far) <= now_ms {
                doomed.push((id, true));
            } else if let Some(keep) = keep.as_mut() {
                let l = item::lens(e);
                if !keep(item::group(e, &l), item::key(e, &l)) {
                    doomed.push((id, false));
                }
            }
        });
        self.sweep_cursor = pos;
        for &(id, expired) in &doomed {
            let hash = self.hash_of(id);
            self.remove(id, hash);
            if expired {
                self.stats.expirations += 1;
            }
        }
        let reclaimed = doomed.len();
        self.doomed = doomed;
        reclaimed
    }

    /// Moves the expiry base to `now_ms`: expired entries (and those
    /// `keep` refuses) are reclaimed, the others' fields rewritten (and far
    /// expiries that now fit leave the `far` map). Returns the entries
    /// reclaimed.
    fn rebase(&mut self, now_ms: u64, mut keep: Option<Keep<'_>>) -> usize {
        let ids: Vec<u32> = self.slab.live_ids().collect();
        let mut reclaimed = 0;
        let old: Vec<u64> = ids.iter().map(|&id| self.expires_at(id)).collect();
        self.base = now_ms;
        for (&id, &at) in ids.iter().zip(&old) {
            let expired = at != 0 && at <= now_ms;
            let e = self.slab.entry(id);
            let l = item::lens(e);
            let refused = keep
                .as_mut()
                .is_some_and(|keep| !keep(item::group(e, &l), item::key(e, &l)));
            if expired || refused {
                let hash = self.hash_of(id);
                self.remove(id, hash);
                if expired {
                    self.stats.expirations += 1;
                }
                reclaimed += 1;
                continue;
            }
            let field = self.encode_expiry(at);
            if item::expiry(self.slab.entry(id)) == EXP_FAR && field != EXP_FAR {
                self.far.remove(&id);
                self.stats.bytes -= charge::FAR_BYTES;
            }
            self.slab.set_expiry(id, field);
        }
        reclaimed
    }

    /// Bytes of memory given back to the allocator so far (pages emptied,
    /// blocks freed, tables outgrown): how much a
    /// `runtime::release_free_memory` call could return to the kernel.
    pub fn released_bytes(&self) -> u64 {
        self.slab.released() + self.released_tables
    }

    /// Slots, live or free: what one full sweep visits.
    pub fn slots(&self) -> usize {
        self.slab.slot_count()
    }

    /// Removes every entry (counters stay).
    pub fn clear(&mut self) {
        while self.slab.tail() != NIL {
            let tail = self.slab.tail();
            let hash = self.hash_of(tail);
            self.remove(tail, hash);
        }
    }

    /// Whether `(group, key)` is held, expired or not, without counting or
    /// touching anything.
    #[cfg(test)]
    fn holds(&self, group: &[u8], key: &[u8]) -> bool {
        self.find(self.hash(group, key), group, key).is_some()
    }

    /// (group, key) from most to least recent, after checking the list, the
    /// table, the far map and the byte count against each other.
    #[cfg(test)]
    fn lru_order(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let order = self.slab.lru_order();
        assert_eq!(order.len(), self.table.len(), "table and list disagree");
        let mut bytes = 0;
        let mut far = 0;
        let mut out = Vec::with_capacity(order.len());
        for &id in &order {
            let e = self.slab.entry(id);
            let l = item::lens(e);
            let (g, k) = (item::group(e, &l), item::key(e, &l));
            assert_eq!(self.find(self.hash(g, k), g, k), Some(id));
            if item::expiry(e) == EXP_FAR {
                assert!(self.far.contains_key(&id), "far expiry not kept");
                far += 1;
            }
            bytes += self.charge_of(id);
            out.push((g.to_vec(), k.to_vec()));
        }
        assert_eq!(far, self.far.len(), "far map holds strays");
        assert_eq!(bytes, self.stats.bytes, "bytes is not the sum of charges");
        out
    }
}

#[cfg(test)]
mod tests;
