//! Remembered "not found" answers of a group's source, so that a key the
//! source does not have cannot flood it: for `negative_ttl` a Get of such a
//! key is a miss without a load. Bounded by entry count, oldest dropped
//! first (entries expire in the order they were added when every group
//! shares one TTL; with several, an expired entry behind a live one waits
//! for its turn or for a lookup).

use std::collections::VecDeque;

/// (group, key) → when the "not found" stops counting (ms, caller's clock).
#[derive(Debug)]
pub struct NegativeCache {
    entries: hashbrown::HashMap<(String, String), u64>,
    /// Insertion order, for bounding and reclaiming.
    order: VecDeque<(String, String)>,
    capacity: usize,
}

impl NegativeCache {
    pub fn new(capacity: usize) -> NegativeCache {
        NegativeCache {
            entries: hashbrown::HashMap::new(),
            order: VecDeque::new(),
            capacity,
        }
    }

    /// Remembers that the source has no `key` in `group` until `until_ms`.
    pub fn insert(&mut self, group: &str, key: &str, until_ms: u64, now_ms: u64) {
        if self.capacity == 0 {
            return;
        }
        self.reclaim(now_ms);
        let id = (group.to_string(), key.to_string());
        if self.entries.insert(id.clone(), until_ms).is_none() {
            self.order.push_back(id);
        }
        while self.entries.len() > self.capacity {
            match self.order.pop_front() {
                Some(old) => {
                    self.entries.remove(&old);
                }
                None => break,
            }
        }
    }

    /// Whether a "not found" for (group, key) still holds.
    pub fn contains(&mut self, group: &str, key: &str, now_ms: u64) -> bool {
        let id = (group.to_string(), key.to_string());
        match self.entries.get(&id) {
            Some(&until) if until > now_ms => true,
            Some(_) => {
                self.entries.remove(&id);
                false
            }
            None => false,
        }
    }

    /// Forgets (group, key): the key was set or deleted meanwhile.
    pub fn remove(&mut self, group: &str, key: &str) {
        if !self.entries.is_empty() {
            self.entries.remove(&(group.to_string(), key.to_string()));
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Drops expired entries from the front of the insertion order, and
    /// order entries whose key was removed or re-inserted meanwhile.
    fn reclaim(&mut self, now_ms: u64) {
        while let Some(front) = self.order.front() {
            match self.entries.get(front) {
                Some(&until) if until > now_ms => break,
                Some(_) => {
                    self.entries.remove(front);
                }
                None => {}
            }
            self.order.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_until_the_ttl_and_stays_bounded() {
        let mut n = NegativeCache::new(3);
        n.insert("g", "a", 100, 0);
        assert!(n.contains("g", "a", 99));
        assert!(!n.contains("h", "a", 99), "groups are apart");
        assert!(!n.contains("g", "a", 100), "gone at its deadline");
        assert!(n.is_empty());
        for k in ["1", "2", "3", "4"] {
            n.insert("g", k, 1000, 0);
        }
        assert_eq!(n.len(), 3);
        assert!(!n.contains("g", "1", 0), "the oldest was dropped");
        assert!(n.contains("g", "4", 0));
        n.remove("g", "4");
        assert!(!n.contains("g", "4", 0));
        // Expired entries are reclaimed on insert.
        n.insert("g", "5", 2000, 1500);
        assert_eq!(n.len(), 1);
        assert!(n.contains("g", "5", 1999));
        let mut off = NegativeCache::new(0);
        off.insert("g", "k", 10, 0);
        assert!(!off.contains("g", "k", 0));
    }
}
