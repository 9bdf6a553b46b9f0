//! Encoding of the frames a server sends, appended to an output buffer.

use super::{flag, kind, ErrorCode};
use bytes::{BufMut, BytesMut};

pub fn head(dst: &mut BytesMut, len: usize, kind: u8, flags: u8, stream_id: u32) {
    let len = len as u32;
    dst.put_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
    dst.put_u32(stream_id & 0x7fff_ffff);
}

pub fn settings(dst: &mut BytesMut, params: &[(u16, u32)]) {
    head(dst, params.len() * 6, kind::SETTINGS, 0, 0);
    for &(k, v) in params {
        dst.put_u16(k);
        dst.put_u32(v);
    }
}

pub fn settings_ack(dst: &mut BytesMut) {
    head(dst, 0, kind::SETTINGS, flag::ACK, 0);
}

pub fn ping(dst: &mut BytesMut, payload: [u8; 8]) {
    head(dst, 8, kind::PING, 0, 0);
    dst.put_slice(&payload);
}

pub fn ping_ack(dst: &mut BytesMut, payload: [u8; 8]) {
    head(dst, 8, kind::PING, flag::ACK, 0);
    dst.put_slice(&payload);
}

pub fn window_update(dst: &mut BytesMut, stream_id: u32, increment: u32) {
    head(dst, 4, kind::WINDOW_UPDATE, 0, stream_id);
    dst.put_u32(increment & 0x7fff_ffff);
}

pub fn rst_stream(dst: &mut BytesMut, stream_id: u32, code: ErrorCode) {
    head(dst, 4, kind::RST_STREAM, 0, stream_id);
    dst.put_u32(code.to_u32());
}

pub fn goaway(dst: &mut BytesMut, last_stream_id: u32, code: ErrorCode, debug: &[u8]) {
    head(dst, 8 + debug.len(), kind::GOAWAY, 0, 0);
    dst.put_u32(last_stream_id & 0x7fff_ffff);
    dst.put_u32(code.to_u32());
    dst.put_slice(debug);
}

/// A header block as HEADERS plus as many CONTINUATION frames as the peer's
/// maximum frame size requires.
pub fn headers(
    dst: &mut BytesMut,
    stream_id: u32,
    block: &[u8],
    end_stream: bool,
    max_frame: usize,
) {
    let max_frame = max_frame.max(1);
    let mut chunks = block.chunks(max_frame);
    let first = chunks.next().unwrap_or(&[]);
    let last = block.len() <= max_frame;
    let mut flags = if end_stream { flag::END_STREAM } else { 0 };
    if last {
        flags |= flag::END_HEADERS;
    }
    head(dst, first.len(), kind::HEADERS, flags, stream_id);
    dst.put_slice(first);
    let mut sent = first.len();
    for chunk in chunks {
        sent += chunk.len();
        let f = if sent == block.len() {
            flag::END_HEADERS
        } else {
            0
        };
        head(dst, chunk.len(), kind::CONTINUATION, f, stream_id);
        dst.put_slice(chunk);
    }
}

