//! Bytes of large values on their way to a shard's connections: copied by
//! another shard for a hand-off, or read from a peer node, and not yet
//! taken by the connection that asked (they sit in its mailbox while its
//! client does not read). A connection cannot refuse answers it already
//! asked for, so the bound is applied where they are made: past the
//! shard's share of `--node-buffer`, a large value is not copied and the
//! Get fails RESOURCE_EXHAUSTED.
//!
//! The count is one atomic per shard, touched only for values of at least
//! [`LARGE_VALUE`] bytes (where the copy costs far more); the bytes are
//! counted down when the last reference to them is dropped, wherever that
//! is (written to the socket, or dropped with a closed mailbox).

use bytes::Bytes;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Values at least this large are counted.
pub const LARGE_VALUE: usize = 64 << 10;

/// One shard's count of large values on their way to it.
#[derive(Debug, Clone, Default)]
pub struct InTransit(Arc<AtomicUsize>);

impl InTransit {
    /// Bytes counted now.
    pub fn bytes(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    /// A copy of `value` for the shard, counted until dropped; `Err` with
    /// the bytes already on their way when it would pass `limit`. Small
    /// values are copied without counting.
    pub fn copy(&self, value: &[u8], limit: usize) -> Result<Bytes, usize> {
        if value.len() < LARGE_VALUE {
            return Ok(Bytes::copy_from_slice(value));
        }
        self.reserve(value.len(), limit)?;
        Ok(self.counted(Bytes::copy_from_slice(value)))
    }

    /// [`InTransit::copy`] for bytes that exist already (read from a peer).
    pub fn admit(&self, value: Bytes, limit: usize) -> Result<Bytes, usize> {
        if value.len() < LARGE_VALUE {
            return Ok(value);
        }
        self.reserve(value.len(), limit)?;
        Ok(self.counted(value))
    }

    fn reserve(&self, n: usize, limit: usize) -> Result<(), usize> {
        let before = self.0.fetch_add(n, Ordering::Relaxed);
        if before.saturating_add(n) > limit {
            self.0.fetch_sub(n, Ordering::Relaxed);
            return Err(before);
        }
        Ok(())
    }

    fn counted(&self, data: Bytes) -> Bytes {
        Bytes::from_owner(Counted {
            data,
            counter: self.0.clone(),
        })
    }
}

/// A value's bytes and the count they are in: dropping the last
/// reference counts them down.
struct Counted {
    data: Bytes,
    counter: Arc<AtomicUsize>,
}

impl AsRef<[u8]> for Counted {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.counter.fetch_sub(self.data.len(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_large_values_until_dropped_and_refuses_past_the_limit() {
        let t = InTransit::default();
        let big = vec![7u8; LARGE_VALUE];
        let a = t.copy(&big, 3 * LARGE_VALUE).unwrap();
        let b = t.admit(Bytes::from(big.clone()), 3 * LARGE_VALUE).unwrap();
        assert_eq!((&a[..], t.bytes()), (&big[..], 2 * LARGE_VALUE));
        // A clone is the same bytes: counted once.
        let a2 = a.clone();
        assert_eq!(t.bytes(), 2 * LARGE_VALUE);
        assert_eq!(t.copy(&big, 2 * LARGE_VALUE + 1), Err(2 * LARGE_VALUE));
        assert_eq!(t.bytes(), 2 * LARGE_VALUE);
        // Small values are never refused or counted.
        assert_eq!(t.copy(b"small", 0).unwrap(), Bytes::from_static(b"small"));
        drop((a, b));
        assert_eq!(t.bytes(), LARGE_VALUE);
        drop(a2);
        assert_eq!(t.bytes(), 0);
        assert!(t.copy(&big, LARGE_VALUE).is_ok());
    }
}
