//! Configuration: the `serve` options, their defaults, where they come from
//! and how they are parsed, so that a bad value is reported by option name
//! and source, with exit status 2, before any thread starts.
//!
//! Every option can be given three ways; the later wins:
//! 1. a TOML file (`--config PATH` or SHARDCACHE_CONFIG): `memory = "1GiB"`;
//! 2. an environment variable: SHARDCACHE_MEMORY=1GiB;
//! 3. a flag: `--memory 1GiB`.
//!
//! The file and environment layers are turned into flags and parsed by the
//! same clap definitions, so every option has one parser and one set of
//! error messages. docs/configuration.md lists them all.

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use std::ffi::OsString;
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "shardcache",
    version,
    about = "A shard-per-core in-memory cache served over gRPC (HTTP/2 on io_uring).",
    args_conflicts_with_subcommands = true,
    // Layers are stacked as repeated flags; the last occurrence wins.
    args_override_self = true
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
    /// Validate the configuration (file, environment, flags) without starting.
    CheckConfig(ServeArgs),
}

#[derive(Debug, Clone, Args)]
#[command(args_override_self = true)]
pub struct ServeArgs {
    /// TOML file with options (keys are the flag names with '_' for '-').
    /// Environment variables override it, flags override both.
    #[arg(long)]
    pub config: Option<std::path::PathBuf>,

    /// gRPC listen address. Port 0 picks one free port shared by every shard.
    #[arg(long, default_value = "127.0.0.1:7070", value_parser = parse_addr)]
    pub listen: SocketAddr,

    /// HTTP/1.1 gateway address (GET/PUT/DELETE /v1/{group}/{key}, /metrics,
    /// /healthz, /readyz), served by every shard like --listen; `off`
    /// disables it. Port 0 picks one free port shared by every shard.
    #[arg(long, default_value = "127.0.0.1:7071", value_parser = parse_http)]
    pub http: HttpListen,

    /// Per-shard gRPC ports: shard i also listens on port BASE+i of the
    /// --listen address, so a client that knows a key's shard (the Topology
    /// call, shardcache-routing) reaches its core without a hand-off. `off`
    /// (the default) or a port 1-65535.
    #[arg(long = "shard-ports", default_value = "off", value_parser = parse_shard_ports)]
    pub shard_ports: ShardPorts,

    /// Number of shards (one pinned thread each). Default: the CPUs this
    /// process may run on. More shards than CPUs is allowed.
    #[arg(long, value_parser = parse_shards)]
    pub shards: Option<usize>,

    /// Memory budget for cached data (e.g. 64MiB, 1GiB), split evenly over shards.
    #[arg(long, default_value = "1GiB", value_parser = parse_memory)]
    pub memory: u64,

    /// Largest accepted value (e.g. 4MiB); a larger request message is refused
    /// with RESOURCE_EXHAUSTED.
    #[arg(long = "max-value", default_value = "4MiB", value_parser = parse_max_value)]
    pub max_value: u64,

    /// Most items in one batch call (GetMany, SetMany, DeleteMany); a call
    /// with more is refused with RESOURCE_EXHAUSTED.
    #[arg(long = "max-batch", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_batch: u32,

    /// This node's identifier, reported by Stats. Default: the listen address.
    #[arg(long = "node-id")]
    pub node_id: Option<String>,

    /// Most client connections this node keeps open at once (over all shards).
    #[arg(long = "max-connections", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// Close a connection that has had no open stream and no traffic for this long (e.g. 300s, 5m).
    /// A client that reads none of its responses for this long is
    /// disconnected too.
    #[arg(long = "idle-timeout", default_value = "300s", value_parser = parse_timeout)]
    pub idle_timeout: Duration,

