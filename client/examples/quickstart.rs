//! Connects to a node, writes and reads a few keys one by one and in a
//! batch, and prints where the client sends them.
//!
//!     cargo run -p shardcache-client --example quickstart -- 127.0.0.1:7070
//!
//! Start the node with `--shard-ports 7100` (say) so that each key goes
//! straight to its shard's port; without it the client uses the shared one.

use shardcache_client::Client;
use std::time::Duration;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let seed = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7070".into());
    let client = Client::connect([seed]).await?;
    println!("routing by ring epoch {}", client.epoch());

    client
        .set("demo", "greeting", "hello", Some(Duration::from_secs(60)))
        .await?;
    let v = client.get("demo", "greeting").await?;
    println!("greeting = {:?}", v.as_deref().map(String::from_utf8_lossy));

    let items: Vec<(String, String)> = (0..10)
        .map(|i| (format!("k{i}"), format!("v{i}")))
        .collect();
    let stored = client.set_many("demo", &items, None).await?;
    println!(
        "stored {} of {}",
        stored.iter().filter(|r| r.is_ok()).count(),
        items.len()
    );
    let keys: Vec<&str> = items
        .iter()
        .map(|(k, _)| k.as_str())
        .chain(["absent"])
        .collect();
    for (k, r) in keys.iter().zip(client.get_many("demo", &keys).await?) {
        match r {
            Ok(Some(v)) => println!("{k} = {}", String::from_utf8_lossy(&v)),
            Ok(None) => println!("{k}: not cached"),
            Err(e) => println!("{k}: {e}"),
        }
    }
    Ok(())
}
