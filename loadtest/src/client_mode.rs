//! `--client tonic|sharded`: the same closed-loop workload driven through a
//! stock gRPC stack instead of this tool's own HTTP/2 client, so that the
//! routing client can be compared with what a service would otherwise use.
//!
//! - `tonic`: the generated tonic stub, `--connections` channels spread
//!   round-robin over the targets, the way a stock client talks to a
//!   cluster through any node (a key another node owns is forwarded).
//! - `sharded`: shardcache-client with the targets as seeds: every key goes
//!   to its owner node's owner shard (per-shard ports when the nodes have
//!   them), one channel per (node, shard).
//!
//! Both use tonic underneath, so what differs is where calls land. Closed
//! loop only: `--connections × --inflight` tasks each keep one call out.
//! With `--batch N` each call is a GetMany (SetMany) of N sampled keys.

use crate::grpc::{Op, OK};
use crate::proto;
use crate::runner::RunConfig;
use crate::stats::{PreloadReport, Report, Stats, TransportError};
use crate::workload::Workload;
use shardcache_client::pb::cache_client::CacheClient;
use shardcache_client::pb::ManyRequest;
use shardcache_client::Client;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint};

/// Which stack carries the calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientKind {
    Tonic,
    Sharded,
}

/// One worker's way to the cluster.
#[derive(Clone)]
enum Caller {
    Tonic(CacheClient<Channel>),
    Sharded(Client),
}

impl Caller {
    /// Runs one request; its gRPC status and, for a Get, whether it hit.
    async fn call(&mut self, op: Op, req: shardcache_client::pb::Request) -> (u32, Option<bool>) {
        match self {
            Caller::Tonic(c) => {
                let r = match op {
                    Op::Get => c.get(req).await.map(|r| Some(r.into_inner().found)),
                    _ => c.set(req).await.map(|_| None),
                };
                match r {
                    Ok(found) => (OK, found),
                    Err(s) => (s.code() as u32, None),
                }
            }
            Caller::Sharded(c) => {
                let r = match op {
                    Op::Get => c.get(&req.group, &req.key).await.map(|v| Some(v.is_some())),
                    _ => {
                        let ttl = (req.ttl_ms > 0).then(|| Duration::from_millis(req.ttl_ms));
                        c.set(&req.group, &req.key, req.value, ttl)
                            .await
                            .map(|_| None)
                    }
                };
                match r {
                    Ok(found) => (OK, found),
                    Err(e) => (e.code() as u32, None),
                }
            }
        }
    }
}

impl Caller {
    /// Runs one batch call of `reqs` (all Gets or all Sets); its status
    /// (the first failure's, item or call) and, for Gets, whether every
    /// key hit.
    async fn call_many(
        &mut self,
        op: Op,
        reqs: Vec<shardcache_client::pb::Request>,
    ) -> (u32, Option<bool>) {
        match self {
            Caller::Tonic(c) => {
                let many = ManyRequest { items: reqs };
                let r = match op {
                    Op::Get => c.get_many(many).await.map(|r| {
                        let rs = r.into_inner().results;
                        let failed = rs.iter().find(|x| x.code != 0).map(|x| x.code as u32);
                        (failed, Some(rs.iter().all(|x| x.found)))
                    }),
                    _ => c.set_many(many).await.map(|r| {
                        let rs = r.into_inner().results;
                        (rs.iter().find(|x| x.code != 0).map(|x| x.code as u32), None)
                    }),
                };
                match r {
                    Ok((failed, found)) => (failed.unwrap_or(OK), found),
                    Err(s) => (s.code() as u32, None),
                }
            }
            Caller::Sharded(c) => {
                let group = reqs.first().map(|r| r.group.clone()).unwrap_or_default();
                let r = match op {
                    Op::Get => {
                        let keys: Vec<&str> = reqs.iter().map(|r| r.key.as_str()).collect();
                        c.get_many(&group, &keys).await.map(|rs| {
                            let failed = rs
                                .iter()
                                .find_map(|x| x.as_ref().err())
                                .map(|e| e.code() as u32);
                            (failed, Some(rs.iter().all(|x| matches!(x, Ok(Some(_))))))
                        })
                    }
                    _ => {
                        let ttl = reqs
                            .first()
                            .and_then(|r| (r.ttl_ms > 0).then(|| Duration::from_millis(r.ttl_ms)));
                        let items: Vec<(&str, bytes::Bytes)> = reqs
                            .iter()
                            .map(|r| (r.key.as_str(), r.value.clone()))
                            .collect();
                        c.set_many(&group, &items, ttl).await.map(|rs| {
                            (
                                rs.iter()
                                    .find_map(|x| x.as_ref().err())
                                    .map(|e| e.code() as u32),
                                None,
                            )
                        })
                    }
                };
                match r {
                    Ok((failed, found)) => (failed.unwrap_or(OK), found),
                    Err(e) => (e.code() as u32, None),
                }
            }
        }
    }
}