    /// How long an idle shard spins before sleeping in the kernel (e.g.
    /// 50us; 0 disables). Spinning cuts the cost of waking a shard for a
    /// cross-core hand-off from ~70 µs to ~7 µs, paid in CPU while traffic
    /// is intermittent. `auto`: with several shards, 100us while a shard is
    /// busy at least half of the time and none once it is busy less than
    /// 30 % (re-decided every 50 ms), so a lightly loaded node does not burn
    /// cores; with one shard, 0 (nothing to hand off). At most 10ms.
    #[arg(long = "spin-before-park", default_value = "auto", value_parser = parse_spin)]
    pub spin_before_park: Spin,

    /// How long a connection may take to send its HTTP/2 preface and
    /// SETTINGS (or its first bytes), an HTTP/2 header block once begun, or
    /// an HTTP/1.1 request head once begun; and how long a request body may
    /// go without a byte. Past it the connection is closed (gateway: 408).
    #[arg(long = "header-timeout", default_value = "10s", value_parser = parse_timeout)]
    pub header_timeout: Duration,

    /// Bytes one connection may hold (unsent responses, unfinished
    /// requests) and still take new requests; past it the connection reads
    /// no more requests until its client reads, and at twice it the
    /// connection is closed. `auto`: twice the largest request
    /// (2 x (--max-value + 16KiB)), so one largest request always fits.
    #[arg(long = "conn-buffer", default_value = "auto", value_parser = parse_auto_size)]
    pub conn_buffer: AutoSize,

    /// Bytes all connections of the node may hold together (split over
    /// the shards); past it only connections that hold little take new
    /// requests. `auto`: a quarter of --memory, at least 64MiB.
    #[arg(long = "node-buffer", default_value = "auto", value_parser = parse_auto_size)]
    pub node_buffer: AutoSize,

    /// Log level or filter (error, warn, info, debug, trace, or a RUST_LOG-style
    /// filter). RUST_LOG is used when this is not set.
    #[arg(long = "log-level")]
    pub log_level: Option<String>,

    /// On SIGTERM/SIGINT, how long in-flight calls may take to finish before
    /// the node exits anyway.
    #[arg(long = "shutdown-timeout", default_value = "10s", value_parser = parse_timeout)]
    pub shutdown_timeout: Duration,

    /// How long a request forwarded to the key's owner node may wait for
    /// its answer when the client set no deadline (grpc-timeout); then it
    /// fails with UNAVAILABLE naming the peer.
    #[arg(long = "peer-timeout", default_value = "5s", value_parser = parse_timeout)]
    pub peer_timeout: Duration,

    /// Where other nodes reach this one (IP:PORT) and its identity on the
    /// ring. Default: the address the node listens on (which must then not
    /// be 0.0.0.0 or [::] in a cluster).
    #[arg(long, value_parser = parse_addr)]
    pub advertise: Option<SocketAddr>,

    /// A static cluster: the other nodes' advertise addresses, comma
    /// separated (this node's own may be listed too). Not with --etcd.
    #[arg(long, value_delimiter = ',', value_parser = parse_addr, conflicts_with = "etcd")]
    pub peers: Vec<SocketAddr>,

    /// etcd endpoints for membership (e.g. http://10.0.0.1:2379,http://10.0.0.2:2379).
    #[arg(long, value_delimiter = ',', value_parser = parse_etcd_endpoint)]
    pub etcd: Vec<String>,

    /// etcd over TLS: the CA certificates (PEM) that the etcd servers'
    /// certificates must chain to. Needs https:// endpoints.
    #[arg(long = "etcd-ca", requires = "etcd")]
    pub etcd_ca: Option<std::path::PathBuf>,

    /// etcd over TLS: this node's client certificate (PEM), for etcd
    /// started with --client-cert-auth. With --etcd-key.
    #[arg(long = "etcd-cert", requires_all = ["etcd", "etcd_key", "etcd_ca"])]
    pub etcd_cert: Option<std::path::PathBuf>,

    /// etcd over TLS: the private key of --etcd-cert (PEM).
    #[arg(long = "etcd-key", requires_all = ["etcd", "etcd_cert"])]
    pub etcd_key: Option<std::path::PathBuf>,

