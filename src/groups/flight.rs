//! Single-flight: while a key is being loaded, everyone else who asks for
//! it waits for that one load instead of starting another. The table only
//! keeps who waits; the caller runs the load and hands out its result.

use std::hash::Hash;

/// Whether a caller leads a new load or joins one in flight.
#[derive(Debug, PartialEq, Eq)]
pub enum Join {
    /// No load was in flight: the caller must start it (and later call
    /// [`SingleFlight::finish`]).
    Lead,
    /// A load is in flight; the caller's waiter was added to it.
    Follow,
}

/// Loads in flight by key, each with the waiters to answer when it ends.
#[derive(Debug)]
pub struct SingleFlight<K, W> {
    flights: hashbrown::HashMap<K, Vec<W>>,
}

impl<K: Hash + Eq, W> Default for SingleFlight<K, W> {
    fn default() -> Self {
        SingleFlight {
            flights: hashbrown::HashMap::new(),
        }
    }
}

impl<K: Hash + Eq, W> SingleFlight<K, W> {
    /// Registers `waiter` for `key`.
    pub fn join(&mut self, key: K, waiter: W) -> Join {
        match self.flights.entry(key) {
            hashbrown::hash_map::Entry::Occupied(mut e) => {
                e.get_mut().push(waiter);
                Join::Follow
            }
            hashbrown::hash_map::Entry::Vacant(e) => {
                e.insert(vec![waiter]);
                Join::Lead
            }
        }
    }

    /// Ends the load of `key`: every waiter, leader first. The next join
    /// for `key` leads a new load.
    pub fn finish(&mut self, key: &K) -> Vec<W> {
        self.flights.remove(key).unwrap_or_default()
    }

    /// Loads in flight.
    pub fn len(&self) -> usize {
        self.flights.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flights.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_leader_then_followers_then_a_new_flight() {
        let mut f: SingleFlight<&str, u32> = SingleFlight::default();
        assert_eq!(f.join("k", 1), Join::Lead);
        assert_eq!(f.join("k", 2), Join::Follow);
        assert_eq!(f.join("other", 3), Join::Lead);
        assert_eq!(f.join("k", 4), Join::Follow);
        assert_eq!(f.len(), 2);
        assert_eq!(f.finish(&"k"), vec![1, 2, 4]);
        assert_eq!(f.finish(&"k"), Vec::<u32>::new(), "answered once");
        assert_eq!(f.join("k", 5), Join::Lead, "the next Get tries again");
        assert_eq!(f.finish(&"other"), vec![3]);
        assert_eq!(f.finish(&"k"), vec![5]);
        assert!(f.is_empty());
    }
}
