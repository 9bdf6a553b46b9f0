//! Command-line flags: their parsers (durations, value-size ranges, rates),
//! defaults and the cross-flag checks, so that every bad flag is reported by
//! clap with the flag's name and exits with status 2 before any connection.

use clap::{CommandFactory, Parser};
use std::time::Duration;

/// Largest key the contract allows, in bytes.
pub const MAX_KEY_BYTES: usize = 4096;
/// Largest value this tool will generate (the server's default limit is 4 MiB;
/// larger values are allowed so that the server's refusal can be tested).
pub const MAX_VALUE_BYTES: usize = 64 << 20;
/// Closed-loop default for `--inflight`.
pub const DEFAULT_CLOSED_INFLIGHT: usize = 16;
/// Open-loop default for `--inflight` (a cap, not a target).
pub const DEFAULT_OPEN_INFLIGHT: usize = 1024;
/// The run length when neither `--duration` nor `--requests` is given.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Parser)]
#[command(
    name = "shardcache-loadtest",
    version,
    about = "Load generator for the cache.Cache gRPC contract (shardcache or any compatible server).",
    after_help = "Closed loop (default): --connections C --inflight M keeps M requests outstanding per connection.\n\
                  Open loop: --rate R sends R requests/s in total at fixed intervals; latency counts from each\n\
                  request's scheduled send time (coordinated omission corrected)."
)]
pub struct Args {
    /// Server address HOST:PORT; repeat or comma-separate for several
    /// (connections are assigned round-robin).
    #[arg(short = 't', long = "target", value_delimiter = ',', default_value = "127.0.0.1:7070", value_parser = parse_target)]
    pub targets: Vec<String>,

    /// OS threads, each running a single-threaded runtime; connections are
    /// spread over them.
    #[arg(long, default_value_t = 1, value_parser = parse_positive)]
    pub threads: usize,

    /// HTTP/2 connections in total.
    #[arg(short = 'c', long, default_value_t = 4, value_parser = parse_positive)]
    pub connections: usize,

    /// Closed loop: requests kept outstanding per connection (default 16).
    /// Open loop: the most outstanding per connection before further
    /// scheduled requests wait locally (default 1024). Either way also capped
    /// by the server's MAX_CONCURRENT_STREAMS.
    #[arg(short = 'm', long, value_parser = parse_positive)]
    pub inflight: Option<usize>,

    /// Open loop: total requests per second over all connections.
    #[arg(short = 'r', long, value_parser = parse_rate)]
    pub rate: Option<f64>,

    /// Fraction of requests that are Gets (the rest are Sets), 0..=1.
    #[arg(long = "get-ratio", default_value_t = 0.9, value_parser = parse_ratio)]
    pub get_ratio: f64,

    /// Number of distinct keys.
    #[arg(long, default_value_t = 100_000, value_parser = parse_positive_u64)]
    pub keys: u64,

    /// Key length in bytes: "k" followed by the zero-padded key number.
    #[arg(long = "key-size", default_value_t = 16, value_parser = parse_key_size)]
    pub key_size: usize,

    /// Zipf exponent for key popularity (e.g. 0.99); absent = uniform.
    #[arg(long, value_parser = parse_zipf)]
    pub zipf: Option<f64>,

    /// Value size in bytes for Sets: N, or a range A..B (half-open) or A..=B,
    /// drawn uniformly per request.
    #[arg(long = "value-size", default_value = "64", value_parser = parse_value_size)]
    pub value_size: ValueSize,

    /// Cache group (namespace) of every request.
    #[arg(long, default_value = "")]
    pub group: String,

    /// TTL of every Set in milliseconds (0 = never expires).
    #[arg(long = "ttl-ms", default_value_t = 0)]
    pub ttl_ms: u64,

    /// Set every key once before measuring (reported separately).
    #[arg(long)]
    pub preload: bool,

