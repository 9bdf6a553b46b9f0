//! The node's settings, derived once from the parsed flags: what every
//! shard applies (budgets, limits, HTTP/2 settings), the combinations that
//! cannot work (refused at start-up), the read-through groups' specs and
//! the node's identity in the cluster.

use super::lifecycle;
use crate::cluster::Membership;
use crate::config::{ServeArgs, Spin};
use crate::groups::{GroupSpec, HttpOrigin};
use crate::protocol::http2::ServerSettings;
use crate::runtime;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Room in a request message beyond the value: key (up to 4096 bytes),
/// group and field tags.
pub(super) const MESSAGE_OVERHEAD: u64 = 16 << 10;

/// `--spin-before-park auto` with more than one shard: the spin of a busy
/// shard (runtime::SpinGovernor).
const AUTO_SPIN: Duration = Duration::from_micros(100);

/// Settings every shard applies, fixed at start-up.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub listen: SocketAddr,
    /// The HTTP gateway's address; None when `--http off`.
    pub http: Option<SocketAddr>,
    /// --shard-ports: shard i also listens on this port + i.
    pub shard_ports: Option<u16>,
    pub shards: usize,
    pub cpus: Vec<usize>,
    pub memory: u64,
    pub max_value: u64,
    /// Most items in one batch call.
    pub max_batch: usize,
    /// From --node-id; None means "the address we listen on".
    pub node_id: Option<String>,
    pub max_connections: u32,
    pub idle_timeout: Duration,
    pub header_timeout: Duration,
    /// --conn-buffer, resolved.
    pub conn_buffer: u64,
    /// --node-buffer, resolved.
    pub node_buffer: u64,
    /// How long an idle shard spins before it parks: fixed, or at most,
    /// when `spin_adaptive` (see `runtime::SpinGovernor`).
    pub spin_before_park: Duration,
    pub spin_adaptive: bool,
    pub shutdown_timeout: Duration,
    /// Longest a forwarded call waits for its owner node without a client deadline.
    pub peer_timeout: Duration,
    /// From --advertise; None means "the address we listen on".
    pub advertise: Option<SocketAddr>,
    pub peers: Vec<SocketAddr>,
    pub etcd: Vec<String>,
    pub etcd_prefix: String,
    pub lease_ttl: Duration,
    pub vnodes: u32,
    pub hot_fraction: f64,
    pub hot_ttl: Duration,
    pub groups: Vec<crate::config::GroupConfig>,
    /// --tls-cert, --tls-key, --tls-client-ca; None: plaintext.
    pub tls: Option<crate::tls::TlsFiles>,
    /// --peer-secret-file; None: peers are not authenticated.
    pub peer_secret_file: Option<std::path::PathBuf>,
    /// --etcd-ca, --etcd-cert, --etcd-key.
    pub etcd_ca: Option<std::path::PathBuf>,
    pub etcd_identity: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

