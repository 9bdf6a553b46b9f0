//! Where entries live, and the LRU list threaded through them.
//!
//! An entry up to `SMALL_MAX` bytes (see `item.rs` for its layout) takes a
//! chunk of a 64 KiB page; every page serves one size class, chunks of a
//! multiple of 8 bytes (memcached's slab classes, at a finer grain: an
//! entry wastes 3.5 bytes on average to the rounding). A larger entry is one
//! heap block of exactly its size. Either way the entry is written once, in
//! the place it keeps until it is removed: nothing here moves or copies
//! entries, whatever their size, and the links are `u32` ids, half a
//! pointer.
//!
//! A chunk holds its entry's LRU links in its first bytes; a block's links
//! live in the block list instead (see `Slab::prev`).
//!
//! An id is `page << 12 | chunk` for a chunk (19 bits of page, 32 GiB of
//! chunks) and `1 << 31 | index` for a block. A freed chunk goes on its
//! page's free list; a page whose last entry goes is given back to the
//! allocator at once, so when the mix of sizes shifts, the pages of the old
//! sizes empty as their entries reach the cold end and their memory serves
//! the new sizes.

use super::item::{self, FREE, NIL};

/// Bytes of one page.
pub const PAGE_BYTES: usize = 64 * 1024;
/// Chunk sizes are multiples of this.
pub const GRAIN: usize = 8;
/// Entries above this get a heap block of their own.
pub const SMALL_MAX: usize = 1024;
const CHUNK_BITS: u32 = 12;
const _: () = assert!(PAGE_BYTES / 16 <= 1 << CHUNK_BITS);
const _: () = assert!(item::MIN_LEN >= 15);
const LARGE: u32 = 1 << 31;
/// Page numbers fit in the 19 bits below `LARGE`.
const MAX_PAGES: usize = 1 << (31 - CHUNK_BITS);
/// Block indices stay clear of `FREE` and `NIL`.
const MAX_LARGE: usize = (FREE & !LARGE) as usize;
/// Entries at most, whatever their size (ids are `u32`).
pub const MAX_ENTRIES: usize = MAX_LARGE;

/// The chunk an entry of `len` bytes takes, or `None` for a heap block.
pub fn chunk_size(len: usize) -> Option<usize> {
    (len <= SMALL_MAX).then(|| len.div_ceil(GRAIN).max(2) * GRAIN)
}

/// A large entry's place: its block, and its LRU links.
struct Block {
    /// `None` while the slot is free.
    data: Option<Box<[u8]>>,
    prev: u32,
    next: u32,
}

struct Page {
    /// The chunks handed out so far, back to back; capacity `PAGE_BYTES`,
    /// so appending a chunk never reallocates. Empty (no allocation) while
    /// the page number is unused.
    data: Vec<u8>,
    /// Chunk size; 0 while unused.
    chunk: u32,
    /// Chunks handed out (`data.len() / chunk`, kept to spare a division).
    chunks: u32,
    live: u32,
    /// Head of the free chunks (by index), threaded through their `next`.
    free: u32,
    /// Where this page is in its class's `partial` list, or `NIL`.
    partial_at: u32,
}

const UNUSED: Page = Page {
    data: Vec::new(),
    chunk: 0,
    chunks: 0,
    live: 0,
    free: NIL,
    partial_at: NIL,
};

impl Page {
    fn has_room(&self) -> bool {
        self.free != NIL || self.data.len() + self.chunk as usize <= PAGE_BYTES
    }

    #[inline]
    fn at(&self, i: u32) -> std::ops::Range<usize> {
        let start = i as usize * self.chunk as usize;
        start..start + self.chunk as usize
    }
}

pub struct Slab {
    /// By page number; `UNUSED` while the number is not in use.
    pages: Vec<Page>,
    spare_pages: Vec<u32>,
    /// Per class (chunk size / GRAIN): the pages with a free chunk.
    partial: Vec<Vec<u32>>,
    /// Entries above `SMALL_MAX`, one heap block each.
    large: Vec<Block>,
    spare_large: Vec<u32>,
    /// Most recently used.
    head: u32,
    /// Least recently used: the next to evict.
    tail: u32,
    live: usize,
    /// Chunks ever handed out in live pages, plus block slots.
    slots: usize,
    /// At most this many entries (`MAX_ENTRIES` but in tests).
    limit: usize,
    /// Bytes of pages and blocks given back to the allocator, ever.
    released: u64,
}

