//! The slab: every entry's slot in one `Vec`, addressed by `u32` index, with
//! the LRU list and the free list threaded through the slots' links.
//!
//! Index links instead of pointers keep the list safe without `Rc`,
//! `RefCell` or `unsafe`, at half a pointer's size, and make recency updates
//! allocation-free. A slot freed by a delete, eviction or expiry goes on the
//! free list and the next insert reuses it, so the slab grows only to the
//! high-water mark of live entries and never shrinks.

/// The "no slot" link.
pub const NIL: u32 = u32::MAX;
/// Indices run below `NIL`.
pub const MAX_SLOTS: usize = NIL as usize;

/// One entry, or a free slot.
pub struct Slot {
    /// Group, key and value bytes back to back: one heap block per entry,
    /// read by lookups and returned by gets. `None` while the slot is free.
    data: Option<Box<[u8]>>,
    /// On the caller's clock; 0 = never.
    expires_at: u64,
    group_len: u32,
    key_len: u32,
    /// Towards the most recent entry; unused while free.
    prev: u32,
    /// Towards the least recent entry; while free, the next free slot.
    next: u32,
}

impl Slot {
    pub fn is_live(&self) -> bool {
        self.data.is_some()
    }

    fn bytes(&self) -> &[u8] {
        self.data.as_deref().unwrap_or_default()
    }

    fn key_end(&self) -> usize {
        self.group_len as usize + self.key_len as usize
    }

    pub fn group(&self) -> &[u8] {
        self.bytes()
            .get(..self.group_len as usize)
            .unwrap_or_default()
    }

    pub fn key(&self) -> &[u8] {
        self.bytes()
            .get(self.group_len as usize..self.key_end())
            .unwrap_or_default()
    }

    pub fn value(&self) -> &[u8] {
        self.bytes().get(self.key_end()..).unwrap_or_default()
    }

    /// Whether this live slot holds `(group, key)`. The lengths are compared
    /// first, from the slot itself, so most mismatches never touch the heap.
    pub fn is(&self, group: &[u8], key: &[u8]) -> bool {
        if self.group_len as usize != group.len() || self.key_len as usize != key.len() {
            return false;
        }
        let bytes = self.bytes();
        // Most entries have no group: skip that call to memcmp.
        (group.is_empty() || bytes.get(..group.len()) == Some(group))
            && bytes.get(group.len()..group.len() + key.len()) == Some(key)
    }

    pub fn lens(&self) -> (usize, usize, usize) {
        let value_len = self.bytes().len().saturating_sub(self.key_end());
        (self.group_len as usize, self.key_len as usize, value_len)
    }

    pub fn expired(&self, now_ms: u64) -> bool {
        self.expires_at != 0 && self.expires_at <= now_ms
    }

    pub fn set_expiry(&mut self, expires_at: u64) {
        self.expires_at = expires_at;
    }

    /// Replaces the value after the key. The same length is copied in
    /// place; another length goes through `realloc`, which glibc does in
    /// place when the block shrinks or its neighbour is free, and which
    /// keeps the key bytes without building them again.
    pub fn replace_value(&mut self, value: &[u8]) {
        let key_end = self.key_end();
        let Some(data) = self.data.as_mut() else {
            return;
        };
        if let Some(old) = data.get_mut(key_end..) {
            if old.len() == value.len() {
                old.copy_from_slice(value);
                return;
            }
        }
        let mut buf = Vec::from(std::mem::take(data));
        buf.truncate(key_end);
        buf.reserve_exact(value.len());
        buf.extend_from_slice(value);
        *data = buf.into_boxed_slice();
    }
}

pub struct Slab {
    slots: Vec<Slot>,
    /// Head of the free list.
    free: u32,
    /// Most recently used.
    head: u32,
    /// Least recently used: the next to evict.
    tail: u32,
    /// At most this many slots (`MAX_SLOTS` but in tests).
    limit: usize,
}

