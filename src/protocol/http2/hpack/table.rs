//! The static table (RFC 7541 Appendix A) and the dynamic table (§2.3.2,
//! §4), shared by the decoder (the peer's table) and the encoder (our
//! mirror of what the peer's decoder holds).
//!
//! The dynamic table keeps every entry's bytes in one growing buffer and a
//! `VecDeque` of offsets into it: inserting costs no allocation once the
//! buffer has reached its working size, evicting is popping an offset, and
//! each entry's name and value stay contiguous slices.

use std::collections::VecDeque;

/// RFC 7541 §4.1: each entry costs its name and value plus 32 octets.
pub(crate) const ENTRY_OVERHEAD: usize = 32;

/// Number of static entries; dynamic indices start right after.
pub(crate) const STATIC_LEN: usize = 61;

/// Appendix A, index 1 first (so `STATIC_TABLE[i - 1]` is index `i`).
pub(crate) static STATIC_TABLE: [(&[u8], &[u8]); STATIC_LEN] = [
    (b":authority", b""),
    (b":method", b"GET"),
    (b":method", b"POST"),
    (b":path", b"/"),
    (b":path", b"/index.html"),
    (b":scheme", b"http"),
    (b":scheme", b"https"),
    (b":status", b"200"),
    (b":status", b"204"),
    (b":status", b"206"),
    (b":status", b"304"),
    (b":status", b"400"),
    (b":status", b"404"),
    (b":status", b"500"),
    (b"accept-charset", b""),
    (b"accept-encoding", b"gzip, deflate"),
    (b"accept-language", b""),
    (b"accept-ranges", b""),
    (b"accept", b""),
    (b"access-control-allow-origin", b""),
    (b"age", b""),
    (b"allow", b""),
    (b"authorization", b""),
    (b"cache-control", b""),
    (b"content-disposition", b""),
    (b"content-encoding", b""),
    (b"content-language", b""),
    (b"content-length", b""),
    (b"content-location", b""),
    (b"content-range", b""),
    (b"content-type", b""),
    (b"cookie", b""),
    (b"date", b""),
    (b"etag", b""),
    (b"expect", b""),
    (b"expires", b""),
    (b"from", b""),
    (b"host", b""),
    (b"if-match", b""),
    (b"if-modified-since", b""),
    (b"if-none-match", b""),
    (b"if-range", b""),
    (b"if-unmodified-since", b""),
    (b"last-modified", b""),
    (b"link", b""),
    (b"location", b""),
    (b"max-forwards", b""),
    (b"proxy-authenticate", b""),
    (b"proxy-authorization", b""),
    (b"range", b""),
    (b"referer", b""),
    (b"refresh", b""),
    (b"retry-after", b""),
    (b"server", b""),
    (b"set-cookie", b""),
    (b"strict-transport-security", b""),
    (b"transfer-encoding", b""),
    (b"user-agent", b""),
    (b"vary", b""),
    (b"via", b""),
    (b"www-authenticate", b""),
];

/// The static entry at 1-based `index`, if it is a static index.
#[inline]
pub(crate) fn static_entry(index: usize) -> Option<(&'static [u8], &'static [u8])> {
    STATIC_TABLE.get(index.wrapping_sub(1)).copied()
}