/// Runs the load through `kind`, `batch` keys per call, and reports like
/// the default runner.
pub fn run(cfg: Arc<RunConfig>, kind: ClientKind, batch: u32) -> Report {
    let mut stats = Stats::new();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cfg.threads)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            stats.note_error(|| format!("cannot start the runtime: {e}"));
            return report(&cfg, stats, None, 0.0);
        }
    };
    let mut r = rt.block_on(drive(cfg.clone(), kind, batch as usize));
    r.batch = batch;
    r
}

async fn drive(cfg: Arc<RunConfig>, kind: ClientKind, batch: usize) -> Report {
    let mut stats = Stats::new();
    let seeds: Vec<String> = cfg.targets.iter().map(|t| t.addr.to_string()).collect();
    let callers: Vec<Caller> = match kind {
        ClientKind::Tonic => (0..cfg.connections)
            .map(|i| {
                let addr = cfg.targets[i % cfg.targets.len()].addr;
                let ch = Endpoint::from_shared(format!("http://{addr}"))
                    .expect("an http URI")
                    .connect_timeout(cfg.connect_timeout)
                    .tcp_nodelay(true)
                    .connect_lazy();
                Caller::Tonic(CacheClient::new(ch))
            })
            .collect(),
        ClientKind::Sharded => match Client::connect(&seeds).await {
            Ok(c) => vec![Caller::Sharded(c)],
            Err(e) => {
                stats.note_error(|| format!("shardcache-client cannot connect: {e}"));
                return report(&cfg, stats, None, 0.0);
            }
        },
    };

    let t0 = Instant::now();
    let preload = if cfg.preload {
        Some(preload(&cfg, &callers).await)
    } else {
        None
    };
    let preload_s = t0.elapsed().as_secs_f64();

    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let merged = Arc::new(Mutex::new(Stats::new()));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..cfg.connections * cfg.inflight {
        let mut caller = callers[i % callers.len()].clone();
        let mut work = Workload::new(cfg.workload.clone(), cfg.seed.wrapping_add(i as u64));
        let (measuring, stop, merged) = (measuring.clone(), stop.clone(), merged.clone());
        tasks.spawn(async move {
            let mut s = Stats::new();
            while !stop.load(Ordering::Relaxed) {
                let op = work.next_op();
                let started;
                let (status, found) = if batch > 1 {
                    let reqs = (0..batch).map(|_| to_pb(work.request(op, None))).collect();
                    started = Instant::now();
                    caller.call_many(op, reqs).await
                } else {
                    let req = to_pb(work.request(op, None));
                    started = Instant::now();
                    caller.call(op, req).await
                };
                if measuring.load(Ordering::Relaxed) {
                    s.sent(op);
                    s.response(op, status, found, started.elapsed().as_micros() as u64);
                }
            }
            if let Ok(mut m) = merged.lock() {
                m.merge(&s);
            }
        });
    }
    tokio::time::sleep(cfg.warmup).await;
    let measured_from = Instant::now();
    measuring.store(true, Ordering::Relaxed);
    tokio::time::sleep(cfg.duration.unwrap_or(Duration::from_secs(10))).await;
    measuring.store(false, Ordering::Relaxed);
    let duration = measured_from.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let grace = tokio::time::timeout(cfg.grace + Duration::from_secs(5), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if grace.is_err() {
        stats.transport_error(TransportError::Unfinished);
    }
    if let Ok(m) = merged.lock() {
        stats.merge(&m);
    }
    let mut r = report(&cfg, stats, preload.map(|p| (p, preload_s)), duration);
    r.mode = match kind {
        ClientKind::Tonic => "closed (tonic)",
        ClientKind::Sharded => "closed (shardcache-client)",
    };
    r
}

/// The same request as the client crate's message type.
fn to_pb(r: &proto::Request) -> shardcache_client::pb::Request {
    shardcache_client::pb::Request {
        group: r.group.clone(),
        key: r.key.clone(),
        value: r.value.clone(),
        ttl_ms: r.ttl_ms,
    }
}

/// Sets every key once, through the same stack.
async fn preload(cfg: &RunConfig, callers: &[Caller]) -> Stats {
    let mut s = Stats::new();
    let mut work = Workload::new(cfg.workload.clone(), cfg.seed);
    let mut caller = callers[0].clone();
    for k in 0..cfg.workload.key_count {
        let req = to_pb(work.request(Op::Preload, Some(k)));
        let started = Instant::now();
        let (status, _) = caller.call(Op::Set, req).await;
        s.sent(Op::Preload);
        s.response(
            Op::Preload,
            status,
            None,
            started.elapsed().as_micros() as u64,
        );
    }
    s
}

fn report(cfg: &RunConfig, stats: Stats, preload: Option<(Stats, f64)>, duration_s: f64) -> Report {
    let preload = preload.map(|(stats, duration_s)| PreloadReport { stats, duration_s });
    cfg.report("closed", stats, preload, duration_s)
}
