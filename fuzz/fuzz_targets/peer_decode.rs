//! Fuzz target: the node-to-node protocol decoders of `protocol::peer`
//! (`decode_request`, what a shard reads from another node, and
//! `decode_reply`, what the forwarding side reads back), fed in arbitrary
//! pieces.
//!
//! Input: control byte 0 (bit 0: replies instead of requests; bits 1-2
//! max frame 1 MiB/16/256/4 MiB + 1 KiB), bytes 1..5 the chunking seed,
//! then the stream (after the magic, which the server checks first).
//!
//! Checks: no panic; a decoded request re-encodes to exactly the bytes it
//! was read from; a decoded reply re-encodes to bytes that decode to the
//! same reply, with nothing left over; the same frames come out however
//! the stream is cut; the heap held is bounded by max_frame and the input.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use shardcache::protocol::peer::{
    decode_reply, decode_request, encode_auth, encode_invalidate, encode_reply, encode_request,
    encode_ring_request, Inbound, PeerReply,
};
use shardcache_fuzz::{chunks, peak_during, Control};

#[derive(Debug, PartialEq)]
enum Item {
    Request(Inbound),
    Reply(u32, PeerReply),
}

/// Decodes `pieces` as one connection; the frames, and whether it failed.
fn run(replies: bool, max_frame: usize, pieces: &[&[u8]]) -> (Vec<Item>, bool) {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for piece in pieces {
        buf.extend_from_slice(piece);
        loop {
            let before = buf.clone();
            let item = if replies {
                decode_reply(&mut buf, max_frame).map(|r| r.map(|(id, r)| Item::Reply(id, r)))
            } else {
                decode_request(&mut buf, max_frame).map(|r| r.map(Item::Request))
            };
            match item {
                Ok(Some(item)) => {
                    let used = &before[..before.len() - buf.len()];
                    assert!(
                        used.len() <= 4 + max_frame,
                        "a frame of {} bytes",
                        used.len()
                    );
                    check_roundtrip(&item, used);
                    out.push(item);
                }
                Ok(None) => break,
                Err(_) => return (out, true),
            }
        }
    }
    (out, false)
}

fn check_roundtrip(item: &Item, used: &[u8]) {
    let mut enc = Vec::new();
    match item {
        Item::Request(Inbound::Call(req)) => {
            encode_request(&mut enc, req);
            assert_eq!(enc, used, "request does not re-encode to its bytes");
        }
        Item::Request(Inbound::Invalidate { group, key }) => {
            encode_invalidate(&mut enc, group, key);
            // The id of an invalidation is not kept: compare the rest.
            assert_eq!(enc[..4], used[..4], "invalidate length");
            assert_eq!(enc[8..], used[8..], "invalidate body");
        }
        Item::Request(Inbound::Auth { mac }) => {
            encode_auth(&mut enc, mac);
            // The id of an AUTH is not kept: compare the rest.
            assert_eq!(enc[..4], used[..4], "auth length");
            assert_eq!(enc[8..], used[8..], "auth body");
        }
        Item::Request(Inbound::Ring { id }) => {
            encode_ring_request(&mut enc, *id);
            assert_eq!(enc, used, "ring request does not re-encode to its bytes");
        }
        Item::Reply(id, reply) => {
            encode_reply(&mut enc, *id, reply);
            let mut b = BytesMut::from(&enc[..]);
            let back = decode_reply(&mut b, usize::MAX).expect("an encoded reply decodes");
            assert_eq!(
                back.as_ref(),
                Some(&(*id, reply.clone())),
                "reply round trip"
            );
            assert!(
                b.is_empty(),
                "{} bytes left after an encoded reply",
                b.len()
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let (c, stream) = Control::split(data, 5);
    let replies = c.byte(0) & 1 != 0;
    let max_frame = [1 << 20, 16, 256, (4 << 20) + 1024][usize::from(c.byte(0) >> 1 & 3)];
    let pieces = chunks(stream, c.u32(1));
    let (cut, peak) = peak_during(|| run(replies, max_frame, &pieces));
    // A frame head makes the decoder reserve the whole frame (at most
    // max_frame); the rest is the input and its copies.
    let bound = 2 * (max_frame + 4) + 16 * stream.len() + 64 * 1024;
    assert!(peak <= bound, "held {peak} bytes, bound {bound}");
    let whole = run(replies, max_frame, &[stream]);
    assert_eq!(cut, whole, "frames depend on chunking");
});
