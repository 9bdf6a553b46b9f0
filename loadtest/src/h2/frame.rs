//! HTTP/2 frame layout (RFC 9113 §4, §6): the 9-byte header, frame types,
//! flags and error codes, and writers for the frames a client sends. Pure
//! byte handling: no state.

use bytes::{BufMut, BytesMut};

/// The client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
pub const HEADER_LEN: usize = 9;

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const PRIORITY: u8 = 0x2;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PUSH_PROMISE: u8 = 0x5;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;
pub const CONTINUATION: u8 = 0x9;

pub const FLAG_END_STREAM: u8 = 0x1;
pub const FLAG_ACK: u8 = 0x1;
pub const FLAG_END_HEADERS: u8 = 0x4;
pub const FLAG_PADDED: u8 = 0x8;
pub const FLAG_PRIORITY: u8 = 0x20;

pub const SETTINGS_HEADER_TABLE_SIZE: u16 = 0x1;
pub const SETTINGS_ENABLE_PUSH: u16 = 0x2;
pub const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
pub const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;
pub const SETTINGS_MAX_FRAME_SIZE: u16 = 0x5;
pub const SETTINGS_MAX_HEADER_LIST_SIZE: u16 = 0x6;

pub const DEFAULT_WINDOW: u32 = 65_535;
pub const DEFAULT_MAX_FRAME: u32 = 16_384;
pub const MAX_WINDOW: u32 = (1 << 31) - 1;
pub const MAX_FRAME_LIMIT: u32 = (1 << 24) - 1;

pub const NO_ERROR: u32 = 0x0;
pub const PROTOCOL_ERROR: u32 = 0x1;
pub const FLOW_CONTROL_ERROR: u32 = 0x3;
pub const FRAME_SIZE_ERROR: u32 = 0x6;
pub const REFUSED_STREAM: u32 = 0x7;
pub const CANCEL: u32 = 0x8;
pub const COMPRESSION_ERROR: u32 = 0x9;

/// The name of an HTTP/2 error code, for messages.
pub fn error_name(code: u32) -> &'static str {
    match code {
        0x0 => "NO_ERROR",
        0x1 => "PROTOCOL_ERROR",
        0x2 => "INTERNAL_ERROR",
        0x3 => "FLOW_CONTROL_ERROR",
        0x4 => "SETTINGS_TIMEOUT",
        0x5 => "STREAM_CLOSED",
        0x6 => "FRAME_SIZE_ERROR",
        0x7 => "REFUSED_STREAM",
        0x8 => "CANCEL",
        0x9 => "COMPRESSION_ERROR",
        0xa => "CONNECT_ERROR",
        0xb => "ENHANCE_YOUR_CALM",
        0xc => "INADEQUATE_SECURITY",
        0xd => "HTTP_1_1_REQUIRED",
        _ => "UNKNOWN_ERROR",
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub len: usize,
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
}

impl FrameHeader {
    /// Parses the 9-byte header at the start of `b` (`b.len() >= 9`).
    #[inline]
    pub fn parse(b: &[u8]) -> FrameHeader {
        FrameHeader {
            len: (b[0] as usize) << 16 | (b[1] as usize) << 8 | b[2] as usize,
            kind: b[3],
            flags: b[4],
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & MAX_WINDOW,
        }
    }
}

#[inline]
pub fn write_header(out: &mut BytesMut, len: usize, kind: u8, flags: u8, stream: u32) {
    debug_assert!(len <= MAX_FRAME_LIMIT as usize);
    let mut h = [0u8; HEADER_LEN];
    h[0] = (len >> 16) as u8;
    h[1] = (len >> 8) as u8;
    h[2] = len as u8;
    h[3] = kind;
    h[4] = flags;
    h[5..9].copy_from_slice(&stream.to_be_bytes());
    out.put_slice(&h);
}

pub fn write_settings(out: &mut BytesMut, settings: &[(u16, u32)]) {
    write_header(out, settings.len() * 6, SETTINGS, 0, 0);
    for &(id, v) in settings {
        out.put_u16(id);
        out.put_u32(v);
    }
}

pub fn write_settings_ack(out: &mut BytesMut) {
    write_header(out, 0, SETTINGS, FLAG_ACK, 0);
}

pub fn write_window_update(out: &mut BytesMut, stream: u32, increment: u32) {
    write_header(out, 4, WINDOW_UPDATE, 0, stream);
    out.put_u32(increment & MAX_WINDOW);
}

pub fn write_ping_ack(out: &mut BytesMut, payload: &[u8]) {
    write_header(out, 8, PING, FLAG_ACK, 0);
    out.put_slice(payload);
}

pub fn write_rst_stream(out: &mut BytesMut, stream: u32, code: u32) {
    write_header(out, 4, RST_STREAM, 0, stream);
    out.put_u32(code);
}

pub fn write_goaway(out: &mut BytesMut, last_stream: u32, code: u32) {
    write_header(out, 8, GOAWAY, 0, 0);
    out.put_u32(last_stream);
    out.put_u32(code);
}

/// Writes one header block as HEADERS plus as many CONTINUATION frames as
/// `max_frame` requires.
pub fn write_header_block(
    out: &mut BytesMut,
    stream: u32,
    block: &[u8],
    end_stream: bool,
    max_frame: usize,
) {
    let mut chunks = block.chunks(max_frame.max(1)).peekable();
    let mut kind = HEADERS;
    let mut flags = if end_stream { FLAG_END_STREAM } else { 0 };
    if block.is_empty() {
        write_header(out, 0, HEADERS, flags | FLAG_END_HEADERS, stream);
        return;
    }
    while let Some(chunk) = chunks.next() {
        if chunks.peek().is_none() {
            flags |= FLAG_END_HEADERS;
        }
        write_header(out, chunk.len(), kind, flags, stream);
        out.put_slice(chunk);
        kind = CONTINUATION;
        flags = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        let mut out = BytesMut::new();
        write_header(&mut out, 0x01_02_03, HEADERS, 0x25, 0x8000_0007);
        let h = FrameHeader::parse(&out);
        assert_eq!(
            h,
            FrameHeader {
                len: 0x01_02_03,
                kind: HEADERS,
                flags: 0x25,
                stream: 7
            }
        );
    }

    #[test]
    fn header_block_is_split_into_continuations() {
        let mut out = BytesMut::new();
        let block: Vec<u8> = (0..25u8).collect();
        write_header_block(&mut out, 3, &block, true, 10);
        let mut pos = 0;
        let mut kinds = vec![];
        let mut joined = vec![];
        while pos < out.len() {
            let h = FrameHeader::parse(&out[pos..]);
            kinds.push((h.kind, h.flags));
            joined.extend_from_slice(&out[pos + 9..pos + 9 + h.len]);
            pos += 9 + h.len;
        }
        assert_eq!(
            kinds,
            vec![
                (HEADERS, FLAG_END_STREAM),
                (CONTINUATION, 0),
                (CONTINUATION, FLAG_END_HEADERS)
            ]
        );
        assert_eq!(joined, block);
    }
}
