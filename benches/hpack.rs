//! HPACK benchmarks: decoding the request header blocks a gRPC client
//! sends (first request on a connection, steady state, Huffman-heavy) and
//! encoding our response headers + trailers.
//!
//! The request blocks are built with our own encoder so they have the
//! shape real clients produce: the first one carries literals with
//! incremental indexing, later ones are almost all one-byte indices.

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use shardcache::protocol::http2::hpack::{Decoder, Encoder, HeaderField, HeaderList};

const TABLE_SIZE: usize = 4096;
const MAX_LIST: usize = 16 << 10;

fn field<'a>(name: &'a str, value: &'a str, index: bool) -> HeaderField<'a> {
    HeaderField {
        name: name.as_bytes(),
        value: value.as_bytes(),
        index,
    }
}

/// What tonic / grpc-go send for a unary call (`grpc-timeout` varies per
/// call, so clients do not index it).
fn grpc_request() -> Vec<HeaderField<'static>> {
    vec![
        field(":method", "POST", true),
        field(":scheme", "http", true),
        field(":path", "/shardcache.v1.Cache/Get", true),
        field(":authority", "cache-7.shardcache.internal:50051", true),
        field("content-type", "application/grpc", true),
        field("user-agent", "grpc-go/1.64.0", true),
        field("te", "trailers", true),
        field("grpc-accept-encoding", "identity,deflate,gzip", true),
        field("grpc-timeout", "99985u", false),
    ]
}

/// The same request with tracing and auth metadata, all literals Huffman
/// coded, as h2-based clients send them.
fn grpc_request_with_metadata() -> Vec<HeaderField<'static>> {
    let mut fields = grpc_request();
    fields.extend([
        field(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            false,
        ),
        field(
            "x-request-id",
            "7f3c2a9e-51d4-4c8b-9e2f-0b6d8a1c3e57",
            false,
        ),
        field(
            "authorization",
            "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJzaGFyZGNhY2hlIn0.dGVzdHNpZ25hdHVyZQ",
            false,
        ),
    ]);
    fields
}

fn response_headers() -> Vec<HeaderField<'static>> {
    vec![
        field(":status", "200", true),
        field("content-type", "application/grpc", true),
        field("grpc-accept-encoding", "identity,deflate,gzip", true),
    ]
}

fn response_trailers() -> Vec<HeaderField<'static>> {
    vec![field("grpc-status", "0", true)]
}

fn encode(encoder: &mut Encoder, fields: &[HeaderField<'_>]) -> Vec<u8> {
    let mut dst = BytesMut::new();
    encoder.encode(fields, &mut dst);
    dst.to_vec()
}

fn bench_decode(c: &mut Criterion) {
    let mut client = Encoder::new();
    let first = encode(&mut client, &grpc_request());
    let steady = encode(&mut client, &grpc_request());
    let mut huffman_client = Encoder::new();
    huffman_client.set_huffman(true);
    let huffman_first = encode(&mut huffman_client, &grpc_request_with_metadata());

    let mut group = c.benchmark_group("hpack_decode");
    let mut list = HeaderList::new();

    // A new connection: empty table, every literal inserted.
    group.throughput(Throughput::Bytes(first.len() as u64));
    group.bench_function(format!("first_request_{}B", first.len()), |b| {
        b.iter(|| {
            let mut decoder = Decoder::new(TABLE_SIZE);
            list.clear();
            decoder
                .decode(black_box(&first), MAX_LIST, &mut list)
                .unwrap();
            black_box(&list);
        })
    });

    // Every later request on the connection: indices plus one literal.
    let mut decoder = Decoder::new(TABLE_SIZE);
    decoder.decode(&first, MAX_LIST, &mut list).unwrap();
    group.throughput(Throughput::Bytes(steady.len() as u64));
    group.bench_function(format!("steady_state_{}B", steady.len()), |b| {
        b.iter(|| {
            list.clear();
            decoder
                .decode(black_box(&steady), MAX_LIST, &mut list)
                .unwrap();
            black_box(&list);
        })
    });

    // Steady state with every field already indexed (no per-call
    // grpc-timeout): the block is nothing but one-byte indices.
    let indexed: Vec<HeaderField<'static>> =
        grpc_request().into_iter().filter(|f| f.index).collect();
    let mut indexed_client = Encoder::new();
    let indexed_first = encode(&mut indexed_client, &indexed);
    let indexed_steady = encode(&mut indexed_client, &indexed);
    assert_eq!(indexed_steady.len(), indexed.len());
    let mut decoder = Decoder::new(TABLE_SIZE);
    list.clear();
    decoder.decode(&indexed_first, MAX_LIST, &mut list).unwrap();
    group.throughput(Throughput::Bytes(indexed_steady.len() as u64));
    group.bench_function(
        format!("steady_state_fully_indexed_{}B", indexed_steady.len()),
        |b| {
            b.iter(|| {
                list.clear();
                decoder
                    .decode(black_box(&indexed_steady), MAX_LIST, &mut list)
                    .unwrap();
                black_box(&list);
            })
        },
    );

    group.throughput(Throughput::Bytes(huffman_first.len() as u64));
    group.bench_function(
        format!("huffman_first_request_{}B", huffman_first.len()),
        |b| {
            b.iter(|| {
                let mut decoder = Decoder::new(TABLE_SIZE);
                list.clear();
                decoder
                    .decode(black_box(&huffman_first), MAX_LIST, &mut list)
                    .unwrap();
                black_box(&list);
            })
        },
    );
    group.finish();
}

fn bench_encode(c: &mut Criterion) {
    let headers = response_headers();
    let trailers = response_trailers();
    let mut group = c.benchmark_group("hpack_encode");
    let mut dst = BytesMut::with_capacity(1024);

    // Steady state: the connection has already answered once.
    let mut encoder = Encoder::new();
    encoder.encode(&headers, &mut dst);
    encoder.encode(&trailers, &mut dst);
    group.bench_function("response_headers_and_trailers", |b| {
        b.iter(|| {
            dst.clear();
            encoder.encode(black_box(&headers), &mut dst);
            encoder.encode(black_box(&trailers), &mut dst);
            black_box(&dst);
        })
    });

    // The first response on a connection, plain and Huffman-coded.
    for huffman in [false, true] {
        let name = if huffman {
            "first_response_huffman"
        } else {
            "first_response_plain"
        };
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut encoder = Encoder::new();
                encoder.set_huffman(huffman);
                dst.clear();
                encoder.encode(black_box(&headers), &mut dst);
                encoder.encode(black_box(&trailers), &mut dst);
                black_box(&dst);
            })
        });
    }
    group.finish();

    // What each choice costs the client: decoding our first response.
    let mut group = c.benchmark_group("hpack_client_decode_first_response");
    let mut list = HeaderList::new();
    for huffman in [false, true] {
        let mut encoder = Encoder::new();
        encoder.set_huffman(huffman);
        let block = encode(&mut encoder, &headers);
        let name = format!(
            "{}_{}B",
            if huffman { "huffman" } else { "plain" },
            block.len()
        );
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut decoder = Decoder::new(TABLE_SIZE);
                list.clear();
                decoder
                    .decode(black_box(&block), MAX_LIST, &mut list)
                    .unwrap();
                black_box(&list);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_decode, bench_encode);
criterion_main!(benches);