    /// The etcd key prefix under which every node registers `{prefix}{node-id}`.
    #[arg(long = "etcd-prefix", default_value = "/shardcache/nodes/", value_parser = parse_etcd_prefix)]
    pub etcd_prefix: String,

    /// TTL of this node's etcd lease: how soon peers drop it after it dies.
    #[arg(long = "lease-ttl", default_value = "5s", value_parser = parse_lease_ttl)]
    pub lease_ttl: Duration,

    /// Points per node on the consistent-hash ring; more spreads keys more
    /// evenly at some memory per node. Every node of a cluster must agree.
    #[arg(long, default_value_t = 160, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub vnodes: u32,

    /// Share of each shard's memory kept for hot copies of keys owned by
    /// other nodes (0 disables the hot cache; at most 0.5).
    #[arg(long = "hot-fraction", default_value = "0.125", value_parser = parse_hot_fraction)]
    pub hot_fraction: f64,

    /// Longest a hot copy of another node's key is served before it is
    /// fetched again (invalidations normally drop it sooner).
    #[arg(long = "hot-ttl", default_value = "30s", value_parser = parse_duration)]
    pub hot_ttl: Duration,

    /// TLS: the node's certificate chain (PEM; leaf first). With --tls-key,
    /// the gRPC port (ALPN h2) and the gateway (http/1.1) speak TLS 1.3 and
    /// 1.2 only; plaintext clients are refused. SIGHUP reads the files again.
    #[arg(long = "tls-cert", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,

    /// TLS: the private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long = "tls-key", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,

    /// TLS: require client certificates that chain to these CA
    /// certificates (PEM) on both ports (mutual TLS). Needs --tls-cert.
    #[arg(long = "tls-client-ca", requires = "tls_cert")]
    pub tls_client_ca: Option<std::path::PathBuf>,

    /// TLS between nodes: peer connections use mutual TLS, each node
    /// presenting --tls-cert (as server and as client) and accepting only
    /// certificates that chain to these CA certificates (PEM). A node's
    /// certificate must name the IP address peers reach it at
    /// (subjectAltName IP) and allow both server and client use. Plaintext
    /// peer connections are then refused. Needs --tls-cert.
    #[arg(long = "peer-ca", requires = "tls_cert")]
    pub peer_ca: Option<std::path::PathBuf>,

    /// A file holding the secret every node of the cluster shares (at least
    /// 16 bytes; trailing whitespace is not part of it). A connection that
    /// opens as a peer must then prove it knows the secret (an HMAC
    /// challenge; the secret never crosses the wire) before its first
    /// operation, and only such peers may exceed --max-connections.
    #[arg(long = "peer-secret-file")]
    pub peer_secret_file: Option<std::path::PathBuf>,

    /// Read-through groups, from the config file's `[groups.NAME]` tables.
    #[arg(skip)]
    pub groups: Vec<GroupConfig>,
}

/// One `[groups.NAME]` table of the config file.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupConfig {
    pub name: String,
    /// `http://HOST:PORT/path/{key}`: where misses are loaded from.
    pub origin: Option<String>,
    /// TTL of loaded values; zero = never expire.
    pub ttl: Duration,
    pub load_timeout: Duration,
    /// How long a "not found" from the origin is remembered; zero = not at all.
    pub negative_ttl: Duration,
}

/// The `--shard-ports` setting: the first shard's port, or `off` (None).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardPorts(pub Option<u16>);

/// The `--http` setting: an address, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpListen {
    Off,
    On(SocketAddr),
}

impl HttpListen {
    pub fn addr(self) -> Option<SocketAddr> {
        match self {
            HttpListen::Off => None,
            HttpListen::On(a) => Some(a),
        }
    }
}

/// What `main` should do, with the configuration resolved from every layer.
#[derive(Debug)]
pub enum Action {
    Serve(ServeArgs),
    CheckConfig(ServeArgs),
}

