//! Where a request is served, for every front end alike (gRPC, the HTTP
//! gateway, peer nodes, and shards handing requests over): on this shard
//! now, on the key's home shard over the mesh, or on the owner node over a
//! peer connection; and, for a group with a source, the read-through load
//! with its single flight. The front ends differ only in how they encode
//! the answer.
//!
//! On the key's home shard:
//! - a key this node owns: the store; a Get that misses in a group with a
//!   source joins (or starts) the one load of that key, unless a "not
//!   found" is remembered; a Set or Delete also tells the other nodes to
//!   drop their hot copies (best effort; the hot TTL bounds the rest);
//! - another node's key: a Get may be answered from the hot copy, else it
//!   is forwarded and the answer may be kept (sampled admission); a Set or
//!   Delete drops our copy first, so this node reads its own writes.

use super::peer_client::Peers;
use crate::groups::{GroupSpec, Join, LoadError};
use crate::metrics::Guard;
use crate::protocol::grpc::{Code, Status};
use crate::protocol::CacheOp;
use crate::runtime;
use crate::shard::{InTransit, Location, Op, Reply, ReplyTo, Shard};
use crate::store::SetError;
use bytes::Bytes;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

/// The answer of a call served by this shard, borrowed from its store.
pub enum Local<'a> {
    Get(Option<&'a [u8]>),
    Set(Result<bool, SetError>),
    Delete(bool),
}

