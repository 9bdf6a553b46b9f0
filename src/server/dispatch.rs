//! Where a request is served, for every front end alike (gRPC, the HTTP
//! gateway, peer nodes): on this shard's store now, on another shard of
//! this node over the mesh, or on the owner node over a peer connection.
//! The front ends differ only in how they encode the answer.

use super::peer_client::Peers;
use crate::protocol::grpc::{Code, Status};
use crate::protocol::CacheOp;
use crate::shard::{Location, Mailbox, Op, Shard};
use crate::store::SetError;
use std::rc::Rc;
use std::time::Instant;

/// The answer of a call served by this shard, borrowed from its store.
pub enum Local<'a> {
    Get(Option<&'a [u8]>),
    Set(Result<bool, SetError>),
    Delete(bool),
}

/// Serves `op`. When this shard owns the key, `local` gets the answer at
/// once and this returns false; otherwise the answer will arrive in
/// `mailbox` tagged `tag` (as a `Reply`) and this returns true.
/// `forward` is false for calls a peer node sent us (at most one hop).
#[allow(clippy::too_many_arguments)]
pub fn dispatch(
    shard: &Shard,
    peers: &Peers,
    op: CacheOp,
    forward: bool,
    deadline: Option<Instant>,
    mailbox: &Rc<Mailbox>,
    tag: u32,
    local: impl FnOnce(Local<'_>),
) -> bool {
    match shard.locate(op.group().as_bytes(), op.key().as_bytes(), forward) {
        Location::Here => {
            let now = shard.now_ms();
            shard.with_store(|s| match &op {
                CacheOp::Get { group, key } => {
                    local(Local::Get(s.get(group.as_bytes(), key.as_bytes(), now)))
                }
                CacheOp::Set {
                    group,
                    key,
                    value,
                    ttl_ms,
                } => local(Local::Set(s.set(
                    group.as_bytes(),
                    key.as_bytes(),
                    value,
                    *ttl_ms,
                    now,
                ))),
                CacheOp::Delete { group, key } => local(Local::Delete(s.delete(
                    group.as_bytes(),
                    key.as_bytes(),
                    now,
                ))),
            });
            false
        }
        Location::Shard(owner) => {
            shard.submit(owner, Op::Cache(op), mailbox, tag);
            true
        }
        Location::Node(addr) => {
            let name = shard.node_name(addr);
            peers.forward(addr, &name, op, deadline, mailbox, tag);
            true
        }
    }
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