/// A configuration error for the operator; exit status 2.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Resolves the command line, the environment and the config file into
/// one action. `env` yields (name, value) pairs (normally `std::env::vars`).
pub fn load(
    argv: Vec<OsString>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Action, clap::Error> {
    // First pass: the command line alone, to find the subcommand and --config
    // (and to report bad flags before anything else).
    let cli = Cli::try_parse_from(argv.iter())?;
    let (sub, flags) = match &cli.command {
        Some(Command::Serve(a)) => (Some("serve"), a),
        Some(Command::CheckConfig(a)) => (Some("check-config"), a),
        None => (None, &cli.serve),
    };
    let env: Vec<(String, String)> = env.into_iter().collect();
    let config_path = flags.config.clone().or_else(|| {
        env.iter()
            .find(|(k, _)| k == "SHARDCACHE_CONFIG")
            .map(|(_, v)| v.into())
    });

    let mut layered: Vec<OsString> =
        vec![argv.first().cloned().unwrap_or_else(|| "shardcache".into())];
    layered.extend(sub.map(OsString::from));
    let mut groups = Vec::new();
    if let Some(path) = &config_path {
        let (file_args, file_groups) = file_layer(path).map_err(|e| usage_error(&e.0))?;
        groups = file_groups;
        check_layer(
            sub,
            &file_args,
            &format!("in config file {}", path.display()),
        )?;
        layered.extend(file_args);
    }
    let env_args = env_layer(&env).map_err(|e| usage_error(&e.0))?;
    check_layer(sub, &env_args, "in the environment")?;
    layered.extend(env_args);
    // The user's own flags last, so they win.
    let skip = 1 + usize::from(sub.is_some());
    layered.extend(argv.into_iter().skip(skip));

    let mut cmd = Cli::command();
    let matches = cmd.try_get_matches_from_mut(layered)?;
    let cli = Cli::from_arg_matches(&matches)?;
    Ok(match cli.command {
        Some(Command::Serve(a)) => Action::Serve(ServeArgs { groups, ..a }),
        Some(Command::CheckConfig(a)) => Action::CheckConfig(ServeArgs { groups, ..a }),
        None => Action::Serve(ServeArgs {
            groups,
            ..cli.serve
        }),
    })
}

fn usage_error(msg: &str) -> clap::Error {
    Cli::command().error(clap::error::ErrorKind::InvalidValue, msg)
}

/// Parses one layer alone so that an error names where the value came from.
fn check_layer(sub: Option<&str>, args: &[OsString], origin: &str) -> Result<(), clap::Error> {
    let mut argv: Vec<OsString> = vec!["shardcache".into()];
    argv.extend(sub.map(OsString::from));
    argv.extend(args.iter().cloned());
    match Cli::try_parse_from(argv) {
        Ok(_) => Ok(()),
        Err(e) => Err(usage_error(&format!(
            "{origin}: {}",
            e.render()
                .to_string()
                .trim_start_matches("error: ")
                .lines()
                .next()
                .unwrap_or("invalid value")
        ))),
    }
}

/// The long flag names every layer may set (all options but --config).
fn option_names() -> &'static [String] {
    // Built once: clap assembles the whole parser to list them.
    static NAMES: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    NAMES.get_or_init(|| {
        ServeArgs::augment_args(clap::Command::new("x"))
            .get_arguments()
            .filter_map(|a| a.get_long().map(str::to_string))
            .filter(|l| l != "config")
            .collect()
    })
}

