//! Single-thread wake-up primitives for tasks of one shard: a [`Notify`]
//! flag and a [`Mailbox`] of replies. Plain `Cell`s, no locks or atomics:
//! everything here lives and dies on one executor thread.

use super::Reply;
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// A one-waiter wake-up flag. `notify` before `notified` is not lost.
#[derive(Default)]
pub struct Notify {
    set: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

impl Notify {
    pub fn notify(&self) {
        self.set.set(true);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// Completes once `notify` has been called since the last completion.
    pub fn notified(&self) -> Notified<'_> {
        Notified(self)
    }
}

pub struct Notified<'a>(&'a Notify);

impl Future for Notified<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0.set.replace(false) {
            Poll::Ready(())
        } else {
            self.0.waker.set(Some(cx.waker().clone()));
            Poll::Pending
        }
    }
}

/// Replies from other shards for one connection, tagged with the stream id
/// that asked. The connection drains it; the shard's receiver fills it.
#[derive(Default)]
pub struct Mailbox {
    replies: RefCell<Vec<(u32, Reply)>>,
    closed: Cell<bool>,
    notify: Notify,
}

impl Mailbox {
    pub fn push(&self, tag: u32, reply: Reply) {
        if !self.closed.get() {
            self.replies.borrow_mut().push((tag, reply));
            self.notify.notify();
        }
    }

    /// Moves every waiting reply into `out`.
    pub fn drain_into(&self, out: &mut Vec<(u32, Reply)>) {
        out.append(&mut self.replies.borrow_mut());
    }

    /// Wakes the owner without a reply (for control signals such as shutdown).
    pub fn wake(&self) {
        self.notify.notify();
    }

    /// Completes when a reply or a wake-up arrived.
    pub fn wait(&self) -> Notified<'_> {
        self.notify.notified()
    }

    /// The owner went away: further replies are dropped on arrival.
    pub fn close(&self) {
        self.closed.set(true);
        self.replies.borrow_mut().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::task::Wake;

    struct Flag(std::sync::atomic::AtomicBool);
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn notify_wakes_and_is_not_lost() {
        let n = Notify::default();
        let flag = Arc::new(Flag(false.into()));
        let waker = Waker::from(flag.clone());
        let mut cx = Context::from_waker(&waker);
        n.notify();
        assert!(Pin::new(&mut n.notified()).poll(&mut cx).is_ready());
        assert!(Pin::new(&mut n.notified()).poll(&mut cx).is_pending());
        n.notify();
        assert!(flag.0.load(std::sync::atomic::Ordering::SeqCst));
        assert!(Pin::new(&mut n.notified()).poll(&mut cx).is_ready());
    }

    #[test]
    fn mailbox_drops_after_close() {
        let m = Mailbox::default();
        m.push(1, Reply::Delete(true));
        let mut out = Vec::new();
        m.drain_into(&mut out);
        assert_eq!(out.len(), 1);
        m.close();
        m.push(3, Reply::Delete(false));
        out.clear();
        m.drain_into(&mut out);
        assert!(out.is_empty());
    }
}
