//! Fuzz target: `protocol::http2::Connection::recv`, the server's HTTP/2
//! state machine, fed an arbitrary client byte stream cut into arbitrary
//! pieces, with a small application answering as the server would.
//!
//! Input: 8 control bytes, then the client's bytes (a raw capture with 8
//! zero bytes in front is a valid input):
//! - 0..4: chunking seed (0: the stream in one piece);
//! - 4: bits 0-3 max_concurrent_streams - 1; bit 4 the gRPC streaming
//!   paths are streaming; bits 5-6 initial window (65535, 1 MiB, 1024, 16);
//! - 5: max_header_list_size = 256 + 64 * b;
//! - 6: bit 0 answer unary requests, bit 1 answer streaming calls, bit 2
//!   begin a graceful shutdown halfway, bits 3-4 max body (default, 1024,
//!   16 KiB, 100), bit 5 connection window 65535 instead of 16 MiB;
//! - 7: header table size (4096, 0, 256, 65536 by bits 0-1).
//!
//! Checks, after every `recv`: the stream count stays within
//! MAX_CONCURRENT_STREAMS; every request body within max_body_size and
//! every header list within MAX_HEADER_LIST_SIZE; the output we owe the
//! client is at most twice what it sent plus what the application wrote
//! (no amplification); the heap held during the whole input is bounded by
//! the input and the settings (see `heap_bound`). And when the application
//! stays silent and flow control cannot differ, cutting the stream
//! differently yields the same events and the same verdict.

#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use shardcache::protocol::grpc::{is_streaming_path, OK_TRAILERS, RESPONSE_HEADERS};
use shardcache::protocol::http2::connection::no_streaming;
use shardcache::protocol::http2::{Connection, Event, ServerSettings};
use shardcache_fuzz::{chunks, peak_during, Control};
use std::time::Instant;

struct Plan {
    settings: ServerSettings,
    answer_unary: bool,
    answer_streaming: bool,
    shutdown: bool,
    /// Hold complete requests back (set_paused) until the input ends.
    paused: bool,
}

fn plan(c: &Control<'_>) -> Plan {
    let b4 = c.byte(4);
    let b6 = c.byte(6);
    let settings = ServerSettings {
        max_concurrent_streams: u32::from(b4 & 0x0f) + 1,
        initial_window_size: [65_535, 1 << 20, 1024, 16][usize::from(b4 >> 5 & 3)],
        connection_window_size: if b6 & 0x20 != 0 { 65_535 } else { 16 << 20 },
        max_frame_size: 16_384,
        max_header_list_size: 256 + 64 * u32::from(c.byte(5)),
        header_table_size: [4096, 0, 256, 65_536][usize::from(c.byte(7) & 3)],
        max_body_size: [(4 << 20) + 64 * 1024, 1024, 16 << 10, 100][usize::from(b6 >> 3 & 3)],
        body_budget: [usize::MAX, 4096, 300, 1 << 20][usize::from(c.byte(7) >> 2 & 3)],
        header_timeout: std::time::Duration::from_secs(10),
        is_streaming: if b4 & 0x10 != 0 {
            is_streaming_path
        } else {
            no_streaming
        },
    };
    Plan {
        settings,
        answer_unary: b6 & 1 != 0,
        answer_streaming: b6 & 2 != 0,
        shutdown: b6 & 4 != 0,
        paused: b6 & 0x40 != 0,
    }
}

/// What an event says, comparable across runs.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Request(u32, Vec<(Vec<u8>, Vec<u8>)>, Bytes),
    TooLarge(u32),
    Reset(u32, u32),
    Opened(u32, Vec<(Vec<u8>, Vec<u8>)>),
    Data(u32, Bytes, bool),
    Refused(u32),
    HeadersTooLarge(u32),
}

impl Seen {
    fn stream(&self) -> u32 {
        match *self {
            Seen::Request(id, ..)
            | Seen::TooLarge(id)
            | Seen::Reset(id, _)
            | Seen::Opened(id, _)
            | Seen::Data(id, ..)
            | Seen::Refused(id)
            | Seen::HeadersTooLarge(id) => id,
        }
    }
}

/// The outcome of one run: events in order, and the connection error.
struct Run {
    seen: Vec<Seen>,
    error: Option<u32>,
}

/// Feeds the client's bytes in `pieces`, answering as `p` says; asserts the bounds.
fn run(p: &Plan, pieces: &[&[u8]]) -> Run {
    let s = &p.settings;
    let now = Instant::now();
    let mut conn = Connection::new(s.clone());
    conn.set_paused(p.paused);
    let mut input = BytesMut::new();
    let mut events = Vec::new();
    let mut seen = Vec::new();
    let mut error = None;
    // Streams the compared events have named (a reset of one is compared).
    let mut known = std::collections::HashSet::new();
    let (mut received, mut owed, mut app) = (0usize, conn.output().len(), 0usize);
    conn.output().clear();
    for (i, piece) in pieces.iter().enumerate() {
        if p.shutdown && i == pieces.len() / 2 {
            conn.begin_shutdown();
        }
        input.extend_from_slice(piece);
        let before = input.len();
        let r = conn.recv(&mut input, now, &mut events);
        received += before - input.len();
        assert!(
            conn.active_streams() <= s.max_concurrent_streams as usize,
            "{} streams open, limit {}",
            conn.active_streams(),
            s.max_concurrent_streams
        );
        if p.paused && i + 1 == pieces.len() {
            conn.set_paused(false);
            conn.resume(&mut events, usize::MAX);
        }
        for e in events.drain(..) {
            if let Some(x) = check_and_answer(p, &mut conn, e, &mut app, &known) {
                known.insert(x.stream());
                seen.push(x);
            }
        }
        owed += conn.output().len();
        conn.output().clear();
        // 2x: the largest reply to the smallest frame is a HEADERS frame
        // that both names itself as its dependency and is refused (two
        // RST_STREAMs, 26 bytes, for 15); the 512 covers our SETTINGS and
        // a GOAWAY with its reason.
        assert!(
            owed <= 2 * received + app + 512,
            "owe the client {owed} bytes for {received} received (+{app} answered)"
        );
        if let Err(e) = r {
            assert!(conn.is_closed(), "failed but not closed");
            error = Some(e.code.to_u32());
            break;
        }
    }
    Run { seen, error }
}

