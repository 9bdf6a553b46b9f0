//! One batch call's results as they come in (GetMany, SetMany, DeleteMany).
//! Each item is dispatched like a single call (`dispatch`: this shard, its
//! home shard over the mesh, or its owner node), so the existing per-turn
//! batching carries a batch's items: all items bound for one shard travel
//! as one mesh message, all items for one peer node in one write. This
//! collects the answers in request order and bounds the response.
//!
//! Bounds: the response is at most the largest message (`--max-value` plus
//! framing, the same as a single Get's), so stock clients, whose default
//! receive limit is 4 MiB, never get a message they refuse; and the values
//! a connection's waiting batches hold count against its buffer budget
//! (`--conn-buffer`, the shard's share of `--node-buffer`) like unsent
//! responses. A value that would pass either fails its item alone with
//! RESOURCE_EXHAUSTED: values are admitted as their answers arrive, so
//! when a batch's values together pass the bound, the last to arrive fail
//! (whichever items they are) and the client gets those in calls of their
//! own. Answers to batch items are always taken (never held
//! back for room), so a full connection cannot stall its own batches.

use super::dispatch::{self, Local};
use super::lifecycle::Room;
use super::peer_client::Peers;
use crate::protocol::grpc::batch::{frame_many_response, ItemResult};
use crate::protocol::grpc::{Code, Method, Status};
use crate::protocol::CacheOp;
use crate::shard::{Mailbox, Reply, ReplyTo, Shard};
use bytes::Bytes;
use std::rc::Rc;
use std::time::Instant;

/// Answers to a connection's own calls come back under tags below this
/// bit (HTTP/2 stream ids are 31 bits; the gateway counts within 31 bits);
/// answers to one item of a batch under a part tag, which has it set.
pub const PART_TAG: u32 = 1 << 31;

/// A connection's batch items waiting elsewhere: part tag → (the tag of
/// the batch call, item index).
#[derive(Default)]
pub struct Parts {
    map: hashbrown::HashMap<u32, (u32, usize)>,
    next: u32,
}

impl Parts {
    /// A fresh part tag: PART_TAG set, none in use (they wrap after 2^31).
    pub fn tag(&mut self) -> u32 {
        loop {
            let tag = self.next | PART_TAG;
            self.next = self.next.wrapping_add(1);
            if !self.map.contains_key(&tag) {
                return tag;
            }
        }
    }

    /// Item `item` of the call tagged `call` waits for an answer to `tag`.
    pub fn wait(&mut self, tag: u32, call: u32, item: usize) {
        self.map.insert(tag, (call, item));
    }

    /// The (call, item) an answer tagged `tag` is for; None for a tag that
    /// is no part, or whose call is answered already.
    pub fn take(&mut self, tag: u32) -> Option<(u32, usize)> {
        if tag & PART_TAG == 0 {
            return None;
        }
        self.map.remove(&tag)
    }

    /// The call tagged `call` no longer waits: its late answers are dropped.
    pub fn forget(&mut self, call: u32) {
        self.map.retain(|_, (c, _)| *c != call);
    }
}

/// An item's result.
enum Slot {
    /// Its answer is still on its way from another shard or node.
    Waiting,
    /// A hit served here: `arena[at..at + len]`.
    Here {
        at: usize,
        len: usize,
    },
    /// A hit from another shard or node.
    Value(Bytes),
    Miss,
    Stored,
    Deleted(bool),
    Failed(Status),
}

/// A batch call waiting for some of its items.
pub struct Batch {
    method: Method,
    slots: Vec<Slot>,
    /// Values of local hits, copied once out of the store.
    arena: Vec<u8>,
    waiting: usize,
    /// Value bytes the response holds so far, and their bound.
    value_bytes: usize,
    limit: usize,
}

impl Batch {
    /// A batch of `items` results for `method`, whose values together may
    /// take at most `limit` bytes.
    pub fn new(method: Method, items: usize, limit: usize) -> Batch {
        Batch {
            method,
            slots: (0..items).map(|_| Slot::Waiting).collect(),
            arena: Vec::new(),
            waiting: items,
            value_bytes: 0,
            limit,
        }
    }

