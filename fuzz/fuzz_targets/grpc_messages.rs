//! Fuzz target: gRPC message deframing (`protocol::grpc::unframe` for
//! unary bodies, `Deframer` for streaming ones, fed in arbitrary pieces)
//! and the prost decoding of every message type the node knows
//! (`shardcache::proto`: cache, health, reflection v1 and v1alpha), plus
//! the reflection service's answer, a batch call's items and
//! `grpc-timeout` parsing.
//!
//! Input: control byte 0 (max message: 4 MiB + 64 KiB, 16, 1024, 64 KiB
//! by bits 0-1), bytes 1..5 the chunking seed, then the body: the DATA
//! payloads of one call, joined.
//!
//! Checks: no panic; `unframe` returns exactly the prefixed message and
//! never one above the limit; the `Deframer` yields the same messages and
//! the same first error as a plain reading of the whole body, however it
//! is cut; every message that decodes re-encodes to at most twice its size
//! (+16: an unpacked repeated field is re-encoded packed, with a length)
//! and decodes back equal; a reflection answer is bounded by the request
//! and the embedded descriptors.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use prost::Message;
use shardcache::proto;
use shardcache::protocol::grpc::{self, batch, reflection, Code, Deframer, Method};
use shardcache_fuzz::{chunks, Control};
use std::time::Instant;

fn roundtrip<M: Message + Default + PartialEq + std::fmt::Debug>(msg: &[u8]) {
    let Ok(m) = M::decode(msg) else { return };
    let enc = m.encode_to_vec();
    assert!(
        enc.len() <= 2 * msg.len() + 16,
        "{} re-encodes {} bytes to {}",
        std::any::type_name::<M>(),
        msg.len(),
        enc.len()
    );
    let back = M::decode(enc.as_slice()).expect("re-encoded message decodes");
    assert_eq!(
        back,
        m,
        "{} changed in a round trip",
        std::any::type_name::<M>()
    );
}

/// Every message of one reflection package (v1 and v1alpha share them).
macro_rules! reflection_types {
    ($msg:expr, $pkg:ident) => {{
        use proto::reflection::$pkg as r;
        roundtrip::<r::ServerReflectionRequest>($msg);
        roundtrip::<r::ExtensionRequest>($msg);
        roundtrip::<r::ServerReflectionResponse>($msg);
        roundtrip::<r::FileDescriptorResponse>($msg);
        roundtrip::<r::ExtensionNumberResponse>($msg);
        roundtrip::<r::ListServiceResponse>($msg);
        roundtrip::<r::ServiceResponse>($msg);
        roundtrip::<r::ErrorResponse>($msg);
    }};
}

fn decode_all(msg: &[u8]) {
    roundtrip::<proto::Request>(msg);
    roundtrip::<proto::GetResponse>(msg);
    roundtrip::<proto::SetResponse>(msg);
    roundtrip::<proto::DeleteResponse>(msg);
    roundtrip::<proto::StatsRequest>(msg);
    roundtrip::<proto::ShardStats>(msg);
    roundtrip::<proto::StatsResponse>(msg);
    roundtrip::<proto::ManyRequest>(msg);
    roundtrip::<proto::GetManyResponse>(msg);
    roundtrip::<proto::SetManyResponse>(msg);
    roundtrip::<proto::DeleteManyResponse>(msg);
    // A batch call's items: never more than the limit, each either valid
    // or refused by the same rules as a single call.
    for method in [Method::GetMany, Method::SetMany, Method::DeleteMany] {
        if let Ok(items) = batch::decode_many(method, Bytes::copy_from_slice(msg), 8, 64) {
            assert!(items.len() <= 8);
            for op in items.iter().flatten() {
                assert_eq!(op.validate(64), Ok(()));
            }
        }
    }
    roundtrip::<proto::health::HealthCheckRequest>(msg);
    roundtrip::<proto::health::HealthCheckResponse>(msg);
    reflection_types!(msg, v1);
    reflection_types!(msg, v1alpha);
    // The reflection service answers what decodes; its answer echoes the
    // request and carries at most the whole descriptor set, twice over
    // (a file and its dependencies).
    if let Ok(resp) = reflection::respond(msg) {
        let bound = msg.len() + 2 * proto::DESCRIPTORS.len() + 4096;
        assert!(
            resp.encoded_len() <= bound,
            "reflection answer of {}",
            resp.encoded_len()
        );
    }
    // A message's bytes as a grpc-timeout value.
    if let Some(d) = grpc::parse_timeout(msg) {
        let now = Instant::now();
        assert!(grpc::answer_by(now, d) <= now + d);
    }
}

/// The whole body read plainly: the messages, then the first error's code.
fn plain(body: &[u8], max: usize) -> (Vec<Bytes>, Option<Code>) {
    let mut out = Vec::new();
    let mut rest = body;
    while rest.len() >= 5 {
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        let err = match rest[0] {
            0 if len > max => Some(Code::ResourceExhausted),
            0 => None,
            1 => Some(Code::Unimplemented),
            _ => Some(Code::InvalidArgument),
        };
        if err.is_some() {
            return (out, err);
        }
        if rest.len() - 5 < len {
            break;
        }
        out.push(Bytes::copy_from_slice(&rest[5..5 + len]));
        rest = &rest[5 + len..];
    }
    (out, None)
}

fuzz_target!(|data: &[u8]| {
    let (c, body) = Control::split(data, 5);
    let max = [(4 << 20) + 64 * 1024, 16, 1024, 64 << 10][usize::from(c.byte(0) & 3)];

    // Unary: exactly one message.
    match grpc::unframe(Bytes::copy_from_slice(body), max) {
        Ok(msg) => {
            assert!(msg.len() <= max);
            assert_eq!(msg.len() + 5, body.len());
            assert_eq!(&msg[..], &body[5..]);
            decode_all(&msg);
        }
        Err(st) => assert_ne!(st.code, Code::Ok),
    }

    // Streaming: the same body in arbitrary DATA payloads.
    let mut d = Deframer::new(max);
    let mut got = Vec::new();
    let mut error = None;
    'feed: for piece in chunks(body, c.u32(1)) {
        d.push(piece);
        loop {
            match d.next_message() {
                Ok(Some(m)) => {
                    assert!(m.len() <= max);
                    got.push(m);
                }
                Ok(None) => break,
                Err(st) => {
                    error = Some(st.code);
                    break 'feed;
                }
            }
        }
    }
    let (want, want_error) = plain(body, max);
    assert_eq!(got, want, "deframed messages");
    assert_eq!(error, want_error, "deframer error");
    for m in &got {
        decode_all(m);
    }
});