fn split(id: u32) -> (usize, u32) {
    ((id >> CHUNK_BITS) as usize, id & ((1 << CHUNK_BITS) - 1))
}

impl Slab {
    pub fn new(limit: usize) -> Self {
        Slab {
            pages: Vec::new(),
            spare_pages: Vec::new(),
            partial: (0..=SMALL_MAX / GRAIN).map(|_| Vec::new()).collect(),
            large: Vec::new(),
            spare_large: Vec::new(),
            head: NIL,
            tail: NIL,
            live: 0,
            slots: 0,
            limit: limit.clamp(1, MAX_ENTRIES),
            released: 0,
        }
    }

    /// Chunk and block slots in use or free: what one full sweep visits.
    pub fn slot_count(&self) -> usize {
        self.slots
    }

    pub fn len(&self) -> usize {
        self.live
    }

    pub fn released(&self) -> u64 {
        self.released
    }

    #[inline]
    pub fn tail(&self) -> u32 {
        self.tail
    }

    /// Bytes held in pages and blocks (not counting allocator headers).
    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        let pages = self.pages.iter().filter(|p| p.chunk != 0).count() * PAGE_BYTES;
        let blocks: usize = self
            .large
            .iter()
            .filter_map(|b| b.data.as_ref())
            .map(|b| b.len())
            .sum();
        pages + blocks
    }

    #[inline]
    pub fn entry(&self, id: u32) -> &[u8] {
        if id & LARGE != 0 {
            return self.large[(id & !LARGE) as usize]
                .data
                .as_deref()
                .unwrap_or_default();
        }
        let (p, i) = split(id);
        let page = &self.pages[p];
        &page.data[page.at(i)]
    }

    #[inline]
    fn entry_mut(&mut self, id: u32) -> &mut [u8] {
        if id & LARGE != 0 {
            return self.large[(id & !LARGE) as usize]
                .data
                .as_deref_mut()
                .unwrap_or_default();
        }
        let (p, i) = split(id);
        let page = &mut self.pages[p];
        let at = page.at(i);
        &mut page.data[at]
    }

    /// Whether an entry of `len` bytes can be stored without removing one.
    pub fn has_room(&self, len: usize) -> bool {
        if self.live >= self.limit {
            return false;
        }
        match chunk_size(len) {
            Some(c) => {
                !self.partial[c / GRAIN].is_empty()
                    || !self.spare_pages.is_empty()
                    || self.pages.len() < MAX_PAGES
            }
            None => !self.spare_large.is_empty() || self.large.len() < MAX_LARGE,
        }
    }

    /// Whether an entry of `len` bytes fits where `id` is now, with no
    /// more memory than an entry of that size gets anyway.
    pub fn same_place(&self, id: u32, len: usize) -> bool {
        match chunk_size(len) {
            Some(c) => id & LARGE == 0 && self.entry(id).len() == c,
            None => id & LARGE != 0 && self.entry(id).len() == len,
        }
    }

    /// Stores a new entry, written once in its final place, as the most
    /// recent one. The caller checks `has_room` first.
    pub fn insert(&mut self, header: &[u8], parts: [&[u8]; 3]) -> Option<u32> {
        let len = header.len() + parts.iter().map(|p| p.len()).sum::<usize>();
        if !self.has_room(len) {
            return None;
        }
        let id = match chunk_size(len) {
            Some(c) => self.insert_chunk(c, header, parts),
            None => self.insert_block(len, header, parts),
        };
        self.live += 1;
        self.attach_front(id);
        Some(id)
    }

    fn insert_chunk(&mut self, chunk: usize, header: &[u8], parts: [&[u8]; 3]) -> u32 {
        let class = chunk / GRAIN;
        let p = match self.partial[class].last() {
            Some(&p) => p as usize,
            None => self.new_page(chunk),
        };
        let page = &mut self.pages[p];
        let i = if page.free != NIL {
            let i = page.free;
            let at = page.at(i);
            page.free = item::next(&page.data[at.clone()]);
            let mut dst = &mut page.data[at];
            for src in std::iter::once(header).chain(parts) {
                let (head, rest) = dst.split_at_mut(src.len());
                head.copy_from_slice(src);
                dst = rest;
            }
            i
        } else {
            let i = page.chunks;
            page.chunks += 1;
            let start = page.data.len();
            page.data.extend_from_slice(header);
            for src in parts {
                page.data.extend_from_slice(src);
            }
            page.data.resize(start + chunk, 0);
            self.slots += 1;
            i
        };
        page.live += 1;
        if !page.has_room() {
            self.partial[class].pop();
            page.partial_at = NIL;
        }
        (p as u32) << CHUNK_BITS | i
    }

    /// A page for chunks of `chunk` bytes, on its class's partial list.
    fn new_page(&mut self, chunk: usize) -> usize {
        let class = &mut self.partial[chunk / GRAIN];
        let page = Page {
            data: Vec::with_capacity(PAGE_BYTES),
            chunk: chunk as u32,
            chunks: 0,
            live: 0,
            free: NIL,
            partial_at: class.len() as u32,
        };
        let p = match self.spare_pages.pop() {
            Some(p) => p as usize,
            None => {
                self.pages.push(UNUSED);
                self.pages.len() - 1
            }
        };
        self.pages[p] = page;
        class.push(p as u32);
        p
    }

    fn insert_block(&mut self, len: usize, header: &[u8], parts: [&[u8]; 3]) -> u32 {
        let mut b = Vec::with_capacity(len);
        b.extend_from_slice(header);
        for src in parts {
            b.extend_from_slice(src);
        }
        let block = Block {
            data: Some(b.into_boxed_slice()),
            prev: NIL,
            next: NIL,
        };
        let i = match self.spare_large.pop() {
            Some(i) => {
                self.large[i as usize] = block;
                i
            }
            None => {
                self.large.push(block);
                self.slots += 1;
                (self.large.len() - 1) as u32
            }
        };
        LARGE | i
    }

    /// Writes a new header and parts over entry `id` (which `same_place`
    /// allowed), keeping its links.
    pub fn rewrite(&mut self, id: u32, header: &[u8], parts: [&[u8]; 3]) {
        let (prev, next) = (self.prev(id), self.next(id));
        let mut dst = self.entry_mut(id);
        for src in std::iter::once(header).chain(parts) {
            let (head, rest) = dst.split_at_mut(src.len());
            head.copy_from_slice(src);
            dst = rest;
        }
        self.set_prev(id, prev);
        self.set_next(id, next);
    }

    /// Frees entry `id`'s memory (its chunk, or its block now).
    pub fn release(&mut self, id: u32) {
        self.detach(id);
        self.live -= 1;
        if id & LARGE != 0 {
            let i = id & !LARGE;
            if let Some(b) = self.large[i as usize].data.take() {
                self.released += b.len() as u64;
            }
            self.spare_large.push(i);
            return;
        }
        let (p, i) = split(id);
        let page = &mut self.pages[p];
        let class = page.chunk as usize / GRAIN;
        let at = page.at(i);
        let e = &mut page.data[at];
        item::set_prev(e, FREE);
        item::set_next(e, page.free);
        page.free = i;
        page.live -= 1;
        if page.live == 0 {
            // Empty: its memory goes back for any size to use.
            let at = page.partial_at;
            self.slots -= page.chunks as usize;
            self.pages[p] = UNUSED;
            self.released += PAGE_BYTES as u64;
            self.spare_pages.push(p as u32);
            if at != NIL {
                let list = &mut self.partial[class];
                list.swap_remove(at as usize);
                if let Some(&moved) = list.get(at as usize) {
                    self.pages[moved as usize].partial_at = at;
                }
            }
        } else if page.partial_at == NIL {
            let list = &mut self.partial[class];
            page.partial_at = list.len() as u32;
            list.push(p as u32);
        }
    }

    /// Whether `id` names a live entry.
    fn is_live(&self, id: u32) -> bool {
        let e = self.entry(id);
        !e.is_empty() && item::prev(e) != FREE
    }

    /// Visits up to `max` slots from the sweep position `pos`, wrapping at
    /// most once, and calls `f` with each live entry met. The slots are the
    /// chunks handed out, page by page (`pos` = (page, chunk)), then the
    /// blocks (`pos` = (page count + block, 0)).
    pub fn scan(&self, pos: &mut (usize, u32), max: usize, mut f: impl FnMut(u32, &[u8])) {
        let mut left = max;
        let mut wrapped = false;
        while left > 0 {
            let (unit, i) = *pos;
            if let Some(page) = self.pages.get(unit) {
                if i >= page.chunks {
                    *pos = (unit + 1, 0);
                    continue;
                }
                let end = page.chunks.min(i.saturating_add(left as u32));
                let c = page.chunk as usize;
                for k in i..end {
                    let e = &page.data[k as usize * c..(k as usize + 1) * c];
                    if item::prev(e) != FREE {
                        f((unit as u32) << CHUNK_BITS | k, e);
                    }
                }
                left -= (end - i) as usize;
                *pos = (unit, end);
            } else if let Some(block) = self.large.get(unit - self.pages.len()) {
                if let Some(e) = &block.data {
                    f(LARGE | (unit - self.pages.len()) as u32, e);
                }
                left -= 1;
                *pos = (unit + 1, 0);
            } else {
                if wrapped {
                    return;
                }
                wrapped = true;
                *pos = (0, 0);
            }
        }
    }

    pub fn set_expiry(&mut self, id: u32, expiry: u32) {
        item::set_expiry(self.entry_mut(id), expiry);
    }

    /// Every live id, pages in memory order first.
    pub fn live_ids(&self) -> impl Iterator<Item = u32> + '_ {
        let chunks = self
            .pages
            .iter()
            .enumerate()
            .flat_map(|(p, page)| (0..page.chunks).map(move |i| (p as u32) << CHUNK_BITS | i));
        let blocks = (0..self.large.len() as u32).map(|i| LARGE | i);
        chunks.chain(blocks).filter(|&id| self.is_live(id))
    }

    /// Makes `id` the most recently used.
    #[inline]
    pub fn touch(&mut self, id: u32) {
        let head = self.head;
        if head == id {
            return;
        }
        // `detach` then `attach_front`, with one lookup per entry touched.
        let (prev, next) = (self.prev(id), self.next(id));
        self.set_prev(id, NIL);
        self.set_next(id, head);
        // Not the head, so `prev` is an entry.
        self.set_next(prev, next);
        if next == NIL {
            self.tail = prev;
        } else {
            self.set_prev(next, prev);
        }
        self.set_prev(head, id);
        self.head = id;
    }

    /// Takes `id` out of the LRU list (its memory stays).
    #[inline]
    pub fn detach(&mut self, id: u32) {
        let (prev, next) = (self.prev(id), self.next(id));
        if prev == NIL {
            self.head = next;
        } else {
            self.set_next(prev, next);
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.set_prev(next, prev);
        }
    }

    /// Puts a detached `id` at the most recent end.
    #[inline]
    pub fn attach_front(&mut self, id: u32) {
        let head = self.head;
        self.set_prev(id, NIL);
        self.set_next(id, head);
        if head == NIL {
            self.tail = id;
        } else {
            self.set_prev(head, id);
        }
        self.head = id;
    }

    // The links: in a chunk's own first bytes (one cache line with its key),
    // in the block list for a large entry (so that the LRU list of large
    // entries is walked without touching their blocks, each likely a TLB
    // miss).
    #[inline]
    fn prev(&self, id: u32) -> u32 {
        if id & LARGE != 0 {
            return self.large[(id & !LARGE) as usize].prev;
        }
        item::prev(self.entry(id))
    }

    #[inline]
    fn next(&self, id: u32) -> u32 {
        if id & LARGE != 0 {
            return self.large[(id & !LARGE) as usize].next;
        }
        item::next(self.entry(id))
    }

    #[inline]
    fn set_prev(&mut self, id: u32, v: u32) {
        if id & LARGE != 0 {
            self.large[(id & !LARGE) as usize].prev = v;
        } else {
            item::set_prev(self.entry_mut(id), v);
        }
    }

    #[inline]
    fn set_next(&mut self, id: u32, v: u32) {
        if id & LARGE != 0 {
            self.large[(id & !LARGE) as usize].next = v;
        } else {
            item::set_next(self.entry_mut(id), v);
        }
    }

    /// The LRU list from most to least recent, after checking both
    /// directions' links, the pages' counts and free lists, and the
    /// partial lists.
    #[cfg(test)]
    pub fn lru_order(&self) -> Vec<u32> {
        let mut order = Vec::new();
        let mut id = self.head;
        let mut prev = NIL;
        while id != NIL {
            assert!(self.is_live(id), "a free entry in the LRU list");
            assert_eq!(self.prev(id), prev, "broken back link");
            order.push(id);
            assert!(order.len() <= self.live, "LRU cycle");
            prev = id;
            id = self.next(id);
        }
        assert_eq!(self.tail, prev, "tail is not the last entry");
        assert_eq!(order.len(), self.live, "live count");
        let mut slots = 0;
        for (p, page) in self.pages.iter().enumerate() {
            if page.chunk == 0 {
                assert_eq!((page.chunks, page.data.capacity()), (0, 0));
                continue;
            }
            assert_eq!(page.chunks as usize * page.chunk as usize, page.data.len());
            slots += page.chunks as usize;
            let live = (0..page.chunks)
                .filter(|&i| self.is_live((p as u32) << CHUNK_BITS | i))
                .count();
            assert_eq!(live, page.live as usize, "page {p} live count");
            assert!(live > 0, "an empty page is kept");
            let mut free = 0;
            let mut f = page.free;
            while f != NIL {
                assert_eq!(item::prev(&page.data[page.at(f)]), FREE);
                free += 1;
                assert!(free <= page.chunks, "free-list cycle");
                f = item::next(&page.data[page.at(f)]);
            }
            assert_eq!(free + page.live, page.chunks, "lost chunks");
            let class = &self.partial[page.chunk as usize / GRAIN];
            if page.has_room() {
                assert_eq!(class[page.partial_at as usize], p as u32);
            } else {
                assert_eq!(page.partial_at, NIL);
            }
        }
        assert_eq!(slots + self.large.len(), self.slots, "slot count");
        order
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(s: &mut Slab, value_len: usize) -> u32 {
        let v = vec![1u8; value_len];
        let (h, n) = item::header(0, 4, value_len, 0);
        s.insert(&h[..n], [b"", b"abcd", &v]).unwrap()
    }

    #[test]
    fn chunk_classes() {
        assert_eq!(chunk_size(15), Some(16));
        assert_eq!(chunk_size(95), Some(96));
        assert_eq!(chunk_size(96), Some(96));
        assert_eq!(chunk_size(97), Some(104));
        assert_eq!(chunk_size(SMALL_MAX), Some(SMALL_MAX));
        assert_eq!(chunk_size(SMALL_MAX + 1), None);
        assert_eq!(
            std::mem::size_of::<Block>() as u64,
            super::super::charge::BLOCK_SLOT_BYTES
        );
    }

    #[test]
    fn pages_fill_empty_and_are_given_back() {
        let mut s = Slab::new(MAX_ENTRIES);
        let per_page = PAGE_BYTES / 96;
        let ids: Vec<u32> = (0..per_page * 3).map(|_| put(&mut s, 76)).collect();
        assert_eq!(s.pages.len(), 3);
        assert_eq!(s.partial[12], Vec::<u32>::new(), "every page full");
        assert_eq!(s.lru_order().len(), 3 * per_page);
        // Freeing one chunk of the first page makes it partial; the next
        // insert reuses exactly that chunk.
        s.release(ids[5]);
        assert_eq!(s.partial[12], [0]);
        assert_eq!(put(&mut s, 70), ids[5]);
        // Emptying the middle page gives it back; its number is reused.
        for &id in &ids[per_page..2 * per_page] {
            s.release(id);
        }
        assert_eq!(s.pages[1].chunk, 0);
        assert_eq!(s.slot_count(), 2 * per_page);
        s.lru_order();
        let big = put(&mut s, 2000);
        assert_eq!(big, LARGE);
        assert_eq!(s.entry(big).len(), 2000 + 4 + 12 + 4);
        let small = put(&mut s, 1);
        assert_eq!(small >> CHUNK_BITS, 1, "the spare page number");
        assert_eq!(s.lru_order()[..2], [small, big]);
        s.release(big);
        assert_eq!(put(&mut s, 5000), big, "the block slot is reused");
        assert!(s.same_place(big, 5000 + 4 + 12 + 4));
        assert!(!s.same_place(big, 5001 + 4 + 12 + 4));
        assert!(s.same_place(small, 24));
        assert!(!s.same_place(small, 25));
        let live: Vec<u32> = s.live_ids().collect();
        assert_eq!(live.len(), s.len());
        s.lru_order();
    }

    #[test]
    fn the_entry_limit_holds() {
        let mut s = Slab::new(2);
        put(&mut s, 1);
        put(&mut s, 1);
        assert!(!s.has_room(20));
        let (h, n) = item::header(0, 4, 1, 0);
        assert_eq!(s.insert(&h[..n], [b"", b"abcd", b"v"]), None);
    }
}