/// SHARDCACHE_<OPTION> variables as flags, e.g. SHARDCACHE_MAX_VALUE=1MiB.
fn env_layer(env: &[(String, String)]) -> Result<Vec<OsString>, ConfigError> {
    let names = option_names();
    let mut args = Vec::new();
    for (k, v) in env {
        let Some(opt) = k.strip_prefix("SHARDCACHE_") else {
            continue;
        };
        if opt == "CONFIG" || opt.starts_with("TEST_") {
            continue;
        }
        let flag = opt.to_ascii_lowercase().replace('_', "-");
        if !names.contains(&flag) {
            return Err(ConfigError(format!(
                "unknown environment variable {k}: options are {}",
                names
                    .iter()
                    .map(|n| format!("SHARDCACHE_{}", n.to_uppercase().replace('-', "_")))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        args.push(format!("--{flag}").into());
        args.push(v.into());
    }
    Ok(args)
}

/// The TOML file's keys as flags, e.g. `max_value = "1MiB"`, and its
/// `[groups.NAME]` tables.
fn file_layer(path: &std::path::Path) -> Result<(Vec<OsString>, Vec<GroupConfig>), ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("cannot read config file {}: {e}", path.display())))?;
    let table: toml::Table = text.parse().map_err(|e| {
        ConfigError(format!(
            "config file {} is not valid TOML: {e}",
            path.display()
        ))
    })?;
    let names = option_names();
    let mut args = Vec::new();
    let mut groups = Vec::new();
    for (key, value) in table {
        if key == "groups" {
            groups = group_tables(&value)
                .map_err(|e| ConfigError(format!("config file {}: {e}", path.display())))?;
            continue;
        }
        let flag = key.replace('_', "-");
        if !names.contains(&flag) {
            return Err(ConfigError(format!(
                "config file {}: unknown option `{key}`; options are {}",
                path.display(),
                names
                    .iter()
                    .map(|n| n.replace('-', "_"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let v = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            // Lists (peers, etcd) as the flags' comma-separated form.
            toml::Value::Array(items) if items.iter().all(|i| i.is_str()) => items
                .iter()
                .filter_map(|i| i.as_str())
                .collect::<Vec<_>>()
                .join(","),
            other => {
                return Err(ConfigError(format!(
                    "config file {}: option `{key}` must be a string, a number or a list of strings, not {}",
                    path.display(),
                    other.type_str()
                )))
            }
        };
        args.push(format!("--{flag}").into());
        args.push(v.into());
    }
    Ok((args, groups))
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
        self.node_id
            .clone()
            .unwrap_or_else(|| self.listen.to_string())
    }
}

fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse::<SocketAddr>()
        .map_err(|_| format!("'{s}' is not an IP:PORT address (e.g. 127.0.0.1:7070)"))
}

/// The `groups` table: one table per group, with the options below.
fn group_tables(value: &toml::Value) -> Result<Vec<GroupConfig>, String> {
    const OPTIONS: &str = "origin, ttl, load_timeout, negative_ttl";
    let toml::Value::Table(groups) = value else {
        return Err("`groups` must be tables: [groups.NAME]".into());
    };
    let mut out = Vec::new();
    for (name, table) in groups {
        let toml::Value::Table(t) = table else {
            return Err(format!("groups.{name} must be a table: [groups.{name}]"));
        };
        let mut g = GroupConfig {
            name: name.clone(),
            origin: None,
            ttl: Duration::ZERO,
            load_timeout: Duration::from_secs(2),
            negative_ttl: Duration::ZERO,
        };
        for (k, v) in t {
            let opt = format!("groups.{name}.{k}");
            let text = v
                .as_str()
                .ok_or_else(|| format!("{opt} must be a string, e.g. \"5m\" or \"http://...\""))?;
            let duration = || parse_duration(text).map_err(|e| format!("{opt}: {e}"));
            match k.as_str() {
                "origin" => {
                    check_origin(text).map_err(|e| format!("{opt}: {e}"))?;
                    g.origin = Some(text.to_string());
                }
                "ttl" => g.ttl = duration()?,
                "load_timeout" => {
                    g.load_timeout = duration()?;
                    if g.load_timeout.is_zero() {
                        return Err(format!("{opt}: must be more than 0"));
                    }
                }
                "negative_ttl" => g.negative_ttl = duration()?,
                _ => return Err(format!("unknown option {opt}; a group has {OPTIONS}")),
            }
        }
        out.push(g);
    }
    Ok(out)
}

/// The shape of an origin URL (it is resolved when the node starts).
fn check_origin(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("'{url}' is not an http:// URL (https is not supported)"))?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    if host.is_empty() {
        return Err(format!("'{url}' has no host"));
    }
    if !path.contains("{key}") {
        return Err(format!("'{url}' has no {{key}} placeholder in its path"));
    }
    Ok(())
}

/// `--spin-before-park`: `auto`, or a fixed duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spin {
    /// 100us with several shards, none with one.
    Auto,
    For(Duration),
}

fn parse_spin(s: &str) -> Result<Spin, String> {
    if s.trim().eq_ignore_ascii_case("auto") {
        return Ok(Spin::Auto);
    }
    let d = parse_duration(s)?;
    if d > MAX_SPIN {
        return Err(format!(
            "'{s}' is longer than {} ms: a spin that long only burns CPU (0 disables it)",
            MAX_SPIN.as_millis()
        ));
    }
    Ok(Spin::For(d))
}

/// The longest `--spin-before-park`: past a few hundred microseconds a
/// spin buys no latency, only CPU.
pub const MAX_SPIN: Duration = Duration::from_millis(10);

/// The smallest `--memory`.
pub const MIN_MEMORY: u64 = 64 << 10;

/// The largest `--max-value`: a gRPC message length is 32 bits, and one
/// value must fit a connection's buffer budget several times over.
pub const MAX_MAX_VALUE: u64 = 1 << 30;

/// A size, or `auto` (None: derived from other options).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AutoSize(pub Option<u64>);

fn parse_auto_size(s: &str) -> Result<AutoSize, String> {
    if s.trim().eq_ignore_ascii_case("auto") {
        return Ok(AutoSize(None));
    }
    let v = parse_size(s)?;
    if v < 64 << 10 {
        return Err(format!("'{s}' is less than the minimum of 64KiB"));
    }
    Ok(AutoSize(Some(v)))
}

fn parse_memory(s: &str) -> Result<u64, String> {
    let v = parse_size(s)?;
    if v < MIN_MEMORY {
        return Err(format!("'{s}' is less than the minimum of 64KiB"));
    }
    Ok(v)
}

fn parse_max_value(s: &str) -> Result<u64, String> {
    let v = parse_size(s)?;
    if v == 0 {
        return Err(format!(
            "'{s}' would refuse every value: give at least 1 byte"
        ));
    }
    if v > MAX_MAX_VALUE {
        return Err(format!("'{s}' is more than the maximum of 1GiB"));
    }
    Ok(v)
}

/// A timeout: more than zero (zero would end everything at once), at most a day.
fn parse_timeout(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_millis(1) {
        return Err(format!(
            "'{s}' is too short: a timeout must be at least 1ms"
        ));
    }
    if d > Duration::from_secs(86_400) {
        return Err(format!("'{s}' is longer than a day"));
    }
    Ok(d)
}

fn parse_hot_fraction(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if (0.0..=0.5).contains(&f) => Ok(f),
        _ => Err(format!(
            "'{s}' is not a fraction between 0 and 0.5 (e.g. 0.125)"
        )),
    }
}

fn parse_http(s: &str) -> Result<HttpListen, String> {
    if s.trim().eq_ignore_ascii_case("off") {
        return Ok(HttpListen::Off);
    }
    s.parse::<SocketAddr>()
        .map(HttpListen::On)
        .map_err(|_| format!("'{s}' is not an IP:PORT address (e.g. 127.0.0.1:7071) or `off`"))
}

fn parse_etcd_endpoint(s: &str) -> Result<String, String> {
    let t = s.trim();
    let rest = t
        .strip_prefix("http://")
        .or_else(|| t.strip_prefix("https://"))
        .unwrap_or(t);
    let (host, port) = rest.rsplit_once(':').ok_or_else(|| {
        format!("'{s}' is not an etcd endpoint (e.g. http://127.0.0.1:2379): no port")
    })?;
    if host.is_empty() || port.parse::<u16>().is_err() || rest.contains('/') {
        return Err(format!(
            "'{s}' is not an etcd endpoint (e.g. http://127.0.0.1:2379)"
        ));
    }
    Ok(t.to_string())
}

fn parse_etcd_prefix(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("the etcd prefix must not be empty (e.g. /shardcache/nodes/)".into());
    }
    Ok(s.to_string())
}

