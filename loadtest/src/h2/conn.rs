//! The client side of one HTTP/2 connection as a state machine: it queues
//! output bytes (preface, settings, requests, acks, window updates) and
//! consumes input bytes, handing each stream's headers and data to a
//! caller-supplied [`StreamState`] and reporting how each stream ended. The
//! caller owns the socket, which keeps this testable without one and lets
//! the caller batch many requests into one write.

use super::frame::{self, FrameHeader, HEADER_LEN};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use shardcache::protocol::http2::hpack::{Decoder, Encoder, HeaderField, HeaderList, HpackError};
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

/// Per-stream receive window we advertise: big enough that no response of
/// the contract (values up to a few MiB) ever waits for a WINDOW_UPDATE.
pub const STREAM_WINDOW: u32 = 16 << 20;
/// Connection receive window we give the server.
pub const CONN_WINDOW: u32 = 1 << 30;
/// Largest frame we accept: large frames mean fewer headers to parse for big values.
pub const RECV_MAX_FRAME: u32 = 1 << 20;
/// Largest decoded response header list we accept.
pub const MAX_HEADER_LIST: usize = 64 << 10;
/// Largest header block we buffer across CONTINUATION frames.
const MAX_HEADER_BLOCK: usize = 1 << 20;
/// Highest client stream id; past it the connection must be replaced.
pub const MAX_STREAM_ID: u32 = (1 << 31) - 1;

/// What a stream does with the response it receives.
pub trait StreamState {
    /// A decoded header block: the response headers, or the trailers.
    fn on_headers(&mut self, headers: &HeaderList, end_stream: bool);
    /// A DATA payload (padding removed).
    fn on_data(&mut self, data: &[u8]);
}

/// How a stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// The server closed the stream normally (END_STREAM received).
    Closed,
    /// The server reset the stream with this error code.
    Reset(u32),
    /// The server's GOAWAY (with this error code) says it did not process it.
    GoAway(u32),
}

/// A connection-level failure: the connection is unusable afterwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum H2Error {
    Protocol(&'static str),
    FrameSize(usize),
    FlowControl,
    Compression(HpackError),
}

impl std::fmt::Display for H2Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            H2Error::Protocol(m) => write!(f, "HTTP/2 protocol error: {m}"),
            H2Error::FrameSize(n) => write!(f, "HTTP/2 frame of {n} bytes exceeds our limit"),
            H2Error::FlowControl => write!(f, "HTTP/2 flow-control window overflow"),
            H2Error::Compression(e) => write!(f, "HPACK error: {e}"),
        }
    }
}

impl std::error::Error for H2Error {}

/// Stream ids are small odd integers; a multiply-xorshift spreads them over
/// the table for a fraction of SipHash's cost.
#[derive(Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u32(&mut self, i: u32) {
        let x = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = x ^ (x >> 29);
    }
}

struct Stream<S> {
    state: S,
    send_window: i64,
    /// Request body bytes still to send (flow control held them back).
    pending: Bytes,
    local_done: bool,
    recv_unacked: u32,
}

struct Continuation {
    stream: u32,
    end_stream: bool,
    block: Vec<u8>,
}

/// One client HTTP/2 connection. `S` is the caller's per-stream state.
pub struct ClientConn<S> {
    out: BytesMut,
    enc: Encoder,
    dec: Decoder,
    headers: HeaderList,
    scratch: BytesMut,
    streams: HashMap<u32, Stream<S>, BuildHasherDefault<IdHasher>>,
    /// Streams with body bytes held back by flow control, in send order.
    blocked: VecDeque<u32>,
    next_stream_id: u32,
    peer_settings_seen: bool,
    peer_max_concurrent: u32,
    peer_initial_window: u32,
    peer_max_frame: u32,
    peer_header_table: u32,
    send_conn_window: i64,
    recv_conn_unacked: u32,
    cont: Option<Continuation>,
    goaway: Option<(u32, u32)>,
    /// Encoded header blocks by caller-chosen slot, kept only while they
    /// consist of single-byte indexed references: such a block changes
    /// neither side's dynamic table, so resending its bytes is exactly what
    /// the encoder would produce. Any block that could change a table
    /// (a literal, a size update) clears the cache.
    header_cache: Vec<Option<Vec<u8>>>,
}

impl<S: StreamState> Default for ClientConn<S> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: StreamState> ClientConn<S> {
    /// [`ClientConn::new`], with header strings Huffman-coded or not.
    pub fn with_huffman(huffman: bool) -> Self {
        let mut c = Self::new();
        c.enc.set_huffman(huffman);
        c
    }

