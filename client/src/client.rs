//! The client: calls routed by the current topology, retries, batches
//! split by (node, shard), and the watch that keeps the topology current.

use crate::pb::cache_client::CacheClient;
use crate::pb::{self, ManyRequest, TopologyRequest};
use crate::topology::{self, Topology};
use crate::Error;
use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant};
use tokio::task::JoinSet;
use tonic::transport::Channel;
use tonic::Code;

/// How the client behaves; `Config::default()` suits most services.
#[derive(Debug, Clone)]
pub struct Config {
    /// Each call's deadline unless [`Client::with_timeout`] says otherwise;
    /// sent to the server as `grpc-timeout`.
    pub call_timeout: Duration,
    /// Connecting to a node, and asking it for its topology.
    pub connect_timeout: Duration,
    /// Retries of a call that failed UNAVAILABLE (never after its deadline).
    pub max_retries: u32,
    /// The first retry waits about this long; each next one twice as long
    /// (with ±50 % jitter), at most `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Items per batch call sent to one shard (the server's --max-batch).
    pub max_batch: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            call_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            max_retries: 3,
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_secs(1),
            max_batch: 1000,
        }
    }
}

/// A handle on the cluster; cheap to clone (all clones share connections
/// and topology). Dropping the last one stops its topology watch.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
    timeout: Duration,
}

struct Inner {
    config: Config,
    seeds: Vec<SocketAddr>,
    topology: RwLock<Arc<Topology>>,
    watch: tokio::task::AbortHandle,
    /// Serializes rebuilds (a watch update and a refresh after an error).
    rebuilding: tokio::sync::Mutex<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.watch.abort();
    }
}

impl Client {
    /// Connects with [`Config::default`]: asks the first seed that answers
    /// for the topology, then each member for its shard layout.
    pub async fn connect<S: AsRef<str>>(
        seeds: impl IntoIterator<Item = S>,
    ) -> Result<Client, Error> {
        Client::connect_with(seeds, Config::default()).await
    }

    pub async fn connect_with<S: AsRef<str>>(
        seeds: impl IntoIterator<Item = S>,
        config: Config,
    ) -> Result<Client, Error> {
        let mut addrs = Vec::new();
        for s in seeds {
            let s = s.as_ref();
            let a = tokio::net::lookup_host(s)
                .await
                .map_err(|e| Error::new(Code::InvalidArgument, format!("seed '{s}': {e}")))?;
            addrs.extend(a);
        }
        if addrs.is_empty() {
            return Err(Error::new(Code::InvalidArgument, "no seed addresses"));
        }
        let first = fetch(&addrs, &config).await?;
        let topology = Topology::build(first, None, config.connect_timeout).await?;
        let inner = Arc::new_cyclic(|weak: &Weak<Inner>| {
            let watch = tokio::spawn(watch(weak.clone())).abort_handle();
            Inner {
                config: config.clone(),
                seeds: addrs,
                topology: RwLock::new(Arc::new(topology)),
                watch,
                rebuilding: tokio::sync::Mutex::new(()),
            }
        });
        Ok(Client {
            timeout: config.call_timeout,
            inner,
        })
    }

    /// This client with another deadline for each of its calls.
    pub fn with_timeout(&self, timeout: Duration) -> Client {
        Client {
            inner: self.inner.clone(),
            timeout,
        }
    }

    /// The epoch of the ring the client routes by.
    pub fn epoch(&self) -> u64 {
        self.topology().epoch
    }

    /// Asks the cluster for the topology now (the watch does this by itself
    /// when the ring changes).
    pub async fn refresh(&self) -> Result<(), Error> {
        let known = self.inner.known_addrs();
        let t = fetch(&known, &self.inner.config).await?;
        self.inner.apply(t).await
    }

    /// The value of (group, key), or None when it is not cached.
    pub async fn get(&self, group: &str, key: &str) -> Result<Option<Bytes>, Error> {
        let r = self
            .call(
                group,
                key,
                true,
                |mut c, req| async move { c.get(req).await },
            )
            .await?;
        Ok(r.found.then_some(r.value))
    }

