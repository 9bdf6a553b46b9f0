//! Read-through groups, as groupcache users know them: a group may name a
//! source of truth, and a Get that misses is filled from it once, by the
//! key's owner shard on the key's owner node, however many callers ask at
//! the same moment.
//!
//! - this file: a group's settings ([`GroupSpec`]), the [`Loader`] trait
//!   (the source of truth: an HTTP origin, or code given by a program that
//!   embeds a node) and the error a load ends with;
//! - `origin.rs`: the HTTP origin loader, on the shard's own io_uring;
//! - `flight.rs`: single-flight bookkeeping, which callers wait on which load;
//! - `negative.rs`: "not found" answers remembered for `negative_ttl`.
//!
//! Nothing here knows about shards or protocols; the server composes them.

mod flight;
mod negative;
mod origin;

pub use flight::{Join, SingleFlight};
pub use negative::NegativeCache;
pub use origin::HttpOrigin;

use crate::protocol::grpc::{Code, Status};
use bytes::Bytes;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// What a load returns: the value, `None` when the source has no such key.
pub type LoadResult = Result<Option<Bytes>, LoadError>;

/// The future of one load. It runs on the shard that owns the key, on that
/// shard's executor (glommio), so it need not be `Send`; it must never
/// block the thread (hand blocking work to a thread of your own and await
/// its answer).
pub type LoadFuture<'a> = Pin<Box<dyn Future<Output = LoadResult> + 'a>>;

/// A group's source of truth.
///
/// ```
/// use shardcache::groups::{LoadFuture, Loader};
/// struct Squares;
/// impl Loader for Squares {
///     fn load<'a>(&'a self, _group: &'a str, key: &'a str) -> LoadFuture<'a> {
///         Box::pin(async move {
///             Ok(key.parse::<u64>().ok().map(|n| (n * n).to_string().into()))
///         })
///     }
///     fn describe(&self) -> String {
///         "the squares".into()
///     }
/// }
/// ```
pub trait Loader: Send + Sync + 'static {
    /// Loads `key` of `group`: `Ok(Some(value))`, `Ok(None)` (no such key),
    /// or an error for every caller waiting on this load.
    fn load<'a>(&'a self, group: &'a str, key: &'a str) -> LoadFuture<'a>;

    /// Names the source in error messages, e.g. its URL.
    fn describe(&self) -> String;
}

/// Why a load gave no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadError {
    /// The source answered with an error or could not be reached.
    Failed(String),
    /// No answer within the group's `load_timeout`.
    TimedOut(Duration),
}

impl LoadError {
    /// The status every caller of a failed load gets.
    pub fn status(&self, group: &str, key: &str, source: &str) -> Status {
        match self {
            LoadError::Failed(why) => Status::new(
                Code::Unavailable,
                format!("loading {group}/{key} from {source} failed: {why}"),
            ),
            LoadError::TimedOut(t) => Status::new(
                Code::DeadlineExceeded,
                format!(
                    "loading {group}/{key} from {source} took longer than {} ms (load_timeout)",
                    t.as_millis()
                ),
            ),
        }
    }
}

/// One declared group.
#[derive(Clone)]
pub struct GroupSpec {
    pub name: String,
    /// Fills misses; None for a plain cache group.
    pub loader: Option<Arc<dyn Loader>>,
    /// TTL of loaded values; zero = never expire.
    pub ttl: Duration,
    /// A load that takes longer fails (DEADLINE_EXCEEDED) for all its callers.
    pub load_timeout: Duration,
    /// How long a "not found" from the source is remembered; zero = not at all.
    pub negative_ttl: Duration,
}

impl std::fmt::Debug for GroupSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupSpec")
            .field("name", &self.name)
            .field("loader", &self.loader.as_ref().map(|l| l.describe()))
            .field("ttl", &self.ttl)
            .field("load_timeout", &self.load_timeout)
            .field("negative_ttl", &self.negative_ttl)
            .finish()
    }
}

/// Defaults of a group's options.
pub const DEFAULT_LOAD_TIMEOUT: Duration = Duration::from_secs(2);

/// The declared groups of a node, looked up by name on a miss.
#[derive(Clone, Debug, Default)]
pub struct Groups {
    specs: hashbrown::HashMap<String, Arc<GroupSpec>>,
}

impl Groups {
    pub fn new(specs: impl IntoIterator<Item = GroupSpec>) -> Groups {
        Groups {
            specs: specs
                .into_iter()
                .map(|g| (g.name.clone(), Arc::new(g)))
                .collect(),
        }
    }

    /// The group's settings when it fills misses from a source.
    pub fn loading(&self, group: &str) -> Option<&Arc<GroupSpec>> {
        self.specs.get(group).filter(|g| g.loader.is_some())
    }

    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.specs.keys().map(String::as_str)
    }
}
