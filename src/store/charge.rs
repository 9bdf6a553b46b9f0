//! What an entry costs the byte budget: the memory the store really spends
//! to hold it, its own bytes included.
//!
//! Kept apart from the store's logic because it is a model of other code
//! (the slab's classes, the table's load, glibc's malloc for large
//! entries): if one of those changes, this is the one file to re-measure.
//! The model is checked against resident memory by
//! `resident_memory_tracks_charges` in `tests.rs`.

use super::item;
use super::slab::{chunk_size, PAGE_BYTES};

/// An entry's share of the index. A table slot is 6.3 bytes (a 16-bit tag
/// and a `u32` id, buckets of fourteen) and the load moves between 0.58 and
/// 0.875 as the table grows by halves: 7.2 to 10.8 bytes an entry, 8.7 on
/// average over sizes (6.29 * ln 1.5 / (0.875 - 0.583)).
pub const TABLE_BYTES: u64 = 9;

/// What a large entry's block costs besides the block: its slot in the
/// slab's block list (a boxed slice and two links, 24 bytes).
pub const BLOCK_SLOT_BYTES: u64 = 24;

/// The budget charge of an entry whose expiry does not fit the entry's
/// 32-bit field (`Store::encode_expiry`): one `u32 → u64` entry of the
/// store's `far` map, 12 bytes and a control byte at hashbrown's load.
pub const FAR_BYTES: u64 = 24;

/// Everything per entry that does not depend on its sizes, for a small
/// entry: its header (links, expiry, lengths) and its index share.
pub const ENTRY_OVERHEAD: u64 = item::MIN_LEN as u64 + TABLE_BYTES;

/// glibc malloc (x86_64, aarch64): a block is its request plus an 8-byte
/// size header, rounded up to 16 bytes, at least 32.
const MALLOC_HEADER: u64 = 8;
const MALLOC_ALIGN: u64 = 16;
const MALLOC_MIN_CHUNK: u64 = 32;
/// Requests from this size up are served by mmap: whole pages. (glibc raises
/// this threshold at run time after freeing such a block; the heap then
/// rounds to 16 bytes instead, less than 3 % apart at these sizes.)
const MMAP_THRESHOLD: u64 = 128 * 1024;
const PAGE: u64 = 4096;

fn round_up(n: u64, to: u64) -> u64 {
    n.saturating_add(to - 1) & !(to - 1)
}

/// Bytes the allocator really takes for a request of `n` bytes.
pub fn heap_block(n: u64) -> u64 {
    if n == 0 {
        // Rust does not allocate empty boxes.
        return 0;
    }
    let chunk = round_up(n.saturating_add(MALLOC_HEADER), MALLOC_ALIGN).max(MALLOC_MIN_CHUNK);
    if n < MMAP_THRESHOLD {
        chunk
    } else {
        round_up(chunk.saturating_add(MALLOC_HEADER), PAGE)
    }
}

/// The budget charge of an entry: its chunk (a page's 64 KiB are shared by
/// its chunks; the slack at a page's end, under one chunk, is not
/// charged), or for a large entry its heap block and block slot; plus its
/// share of the index.
pub fn entry_charge(group_len: usize, key_len: usize, value_len: usize) -> u64 {
    let Some(len) = item::len(group_len, key_len, value_len) else {
        return u64::MAX;
    };
    let place = match chunk_size(len) {
        Some(chunk) => chunk as u64,
        None => heap_block(len as u64).saturating_add(BLOCK_SLOT_BYTES),
    };
    place.saturating_add(TABLE_BYTES)
}

const _: () = assert!(PAGE_BYTES as u64 >= 64 * item::MIN_LEN as u64);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heap_block_follows_glibc_rounding() {
        assert_eq!(heap_block(0), 0);
        assert_eq!(heap_block(1), 32);
        assert_eq!(heap_block(24), 32);
        assert_eq!(heap_block(25), 48);
        assert_eq!(heap_block(80), 96);
        assert_eq!(heap_block(4112), 4128);
        assert_eq!(heap_block(128 * 1024), 33 * 4096);
        assert_eq!(heap_block(u64::MAX), u64::MAX - (PAGE - 1));
        // Saturates instead of overflowing.
        assert!(entry_charge(usize::MAX, usize::MAX, 1) > u64::MAX - PAGE);
    }

    #[test]
    fn charges_of_the_measured_shapes() {
        // 16 B key, 64 B value: a 96-byte chunk and the index share.
        assert_eq!(entry_charge(0, 16, 64), 96 + TABLE_BYTES);
        assert_eq!(ENTRY_OVERHEAD, 15 + TABLE_BYTES);
        // 16 B key, 4 KiB value: 4,128 bytes in a 4,144-byte heap block.
        assert_eq!(entry_charge(0, 16, 4096), 4144 + 24 + TABLE_BYTES);
        assert_eq!(entry_charge(0, 0, 0), 16 + TABLE_BYTES);
    }
}