    /// A new connection with the preface, our SETTINGS and the connection
    /// window increase already queued for writing.
    pub fn new() -> Self {
        let mut out = BytesMut::with_capacity(64 << 10);
        out.put_slice(frame::PREFACE);
        frame::write_settings(
            &mut out,
            &[
                (frame::SETTINGS_ENABLE_PUSH, 0),
                (frame::SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WINDOW),
                (frame::SETTINGS_MAX_FRAME_SIZE, RECV_MAX_FRAME),
                (frame::SETTINGS_MAX_HEADER_LIST_SIZE, MAX_HEADER_LIST as u32),
            ],
        );
        frame::write_window_update(&mut out, 0, CONN_WINDOW - frame::DEFAULT_WINDOW);
        ClientConn {
            out,
            enc: Encoder::new(),
            dec: Decoder::new(4096),
            headers: HeaderList::new(),
            scratch: BytesMut::with_capacity(256),
            streams: HashMap::default(),
            blocked: VecDeque::new(),
            next_stream_id: 1,
            peer_settings_seen: false,
            peer_max_concurrent: u32::MAX,
            peer_initial_window: frame::DEFAULT_WINDOW,
            peer_max_frame: frame::DEFAULT_MAX_FRAME,
            peer_header_table: 4096,
            send_conn_window: frame::DEFAULT_WINDOW as i64,
            recv_conn_unacked: 0,
            cont: None,
            goaway: None,
            header_cache: Vec::new(),
        }
    }

    /// Bytes waiting to be written to the socket; the caller writes and
    /// advances them.
    pub fn out(&mut self) -> &mut BytesMut {
        &mut self.out
    }

    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    /// Streams opened and not yet ended.
    pub fn open_streams(&self) -> usize {
        self.streams.len()
    }

    /// The server's SETTINGS arrived (we wait for them before the first
    /// request so that its MAX_CONCURRENT_STREAMS is known).
    pub fn is_ready(&self) -> bool {
        self.peer_settings_seen
    }

    /// No new stream may be opened ever again on this connection (GOAWAY
    /// received or stream ids used up): drain it and open another.
    pub fn is_retired(&self) -> bool {
        self.goaway.is_some() || self.next_stream_id > MAX_STREAM_ID
    }

    /// The GOAWAY received, as (last stream id, error code).
    pub fn goaway(&self) -> Option<(u32, u32)> {
        self.goaway
    }

    /// A new stream may be opened now.
    pub fn can_open(&self) -> bool {
        self.peer_settings_seen
            && !self.is_retired()
            && (self.streams.len() as u64) < self.peer_max_concurrent as u64
    }

    /// The server's MAX_CONCURRENT_STREAMS (u32::MAX when unlimited).
    pub fn peer_max_concurrent(&self) -> u32 {
        self.peer_max_concurrent
    }