    /// Stores `value` under (group, key); `ttl` None never expires.
    pub async fn set(
        &self,
        group: &str,
        key: &str,
        value: impl Into<Bytes>,
        ttl: Option<Duration>,
    ) -> Result<(), Error> {
        let value = value.into();
        let ttl_ms = ttl_ms(ttl);
        self.call_with(group, key, true, value, ttl_ms, |mut c, req| async move {
            c.set(req).await
        })
        .await?;
        Ok(())
    }

    /// Deletes (group, key); true when it was there.
    pub async fn delete(&self, group: &str, key: &str) -> Result<bool, Error> {
        let r = self
            .call(
                group,
                key,
                true,
                |mut c, req| async move { c.delete(req).await },
            )
            .await?;
        Ok(r.deleted)
    }

    /// The values of `keys` in `group`, in order: one GetMany per (node,
    /// shard) that owns some of them, all at once.
    pub async fn get_many<K: AsRef<str>>(
        &self,
        group: &str,
        keys: &[K],
    ) -> Result<Vec<Result<Option<Bytes>, Error>>, Error> {
        let items = keys
            .iter()
            .map(|k| item(group, k.as_ref(), Bytes::new(), 0))
            .collect();
        let results = self.many(items, Kind::Get).await?;
        Ok(results
            .into_iter()
            .map(|r| r.map(|i| i.found.then_some(i.value)))
            .collect())
    }

    /// Stores every (key, value) of `items` in `group`, each with `ttl`.
    pub async fn set_many<K: AsRef<str>, V: Clone + Into<Bytes>>(
        &self,
        group: &str,
        items: &[(K, V)],
        ttl: Option<Duration>,
    ) -> Result<Vec<Result<(), Error>>, Error> {
        let ttl_ms = ttl_ms(ttl);
        let items = items
            .iter()
            .map(|(k, v)| item(group, k.as_ref(), v.clone().into(), ttl_ms))
            .collect();
        let results = self.many(items, Kind::Set).await?;
        Ok(results.into_iter().map(|r| r.map(|_| ())).collect())
    }

    /// Deletes `keys` in `group`; for each, whether it was there.
    pub async fn delete_many<K: AsRef<str>>(
        &self,
        group: &str,
        keys: &[K],
    ) -> Result<Vec<Result<bool, Error>>, Error> {
        let items = keys
            .iter()
            .map(|k| item(group, k.as_ref(), Bytes::new(), 0))
            .collect();
        let results = self.many(items, Kind::Delete).await?;
        Ok(results.into_iter().map(|r| r.map(|i| i.found)).collect())
    }

    fn topology(&self) -> Arc<Topology> {
        self.inner.current()
    }