fn fields(h: &shardcache::protocol::http2::HeaderList) -> Vec<(Vec<u8>, Vec<u8>)> {
    h.iter().map(|(n, v)| (n.to_vec(), v.to_vec())).collect()
}

/// Checks one event against the limits, answers it, and summarises it.
/// `app` counts what the answers may add to the output.
fn check_and_answer(
    p: &Plan,
    conn: &mut Connection,
    e: Event,
    app: &mut usize,
    known: &std::collections::HashSet<u32>,
) -> Option<Seen> {
    let s = &p.settings;
    let list_ok = |h: &shardcache::protocol::http2::HeaderList| {
        assert!(
            h.size() <= s.max_header_list_size as usize,
            "header list of {} over {}",
            h.size(),
            s.max_header_list_size
        )
    };
    // HEADERS + DATA heads + trailers of one answer, generously.
    const ANSWER: usize = 256;
    match e {
        Event::Request {
            stream_id,
            headers,
            body,
            ..
        } => {
            list_ok(&headers);
            assert!(
                body.len() <= s.max_body_size,
                "body of {} delivered",
                body.len()
            );
            if p.answer_unary {
                let reply = &body[..body.len().min(40_000)];
                *app += ANSWER + reply.len() + 9 * (reply.len() / 16_384 + 1);
                conn.send_response(stream_id, RESPONSE_HEADERS, reply, OK_TRAILERS);
            }
            Some(Seen::Request(stream_id, fields(&headers), body))
        }
        Event::RequestTooLarge { stream_id, headers } => {
            list_ok(&headers);
            if p.answer_unary {
                *app += ANSWER;
                conn.send_trailers_only(stream_id, RESPONSE_HEADERS);
            }
            Some(Seen::TooLarge(stream_id))
        }
        // The application hears of a reset only for a stream it knows; one
        // known only from RequestStarted (not compared, see below) may be
        // known or not depending on the chunking.
        Event::Reset { stream_id, code } => known
            .contains(&stream_id)
            .then(|| Seen::Reset(stream_id, code.to_u32())),
        // Which recv a body completes in depends on the chunking: not compared.
        Event::RequestStarted { .. } => None,
        Event::Refused { stream_id } => Some(Seen::Refused(stream_id)),
        Event::HeadersTooLarge { stream_id } => Some(Seen::HeadersTooLarge(stream_id)),
        Event::StreamOpened {
            stream_id, headers, ..
        } => {
            list_ok(&headers);
            if p.answer_streaming {
                *app += ANSWER;
                conn.send_headers(stream_id, RESPONSE_HEADERS);
            }
            Some(Seen::Opened(stream_id, fields(&headers)))
        }
        Event::StreamData {
            stream_id,
            data,
            end_stream,
        } => {
            if p.answer_streaming {
                *app += ANSWER + data.len() + 9 * (data.len() / 16_384 + 1);
                conn.send_data(stream_id, &data);
                if end_stream {
                    conn.send_trailers(stream_id, OK_TRAILERS);
                }
            }
            Some(Seen::Data(stream_id, data, end_stream))
        }
    }
}

/// The most heap one input may make the connection (and this harness)
/// hold: the input and its copies (the harness's buffer, bodies gathered
/// from DATA, replies queued by flow control: 16x), each stream's header
/// list and state (the list's buffer can double past the limit), one
/// header block being gathered (2 x its bound, 2 x 16 KiB + 1 KiB), the
/// HPACK tables, and 256 KiB of fixed costs (output buffer, maps).
fn heap_bound(s: &ServerSettings, input: usize) -> usize {
    let list = s.max_header_list_size as usize;
    let per_stream = 4 * list + 2048;
    16 * input
        + s.max_concurrent_streams as usize * per_stream
        + 2 * (2 * list + 1024)
        + 2 * s.header_table_size as usize
        + 256 * 1024
}

fuzz_target!(|data: &[u8]| {
    let (c, stream) = Control::split(data, 8);
    let p = plan(&c);
    let pieces = chunks(stream, c.u32(0));
    let (chunked, peak) = peak_during(|| run(&p, &pieces));
    let bound = heap_bound(&p.settings, stream.len());
    assert!(peak <= bound, "held {peak} bytes of heap, bound {bound}");

    // Chunking must not change what the application sees, as long as the
    // application does not interleave answers and the windows are larger
    // than the whole input (WINDOW_UPDATEs are batched per recv call).
    let silent = !p.answer_unary && !p.answer_streaming && !p.shutdown;
    let s = &p.settings;
    let window = s
        .initial_window_size
        .min(s.connection_window_size.max(65_535)) as usize;
    if silent && stream.len() < window && c.u32(0) != 0 {
        let whole = run(&p, &[stream]);
        assert_eq!(whole.error, chunked.error, "verdict depends on chunking");
        assert_eq!(whole.seen, chunked.seen, "events depend on chunking");
    }
});