    /// Queues a request: HEADERS (+CONTINUATION) without END_STREAM, then a
    /// body of `body_len` bytes produced by `write_body`, ending the stream.
    /// The body goes out at once when the send windows allow, otherwise as
    /// window updates arrive. Returns the stream id. The caller checks
    /// [`Self::can_open`] first. `cache_slot` names this exact field list
    /// (the caller promises the same slot always means the same fields) so
    /// that its encoding can be reused once it is stable.
    pub fn send_request(
        &mut self,
        fields: &[HeaderField<'_>],
        cache_slot: Option<usize>,
        body_len: usize,
        write_body: impl FnOnce(&mut BytesMut),
        state: S,
    ) -> u32 {
        let id = self.next_stream_id;
        self.next_stream_id += 2;
        let max_frame = self.peer_max_frame as usize;
        let cached = match cache_slot {
            Some(slot) => match self.header_cache.get(slot) {
                Some(Some(block)) => {
                    frame::write_header_block(&mut self.out, id, block, false, max_frame);
                    true
                }
                _ => false,
            },
            None => false,
        };
        if !cached {
            self.scratch.clear();
            self.enc.encode(fields, &mut self.scratch);
            frame::write_header_block(&mut self.out, id, &self.scratch, false, max_frame);
            if self.scratch.iter().all(|&b| b & 0x80 != 0) {
                if let Some(slot) = cache_slot {
                    if self.header_cache.len() <= slot {
                        self.header_cache.resize(slot + 1, None);
                    }
                    self.header_cache[slot] = Some(self.scratch.to_vec());
                }
            } else {
                self.header_cache.iter_mut().for_each(|c| *c = None);
            }
        }
        let mut stream = Stream {
            state,
            send_window: self.peer_initial_window as i64,
            pending: Bytes::new(),
            local_done: false,
            recv_unacked: 0,
        };
        let fits = body_len as i64 <= self.send_conn_window
            && body_len as i64 <= stream.send_window
            && body_len <= self.peer_max_frame as usize;
        if fits && self.blocked.is_empty() {
            // Fast path: encode the body straight into the output buffer.
            frame::write_header(
                &mut self.out,
                body_len,
                frame::DATA,
                frame::FLAG_END_STREAM,
                id,
            );
            let before = self.out.len();
            write_body(&mut self.out);
            debug_assert_eq!(self.out.len() - before, body_len);
            self.send_conn_window -= body_len as i64;
            stream.send_window -= body_len as i64;
            stream.local_done = true;
            self.streams.insert(id, stream);
        } else {
            let mut body = BytesMut::with_capacity(body_len);
            write_body(&mut body);
            stream.pending = body.freeze();
            self.streams.insert(id, stream);
            self.blocked.push_back(id);
            self.flush_blocked();
        }
        id
    }

    /// Sends as much held-back body data as the windows allow, oldest stream first.
    fn flush_blocked(&mut self) {
        let max_frame = self.peer_max_frame as i64;
        for _ in 0..self.blocked.len() {
            if self.send_conn_window <= 0 {
                break;
            }
            let Some(id) = self.blocked.pop_front() else {
                break;
            };
            let Some(st) = self.streams.get_mut(&id) else {
                continue;
            };
            if st.local_done {
                continue;
            }
            loop {
                let n = (st.pending.len() as i64)
                    .min(st.send_window)
                    .min(self.send_conn_window)
                    .min(max_frame)
                    .max(0) as usize;
                if n == 0 && !st.pending.is_empty() {
                    break;
                }
                let chunk = st.pending.split_to(n);
                let end = st.pending.is_empty();
                let flags = if end { frame::FLAG_END_STREAM } else { 0 };
                frame::write_header(&mut self.out, n, frame::DATA, flags, id);
                self.out.put_slice(&chunk);
                st.send_window -= n as i64;
                self.send_conn_window -= n as i64;
                if end {
                    st.local_done = true;
                    break;
                }
            }
            if !st.local_done {
                self.blocked.push_back(id);
            }
        }
    }

    /// Consumes the complete frames at the start of `buf`, calling `on_end`
    /// for every stream that ends, and returns how many bytes were consumed
    /// (a trailing partial frame is left for the next call). Replies the
    /// protocol requires (SETTINGS ACK, PING ACK, WINDOW_UPDATE) are queued
    /// in the output. An error leaves the connection unusable; the caller
    /// then ends the remaining streams with [`Self::drain`].
    pub fn recv(
        &mut self,
        buf: &[u8],
        on_end: &mut impl FnMut(S, StreamEnd),
    ) -> Result<usize, H2Error> {
        let mut pos = 0;
        while buf.len() - pos >= HEADER_LEN {
            let h = FrameHeader::parse(&buf[pos..]);
            if h.len > RECV_MAX_FRAME as usize {
                return Err(H2Error::FrameSize(h.len));
            }
            if buf.len() - pos - HEADER_LEN < h.len {
                break;
            }
            let payload = &buf[pos + HEADER_LEN..pos + HEADER_LEN + h.len];
            pos += HEADER_LEN + h.len;
            self.frame(h, payload, on_end)?;
        }
        Ok(pos)
    }

    fn frame(
        &mut self,
        h: FrameHeader,
        payload: &[u8],
        on_end: &mut impl FnMut(S, StreamEnd),
    ) -> Result<(), H2Error> {
        if self.cont.is_some() && h.kind != frame::CONTINUATION {
            return Err(H2Error::Protocol("frame interleaved in a header block"));
        }
        match h.kind {
            frame::DATA => self.on_data(h, payload, on_end),
            frame::HEADERS => self.on_headers(h, payload, on_end),
            frame::CONTINUATION => self.on_continuation(h, payload, on_end),
            frame::RST_STREAM => {
                if payload.len() != 4 || h.stream == 0 {
                    return Err(H2Error::Protocol("malformed RST_STREAM"));
                }
                let code = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
                if let Some(st) = self.streams.remove(&h.stream) {
                    on_end(st.state, StreamEnd::Reset(code));
                }
                Ok(())
            }
            frame::SETTINGS => self.on_settings(h, payload),
            frame::PING => {
                if payload.len() != 8 || h.stream != 0 {
                    return Err(H2Error::Protocol("malformed PING"));
                }
                if h.flags & frame::FLAG_ACK == 0 {
                    frame::write_ping_ack(&mut self.out, payload);
                }
                Ok(())
            }
            frame::GOAWAY => {
                if payload.len() < 8 || h.stream != 0 {
                    return Err(H2Error::Protocol("malformed GOAWAY"));
                }
                let last = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]])
                    & MAX_STREAM_ID;
                let code = u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]);
                self.goaway = Some((last, code));
                let unprocessed: Vec<u32> = self
                    .streams
                    .keys()
                    .copied()
                    .filter(|&id| id > last)
                    .collect();
                for id in unprocessed {
                    if let Some(st) = self.streams.remove(&id) {
                        on_end(st.state, StreamEnd::GoAway(code));
                    }
                }
                Ok(())
            }
            frame::WINDOW_UPDATE => self.on_window_update(h, payload),
            frame::PUSH_PROMISE => Err(H2Error::Protocol("PUSH_PROMISE although push is disabled")),
            // PRIORITY and unknown frame types are ignored (RFC 9113 §5.5).
            _ => Ok(()),
        }
    }

    fn on_data(
        &mut self,
        h: FrameHeader,
        payload: &[u8],
        on_end: &mut impl FnMut(S, StreamEnd),
    ) -> Result<(), H2Error> {
        if h.stream == 0 {
            return Err(H2Error::Protocol("DATA on stream 0"));
        }
        // Flow control counts the whole payload, padding included, even for
        // streams we no longer track.
        self.recv_conn_unacked += h.len as u32;
        if self.recv_conn_unacked >= CONN_WINDOW / 2 {
            frame::write_window_update(&mut self.out, 0, self.recv_conn_unacked);
            self.recv_conn_unacked = 0;
        }
        let data = strip_padding(h.flags, payload)?;
        let end_stream = h.flags & frame::FLAG_END_STREAM != 0;
        let Some(st) = self.streams.get_mut(&h.stream) else {
            return Ok(());
        };
        st.state.on_data(data);
        if end_stream {
            self.finish(h.stream, on_end);
        } else {
            st.recv_unacked += h.len as u32;
            if st.recv_unacked >= STREAM_WINDOW / 2 {
                frame::write_window_update(&mut self.out, h.stream, st.recv_unacked);
                st.recv_unacked = 0;
            }
        }
        Ok(())
    }

    fn on_headers(
        &mut self,
        h: FrameHeader,
        payload: &[u8],
        on_end: &mut impl FnMut(S, StreamEnd),
    ) -> Result<(), H2Error> {
        if h.stream == 0 {
            return Err(H2Error::Protocol("HEADERS on stream 0"));
        }
        let mut block = strip_padding(h.flags, payload)?;
        if h.flags & frame::FLAG_PRIORITY != 0 {
            if block.len() < 5 {
                return Err(H2Error::Protocol("HEADERS too short for its priority"));
            }
            block = &block[5..];
        }
        let end_stream = h.flags & frame::FLAG_END_STREAM != 0;
        if h.flags & frame::FLAG_END_HEADERS != 0 {
            self.header_block(h.stream, block, end_stream, on_end)
        } else {
            self.cont = Some(Continuation {
                stream: h.stream,
                end_stream,
                block: block.to_vec(),
            });
            Ok(())
        }
    }

    fn on_continuation(
        &mut self,
        h: FrameHeader,
        payload: &[u8],
        on_end: &mut impl FnMut(S, StreamEnd),
    ) -> Result<(), H2Error> {
        let Some(mut cont) = self.cont.take() else {
            return Err(H2Error::Protocol("CONTINUATION without a header block"));
        };
        if cont.stream != h.stream {
            return Err(H2Error::Protocol("CONTINUATION on another stream"));
        }
        cont.block.extend_from_slice(payload);
        if cont.block.len() > MAX_HEADER_BLOCK {
            return Err(H2Error::Protocol("header block too large"));
        }
        if h.flags & frame::FLAG_END_HEADERS != 0 {
            self.header_block(cont.stream, &cont.block, cont.end_stream, on_end)
        } else {
            self.cont = Some(cont);
            Ok(())
        }
    }

    fn header_block(
        &mut self,
        stream: u32,
        block: &[u8],
        end_stream: bool,
        on_end: &mut impl FnMut(S, StreamEnd),
    ) -> Result<(), H2Error> {
        // Decode even for streams we no longer track, to keep the HPACK
        // dynamic table in sync with the server's.
        self.headers.clear();
        self.dec
            .decode(block, MAX_HEADER_LIST, &mut self.headers)
            .map_err(H2Error::Compression)?;
        if let Some(st) = self.streams.get_mut(&stream) {
            st.state.on_headers(&self.headers, end_stream);
            if end_stream {
                self.finish(stream, on_end);
            }
        }
        Ok(())
    }

    /// The server ended `stream`.
    fn finish(&mut self, stream: u32, on_end: &mut impl FnMut(S, StreamEnd)) {
        if let Some(st) = self.streams.remove(&stream) {
            if !st.local_done {
                // The server answered before reading our whole body (e.g. an
                // early error): stop sending it (RFC 9113 §8.1).
                frame::write_rst_stream(&mut self.out, stream, frame::NO_ERROR);
            }
            on_end(st.state, StreamEnd::Closed);
        }
    }

    fn on_settings(&mut self, h: FrameHeader, payload: &[u8]) -> Result<(), H2Error> {
        if h.stream != 0 {
            return Err(H2Error::Protocol("SETTINGS on a stream"));
        }
        if h.flags & frame::FLAG_ACK != 0 {
            return if payload.is_empty() {
                Ok(())
            } else {
                Err(H2Error::Protocol("SETTINGS ACK with a payload"))
            };
        }
        if payload.len() % 6 != 0 {
            return Err(H2Error::Protocol("SETTINGS length not a multiple of 6"));
        }
        let mut p = payload;
        while p.has_remaining() {
            let id = p.get_u16();
            let v = p.get_u32();
            match id {
                frame::SETTINGS_HEADER_TABLE_SIZE if v != self.peer_header_table => {
                    self.peer_header_table = v;
                    self.enc.set_max_table_size(v as usize);
                    // The next block starts with a size update.
                    self.header_cache.clear();
                }
                frame::SETTINGS_MAX_CONCURRENT_STREAMS => self.peer_max_concurrent = v,
                frame::SETTINGS_INITIAL_WINDOW_SIZE => {
                    if v > frame::MAX_WINDOW {
                        return Err(H2Error::FlowControl);
                    }
                    let delta = v as i64 - self.peer_initial_window as i64;
                    self.peer_initial_window = v;
                    for st in self.streams.values_mut() {
                        st.send_window += delta;
                        if st.send_window > frame::MAX_WINDOW as i64 {
                            return Err(H2Error::FlowControl);
                        }
                    }
                }
                frame::SETTINGS_MAX_FRAME_SIZE => {
                    if !(frame::DEFAULT_MAX_FRAME..=frame::MAX_FRAME_LIMIT).contains(&v) {
                        return Err(H2Error::Protocol("invalid SETTINGS_MAX_FRAME_SIZE"));
                    }
                    self.peer_max_frame = v;
                }
                // ENABLE_PUSH, MAX_HEADER_LIST_SIZE and unknown ids need nothing from us.
                _ => {}
            }
        }
        frame::write_settings_ack(&mut self.out);
        self.peer_settings_seen = true;
        if !self.blocked.is_empty() {
            self.flush_blocked();
        }
        Ok(())
    }

    fn on_window_update(&mut self, h: FrameHeader, payload: &[u8]) -> Result<(), H2Error> {
        if payload.len() != 4 {
            return Err(H2Error::Protocol("malformed WINDOW_UPDATE"));
        }
        let inc = (u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]])
            & frame::MAX_WINDOW) as i64;
        if h.stream == 0 {
            if inc == 0 {
                return Err(H2Error::Protocol("WINDOW_UPDATE of 0"));
            }
            self.send_conn_window += inc;
            if self.send_conn_window > frame::MAX_WINDOW as i64 {
                return Err(H2Error::FlowControl);
            }
        } else if let Some(st) = self.streams.get_mut(&h.stream) {
            // A zero increment is a stream error; we simply ignore it.
            st.send_window += inc;
        }
        if !self.blocked.is_empty() {
            self.flush_blocked();
        }
        Ok(())
    }

    /// Ends every open stream (the connection failed or is being dropped),
    /// yielding their states.
    pub fn drain(&mut self) -> impl Iterator<Item = S> + '_ {
        self.blocked.clear();
        self.streams.drain().map(|(_, st)| st.state)
    }

    /// Queues a GOAWAY(NO_ERROR) before an orderly close.
    pub fn close(&mut self) {
        // The last stream id names server-initiated streams: we accept none.
        frame::write_goaway(&mut self.out, 0, frame::NO_ERROR);
    }
}

