//! Fuzz target: the HTTP/1.1 decoders of `protocol::http1`, the gateway's
//! request `Decoder` and the origin client's `ResponseDecoder`, fed one
//! connection's bytes in arbitrary pieces.
//!
//! Input: control byte 0 (limits: bits 0-1 max head 16 KiB/64/256/1024,
//! bits 2-3 max headers 64/1/4/128, bits 4-5 max body 4 MiB/0/16/1024),
//! bytes 1..5 the chunking seed, then the bytes.
//!
//! Checks: no panic; no body above max_body and no request target above
//! max_head; after an error the request decoder repeats it (as its docs
//! promise); the requests
//! (responses) and the verdict do not depend on how the bytes were cut;
//! the heap held is bounded by the limits and the input (a declared
//! Content-Length is reserved up front, so max_body counts once).

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use shardcache::protocol::http1::{
    Decoder, Http1Error, Limits, Request, Response, ResponseDecoder,
};
use shardcache_fuzz::{chunks, peak_during, Control};

/// Runs one decoder over `pieces` as they arrive: what it decoded, and
/// the error that ended it. `body` is each item's body, for the limit;
/// `repeats`: the decoder promises to return its error again (the request
/// decoder does; the origin client drops its connection instead).
fn feed<T>(
    pieces: &[&[u8]],
    max_body: usize,
    repeats: bool,
    mut decode: impl FnMut(&mut BytesMut) -> Result<Option<T>, Http1Error>,
    body: impl Fn(&T) -> usize,
) -> (Vec<T>, Option<Http1Error>) {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for piece in pieces {
        buf.extend_from_slice(piece);
        loop {
            match decode(&mut buf) {
                Ok(Some(r)) => {
                    assert!(body(&r) <= max_body, "body of {}", body(&r));
                    out.push(r);
                }
                Ok(None) => break,
                Err(e) => {
                    if repeats {
                        let again = decode(&mut buf).err();
                        assert_eq!(again, Some(e.clone()), "error not repeated");
                    }
                    return (out, Some(e));
                }
            }
        }
    }
    (out, None)
}

fn requests(limits: Limits, pieces: &[&[u8]]) -> (Vec<Request>, Option<Http1Error>) {
    let mut d = Decoder::new(limits);
    let r = feed(
        pieces,
        limits.max_body.max(limits.max_post_body),
        true,
        |b| d.decode(b),
        |r| r.body.len(),
    );
    for req in &r.0 {
        assert!(
            req.body.len() <= limits.max_body_for(&req.method),
            "{:?} body of {}",
            req.method,
            req.body.len()
        );
        assert!(
            req.target.len() <= limits.max_head,
            "target of {}",
            req.target.len()
        );
    }
    r
}

fn responses(limits: Limits, pieces: &[&[u8]]) -> (Vec<Response>, Option<Http1Error>) {
    let mut d = ResponseDecoder::new(limits);
    let (mut out, err) = feed(
        pieces,
        limits.max_body,
        false,
        |b| d.decode(b),
        |r| r.body.len(),
    );
    if err.is_some() {
        return (out, err);
    }
    // The origin closed the connection.
    match d.finish() {
        Ok(r) => {
            assert!(r.body.len() <= limits.max_body, "body of {}", r.body.len());
            out.push(r);
            (out, None)
        }
        Err(e) => (out, Some(e)),
    }
}

fuzz_target!(|data: &[u8]| {
    let (c, bytes) = Control::split(data, 5);
    let b = usize::from(c.byte(0));
    let limits = Limits {
        max_head: [16 << 10, 64, 256, 1024][b & 3],
        max_headers: [64, 1, 4, 128][b >> 2 & 3],
        max_body: [4 << 20, 0, 16, 1024][b >> 4 & 3],
        max_post_body: [4 << 20, 0, 16, 1024][b >> 6 & 3],
    };
    let pieces = chunks(bytes, c.u32(1));
    let max_body = limits.max_body.max(limits.max_post_body);
    let bound = 2 * max_body + 4 * limits.max_head + 16 * bytes.len() + 64 * 1024;

    let (cut, peak) = peak_during(|| requests(limits, &pieces));
    assert!(peak <= bound, "requests: held {peak} bytes, bound {bound}");
    let whole = requests(limits, &[bytes]);
    assert_eq!(cut, whole, "requests depend on chunking");

    let (cut, peak) = peak_during(|| responses(limits, &pieces));
    assert!(peak <= bound, "responses: held {peak} bytes, bound {bound}");
    let whole = responses(limits, &[bytes]);
    assert_eq!(cut, whole, "responses depend on chunking");
});