    /// Serves every item of the call tagged `call`, each as a single call
    /// would be (`dispatch`): answers found here fill their slots now; the
    /// others come back to `mailbox` under part tags recorded in `parts`.
    /// An item refused beforehand fails with its status. `budget`: the
    /// connection's room and what it holds.
    #[allow(clippy::too_many_arguments)]
    pub fn serve(
        &mut self,
        items: impl Iterator<Item = Result<CacheOp, Status>>,
        call: u32,
        deadline: Option<Instant>,
        budget: (Room, usize),
        (shard, peers): (&Rc<Shard>, &Rc<Peers>),
        mailbox: &Rc<Mailbox>,
        parts: &mut Parts,
    ) {
        for (i, item) in items.enumerate() {
            let op = match item {
                Ok(op) => op,
                Err(st) => {
                    self.fail(i, st);
                    continue;
                }
            };
            let tag = parts.tag();
            let waits = dispatch::dispatch(
                shard,
                peers,
                op,
                true,
                deadline,
                || ReplyTo::Conn(mailbox.clone(), tag),
                |local| self.local(i, local, budget),
            );
            if waits {
                parts.wait(tag, call, i);
            }
        }
    }

    /// The number of items still to be answered.
    pub fn waiting(&self) -> usize {
        self.waiting
    }

    /// The value bytes this batch holds.
    pub fn held(&self) -> usize {
        self.value_bytes
    }

    /// Item `i` was answered on this shard. `budget`: the connection's
    /// room, and what it holds besides this batch.
    pub fn local(&mut self, i: usize, answer: Local<'_>, budget: (Room, usize)) {
        if !self.is_waiting(i) {
            return;
        }
        let slot = match answer {
            Local::Get(Some(v)) => match self.admit(v.len(), budget) {
                Ok(()) => {
                    let at = self.arena.len();
                    self.arena.extend_from_slice(v);
                    Slot::Here { at, len: v.len() }
                }
                Err(st) => Slot::Failed(st),
            },
            Local::Get(None) => Slot::Miss,
            Local::Set(Ok(_)) => Slot::Stored,
            Local::Set(Err(e)) => Slot::Failed(dispatch::set_error_status(&e)),
            Local::Delete(d) => Slot::Deleted(d),
        };
        self.fill(i, slot);
    }

    /// Item `i` was answered by another shard or node (`budget` as for
    /// [`Batch::local`]).
    pub fn reply(&mut self, i: usize, reply: Reply, budget: (Room, usize)) {
        if !self.is_waiting(i) {
            return;
        }
        let slot = match reply {
            Reply::Get(Some(v)) => match self.admit(v.len(), budget) {
                Ok(()) => Slot::Value(v),
                Err(st) => Slot::Failed(st),
            },
            Reply::Get(None) => Slot::Miss,
            Reply::Set(Ok(_)) => Slot::Stored,
            Reply::Set(Err(e)) => Slot::Failed(dispatch::set_error_status(&e)),
            Reply::Delete(d) => Slot::Deleted(d),
            Reply::Failed(st) => Slot::Failed(st),
            Reply::Stats(..) | Reply::Metrics(..) => Slot::Failed(Status::new(
                Code::Internal,
                "a shard answered a key call with Stats or Metrics",
            )),
        };
        self.fill(i, slot);
    }

    /// Item `i` failed by itself (refused before it was dispatched).
    pub fn fail(&mut self, i: usize, st: Status) {
        self.fill(i, Slot::Failed(st));
    }

    fn is_waiting(&self, i: usize) -> bool {
        matches!(self.slots.get(i), Some(Slot::Waiting))
    }

    /// Only a waiting item takes an answer: a repeated one is ignored.
    fn fill(&mut self, i: usize, slot: Slot) {
        if let Some(s) = self.slots.get_mut(i) {
            if matches!(s, Slot::Waiting) {
                self.waiting -= 1;
                *s = slot;
            }
        }
    }

    fn admit(&mut self, len: usize, (room, others): (Room, usize)) -> Result<(), Status> {
        let held = self.value_bytes + len;
        if held > self.limit {
            return Err(Status::new(
                Code::ResourceExhausted,
                format!(
                    "this {len}-byte value would take the {} response past {} bytes \
                     (--max-value plus framing): get this key in a call of its own",
                    self.method.name(),
                    self.limit
                ),
            ));
        }
        if !room.admits(others.saturating_add(held)) {
            return Err(Status::new(
                Code::ResourceExhausted,
                format!(
                    "this connection already holds {others} bytes of responses its client \
                     has not read (--conn-buffer, --node-buffer): this {len}-byte value is \
                     not added to them; retry once the client has read its responses",
                ),
            ));
        }
        self.value_bytes = held;
        Ok(())
    }

    /// Appends the framed gRPC response. Call once nothing is waiting.
    pub fn encode(&self, dst: &mut Vec<u8>) {
        frame_many_response(self.method, self.results(), dst);
    }