impl Slab {
    pub fn new(limit: usize) -> Self {
        Slab {
            slots: Vec::new(),
            free: NIL,
            head: NIL,
            tail: NIL,
            limit: limit.clamp(1, MAX_SLOTS),
        }
    }

    /// Slots ever used, live or free.
    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }

    pub fn slot(&self, i: u32) -> &Slot {
        &self.slots[i as usize]
    }

    pub fn slot_mut(&mut self, i: u32) -> &mut Slot {
        &mut self.slots[i as usize]
    }

    pub fn tail(&self) -> u32 {
        self.tail
    }

    /// Whether `insert` can take a slot without an eviction first.
    pub fn has_room(&self) -> bool {
        self.free != NIL || self.slots.len() < self.limit
    }

    /// Stores a new entry as the most recent one. The caller makes sure of
    /// `has_room` and that the lengths fit in `u32`.
    pub fn insert(&mut self, group: &[u8], key: &[u8], value: &[u8], expires_at: u64) -> u32 {
        let mut buf = Vec::with_capacity(group.len() + key.len() + value.len());
        buf.extend_from_slice(group);
        buf.extend_from_slice(key);
        buf.extend_from_slice(value);
        let slot = Slot {
            data: Some(buf.into_boxed_slice()),
            expires_at,
            group_len: group.len() as u32,
            key_len: key.len() as u32,
            prev: NIL,
            next: NIL,
        };
        let i = if self.free != NIL {
            let i = self.free;
            self.free = self.slots[i as usize].next;
            self.slots[i as usize] = slot;
            i
        } else {
            self.slots.push(slot);
            (self.slots.len() - 1) as u32
        };
        self.attach_front(i);
        i
    }

    /// Frees entry `i`'s memory now and keeps its slot for reuse.
    pub fn release(&mut self, i: u32) {
        self.detach(i);
        let free = self.free;
        let slot = &mut self.slots[i as usize];
        slot.data = None;
        slot.next = free;
        self.free = i;
    }

    /// Makes `i` the most recently used.
    pub fn touch(&mut self, i: u32) {
        if self.head != i {
            self.detach(i);
            self.attach_front(i);
        }
    }

    /// Takes `i` out of the LRU list (its slot stays live).
    pub fn detach(&mut self, i: u32) {
        let Slot { prev, next, .. } = self.slots[i as usize];
        if prev == NIL {
            self.head = next;
        } else {
            self.slots[prev as usize].next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.slots[next as usize].prev = prev;
        }
    }

    /// Puts a detached `i` at the most recent end.
    pub fn attach_front(&mut self, i: u32) {
        let head = self.head;
        let slot = &mut self.slots[i as usize];
        slot.prev = NIL;
        slot.next = head;
        if head == NIL {
            self.tail = i;
        } else {
            self.slots[head as usize].prev = i;
        }
        self.head = i;
    }

    /// The LRU list from most to least recent, checking both directions'
    /// links and that free slots and live slots add up.
    #[cfg(test)]
    pub fn lru_order(&self) -> Vec<u32> {
        let mut order = Vec::new();
        let mut i = self.head;
        let mut prev = NIL;
        while i != NIL {
            let s = self.slot(i);
            assert!(s.is_live(), "a free slot in the LRU list");
            assert_eq!(s.prev, prev, "broken back link");
            order.push(i);
            assert!(order.len() <= self.slots.len(), "LRU cycle");
            prev = i;
            i = s.next;
        }
        assert_eq!(self.tail, prev, "tail is not the last entry");
        let mut free = 0;
        let mut f = self.free;
        while f != NIL {
            assert!(!self.slot(f).is_live(), "a live slot in the free list");
            free += 1;
            assert!(free <= self.slots.len(), "free-list cycle");
            f = self.slot(f).next;
        }
        assert_eq!(order.len() + free, self.slots.len(), "lost slots");
        order
    }
}
