//! TEMPORARY: stands in for shardcache's HPACK until it is implemented.
use bytes::BytesMut;
use shardcache::protocol::http2::hpack::{HeaderField, HeaderList, HpackError};

pub struct Encoder(hpack::Encoder<'static>);
impl Default for Encoder {
    fn default() -> Self {
        Self::new()
    }
}
impl Encoder {
    pub fn new() -> Self {
        Encoder(hpack::Encoder::new())
    }
    pub fn set_max_table_size(&mut self, _n: usize) {}
    pub fn encode(&mut self, fields: &[HeaderField<'_>], dst: &mut BytesMut) {
        let v = self.0.encode(fields.iter().map(|f| (f.name, f.value)));
        dst.extend_from_slice(&v);
    }
}
pub struct Decoder(hpack::Decoder<'static>);
impl Decoder {
    pub fn new(_n: usize) -> Self {
        Decoder(hpack::Decoder::new())
    }
    pub fn decode(
        &mut self,
        block: &[u8],
        _max: usize,
        out: &mut HeaderList,
    ) -> Result<(), HpackError> {
        let list = self.0.decode(block).map_err(|_| HpackError::Truncated)?;
        for (n, v) in list {
            out.push(&n, &v);
        }
        Ok(())
    }
}