fn strip_padding(flags: u8, payload: &[u8]) -> Result<&[u8], H2Error> {
    if flags & frame::FLAG_PADDED == 0 {
        return Ok(payload);
    }
    let Some((&pad, rest)) = payload.split_first() else {
        return Err(H2Error::Protocol("padded frame without a pad length"));
    };
    if pad as usize > rest.len() {
        return Err(H2Error::Protocol("padding longer than the frame"));
    }
    Ok(&rest[..rest.len() - pad as usize])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records what the connection hands to a stream.
    #[derive(Debug, Default)]
    struct Rec {
        tag: u32,
        headers: Vec<Vec<(Vec<u8>, Vec<u8>)>>,
        data: Vec<u8>,
    }

    impl StreamState for Rec {
        fn on_headers(&mut self, headers: &HeaderList, _end: bool) {
            self.headers.push(
                headers
                    .iter()
                    .map(|(n, v)| (n.to_vec(), v.to_vec()))
                    .collect(),
            );
        }
        fn on_data(&mut self, data: &[u8]) {
            self.data.extend_from_slice(data);
        }
    }

    /// Splits `bytes` into frames.
    fn frames(mut bytes: &[u8]) -> Vec<(FrameHeader, Vec<u8>)> {
        let mut v = vec![];
        while bytes.len() >= HEADER_LEN {
            let h = FrameHeader::parse(bytes);
            v.push((h, bytes[HEADER_LEN..HEADER_LEN + h.len].to_vec()));
            bytes = &bytes[HEADER_LEN + h.len..];
        }
        assert!(bytes.is_empty());
        v
    }

    fn settings(entries: &[(u16, u32)]) -> BytesMut {
        let mut b = BytesMut::new();
        frame::write_settings(&mut b, entries);
        b
    }

    fn take_out(c: &mut ClientConn<Rec>) -> Vec<(FrameHeader, Vec<u8>)> {
        let out = c.out().split();
        frames(&out)
    }

    fn ready_conn(entries: &[(u16, u32)]) -> ClientConn<Rec> {
        let mut c = ClientConn::<Rec>::new();
        let out = c.out().split();
        assert!(out.starts_with(frame::PREFACE));
        let fr = frames(&out[frame::PREFACE.len()..]);
        assert_eq!(fr[0].0.kind, frame::SETTINGS);
        assert_eq!(fr[1].0.kind, frame::WINDOW_UPDATE);
        assert!(!c.is_ready());
        let s = settings(entries);
        let n = c.recv(&s, &mut |_, _| panic!("no stream")).unwrap();
        assert_eq!(n, s.len());
        assert!(c.is_ready());
        let acks = take_out(&mut c);
        assert_eq!(acks.len(), 1);
        assert_eq!(
            (acks[0].0.kind, acks[0].0.flags),
            (frame::SETTINGS, frame::FLAG_ACK)
        );
        c
    }

    fn request(c: &mut ClientConn<Rec>, tag: u32, body: &[u8]) -> u32 {
        let fields = [
            HeaderField {
                name: b":method",
                value: b"POST",
                index: true,
            },
            HeaderField {
                name: b":path",
                value: b"/x",
                index: true,
            },
        ];
        c.send_request(
            &fields,
            Some(0),
            body.len(),
            |b| b.put_slice(body),
            Rec {
                tag,
                ..Default::default()
            },
        )
    }

    /// A server header block, encoded with the shared HPACK encoder.
    fn server_headers(
        enc: &mut Encoder,
        stream: u32,
        fields: &[(&[u8], &[u8])],
        end_stream: bool,
    ) -> BytesMut {
        let f: Vec<HeaderField<'_>> = fields
            .iter()
            .map(|&(name, value)| HeaderField {
                name,
                value,
                index: true,
            })
            .collect();
        let mut block = BytesMut::new();
        enc.encode(&f, &mut block);
        let mut out = BytesMut::new();
        frame::write_header_block(&mut out, stream, &block, end_stream, 16_384);
        out
    }

    #[test]
    fn repeated_requests_decode_identically_with_cached_blocks() {
        let mut c = ready_conn(&[]);
        let get = [
            HeaderField {
                name: b":method",
                value: b"POST",
                index: true,
            },
            HeaderField {
                name: b":path",
                value: b"/cache.Cache/Get",
                index: true,
            },
            HeaderField {
                name: b"te",
                value: b"trailers",
                index: true,
            },
        ];
        let set = [
            HeaderField {
                name: b":method",
                value: b"POST",
                index: true,
            },
            HeaderField {
                name: b":path",
                value: b"/cache.Cache/Set",
                index: true,
            },
            HeaderField {
                name: b"te",
                value: b"trailers",
                index: true,
            },
        ];
        // Interleave the two field lists; the server's decoder must see the
        // right fields every time, whether a block was encoded or reused.
        let mut expect = vec![];
        for i in 0..20 {
            let (fields, slot) = if i % 3 == 0 { (&set, 1) } else { (&get, 0) };
            c.send_request(fields, Some(slot), 1, |b| b.put_u8(0), Rec::default());
            expect.push(
                fields
                    .iter()
                    .map(|f| (f.name.to_vec(), f.value.to_vec()))
                    .collect::<Vec<_>>(),
            );
        }
        let mut server = Decoder::new(4096);
        let mut got = vec![];
        for (h, p) in take_out(&mut c) {
            if h.kind == frame::HEADERS {
                let mut list = HeaderList::new();
                server.decode(&p, MAX_HEADER_LIST, &mut list).unwrap();
                got.push(
                    list.iter()
                        .map(|(n, v)| (n.to_vec(), v.to_vec()))
                        .collect::<Vec<_>>(),
                );
            }
        }
        assert_eq!(got, expect);
    }

    #[test]
    fn ping_is_acked_and_partial_frames_wait() {
        let mut c = ready_conn(&[]);
        let mut ping = BytesMut::new();
        frame::write_header(&mut ping, 8, frame::PING, 0, 0);
        ping.put_slice(b"12345678");
        // A partial frame is not consumed.
        assert_eq!(c.recv(&ping[..10], &mut |_, _| {}).unwrap(), 0);
        assert_eq!(c.recv(&ping, &mut |_, _| {}).unwrap(), ping.len());
        let out = take_out(&mut c);
        assert_eq!(out[0].0.kind, frame::PING);
        assert_eq!(out[0].0.flags, frame::FLAG_ACK);
        assert_eq!(out[0].1, b"12345678");
    }

    /// The runner's nghttp2-style fields as a server sees them: every
    /// request's block carries `:path` as a Huffman-coded literal (no raw
    /// path bytes, never a one-byte reference), and decodes to the fields
    /// sent.
    #[test]
    fn huffman_blocks_with_a_literal_path_decode_on_every_request() {
        let mut c = ready_conn(&[]);
        c.enc.set_huffman(true);
        let path: &[u8] = b"/cache.Cache/Get";
        let mut dec = Decoder::new(4096);
        for tag in 0..3 {
            let (all, n) = crate::runner::request_fields(
                crate::cli::HeaderStyle::Nghttp2,
                path,
                b"127.0.0.1:7070",
            );
            let fields = &all[..n];
            c.send_request(
                fields,
                Some(0),
                1,
                |b| b.put_u8(0),
                Rec {
                    tag,
                    ..Default::default()
                },
            );
            let out = take_out(&mut c);
            assert_eq!(out[0].0.kind, frame::HEADERS);
            let block = &out[0].1;
            assert!(
                !block.windows(path.len()).any(|w| w == path),
                "path not Huffman-coded"
            );
            // 0x04: literal without indexing, name = static entry 4 (:path);
            // then a length with the Huffman bit.
            let at = block
                .iter()
                .position(|&b| b == 0x04)
                .expect(":path literal");
            assert!(block[at + 1] & 0x80 != 0, "no Huffman bit");
            let mut list = HeaderList::new();
            dec.decode(block, 1 << 16, &mut list).unwrap();
            assert_eq!(list.get(b":path"), Some(path));
            assert_eq!(list.get(b"te"), Some(&b"trailers"[..]));
        }
    }

    #[test]
    fn max_concurrent_streams_is_respected() {
        let mut c = ready_conn(&[(frame::SETTINGS_MAX_CONCURRENT_STREAMS, 2)]);
        assert!(c.can_open());
        assert_eq!(request(&mut c, 0, b"a"), 1);
        assert_eq!(request(&mut c, 1, b"b"), 3);
        assert!(!c.can_open());
        assert_eq!(c.open_streams(), 2);
    }

    #[test]
    fn request_frames_and_full_response() {
        let mut c = ready_conn(&[]);
        let id = request(&mut c, 7, b"hello");
        let out = take_out(&mut c);
        assert_eq!(out[0].0.kind, frame::HEADERS);
        assert_eq!(out[0].0.flags, frame::FLAG_END_HEADERS);
        assert_eq!(out[1].0.kind, frame::DATA);
        assert_eq!(out[1].0.flags, frame::FLAG_END_STREAM);
        assert_eq!(out[1].1, b"hello");

        let mut enc = Encoder::new();
        let mut input = server_headers(&mut enc, id, &[(b":status", b"200")], false);
        frame::write_header(&mut input, 3, frame::DATA, 0, id);
        input.put_slice(b"abc");
        input.extend_from_slice(&server_headers(
            &mut enc,
            id,
            &[(b"grpc-status", b"0")],
            true,
        ));
        let mut ended = vec![];
        // Feed byte-by-byte chunks to exercise partial frames.
        let mut buf = BytesMut::new();
        for chunk in input.chunks(5) {
            buf.extend_from_slice(chunk);
            let n = c.recv(&buf, &mut |s, e| ended.push((s, e))).unwrap();
            buf.advance(n);
        }
        assert!(buf.is_empty());
        assert_eq!(ended.len(), 1);
        let (rec, end) = &ended[0];
        assert_eq!(*end, StreamEnd::Closed);
        assert_eq!(rec.tag, 7);
        assert_eq!(rec.data, b"abc");
        assert_eq!(rec.headers[0], vec![(b":status".to_vec(), b"200".to_vec())]);
        assert_eq!(
            rec.headers[1],
            vec![(b"grpc-status".to_vec(), b"0".to_vec())]
        );
        assert_eq!(c.open_streams(), 0);
    }

    #[test]
    fn trailers_only_response_over_continuation() {
        let mut c = ready_conn(&[]);
        let id = request(&mut c, 1, b"x");
        let mut enc = Encoder::new();
        let mut block = BytesMut::new();
        enc.encode(
            &[
                HeaderField {
                    name: b":status",
                    value: b"200",
                    index: true,
                },
                HeaderField {
                    name: b"grpc-status",
                    value: b"14",
                    index: false,
                },
            ],
            &mut block,
        );
        let mut input = BytesMut::new();
        frame::write_header_block(&mut input, id, &block, true, 2);
        let mut ended = vec![];
        c.recv(&input, &mut |s, e| ended.push((s, e))).unwrap();
        assert_eq!(ended.len(), 1);
        assert_eq!(
            ended[0].0.headers[0][1],
            (b"grpc-status".to_vec(), b"14".to_vec())
        );
    }

    #[test]
    fn rst_stream_and_goaway_end_streams() {
        let mut c = ready_conn(&[]);
        let a = request(&mut c, 1, b"x");
        let b = request(&mut c, 2, b"y");
        let d = request(&mut c, 3, b"z");
        let mut input = BytesMut::new();
        frame::write_rst_stream(&mut input, a, frame::REFUSED_STREAM);
        frame::write_goaway(&mut input, b, frame::NO_ERROR);
        let mut ended = vec![];
        c.recv(&input, &mut |s: Rec, e| ended.push((s.tag, e)))
            .unwrap();
        assert_eq!(
            ended,
            vec![
                (1, StreamEnd::Reset(frame::REFUSED_STREAM)),
                (3, StreamEnd::GoAway(0))
            ]
        );
        assert!(c.is_retired() && !c.can_open());
        assert_eq!(c.open_streams(), 1);
        assert_eq!(c.drain().map(|s| s.tag).collect::<Vec<_>>(), vec![2]);
        let _ = d;
    }

    #[test]
    fn flow_control_holds_body_until_window_update() {
        let mut c = ready_conn(&[(frame::SETTINGS_INITIAL_WINDOW_SIZE, 4)]);
        let id = request(&mut c, 1, b"0123456789");
        let out = take_out(&mut c);
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].0.kind, frame::DATA);
        assert_eq!(out[1].1, b"0123");
        assert_eq!(out[1].0.flags, 0);
        let mut wu = BytesMut::new();
        frame::write_window_update(&mut wu, id, 100);
        c.recv(&wu, &mut |_, _| {}).unwrap();
        let out = take_out(&mut c);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].1, b"456789");
        assert_eq!(out[0].0.flags, frame::FLAG_END_STREAM);
    }

    #[test]
    fn big_responses_replenish_the_connection_window() {
        let mut c = ready_conn(&[]);
        // DATA for a stream we do not track still counts against the
        // connection window (and keeps the test from buffering 1 GiB).
        let id = 99;
        let chunk = vec![0u8; RECV_MAX_FRAME as usize];
        let mut frame_bytes = BytesMut::new();
        frame::write_header(&mut frame_bytes, chunk.len(), frame::DATA, 0, id);
        frame_bytes.put_slice(&chunk);
        let mut updates = 0u64;
        for _ in 0..(CONN_WINDOW / RECV_MAX_FRAME) {
            c.recv(&frame_bytes, &mut |_, _| {}).unwrap();
            for (h, p) in take_out(&mut c) {
                assert_eq!(h.kind, frame::WINDOW_UPDATE);
                if h.stream == 0 {
                    updates += u32::from_be_bytes([p[0], p[1], p[2], p[3]]) as u64;
                }
            }
        }
        assert_eq!(updates, CONN_WINDOW as u64);
    }

    #[test]
    fn garbage_is_a_connection_error() {
        let mut c = ready_conn(&[]);
        let mut bad = BytesMut::new();
        frame::write_header(&mut bad, 3, frame::PING, 0, 0);
        bad.put_slice(b"abc");
        assert!(c.recv(&bad, &mut |_, _| {}).is_err());
        let mut big = BytesMut::new();
        frame::write_header(&mut big, RECV_MAX_FRAME as usize + 1, frame::DATA, 0, 1);
        assert!(matches!(
            ClientConn::<Rec>::new().recv(&big, &mut |_, _| {}),
            Err(H2Error::FrameSize(_))
        ));
    }
}
