//! The one connection loop: runs a [`Session`] (the sans-IO protocol state
//! of a gRPC client, a gateway client, a peer node serving us or being
//! served) over a `runtime` stream. Written once, so every front end gets
//! the same reading, writing, backpressure, timers, idleness and shutdown.
//!
//! One turn: take the shard's signals (shutdown, idle), let the session
//! take its mail and run its timers, give it the input it has room for,
//! account what it holds, then write everything it produced in one write.
//! Then wait for whichever comes first: bytes (only while the session
//! wants input), mail, or the session's next deadline.
//!
//! Backpressure: a session stops taking input when its buffers are at
//! their budget ([`Room`]); the bytes it left stay in `input` and are not
//! added to until the session has room again, so neither its buffers nor
//! the input grow past their bounds. A session that holds more than twice
//! its budget anyway (replies that were already on their way) must have it
//! read within `OVERFLOW_STALL`, or it is closed.

use super::lifecycle::{ConnShared, Registry, Room, OVERFLOW_STALL};
use crate::metrics::Guard;
use crate::runtime::{self, Stream};
use bytes::BytesMut;
use futures_lite::future;
use std::time::Instant;

/// Bytes asked of the socket per read.
pub const READ_CHUNK: usize = 64 << 10;

/// The protocol side of one connection, without sockets or an executor:
/// bytes and replies in, bytes out. Tests drive sessions directly.
pub trait Session {
    /// New bytes are at the end of `input`: consume what can be consumed
    /// (a partial message stays). Returns true when it stopped early
    /// because its buffers reached `room`'s limit; it is called again
    /// with the rest once it has room.
    fn on_input(&mut self, input: &mut BytesMut, room: Room, now: Instant) -> bool;
    /// The other side closed its sending half.
    fn on_eof(&mut self);
    /// A read failed (reset, or TCP_USER_TIMEOUT's ETIMEDOUT): the
    /// connection is gone. Sessions that care why override this.
    fn on_read_error(&mut self, _error: std::io::Error) {
        self.on_eof();
    }
    /// Takes the replies in its mailbox, runs the timers due by `now`, and
    /// takes up work it held back if `room` now allows.
    fn on_wake(&mut self, room: Room, now: Instant);
    /// The shard judged the connection idle (no traffic, not busy).
    fn on_idle(&mut self);
    /// The node is shutting down (called again for the final notice).
    fn on_shutdown(&mut self);
    /// What to write now; `clear_output` once written.
    fn output(&self) -> &[u8];
    fn clear_output(&mut self);
    /// Bytes it holds: unsent output, responses parked for ordering or
    /// flow control, unfinished requests.
    fn held(&self) -> usize;
    /// Whether it takes input now.
    fn wants_input(&self, room: Room) -> bool;
    /// When `on_wake` must run even if no mail comes.
    fn next_deadline(&self) -> Option<Instant>;
    /// Calls are in progress: not idle however quiet the socket is.
    fn busy(&self) -> bool;
    /// It holds complete requests back for lack of room: `on_wake` runs
    /// again as soon as the output is written.
    fn backlog(&self) -> bool {
        false
    }
    /// Nothing more to do: the connection closes.
    fn is_done(&self) -> bool;
}

enum Wake {
    Read(std::io::Result<usize>),
    Mail,
    Deadline,
}

/// Runs `session` on `stream` until it is done, or a write fails (the
/// error is returned; a read that fails is the session's `on_read_error`).
/// `input` holds bytes already read (e.g. while telling a peer from a
/// client). Connections in a `registry` obey its buffer budget and report
/// what they hold.
pub async fn drive<S: Session>(
    stream: &mut Stream,
    session: &mut S,
    conn: &ConnShared,
    registry: Option<&Registry>,
    mut input: BytesMut,
) -> std::io::Result<()> {
    let room = |c: &ConnShared| registry.map_or(Room::UNLIMITED, |r| r.room(c));
    let mut rbuf = vec![0u8; READ_CHUNK];
    // Input the session has not been offered since it stopped early.
    let mut unread = !input.is_empty();
    let mut eof = false;
    // Holding more than twice the budget: writes get less patience.
    let mut overflowing = false;
    loop {
        // A connection with endless input (a flood) must not hold the
        // shard past its time slice: other connections' turns come first.
        runtime::yield_if_needed().await;
        let now = Instant::now();
        if conn.take_shutdown() {
            session.on_shutdown();
        }
        if conn.take_idle() {
            if let Some(r) = registry {
                r.count(Guard::IdleClosed);
            }
            session.on_idle();
        }
        let r = room(conn);
        session.on_wake(r, now);
        if unread && session.wants_input(r) {
            unread = session.on_input(&mut input, r, now);
            if unread {
                if let Some(reg) = registry {
                    reg.count(Guard::Backpressure);
                }
            }
        }
        let held = session.held() + input.len();
        if let Some(reg) = registry {
            reg.set_held(conn, held);
        }
        let overflow = r.overflows(held);
        if overflow != overflowing {
            overflowing = overflow;
            if let Some(reg) = registry {
                let stall = reg.limits().write_stall;
                let _ = stream.set_write_timeout(if overflow {
                    stall.min(OVERFLOW_STALL)
                } else {
                    stall
                });
            }
        }
        if !session.output().is_empty() {
            if let Err(e) = stream.write_all(session.output()).await {
                if e.kind() == std::io::ErrorKind::TimedOut {
                    if let Some(reg) = registry {
                        reg.count(if overflowing {
                            Guard::BufferLimit
                        } else {
                            Guard::WriteStalled
                        });
                    }
                }
                return Err(e);
            }
            session.clear_output();
            if let Some(reg) = registry {
                reg.set_held(conn, session.held() + input.len());
            }
            if session.backlog() && !session.is_done() {
                continue; // room again for the requests held back
            }
        }
        if session.is_done() {
            return Ok(());
        }
        conn.set_busy(session.busy());
        let takes = session.wants_input(room(conn));
        if unread && takes {
            continue; // room again for input already read
        }
        let read = takes && !unread && !eof;
        let deadline = session.next_deadline();
        let mailbox = conn.mailbox().clone();
        let wake = future::or(
            async {
                if read {
                    Wake::Read(stream.read(&mut rbuf).await)
                } else {
                    future::pending().await
                }
            },
            future::or(
                async {
                    mailbox.wait().await;
                    Wake::Mail
                },
                async {
                    runtime::sleep_until(deadline).await;
                    Wake::Deadline
                },
            ),
        )
        .await;
        match wake {
            Wake::Read(Ok(0)) => {
                eof = true;
                session.on_eof();
            }
            Wake::Read(Err(e)) => {
                eof = true;
                session.on_read_error(e);
            }
            Wake::Read(Ok(n)) => {
                conn.touch();
                input.extend_from_slice(rbuf.get(..n).unwrap_or_default());
                unread = true;
            }
            Wake::Mail | Wake::Deadline => {}
        }
    }
}