    /// Measured run length (e.g. 10s, 500ms, 2m). Default 10s unless
    /// --requests is given.
    #[arg(short = 'd', long, value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Stop after this many measured requests (whichever of --duration and
    /// --requests comes first).
    #[arg(short = 'n', long, value_parser = parse_positive_u64)]
    pub requests: Option<u64>,

    /// Load applied before measuring starts, not recorded (e.g. 2s).
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub warmup: Duration,

    /// How long requests still in flight at the end may take to complete;
    /// those still outstanding after it count as transport error "unfinished".
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub grace: Duration,

    /// TCP connect timeout.
    #[arg(long = "connect-timeout", default_value = "2s", value_parser = parse_nonzero_duration)]
    pub connect_timeout: Duration,

    /// Without --duration (and during --preload): a connection that cannot
    /// reconnect for this long gives up, and one that receives nothing for
    /// this long with requests in flight is dropped (they count as
    /// "timeout"), so a run bounded only by --requests still ends when the
    /// server is gone or hangs.
    #[arg(long = "give-up", default_value = "5s", value_parser = parse_nonzero_duration)]
    pub give_up: Duration,

    /// How request headers are HPACK-coded. `nghttp2` (default): as nghttp2
    /// and h2load send them: strings Huffman-coded, `:path` a literal without
    /// indexing on every request, the rest indexed, a `user-agent`.
    /// `indexed`: every field indexed and no Huffman, so after the first
    /// request a block is one byte per field (the cheapest a server can get).
    #[arg(long = "headers", value_enum, default_value = "nghttp2")]
    pub headers: HeaderStyle,

    /// Seed for key, op and value-size choices (default: time-based).
    #[arg(long)]
    pub seed: Option<u64>,

    /// Which client carries the calls. `native` (default): this tool's own
    /// HTTP/2 client (every mode). `tonic`: the stock tonic stub over
    /// --connections channels spread over the targets. `sharded`:
    /// shardcache-client, the targets as seeds, every key sent to its
    /// owner node and shard. tonic and sharded run closed loop only, and
    /// --requests does not bound them (use --duration).
    #[arg(long = "client", value_enum, default_value = "native")]
    pub client: ClientChoice,

    /// With --client tonic|sharded: keys per call. Above 1 every call is a
    /// batch (GetMany for Gets, SetMany for Sets) of this many sampled keys;
    /// counts and latencies are per call.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch: u32,

    /// Print exactly one JSON object on stdout instead of the human summary.
    #[arg(long)]
    pub json: bool,

    /// Never draw the live progress line (it is drawn only on a terminal anyway).
    #[arg(long = "no-progress")]
    pub no_progress: bool,
}

/// See `Args::client`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ClientChoice {
    Native,
    Tonic,
    Sharded,
}

/// See `Args::headers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum HeaderStyle {
    Nghttp2,
    Indexed,
}

/// Inclusive range of value sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValueSize {
    pub min: usize,
    pub max: usize,
}

impl Args {
    /// Parses `std::env::args`, exiting with status 2 on any bad flag or
    /// inconsistent combination.
    pub fn parse_or_exit() -> Args {
        let args = Args::parse();
        if let Err(msg) = args.validate() {
            Args::command()
                .error(clap::error::ErrorKind::ArgumentConflict, msg)
                .exit();
        }
        args
    }

    /// Checks that need more than one flag.
    pub fn validate(&self) -> Result<(), String> {
        let digits = decimal_digits(self.keys - 1);
        if self.key_size < 1 + digits {
            return Err(format!(
                "--key-size {} is too small for --keys {}: keys are \"k\" + {} digits, so at least {} bytes",
                self.key_size,
                self.keys,
                digits,
                1 + digits
            ));
        }
        if self.connections < self.threads {
            return Err(format!(
                "--threads {} exceeds --connections {}: a thread without a connection would idle",
                self.threads, self.connections
            ));
        }
        if let Some(rate) = self.rate {
            // Below one request per connection per day the schedule means nothing.
            if rate * 86_400.0 < self.connections as f64 {
                return Err(format!(
                    "--rate {rate} is too low for {} connections",
                    self.connections
                ));
            }
        }
        if self.duration == Some(Duration::ZERO) {
            return Err("--duration must be greater than 0".into());
        }
        if self.batch > 1 && self.client == ClientChoice::Native {
            return Err("--batch needs --client tonic or --client sharded".into());
        }
        if self.client != ClientChoice::Native && (self.rate.is_some() || self.requests.is_some()) {
            return Err(
                "--client tonic and --client sharded run closed loop for --duration only: \
                 drop --rate and --requests"
                    .into(),
            );
        }
        Ok(())
    }