    /// The results in request order (the gateway encodes them as JSON).
    pub fn results(&self) -> impl Iterator<Item = ItemResult<'_>> {
        self.slots.iter().map(|s| match s {
            Slot::Here { at, len } => ItemResult::Value(Some(&self.arena[*at..*at + *len])),
            Slot::Value(v) => ItemResult::Value(Some(v)),
            Slot::Miss => ItemResult::Value(None),
            Slot::Stored => ItemResult::Stored,
            Slot::Deleted(d) => ItemResult::Deleted(*d),
            Slot::Failed(st) => ItemResult::Failed(st),
            // Not reached: results are read once nothing waits.
            Slot::Waiting => ItemResult::Value(None),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto;
    use prost::Message;

    const ROOM: (Room, usize) = (Room::UNLIMITED, 0);

    fn decode(buf: &[u8]) -> proto::GetManyResponse {
        proto::GetManyResponse::decode(&buf[5..]).unwrap()
    }

    #[test]
    fn results_keep_request_order_whatever_order_they_arrive_in() {
        let mut b = Batch::new(Method::GetMany, 4, 100);
        b.reply(2, Reply::Get(Some(Bytes::from_static(b"two"))), ROOM);
        b.local(0, Local::Get(Some(b"zero")), ROOM);
        b.local(3, Local::Get(None), ROOM);
        assert_eq!(b.waiting(), 1);
        b.reply(
            1,
            Reply::Failed(Status::new(Code::Unavailable, "node down")),
            ROOM,
        );
        assert_eq!(b.waiting(), 0);
        let mut buf = Vec::new();
        b.encode(&mut buf);
        let r = decode(&buf).results;
        assert_eq!(r[0].value, b"zero");
        assert!(r[0].found);
        assert_eq!((r[1].code, r[1].message.as_str()), (14, "node down"));
        assert_eq!(r[2].value, b"two");
        assert!(!r[3].found && r[3].code == 0);
    }

    #[test]
    fn values_past_the_bound_fail_alone() {
        let mut b = Batch::new(Method::GetMany, 3, 10);
        b.local(0, Local::Get(Some(b"123456")), ROOM);
        b.reply(1, Reply::Get(Some(Bytes::from_static(b"12345"))), ROOM);
        b.local(2, Local::Get(Some(b"1234")), ROOM);
        let mut buf = Vec::new();
        b.encode(&mut buf);
        let r = decode(&buf).results;
        assert!(r[0].found && r[2].found);
        assert_eq!(r[1].code, Code::ResourceExhausted as i32);
        assert!(r[1].message.contains("past 10 bytes"), "{}", r[1].message);
    }

    #[test]
    fn values_past_the_connections_room_fail_alone() {
        let room = Room::per_connection(100);
        let mut b = Batch::new(Method::GetMany, 3, 1000);
        b.local(0, Local::Get(Some(&[1; 40])), (room, 50));
        b.reply(1, Reply::Get(Some(Bytes::from(vec![2; 40]))), (room, 50));
        b.local(2, Local::Get(Some(&[3; 9])), (room, 50));
        assert_eq!(b.held(), 49);
        let mut buf = Vec::new();
        b.encode(&mut buf);
        let r = decode(&buf).results;
        assert!(r[0].found && r[2].found);
        assert_eq!(r[1].code, Code::ResourceExhausted as i32);
        assert!(r[1].message.contains("--conn-buffer"), "{}", r[1].message);
    }

    #[test]
    fn part_tags_are_distinct_and_forgotten_with_their_call() {
        let mut p = Parts::default();
        let (a, b) = (p.tag(), p.tag());
        assert!(a != b && a & PART_TAG != 0 && b & PART_TAG != 0);
        p.wait(a, 7, 0);
        p.wait(b, 8, 3);
        assert_eq!(p.take(7), None, "a call's own tag is no part");
        p.forget(7);
        assert_eq!(p.take(a), None);
        assert_eq!(p.take(b), Some((8, 3)));
        assert_eq!(p.take(b), None);
        // Wrapping skips the tags still waiting.
        p.next = u32::MAX >> 1;
        let c = p.tag();
        p.wait(c, 1, 0);
        assert_eq!(p.tag(), PART_TAG);
        p.next = u32::MAX >> 1;
        assert_ne!(p.tag(), c);
    }

    #[test]
    fn a_late_or_repeated_answer_counts_once() {
        let mut b = Batch::new(Method::DeleteMany, 2, 10);
        b.local(0, Local::Delete(true), ROOM);
        b.reply(0, Reply::Delete(false), ROOM);
        b.reply(7, Reply::Delete(true), ROOM); // no such item
        assert_eq!(b.waiting(), 1);
        b.fail(1, Status::new(Code::InvalidArgument, "key is empty"));
        assert_eq!(b.waiting(), 0);
        let mut buf = Vec::new();
        b.encode(&mut buf);
        let r = proto::DeleteManyResponse::decode(&buf[5..])
            .unwrap()
            .results;
        assert!(r[0].deleted, "the first answer stands");
        assert_eq!(r[1].code, Code::InvalidArgument as i32);
    }
}
