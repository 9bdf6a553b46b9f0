//! The byte layout of one entry, the same wherever it lives (a chunk of a
//! slab page or a block of its own): LRU links, expiry, lengths, then the
//! group, key and value bytes back to back.
//!
//! ```text
//! 0      4      8        12                       12+h
//! | prev | next | expiry | varint g, k, v lengths | group | key | value |
//! ```
//!
//! Everything is in the entry's own bytes, so one entry is one run of
//! memory: no per-entry pointer, no separate header. (A large entry, in a
//! heap block of its own, keeps its links in the slab's block list instead
//! and leaves these 8 bytes unused: see `slab.rs`.) The links are `u32`
//! entry ids (see `slab.rs`); the expiry is 32 bits relative to the store's
//! time base (see `Store::encode_expiry`); lengths are LEB128 varints, one
//! byte each below 128. A 16-byte key with a 64-byte value takes
//! 12 + 3 + 80 = 95 bytes.

/// The "no entry" link.
pub const NIL: u32 = u32::MAX;
/// Written in place of `prev` in a free chunk (never a valid id).
pub const FREE: u32 = u32::MAX - 1;

/// Expiry field: never expires.
pub const EXP_NEVER: u32 = 0;
/// Expiry field: the absolute time is kept in the store's `far` map.
pub const EXP_FAR: u32 = u32::MAX;

const PREV: usize = 0;
const NEXT: usize = 4;
const EXPIRY: usize = 8;
const LENS: usize = 12;
/// The smallest entry: links, expiry and three one-byte lengths.
pub const MIN_LEN: usize = LENS + 3;
/// Bytes of the header up to the data, at most (three 10-byte varints).
pub const MAX_HEADER: usize = LENS + 30;

fn varint_len(mut n: usize) -> usize {
    let mut len = 1;
    while n >= 0x80 {
        n >>= 7;
        len += 1;
    }
    len
}

/// Bytes of an entry with these lengths; `None` past `isize::MAX`.
pub fn len(group: usize, key: usize, value: usize) -> Option<usize> {
    let n = (LENS + varint_len(group) + varint_len(key) + varint_len(value))
        .checked_add(group)?
        .checked_add(key)?
        .checked_add(value)?;
    (n <= isize::MAX as usize).then_some(n)
}

/// An entry's header: unlinked, with `expiry` and the three lengths.
/// Returns the buffer and how many of its bytes are used.
pub fn header(group: usize, key: usize, value: usize, expiry: u32) -> ([u8; MAX_HEADER], usize) {
    let mut h = [0u8; MAX_HEADER];
    h[PREV..PREV + 4].copy_from_slice(&NIL.to_le_bytes());
    h[NEXT..NEXT + 4].copy_from_slice(&NIL.to_le_bytes());
    h[EXPIRY..EXPIRY + 4].copy_from_slice(&expiry.to_le_bytes());
    let mut at = LENS;
    for mut n in [group, key, value] {
        while n >= 0x80 {
            h[at] = n as u8 | 0x80;
            n >>= 7;
            at += 1;
        }
        h[at] = n as u8;
        at += 1;
    }
    (h, at)
}

#[inline]
fn read_u32(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

#[inline]
fn write_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

#[inline]
pub fn prev(b: &[u8]) -> u32 {
    read_u32(b, PREV)
}

#[inline]
pub fn next(b: &[u8]) -> u32 {
    read_u32(b, NEXT)
}

#[inline]
pub fn set_prev(b: &mut [u8], v: u32) {
    write_u32(b, PREV, v)
}

#[inline]
pub fn set_next(b: &mut [u8], v: u32) {
    write_u32(b, NEXT, v)
}

#[inline]
pub fn expiry(b: &[u8]) -> u32 {
    read_u32(b, EXPIRY)
}

#[inline]
pub fn set_expiry(b: &mut [u8], v: u32) {
    write_u32(b, EXPIRY, v)
}

/// Where an entry's pieces are: lengths and the offset of the group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lens {
    pub group: usize,
    pub key: usize,
    pub value: usize,
    pub data: usize,
}

/// Decodes the lengths; the common case (all below 128) reads three bytes.
#[inline]
pub fn lens(b: &[u8]) -> Lens {
    let (g, k, v) = (b[LENS], b[LENS + 1], b[LENS + 2]);
    if (g | k | v) < 0x80 {
        return Lens {
            group: g as usize,
            key: k as usize,
            value: v as usize,
            data: LENS + 3,
        };
    }
    long_lens(b)
}

#[cold]
fn long_lens(b: &[u8]) -> Lens {
    let mut at = LENS;
    let mut out = [0usize; 3];
    for n in &mut out {
        let mut shift = 0;
        loop {
            let byte = b[at];
            at += 1;
            *n |= ((byte & 0x7f) as usize) << shift;
            if byte < 0x80 {
                break;
            }
            shift += 7;
        }
    }
    Lens {
        group: out[0],
        key: out[1],
        value: out[2],
        data: at,
    }
}

#[inline]
pub fn group<'a>(b: &'a [u8], l: &Lens) -> &'a [u8] {
    &b[l.data..l.data + l.group]
}

#[inline]
pub fn key<'a>(b: &'a [u8], l: &Lens) -> &'a [u8] {
    let at = l.data + l.group;
    &b[at..at + l.key]
}

#[inline]
pub fn value<'a>(b: &'a [u8], l: &Lens) -> &'a [u8] {
    let at = l.data + l.group + l.key;
    &b[at..at + l.value]
}

/// Whether this entry holds `(group, key)`: lengths first, then bytes.
#[inline]
pub fn is(b: &[u8], group: &[u8], key: &[u8]) -> bool {
    let l = lens(b);
    if l.group != group.len() || l.key != key.len() {
        return false;
    }
    let at = l.data;
    // Most entries have no group: skip that call to memcmp.
    (group.is_empty() || &b[at..at + l.group] == group)
        && &b[at + l.group..at + l.group + l.key] == key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_every_length_size() {
        for (g, k, v) in [
            (0, 16, 64),
            (127, 127, 127),
            (128, 1, 300),
            (1, 16_383, 16_384),
            (0, 0, 4 << 20),
            (5, 3, usize::MAX >> 8),
        ] {
            let (h, n) = header(g, k, v, 7);
            assert_eq!(n + g + k + v, len(g, k, v).unwrap(), "{g} {k} {v}");
            let l = lens(&h);
            assert_eq!((l.group, l.key, l.value, l.data), (g, k, v, n));
            assert_eq!((prev(&h), next(&h), expiry(&h)), (NIL, NIL, 7));
        }
        assert_eq!(len(0, 16, 64), Some(95));
        assert_eq!(len(usize::MAX, 1, 1), None);
    }

    #[test]
    fn pieces_and_identity() {
        let (h, n) = header(1, 2, 3, 0);
        let mut b = h[..n].to_vec();
        b.extend_from_slice(b"gKKvvv");
        let l = lens(&b);
        assert_eq!(
            (group(&b, &l), key(&b, &l), value(&b, &l)),
            (&b"g"[..], &b"KK"[..], &b"vvv"[..])
        );
        assert!(is(&b, b"g", b"KK"));
        assert!(!is(&b, b"", b"gKK"));
        assert!(!is(&b, b"g", b"KX"));
        set_prev(&mut b, 5);
        set_next(&mut b, 6);
        set_expiry(&mut b, 9);
        assert_eq!((prev(&b), next(&b), expiry(&b), lens(&b)), (5, 6, 9, l));
    }
}
