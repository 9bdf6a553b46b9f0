//! A do-nothing `cache.Cache` server for measuring the load generator's own
//! ceiling: it answers every request with one canned Get hit (64-byte
//! value) without looking at the request, so it costs almost nothing per
//! request and the client becomes the bottleneck. Not a cache, not a test
//! fixture: `cargo run --release -p shardcache-loadtest --example null_server -- 127.0.0.1:7171`.
//!
//! Blocking std I/O, one thread per connection; big reads, one write per read.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let len = payload.len();
    out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
}

/// HPACK literal without indexing, new name, no Huffman (RFC 7541 §6.2.2):
/// needs no table, so the canned blocks never change.
fn literal(block: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    block.push(0x00);
    block.push(name.len() as u8);
    block.extend_from_slice(name);
    block.push(value.len() as u8);
    block.extend_from_slice(value);
}

struct Canned {
    headers: Vec<u8>,
    message: Vec<u8>,
    trailers: Vec<u8>,
}

fn canned() -> Canned {
    let mut headers = vec![0x88]; // static index 8: ":status: 200"
    literal(&mut headers, b"content-type", b"application/grpc");
    let mut trailers = Vec::new();
    literal(&mut trailers, b"grpc-status", b"0");
    // GetResponse { value: 64 bytes, found: true }: field 1 (len 64), field 2 = 1.
    let mut pb = vec![0x0a, 64];
    pb.extend_from_slice(&[b'v'; 64]);
    pb.extend_from_slice(&[0x10, 0x01]);
    let mut message = vec![0];
    message.extend_from_slice(&(pb.len() as u32).to_be_bytes());
    message.extend_from_slice(&pb);
    Canned {
        headers,
        message,
        trailers,
    }
}

fn serve(mut sock: TcpStream) -> std::io::Result<()> {
    sock.set_nodelay(true)?;
    let c = canned();
    let mut out = Vec::with_capacity(1 << 20);
    // Empty SETTINGS, and a large connection window for request bodies.
    frame(&mut out, 0x4, 0, 0, &[]);
    frame(&mut out, 0x8, 0, 0, &((1u32 << 30) - 65_535).to_be_bytes());
    sock.write_all(&out)?;
    let mut buf = vec![0u8; 1 << 20];
    let (mut have, mut pos) = (0usize, 0usize);
    let mut preface_left = PREFACE.len();
    let mut data_bytes = 0u64;
    loop {
        if pos > 0 {
            buf.copy_within(pos..have, 0);
            have -= pos;
            pos = 0;
        }
        if have == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        let n = sock.read(&mut buf[have..])?;
        if n == 0 {
            return Ok(());
        }
        have += n;
        if preface_left > 0 {
            let take = preface_left.min(have);
            pos += take;
            preface_left -= take;
        }
        out.clear();
        while have - pos >= 9 {
            let h = &buf[pos..pos + 9];
            let len = (h[0] as usize) << 16 | (h[1] as usize) << 8 | h[2] as usize;
            if have - pos - 9 < len {
                break;
            }
            let (kind, flags) = (h[3], h[4]);
            let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
            let payload = &buf[pos + 9..pos + 9 + len];
            match kind {
                0x0 => {
                    data_bytes += len as u64;
                    if flags & 0x1 != 0 {
                        frame(&mut out, 0x1, 0x4, stream, &c.headers);
                        frame(&mut out, 0x0, 0, stream, &c.message);
                        frame(&mut out, 0x1, 0x5, stream, &c.trailers);
                    }
                }
                0x4 if flags & 0x1 == 0 => frame(&mut out, 0x4, 0x1, 0, &[]),
                0x6 if flags & 0x1 == 0 => frame(&mut out, 0x6, 0x1, 0, payload),
                0x7 => return Ok(()),
                _ => {}
            }
            pos += 9 + len;
        }
        if data_bytes >= 1 << 20 {
            frame(&mut out, 0x8, 0, 0, &(data_bytes as u32).to_be_bytes());
            data_bytes = 0;
        }
        if !out.is_empty() {
            sock.write_all(&out)?;
        }
    }
}

fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7171".into());
    let listener = match TcpListener::bind(&addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("null_server: cannot bind {addr}: {e}");
            std::process::exit(1);
        }
    };
    eprintln!("null_server: listening on {addr}");
    for sock in listener.incoming().flatten() {
        std::thread::spawn(move || {
            let _ = serve(sock);
        });
    }
}