    /// The measured run length, if bounded by time.
    pub fn effective_duration(&self) -> Option<Duration> {
        match (self.duration, self.requests) {
            (Some(d), _) => Some(d),
            (None, Some(_)) => None,
            (None, None) => Some(DEFAULT_DURATION),
        }
    }

    pub fn effective_inflight(&self) -> usize {
        self.inflight.unwrap_or(if self.rate.is_some() {
            DEFAULT_OPEN_INFLIGHT
        } else {
            DEFAULT_CLOSED_INFLIGHT
        })
    }
}

pub fn decimal_digits(mut n: u64) -> usize {
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

fn parse_positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("not a whole number: {e}")),
    }
}

fn parse_positive_u64(s: &str) -> Result<u64, String> {
    let s = s.replace('_', "");
    match s.parse::<u64>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("not a whole number: {e}")),
    }
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let r: f64 = s
        .replace('_', "")
        .parse()
        .map_err(|e| format!("not a number: {e}"))?;
    if !r.is_finite() || r <= 0.0 {
        return Err("must be a positive number of requests per second".into());
    }
    Ok(r)
}

fn parse_ratio(s: &str) -> Result<f64, String> {
    let r: f64 = s.parse().map_err(|e| format!("not a number: {e}"))?;
    if !(0.0..=1.0).contains(&r) {
        return Err("must be between 0 and 1".into());
    }
    Ok(r)
}

fn parse_zipf(s: &str) -> Result<f64, String> {
    let z: f64 = s.parse().map_err(|e| format!("not a number: {e}"))?;
    if !z.is_finite() || z < 0.0 {
        return Err("the Zipf exponent must be a finite number >= 0".into());
    }
    Ok(z)
}

fn parse_key_size(s: &str) -> Result<usize, String> {
    let n = parse_positive(s)?;
    if n > MAX_KEY_BYTES {
        return Err(format!("keys are at most {MAX_KEY_BYTES} bytes"));
    }
    Ok(n)
}

fn parse_target(s: &str) -> Result<String, String> {
    let s = s.trim();
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("{s:?} is not HOST:PORT"))?;
    if host.is_empty() {
        return Err(format!("{s:?} has no host"));
    }
    port.parse::<u16>()
        .map_err(|_| format!("{s:?} has no valid port"))?;
    Ok(s.to_string())
}

/// `64`, `64..4096` (half-open, as in Rust) or `64..=4096`.
pub fn parse_value_size(s: &str) -> Result<ValueSize, String> {
    let num = |t: &str| -> Result<usize, String> {
        t.trim()
            .parse::<usize>()
            .map_err(|_| format!("{t:?} is not a byte count"))
    };
    let vs = if let Some((a, b)) = s.split_once("..=") {
        ValueSize {
            min: num(a)?,
            max: num(b)?,
        }
    } else if let Some((a, b)) = s.split_once("..") {
        let (min, end) = (num(a)?, num(b)?);
        if end <= min {
            return Err(format!("empty range {s:?}"));
        }
        ValueSize { min, max: end - 1 }
    } else {
        let n = num(s)?;
        ValueSize { min: n, max: n }
    };
    if vs.min > vs.max {
        return Err(format!("empty range {s:?}"));
    }
    if vs.max > MAX_VALUE_BYTES {
        return Err(format!("values are at most {MAX_VALUE_BYTES} bytes"));
    }
    Ok(vs)
}

