//! HPACK decoder (RFC 7541 §3, §6). STUB: to be implemented.
use super::{HeaderList, HpackError};

/// Decodes request header blocks; owns the peer-to-us dynamic table.
#[derive(Debug)]
pub struct Decoder {
    _max_table_size: usize,
}

impl Decoder {
    /// `max_table_size` is the SETTINGS_HEADER_TABLE_SIZE we advertise
    /// (4096 by default): the ceiling for size updates from the peer.
    pub fn new(max_table_size: usize) -> Self {
        Decoder {
            _max_table_size: max_table_size,
        }
    }

    /// Decodes one complete header block (HEADERS + CONTINUATION fragments
    /// joined) and appends its fields to `out`. Fails with
    /// `HeaderListTooLarge` once `out.size()` would exceed `max_list_size`,
    /// but only after decoding the whole block so the table stays in sync.
    pub fn decode(
        &mut self,
        _block: &[u8],
        _max_list_size: usize,
        _out: &mut HeaderList,
    ) -> Result<(), HpackError> {
        todo!()
    }
}
