//! Per-connection HTTP/2 server state. STUB: to be implemented.
use super::frame::ErrorCode;
use super::hpack::{HeaderField, HeaderList};
use bytes::{Bytes, BytesMut};

/// What this server advertises and enforces on each connection.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub max_concurrent_streams: u32,
    pub initial_window_size: u32,
    pub connection_window_size: u32,
    pub max_frame_size: u32,
    pub max_header_list_size: u32,
    pub header_table_size: u32,
    pub max_body_size: usize,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            max_concurrent_streams: 1024,
            initial_window_size: 1 << 20,
            connection_window_size: 16 << 20,
            max_frame_size: 16_384,
            max_header_list_size: 16 << 10,
            header_table_size: 4096,
            max_body_size: (4 << 20) + 64 * 1024,
        }
    }
}

#[derive(Debug)]
pub enum Event {
    Request { stream_id: u32, headers: HeaderList, body: Bytes },
    RequestTooLarge { stream_id: u32, headers: HeaderList },
    Reset { stream_id: u32, code: ErrorCode },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionError {
    pub code: ErrorCode,
    pub reason: String,
}

#[derive(Debug)]
pub struct Connection {
    output: BytesMut,
}

impl Connection {
    pub fn new(_settings: ServerSettings) -> Self {
        todo!()
    }
    pub fn recv(&mut self, _input: &mut BytesMut, _events: &mut Vec<Event>) -> Result<(), ConnectionError> {
        todo!()
    }
    pub fn send_response(&mut self, _stream_id: u32, _headers: &[HeaderField<'_>], _body: &[u8], _trailers: &[HeaderField<'_>]) {
        todo!()
    }
    pub fn send_trailers_only(&mut self, _stream_id: u32, _headers: &[HeaderField<'_>]) {
        todo!()
    }
    pub fn go_away(&mut self, _code: ErrorCode, _debug: &[u8]) {
        todo!()
    }
    pub fn output(&mut self) -> &mut BytesMut {
        &mut self.output
    }
    pub fn active_streams(&self) -> usize {
        todo!()
    }
    pub fn is_closed(&self) -> bool {
        todo!()
    }
}
