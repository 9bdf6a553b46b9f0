//! Decoder and encoder tests: pipelining, every split point, chunked
//! bodies, each error status, keep-alive, 100-continue, large bodies, and a
//! seeded fuzz loop that only asks for no panic and consistent results.

use super::*;
use bytes::BytesMut;

fn limits() -> Limits {
    Limits {
        max_head: 1024,
        max_headers: 16,
        max_body: 1 << 20,
        max_post_body: 1 << 20,
    }
}

/// Feeds `input` in one piece; every request decoded, then the error if any.
fn decode_all(input: &[u8], limits: Limits) -> (Vec<Request>, Option<Http1Error>) {
    let mut d = Decoder::new(limits);
    let mut buf = BytesMut::from(input);
    let mut reqs = Vec::new();
    loop {
        match d.decode(&mut buf) {
            Ok(Some(r)) => reqs.push(r),
            Ok(None) => return (reqs, None),
            Err(e) => return (reqs, Some(e)),
        }
    }
}

/// Feeds `input` in pieces of `piece` bytes, decoding after each.
fn decode_pieces(input: &[u8], piece: usize, limits: Limits) -> Result<Vec<Request>, Http1Error> {
    let mut d = Decoder::new(limits);
    let mut buf = BytesMut::new();
    let mut reqs = Vec::new();
    for part in input.chunks(piece.max(1)) {
        buf.extend_from_slice(part);
        while let Some(r) = d.decode(&mut buf)? {
            reqs.push(r);
        }
    }
    assert!(buf.is_empty(), "{} bytes left over", buf.len());
    Ok(reqs)
}

fn one(input: &[u8]) -> Request {
    let (mut reqs, err) = decode_all(input, limits());
    assert_eq!(err, None);
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    reqs.remove(0)
}

fn error(input: &[u8], limits: Limits) -> Http1Error {
    match decode_all(input, limits) {
        (_, Some(e)) => e,
        (reqs, None) => panic!(
            "no error for {:?}: {reqs:?}",
            String::from_utf8_lossy(input)
        ),
    }
}

fn status(input: &[u8]) -> u16 {
    error(input, limits()).status
}

#[test]
fn simple_get() {
    let r = one(b"GET /v1/g/k?x=1 HTTP/1.1\r\nHost: a:1\r\nContent-Type: text/plain\r\n\r\n");
    assert_eq!(r.method, Method::Get);
    assert_eq!(r.target, "/v1/g/k?x=1");
    assert_eq!(r.version, 1);
    assert_eq!(r.host.as_deref(), Some("a:1"));
    assert_eq!(r.content_type.as_deref(), Some("text/plain"));
    assert!(r.keep_alive);
    assert!(r.body.is_empty());
}

