//! What an entry costs the byte budget: its group, key and value bytes plus
//! the memory the store really spends to hold them.
//!
//! Kept apart from the store's logic because it is a model of other code
//! (the slab slot, hashbrown's layout, glibc's malloc): if one of those
//! changes, this is the one file to re-measure. The model is checked against
//! resident memory by `resident_memory_tracks_charges` in `tests.rs`.

use super::slab::Slot;

/// Bytes of one slab slot: the data block's pointer and length, the expiry,
/// the group and key lengths and the two LRU links.
pub const SLOT_BYTES: u64 = std::mem::size_of::<Slot>() as u64;

/// An entry's share of the hash table. hashbrown keeps a `u64` (slab index
/// and hash tag) and a control byte per bucket and doubles the buckets when
/// they are 7/8 full, so the load moves between 7/16 and 7/8 (10.3 to 20.6
/// bytes per entry). Averaged over a doubling cycle that is
/// 9 * 16/7 * ln 2 = 14.3: charge 14.
pub const TABLE_BYTES: u64 = 14;

/// Everything per entry that does not depend on its sizes.
pub const ENTRY_OVERHEAD: u64 = SLOT_BYTES + TABLE_BYTES;

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

/// The budget charge of an entry: one heap block holds group, key and value
/// together, so the sizes matter only through that block's rounding.
pub fn entry_charge(group_len: usize, key_len: usize, value_len: usize) -> u64 {
    let payload = (group_len as u64)
        .saturating_add(key_len as u64)
        .saturating_add(value_len as u64);
    ENTRY_OVERHEAD.saturating_add(heap_block(payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heap_block_follows_glibc_rounding() {
        assert_eq!(SLOT_BYTES, 40, "the slot layout changed: re-measure");
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
}