impl NodeConfig {
    pub fn from_args(args: &ServeArgs) -> NodeConfig {
        let cpus = runtime::allowed_cpus();
        let shards = args.shard_count(cpus.len());
        NodeConfig {
            listen: args.listen,
            http: args.http.addr(),
            shard_ports: args.shard_ports.0,
            shards,
            cpus,
            memory: args.memory,
            max_value: args.max_value,
            max_batch: args.max_batch as usize,
            node_id: args.node_id.clone(),
            max_connections: args.max_connections,
            idle_timeout: args.idle_timeout,
            header_timeout: args.header_timeout,
            conn_buffer: args
                .conn_buffer
                .0
                .unwrap_or(2 * args.max_value.saturating_add(MESSAGE_OVERHEAD)),
            node_buffer: args
                .node_buffer
                .0
                .unwrap_or((args.memory / 4).max(64 << 20)),
            spin_before_park: match args.spin_before_park {
                Spin::For(d) => d,
                Spin::Auto if shards > 1 => AUTO_SPIN,
                Spin::Auto => Duration::ZERO,
            },
            spin_adaptive: matches!(args.spin_before_park, Spin::Auto) && shards > 1,
            shutdown_timeout: args.shutdown_timeout,
            peer_timeout: args.peer_timeout,
            advertise: args.advertise,
            peers: args.peers.clone(),
            etcd: args.etcd.clone(),
            etcd_prefix: args.etcd_prefix.clone(),
            lease_ttl: args.lease_ttl,
            vnodes: args.vnodes,
            hot_fraction: args.hot_fraction,
            hot_ttl: args.hot_ttl,
            groups: args.groups.clone(),
            tls: match (&args.tls_cert, &args.tls_key) {
                (Some(cert), Some(key)) => Some(crate::tls::TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                    client_ca: args.tls_client_ca.clone(),
                    peer_ca: args.peer_ca.clone(),
                }),
                _ => None,
            },
            peer_secret_file: args.peer_secret_file.clone(),
            etcd_ca: args.etcd_ca.clone(),
            etcd_identity: args.etcd_cert.clone().zip(args.etcd_key.clone()),
        }
    }

    /// One shard's budgets: (main store, hot store). A node alone has no
    /// other node's keys to keep copies of: all goes to the main store.
    pub fn shard_budgets(&self) -> (u64, u64) {
        let per_shard = self.memory / self.shards.max(1) as u64;
        if self.membership() == Membership::Alone {
            return (per_shard, 0);
        }
        let hot = (per_shard as f64 * self.hot_fraction) as u64;
        (per_shard - hot, hot)
    }

    /// The groups of the config file, their origins resolved.
    pub fn group_specs(&self) -> Result<Vec<GroupSpec>, String> {
        let max_body = usize::try_from(self.max_value).unwrap_or(usize::MAX);
        let mut specs = Vec::new();
        for g in &self.groups {
            let loader = match &g.origin {
                Some(url) => Some(
                    HttpOrigin::parse(url, max_body)
                        .map(|o| {
                            std::sync::Arc::new(o) as std::sync::Arc<dyn crate::groups::Loader>
                        })
                        .map_err(|e| format!("groups.{}.origin: {e}", g.name))?,
                ),
                None => None,
            };
            specs.push(GroupSpec {
                name: g.name.clone(),
                loader,
                ttl: g.ttl,
                load_timeout: g.load_timeout,
                negative_ttl: g.negative_ttl,
            });
        }
        Ok(specs)
    }

    /// Where the member list comes from.
    pub fn membership(&self) -> Membership {
        if !self.etcd.is_empty() {
            Membership::Etcd {
                endpoints: self.etcd.clone(),
                prefix: self.etcd_prefix.clone(),
                lease_ttl: self.lease_ttl,
            }
        } else if !self.peers.is_empty() {
            Membership::Static(self.peers.clone())
        } else {
            Membership::Alone
        }
    }

    /// The peer secret, read and checked; None without --peer-secret-file.
    pub fn peer_secret(
        &self,
    ) -> Result<Option<Arc<crate::protocol::peer_auth::PeerSecret>>, String> {
        self.peer_secret_file
            .as_deref()
            .map(|p| crate::protocol::peer_auth::PeerSecret::load(p).map(Arc::new))
            .transpose()
    }

    /// The etcd TLS files, read; None when etcd is spoken in plaintext.
    pub fn etcd_tls(&self) -> Result<Option<crate::cluster::EtcdTls>, String> {
        if self.etcd_ca.is_none() && self.etcd_identity.is_none() {
            return Ok(None);
        }
        if let Some(e) = self.etcd.iter().find(|e| !e.starts_with("https://")) {
            return Err(format!(
                "--etcd {e}: with --etcd-ca/--etcd-cert every endpoint must be https://"
            ));
        }
        let read = |option: &str, path: &std::path::Path, begins: &str| {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("{option} {}: cannot read: {e}", path.display()))?;
            if !text.contains(begins) {
                return Err(format!(
                    "{option} {}: no {begins} block: not a PEM file of that kind",
                    path.display()
                ));
            }
            Ok(text)
        };
        let ca = self
            .etcd_ca
            .as_deref()
            .map(|p| read("--etcd-ca", p, "-----BEGIN CERTIFICATE-----"))
            .transpose()?;
        let identity = match &self.etcd_identity {
            Some((cert, key)) => Some((
                read("--etcd-cert", cert, "-----BEGIN CERTIFICATE-----")?,
                read("--etcd-key", key, "PRIVATE KEY-----")?,
            )),
            None => None,
        };
        Ok(Some(crate::cluster::EtcdTls { ca, identity }))
    }

    /// This node's identity in the cluster once its listen address is
    /// bound: the advertise address and the node id derived from it.
    pub(super) fn identity(&self, bound: SocketAddr) -> Result<(SocketAddr, String), String> {
        let advertise = self.advertise.unwrap_or(bound);
        if advertise.ip().is_unspecified() && self.membership() != Membership::Alone {
            return Err(format!(
                "--advertise: this node listens on {bound}, an address peers cannot reach; \
                 give --advertise IP:PORT with an address of this host"
            ));
        }
        if advertise.port() == 0 {
            return Err("--advertise: the port must not be 0".into());
        }
        let node_id = self
            .node_id
            .clone()
            .unwrap_or_else(|| advertise.to_string());
        Ok((advertise, node_id))
    }

    /// What no single option's parser can tell: combinations that cannot
    /// work. The node refuses to start with them; `check-config` reports them.
    pub fn check(&self) -> Result<(), String> {
        let per_shard = self.memory / self.shards.max(1) as u64;
        if self.conn_buffer < self.max_value.saturating_add(MESSAGE_OVERHEAD) {
            return Err(format!(
                "--conn-buffer {} is less than the largest request (--max-value {} plus \
                 {MESSAGE_OVERHEAD} bytes): such a request could never be received",
                self.conn_buffer, self.max_value
            ));
        }
        for g in &self.groups {
            if let Err(e) = crate::protocol::check_group(&g.name) {
                return Err(format!("groups.{}: {e}", g.name));
            }
        }
        if self.max_value > per_shard {
            return Err(format!(
                "--max-value {} is more than one shard's share of --memory ({} bytes over {} \
                 shards = {per_shard} bytes), so a value that large could never be stored: \
                 raise --memory, lower --max-value or use fewer --shards",
                self.max_value, self.memory, self.shards
            ));
        }
        Ok(())
    }

    /// Largest request message accepted: the value limit plus room for the rest.
    pub fn max_message(&self) -> usize {
        usize::try_from(self.max_value.saturating_add(MESSAGE_OVERHEAD)).unwrap_or(usize::MAX)
    }

    /// The buffer limits of one shard's connections.
    pub(super) fn buffer_limits(&self) -> lifecycle::BufferLimits {
        lifecycle::BufferLimits {
            per_connection: usize::try_from(self.conn_buffer).unwrap_or(usize::MAX),
            per_shard: usize::try_from(self.node_buffer / self.shards.max(1) as u64)
                .unwrap_or(usize::MAX),
            write_stall: self.idle_timeout,
        }
    }

    pub(super) fn http2_settings(&self) -> ServerSettings {
        ServerSettings {
            // The 5-byte gRPC prefix rides in the body too.
            max_body_size: self.max_message().saturating_add(5),
            body_budget: usize::try_from(self.conn_buffer).unwrap_or(usize::MAX),
            header_timeout: self.header_timeout,
            // Health Watch and reflection: see server/streaming.rs.
            is_streaming: crate::protocol::grpc::is_streaming_path,
            ..ServerSettings::default()
        }
    }
}
