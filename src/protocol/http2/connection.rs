//! One HTTP/2 connection, server side, as a state machine without I/O: the
//! caller feeds received bytes to [`Connection::recv`], gets [`Event`]s for
//! complete requests, answers with [`Connection::send_response`], and
//! writes out [`Connection::output`] once per turn.
//!
//! It owns the connection's protocol state: preface and settings exchange,
//! the stream table, both directions of flow control, the HPACK contexts,
//! and GOAWAY. Choices the RFC leaves open are documented in
//! docs/protocol.md (header block bound, window-update policy).
//!
//! Two kinds of stream, chosen from `:path` when HEADERS arrive
//! ([`ServerSettings::is_streaming`]): unary streams buffer the body and
//! deliver one [`Event::Request`] at END_STREAM (the fast path, unchanged);
//! streaming streams deliver [`Event::StreamOpened`] at once and then each
//! DATA payload as [`Event::StreamData`], and are answered piecewise with
//! [`Connection::send_headers`], [`Connection::send_data`] and
//! [`Connection::send_trailers`]. Both share one per-stream send queue for
//! what flow control holds back.

use super::flood::{Flood, Meters, MAX_CONTINUATIONS, MAX_UNREAD_ACKS, SMALL_WINDOW_UPDATE};
use super::frame::{self, setting, ErrorCode, Frame, FrameError, HEAD_LEN, MAX_WINDOW, PREFACE};
use super::hpack::{Decoder, Encoder, HeaderField, HeaderList, HpackError};
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// What this server advertises and enforces on each connection.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub max_concurrent_streams: u32,
    /// Receive window of each stream (SETTINGS_INITIAL_WINDOW_SIZE).
    pub initial_window_size: u32,
    /// Receive window of the connection, raised by a WINDOW_UPDATE at start.
    pub connection_window_size: u32,
    pub max_frame_size: u32,
    pub max_header_list_size: u32,
    pub header_table_size: u32,
    /// Request bodies above this end in [`Event::RequestTooLarge`]
    /// (unary streams only: a streaming stream's total is unbounded, its
    /// messages are bounded by the application's deframer).
    pub max_body_size: usize,
    /// Bytes of unfinished request bodies one connection may buffer, all
    /// streams together. A DATA frame that would pass it refuses its
    /// stream (RST_STREAM REFUSED_STREAM: not processed, safe to retry), so
    /// a body's announced length buys nothing until its bytes arrive and
    /// many half-sent bodies cannot add up without bound.
    pub body_budget: usize,
    /// How long the client may take to send its preface and SETTINGS, and
    /// to finish a header block once begun (a CONTINUATION that never
    /// comes). See [`Connection::deadline`].
    pub header_timeout: Duration,
    /// Decides from a request's `:path`, when its HEADERS arrive, whether
    /// the stream is streaming (events per DATA frame) or unary (one event
    /// with the whole body). A plain function so the check costs a call.
    pub is_streaming: fn(&[u8]) -> bool,
}

/// The default [`ServerSettings::is_streaming`]: every stream is unary.
pub fn no_streaming(_path: &[u8]) -> bool {
    false
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            max_concurrent_streams: 1024,
            initial_window_size: 1 << 20,
            connection_window_size: 16 << 20,
            max_frame_size: 16_384,
            max_header_list_size: 16 << 10,
            header_table_size: 4096,
            max_body_size: (4 << 20) + 64 * 1024,
            body_budget: 2 * ((4 << 20) + 64 * 1024),
            header_timeout: Duration::from_secs(10),
            is_streaming: no_streaming,
        }
    }
}

#[derive(Debug)]
pub enum Event {
    /// A complete request: END_STREAM seen; `body` is every DATA payload joined.
    /// `opened_at` is when its HEADERS arrived: deadlines run from there.
    Request {
        stream_id: u32,
        headers: HeaderList,
        body: Bytes,
        opened_at: Instant,
    },
    /// The body grew past `max_body_size`; the rest of it is discarded.
    RequestTooLarge { stream_id: u32, headers: HeaderList },
    /// A unary request whose HEADERS arrived but whose body has not ended
    /// by the end of this `recv`: its headers are readable through
    /// [`Connection::request_headers`] until it completes, so the
    /// application can start the call's deadline from its HEADERS.
    RequestStarted { stream_id: u32, opened_at: Instant },
    /// A request's header list decoded to more than MAX_HEADER_LIST_SIZE
    /// (an HPACK bomb, or just too many headers): the stream was reset
    /// (PROTOCOL_ERROR), the connection goes on.
    HeadersTooLarge { stream_id: u32 },
    /// A new stream was refused (RST_STREAM REFUSED_STREAM): its body
    /// would have passed [`ServerSettings::body_budget`]. Nothing of it
    /// reached the application.
    Refused { stream_id: u32 },
    /// The client reset a stream whose request was delivered and not yet
    /// answered, or a streaming stream still open; also sent when we reset
    /// such a stream for a protocol violation.
    Reset { stream_id: u32, code: ErrorCode },
    /// A streaming stream's HEADERS arrived (see [`ServerSettings::is_streaming`]).
    StreamOpened {
        stream_id: u32,
        headers: HeaderList,
        opened_at: Instant,
    },
    /// Request bytes on a streaming stream, in order; `end_stream` when the
    /// client half-closed (then `data` may be empty: an empty DATA frame or
    /// trailers ended it). Empty DATA frames without END_STREAM are not reported.
    StreamData {
        stream_id: u32,
        data: Bytes,
        end_stream: bool,
    },
}

/// A connection error: GOAWAY with `code` is already queued in the output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionError {
    pub code: ErrorCode,
    pub reason: String,
    /// Set when the client flooded (the code is then ENHANCE_YOUR_CALM).
    pub flood: Option<Flood>,
}

/// A response header set kept for later, when flow control holds back the
/// DATA it must follow (HPACK blocks are encoded in wire order).
type OwnedFields = Vec<(Vec<u8>, Vec<u8>, bool)>;

#[derive(Debug)]
struct Stream {
    opened_at: Instant,
    headers: Option<HeaderList>,
    /// The body so far (a body that arrives whole in one DATA frame is
    /// delivered without passing through here). Owned, never a slice of
    /// the input: a slice would pin the whole read buffer it came from.
    body: BytesMut,
    body_len: usize,
    too_large: bool,
    remote_ended: bool,
    /// The request was handed to the application and awaits its response.
    delivered: bool,
    /// The application knows of the stream (delivered, or announced by
    /// [`Event::RequestStarted`]): it is told when the stream is reset.
    announced: bool,
    /// A complete request held back while the connection is paused.
    ready: Option<Bytes>,
    /// Events per DATA frame instead of one per request.
    streaming: bool,
    /// Response HEADERS sent by `send_headers` (streaming API).
    headers_sent: bool,
    /// Our trailers are written or queued: nothing more may be sent.
    local_ended: bool,
    recv_window: i64,
    recv_unacked: u32,
    send_window: i64,
    /// Response DATA waiting for window, in order, and its total length.
    queue: VecDeque<Bytes>,
    queued: usize,
    /// Trailers to send once `queue` is empty.
    trailers: Option<OwnedFields>,
}

