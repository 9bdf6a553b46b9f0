//! The life of a connection, whatever protocol it speaks: the node-wide
//! count behind `--max-connections` ([`OpenGuard`]), what the shard's
//! housekeeping can see of it and tell it ([`ConnShared`]: mailbox,
//! activity, idle and shutdown flags, the bytes it holds), the shard's
//! table of them ([`Registry`]) with its idle reaper and its buffer
//! budget, and the polite close ([`linger`]).
//!
//! The buffer budget: every connection reports the bytes it holds
//! (unsent responses, responses parked for ordering or flow control,
//! unfinished requests). A connection may take new input while it holds
//! less than `--conn-buffer` and, while the shard's connections together
//! hold more than the shard's share of `--node-buffer`, only if it holds
//! little ([`Room::admits`]), and one that holds more than that gets
//! [`OVERFLOW_STALL`] to read it. Answers already on their way to a
//! connection cannot be refused by it; large ones are bounded where they
//! are made instead (`shard::InTransit`). One that holds twice its budget (answers
//! that were already on their way) is closed if its client does not read
//! for [`OVERFLOW_STALL`].

use super::NodeShared;
use crate::metrics::Guard;
use crate::runtime::{self, Stream};
use crate::shard::{Mailbox, Shard};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Releases the node-wide connection count when a connection ends.
pub struct OpenGuard(pub Arc<NodeShared>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open_connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What the shard's housekeeping can see of a connection and tell it.
#[derive(Default)]
pub struct ConnShared {
    mailbox: Rc<Mailbox>,
    /// Bumped on every read; the idle reaper compares snapshots.
    activity: Cell<u64>,
    busy: Cell<bool>,
    seen: Cell<u64>,
    strikes: Cell<u8>,
    idle: Cell<bool>,
    shutdown: Cell<bool>,
    /// Bytes the connection holds, as last reported to the registry.
    held: Cell<usize>,
}

impl ConnShared {
    pub fn mailbox(&self) -> &Rc<Mailbox> {
        &self.mailbox
    }

    /// Traffic arrived: not idle.
    pub fn touch(&self) {
        self.activity.set(self.activity.get().wrapping_add(1));
    }

    /// Calls are open: not idle however quiet the socket is.
    pub fn set_busy(&self, busy: bool) {
        self.busy.set(busy);
    }

    /// True once after the idle reaper judged the connection idle.
    pub fn take_idle(&self) -> bool {
        self.idle.replace(false)
    }

    /// True once after each shutdown request (the first, and the final
    /// one a shard sends to connections still open a second later).
    pub fn take_shutdown(&self) -> bool {
        self.shutdown.replace(false)
    }

    /// Whether a shutdown request is waiting to be taken.
    pub fn shutdown_requested(&self) -> bool {
        self.shutdown.get()
    }
}

/// The buffer limits every connection of a node obeys.
#[derive(Debug, Clone, Copy)]
pub struct BufferLimits {
    /// `--conn-buffer`: what one connection may hold and still take input.
    pub per_connection: usize,
    /// This shard's share of `--node-buffer`.
    pub per_shard: usize,
    /// How long a write may make no progress: `--idle-timeout` normally,
    /// [`OVERFLOW_STALL`] while the connection holds twice its budget.
    pub write_stall: Duration,
}

/// How long a write to a client may stall while its connection holds more
/// than twice its budget, or more than a little while the shard is over
/// its share: a client that does not read then costs memory, so it gets
/// less patience than `--idle-timeout`.
pub const OVERFLOW_STALL: Duration = Duration::from_secs(2);

/// Below this a connection may always take input, even while the shard
/// as a whole is over its share: a well-behaved client holds about one
/// turn's responses, and the clients that hold a lot are the ones to stop.
pub const SMALL_HOLDING: usize = 256 << 10;

/// Whether a connection may take more input now.
#[derive(Debug, Clone, Copy)]
pub struct Room {
    per_connection: usize,
    /// What the shard's other connections hold, and the shard's share.
    others: usize,
    per_shard: usize,
}

impl Room {
    /// Room that never runs out (for connections no budget applies to).
    pub const UNLIMITED: Room = Room {
        per_connection: usize::MAX,
        others: 0,
        per_shard: usize::MAX,
    };

    /// Room for `per_connection` bytes on a shard with room to spare.
    #[cfg(test)]
    pub fn per_connection(per_connection: usize) -> Room {
        Room {
            per_connection,
            ..Room::UNLIMITED
        }
    }

    /// True when a connection that holds `held` bytes may take input.
    pub fn admits(&self, held: usize) -> bool {
        held < self.per_connection
            && (held < SMALL_HOLDING || self.others.saturating_add(held) < self.per_shard)
    }

    /// True when a connection holding `held` bytes must have its client
    /// read promptly ([`OVERFLOW_STALL`]): it holds twice its budget, or
    /// more than a little while the shard is over its share.
    pub fn overflows(&self, held: usize) -> bool {
        held / 2 >= self.per_connection
            || (held >= SMALL_HOLDING && self.others.saturating_add(held) >= self.per_shard)
    }
}

/// The connections of one shard.
pub struct Registry {
    conns: RefCell<hashbrown::HashMap<u64, Rc<ConnShared>>>,
    next_id: Cell<u64>,
    limits: BufferLimits,
    /// Sum of the connections' `held`.
    held: Cell<usize>,
    shard: Rc<Shard>,
}

impl Registry {
    pub fn new(shard: Rc<Shard>, limits: BufferLimits) -> Registry {
        Registry {
            conns: RefCell::default(),
            next_id: Cell::new(0),
            limits,
            held: Cell::new(0),
            shard,
        }
    }

    pub fn add(&self, c: Rc<ConnShared>) -> u64 {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        self.conns.borrow_mut().insert(id, c);
        id
    }

    /// Wakes every connection (their sessions look at what changed: a new
    /// ring for topology watchers). Rare: once per ring change.
    pub fn wake_all(&self) {
        for c in self.conns.borrow().values() {
            c.mailbox.wake();
        }
    }

    pub fn remove(&self, id: u64) {
        if let Some(c) = self.conns.borrow_mut().remove(&id) {
            self.set_held(&c, 0);
        }
    }

    /// Records what `c` holds now.
    pub fn set_held(&self, c: &ConnShared, held: usize) {
        let old = c.held.replace(held);
        if old != held {
            let total = self.held.get() - old + held;
            self.held.set(total);
            self.shard.set_connection_buffers(total);
        }
    }

    /// The room `c` has to take input, given what the others hold.
    pub fn room(&self, c: &ConnShared) -> Room {
        Room {
            per_connection: self.limits.per_connection,
            others: self.held.get() - c.held.get(),
            per_shard: self.limits.per_shard,
        }
    }

    pub fn limits(&self) -> BufferLimits {
        self.limits
    }

    pub fn count(&self, event: Guard) {
        self.shard.record_guard(event, 1);
    }

    /// Asks every connection to finish its calls and close (GOAWAY).
    pub fn shut_down_all(&self) {
        for c in self.conns.borrow().values() {
            c.shutdown.set(true);
            c.mailbox.wake();
        }
    }

    pub fn is_empty(&self) -> bool {
        self.conns.borrow().is_empty()
    }
}

/// Closes connections that had no call in progress and no traffic for
/// `idle_timeout` (checked every half period, so closing happens between
/// one and one and a half periods of silence). Costs nothing per request.
pub async fn reap_idle(registry: Rc<Registry>, idle_timeout: Duration) {
    let period = (idle_timeout / 2).max(Duration::from_millis(10));
    loop {
        runtime::sleep(period).await;
        for c in registry.conns.borrow().values() {
            let a = c.activity.get();
            if a != c.seen.get() || c.busy.get() {
                c.seen.set(a);
                c.strikes.set(0);
                continue;
            }
            c.strikes.set(c.strikes.get() + 1);
            if c.strikes.get() >= 2 {
                c.idle.set(true);
                c.mailbox.wake();
            }
        }
    }
}

/// Closes our side, then reads and discards until the client closes its
/// side (bounded): closing a socket with unread input makes the kernel send
/// RST, which can destroy responses the client has not read yet.
pub async fn linger(stream: &mut Stream) {
    let _ = stream.shutdown_write().await;
    let mut buf = [0u8; 4096];
    let until = Instant::now() + LINGER;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        let read = futures_lite::future::or(async { Some(stream.read(&mut buf).await) }, async {
            runtime::sleep(left).await;
            None
        })
        .await;
        match read {
            Some(Ok(n)) if n > 0 => continue,
            _ => return,
        }
    }
}

/// How long a closing connection waits for the client to close its side.
const LINGER: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::*;

    fn room(per_connection: usize, others: usize, per_shard: usize) -> Room {
        Room {
            per_connection,
            others,
            per_shard,
        }
    }

    #[test]
    fn room_per_connection_and_per_shard() {
        let mib = 1 << 20;
        // Alone: up to the connection's budget.
        let r = room(8 * mib, 0, 64 * mib);
        assert!(r.admits(0) && r.admits(8 * mib - 1));
        assert!(!r.admits(8 * mib));
        assert!(!r.overflows(8 * mib) && r.overflows(16 * mib));
        // The shard over its share: only small holders go on.
        let r = room(8 * mib, 63 * mib, 64 * mib);
        assert!(r.admits(SMALL_HOLDING - 1));
        assert!(!r.admits(2 * mib));
        assert!(!r.overflows(SMALL_HOLDING - 1) && r.overflows(mib));
        assert!(Room::UNLIMITED.admits(usize::MAX - 1));
    }
}
