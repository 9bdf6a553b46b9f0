//! Frame parsing: a 9-byte head, then a typed frame from head + payload.

use super::{flag, kind, setting, ErrorCode, Frame, FrameError, HEAD_LEN, MAX_WINDOW};
use bytes::{Buf, Bytes};

/// The fixed 9-byte header of every frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHead {
    pub len: u32,
    pub kind: u8,
    pub flags: u8,
    pub stream_id: u32,
}

/// Reads a frame head from the first 9 bytes; None when fewer are present.
pub fn parse_head(b: &[u8]) -> Option<FrameHead> {
    let h = b.get(..HEAD_LEN)?;
    Some(FrameHead {
        len: u32::from_be_bytes([0, h[0], h[1], h[2]]),
        kind: h[3],
        flags: h[4],
        // The reserved bit is ignored on receipt.
        stream_id: u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff,
    })
}

use FrameError::{Connection as Conn, Stream};

/// Parses one frame's payload (exactly `head.len` bytes).
pub fn parse(head: FrameHead, mut p: Bytes) -> Result<Frame, FrameError> {
    let id = head.stream_id;
    let has = |f: u8| head.flags & f != 0;
    match head.kind {
        kind::DATA => {
            if id == 0 {
                return Err(Conn(ErrorCode::ProtocolError, "DATA on stream 0"));
            }
            let flow_len = p.len() as u32;
            let data = strip_padding(has(flag::PADDED), p)?;
            Ok(Frame::Data {
                stream_id: id,
                end_stream: has(flag::END_STREAM),
                data,
                flow_len,
            })
        }
        kind::HEADERS => {
            if id == 0 {
                return Err(Conn(ErrorCode::ProtocolError, "HEADERS on stream 0"));
            }
            let mut block = strip_padding(has(flag::PADDED), p)?;
            let depends_on = if has(flag::PRIORITY) {
                if block.len() < 5 {
                    return Err(Conn(
                        ErrorCode::FrameSizeError,
                        "HEADERS too short for its priority fields",
                    ));
                }
                let dep = block.get_u32() & 0x7fff_ffff;
                block.advance(1);
                Some(dep)
            } else {
                None
            };
            Ok(Frame::Headers {
                stream_id: id,
                end_stream: has(flag::END_STREAM),
                end_headers: has(flag::END_HEADERS),
                depends_on,
                block,
            })
        }
        kind::PRIORITY => {
            if id == 0 {
                return Err(Conn(ErrorCode::ProtocolError, "PRIORITY on stream 0"));
            }
            if p.len() != 5 {
                return Err(Stream(
                    id,
                    ErrorCode::FrameSizeError,
                    "PRIORITY is not 5 bytes",
                ));
            }
            Ok(Frame::Priority {
                stream_id: id,
                depends_on: p.get_u32() & 0x7fff_ffff,
            })
        }
        kind::RST_STREAM => {
            if id == 0 {
                return Err(Conn(ErrorCode::ProtocolError, "RST_STREAM on stream 0"));
            }
            if p.len() != 4 {
                return Err(Conn(ErrorCode::FrameSizeError, "RST_STREAM is not 4 bytes"));
            }
            Ok(Frame::RstStream {
                stream_id: id,
                code: ErrorCode::from_u32(p.get_u32()),
            })
        }
        kind::SETTINGS => {
            if id != 0 {
                return Err(Conn(ErrorCode::ProtocolError, "SETTINGS on a stream"));
            }
            if has(flag::ACK) {
                if !p.is_empty() {
                    return Err(Conn(
                        ErrorCode::FrameSizeError,
                        "SETTINGS ACK with a payload",
                    ));
                }
                return Ok(Frame::Settings {
                    ack: true,
                    params: Vec::new(),
                });
            }
            if p.len() % 6 != 0 {
                return Err(Conn(
                    ErrorCode::FrameSizeError,
                    "SETTINGS length is not a multiple of 6",
                ));
            }
            let mut params = Vec::with_capacity(p.len() / 6);
            while p.has_remaining() {
                let (k, v) = (p.get_u16(), p.get_u32());
                match k {
                    setting::ENABLE_PUSH if v > 1 => {
                        return Err(Conn(
                            ErrorCode::ProtocolError,
                            "SETTINGS_ENABLE_PUSH is not 0 or 1",
                        ))
                    }
                    setting::INITIAL_WINDOW_SIZE if i64::from(v) > MAX_WINDOW => {
                        return Err(Conn(
                            ErrorCode::FlowControlError,
                            "SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1",
                        ))
                    }
                    setting::MAX_FRAME_SIZE if !(16_384..=16_777_215).contains(&v) => {
                        return Err(Conn(
                            ErrorCode::ProtocolError,
                            "SETTINGS_MAX_FRAME_SIZE out of range",
                        ))
                    }
                    _ => params.push((k, v)),
                }
            }
            Ok(Frame::Settings { ack: false, params })
        }
        kind::PUSH_PROMISE => Ok(Frame::PushPromise { stream_id: id }),
        kind::PING => {
            if id != 0 {
                return Err(Conn(ErrorCode::ProtocolError, "PING on a stream"));
            }
            let payload: [u8; 8] = p
                .as_ref()
                .try_into()
                .map_err(|_| Conn(ErrorCode::FrameSizeError, "PING is not 8 bytes"))?;
            Ok(Frame::Ping {
                ack: has(flag::ACK),
                payload,
            })
        }
        kind::GOAWAY => {
            if id != 0 {
                return Err(Conn(ErrorCode::ProtocolError, "GOAWAY on a stream"));
            }
            if p.len() < 8 {
                return Err(Conn(
                    ErrorCode::FrameSizeError,
                    "GOAWAY shorter than 8 bytes",
                ));
            }
            let last_stream_id = p.get_u32() & 0x7fff_ffff;
            let code = ErrorCode::from_u32(p.get_u32());
            Ok(Frame::GoAway {
                last_stream_id,
                code,
                debug: p,
            })
        }
        kind::WINDOW_UPDATE => {
            if p.len() != 4 {
                return Err(Conn(
                    ErrorCode::FrameSizeError,
                    "WINDOW_UPDATE is not 4 bytes",
                ));
            }
            Ok(Frame::WindowUpdate {
                stream_id: id,
                increment: p.get_u32() & 0x7fff_ffff,
            })
        }
        kind::CONTINUATION => {
            if id == 0 {
                return Err(Conn(ErrorCode::ProtocolError, "CONTINUATION on stream 0"));
            }
            Ok(Frame::Continuation {
                stream_id: id,
                end_headers: has(flag::END_HEADERS),
                block: p,
            })
        }
        other => Ok(Frame::Unknown {
            kind: other,
            stream_id: id,
        }),
    }
}

fn strip_padding(padded: bool, mut p: Bytes) -> Result<Bytes, FrameError> {
    if !padded {
        return Ok(p);
    }
    if p.is_empty() {
        return Err(Conn(
            ErrorCode::FrameSizeError,
            "padded frame without a pad length",
        ));
    }
    let pad = usize::from(p.get_u8());
    if pad > p.len() {
        return Err(Conn(
            ErrorCode::ProtocolError,
            "padding longer than the frame",
        ));
    }
    p.truncate(p.len() - pad);
    Ok(p)
}
