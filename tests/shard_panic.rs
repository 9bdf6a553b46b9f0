//! A panic in a shard ends the whole node, naming the shard: never a
//! half-alive node whose dead core still sits in the listener group.
//! The debug build panics a shard on a Get in one reserved group
//! (`server::dispatch::PANIC_GROUP`); release builds have no such trigger,
//! so this test runs against this crate's debug binary only.

mod common;

use common::*;
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

#[tokio::test]
async fn a_panicking_shard_aborts_the_node_and_names_itself() {
    if external_bin() || !cfg!(debug_assertions) {
        // The trigger exists in debug builds of this crate only: fail
        // loudly rather than pass without testing anything.
        panic!(
            "run this test against this crate's debug binary (cargo test, no SHARDCACHE_TEST_BIN)"
        );
    }
    let node = Node::builder().shards(2).start();
    let mut c = node.client().await;
    // The node serves before the fault.
    assert!(
        c.set(set_req("", "k", b"v", 0))
            .await
            .unwrap()
            .into_inner()
            .stored
    );
    // Whichever shard owns this key panics; the call fails with the node.
    let r = c.get(req("shardcache.debug.panic", "any-key")).await;
    assert!(r.is_err(), "the call to a panicking shard returned {r:?}");
    let status = node
        .exit_within(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("the node outlived its shard's panic\n{}", node.log_tail()));
    assert_eq!(
        status.signal(),
        Some(6),
        "not SIGABRT: {status}\n{}",
        node.log_tail()
    );
    let log = node.log_tail();
    assert!(
        log.contains("shardcache: fatal: shard-") && log.contains("panicked"),
        "the log does not name the shard:\n{log}"
    );
}