impl Stream {
    fn new(opened_at: Instant, recv_window: i64, send_window: i64) -> Stream {
        Stream {
            opened_at,
            headers: None,
            body: BytesMut::new(),
            body_len: 0,
            too_large: false,
            remote_ended: false,
            delivered: false,
            announced: false,
            ready: None,
            streaming: false,
            headers_sent: false,
            local_ended: false,
            recv_window,
            recv_unacked: 0,
            send_window,
            queue: VecDeque::new(),
            queued: 0,
            trailers: None,
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Phase {
    Preface,
    FirstSettings,
    Open,
    Failed,
}

/// Header block being assembled from HEADERS + CONTINUATION.
#[derive(Debug)]
struct PartialBlock {
    stream_id: u32,
    end_stream: bool,
    buf: BytesMut,
    /// CONTINUATION frames so far, and when the HEADERS came.
    continuations: usize,
    started: Instant,
}

#[derive(Debug)]
pub struct Connection {
    settings: ServerSettings,
    phase: Phase,
    output: BytesMut,
    decoder: Decoder,
    encoder: Encoder,
    streams: hashbrown::HashMap<u32, Stream>,
    /// Highest client stream id seen.
    last_stream_id: u32,
    partial: Option<PartialBlock>,
    peer_max_frame: usize,
    peer_initial_window: i64,
    send_window: i64,
    recv_window: i64,
    recv_unacked: u32,
    /// Streams that received DATA in this `recv` call (window updates due).
    touched: Vec<u32>,
    /// Streams with response data waiting for window, in arrival order:
    /// exactly those whose send queue is not empty.
    blocked: VecDeque<u32>,
    goaway_last: Option<u32>,
    /// A two-phase shutdown has sent its first GOAWAY and PING.
    draining: bool,
    /// Bytes in the `body` of streams not yet delivered.
    buffered: usize,
    /// Complete requests held back while paused, in arrival order.
    held: Held,
    /// Unary streams opened in the current `recv` call.
    opened: Vec<u32>,
    meters: Meters,
    /// PING and SETTINGS ACKs queued since the output was last written.
    unread_acks: usize,
    /// When the connection was made: the preface and SETTINGS are due by
    /// `header_timeout` after it.
    created: Instant,
    scratch: BytesMut,
    trash: HeaderList,
    /// The time passed to the current `recv` call.
    now: Instant,
}

/// Complete requests the application is not ready for (see
/// [`Connection::set_paused`]).
#[derive(Debug, Default)]
struct Held {
    paused: bool,
    streams: VecDeque<u32>,
    /// Bytes of their bodies.
    bytes: usize,
}

impl Held {
    /// Hands a complete request to the application, or holds it while
    /// paused (with a body of its own: a slice would pin the read buffer).
    fn deliver(&mut self, stream_id: u32, s: &mut Stream, body: Bytes, events: &mut Vec<Event>) {
        if self.paused {
            self.bytes += body.len();
            // Told of a reset like a delivered stream, whether or not its
            // HEADERS were announced (which depends on how input was read).
            s.announced = true;
            s.ready = Some(Bytes::copy_from_slice(&body));
            self.streams.push_back(stream_id);
            return;
        }
        let headers = s.headers.take().unwrap_or_default();
        s.delivered = true;
        s.announced = true;
        events.push(Event::Request {
            stream_id,
            headers,
            body,
            opened_at: s.opened_at,
        });
    }
}

/// Payload of the PING that follows the first GOAWAY of a shutdown.
const SHUTDOWN_PING: [u8; 8] = *b"shutdown";

/// The bound on one header block as received (before decoding): a peer
/// cannot make us buffer more than this with endless CONTINUATIONs.
fn block_limit(s: &ServerSettings) -> usize {
    2 * s.max_header_list_size as usize + 1024
}

impl Connection {
    /// A new connection with our SETTINGS (and connection window raise)
    /// already queued in the output.
    pub fn new(settings: ServerSettings) -> Self {
        let now = Instant::now();
        let mut output = BytesMut::with_capacity(16 << 10);
        frame::settings(
            &mut output,
            &[
                (setting::HEADER_TABLE_SIZE, settings.header_table_size),
                (setting::ENABLE_PUSH, 0),
                (
                    setting::MAX_CONCURRENT_STREAMS,
                    settings.max_concurrent_streams,
                ),
                (setting::INITIAL_WINDOW_SIZE, settings.initial_window_size),
                (setting::MAX_FRAME_SIZE, settings.max_frame_size),
                (setting::MAX_HEADER_LIST_SIZE, settings.max_header_list_size),
            ],
        );
        let conn_window = i64::from(settings.connection_window_size.max(65_535));
        if conn_window > 65_535 {
            frame::window_update(&mut output, 0, (conn_window - 65_535) as u32);
        }
        Connection {
            decoder: Decoder::new(settings.header_table_size as usize),
            encoder: Encoder::new(),
            phase: Phase::Preface,
            output,
            streams: hashbrown::HashMap::new(),
            last_stream_id: 0,
            partial: None,
            peer_max_frame: 16_384,
            peer_initial_window: 65_535,
            send_window: 65_535,
            recv_window: conn_window,
            recv_unacked: 0,
            touched: Vec::new(),
            blocked: VecDeque::new(),
            goaway_last: None,
            draining: false,
            buffered: 0,
            held: Held::default(),
            opened: Vec::new(),
            meters: Meters::new(now),
            unread_acks: 0,
            created: now,
            scratch: BytesMut::new(),
            trash: HeaderList::new(),
            now,
            settings,
        }
    }

    pub fn output(&mut self) -> &mut BytesMut {
        &mut self.output
    }

    /// The bytes waiting to be written.
    pub fn pending_output(&self) -> &[u8] {
        &self.output
    }

    /// Streams whose request arrived (or is arriving) and is not yet answered.
    pub fn active_streams(&self) -> usize {
        self.streams.len()
    }

    /// The open streaming streams (in no particular order), e.g. for a
    /// shutdown that must end them: they do not end by themselves, and a
    /// GOAWAY'd connection closes only once every stream is done.
    pub fn streaming_stream_ids(&self) -> Vec<u32> {
        self.streams
            .iter()
            .filter(|(_, s)| s.streaming)
            .map(|(&id, _)| id)
            .collect()
    }

    /// Response bytes of a stream that flow control holds back (0 for a
    /// closed stream): lets the application stop producing for a client
    /// that does not read.
    pub fn queued_bytes(&self, stream_id: u32) -> usize {
        self.streams.get(&stream_id).map_or(0, |s| s.queued)
    }

    /// Response bytes that flow control holds back, all streams together.
    pub fn queued_total(&self) -> usize {
        self.blocked
            .iter()
            .filter_map(|id| self.streams.get(id))
            .map(|s| s.queued)
            .sum()
    }

    /// Bytes of request bodies received and not yet delivered (arriving,
    /// or complete and held back while paused).
    pub fn buffered_bodies(&self) -> usize {
        self.buffered + self.held.bytes
    }

    /// The headers of a unary request still receiving its body (see
    /// [`Event::RequestStarted`]); None once delivered or closed.
    pub fn request_headers(&self, stream_id: u32) -> Option<&HeaderList> {
        self.streams.get(&stream_id)?.headers.as_ref()
    }

    /// While paused, complete requests are held back instead of being
    /// delivered; frames are still read (the WINDOW_UPDATEs that drain a
    /// full connection among them), and the streams held count against
    /// MAX_CONCURRENT_STREAMS, so what waits is bounded. For backpressure:
    /// the application pauses while its buffers are full, and takes the
    /// held requests with [`Connection::resume`].
    pub fn set_paused(&mut self, paused: bool) {
        self.held.paused = paused;
    }

    /// Complete requests are held back (see [`Connection::set_paused`]).
    pub fn has_held(&self) -> bool {
        !self.held.streams.is_empty()
    }

    /// Unless paused, delivers held requests (in arrival order) until
    /// `events` holds `max_events`.
    /// A failed connection delivers nothing more: whether a request completed
    /// in an earlier read or in the one that failed must not decide whether
    /// it is served on a connection about to be closed.
    pub fn resume(&mut self, events: &mut Vec<Event>, max_events: usize) {
        while !self.held.paused && self.phase != Phase::Failed && events.len() < max_events {
            let Some(id) = self.held.streams.pop_front() else {
                return;
            };
            let Some(s) = self.streams.get_mut(&id) else {
                continue; // reset or answered meanwhile
            };
            if let Some(body) = s.ready.take() {
                self.held.bytes -= body.len();
                self.held.deliver(id, s, body, events);
            }
        }
    }

    /// True after a connection error, or once a GOAWAY'd connection has
    /// answered every stream it accepted.
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Failed || (self.goaway_last.is_some() && self.streams.is_empty())
    }

    /// Starts a graceful shutdown that refuses no stream the client has
    /// already sent: GOAWAY with the largest stream id plus a PING; when the
    /// PING's ACK shows the client has seen the GOAWAY (so it opens nothing
    /// new here), the final GOAWAY names the real last stream. A client
    /// that never answers is finished off by a later [`Connection::go_away`].
    /// The final GOAWAY carries REFUSED_STREAM: streams above its last id
    /// were refused unprocessed, which clients map to UNAVAILABLE (a retry
    /// elsewhere is safe); NO_ERROR would surface as INTERNAL in h2-based
    /// clients such as tonic.
    pub fn begin_shutdown(&mut self) {
        if self.draining || self.goaway_last.is_some() || self.phase == Phase::Failed {
            return;
        }
        self.draining = true;
        frame::goaway(
            &mut self.output,
            0x7fff_ffff,
            ErrorCode::NoError,
            b"server shutting down",
        );
        frame::ping(&mut self.output, SHUTDOWN_PING);
    }

    /// Graceful shutdown: no stream above the last one seen will be served.
    pub fn go_away(&mut self, code: ErrorCode, debug: &[u8]) {
        if self.goaway_last.is_none() && self.phase != Phase::Failed {
            self.goaway_last = Some(self.last_stream_id);
            frame::goaway(&mut self.output, self.last_stream_id, code, debug);
        }
    }

    fn fail(&mut self, code: ErrorCode, reason: impl Into<String>) -> ConnectionError {
        let reason = reason.into();
        if self.phase != Phase::Failed {
            frame::goaway(
                &mut self.output,
                self.last_stream_id,
                code,
                reason.as_bytes(),
            );
            self.phase = Phase::Failed;
        }
        ConnectionError {
            code,
            reason,
            flood: None,
        }
    }

    /// Ends the connection of a client that flooded `kind`.
    fn flooded(&mut self, kind: Flood) -> ConnectionError {
        let reason = format!("too many {}", kind.label().replace('_', " "));
        ConnectionError {
            flood: Some(kind),
            ..self.fail(ErrorCode::EnhanceYourCalm, reason)
        }
    }

    /// Spends a token of `kind`; the connection error once there is none.
    fn meter(&mut self, kind: Flood) -> Result<(), ConnectionError> {
        if self.meters.spend(kind, self.now) {
            Ok(())
        } else {
            Err(self.flooded(kind))
        }
    }

    /// Counts an ACK queued in the output; a client that lets too many
    /// pile up unread is ended.
    fn queue_ack(&mut self) -> Result<(), ConnectionError> {
        self.unread_acks += 1;
        if self.unread_acks > MAX_UNREAD_ACKS {
            return Err(self.flooded(Flood::UnreadAcks));
        }
        Ok(())
    }

    /// The output was written: clear it.
    pub fn output_written(&mut self) {
        self.output.clear();
        self.unread_acks = 0;
    }

    /// When the client must have finished what it started: its preface
    /// and SETTINGS, or a header block (HEADERS without END_HEADERS).
    pub fn deadline(&self) -> Option<Instant> {
        let t = self.settings.header_timeout;
        match (&self.phase, &self.partial) {
            (Phase::Preface | Phase::FirstSettings, _) => Some(self.created + t),
            (Phase::Open, Some(p)) => Some(p.started + t),
            _ => None,
        }
    }

    /// Ends the connection if [`Connection::deadline`] has passed by `now`
    /// (GOAWAY PROTOCOL_ERROR: a header block cannot be abandoned without
    /// losing HPACK state, so a stalled one ends the connection).
    pub fn expire(&mut self, now: Instant) -> Result<(), ConnectionError> {
        if self.deadline().is_none_or(|d| d > now) {
            return Ok(());
        }
        let secs = self.settings.header_timeout.as_secs_f64();
        Err(if self.partial.is_some() {
            self.fail(
                ErrorCode::ProtocolError,
                format!("header block not completed within {secs} s"),
            )
        } else {
            self.fail(
                ErrorCode::ProtocolError,
                format!("connection preface and SETTINGS not received within {secs} s"),
            )
        })
    }

    /// Consumes every complete frame in `input` (a partial frame stays).
    /// `now` stamps requests whose HEADERS arrive in this call.
    pub fn recv(
        &mut self,
        input: &mut BytesMut,
        now: Instant,
        events: &mut Vec<Event>,
    ) -> Result<(), ConnectionError> {
        self.recv_batch(input, now, events, usize::MAX)
    }

    /// [`Connection::recv`], but stops once `events` holds `max_events`
    /// (frames after that stay in `input`), so the application can answer
    /// a batch of requests, look at what its answers cost, and decide
    /// whether to take more (see [`Connection::set_refusing`]).
    pub fn recv_batch(
        &mut self,
        input: &mut BytesMut,
        now: Instant,
        events: &mut Vec<Event>,
        max_events: usize,
    ) -> Result<(), ConnectionError> {
        self.now = now;
        if self.phase == Phase::Failed {
            input.clear();
            return Ok(());
        }
        if self.phase == Phase::Preface {
            let n = input.len().min(PREFACE.len());
            if input[..n] != PREFACE[..n] {
                return Err(self.fail(ErrorCode::ProtocolError, "invalid connection preface"));
            }
            if n < PREFACE.len() {
                return Ok(());
            }
            let _ = input.split_to(PREFACE.len());
            self.phase = Phase::FirstSettings;
        }
        let result = self.recv_frames(input, events, max_events);
        self.send_window_updates();
        for id in std::mem::take(&mut self.opened) {
            if let Some(s) = self.streams.get_mut(&id) {
                if !s.delivered && !s.streaming {
                    s.announced = true;
                    events.push(Event::RequestStarted {
                        stream_id: id,
                        opened_at: s.opened_at,
                    });
                }
            }
        }
        result
    }

    fn recv_frames(
        &mut self,
        input: &mut BytesMut,
        events: &mut Vec<Event>,
        max_events: usize,
    ) -> Result<(), ConnectionError> {
        while events.len() < max_events {
            let Some(head) = frame::parse_head(input) else {
                break;
            };
            if head.len > self.settings.max_frame_size {
                return Err(self.fail(
                    ErrorCode::FrameSizeError,
                    "frame larger than SETTINGS_MAX_FRAME_SIZE",
                ));
            }
            let total = HEAD_LEN + head.len as usize;
            if input.len() < total {
                break;
            }
            let payload = input.split_to(total).freeze().slice(HEAD_LEN..);
            if self.phase == Phase::FirstSettings {
                if head.kind != frame::kind::SETTINGS || head.flags & frame::flag::ACK != 0 {
                    return Err(
                        self.fail(ErrorCode::ProtocolError, "the first frame must be SETTINGS")
                    );
                }
                self.phase = Phase::Open;
            }
            if let Some(p) = &self.partial {
                if head.kind != frame::kind::CONTINUATION || head.stream_id != p.stream_id {
                    return Err(self.fail(
                        ErrorCode::ProtocolError,
                        "header block interrupted by another frame",
                    ));
                }
            }
            match frame::parse(head, payload) {
                Ok(f) => self.on_frame(f, events)?,
                Err(FrameError::Connection(code, why)) => return Err(self.fail(code, why)),
                Err(FrameError::Stream(id, code, _)) => self.reset_stream(id, code, events),
            }
        }
        Ok(())
    }

    fn on_frame(&mut self, f: Frame, events: &mut Vec<Event>) -> Result<(), ConnectionError> {
        match f {
            Frame::Data {
                stream_id,
                end_stream,
                data,
                flow_len,
            } => self.on_data(stream_id, end_stream, data, flow_len, events),
            Frame::Headers {
                stream_id,
                end_stream,
                end_headers,
                depends_on,
                block,
            } => {
                if block.is_empty() {
                    self.meter(Flood::EmptyFrames)?;
                }
                if depends_on == Some(stream_id) {
                    self.reset_stream(stream_id, ErrorCode::ProtocolError, events);
                }
                if end_headers {
                    self.on_header_block(stream_id, end_stream, &block, events)
                } else {
                    if block.len() > block_limit(&self.settings) {
                        return Err(self.fail(ErrorCode::EnhanceYourCalm, "header block too large"));
                    }
                    let mut buf = BytesMut::with_capacity(block.len() * 2);
                    buf.extend_from_slice(&block);
                    self.partial = Some(PartialBlock {
                        stream_id,
                        end_stream,
                        buf,
                        continuations: 0,
                        started: self.now,
                    });
                    Ok(())
                }
            }
            Frame::Continuation {
                stream_id,
                end_headers,
                block,
            } => {
                let Some(mut p) = self.partial.take() else {
                    return Err(self.fail(ErrorCode::ProtocolError, "CONTINUATION without HEADERS"));
                };
                p.continuations += 1;
                if p.continuations > MAX_CONTINUATIONS {
                    return Err(self.flooded(Flood::Continuations));
                }
                if block.is_empty() {
                    self.meter(Flood::EmptyFrames)?;
                }
                if p.buf.len() + block.len() > block_limit(&self.settings) {
                    return Err(self.fail(ErrorCode::EnhanceYourCalm, "header block too large"));
                }
                p.buf.extend_from_slice(&block);
                if end_headers {
                    self.on_header_block(stream_id, p.end_stream, &p.buf, events)
                } else {
                    self.partial = Some(p);
                    Ok(())
                }
            }
            Frame::Priority {
                stream_id,
                depends_on,
            } => {
                if depends_on == stream_id {
                    self.reset_stream(stream_id, ErrorCode::ProtocolError, events);
                }
                Ok(())
            }
            Frame::RstStream { stream_id, code } => {
                if stream_id > self.last_stream_id {
                    return Err(self.fail(ErrorCode::ProtocolError, "RST_STREAM on an idle stream"));
                }
                if let Some(s) = self.remove_stream(stream_id) {
                    if s.announced {
                        events.push(Event::Reset { stream_id, code });
                    }
                    self.meter(Flood::Resets)?;
                }
                Ok(())
            }
            Frame::Settings { ack, params } => {
                if !ack {
                    self.meter(Flood::Settings)?;
                    self.apply_settings(&params)?;
                    frame::settings_ack(&mut self.output);
                    self.queue_ack()?;
                    self.flush_blocked();
                }
                Ok(())
            }
            Frame::PushPromise { .. } => {
                Err(self.fail(ErrorCode::ProtocolError, "PUSH_PROMISE from a client"))
            }
            Frame::Ping { ack, payload } => {
                if !ack {
                    frame::ping_ack(&mut self.output, payload);
                    self.queue_ack()?;
                } else if self.draining && payload == SHUTDOWN_PING {
                    self.go_away(ErrorCode::RefusedStream, b"server shutting down");
                }
                Ok(())
            }
            Frame::GoAway { .. } => Ok(()),
            Frame::WindowUpdate {
                stream_id,
                increment,
            } => self.on_window_update(stream_id, increment, events),
            Frame::Unknown { .. } => Ok(()),
        }
    }

    fn apply_settings(&mut self, params: &[(u16, u32)]) -> Result<(), ConnectionError> {
        for &(k, v) in params {
            match k {
                setting::HEADER_TABLE_SIZE => self.encoder.set_max_table_size(v as usize),
                setting::INITIAL_WINDOW_SIZE => {
                    let delta = i64::from(v) - self.peer_initial_window;
                    self.peer_initial_window = i64::from(v);
                    for s in self.streams.values_mut() {
                        s.send_window += delta;
                        if s.send_window > MAX_WINDOW {
                            return Err(self
                                .fail(ErrorCode::FlowControlError, "stream window above 2^31-1"));
                        }
                    }
                }
                setting::MAX_FRAME_SIZE => self.peer_max_frame = v as usize,
                _ => {}
            }
        }
        Ok(())
    }

    fn on_window_update(
        &mut self,
        stream_id: u32,
        inc: u32,
        events: &mut Vec<Event>,
    ) -> Result<(), ConnectionError> {
        let waiting = if stream_id == 0 {
            !self.blocked.is_empty()
        } else {
            self.streams.get(&stream_id).is_some_and(|s| s.queued > 0)
        };
        if inc < SMALL_WINDOW_UPDATE && waiting {
            self.meter(Flood::WindowDribble)?;
        }
        if stream_id == 0 {
            if inc == 0 {
                return Err(self.fail(
                    ErrorCode::ProtocolError,
                    "WINDOW_UPDATE of 0 on the connection",
                ));
            }
            self.send_window += i64::from(inc);
            if self.send_window > MAX_WINDOW {
                return Err(self.fail(
                    ErrorCode::FlowControlError,
                    "connection window above 2^31-1",
                ));
            }
        } else {
            if stream_id > self.last_stream_id {
                return Err(self.fail(ErrorCode::ProtocolError, "WINDOW_UPDATE on an idle stream"));
            }
            let overflow = match self.streams.get_mut(&stream_id) {
                None => return Ok(()),
                Some(_) if inc == 0 => {
                    self.reset_stream(stream_id, ErrorCode::ProtocolError, events);
                    return Ok(());
                }
                Some(s) => {
                    s.send_window += i64::from(inc);
                    s.send_window > MAX_WINDOW
                }
            };
            if overflow {
                self.reset_stream(stream_id, ErrorCode::FlowControlError, events);
                return Ok(());
            }
        }
        self.flush_blocked();
        Ok(())
    }

    fn on_data(
        &mut self,
        stream_id: u32,
        end_stream: bool,
        data: Bytes,
        flow_len: u32,
        events: &mut Vec<Event>,
    ) -> Result<(), ConnectionError> {
        if flow_len == 0 && !end_stream {
            self.meter(Flood::EmptyFrames)?;
        }
        self.recv_window -= i64::from(flow_len);
        if self.recv_window < 0 {
            return Err(self.fail(
                ErrorCode::FlowControlError,
                "DATA beyond the connection window",
            ));
        }
        self.recv_unacked += flow_len;
        let max_body = self.settings.max_body_size;
        let Some(s) = self.streams.get_mut(&stream_id) else {
            if stream_id > self.last_stream_id {
                return Err(self.fail(ErrorCode::ProtocolError, "DATA on an idle stream"));
            }
            return Ok(()); // closed or reset by us: dropped, window given back
        };
        if s.remote_ended {
            self.reset_stream(stream_id, ErrorCode::StreamClosed, events);
            return Ok(());
        }
        s.recv_window -= i64::from(flow_len);
        if s.recv_window < 0 {
            self.reset_stream(stream_id, ErrorCode::FlowControlError, events);
            return Ok(());
        }
        if s.streaming {
            // Delivered as it comes, so its window is given back as it is
            // consumed (the stream may stay open for hours).
            s.recv_unacked += flow_len;
            if s.recv_unacked == flow_len {
                self.touched.push(stream_id);
            }
            if end_stream {
                s.remote_ended = true;
            }
            if end_stream || !data.is_empty() {
                events.push(Event::StreamData {
                    stream_id,
                    data,
                    end_stream,
                });
            }
            return Ok(());
        }
        if s.too_large {
            // Discarded; its window is given back by the connection.
            s.remote_ended |= end_stream;
            return Ok(());
        }
        s.recv_unacked += flow_len;
        if s.recv_unacked == flow_len {
            self.touched.push(stream_id);
        }
        s.body_len += data.len();
        if s.body_len > max_body {
            s.too_large = true;
            self.buffered -= s.body.len();
            s.body = BytesMut::new();
            s.delivered = true;
            s.announced = true;
            if let Some(headers) = s.headers.take() {
                events.push(Event::RequestTooLarge { stream_id, headers });
            }
            if end_stream {
                s.remote_ended = true;
            }
            return Ok(());
        }
        if end_stream && s.body.is_empty() {
            // The whole body in one frame: delivered as it is, no copy.
            s.remote_ended = true;
            self.held.deliver(stream_id, s, data, events);
            return Ok(());
        }
        if self.buffered + data.len() > self.settings.body_budget {
            // Not delivered, so not processed: the client may retry it.
            self.reset_stream(stream_id, ErrorCode::RefusedStream, events);
            events.push(Event::Refused { stream_id });
            return Ok(());
        }
        s.body.extend_from_slice(&data);
        self.buffered += data.len();
        if end_stream {
            s.remote_ended = true;
            self.buffered -= s.body.len();
            let body = std::mem::take(&mut s.body).freeze();
            self.held.deliver(stream_id, s, body, events);
        }
        Ok(())
    }

    fn on_header_block(
        &mut self,
        stream_id: u32,
        end_stream: bool,
        block: &[u8],
        events: &mut Vec<Event>,
    ) -> Result<(), ConnectionError> {
        let max_list = self.settings.max_header_list_size as usize;
        if let Some(s) = self.streams.get_mut(&stream_id) {
            // Trailers: decoded to keep HPACK in sync, then ignored.
            self.trash.clear();
            match self.decoder.decode(block, max_list, &mut self.trash) {
                Ok(()) | Err(HpackError::HeaderListTooLarge) => {}
                Err(e) => return Err(self.fail(ErrorCode::CompressionError, e.to_string())),
            }
            if !end_stream || s.remote_ended {
                self.reset_stream(stream_id, ErrorCode::ProtocolError, events);
                return Ok(());
            }
            s.remote_ended = true;
            if s.streaming {
                events.push(Event::StreamData {
                    stream_id,
                    data: Bytes::new(),
                    end_stream: true,
                });
            } else if !s.too_large {
                self.buffered -= s.body.len();
                let body = std::mem::take(&mut s.body).freeze();
                self.held.deliver(stream_id, s, body, events);
            }
            return Ok(());
        }
        if stream_id % 2 == 0 {
            return Err(self.fail(ErrorCode::ProtocolError, "HEADERS on an even stream id"));
        }
        if stream_id <= self.last_stream_id {
            return Err(self.fail(ErrorCode::StreamClosed, "HEADERS on a closed stream"));
        }
        // A gRPC request carries ~8 fields in ~200 bytes.
        let mut headers = HeaderList::with_capacity(256, 12);
        let decoded = self.decoder.decode(block, max_list, &mut headers);
        if let Err(e) = &decoded {
            if *e != HpackError::HeaderListTooLarge {
                // Not processed: GOAWAY's last stream id stays below it.
                return Err(self.fail(ErrorCode::CompressionError, e.to_string()));
            }
        }
        self.last_stream_id = stream_id;
        if decoded.is_err() {
            frame::rst_stream(&mut self.output, stream_id, ErrorCode::ProtocolError);
            events.push(Event::HeadersTooLarge { stream_id });
            return Ok(());
        }
        if self.goaway_last.is_some_and(|last| stream_id > last) {
            return Ok(()); // after our GOAWAY: not processed, the client retries
        }
        if self.streams.len() >= self.settings.max_concurrent_streams as usize {
            frame::rst_stream(&mut self.output, stream_id, ErrorCode::RefusedStream);
            return self.meter(Flood::Resets);
        }
        if !valid_request_headers(&headers) {
            frame::rst_stream(&mut self.output, stream_id, ErrorCode::ProtocolError);
            return Ok(());
        }
        let mut s = Stream::new(
            self.now,
            i64::from(self.settings.initial_window_size),
            self.peer_initial_window,
        );
        s.remote_ended = end_stream;
        if (self.settings.is_streaming)(headers.get(b":path").unwrap_or_default()) {
            s.streaming = true;
            s.delivered = true;
            s.announced = true;
            events.push(Event::StreamOpened {
                stream_id,
                headers,
                opened_at: self.now,
            });
            if end_stream {
                events.push(Event::StreamData {
                    stream_id,
                    data: Bytes::new(),
                    end_stream: true,
                });
            }
        } else {
            s.headers = Some(headers);
            if end_stream {
                self.held.deliver(stream_id, &mut s, Bytes::new(), events);
            } else {
                self.opened.push(stream_id);
            }
        }
        self.streams.insert(stream_id, s);
        Ok(())
    }

    /// Forgets a stream, and the body bytes it held.
    fn remove_stream(&mut self, stream_id: u32) -> Option<Stream> {
        let s = self.streams.remove(&stream_id)?;
        self.buffered -= s.body.len();
        if let Some(b) = &s.ready {
            self.held.bytes -= b.len();
        }
        Some(s)
    }

    /// Ends one stream with RST_STREAM; the connection goes on.
    fn reset_stream(&mut self, stream_id: u32, code: ErrorCode, events: &mut Vec<Event>) {
        frame::rst_stream(&mut self.output, stream_id, code);
        if let Some(s) = self.remove_stream(stream_id) {
            if s.announced {
                events.push(Event::Reset { stream_id, code });
            }
        }
    }

    /// Gives back receive window: once per stream and once for the
    /// connection per `recv`, when at least half a window was consumed.
    fn send_window_updates(&mut self) {
        if self.phase == Phase::Failed {
            return;
        }
        let conn_window = i64::from(self.settings.connection_window_size.max(65_535));
        if i64::from(self.recv_unacked) >= conn_window / 2 {
            frame::window_update(&mut self.output, 0, self.recv_unacked);
            self.recv_window += i64::from(self.recv_unacked);
            self.recv_unacked = 0;
        }
        let half = i64::from(self.settings.initial_window_size) / 2;
        for id in std::mem::take(&mut self.touched) {
            if let Some(s) = self.streams.get_mut(&id) {
                let due = i64::from(s.recv_unacked) >= half;
                if due && !s.remote_ended && !s.too_large {
                    frame::window_update(&mut self.output, id, s.recv_unacked);
                    s.recv_window += i64::from(s.recv_unacked);
                    s.recv_unacked = 0;
                } else if s.recv_unacked > 0 && !(s.remote_ended || s.too_large) {
                    self.touched.push(id);
                }
            }
        }
        // Streams that stay open but got less than half: keep tracking them.
        self.touched.dedup();
    }

    /// Sends a response: HEADERS, DATA (as flow control allows; the rest
    /// waits for window), trailers with END_STREAM. Dropped if the stream
    /// was reset meanwhile.
    pub fn send_response(
        &mut self,
        stream_id: u32,
        headers: &[HeaderField<'_>],
        body: &[u8],
        trailers: &[HeaderField<'_>],
    ) {
        match self.streams.get(&stream_id) {
            Some(s) if !s.local_ended && self.phase != Phase::Failed => {}
            _ => return,
        }
        self.write_headers(stream_id, headers, false);
        let sent = self.write_data(stream_id, body);
        if sent == body.len() {
            self.write_headers(stream_id, trailers, true);
            self.finish_stream(stream_id);
        } else if let Some(s) = self.streams.get_mut(&stream_id) {
            s.queue.push_back(Bytes::copy_from_slice(&body[sent..]));
            s.queued = body.len() - sent;
            s.trailers = Some(owned_fields(trailers));
            s.local_ended = true;
            self.blocked.push_back(stream_id);
        }
    }

    /// Sends a response made of one HEADERS frame with END_STREAM.
    pub fn send_trailers_only(&mut self, stream_id: u32, headers: &[HeaderField<'_>]) {
        match self.streams.get(&stream_id) {
            // Queued DATA would follow a frame that ends the stream.
            Some(s) if !s.local_ended && s.queue.is_empty() && self.phase != Phase::Failed => {}
            _ => return,
        }
        self.write_headers(stream_id, headers, true);
        self.finish_stream(stream_id);
    }

    /// Streaming API: sends the response HEADERS (without END_STREAM), once.
    /// Must precede [`Connection::send_data`]. Ignored on a closed stream.
    pub fn send_headers(&mut self, stream_id: u32, headers: &[HeaderField<'_>]) {
        match self.streams.get_mut(&stream_id) {
            Some(s) if !s.headers_sent && !s.local_ended && self.phase != Phase::Failed => {
                s.headers_sent = true;
            }
            _ => return,
        }
        self.write_headers(stream_id, headers, false);
    }

    /// Streaming API: sends response DATA after [`Connection::send_headers`],
    /// any number of times. What the windows do not allow now is queued on
    /// the stream, in order, and sent as WINDOW_UPDATEs arrive
    /// ([`Connection::queued_bytes`] tells how much waits). Ignored before
    /// `send_headers`, after `send_trailers` and on a closed stream.
    pub fn send_data(&mut self, stream_id: u32, data: &[u8]) {
        let behind_queue = match self.streams.get(&stream_id) {
            Some(s) if s.headers_sent && !s.local_ended && self.phase != Phase::Failed => {
                !s.queue.is_empty()
            }
            _ => return,
        };
        let sent = if behind_queue {
            0
        } else {
            self.write_data(stream_id, data)
        };
        if sent < data.len() {
            if let Some(s) = self.streams.get_mut(&stream_id) {
                if s.queue.is_empty() {
                    self.blocked.push_back(stream_id);
                }
                s.queue.push_back(Bytes::copy_from_slice(&data[sent..]));
                s.queued += data.len() - sent;
            }
        }
    }

    /// Streaming API: ends the stream with `trailers` (END_STREAM) once the
    /// queued data is out. Without `send_headers` first this is a
    /// trailers-only response, so `trailers` must then carry `:status`.
    /// When the client has not half-closed, RST_STREAM(NO_ERROR) follows
    /// (RFC 9113 §8.1). Ignored when already ended or on a closed stream.
    pub fn send_trailers(&mut self, stream_id: u32, trailers: &[HeaderField<'_>]) {
        let queued = match self.streams.get_mut(&stream_id) {
            Some(s) if !s.local_ended && self.phase != Phase::Failed => {
                s.local_ended = true;
                !s.queue.is_empty()
            }
            _ => return,
        };
        if queued {
            if let Some(s) = self.streams.get_mut(&stream_id) {
                s.trailers = Some(owned_fields(trailers));
            }
        } else {
            self.write_headers(stream_id, trailers, true);
            self.finish_stream(stream_id);
        }
    }

    fn write_headers(&mut self, stream_id: u32, fields: &[HeaderField<'_>], end_stream: bool) {
        self.scratch.clear();
        self.encoder.encode(fields, &mut self.scratch);
        frame::headers(
            &mut self.output,
            stream_id,
            &self.scratch,
            end_stream,
            self.peer_max_frame,
        );
    }

    /// Writes as much of `data` as the windows allow; returns bytes sent.
    fn write_data(&mut self, stream_id: u32, data: &[u8]) -> usize {
        let Some(s) = self.streams.get_mut(&stream_id) else {
            return 0;
        };
        write_data_frames(
            &mut self.output,
            &mut self.send_window,
            self.peer_max_frame,
            stream_id,
            s,
            data,
        )
    }

    /// Our side of the stream is done; forget it (after RST_STREAM(NO_ERROR)
    /// when the client has not finished sending, RFC 9113 §8.1).
    fn finish_stream(&mut self, stream_id: u32) {
        if let Some(s) = self.remove_stream(stream_id) {
            if !s.remote_ended {
                frame::rst_stream(&mut self.output, stream_id, ErrorCode::NoError);
            }
        }
    }

    /// Sends queued response data that new window now allows, stream by
    /// stream in the order they blocked, each stream's data in order.
    fn flush_blocked(&mut self) {
        let mut still = VecDeque::new();
        while let Some(id) = self.blocked.pop_front() {
            if !self.streams.contains_key(&id) {
                continue; // reset meanwhile
            }
            if self.send_window <= 0 || self.flush_stream(id) {
                still.push_back(id);
            }
        }
        self.blocked = still;
    }

    /// Sends what the windows allow of one stream's queue, then its
    /// trailers if the queue emptied. True while data still waits.
    fn flush_stream(&mut self, id: u32) -> bool {
        let Some(s) = self.streams.get_mut(&id) else {
            return false;
        };
        while let Some(front) = s.queue.pop_front() {
            let sent = write_data_frames(
                &mut self.output,
                &mut self.send_window,
                self.peer_max_frame,
                id,
                s,
                &front,
            );
            s.queued -= sent;
            if sent < front.len() {
                s.queue.push_front(front.slice(sent..));
                return true;
            }
        }
        if let Some(trailers) = s.trailers.take() {
            let fields: Vec<HeaderField<'_>> = trailers
                .iter()
                .map(|(n, v, i)| HeaderField {
                    name: n,
                    value: v,
                    index: *i,
                })
                .collect();
            self.write_headers(id, &fields, true);
            self.finish_stream(id);
        }
        false
    }
}

/// DATA frames for as much of `data` as the connection and stream windows
/// allow, split by the peer's frame size; returns the bytes written.
fn write_data_frames(
    out: &mut BytesMut,
    conn_window: &mut i64,
    max_frame: usize,
    stream_id: u32,
    s: &mut Stream,
    data: &[u8],
) -> usize {
    let allowed = (*conn_window).min(s.send_window).max(0) as usize;
    let n = allowed.min(data.len());
    for chunk in data[..n].chunks(max_frame.max(1)) {
        frame::data(out, stream_id, chunk, false);
    }
    s.send_window -= n as i64;
    *conn_window -= n as i64;
    n
}

fn owned_fields(fields: &[HeaderField<'_>]) -> OwnedFields {
    fields
        .iter()
        .map(|f| (f.name.to_vec(), f.value.to_vec(), f.index))
        .collect()
}

/// RFC 9113 §8.3: the request pseudo-headers, in front, exactly once;
/// lower-case names; no connection-specific fields.
fn valid_request_headers(h: &HeaderList) -> bool {
    let (mut method, mut scheme, mut path) = (0, 0, 0);
    let mut regular_seen = false;
    for (name, value) in h.iter() {
        if name.iter().any(u8::is_ascii_uppercase) || name.is_empty() {
            return false;
        }
        if name[0] == b':' {
            if regular_seen {
                return false;
            }
            match name {
                b":method" => method += 1,
                b":scheme" => scheme += 1,
                b":path" => {
                    path += 1;
                    if value.is_empty() {
                        return false;
                    }
                }
                b":authority" => {}
                _ => return false,
            }
        } else {
            regular_seen = true;
            match name {
                b"connection" | b"keep-alive" | b"proxy-connection" | b"transfer-encoding"
                | b"upgrade" => return false,
                b"te" if value != b"trailers" => return false,
                _ => {}
            }
        }
    }
    method == 1 && scheme == 1 && path == 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::http2::frame::{flag, kind, parse, parse_head};
    use bytes::BufMut;

    /// A request header block using literals without indexing (no HPACK state).
    fn block(path: &str) -> Vec<u8> {
        let mut b = vec![0x83, 0x86]; // :method POST, :scheme http
        for (n, v) in [
            (":path", path),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ] {
            b.push(0);
            b.push(n.len() as u8);
            b.extend_from_slice(n.as_bytes());
            b.push(v.len() as u8);
            b.extend_from_slice(v.as_bytes());
        }
        b
    }

    fn raw(dst: &mut BytesMut, kind: u8, flags: u8, id: u32, payload: &[u8]) {
        frame::head(dst, payload.len(), kind, flags, id);
        dst.put_slice(payload);
    }

    fn start(settings: ServerSettings) -> (Connection, BytesMut) {
        let mut c = Connection::new(settings);
        let mut input = BytesMut::new();
        input.put_slice(PREFACE);
        frame::settings(&mut input, &[]);
        let mut ev = Vec::new();
        c.recv(&mut input, Instant::now(), &mut ev).unwrap();
        assert!(ev.is_empty());
        (c, input)
    }

    fn frames(out: &mut BytesMut) -> Vec<Frame> {
        let mut b = out.split().freeze();
        let mut v = Vec::new();
        while let Some(h) = parse_head(&b) {
            let f = b.split_to(HEAD_LEN + h.len as usize).slice(HEAD_LEN..);
            v.push(parse(h, f).unwrap());
        }
        v
    }

    fn feed(c: &mut Connection, input: &mut BytesMut) -> (Vec<Event>, Result<(), ConnectionError>) {
        let mut ev = Vec::new();
        let r = c.recv(input, Instant::now(), &mut ev);
        (ev, r)
    }

    /// Found by fuzz/h2_connection: a request completed while paused, then a
    /// connection error in the same read; resuming must not deliver it (had
    /// the error come in a later read, the connection would never resume).
    #[test]
    fn a_failed_connection_resumes_nothing() {
        let (mut c, mut input) = start(ServerSettings::default());
        c.set_paused(true);
        raw(
            &mut input,
            kind::HEADERS,
            flag::END_HEADERS | flag::END_STREAM,
            1,
            &block("/cache.Cache/Get"),
        );
        raw(&mut input, kind::SETTINGS, 0, 7, &[]);
        let (ev, r) = feed(&mut c, &mut input);
        assert!(ev.is_empty());
        assert!(r.is_err() && c.is_closed());
        c.set_paused(false);
        let mut ev = Vec::new();
        c.resume(&mut ev, usize::MAX);
        assert!(ev.is_empty(), "{ev:?}");
    }

    fn goaway_code(c: &mut Connection) -> Option<ErrorCode> {
        frames(c.output()).into_iter().find_map(|f| match f {
            Frame::GoAway { code, .. } => Some(code),
            _ => None,
        })
    }

    #[test]
    fn preface_settings_and_request_response() {
        let (mut c, mut input) = start(ServerSettings::default());
        let f = frames(c.output());
        assert!(matches!(f[0], Frame::Settings { ack: false, .. }));
        assert!(matches!(f[1], Frame::WindowUpdate { stream_id: 0, .. }));
        assert!(matches!(f[2], Frame::Settings { ack: true, .. }));
        raw(
            &mut input,
            kind::HEADERS,
            flag::END_HEADERS,
            1,
            &block("/x"),
        );
        raw(&mut input, kind::DATA, 0, 1, b"hel");
        raw(&mut input, kind::DATA, flag::END_STREAM, 1, b"lo");
        raw(&mut input, kind::PING, 0, 0, b"pingpong");
        let (ev, r) = feed(&mut c, &mut input);
        r.unwrap();
        assert_eq!(ev.len(), 1);
        match &ev[0] {
            Event::Request {
                stream_id: 1,
                headers,
                body,
                ..
            } => {
                assert_eq!(headers.get(b":path"), Some(&b"/x"[..]));
                assert_eq!(&body[..], b"hello");
            }
            other => panic!("{other:?}"),
        }
        assert!(frames(c.output()).contains(&Frame::Ping {
            ack: true,
            payload: *b"pingpong"
        }));
        assert_eq!(c.active_streams(), 1);
        let h = [HeaderField {
            name: b":status",
            value: b"200",
            index: true,
        }];
        let t = [HeaderField {
            name: b"grpc-status",
            value: b"0",
            index: true,
        }];
        c.send_response(1, &h, b"reply", &t);
        let f = frames(c.output());
        assert!(matches!(
            &f[0],
            Frame::Headers {
                stream_id: 1,
                end_stream: false,
                ..
            }
        ));
        assert!(
            matches!(&f[1], Frame::Data { data, end_stream: false, .. } if &data[..] == b"reply")
        );
        assert!(matches!(
            &f[2],
            Frame::Headers {
                end_stream: true,
                ..
            }
        ));
        assert_eq!(c.active_streams(), 0);
    }

    #[test]
    fn partial_preface_waits_and_bad_preface_fails() {
        let mut c = Connection::new(ServerSettings::default());
        let mut input = BytesMut::from(&PREFACE[..10]);
        let (_, r) = feed(&mut c, &mut input);
        r.unwrap();
        let mut c = Connection::new(ServerSettings::default());
        let mut input = BytesMut::from(&b"GET / HTTP/1.1\r\n"[..]);
        let (_, r) = feed(&mut c, &mut input);
        assert_eq!(r.unwrap_err().code, ErrorCode::ProtocolError);
        assert!(c.is_closed());
        assert_eq!(goaway_code(&mut c), Some(ErrorCode::ProtocolError));
    }

    #[test]
    fn flow_control_holds_data_until_window_update() {
        let (mut c, mut input) = start(ServerSettings::default());
        frame::settings(&mut input, &[(setting::INITIAL_WINDOW_SIZE, 10)]);
        raw(
            &mut input,
            kind::HEADERS,
            flag::END_HEADERS | flag::END_STREAM,
            1,
            &block("/x"),
        );
        let (ev, r) = feed(&mut c, &mut input);
        r.unwrap();
        assert_eq!(ev.len(), 1);
        c.output().clear();
        let t = [HeaderField {
            name: b"grpc-status",
            value: b"0",
            index: true,
        }];
        c.send_response(1, &[], &[7u8; 25], &t);
        let f = frames(c.output());
        assert!(matches!(&f[1], Frame::Data { data, .. } if data.len() == 10));
        assert_eq!(f.len(), 2, "trailers wait for the rest of the data");
        raw(&mut input, kind::WINDOW_UPDATE, 0, 1, &100u32.to_be_bytes());
        feed(&mut c, &mut input).1.unwrap();
        let f = frames(c.output());
        assert!(matches!(&f[0], Frame::Data { data, .. } if data.len() == 15));
        assert!(matches!(
            &f[1],
            Frame::Headers {
                end_stream: true,
                ..
            }
        ));
        assert_eq!(c.active_streams(), 0);
    }

    #[test]
    fn protocol_violations_get_the_right_goaway() {
        type Case = (Box<dyn Fn(&mut BytesMut)>, ErrorCode);
        let cases: Vec<Case> = vec![
            (
                Box::new(|b| raw(b, kind::HEADERS, flag::END_HEADERS, 2, &block("/x"))),
                ErrorCode::ProtocolError,
            ),
            (
                Box::new(|b| raw(b, kind::DATA, 0, 5, b"x")),
                ErrorCode::ProtocolError,
            ),
            (
                Box::new(|b| raw(b, kind::CONTINUATION, flag::END_HEADERS, 1, b"")),
                ErrorCode::ProtocolError,
            ),
            (
                Box::new(|b| raw(b, kind::PING, 0, 0, &[0; 7])),
                ErrorCode::FrameSizeError,
            ),
            (
                Box::new(|b| raw(b, kind::HEADERS, flag::END_HEADERS, 1, &[0x80])),
                ErrorCode::CompressionError,
            ),
            (
                Box::new(|b| raw(b, kind::WINDOW_UPDATE, 0, 0, &0x7fff_ffffu32.to_be_bytes())),
                ErrorCode::FlowControlError,
            ),
            (
                Box::new(|b| raw(b, kind::PUSH_PROMISE, 0, 1, &[0; 4])),
                ErrorCode::ProtocolError,
            ),
            (
                Box::new(|b| raw(b, kind::DATA, 0, 1, &[0; 16_385])),
                ErrorCode::FrameSizeError,
            ),
            (
                Box::new(|b| {
                    raw(b, kind::HEADERS, 0, 1, &block("/x"));
                    raw(b, kind::PING, 0, 0, &[0; 8]);
                }),
                ErrorCode::ProtocolError,
            ),
            (
                Box::new(|b| {
                    raw(
                        b,
                        kind::HEADERS,
                        flag::END_HEADERS | flag::END_STREAM,
                        3,
                        &block("/x"),
                    );
                    raw(
                        b,
                        kind::HEADERS,
                        flag::END_HEADERS | flag::END_STREAM,
                        1,
                        &block("/x"),
                    );
                }),
                ErrorCode::StreamClosed,
            ),
        ];
        for (i, (write, code)) in cases.into_iter().enumerate() {
            let (mut c, mut input) = start(ServerSettings::default());
            c.output().clear();
            write(&mut input);
            let (_, r) = feed(&mut c, &mut input);
            assert_eq!(r.map_err(|e| e.code), Err(code), "case {i}");
            assert_eq!(goaway_code(&mut c), Some(code), "case {i}");
            assert!(c.is_closed());
        }
    }

    #[test]
    fn first_frame_must_be_settings() {
        let mut c = Connection::new(ServerSettings::default());
        let mut input = BytesMut::from(&PREFACE[..]);
        raw(&mut input, kind::PING, 0, 0, &[0; 8]);
        assert_eq!(
            feed(&mut c, &mut input).1.unwrap_err().code,
            ErrorCode::ProtocolError
        );
    }

    #[test]
    fn client_reset_refusal_and_too_large() {
        let settings = ServerSettings {
            max_concurrent_streams: 1,
            max_body_size: 8,
            ..Default::default()
        };
        let (mut c, mut input) = start(settings);
        raw(
            &mut input,
            kind::HEADERS,
            flag::END_HEADERS | flag::END_STREAM,
            1,
            &block("/a"),
        );
        raw(
            &mut input,
            kind::HEADERS,
            flag::END_HEADERS | flag::END_STREAM,
            3,
            &block("/b"),
        );
        let (ev, r) = feed(&mut c, &mut input);
        r.unwrap();
        assert_eq!(ev.len(), 1);
        assert!(frames(c.output()).contains(&Frame::RstStream {
            stream_id: 3,
            code: ErrorCode::RefusedStream
        }));
        raw(&mut input, kind::RST_STREAM, 0, 1, &8u32.to_be_bytes());
        let (ev, _) = feed(&mut c, &mut input);
        assert!(matches!(
            ev[0],
            Event::Reset {
                stream_id: 1,
                code: ErrorCode::Cancel
            }
        ));
        c.send_trailers_only(
            1,
            &[HeaderField {
                name: b":status",
                value: b"200",
                index: false,
            }],
        );
        assert!(c.output().is_empty(), "nothing is sent on a reset stream");
        raw(
            &mut input,
            kind::HEADERS,
            flag::END_HEADERS,
            5,
            &block("/c"),
        );
        raw(&mut input, kind::DATA, 0, 5, &[1; 9]);
        let (ev, r) = feed(&mut c, &mut input);
        r.unwrap();
        assert!(matches!(ev[0], Event::RequestTooLarge { stream_id: 5, .. }));
        c.send_trailers_only(
            5,
            &[HeaderField {
                name: b":status",
                value: b"200",
                index: false,
            }],
        );
        assert!(frames(c.output()).contains(&Frame::RstStream {
            stream_id: 5,
            code: ErrorCode::NoError
        }));
    }

    #[test]
    fn malformed_request_headers_reset_the_stream_only() {
        let (mut c, mut input) = start(ServerSettings::default());
        c.output().clear();
        raw(
            &mut input,
            kind::HEADERS,
            flag::END_HEADERS | flag::END_STREAM,
            1,
            &[0x83, 0x86],
        );
        let (ev, r) = feed(&mut c, &mut input);
        r.unwrap();
        assert!(ev.is_empty());
        assert!(frames(c.output()).contains(&Frame::RstStream {
            stream_id: 1,
            code: ErrorCode::ProtocolError
        }));
        assert!(!c.is_closed());
    }

    #[test]
    fn graceful_goaway_closes_after_the_last_answer() {
        let (mut c, mut input) = start(ServerSettings::default());
        raw(
            &mut input,
            kind::HEADERS,
            flag::END_HEADERS | flag::END_STREAM,
            1,
            &block("/a"),
        );
        feed(&mut c, &mut input).1.unwrap();
        c.go_away(ErrorCode::NoError, b"bye");
        assert!(!c.is_closed());
        raw(
            &mut input,
            kind::HEADERS,
            flag::END_HEADERS | flag::END_STREAM,
            3,
            &block("/b"),
        );
        let (ev, _) = feed(&mut c, &mut input);
        assert!(ev.is_empty(), "streams after GOAWAY are not processed");
        c.send_trailers_only(
            1,
            &[HeaderField {
                name: b":status",
                value: b"200",
                index: false,
            }],
        );
        assert!(c.is_closed());
    }

    #[test]
    fn two_phase_shutdown_refuses_nothing_in_flight() {
        let (mut c, mut input) = start(ServerSettings::default());
        c.output().clear();
        c.begin_shutdown();
        let f = frames(c.output());
        assert!(matches!(
            f[0],
            Frame::GoAway {
                last_stream_id: 0x7fff_ffff,
                code: ErrorCode::NoError,
                ..
            }
        ));
        assert_eq!(
            f[1],
            Frame::Ping {
                ack: false,
                payload: *b"shutdown"
            }
        );
        // A request the client sent before it saw the GOAWAY is still served.
        raw(
            &mut input,
            kind::HEADERS,
            flag::END_HEADERS | flag::END_STREAM,
            1,
            &block("/a"),
        );
        raw(&mut input, kind::PING, flag::ACK, 0, b"shutdown");
        let (ev, r) = feed(&mut c, &mut input);
        r.unwrap();
        assert_eq!(ev.len(), 1);
        assert!(frames(c.output()).contains(&Frame::GoAway {
            last_stream_id: 1,
            code: ErrorCode::RefusedStream,
            debug: Bytes::from_static(b"server shutting down")
        }));
        assert!(!c.is_closed());
        c.send_trailers_only(
            1,
            &[HeaderField {
                name: b":status",
                value: b"200",
                index: false,
            }],
        );
        assert!(c.is_closed());
    }

    fn streaming_settings() -> ServerSettings {
        ServerSettings {
            is_streaming: |path| path == b"/s",
            ..Default::default()
        }
    }

    const OK: [HeaderField<'static>; 1] = [HeaderField {
        name: b"grpc-status",
        value: b"0",
        index: true,
    }];
    const STATUS_200: [HeaderField<'static>; 1] = [HeaderField {
        name: b":status",
        value: b"200",
        index: true,
    }];

    fn stream_data(ev: &Event) -> (u32, &[u8], bool) {
        match ev {
            Event::StreamData {
                stream_id,
                data,
                end_stream,
            } => (*stream_id, &data[..], *end_stream),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bidi_stream_two_exchanges_then_half_close() {
        let (mut c, mut input) = start(streaming_settings());
        c.output().clear();
        raw(
            &mut input,
            kind::HEADERS,
            flag::END_HEADERS,
            1,
            &block("/s"),
        );
        let (ev, r) = feed(&mut c, &mut input);
        r.unwrap();
        match &ev[..] {
            [Event::StreamOpened {
                stream_id: 1,
                headers,
                ..
            }] => assert_eq!(headers.get(b":path"), Some(&b"/s"[..])),
            other => panic!("{other:?}"),
        }
        for (i, (req, resp)) in [(&b"req-1"[..], &b"resp-1"[..]), (b"req-2", b"resp-2")]
            .into_iter()
            .enumerate()
        {
            raw(&mut input, kind::DATA, 0, 1, req);
            let (ev, r) = feed(&mut c, &mut input);
            r.unwrap();
            assert_eq!(ev.len(), 1);
            assert_eq!(stream_data(&ev[0]), (1, req, false));
            c.send_headers(1, &STATUS_200); // only the first call sends
            c.send_data(1, resp);
            let f = frames(c.output());
            let mut data = &f[..];
            if i == 0 {
                assert!(matches!(
                    &f[0],
                    Frame::Headers {
                        stream_id: 1,
                        end_stream: false,
                        ..
                    }
                ));
                data = &f[1..];
            }
            match data {
                [Frame::Data {
                    stream_id: 1,
                    data,
                    end_stream: false,
                    ..
                }] => assert_eq!(&data[..], resp),
                other => panic!("exchange {i}: {other:?}"),
            }
        }
        // An empty DATA without END_STREAM is not an event; with it, it is.
        raw(&mut input, kind::DATA, 0, 1, b"");
        raw(&mut input, kind::DATA, flag::END_STREAM, 1, b"");
        let (ev, r) = feed(&mut c, &mut input);
        r.unwrap();
        assert_eq!(ev.len(), 1);
        assert_eq!(stream_data(&ev[0]), (1, &b""[..], true));
        assert_eq!(c.streaming_stream_ids(), [1]);
        c.send_trailers(1, &OK);
        let f = frames(c.output());
        assert!(
            matches!(
                &f[..],
                [Frame::Headers {
                    stream_id: 1,
                    end_stream: true,
                    ..
                }]
            ),
            "trailers and no RST_STREAM: the client had half-closed: {f:?}"
        );
        assert_eq!(c.active_streams(), 0);
        c.send_data(1, b"late");
        assert!(c.output().is_empty(), "nothing after the stream ended");

        // Trailers half-close too; a unary stream beside it is unchanged.
        raw(
            &mut input,
            kind::HEADERS,
            flag::END_HEADERS,
            3,
            &block("/s"),
        );
        raw(&mut input, kind::DATA, 0, 3, b"x");
        raw(
            &mut input,
            kind::HEADERS,
            flag::END_HEADERS | flag::END_STREAM,
            3,
            &[0x40, 1, b'a', 1, b'b'],
        );
        raw(
            &mut input,
            kind::HEADERS,
            flag::END_HEADERS | flag::END_STREAM,
            5,
            &block("/u"),
        );
        let (ev, r) = feed(&mut c, &mut input);
        r.unwrap();
        assert!(matches!(ev[0], Event::StreamOpened { stream_id: 3, .. }));
        assert_eq!(stream_data(&ev[1]), (3, &b"x"[..], false));
        assert_eq!(stream_data(&ev[2]), (3, &b""[..], true));
        assert!(matches!(ev[3], Event::Request { stream_id: 5, .. }));
        assert_eq!(c.streaming_stream_ids(), [3]);
    }

    #[test]
    fn streaming_data_held_by_flow_control_is_released_in_order() {
        let (mut c, mut input) = start(streaming_settings());
        frame::settings(&mut input, &[(setting::INITIAL_WINDOW_SIZE, 10)]);
        raw(
            &mut input,
            kind::HEADERS,
            flag::END_HEADERS,
            1,
            &block("/s"),
        );
        feed(&mut c, &mut input).1.unwrap();
        c.output().clear();
        c.send_data(1, b"before headers: ignored");
        assert!(c.output().is_empty());
        c.send_headers(1, &STATUS_200);
        c.send_data(1, b"aaaaaa");
        c.send_data(1, b"bbbbbb");
        c.send_data(1, b"cc");
        assert_eq!(c.queued_bytes(1), 4);
        c.send_trailers(1, &OK);
        c.send_data(1, b"after trailers: ignored");
        let mut sent = Vec::new();
        let collect = |f: Vec<Frame>, sent: &mut Vec<u8>| {
            let mut ended = false;
            for f in f {
                match f {
                    Frame::Data { data, .. } => {
                        assert!(!ended, "DATA after the trailers");
                        sent.extend_from_slice(&data);
                    }
                    Frame::Headers {
                        end_stream: true, ..
                    } => ended = true,
                    _ => {}
                }
            }
            ended
        };
        assert!(!collect(frames(c.output()), &mut sent));
        assert_eq!(sent, b"aaaaaabbbb");
        raw(&mut input, kind::WINDOW_UPDATE, 0, 1, &3u32.to_be_bytes());
        feed(&mut c, &mut input).1.unwrap();
        assert!(!collect(frames(c.output()), &mut sent));
        assert_eq!(sent, b"aaaaaabbbbbbc");
        assert_eq!(c.queued_bytes(1), 1);
        raw(&mut input, kind::WINDOW_UPDATE, 0, 1, &10u32.to_be_bytes());
        feed(&mut c, &mut input).1.unwrap();
        let f = frames(c.output());
        assert!(
            f.contains(&Frame::RstStream {
                stream_id: 1,
                code: ErrorCode::NoError
            }),
            "the client had not half-closed"
        );
        assert!(collect(f, &mut sent), "trailers follow the last DATA");
        assert_eq!(sent, b"aaaaaabbbbbbcc");
        assert_eq!(c.active_streams(), 0);
    }

    #[test]
    fn streaming_windows_are_given_back_as_data_is_delivered() {
        let settings = ServerSettings {
            initial_window_size: 100,
            ..streaming_settings()
        };
        let (mut c, mut input) = start(settings);
        raw(
            &mut input,
            kind::HEADERS,
            flag::END_HEADERS,
            1,
            &block("/s"),
        );
        feed(&mut c, &mut input).1.unwrap();
        c.output().clear();
        // 3 × 40 bytes: more than the stream's whole window of 100.
        for _ in 0..3 {
            raw(&mut input, kind::DATA, 0, 1, &[1; 40]);
            let (ev, r) = feed(&mut c, &mut input);
            r.unwrap();
            assert_eq!(ev.len(), 1);
        }
        let given: u32 = frames(c.output())
            .iter()
            .filter_map(|f| match f {
                Frame::WindowUpdate {
                    stream_id: 1,
                    increment,
                } => Some(*increment),
                _ => None,
            })
            .sum();
        assert_eq!(given, 80, "given back once half a window was consumed");
    }

    #[test]
    fn reset_and_violations_on_a_streaming_stream() {
        let settings = ServerSettings {
            initial_window_size: 10,
            ..streaming_settings()
        };
        let (mut c, mut input) = start(settings);
        raw(
            &mut input,
            kind::HEADERS,
            flag::END_HEADERS,
            1,
            &block("/s"),
        );
        raw(&mut input, kind::RST_STREAM, 0, 1, &8u32.to_be_bytes());
        let (ev, r) = feed(&mut c, &mut input);
        r.unwrap();
        assert!(matches!(
            ev[1],
            Event::Reset {
                stream_id: 1,
                code: ErrorCode::Cancel
            }
        ));
        c.output().clear();
        c.send_headers(1, &STATUS_200);
        c.send_data(1, b"x");
        c.send_trailers(1, &OK);
        assert!(c.output().is_empty(), "nothing is sent on a reset stream");
        // DATA after the client's END_STREAM: STREAM_CLOSED for that stream.
        raw(
            &mut input,
            kind::HEADERS,
            flag::END_HEADERS | flag::END_STREAM,
            3,
            &block("/s"),
        );
        raw(&mut input, kind::DATA, 0, 3, b"x");
        // DATA beyond the stream window: FLOW_CONTROL_ERROR for that stream.
        raw(
            &mut input,
            kind::HEADERS,
            flag::END_HEADERS,
            5,
            &block("/s"),
        );
        raw(&mut input, kind::DATA, 0, 5, &[0; 11]);
        // Trailers without END_STREAM: PROTOCOL_ERROR for that stream.
        raw(
            &mut input,
            kind::HEADERS,
            flag::END_HEADERS,
            7,
            &block("/s"),
        );
        raw(
            &mut input,
            kind::HEADERS,
            flag::END_HEADERS,
            7,
            &[0x40, 1, b'a', 1, b'b'],
        );
        let (ev, r) = feed(&mut c, &mut input);
        r.unwrap();
        let resets: Vec<(u32, ErrorCode)> = ev
            .iter()
            .filter_map(|e| match e {
                Event::Reset { stream_id, code } => Some((*stream_id, *code)),
                _ => None,
            })
            .collect();
        let expected = [
            (3, ErrorCode::StreamClosed),
            (5, ErrorCode::FlowControlError),
            (7, ErrorCode::ProtocolError),
        ];
        assert_eq!(resets, expected);
        let f = frames(c.output());
        for (id, code) in expected {
            assert!(f.contains(&Frame::RstStream {
                stream_id: id,
                code
            }));
        }
        assert!(!c.is_closed());
        assert_eq!(c.active_streams(), 0);
    }

    #[test]
    fn shutdown_with_an_open_streaming_stream() {
        let (mut c, mut input) = start(streaming_settings());
        raw(
            &mut input,
            kind::HEADERS,
            flag::END_HEADERS,
            1,
            &block("/s"),
        );
        raw(&mut input, kind::DATA, flag::END_STREAM, 1, b"watch me");
        feed(&mut c, &mut input).1.unwrap();
        c.send_headers(1, &STATUS_200);
        c.send_data(1, b"SERVING");
        c.begin_shutdown();
        raw(&mut input, kind::PING, flag::ACK, 0, b"shutdown");
        feed(&mut c, &mut input).1.unwrap();
        assert!(frames(c.output()).contains(&Frame::GoAway {
            last_stream_id: 1,
            code: ErrorCode::RefusedStream,
            debug: Bytes::from_static(b"server shutting down")
        }));
        assert!(!c.is_closed(), "the open stream keeps the connection");
        assert_eq!(c.streaming_stream_ids(), [1]);
        // What the server's shutdown does: a last message, then trailers.
        c.send_data(1, b"NOT_SERVING");
        c.send_trailers(1, &OK);
        assert!(c.is_closed());
        assert!(c.streaming_stream_ids().is_empty());
    }

    #[test]
    fn random_input_never_panics() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for i in 0..3000 {
            let settings = ServerSettings {
                is_streaming: if i % 2 == 0 { no_streaming } else { |_| true },
                ..Default::default()
            };
            let (mut c, mut input) = start(settings);
            let n = (next() % 200) as usize;
            for _ in 0..n {
                let r = next();
                // Mostly well-formed heads with random kinds, flags and payloads.
                let len = (r % 40) as usize;
                frame::head(
                    &mut input,
                    len,
                    (r >> 8) as u8 % 12,
                    (r >> 16) as u8,
                    ((r >> 24) % 8) as u32,
                );
                for _ in 0..len {
                    input.put_u8(next() as u8);
                }
            }
            let _ = feed(&mut c, &mut input);
        }
    }
}
