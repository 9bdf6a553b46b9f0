//! Criterion benches for the HTTP/2 layer: parsing a stream of gRPC request
//! frames, and a whole request/response turn through the connection state
//! machine (decode, deliver, encode the reply).

use bytes::{BufMut, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use shardcache::protocol::http2::frame::{self, flag, kind, parse, parse_head, HEAD_LEN, PREFACE};
use shardcache::protocol::http2::{Connection, Event, HeaderField, ServerSettings};
use std::time::Instant;

/// A gRPC Get request: HEADERS (literal fields) + DATA with END_STREAM.
fn request(dst: &mut BytesMut, stream_id: u32) {
    let mut block = vec![0x83, 0x86];
    for (n, v) in [
        (":path", "/cache.Cache/Get"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ] {
        block.push(0);
        block.push(n.len() as u8);
        block.extend_from_slice(n.as_bytes());
        block.push(v.len() as u8);
        block.extend_from_slice(v.as_bytes());
    }
    frame::head(
        dst,
        block.len(),
        kind::HEADERS,
        flag::END_HEADERS,
        stream_id,
    );
    dst.put_slice(&block);
    let body = [
        0u8, 0, 0, 0, 18, 0x12, 16, b'b', b'e', b'n', b'c', b'h', b'-', b'k', b'e', b'y', b'-',
        b'0', b'0', b'0', b'0', b'6', b'4',
    ];
    frame::head(dst, body.len(), kind::DATA, flag::END_STREAM, stream_id);
    dst.put_slice(&body);
}

fn bench_parse(c: &mut Criterion) {
    let mut buf = BytesMut::new();
    for i in 0..256 {
        request(&mut buf, 1 + 2 * i);
    }
    let bytes = buf.freeze();
    let mut g = c.benchmark_group("frame");
    g.throughput(Throughput::Elements(512));
    g.bench_function("parse_512_frames", |b| {
        b.iter(|| {
            let mut rest = bytes.clone();
            let mut n = 0;
            while let Some(h) = parse_head(&rest) {
                let f = rest.split_to(HEAD_LEN + h.len as usize).slice(HEAD_LEN..);
                if parse(h, f).is_ok() {
                    n += 1;
                }
            }
            n
        })
    });
    g.finish();
}

fn bench_turn(c: &mut Criterion) {
    let headers = [
        HeaderField {
            name: b":status",
            value: b"200",
            index: true,
        },
        HeaderField {
            name: b"content-type",
            value: b"application/grpc",
            index: true,
        },
    ];
    let trailers = [HeaderField {
        name: b"grpc-status",
        value: b"0",
        index: true,
    }];
    let reply = [0u8; 73];
    let mut g = c.benchmark_group("connection");
    g.throughput(Throughput::Elements(16));
    g.bench_function("16_requests_and_replies", |b| {
        let mut conn = Connection::new(ServerSettings::default());
        let mut input = BytesMut::new();
        input.put_slice(PREFACE);
        frame::settings(&mut input, &[]);
        let mut events = Vec::new();
        let _ = conn.recv(&mut input, Instant::now(), &mut events);
        let mut next = 1u32;
        b.iter(|| {
            for _ in 0..16 {
                request(&mut input, next);
                next += 2;
            }
            let _ = conn.recv(&mut input, Instant::now(), &mut events);
            for ev in events.drain(..) {
                if let Event::Request { stream_id, .. } = ev {
                    conn.send_response(stream_id, &headers, &reply, &trailers);
                }
            }
            conn.output().clear();
        })
    });
    g.finish();
}

criterion_group!(benches, bench_parse, bench_turn);
criterion_main!(benches);
