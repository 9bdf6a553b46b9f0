//! Per-shard store. STUB: to be implemented.

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub hits: u64,
    pub misses: u64,
    pub sets: u64,
    pub deletes: u64,
    pub evictions: u64,
    pub expirations: u64,
    pub items: u64,
    pub bytes: u64,
    pub capacity_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetError {
    TooLarge { charge: u64, capacity: u64 },
}

pub struct Store {}

impl Store {
    pub fn new(_capacity_bytes: u64) -> Self {
        todo!()
    }
    pub fn get(&mut self, _group: &[u8], _key: &[u8], _now_ms: u64) -> Option<&[u8]> {
        todo!()
    }
    pub fn set(
        &mut self,
        _group: &[u8],
        _key: &[u8],
        _value: &[u8],
        _ttl_ms: u64,
        _now_ms: u64,
    ) -> Result<(), SetError> {
        todo!()
    }
    pub fn delete(&mut self, _group: &[u8], _key: &[u8], _now_ms: u64) -> bool {
        todo!()
    }
    pub fn sweep_expired(&mut self, _now_ms: u64, _max_visits: usize) -> usize {
        todo!()
    }
    pub fn stats(&self) -> StoreStats {
        todo!()
    }
}