fn parse_lease_ttl(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_secs(1) || d > Duration::from_secs(3600) {
        return Err(format!(
            "'{s}' is not a lease TTL between 1s and 1h (etcd leases have whole seconds)"
        ));
    }
    Ok(d)
}

fn parse_shard_ports(s: &str) -> Result<ShardPorts, String> {
    match s {
        "off" => Ok(ShardPorts(None)),
        _ => match s.parse::<u16>() {
            Ok(p) if p > 0 => Ok(ShardPorts(Some(p))),
            _ => Err(format!(
                "'{s}' is not a port between 1 and 65535 (or off) for the first shard port"
            )),
        },
    }
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

    fn argv(a: &[&str]) -> Vec<OsString> {
        a.iter().map(OsString::from).collect()
    }

    fn serve_args(action: Action) -> ServeArgs {
        match action {
            Action::Serve(a) | Action::CheckConfig(a) => a,
        }
    }

    #[test]
    fn layers_file_then_env_then_flags() {
        let dir = std::env::temp_dir().join(format!("shardcache-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(
            &path,
            "memory = \"64MiB\"\nshards = 3\nmax_value = \"1MiB\"\nnode_id = \"file\"\n",
        )
        .unwrap();
        let p = path.to_str().unwrap();
        let env = vec![
            ("SHARDCACHE_SHARDS".to_string(), "5".to_string()),
            ("SHARDCACHE_NODE_ID".to_string(), "env".to_string()),
        ];
        let a = serve_args(
            load(
                argv(&["shardcache", "serve", "--config", p, "--node-id", "flag"]),
                env.clone(),
            )
            .unwrap(),
        );
        assert_eq!(a.memory, 64 << 20); // file
        assert_eq!(a.shards, Some(5)); // env beats file
        assert_eq!(a.node_id.as_deref(), Some("flag")); // flag beats env
        assert_eq!(a.max_value, 1 << 20);
        // SHARDCACHE_CONFIG names the file too.
        let mut env2 = env.clone();
        env2.push(("SHARDCACHE_CONFIG".to_string(), p.to_string()));
        let a = serve_args(load(argv(&["shardcache"]), env2).unwrap());
        assert_eq!(a.memory, 64 << 20);
        match load(argv(&["shardcache", "check-config", "--config", p]), vec![]).unwrap() {
            Action::CheckConfig(a) => assert_eq!(a.shards, Some(3)),
            other => panic!("{other:?}"),
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn group_tables_and_their_errors() {
        let dir =
            std::env::temp_dir().join(format!("shardcache-cfg-groups-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(
            &path,
            "memory = \"64MiB\"\n[groups.users]\norigin = \"http://127.0.0.1:9000/users/{key}\"\n\
             ttl = \"5m\"\nload_timeout = \"2s\"\nnegative_ttl = \"10s\"\n[groups.plain]\n",
        )
        .unwrap();
        let p = path.to_str().unwrap();
        let a = serve_args(load(argv(&["shardcache", "--config", p]), vec![]).unwrap());
        assert_eq!(a.memory, 64 << 20);
        let mut groups = a.groups.clone();
        groups.sort_by(|x, y| x.name.cmp(&y.name));
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].name, "plain");
        assert_eq!(groups[0].origin, None);
        let u = &groups[1];
        assert_eq!(
            u.origin.as_deref(),
            Some("http://127.0.0.1:9000/users/{key}")
        );
        assert_eq!(
            (u.ttl, u.load_timeout, u.negative_ttl),
            (
                Duration::from_secs(300),
                Duration::from_secs(2),
                Duration::from_secs(10)
            )
        );
        for (text, needle) in [
            (
                "[groups.u]\norigin = \"ftp://x/{key}\"\n",
                "groups.u.origin",
            ),
            ("[groups.u]\norigin = \"http://x/users\"\n", "{key}"),
            ("[groups.u]\nttl = \"soon\"\n", "groups.u.ttl"),
            ("[groups.u]\nload_timeout = \"0s\"\n", "more than 0"),
            (
                "[groups.u]\ncolour = \"x\"\n",
                "unknown option groups.u.colour",
            ),
            ("[groups.u]\nttl = 5\n", "must be a string"),
            ("groups = 3\n", "[groups.NAME]"),
        ] {
            std::fs::write(&path, text).unwrap();
            let msg = load(argv(&["shardcache", "--config", p]), vec![])
                .unwrap_err()
                .to_string();
            assert!(
                msg.contains(needle) && msg.contains("config file"),
                "{text}: {msg}"
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn layer_errors_name_option_and_origin() {
        let dir = std::env::temp_dir().join(format!("shardcache-cfg-err-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(&path, "memory = \"lots\"\n").unwrap();
        let e = load(
            argv(&["shardcache", "--config", path.to_str().unwrap()]),
            vec![],
        )
        .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("config file") && msg.contains("--memory") && msg.contains("lots"),
            "{msg}"
        );
        std::fs::write(&path, "colour = \"blue\"\n").unwrap();
        let msg = load(
            argv(&["shardcache", "--config", path.to_str().unwrap()]),
            vec![],
        )
        .unwrap_err()
        .to_string();
        assert!(msg.contains("unknown option `colour`"), "{msg}");
        std::fs::write(&path, "memory = [1]\n").unwrap();
        let msg = load(
            argv(&["shardcache", "--config", path.to_str().unwrap()]),
            vec![],
        )
        .unwrap_err()
        .to_string();
        assert!(msg.contains("`memory`"), "{msg}");
        let env = vec![("SHARDCACHE_SHARDS".to_string(), "0".to_string())];
        let msg = load(argv(&["shardcache"]), env).unwrap_err().to_string();
        assert!(
            msg.contains("environment") && msg.contains("--shards"),
            "{msg}"
        );
        let env = vec![("SHARDCACHE_COLOUR".to_string(), "x".to_string())];
        let msg = load(argv(&["shardcache"]), env).unwrap_err().to_string();
        assert!(msg.contains("SHARDCACHE_COLOUR"), "{msg}");
        let msg = load(
            argv(&["shardcache", "--config", "/nonexistent/x.toml"]),
            vec![],
        )
        .unwrap_err()
        .to_string();
        assert!(msg.contains("cannot read config file"), "{msg}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn defaults_and_subcommand() {
        let d = ServeArgs::default();
        assert_eq!(d.listen, "127.0.0.1:7070".parse().unwrap());
        assert_eq!(d.memory, 1 << 30);
        assert_eq!(d.max_value, 4 << 20);
        assert_eq!(d.http, HttpListen::On("127.0.0.1:7071".parse().unwrap()));
        let cli = Cli::try_parse_from(["shardcache", "--http", "off"]).unwrap();
        assert_eq!(cli.serve.http, HttpListen::Off);
        let cli = Cli::try_parse_from(["shardcache", "--http", "0.0.0.0:8080"]).unwrap();
        assert_eq!(cli.serve.http.addr(), Some("0.0.0.0:8080".parse().unwrap()));
        let err = Cli::try_parse_from(["shardcache", "--http", "on"]).unwrap_err();
        assert!(err.to_string().contains("--http"), "{err}");
        let cli =
            Cli::try_parse_from(["shardcache", "serve", "--shards", "4", "--memory", "16MiB"])
                .unwrap();
        match cli.command {
            Some(Command::Serve(a)) => {
                assert_eq!(a.shards, Some(4));
                assert_eq!(a.memory, 16 << 20);
            }
            other => panic!("expected serve, got {other:?}"),
        }
        let err = Cli::try_parse_from(["shardcache", "serve", "--shards", "0"]).unwrap_err();
        assert!(err.to_string().contains("--shards"), "{err}");
        let err = Cli::try_parse_from(["shardcache", "--memory", "lots"]).unwrap_err();
        assert!(err.to_string().contains("--memory"), "{err}");
    }
}