    async fn call<R, F, Fut>(&self, group: &str, key: &str, retry: bool, f: F) -> Result<R, Error>
    where
        F: Fn(CacheClient<Channel>, tonic::Request<pb::Request>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<R>, tonic::Status>>,
    {
        self.call_with(group, key, retry, Bytes::new(), 0, f).await
    }

    /// One key's call on its owner's shard, retried on UNAVAILABLE within
    /// the deadline (with a topology refresh between attempts).
    async fn call_with<R, F, Fut>(
        &self,
        group: &str,
        key: &str,
        retry: bool,
        value: Bytes,
        ttl_ms: u64,
        f: F,
    ) -> Result<R, Error>
    where
        F: Fn(CacheClient<Channel>, tonic::Request<pb::Request>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<R>, tonic::Status>>,
    {
        let deadline = Instant::now() + self.timeout;
        let mut attempt = 0;
        loop {
            let topology = self.topology();
            let owner = topology.owner(group, key);
            let (addr, channel) = (owner.addr, owner.channel(group, key).clone());
            let mut req = tonic::Request::new(item(group, key, value.clone(), ttl_ms));
            let left = deadline.saturating_duration_since(Instant::now());
            req.set_timeout(left);
            let e = match tokio::time::timeout(left, f(CacheClient::new(channel), req)).await {
                Ok(Ok(r)) => return Ok(r.into_inner()),
                Ok(Err(status)) => Error::from_call(status, addr),
                Err(_) => Error::new(Code::DeadlineExceeded, "the call's deadline passed"),
            };
            if !self.may_retry(&e, retry, attempt, deadline).await {
                return Err(e);
            }
            attempt += 1;
        }
    }

    /// Whether to try a failed call again; waits the backoff first and
    /// refreshes the topology (the owner may have left the ring).
    async fn may_retry(&self, e: &Error, retry: bool, attempt: u32, deadline: Instant) -> bool {
        let c = &self.inner.config;
        if !retry || e.code() != Code::Unavailable || attempt >= c.max_retries {
            return false;
        }
        let backoff = backoff(c, attempt);
        if Instant::now() + backoff >= deadline {
            return false;
        }
        tokio::time::sleep(backoff).await;
        let _ = tokio::time::timeout(
            deadline.saturating_duration_since(Instant::now()),
            self.refresh(),
        )
        .await;
        true
    }

    /// A batch: items grouped by (owner node, shard), each group sent as
    /// batch calls of at most `max_batch` items, all concurrently; results
    /// put back in request order. A group whose calls fail (after retries)
    /// fails its items with that error.
    async fn many(
        &self,
        items: Vec<pb::Request>,
        kind: Kind,
    ) -> Result<Vec<Result<ItemOut, Error>>, Error> {
        let deadline = Instant::now() + self.timeout;
        let mut results: Vec<Option<Result<ItemOut, Error>>> = vec![None; items.len()];
        let mut pending: Vec<usize> = (0..items.len()).collect();
        let mut attempt = 0;
        loop {
            let t = self.topology();
            // (node index, channel index) -> item indexes.
            let mut groups: std::collections::BTreeMap<(usize, usize), Vec<usize>> =
                Default::default();
            for &i in &pending {
                let (g, k) = (&items[i].group, &items[i].key);
                let node = t.ring.owner_index(g.as_bytes(), k.as_bytes());
                groups
                    .entry((node, t.nodes[node].channel_index(g, k)))
                    .or_default()
                    .push(i);
            }
            // One call per (node, shard) and chunk, all at once; a batch
            // that is a single call needs no task of its own.
            let mut sends = Vec::new();
            for ((node, ch), idx) in groups {
                let addr = t.nodes[node].addr;
                let channel = t.nodes[node].channel_at(ch).clone();
                for chunk in idx.chunks(self.inner.config.max_batch.max(1)) {
                    let req = ManyRequest {
                        items: chunk.iter().map(|&i| items[i].clone()).collect(),
                    };
                    let left = deadline.saturating_duration_since(Instant::now());
                    let to = (addr, channel.clone());
                    sends.push(send_many(to, kind, req, left, chunk.to_vec()));
                }
            }
            let mut outcomes = Vec::with_capacity(sends.len());
            if sends.len() == 1 {
                if let Some(call) = sends.pop() {
                    outcomes.push(call.await);
                }
            } else {
                let mut calls = JoinSet::new();
                for call in sends {
                    calls.spawn(call);
                }
                while let Some(joined) = calls.join_next().await {
                    // A panicked task: its items stay unanswered.
                    if let Ok(outcome) = joined {
                        outcomes.push(outcome);
                    }
                }
            }
            let mut failed = Vec::new();
            let mut error = None;
            for (chunk, outcome) in outcomes {
                match outcome {
                    Ok(outs) => {
                        for (i, out) in chunk.into_iter().zip(outs) {
                            results[i] = Some(out);
                        }
                    }
                    Err(e) => {
                        failed.extend(chunk);
                        error = Some(e);
                    }
                }
            }
            let Some(e) = error else { break };
            if !self.may_retry(&e, true, attempt, deadline).await {
                for i in failed {
                    results[i] = Some(Err(e.clone()));
                }
                break;
            }
            pending = failed;
            attempt += 1;
        }
        Ok(results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| Err(Error::new(Code::Internal, "no answer for this item")))
            })
            .collect())
    }
}

