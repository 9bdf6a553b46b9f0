//! Command-line configuration: the `serve` flags, their defaults, and the
//! parsers for sizes ("64MiB") and durations ("30s"), so that a bad flag is
//! reported by name and exits with status 2 before any thread starts.

use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::time::Duration;

/// Largest key the contract allows, in bytes.
pub const MAX_KEY_BYTES: usize = 4096;

#[derive(Debug, Parser)]
#[command(
    name = "shardcache",
    version,
    about = "A shard-per-core in-memory cache served over gRPC (HTTP/2 on io_uring).",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// `shardcache` with no subcommand serves with these flags.
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a cache node (the default when no subcommand is given).
    Serve(ServeArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// gRPC listen address. Port 0 picks one free port shared by every shard.
    #[arg(long, default_value = "127.0.0.1:7070", value_parser = parse_addr)]
    pub listen: SocketAddr,

    /// Number of shards (one pinned thread each). Default: the CPUs this
    /// process may run on. More shards than CPUs is allowed.
    #[arg(long, value_parser = parse_shards)]
    pub shards: Option<usize>,

    /// Memory budget for cached data (e.g. 64MiB, 1GiB), split evenly over shards.
    #[arg(long, default_value = "1GiB", value_parser = parse_size)]
    pub memory: u64,

    /// Largest accepted value (e.g. 4MiB); a larger request message is refused
    /// with RESOURCE_EXHAUSTED.
    #[arg(long = "max-value", default_value = "4MiB", value_parser = parse_size)]
    pub max_value: u64,

    /// This node's identifier, reported by Stats. Default: the listen address.
    #[arg(long = "node-id")]
    pub node_id: Option<String>,

    /// Most client connections this node keeps open at once (over all shards).
    #[arg(long = "max-connections", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// Close a connection that has had no open stream and no traffic for this long (e.g. 300s, 5m).
    #[arg(long = "idle-timeout", default_value = "300s", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// How long an idle shard spins before sleeping in the kernel (e.g. 50us;
    /// 0 disables). Spinning cuts the cost of waking a shard for a cross-core
    /// hand-off from ~70 µs to ~7 µs, paid in CPU while traffic is intermittent.
    #[arg(long = "spin-before-park", default_value = "100us", value_parser = parse_duration)]
    pub spin_before_park: Duration,
}

impl Default for ServeArgs {
    fn default() -> Self {
        // Parsing an empty command line yields exactly the documented defaults.
        match Cli::try_parse_from(["shardcache"]) {
            Ok(cli) => cli.serve,
            Err(e) => panic!("built-in defaults must parse: {e}"),
        }
    }
}

impl ServeArgs {
    /// The shard count after defaults: the CPUs we may run on.
    pub fn shard_count(&self, allowed_cpus: usize) -> usize {
        self.shards.unwrap_or(allowed_cpus.max(1))
    }

    pub fn node_id(&self) -> String {
        self.node_id.clone().unwrap_or_else(|| self.listen.to_string())
    }
}

fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse::<SocketAddr>()
        .map_err(|_| format!("'{s}' is not an IP:PORT address (e.g. 127.0.0.1:7070)"))
}

fn parse_shards(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=1024).contains(&n) => Ok(n),
        _ => Err(format!("'{s}' is not a shard count between 1 and 1024")),
    }
}

/// Parses a byte size: a number with an optional unit B, KB/KiB, MB/MiB,
/// GB/GiB, TB/TiB (case-insensitive; K/M/G/T alone are binary units too).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || format!("'{s}' is not a size (examples: 4096, 64KiB, 16MiB, 1GiB)");
    if num.is_empty() {
        return Err(bad());
    }
    let n: f64 = num.parse().map_err(|_| bad())?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "kb" => 1000,
        "m" | "mib" => 1 << 20,
        "mb" => 1_000_000,
        "g" | "gib" => 1 << 30,
        "gb" => 1_000_000_000,
        "t" | "tib" => 1 << 40,
        "tb" => 1_000_000_000_000,
        _ => return Err(bad()),
    };
    let v = n * mult as f64;
    if !v.is_finite() || v < 0.0 || v > u64::MAX as f64 / 2.0 {
        return Err(bad());
    }
    Ok(v as u64)
}

/// Parses a duration: a number with unit ns, us, ms, s, m or h (e.g. 30s, 250ms).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || format!("'{s}' is not a duration (examples: 100us, 250ms, 30s, 5m)");
    if num.is_empty() {
        return Err(bad());
    }
    let n: f64 = num.parse().map_err(|_| bad())?;
    let secs = match unit.trim() {
        "ns" => n / 1e9,
        "us" | "µs" => n / 1e6,
        "ms" => n / 1e3,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "" if n == 0.0 => 0.0,
        _ => return Err(bad()),
    };
    if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("1gb"), Ok(1_000_000_000));
        assert_eq!(parse_size("1.5MiB"), Ok(3 << 19));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("12XB").is_err());
        assert!(parse_size("-1").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("100us"), Ok(Duration::from_micros(100)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn defaults_and_subcommand() {
        let d = ServeArgs::default();
        assert_eq!(d.listen, "127.0.0.1:7070".parse().unwrap());
        assert_eq!(d.memory, 1 << 30);
        assert_eq!(d.max_value, 4 << 20);
        let cli = Cli::try_parse_from(["shardcache", "serve", "--shards", "4", "--memory", "16MiB"]).unwrap();
        match cli.command {
            Some(Command::Serve(a)) => {
                assert_eq!(a.shards, Some(4));
                assert_eq!(a.memory, 16 << 20);
            }
            None => panic!("expected serve"),
        }
        let err = Cli::try_parse_from(["shardcache", "serve", "--shards", "0"]).unwrap_err();
        assert!(err.to_string().contains("--shards"), "{err}");
        let err = Cli::try_parse_from(["shardcache", "--memory", "lots"]).unwrap_err();
        assert!(err.to_string().contains("--memory"), "{err}");
    }
}
