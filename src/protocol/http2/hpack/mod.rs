//! HPACK (RFC 7541): header compression for HTTP/2.
//!
//! Owns the two compression contexts of one connection: the [`Decoder`]
//! (requests in: static + dynamic table, Huffman, size limits) and the
//! [`Encoder`] (responses out). Pure data transformation, no I/O; the
//! connection state machine in `super::connection` owns one of each.

mod decoder;
mod encoder;
mod header_list;
mod huffman;
mod table;

pub use decoder::Decoder;
pub use encoder::{Encoder, HeaderField};
pub use header_list::HeaderList;

/// Why a header block could not be decoded. Every variant is a connection
/// error of type COMPRESSION_ERROR (RFC 7540 §4.3), except
/// [`HpackError::HeaderListTooLarge`], which leaves the decoder's state
/// consistent and so can be answered per stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HpackError {
    /// The block ended in the middle of a representation.
    Truncated,
    /// An integer does not fit in 32 bits.
    IntegerOverflow,
    /// An index of 0, or beyond the static + dynamic table.
    InvalidIndex(usize),
    /// Invalid Huffman code, padding longer than 7 bits or not all ones, or EOS.
    InvalidHuffman,
    /// A dynamic table size update above the limit we advertised, or one
    /// that is not at the start of the block.
    InvalidTableSizeUpdate(usize),
    /// A string literal longer than the whole block allows.
    StringTooLong,
    /// The decoded header list exceeds the limit (RFC 7541 §4.1 sizes).
    HeaderListTooLarge,
}

impl std::fmt::Display for HpackError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HpackError::Truncated => write!(f, "header block truncated"),
            HpackError::IntegerOverflow => write!(f, "HPACK integer overflow"),
            HpackError::InvalidIndex(i) => write!(f, "invalid HPACK table index {i}"),
            HpackError::InvalidHuffman => write!(f, "invalid Huffman-coded string"),
            HpackError::InvalidTableSizeUpdate(n) => {
                write!(f, "invalid dynamic table size update to {n}")
            }
            HpackError::StringTooLong => write!(f, "HPACK string literal too long"),
            HpackError::HeaderListTooLarge => write!(f, "header list too large"),
        }
    }
}
