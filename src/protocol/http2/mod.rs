//! HTTP/2, server side, split the way hyperium/h2 is:
//!
//! - [`frame`]: pure parsing and encoding of frames (no state, no I/O);
//! - [`hpack`]: header compression tables, Huffman, encoder and decoder;
//! - [`connection`]: the per-connection state machine (streams, flow
//!   control, settings, GOAWAY). It consumes bytes, yields [`Event`]s and
//!   queues output bytes; the caller owns the socket.

pub mod connection;
pub mod flood;
pub mod frame;
pub mod hpack;

pub use connection::{Connection, ConnectionError, Event, ServerSettings};
pub use flood::Flood;
pub use frame::ErrorCode;
pub use hpack::{HeaderField, HeaderList};
