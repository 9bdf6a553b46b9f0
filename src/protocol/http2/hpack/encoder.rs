//! HPACK encoder for response headers and trailers. STUB: to be implemented.
use bytes::BytesMut;

/// One field to encode. `index` asks the encoder to add the field to the
/// dynamic table when it is not there yet (for fields repeated on every
/// response); fields with varying values (e.g. `grpc-message`) set it false.
#[derive(Debug, Clone, Copy)]
pub struct HeaderField<'a> {
    pub name: &'a [u8],
    pub value: &'a [u8],
    pub index: bool,
}

/// Encodes header blocks; owns our mirror of the peer's dynamic table.
#[derive(Debug, Default)]
pub struct Encoder {}

impl Encoder {
    pub fn new() -> Self {
        Encoder {}
    }

    /// The peer's SETTINGS_HEADER_TABLE_SIZE changed.
    pub fn set_max_table_size(&mut self, _size: usize) {
        todo!()
    }

    /// Appends one complete header block for `fields` to `dst`.
    pub fn encode(&mut self, _fields: &[HeaderField<'_>], _dst: &mut BytesMut) {
        todo!()
    }
}