/// One DATA frame (the caller splits by frame size and flow control).
pub fn data(dst: &mut BytesMut, stream_id: u32, payload: &[u8], end_stream: bool) {
    head(
        dst,
        payload.len(),
        kind::DATA,
        if end_stream { flag::END_STREAM } else { 0 },
        stream_id,
    );
    dst.put_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::super::{parse, parse_head, Frame, FrameError, HEAD_LEN};
    use super::*;
    use bytes::Bytes;

    fn roundtrip(b: &BytesMut) -> Vec<Frame> {
        let mut b = Bytes::copy_from_slice(b);
        let mut out = Vec::new();
        while !b.is_empty() {
            let h = parse_head(&b).unwrap();
            let f = b.split_to(HEAD_LEN + h.len as usize).slice(HEAD_LEN..);
            out.push(parse(h, f).unwrap());
        }
        out
    }

    fn raw(len: usize, kind: u8, flags: u8, id: u32, payload: &[u8]) -> Result<Frame, FrameError> {
        let mut b = BytesMut::new();
        head(&mut b, len, kind, flags, id);
        b.put_slice(payload);
        let h = parse_head(&b).unwrap();
        parse(h, Bytes::copy_from_slice(&b[HEAD_LEN..]))
    }

    #[test]
    fn encode_then_parse() {
        let mut b = BytesMut::new();
        settings(&mut b, &[(4, 1 << 20), (5, 16384)]);
        settings_ack(&mut b);
        ping_ack(&mut b, *b"12345678");
        window_update(&mut b, 3, 1000);
        rst_stream(&mut b, 5, ErrorCode::Cancel);
        goaway(&mut b, 7, ErrorCode::ProtocolError, b"why");
        data(&mut b, 1, b"abc", true);
        let f = roundtrip(&b);
        assert_eq!(
            f[0],
            Frame::Settings {
                ack: false,
                params: vec![(4, 1 << 20), (5, 16384)]
            }
        );
        assert_eq!(
            f[1],
            Frame::Settings {
                ack: true,
                params: vec![]
            }
        );
        assert_eq!(
            f[2],
            Frame::Ping {
                ack: true,
                payload: *b"12345678"
            }
        );
        assert_eq!(
            f[3],
            Frame::WindowUpdate {
                stream_id: 3,
                increment: 1000
            }
        );
        assert_eq!(
            f[4],
            Frame::RstStream {
                stream_id: 5,
                code: ErrorCode::Cancel
            }
        );
        assert_eq!(
            f[5],
            Frame::GoAway {
                last_stream_id: 7,
                code: ErrorCode::ProtocolError,
                debug: Bytes::from_static(b"why")
            }
        );
        assert_eq!(
            f[6],
            Frame::Data {
                stream_id: 1,
                end_stream: true,
                data: Bytes::from_static(b"abc"),
                flow_len: 3
            }
        );
    }

    #[test]
    fn headers_split_into_continuations() {
        let block: Vec<u8> = (0..40u8).collect();
        let mut b = BytesMut::new();
        headers(&mut b, 9, &block, true, 16);
        let f = roundtrip(&b);
        assert_eq!(f.len(), 3);
        assert!(
            matches!(&f[0], Frame::Headers { end_stream: true, end_headers: false, block, .. } if block.len() == 16)
        );
        assert!(matches!(
            &f[1],
            Frame::Continuation {
                end_headers: false,
                ..
            }
        ));
        assert!(
            matches!(&f[2], Frame::Continuation { end_headers: true, block, .. } if block.len() == 8)
        );
        let mut b = BytesMut::new();
        headers(&mut b, 9, &block[..16], false, 16);
        assert!(matches!(
            &roundtrip(&b)[0],
            Frame::Headers {
                end_headers: true,
                end_stream: false,
                ..
            }
        ));
    }

    #[test]
    fn padding_and_priority() {
        // DATA: pad length 2, "hi", 2 pad bytes.
        let f = raw(5, kind::DATA, flag::PADDED, 1, &[2, b'h', b'i', 0, 0]).unwrap();
        assert_eq!(
            f,
            Frame::Data {
                stream_id: 1,
                end_stream: false,
                data: Bytes::from_static(b"hi"),
                flow_len: 5
            }
        );
        assert!(matches!(
            raw(3, kind::DATA, flag::PADDED, 1, &[5, 0, 0]),
            Err(FrameError::Connection(ErrorCode::ProtocolError, _))
        ));
        let f = raw(
            7,
            kind::HEADERS,
            flag::PRIORITY | flag::END_HEADERS,
            3,
            &[0, 0, 0, 1, 16, 0x82, 0x86],
        )
        .unwrap();
        assert_eq!(
            f,
            Frame::Headers {
                stream_id: 3,
                end_stream: false,
                end_headers: true,
                depends_on: Some(1),
                block: Bytes::from_static(&[0x82, 0x86])
            }
        );
    }

    #[test]
    fn validation_errors() {
        use ErrorCode::*;
        let conn = |r: Result<Frame, FrameError>| match r {
            Err(FrameError::Connection(c, _)) => c,
            other => panic!("{other:?}"),
        };
        assert_eq!(conn(raw(7, kind::PING, 0, 0, &[0; 7])), FrameSizeError);
        assert_eq!(conn(raw(8, kind::PING, 0, 1, &[0; 8])), ProtocolError);
        assert_eq!(conn(raw(5, kind::SETTINGS, 0, 0, &[0; 5])), FrameSizeError);
        assert_eq!(
            conn(raw(6, kind::SETTINGS, flag::ACK, 0, &[0; 6])),
            FrameSizeError
        );
        assert_eq!(conn(raw(6, kind::SETTINGS, 0, 1, &[0; 6])), ProtocolError);
        assert_eq!(
            conn(raw(6, kind::SETTINGS, 0, 0, &[0, 2, 0, 0, 0, 2])),
            ProtocolError
        );
        assert_eq!(
            conn(raw(6, kind::SETTINGS, 0, 0, &[0, 4, 0x80, 0, 0, 0])),
            FlowControlError
        );
        assert_eq!(
            conn(raw(6, kind::SETTINGS, 0, 0, &[0, 5, 0, 0, 0, 1])),
            ProtocolError
        );
        assert_eq!(
            conn(raw(3, kind::WINDOW_UPDATE, 0, 0, &[0; 3])),
            FrameSizeError
        );
        assert_eq!(
            conn(raw(3, kind::RST_STREAM, 0, 1, &[0; 3])),
            FrameSizeError
        );
        assert_eq!(conn(raw(4, kind::RST_STREAM, 0, 0, &[0; 4])), ProtocolError);
        assert_eq!(conn(raw(1, kind::DATA, 0, 0, &[0])), ProtocolError);
        assert_eq!(conn(raw(1, kind::HEADERS, 0, 0, &[0])), ProtocolError);
        assert_eq!(conn(raw(4, kind::GOAWAY, 0, 0, &[0; 4])), FrameSizeError);
        assert_eq!(conn(raw(0, kind::CONTINUATION, 0, 0, &[])), ProtocolError);
        assert_eq!(
            conn(raw(2, kind::HEADERS, flag::PRIORITY, 1, &[0; 2])),
            FrameSizeError
        );
        assert!(matches!(
            raw(4, kind::PRIORITY, 0, 1, &[0; 4]),
            Err(FrameError::Stream(1, FrameSizeError, _))
        ));
        assert!(matches!(
            raw(0, 0x42, 0, 1, &[]),
            Ok(Frame::Unknown { kind: 0x42, .. })
        ));
        assert!(parse_head(&[0; 8]).is_none());
        assert_eq!(
            ErrorCode::from_u32(ErrorCode::EnhanceYourCalm.to_u32()),
            EnhanceYourCalm
        );
        assert_eq!(ErrorCode::from_u32(0x99), Unknown(0x99));
    }
}