/// `10s`, `500ms`, `250us`, `2m`, `1h`, or a bare number of seconds
/// (fractions allowed: `1.5s`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 10s, 500ms, 2m)"))?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1e3,
        "us" | "µs" => n / 1e6,
        "ns" => n / 1e9,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        other => return Err(format!("unknown duration unit {other:?} in {s:?}")),
    };
    if !secs.is_finite() || secs > 1e9 {
        return Err(format!("{s:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn parse_nonzero_duration(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err("must be greater than 0".into());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, String> {
        let mut v = vec!["shardcache-loadtest"];
        v.extend_from_slice(args);
        let a = Args::try_parse_from(v).map_err(|e| e.to_string())?;
        a.validate()?;
        Ok(a)
    }

    #[test]
    fn defaults() {
        let a = parse(&[]).unwrap();
        assert_eq!(a.targets, vec!["127.0.0.1:7070"]);
        assert_eq!(a.threads, 1);
        assert_eq!(a.connections, 4);
        assert_eq!(a.effective_inflight(), DEFAULT_CLOSED_INFLIGHT);
        assert_eq!(a.get_ratio, 0.9);
        assert_eq!(a.value_size, ValueSize { min: 64, max: 64 });
        assert_eq!(a.effective_duration(), Some(DEFAULT_DURATION));
        assert!(a.zipf.is_none() && a.rate.is_none() && !a.json && !a.preload);
    }

    #[test]
    fn full_command_line() {
        let a = parse(&[
            "--target",
            "a:1,b:2",
            "-t",
            "c:3",
            "--threads",
            "2",
            "--connections",
            "8",
            "--rate",
            "100000",
            "--zipf",
            "0.99",
            "--value-size",
            "64..=4096",
            "--requests",
            "1_000",
            "--warmup",
            "2s",
            "--json",
            "--group",
            "g",
        ])
        .unwrap();
        assert_eq!(a.targets, vec!["a:1", "b:2", "c:3"]);
        assert_eq!(a.rate, Some(100_000.0));
        assert_eq!(a.effective_inflight(), DEFAULT_OPEN_INFLIGHT);
        assert_eq!(a.zipf, Some(0.99));
        assert_eq!(a.value_size, ValueSize { min: 64, max: 4096 });
        assert_eq!(a.requests, Some(1000));
        assert_eq!(a.effective_duration(), None);
        assert_eq!(a.warmup, Duration::from_secs(2));
        assert_eq!(a.group, "g");
    }

    #[test]
    fn bad_flags_are_rejected() {
        for bad in [
            &["--connections", "0"][..],
            &["--get-ratio", "1.5"],
            &["--rate", "-3"],
            &["--rate", "abc"],
            &["--value-size", "10..5"],
            &["--value-size", "10..10"],
            &["--duration", "5 parsecs"],
            &["--duration", "0s"],
            &["--target", "nohost"],
            &["--target", "h:99999"],
            &["--keys", "1000000", "--key-size", "4"],
            &["--zipf", "-1"],
            &["--threads", "4", "--connections", "2"],
            &["--give-up", "0s"],
            &["--bogus"],
        ] {
            assert!(parse(bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("10").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(
            parse_value_size("64..4096").unwrap(),
            ValueSize { min: 64, max: 4095 }
        );
        assert_eq!(parse_value_size("7").unwrap(), ValueSize { min: 7, max: 7 });
        assert_eq!(decimal_digits(0), 1);
        assert_eq!(decimal_digits(999), 3);
        assert_eq!(decimal_digits(1000), 4);
    }

    #[test]
    fn key_size_must_fit_key_count() {
        assert!(parse(&["--keys", "1000", "--key-size", "4"]).is_ok());
        assert!(parse(&["--keys", "1001", "--key-size", "4"]).is_err());
    }
}
