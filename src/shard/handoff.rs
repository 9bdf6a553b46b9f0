//! Cross-core hand-off: requests for keys whose home is another shard, and
//! their answers, batched per event-loop turn over the channel mesh.
//!
//! The shard that hands a request off keeps `token → ReplyTo`; the other
//! shard sees `(token, Op)` and answers `(token, Reply)` in its next batch
//! back, or later (a read-through load, a forward to the owner node) through
//! the same outbox. A receiver task never blocks on a send (answers go into
//! the outbox, carried by the sender task), so two shards whose channels
//! are both full still drain each other.

use super::{Op, Reply, ReplyTo, Shard};
use crate::runtime::PeerReceiver;
use std::rc::Rc;

/// One direction's traffic between two shards for one event-loop turn.
#[derive(Debug, Default)]
pub struct Batch {
    pub requests: Vec<(u64, Op)>,
    pub replies: Vec<(u64, Reply)>,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.requests.is_empty() && self.replies.is_empty()
    }
}

impl Shard {
    /// Hands `op` to shard `to`; its answer goes to `reply_to`. Sent with
    /// everything else for `to` at the end of this turn.
    pub fn submit(&self, to: usize, op: Op, reply_to: ReplyTo) {
        let token = self.next_token.get();
        self.next_token.set(token.wrapping_add(1));
        self.waiting.borrow_mut().insert(token, reply_to);
        self.send(to, op, token);
    }

    /// Hands `op` to shard `to` expecting no answer (an invalidation).
    pub fn notify_shard(&self, to: usize, op: Op) {
        self.send(to, op, u64::MAX);
    }

    fn send(&self, to: usize, op: Op, token: u64) {
        // Counted: the calls of clients and peers. Not: invalidations and
        // the Stats and /metrics fan-out, which are not calls on a key.
        if matches!(op, Op::Cache { .. }) {
            self.metrics.borrow_mut().handoffs_sent(1);
        }
        self.outbox[to].borrow_mut().requests.push((token, op));
        self.outbox_ready[to].notify();
    }

    /// Delivers an answer: to a connection's mailbox now, or to the shard
    /// that asked, in this turn's batch to it.
    pub fn reply(&self, to: ReplyTo, reply: Reply) {
        match to {
            ReplyTo::Conn(mailbox, tag) => mailbox.push(tag, reply),
            ReplyTo::Shard { shard, token } => {
                if let Some(out) = self.outbox.get(shard) {
                    out.borrow_mut().replies.push((token, reply));
                    self.outbox_ready[shard].notify();
                }
            }
        }
    }

    /// The task that carries this shard's batches to shard `to`. It runs
    /// after the tasks that filled the outbox have yielded, so one send
    /// carries a whole turn's worth.
    pub async fn run_sender(self: Rc<Self>, to: usize) {
        loop {
            self.outbox_ready[to].notified().await;
            let batch = std::mem::take(&mut *self.outbox[to].borrow_mut());
            if batch.is_empty() {
                continue;
            }
            if let Err(returned) = self.mesh.send(to, batch).await {
                // The peer shard is gone (shutdown): forget what we asked of it.
                tracing::warn!(shard = self.id, peer = to, "cross-core channel closed");
                if let Some(batch) = returned {
                    for (token, _) in batch.requests {
                        self.waiting.borrow_mut().remove(&token);
                    }
                }
                return;
            }
        }
    }

    /// The task that serves what shard `from` sends. Key requests go to
    /// `serve` (the server's dispatch, which may answer later); Stats and
    /// invalidations are done here; answers are passed on to where the
    /// original request came from.
    pub async fn run_receiver(
        self: Rc<Self>,
        from: usize,
        rx: PeerReceiver<Batch>,
        serve: impl Fn(&Rc<Shard>, Op, ReplyTo),
    ) {
        while let Some(batch) = rx.recv().await {
            for (token, op) in batch.requests {
                match op {
                    Op::Stats => {
                        let reply = Reply::Stats(self.id, self.counters());
                        self.reply(ReplyTo::Shard { shard: from, token }, reply);
                    }
                    Op::Metrics => {
                        let reply = Reply::Metrics(Box::new(self.snapshot()));
                        self.reply(ReplyTo::Shard { shard: from, token }, reply);
                    }
                    Op::Invalidate { group, key } => self.invalidate(&group, &key),
                    op @ Op::Cache { .. } => {
                        serve(&self, op, ReplyTo::Shard { shard: from, token })
                    }
                }
            }
            for (token, reply) in batch.replies {
                let to = self.waiting.borrow_mut().remove(&token);
                if let Some(to) = to {
                    self.reply(to, reply);
                }
            }
        }
    }
}