/// Serves `op`. When this shard can answer at once, `local` gets the
/// answer and this returns false; otherwise the answer goes to `reply_to`
/// later (as a `Reply`) and this returns true. `forward` is false for calls
/// a peer node sent us (at most one hop).
#[allow(clippy::too_many_arguments)]
pub fn dispatch(
    shard: &Rc<Shard>,
    peers: &Rc<Peers>,
    op: CacheOp,
    forward: bool,
    deadline: Option<Instant>,
    reply_to: impl FnOnce() -> ReplyTo,
    local: impl FnOnce(Local<'_>),
) -> bool {
    match shard.locate(op.group().as_bytes(), op.key().as_bytes(), forward) {
        // A peer's forward is served whatever our ring says (at most one
        // hop), fenced or not: the peers still route these keys here.
        Location::Here if forward && shard.fenced() => {
            let st = Status::new(
                Code::Unavailable,
                "this node has lost etcd and may no longer own this key: \
                 it serves its keys again once it is back in the cluster, \
                 or routes them to their new owner once the others drop it",
            );
            shard.reply(reply_to(), Reply::Failed(st));
            true
        }
        Location::Here => serve_owned(shard, peers, op, reply_to, local),
        Location::Shard(home) => {
            shard.submit(
                home,
                Op::Cache {
                    op,
                    forward,
                    deadline,
                },
                reply_to(),
            );
            true
        }
        Location::Node(owner) => {
            if let CacheOp::Get { group, key } = &op {
                let now = shard.now_ms();
                let hit = shard.with_hot(|h| match h.get(group.as_bytes(), key.as_bytes(), now) {
                    Some(v) => {
                        local(Local::Get(Some(v)));
                        true
                    }
                    None => false,
                });
                if hit == Some(true) {
                    return false;
                }
            } else {
                shard.drop_hot(op.group(), op.key());
            }
            peers.forward(owner, op, deadline, reply_to());
            true
        }
    }
}

/// Serves a request that a shard handed to this one (its home shard).
/// `(transit, limit)`: the asking shard's large values on their way, and
/// their bound (a Get whose value would pass it fails RESOURCE_EXHAUSTED).
pub fn serve_handed_over(
    shard: &Rc<Shard>,
    peers: &Rc<Peers>,
    op: Op,
    reply_to: ReplyTo,
    (transit, limit): (&InTransit, usize),
) {
    let Op::Cache {
        op,
        forward,
        deadline,
    } = op
    else {
        return;
    };
    if deadline.is_some_and(|d| d <= Instant::now()) {
        // The asking connection has answered DEADLINE_EXCEEDED already;
        // this answer only lets the asking shard forget the hand-off.
        let st = Status::new(
            Code::DeadlineExceeded,
            "deadline exceeded before the key's shard",
        );
        shard.reply(reply_to, Reply::Failed(st));
        return;
    }
    let to = reply_to.clone();
    dispatch(
        shard,
        peers,
        op,
        forward,
        deadline,
        || reply_to,
        |answer| {
            let reply = match answer {
                Local::Get(Some(v)) => match transit.copy(v, limit) {
                    Ok(b) => Reply::Get(Some(b)),
                    Err(waiting) => {
                        shard.record_guard(Guard::Backpressure, 1);
                        Reply::Failed(transit_full(v.len(), waiting))
                    }
                },
                Local::Get(None) => Reply::Get(None),
                Local::Set(r) => Reply::Set(r),
                Local::Delete(d) => Reply::Delete(d),
            };
            shard.reply(to, reply);
        },
    );
}

/// A key whose home is this shard and which this node serves (its owner,
/// or a peer sent it here).
/// Debug builds only: a Get in this group panics the shard that owns the
/// key, so that tests/shard_panic.rs can prove a shard's panic ends the
/// node. Release builds have no such group (it is an ordinary name there).
#[cfg(debug_assertions)]
pub const PANIC_GROUP: &str = "shardcache.debug.panic";

fn serve_owned(
    shard: &Rc<Shard>,
    peers: &Rc<Peers>,
    op: CacheOp,
    reply_to: impl FnOnce() -> ReplyTo,
    local: impl FnOnce(Local<'_>),
) -> bool {
    #[cfg(debug_assertions)]
    if matches!(&op, CacheOp::Get { group, .. } if group == PANIC_GROUP) {
        panic!("a Get in {PANIC_GROUP} (debug builds only)");
    }
    let now = shard.now_ms();
    match op {
        CacheOp::Get { group, key } => {
            let mut local = Some(local);
            let hit = shard.with_store(|s| match s.get(group.as_bytes(), key.as_bytes(), now) {
                Some(v) => {
                    if let Some(f) = local.take() {
                        f(Local::Get(Some(v)));
                    }
                    true
                }
                None => false,
            });
            if hit {
                return false;
            }
            let local = local.take();
            let Some(spec) = shard.groups().loading(&group).cloned() else {
                if let Some(f) = local {
                    f(Local::Get(None));
                }
                return false;
            };
            if shard.negative().contains(&group, &key, now) {
                shard.count_negative_hit();
                if let Some(f) = local {
                    f(Local::Get(None));
                }
                return false;
            }
            let id = (group, key);
            let joined = shard.flights().join(id.clone(), reply_to());
            match joined {
                Join::Lead => runtime::spawn(load(shard.clone(), spec, id.0, id.1)),
                Join::Follow => shard.count_join(),
            }
            true
        }
        CacheOp::Set {
            group,
            key,
            value,
            ttl_ms,
        } => {
            let r =
                shard.with_store(|s| s.set(group.as_bytes(), key.as_bytes(), &value, ttl_ms, now));
            if r.is_ok() {
                changed(shard, peers, &group, &key);
            }
            local(Local::Set(r));
            false
        }
        CacheOp::Delete { group, key } => {
            let d = shard.with_store(|s| s.delete(group.as_bytes(), key.as_bytes(), now));
            changed(shard, peers, &group, &key);
            local(Local::Delete(d));
            false
        }
    }
}

/// (group, key) was set or deleted here: forget a remembered "not found",
/// and tell the other nodes to drop their hot copies (any of them may have
/// one; the node that forwarded the change dropped its own already).
fn changed(shard: &Shard, peers: &Peers, group: &str, key: &str) {
    shard.negative().remove(group, key);
    let others = shard.other_members();
    shard.count_invalidations_sent(others.len() as u64);
    for &addr in others.iter() {
        peers.invalidate(addr, group, key);
    }
}

/// The one load of (group, key): asks the group's source, keeps the value
/// (unless a Set landed meanwhile, which wins), and answers everyone who
/// waited. A failure or a timeout is every waiter's answer and leaves
/// nothing behind: the next Get loads again.
async fn load(shard: Rc<Shard>, spec: Arc<GroupSpec>, group: String, key: String) {
    let Some(loader) = spec.loader.clone() else {
        return;
    };
    let timeout = spec.load_timeout;
    let result = futures_lite::future::or(loader.load(&group, &key), async {
        runtime::sleep(timeout).await;
        Err(LoadError::TimedOut(timeout))
    })
    .await;
    let now = shard.now_ms();
    let reply = match result {
        Ok(Some(value)) => {
            shard.count_load(false);
            // Re-check inside the flight: a Set while we loaded is newer.
            let current = shard.with_store(|s| {
                s.get(group.as_bytes(), key.as_bytes(), now)
                    .map(Bytes::copy_from_slice)
            });
            match current {
                Some(v) => Reply::Get(Some(v)),
                None => {
                    let ttl = spec.ttl.as_millis() as u64;
                    // A value over the shard's budget is answered, not kept.
                    let _ = shard
                        .with_store(|s| s.set(group.as_bytes(), key.as_bytes(), &value, ttl, now));
                    Reply::Get(Some(value))
                }
            }
        }
        Ok(None) => {
            shard.count_load(false);
            if !spec.negative_ttl.is_zero() {
                let until = now.saturating_add(spec.negative_ttl.as_millis() as u64);
                shard.negative().insert(&group, &key, until, now);
            }
            Reply::Get(None)
        }
        Err(e) => {
            shard.count_load(true);
            let st = e.status(&group, &key, &loader.describe());
            tracing::debug!(group = %group, key = %key, "load failed: {}", st.message);
            Reply::Failed(st)
        }
    };
    let waiters = shard.flights().finish(&(group, key));
    for w in waiters {
        shard.reply(w, reply.clone());
    }
}

/// The status of a Get whose large value would pass the asking shard's
/// bound on values on their way (`waiting` bytes are already).
pub fn transit_full(len: usize, waiting: usize) -> Status {
    Status::new(
        Code::ResourceExhausted,
        format!(
            "{waiting} bytes of values are already on their way to clients that have not read \
             them (--node-buffer); this {len}-byte value is not sent until they are: retry later"
        ),
    )
}

/// The status of a Set the store refused, in every front end's words.
pub fn set_error_status(e: &SetError) -> Status {
    match e {
        SetError::TooLarge { charge, capacity } => Status::new(
            Code::ResourceExhausted,
            format!(
                "value needs {charge} bytes of cache memory but a shard holds at most \
                 {capacity} bytes (--memory divided by --shards)"
            ),
        ),
    }
}