#[test]
fn methods() {
    for (m, want) in [
        ("GET", Method::Get),
        ("HEAD", Method::Head),
        ("PUT", Method::Put),
        ("POST", Method::Post),
        ("DELETE", Method::Delete),
        ("PATCH", Method::Other("PATCH".into())),
        ("get", Method::Other("get".into())),
    ] {
        let r = one(format!("{m} / HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes());
        assert_eq!(r.method, want);
        assert_eq!(r.method.as_str(), m);
    }
}

#[test]
fn pipelined_requests_in_one_buffer() {
    let input = b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n\
        PUT /b HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello\
        POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
        DELETE /d HTTP/1.1\r\nHost: h\r\n\r\nGET /partial HT";
    let mut d = Decoder::new(limits());
    let mut buf = BytesMut::from(&input[..]);
    let mut got = Vec::new();
    while let Some(r) = d.decode(&mut buf).unwrap() {
        got.push((r.method, r.target, r.body));
    }
    assert_eq!(
        got,
        vec![
            (Method::Get, "/a".to_string(), Bytes::new()),
            (Method::Put, "/b".to_string(), Bytes::from_static(b"hello")),
            (Method::Post, "/c".to_string(), Bytes::from_static(b"abc")),
            (Method::Delete, "/d".to_string(), Bytes::new()),
        ]
    );
    assert_eq!(
        &buf[..],
        b"GET /partial HT",
        "the next request stays in the buffer"
    );
    assert!(d.is_between_requests());
}

const SPLIT_INPUT: &[u8] =
    b"PUT /v1/_/k HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\nhello world\
    POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n\
    5;name=value\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-Trailer: t\r\n\r\n\
    GET /last HTTP/1.0\r\n\r\n";

#[test]
fn split_at_every_byte_boundary() {
    let whole = decode_pieces(SPLIT_INPUT, SPLIT_INPUT.len(), limits()).unwrap();
    assert_eq!(whole.len(), 3);
    assert_eq!(&whole[0].body[..], b"hello world");
    assert_eq!(&whole[1].body[..], b"helloabcdefghijklmnopqrstuvwxyz");
    assert_eq!(whole[2].target, "/last");
    for cut in 1..SPLIT_INPUT.len() {
        let mut d = Decoder::new(limits());
        let mut buf = BytesMut::from(&SPLIT_INPUT[..cut]);
        let mut got = Vec::new();
        while let Some(r) = d.decode(&mut buf).unwrap() {
            got.push(r);
        }
        buf.extend_from_slice(&SPLIT_INPUT[cut..]);
        while let Some(r) = d.decode(&mut buf).unwrap() {
            got.push(r);
        }
        assert_eq!(got, whole, "split at {cut}");
    }
    assert_eq!(decode_pieces(SPLIT_INPUT, 1, limits()).unwrap(), whole);
    assert_eq!(decode_pieces(SPLIT_INPUT, 7, limits()).unwrap(), whole);
}

#[test]
fn chunked_bodies() {
    let body = |chunks: &str| {
        let input =
            format!("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n{chunks}");
        one(input.as_bytes()).body
    };
    assert_eq!(&body("0\r\n\r\n")[..], b"");
    assert_eq!(&body("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")[..], b"abcde");
    assert_eq!(&body("A\r\n0123456789\r\n0\r\n\r\n")[..], b"0123456789");
    assert_eq!(&body("a\r\n0123456789\r\n000\r\n\r\n")[..], b"0123456789");
    // extensions, with and without values, with whitespace before ';'
    assert_eq!(
        &body("3;x\r\nabc\r\n2 ; y=\"z\"\r\nde\r\n0;last\r\n\r\n")[..],
        b"abcde"
    );
    // trailers are skipped
    assert_eq!(&body("3\r\nabc\r\n0\r\nA: 1\r\nB: 2\r\n\r\n")[..], b"abc");
    // Transfer-Encoding is case-insensitive and may be a list of one
    let r = one(
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: , Chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n",
    );
    assert_eq!(&r.body[..], b"x");
}

#[test]
fn chunked_errors() {
    let chunked = |chunks: &str| {
        let input =
            format!("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n{chunks}");
        error(input.as_bytes(), limits())
    };
    for bad in [
        "x\r\n",                 // not hex
        "\r\n",                  // no digits
        "-1\r\n",                // sign
        "10000000000000000\r\n", // 17 hex digits: overflow
        "3\nabc\r\n",            // bare LF
        "3\r\nabcX\r\n",         // data longer than its size
        "3\r\nabc\n0\r\n\r\n",   // bare LF after data
        "3 x\r\nabc\r\n",        // junk after the size
        "3\r\r\nabc\r\n",        // bare CR
        "0\r\nA: 1\n\r\n",       // trailer with bare LF
    ] {
        assert_eq!(chunked(bad).status, 400, "{bad:?}");
    }
    // one chunk, or the sum, over max_body: 413 before the data arrives
    assert_eq!(chunked("100001\r\n").status, 413);
    let half = format!(
        "80000\r\n{}\r\n80000\r\n{}\r\n1\r\n",
        "a".repeat(0x80000),
        "b".repeat(0x80000)
    );
    assert_eq!(chunked(&half).status, 413);
    // chunk-size lines are bounded even while incomplete
    assert_eq!(chunked(&format!("1;{}", "e".repeat(5000))).status, 400);
    // so is the trailer section
    assert_eq!(
        chunked(&format!("0\r\nT: {}\r\n", "t".repeat(2000))).status,
        431
    );
    assert_eq!(
        chunked(&format!("0\r\nT: {}", "t".repeat(2000))).status,
        431
    );
}

#[test]
fn content_length_rules() {
    assert_eq!(
        &one(b"PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc")
            .body[..],
        b"abc"
    );
    assert_eq!(
        &one(b"PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 3, 3\r\n\r\nabc").body[..],
        b"abc"
    );
    assert_eq!(
        &one(b"PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n").body[..],
        b""
    );
    for bad in [
        "Content-Length: 3\r\nContent-Length: 4",
        "Content-Length: 3, 4",
        "Content-Length: abc",
        "Content-Length: -1",
        "Content-Length: +3",
        "Content-Length: 3,",
        "Content-Length: 0x10",
        "Content-Length: 99999999999999999999999",
        "Content-Length: 3\r\nTransfer-Encoding: chunked",
        "Transfer-Encoding: chunked\r\nContent-Length: 3",
        "Transfer-Encoding: chunked, chunked",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
        "Transfer-Encoding: ",
    ] {
        let input = format!("PUT / HTTP/1.1\r\nHost: h\r\n{bad}\r\n\r\nabc");
        let e = error(input.as_bytes(), limits());
        assert_eq!(e.status, 400, "{bad:?}: {e}");
    }
}

#[test]
fn error_statuses() {
    // 400: malformed heads, Host rules, HTTP/1.0 with Transfer-Encoding
    assert_eq!(status(b"GET\r\n\r\n"), 400);
    assert_eq!(status(b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n"), 400);
    assert_eq!(status(b"GET / HTTP/1.1\r\nHost: h\r\n folded\r\n\r\n"), 400);
    assert_eq!(status(b"GET / FOO/1.1\r\nHost: h\r\n\r\n"), 400);
    assert_eq!(status(b"GET / HTTP/1.1\r\n\r\n"), 400);
    assert_eq!(status(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), 400);
    assert_eq!(
        status(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        400
    );
    // 431: head over max_head, with or without its end; too many fields
    let long = format!("GET /{} HTTP/1.1\r\nHost: h\r\n\r\n", "a".repeat(2000));
    assert_eq!(status(long.as_bytes()), 431);
    assert_eq!(status(&long.as_bytes()[..1500]), 431);
    let many: String = (0..17).map(|i| format!("X-{i}: v\r\n")).collect();
    let e = error(
        format!("GET / HTTP/1.1\r\nHost: h\r\n{many}\r\n").as_bytes(),
        limits(),
    );
    assert_eq!(e.status, 431);
    assert_eq!(e.reason, "more than 16 header fields");
    // but a head over the limit that is garbage anyway is 400
    assert_eq!(status(&[b'\x01'; 1500]), 400);
    // 413: declared length over max_body, known from the head alone
    let e = error(
        b"PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 1048577\r\n\r\n",
        limits(),
    );
    assert_eq!(e.status, 413);
    assert_eq!(
        e.reason,
        "body of 1048577 bytes exceeds the limit of 1048576 bytes"
    );
    // 505: other HTTP versions, including the HTTP/2 preface
    assert_eq!(status(b"GET / HTTP/1.2\r\nHost: h\r\n\r\n"), 505);
    assert_eq!(status(b"GET / HTTP/2.0\r\nHost: h\r\n\r\n"), 505);
    assert_eq!(status(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), 505);
    // 501: transfer codings other than chunked
    let e = error(
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        limits(),
    );
    assert_eq!(e.status, 501);
    assert_eq!(
        e.reason,
        "transfer coding 'gzip' is not supported (only chunked)"
    );
    assert_eq!(
        status(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: identity\r\n\r\n"),
        501
    );
}

#[test]
fn errors_stick() {
    let mut d = Decoder::new(limits());
    let mut buf = BytesMut::from(&b"GET / HTTP/9.9\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n"[..]);
    let first = d.decode(&mut buf).unwrap_err();
    assert_eq!(first.status, 505);
    assert_eq!(d.decode(&mut buf).unwrap_err(), first);
    assert!(!d.is_between_requests());
}

#[test]
fn keep_alive_rules() {
    let ka = |version: &str, connection: Option<&str>| {
        let c = connection
            .map(|c| format!("Connection: {c}\r\n"))
            .unwrap_or_default();
        one(format!("GET / HTTP/1.{version}\r\nHost: h\r\n{c}\r\n").as_bytes()).keep_alive
    };
    assert!(ka("1", None));
    assert!(!ka("1", Some("close")));
    assert!(!ka("1", Some("Close")));
    assert!(!ka("1", Some("keep-alive, close")));
    assert!(ka("1", Some("keep-alive")));
    assert!(!ka("0", None));
    assert!(ka("0", Some("Keep-Alive")));
    assert!(ka("0", Some("TE, keep-alive")));
    assert!(!ka("0", Some("keep-alive, close")));
    // HTTP/1.0 needs no Host
    assert_eq!(one(b"GET / HTTP/1.0\r\n\r\n").version, 0);
}

#[test]
fn expect_continue() {
    let head = b"PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 2000\r\n\r\n";
    let mut d = Decoder::new(limits());
    let mut buf = BytesMut::from(&head[..]);
    assert_eq!(d.decode(&mut buf).unwrap(), None);
    assert!(d.take_expect_continue());
    assert!(!d.take_expect_continue(), "told once");
    buf.extend_from_slice(&[7u8; 1000]);
    assert_eq!(d.decode(&mut buf).unwrap(), None);
    assert!(!d.take_expect_continue());
    buf.extend_from_slice(&[7u8; 1000]);
    assert_eq!(d.decode(&mut buf).unwrap().unwrap().body.len(), 2000);

    // body already here, no body, HTTP/1.0: no 100 Continue
    let mut d = Decoder::new(limits());
    let mut buf = BytesMut::from(
        &b"PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nx"[..],
    );
    assert!(d.decode(&mut buf).unwrap().is_some());
    assert!(!d.take_expect_continue());
    let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n\r\n"[..]);
    assert!(d.decode(&mut buf).unwrap().is_some());
    assert!(!d.take_expect_continue());
    let mut buf =
        BytesMut::from(&b"PUT / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n"[..]);
    assert_eq!(d.decode(&mut buf).unwrap(), None);
    assert!(!d.take_expect_continue());

    // chunked counts as a body to come; too large is 413 instead
    let mut d = Decoder::new(limits());
    let mut buf = BytesMut::from(
        &b"PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\nTransfer-Encoding: chunked\r\n\r\n"
            [..],
    );
    assert_eq!(d.decode(&mut buf).unwrap(), None);
    assert!(d.take_expect_continue());
    let mut d = Decoder::new(limits());
    let mut buf = BytesMut::from(
        &b"PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 9999999\r\n\r\n"[..],
    );
    assert_eq!(d.decode(&mut buf).unwrap_err().status, 413);
    assert!(!d.take_expect_continue());
}

#[test]
fn leading_empty_lines_are_ignored() {
    let (reqs, err) = decode_all(
        b"\r\n\r\n\nGET / HTTP/1.1\r\nHost: h\r\n\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n",
        limits(),
    );
    assert_eq!(err, None);
    assert_eq!(reqs.len(), 2);
    // bare LF line endings are httparse's to accept, and it does
    assert_eq!(one(b"GET /lf HTTP/1.1\nHost: h\n\n").target, "/lf");
}

#[test]
fn large_body_in_many_pieces() {
    let n = 4 << 20;
    let limits = Limits {
        max_body: n,
        ..limits()
    };
    let body: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
    let mut input =
        format!("PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: {n}\r\n\r\n").into_bytes();
    input.extend_from_slice(&body);
    let reqs = decode_pieces(&input, 1000, limits).unwrap();
    assert_eq!(&reqs[0].body[..], &body[..]);

    let mut input = b"PUT / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for c in body.chunks(3000) {
        input.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        input.extend_from_slice(c);
        input.extend_from_slice(b"\r\n");
    }
    input.extend_from_slice(b"0\r\n\r\n");
    let reqs = decode_pieces(&input, 1000, limits).unwrap();
    assert_eq!(&reqs[0].body[..], &body[..]);
}

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn garbage_never_panics() {
    const ALPHABET: &[u8] = b"GETPOSHAD /v1:?=%\r\n\r\n0123456789abcdefABCDEF;,- \tHTTP/1.1\r\nContent-Length: Transfer-Encoding: chunked\r\n";
    let mut rng = Rng(0x5eed_cafe_f00d_d00d);
    let lim = Limits {
        max_head: 256,
        max_headers: 8,
        max_body: 512,
        max_post_body: 512,
    };
    for round in 0..4000 {
        let input: Vec<u8> = match round % 3 {
            // random bytes
            0 => (0..rng.below(600)).map(|_| rng.next() as u8).collect(),
            // random text from HTTP-ish bytes
            1 => (0..rng.below(600))
                .map(|_| ALPHABET[rng.below(ALPHABET.len())])
                .collect(),
            // a valid stream with a few bytes mutated, inserted or dropped
            _ => {
                let mut v = SPLIT_INPUT.to_vec();
                for _ in 0..1 + rng.below(4) {
                    let i = rng.below(v.len());
                    match rng.below(3) {
                        0 => v[i] = rng.next() as u8,
                        1 => v.insert(i, ALPHABET[rng.below(ALPHABET.len())]),
                        _ => {
                            v.remove(i);
                        }
                    }
                }
                v
            }
        };
        // The same input in one piece and in random pieces decodes the same.
        let (whole, whole_err) = decode_all(&input, lim);
        let mut d = Decoder::new(lim);
        let mut buf = BytesMut::new();
        let (mut got, mut err) = (Vec::new(), None);
        let mut rest = &input[..];
        'feed: while !rest.is_empty() {
            let (part, tail) = rest.split_at(1 + rng.below(rest.len().min(64)));
            rest = tail;
            buf.extend_from_slice(part);
            loop {
                match d.decode(&mut buf) {
                    Ok(Some(r)) => got.push(r),
                    Ok(None) => break,
                    Err(e) => {
                        err = Some(e);
                        break 'feed;
                    }
                }
            }
        }
        assert_eq!(got, whole, "round {round}");
        assert_eq!(
            err.map(|e| e.status),
            whole_err.map(|e| e.status),
            "round {round}"
        );
        for r in &got {
            assert!(r.body.len() <= lim.max_body);
        }
    }
}

#[test]
fn encodes_responses() {
    let mut out = Vec::new();
    encode_response(
        &mut out,
        200,
        &[("Content-Type", "text/plain")],
        b"hi",
        true,
    );
    assert_eq!(
        out,
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nhi"
    );
    out.clear();
    encode_response(&mut out, 404, &[], b"", false);
    assert_eq!(
        out,
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    out.clear();
    encode_response(&mut out, 204, &[], b"ignored", true);
    assert_eq!(
        out,
        b"HTTP/1.1 204 No Content\r\nConnection: keep-alive\r\n\r\n"
    );
    out.clear();
    encode_head_response(&mut out, 200, &[("A", "b")], 1234567890, true);
    assert_eq!(
        out,
        b"HTTP/1.1 200 OK\r\nA: b\r\nContent-Length: 1234567890\r\nConnection: keep-alive\r\n\r\n"
    );
    out.clear();
    encode_response(&mut out, 599, &[], b"x", true);
    assert!(out.starts_with(b"HTTP/1.1 599 \r\n"));
    out.clear();
    encode_error(
        &mut out,
        &Http1Error::new(431, "request head larger than 16384 bytes"),
    );
    assert_eq!(
        out,
        &b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: text/plain; charset=utf-8\r\n\
           Content-Length: 37\r\nConnection: close\r\n\r\nrequest head larger than 16384 bytes\n"[..]
    );
    assert_eq!(CONTINUE, b"HTTP/1.1 100 Continue\r\n\r\n");
    // the encoder's output is a response httparse accepts
    let mut out = Vec::new();
    encode_response(&mut out, 201, &[("X", "y")], b"body", false);
    let mut h = [httparse::EMPTY_HEADER; 8];
    let mut resp = httparse::Response::new(&mut h);
    let n = match resp.parse(&out).unwrap() {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => panic!("partial"),
    };
    assert_eq!((resp.code, resp.reason), (Some(201), Some("Created")));
    assert_eq!(&out[n..], b"body");
}

#[test]
fn post_bodies_have_their_own_limit() {
    let lim = Limits {
        max_body: 4,
        max_post_body: 10,
        ..limits()
    };
    let decode = |input: &str| {
        let mut d = Decoder::new(lim);
        d.decode(&mut BytesMut::from(input.as_bytes()))
    };
    let put = "PUT /v1/g/k HTTP/1.1\r\nHost: h\r\nContent-Length: 8\r\n\r\n12345678";
    assert_eq!(decode(put).unwrap_err().status, 413);
    let post = "POST /v1/getMany HTTP/1.1\r\nHost: h\r\nContent-Length: 8\r\n\r\n12345678";
    assert_eq!(&decode(post).unwrap().unwrap().body[..], b"12345678");
    let chunked = "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n12345678\r\n0\r\n\r\n";
    assert_eq!(decode(chunked).unwrap().unwrap().body.len(), 8);
    let too_long = "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nb\r\n";
    assert_eq!(decode(too_long).unwrap_err().status, 413);
    let chunked_put = chunked.replace("POST", "PUT");
    assert_eq!(decode(&chunked_put).unwrap_err().status, 413);
}
