//! Fuzz target: the stateless HTTP/2 frame parser
//! (`protocol::http2::frame::{parse_head, parse}`) on a byte stream cut
//! into frames as the connection does. Checks: no panic; the parsed frame
//! never claims more bytes than its payload; frames the server also
//! encodes (SETTINGS, PING, RST_STREAM, GOAWAY, WINDOW_UPDATE, DATA,
//! HEADERS) survive encode -> parse unchanged.

#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use shardcache::protocol::http2::frame::{self, parse, parse_head, Frame, HEAD_LEN};

fuzz_target!(|data: &[u8]| {
    let mut rest = Bytes::copy_from_slice(data);
    while let Some(head) = parse_head(&rest) {
        // The connection refuses frames above SETTINGS_MAX_FRAME_SIZE
        // before parsing; the parser itself must cope with any length.
        let total = HEAD_LEN + head.len as usize;
        if rest.len() < total {
            break;
        }
        let payload = rest.slice(HEAD_LEN..total);
        rest = rest.slice(total..);
        let Ok(f) = parse(head, payload.clone()) else {
            continue;
        };
        check_sizes(&f, head.len as usize);
        if let Some(again) = reencode(&f) {
            assert_eq!(again, f, "encode -> parse changed the frame");
        }
    }
});

fn check_sizes(f: &Frame, len: usize) {
    match f {
        Frame::Data { data, flow_len, .. } => {
            assert_eq!(*flow_len as usize, len);
            assert!(data.len() <= len);
        }
        Frame::Headers { block, .. } | Frame::Continuation { block, .. } => {
            assert!(block.len() <= len)
        }
        Frame::Settings { params, .. } => assert_eq!(params.len() * 6, len),
        Frame::GoAway { debug, .. } => assert_eq!(debug.len() + 8, len),
        _ => {}
    }
}

/// The frame as our encoders write it, parsed back; None for kinds a
/// server never sends.
fn reencode(f: &Frame) -> Option<Frame> {
    let mut out = BytesMut::new();
    match f {
        Frame::Settings { ack: true, .. } => frame::settings_ack(&mut out),
        Frame::Settings { params, .. } => frame::settings(&mut out, params),
        Frame::Ping { ack, payload } => {
            if *ack {
                frame::ping_ack(&mut out, *payload)
            } else {
                frame::ping(&mut out, *payload)
            }
        }
        Frame::RstStream { stream_id, code } => frame::rst_stream(&mut out, *stream_id, *code),
        Frame::GoAway {
            last_stream_id,
            code,
            debug,
        } => frame::goaway(&mut out, *last_stream_id, *code, debug),
        Frame::WindowUpdate {
            stream_id,
            increment,
        } => frame::window_update(&mut out, *stream_id, *increment),
        Frame::Data {
            stream_id,
            end_stream,
            data,
            ..
        } => frame::data(&mut out, *stream_id, data, *end_stream),
        Frame::Headers {
            stream_id,
            end_stream,
            end_headers: true,
            depends_on: None,
            block,
        } if block.len() <= 16_384 => {
            frame::headers(&mut out, *stream_id, block, *end_stream, 16_384)
        }
        _ => return None,
    }
    let head = parse_head(&out).expect("an encoded frame has a head");
    let payload = out.freeze().slice(HEAD_LEN..);
    assert_eq!(payload.len(), head.len as usize, "encoded length field");
    let mut again = parse(head, payload).expect("an encoded frame parses");
    // Padding is not re-encoded: the DATA frame's flow length shrinks.
    if let (Frame::Data { flow_len, .. }, Frame::Data { flow_len: l, .. }) = (f, &mut again) {
        *l = *flow_len;
    }
    Some(again)
}