/// Static-table lookup for the encoder: `Some((index, value_matches))` for
/// the best entry with this name. A `match` on the name compiles to a
/// length switch plus a compare or two, cheaper than hashing, and runs on
/// every field of every response.
pub(crate) fn static_find(name: &[u8], value: &[u8]) -> Option<(usize, bool)> {
    let empty = value.is_empty();
    let found = match name {
        b":authority" => (1, empty),
        b":method" => match value {
            b"GET" => (2, true),
            b"POST" => (3, true),
            _ => (2, false),
        },
        b":path" => match value {
            b"/" => (4, true),
            b"/index.html" => (5, true),
            _ => (4, false),
        },
        b":scheme" => match value {
            b"http" => (6, true),
            b"https" => (7, true),
            _ => (6, false),
        },
        b":status" => match value {
            b"200" => (8, true),
            b"204" => (9, true),
            b"206" => (10, true),
            b"304" => (11, true),
            b"400" => (12, true),
            b"404" => (13, true),
            b"500" => (14, true),
            _ => (8, false),
        },
        b"accept-charset" => (15, empty),
        b"accept-encoding" => (16, value == b"gzip, deflate"),
        b"accept-language" => (17, empty),
        b"accept-ranges" => (18, empty),
        b"accept" => (19, empty),
        b"access-control-allow-origin" => (20, empty),
        b"age" => (21, empty),
        b"allow" => (22, empty),
        b"authorization" => (23, empty),
        b"cache-control" => (24, empty),
        b"content-disposition" => (25, empty),
        b"content-encoding" => (26, empty),
        b"content-language" => (27, empty),
        b"content-length" => (28, empty),
        b"content-location" => (29, empty),
        b"content-range" => (30, empty),
        b"content-type" => (31, empty),
        b"cookie" => (32, empty),
        b"date" => (33, empty),
        b"etag" => (34, empty),
        b"expect" => (35, empty),
        b"expires" => (36, empty),
        b"from" => (37, empty),
        b"host" => (38, empty),
        b"if-match" => (39, empty),
        b"if-modified-since" => (40, empty),
        b"if-none-match" => (41, empty),
        b"if-range" => (42, empty),
        b"if-unmodified-since" => (43, empty),
        b"last-modified" => (44, empty),
        b"link" => (45, empty),
        b"location" => (46, empty),
        b"max-forwards" => (47, empty),
        b"proxy-authenticate" => (48, empty),
        b"proxy-authorization" => (49, empty),
        b"range" => (50, empty),
        b"referer" => (51, empty),
        b"refresh" => (52, empty),
        b"retry-after" => (53, empty),
        b"server" => (54, empty),
        b"set-cookie" => (55, empty),
        b"strict-transport-security" => (56, empty),
        b"transfer-encoding" => (57, empty),
        b"user-agent" => (58, empty),
        b"vary" => (59, empty),
        b"via" => (60, empty),
        b"www-authenticate" => (61, empty),
        _ => return None,
    };
    Some(found)
}

/// Offsets of one entry's bytes in [`DynamicTable::bytes`]: the name is
/// `start..mid`, the value `mid..end`.
#[derive(Debug, Clone, Copy)]
struct Entry {
    start: usize,
    mid: usize,
    end: usize,
}

impl Entry {
    fn size(&self) -> usize {
        self.end - self.start + ENTRY_OVERHEAD
    }
}

/// First allocation of a table's byte buffer and entry ring: enough for
/// the fields of a first gRPC request or response.
const INITIAL_BYTES: usize = 512;
const INITIAL_ENTRIES: usize = 16;

/// The dynamic table: newest entry is index 0 (HPACK index 62).
#[derive(Debug, Clone)]
pub(crate) struct DynamicTable {
    /// Entry bytes in insertion order. `bytes[..dead]` belonged to evicted
    /// entries; they are reclaimed in one move when the buffer would grow
    /// past twice the table size, so the move is amortised over at least
    /// `max_size` inserted bytes and the buffer stays under `2 * max_size`.
    bytes: Vec<u8>,
    dead: usize,
    /// Oldest at the front, newest at the back.
    entries: VecDeque<Entry>,
    size: usize,
    max_size: usize,
}

impl DynamicTable {
    pub(crate) fn new(max_size: usize) -> Self {
        DynamicTable {
            bytes: Vec::new(),
            dead: 0,
            entries: VecDeque::new(),
            size: 0,
            max_size,
        }
    }

    /// Current size in RFC 7541 §4.1 octets.
    #[cfg(test)]
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    pub(crate) fn max_size(&self) -> usize {
        self.max_size
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Entry `i`, 0 being the newest (HPACK index `62 + i`).
    #[inline]
    pub(crate) fn get(&self, i: usize) -> Option<(&[u8], &[u8])> {
        let pos = self.entries.len().checked_sub(i.checked_add(1)?)?;
        let e = self.entries.get(pos)?;
        Some((
            self.bytes.get(e.start..e.mid)?,
            self.bytes.get(e.mid..e.end)?,
        ))
    }

    /// Newest to oldest, as HPACK numbers them.
    #[cfg(test)]
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        (0..self.len()).filter_map(move |i| self.get(i))
    }

    /// Encoder lookup: `Some((i, value_matches))`, preferring a full match,
    /// else the newest entry with that name. A linear scan: the encoder's
    /// table holds the handful of response fields it chose to index.
    pub(crate) fn find(&self, name: &[u8], value: &[u8]) -> Option<(usize, bool)> {
        let mut name_only = None;
        for (i, e) in self.entries.iter().rev().enumerate() {
            if self.bytes.get(e.start..e.mid) != Some(name) {
                continue;
            }
            if self.bytes.get(e.mid..e.end) == Some(value) {
                return Some((i, true));
            }
            if name_only.is_none() {
                name_only = Some((i, false));
            }
        }
        name_only
    }

    /// §4.3: a new maximum evicts until the table fits.
    pub(crate) fn set_max_size(&mut self, max_size: usize) {
        self.max_size = max_size;
        self.evict_to(max_size);
    }