/// What a batch item came to: Get (found, value), Set (found = stored),
/// Delete (found = deleted).
#[derive(Clone, Debug)]
struct ItemOut {
    found: bool,
    value: Bytes,
}

#[derive(Clone, Copy)]
enum Kind {
    Get,
    Set,
    Delete,
}

/// One batch call: its items' results in order, or the call's error.
async fn send_many(
    (addr, channel): (SocketAddr, Channel),
    kind: Kind,
    req: ManyRequest,
    timeout: Duration,
    chunk: Vec<usize>,
) -> (Vec<usize>, Result<Vec<Result<ItemOut, Error>>, Error>) {
    let n = req.items.len();
    let mut c = CacheClient::new(channel);
    let mut r = tonic::Request::new(req);
    r.set_timeout(timeout);
    let out = async {
        let call = |s: tonic::Status| Error::from_call(s, addr);
        let outs: Vec<Result<ItemOut, Error>> = match kind {
            Kind::Get => c
                .get_many(r)
                .await
                .map_err(call)?
                .into_inner()
                .results
                .into_iter()
                .map(|x| match Error::from_item(x.code, &x.message) {
                    Some(e) => Err(e),
                    None => Ok(ItemOut {
                        found: x.found,
                        value: x.value,
                    }),
                })
                .collect(),
            Kind::Set => c
                .set_many(r)
                .await
                .map_err(call)?
                .into_inner()
                .results
                .into_iter()
                .map(|x| match Error::from_item(x.code, &x.message) {
                    Some(e) => Err(e),
                    None => Ok(ItemOut {
                        found: x.stored,
                        value: Bytes::new(),
                    }),
                })
                .collect(),
            Kind::Delete => c
                .delete_many(r)
                .await
                .map_err(call)?
                .into_inner()
                .results
                .into_iter()
                .map(|x| match Error::from_item(x.code, &x.message) {
                    Some(e) => Err(e),
                    None => Ok(ItemOut {
                        found: x.deleted,
                        value: Bytes::new(),
                    }),
                })
                .collect(),
        };
        if outs.len() != n {
            return Err(Error::new(
                Code::Internal,
                format!("{n} items sent, {} results received", outs.len()),
            ));
        }
        Ok(outs)
    };
    let outcome = match tokio::time::timeout(timeout, out).await {
        Ok(r) => r,
        Err(_) => Err(Error::new(
            Code::DeadlineExceeded,
            "the call's deadline passed",
        )),
    };
    (chunk, outcome)
}

impl Inner {
    /// Routes by the topology `t` describes from now on (when its epoch is
    /// not the current one).
    async fn apply(&self, t: pb::TopologyResponse) -> Result<(), Error> {
        let _one = self.rebuilding.lock().await;
        let current = self.current();
        if t.epoch == current.epoch {
            return Ok(());
        }
        let next = Topology::build(t, Some(&current), self.config.connect_timeout).await?;
        match self.topology.write() {
            Ok(mut w) => *w = Arc::new(next),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(next),
        }
        Ok(())
    }

    /// Every member's address, then the seeds: whom to ask for a topology.
    fn known_addrs(&self) -> Vec<SocketAddr> {
        let mut addrs: Vec<SocketAddr> = self.current().nodes.iter().map(|n| n.addr).collect();
        for s in &self.seeds {
            if !addrs.contains(s) {
                addrs.push(*s);
            }
        }
        addrs
    }

