//! Which shard of a node owns a (group, key): a hash independent of the
//! ring's, mapped onto `0..shards` by multiply-shift.

use super::hash_key;

/// Seed of the shard hash ("shardkey" in ASCII).
pub const SEED_SHARDS: u64 = 0x7368_6172_646b_6579;

/// The shard, in `0..shards`, of (group, key) on a node with `shards`
/// shards (0 counts as 1).
pub fn shard_of(group: &[u8], key: &[u8], shards: usize) -> usize {
    let h = hash_key(group, key, SEED_SHARDS);
    // Multiply-shift maps the hash onto 0..shards without a division.
    ((u128::from(h) * shards.max(1) as u128) >> 64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Ring;

    #[test]
    fn frozen_vectors() {
        // These values are the contract with clients: a change here moves
        // keys between shards for every client that routes by them.
        let got: Vec<usize> = ["", "a", "user:42", "k-1000"]
            .iter()
            .map(|k| shard_of(b"", k.as_bytes(), 8))
            .collect();
        assert_eq!(got, FROZEN);
        assert_eq!(
            crate::hash_key(b"", b"user:42", SEED_SHARDS),
            3_332_658_731_197_242_168,
            "the shard hash of \"user:42\""
        );
        assert_eq!(shard_of(b"g", b"k", 1), 0);
        assert_eq!(shard_of(b"g", b"k", 0), 0);
    }

    const FROZEN: [usize; 4] = [2, 3, 1, 3];

    #[test]
    fn spreads_evenly_and_apart_from_the_ring() {
        let shards = 4;
        let mut count = [0usize; 4];
        // Keys one ring member owns still spread over all its shards.
        let ring = Ring::new(
            1,
            (0..3)
                .map(|i| crate::Member {
                    node_id: format!("n{i}"),
                    addr: format!("127.0.0.1:{}", 7000 + i).parse().unwrap(),
                    shards: 4,
                })
                .collect(),
            160,
        )
        .unwrap();
        let mut owned = 0;
        for i in 0..40_000 {
            let k = format!("key-{i}");
            if ring.owner_index(b"", k.as_bytes()) == 0 {
                owned += 1;
                count[shard_of(b"", k.as_bytes(), shards)] += 1;
            }
        }
        for c in count {
            let share = c as f64 / owned as f64;
            assert!((share - 0.25).abs() < 0.02, "{count:?} of {owned}");
        }
        assert_ne!(
            shard_of(b"a", b"bc", 1 << 20),
            shard_of(b"ab", b"c", 1 << 20),
            "the group length is part of the hash"
        );
    }
}