    /// §4.4: evict until the entry fits, then add it. An entry larger than
    /// the whole table empties the table and is not added (not an error).
    pub(crate) fn insert(&mut self, name: &[u8], value: &[u8]) {
        let size = name.len() + value.len() + ENTRY_OVERHEAD;
        if size > self.max_size {
            self.evict_to(0);
            return;
        }
        self.evict_to(self.max_size - size);

        let len = name.len() + value.len();
        if self.bytes.capacity() == 0 {
            // One allocation for a typical first request instead of a
            // series of doublings.
            self.bytes
                .reserve(INITIAL_BYTES.min(self.max_size).max(len));
            self.entries.reserve(INITIAL_ENTRIES);
        }
        if self.dead > 0 && self.bytes.len() + len > self.max_size.saturating_mul(2) {
            self.compact();
        }
        let start = self.bytes.len();
        self.bytes.extend_from_slice(name);
        self.bytes.extend_from_slice(value);
        self.entries.push_back(Entry {
            start,
            mid: start + name.len(),
            end: start + len,
        });
        self.size += size;
    }

    fn evict_to(&mut self, limit: usize) {
        while self.size > limit {
            match self.entries.pop_front() {
                Some(e) => {
                    self.size -= e.size();
                    self.dead = e.end;
                }
                None => break,
            }
        }
        if self.entries.is_empty() {
            // Nothing live: restart at offset 0 for free instead of compacting later.
            self.size = 0;
            self.bytes.clear();
            self.dead = 0;
        }
    }

    /// Moves the live bytes to the front of the buffer.
    fn compact(&mut self) {
        let dead = self.dead;
        self.bytes.copy_within(dead.., 0);
        self.bytes.truncate(self.bytes.len() - dead);
        for e in &mut self.entries {
            e.start -= dead;
            e.mid -= dead;
            e.end -= dead;
        }
        self.dead = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_find_agrees_with_the_table() {
        for (i, &(name, value)) in STATIC_TABLE.iter().enumerate() {
            let index = i + 1;
            assert_eq!(static_entry(index), Some((name, value)));
            let (found, full) = static_find(name, value).unwrap();
            assert!(full, "{index}");
            assert_eq!(found, index);
            // A different value still finds the first entry with that name.
            let first = STATIC_TABLE.iter().position(|e| e.0 == name).unwrap() + 1;
            assert_eq!(static_find(name, b"\x00other"), Some((first, false)));
        }
        assert_eq!(static_entry(0), None);
        assert_eq!(static_entry(62), None);
        assert_eq!(static_find(b"grpc-status", b"0"), None);
        assert_eq!(
            static_find(b"content-type", b"application/grpc"),
            Some((31, false))
        );
    }

    #[test]
    fn insert_evict_and_index_order() {
        let mut t = DynamicTable::new(100);
        t.insert(b"a", b"1"); // 34
        t.insert(b"b", b"2"); // 34
        assert_eq!(t.size(), 68);
        assert_eq!(t.get(0), Some((&b"b"[..], &b"2"[..])));
        assert_eq!(t.get(1), Some((&b"a"[..], &b"1"[..])));
        assert_eq!(t.get(2), None);
        assert_eq!(t.get(usize::MAX), None);
        t.insert(b"c", b"3"); // evicts a
        assert_eq!(t.len(), 2);
        assert_eq!(t.size(), 68);
        assert_eq!(t.get(1), Some((&b"b"[..], &b"2"[..])));
        assert_eq!(t.find(b"c", b"3"), Some((0, true)));
        assert_eq!(t.find(b"b", b"x"), Some((1, false)));
        assert_eq!(t.find(b"a", b"1"), None);
        // Too large for the table: empties it.
        t.insert(&[b'x'; 70], b"");
        assert_eq!(t.len(), 0);
        assert_eq!(t.size(), 0);
        t.insert(b"d", b"4");
        t.set_max_size(33);
        assert_eq!(t.len(), 0);
        t.set_max_size(0);
        t.insert(b"", b"");
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn buffer_stays_bounded_and_entries_intact() {
        let mut t = DynamicTable::new(256);
        for i in 0..10_000u32 {
            let name = format!("n{}", i % 7);
            let value = "v".repeat((i % 50) as usize);
            t.insert(name.as_bytes(), value.as_bytes());
            assert_eq!(t.get(0), Some((name.as_bytes(), value.as_bytes())));
            assert!(t.size() <= 256);
            assert!(t.bytes.len() <= 512);
            let sum: usize = t.iter().map(|(n, v)| n.len() + v.len() + 32).sum();
            assert_eq!(sum, t.size());
        }
    }
}
