//! A program that embeds a shardcache node and fills a group's misses from
//! code, the groupcache way: every Get of `squares/N` that misses is
//! computed once by the loader (however many callers ask at once), then
//! served from the cache.
//!
//!     cargo run --example embedded_loader
//!
//! It starts the node on a free port, reads a few keys over gRPC with a
//! stock tonic client, prints what it got and how often the loader ran, and
//! shuts the node down. `cargo test --example embedded_loader` runs it with
//! assertions.

use shardcache::embed::{GroupOptions, NodeBuilder};
use shardcache::groups::{LoadFuture, Loader};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

mod pb {
    include!(concat!(env!("OUT_DIR"), "/client/cache.rs"));
}

/// The source of truth: squares of numbers, counting how often it is asked.
#[derive(Default)]
struct Squares {
    calls: AtomicUsize,
}

impl Loader for Squares {
    fn load<'a>(&'a self, _group: &'a str, key: &'a str) -> LoadFuture<'a> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            // A key that is not a number does not exist: a miss, not an error.
            Ok(key
                .parse::<u64>()
                .ok()
                .map(|n| n.saturating_mul(n).to_string().into()))
        })
    }

    fn describe(&self) -> String {
        "the squares loader".into()
    }
}

/// What one run saw: (key, value) pairs and the loader's call count.
struct Outcome {
    values: Vec<(String, Option<String>)>,
    loader_calls: usize,
}

fn run() -> Result<Outcome, Box<dyn std::error::Error>> {
    let squares = Arc::new(Squares::default());
    let node = NodeBuilder::new()
        .args(["--listen", "127.0.0.1:0", "--http", "off", "--shards", "2"])
        .args(["--memory", "64MiB"])
        .group(
            "squares",
            squares.clone(),
            GroupOptions {
                ttl: Duration::from_secs(60),
                ..GroupOptions::default()
            },
        )
        .start()?;
    println!("node listening on {}", node.addr());

    let url = format!("http://{}", node.addr());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let values = rt.block_on(async move {
        let mut client = pb::cache_client::CacheClient::connect(url).await?;
        let mut values = Vec::new();
        // 12 is asked three times: loaded once, then served from the cache.
        for key in ["12", "12", "7", "12", "not-a-number"] {
            let r = client
                .get(pb::Request {
                    group: "squares".into(),
                    key: key.into(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            let v = r
                .found
                .then(|| String::from_utf8_lossy(&r.value).into_owned());
            println!("squares/{key} = {v:?}");
            values.push((key.to_string(), v));
        }
        Ok::<_, Box<dyn std::error::Error>>(values)
    })?;
    let loader_calls = squares.calls.load(Ordering::SeqCst);
    node.shutdown()?;
    Ok(Outcome {
        values,
        loader_calls,
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = run()?;
    println!(
        "{} Gets, {} loads: each key was loaded once",
        out.values.len(),
        out.loader_calls
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_example_loads_each_key_once_and_serves_it_from_the_cache() {
        let out = super::run().expect("the example runs");
        let got: Vec<(&str, Option<&str>)> = out
            .values
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                ("12", Some("144")),
                ("12", Some("144")),
                ("7", Some("49")),
                ("12", Some("144")),
                ("not-a-number", None),
            ]
        );
        // 12, 7 and not-a-number: one load each.
        assert_eq!(out.loader_calls, 3);
    }
}