    fn current(&self) -> Arc<Topology> {
        match self.topology.read() {
            Ok(t) => t.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

/// The topology from the first of `addrs` that answers.
/// A server of the contract that has no Topology call (an older node, or
/// another implementation) is routed to as a stock client would: every
/// call to the first such seed, which serves or forwards it.
async fn fetch(addrs: &[SocketAddr], config: &Config) -> Result<pb::TopologyResponse, Error> {
    let mut last = Error::new(Code::Unavailable, "no node to ask");
    let mut without_topology = None;
    for &a in addrs {
        match topology::ask(
            topology::channel(a, config.connect_timeout),
            config.connect_timeout,
        )
        .await
        {
            Ok(t) => return Ok(t),
            Err(e) if e.code() == Code::Unimplemented => {
                without_topology.get_or_insert(a);
            }
            Err(e) => last = Error::new(e.code(), format!("{a}: {}", e.message())),
        }
    }
    match without_topology {
        Some(a) => Ok(topology::lone(a)),
        None => Err(last),
    }
}

/// Keeps the topology current: a WatchTopology stream on one member (or
/// seed) after another, rebuilding on every new epoch; after a failure it
/// backs off and moves on to the next address. Ends with the client.
async fn watch(inner: Weak<Inner>) {
    let mut attempt = 0u32;
    let mut next = 0usize;
    loop {
        let (addr, config) = {
            let Some(i) = inner.upgrade() else { return };
            let addrs = i.known_addrs();
            next = next.wrapping_add(1);
            (addrs[next % addrs.len()], i.config.clone())
        };
        let channel = topology::channel(addr, config.connect_timeout);
        let mut pause = backoff(&config, attempt);
        match CacheClient::new(channel)
            .watch_topology(TopologyRequest {})
            .await
        {
            Ok(stream) => {
                let mut stream = stream.into_inner();
                while let Ok(Some(t)) = stream.message().await {
                    attempt = 0;
                    let Some(i) = inner.upgrade() else { return };
                    let _ = i.apply(t).await;
                }
            }
            // A node without the watch: ask again now and then (it may be
            // upgraded), not at the pace of failures.
            Err(s) if s.code() == Code::Unimplemented => pause = UNWATCHABLE_PAUSE,
            Err(_) => {}
        }
        tokio::time::sleep(pause).await;
        attempt = attempt.saturating_add(1);
    }
}

/// How long the watch waits before asking a node without WatchTopology again.
const UNWATCHABLE_PAUSE: Duration = Duration::from_secs(30);

/// The wait before retry `attempt` (0-based): initial × 2^attempt, capped,
/// with ±50 % jitter so that clients do not retry in step.
fn backoff(c: &Config, attempt: u32) -> Duration {
    let base = c
        .initial_backoff
        .saturating_mul(1u32 << attempt.min(16))
        .min(c.max_backoff);
    let jitter = jitter_unit(); // 0.0 ..= 1.0
    base.mul_f64(0.5 + jitter)
}

/// A cheap pseudo-random number in [0, 1]: retries need spread, not
/// unpredictability.
fn jitter_unit() -> f64 {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0x9e37_79b9, |d| d.as_nanos() as u64)
                | 1,
        );
    }
    STATE.with(|s| {
        // xorshift64
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        (x >> 11) as f64 / (1u64 << 53) as f64
    })
}

fn item(group: &str, key: &str, value: Bytes, ttl_ms: u64) -> pb::Request {
    pb::Request {
        group: group.to_string(),
        key: key.to_string(),
        value,
        ttl_ms,
    }
}

fn ttl_ms(ttl: Option<Duration>) -> u64 {
    ttl.map_or(0, |t| {
        u64::try_from(t.as_millis()).unwrap_or(u64::MAX).max(1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let c = Config::default();
        for attempt in 0..20 {
            let want = c
                .initial_backoff
                .saturating_mul(1 << attempt.min(16))
                .min(c.max_backoff);
            let got = backoff(&c, attempt);
            assert!(
                got >= want / 2 && got <= want * 3 / 2,
                "{attempt}: {got:?} vs {want:?}"
            );
        }
        let samples: Vec<Duration> = (0..8).map(|_| backoff(&c, 3)).collect();
        assert!(
            samples.windows(2).any(|w| w[0] != w[1]),
            "jitter: {samples:?}"
        );
    }

    #[test]
    fn ttls_round_up_to_a_millisecond_and_none_never_expires() {
        assert_eq!(ttl_ms(None), 0);
        assert_eq!(ttl_ms(Some(Duration::from_micros(10))), 1);
        assert_eq!(ttl_ms(Some(Duration::from_secs(2))), 2000);
    }
}
