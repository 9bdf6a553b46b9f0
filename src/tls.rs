//! TLS settings from PEM files: the certificate chain and key a node
//! presents on its gRPC port (ALPN `h2`) and its gateway (ALPN
//! `http/1.1`), and the CA that client certificates must chain to when
//! clients must present one (mutual TLS). The TLS protocol itself is
//! rustls's (with the `ring` provider): nothing here parses or writes a
//! TLS record. The connections that speak it are `server::tls_session`.
//!
//! [`Tls`] holds the current settings for every shard; `reload` (SIGHUP)
//! reads the files again and swaps them in for new connections, while the
//! connections already open keep the settings they started with. A reload
//! that fails keeps the old settings and says why.
//!
//! With `--peer-ca` the same certificate also authenticates this node to
//! its peers, both ways (mutual TLS between nodes): peer connections
//! offer ALPN [`PEER_ALPN`], and each side requires the other's
//! certificate to chain to the peer CA; the connecting side also checks
//! that the certificate names the peer's IP address.
//!
//! Files are checked at start-up (and by `check-config`) so that an
//! operator learns of a missing, unreadable, expired or mismatched file
//! from the option that names it, not from clients failing later.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use rustls::{ClientConfig, RootCertStore};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// The PEM files of `--tls-cert`, `--tls-key` and `--tls-client-ca`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// When set, clients must present a certificate that chains to it.
    pub client_ca: Option<PathBuf>,
    /// `--peer-ca`: node-to-node connections use mutual TLS, certificates
    /// chaining to it.
    pub peer_ca: Option<PathBuf>,
}

/// The ALPN protocol of a node-to-node connection over TLS; it stands in
/// for the plaintext peer magic (`protocol::peer::MAGIC`).
pub const PEER_ALPN: &[u8] = b"shardcache-peer/1";

/// The rustls settings of the two ports.
pub struct Configs {
    /// The gRPC port: ALPN `h2` only.
    pub grpc: Arc<ServerConfig>,
    /// The gateway: ALPN `http/1.1` only.
    pub http: Arc<ServerConfig>,
    /// When the certificate stops being valid, as the certificate says it.
    pub not_after: String,
    /// `--peer-ca`: both sides of node-to-node connections.
    pub peer: Option<PeerConfigs>,
}

/// The name a peer's certificate must carry: the IP address it was
/// dialled at (ring members are addresses).
pub fn peer_name(addr: std::net::SocketAddr) -> rustls::pki_types::ServerName<'static> {
    rustls::pki_types::ServerName::IpAddress(addr.ip().into())
}

/// Mutual TLS between nodes: the node presents its own certificate either
/// way and trusts only certificates that chain to `--peer-ca`.
pub struct PeerConfigs {
    /// Accepting a peer on the gRPC port: ALPN [`PEER_ALPN`], a client
    /// certificate required.
    pub server: Arc<ServerConfig>,
    /// Connecting to a peer: presents this node's certificate, checks the
    /// peer's against `--peer-ca` and its IP address.
    pub client: Arc<ClientConfig>,
}

/// The node's current TLS settings, shared by every shard.
pub struct Tls {
    files: TlsFiles,
    // Read once per accepted connection (not per request), written on reload.
    current: RwLock<Arc<Configs>>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Reads and checks the files; the error names the option and the file.
    pub fn load(files: TlsFiles) -> Result<Tls, String> {
        let configs = build(&files)?;
        Ok(Tls {
            files,
            current: RwLock::new(Arc::new(configs)),
        })
    }

    /// The settings for a connection accepted now.
    pub fn current(&self) -> Arc<Configs> {
        match self.current.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Reads the files again; on success new connections use them (open
    /// ones keep theirs). On failure nothing changes and the error says why.
    pub fn reload(&self) -> Result<Arc<Configs>, String> {
        let configs = Arc::new(build(&self.files)?);
        match self.current.write() {
            Ok(mut c) => *c = configs.clone(),
            Err(poisoned) => *poisoned.into_inner() = configs.clone(),
        }
        Ok(configs)
    }

    /// The client side of mutual TLS to peers (`--peer-ca`), as it is now.
    pub fn peer_client(&self) -> Option<Arc<ClientConfig>> {
        self.current().peer.as_ref().map(|p| p.client.clone())
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }
}

/// The protocol versions offered: TLS 1.3 and 1.2 (what gRPC clients speak).
static VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

fn build(files: &TlsFiles) -> Result<Configs, String> {
    let certs = read_certs(&files.cert, "--tls-cert")?;
    let not_after = check_validity(&certs[0], &files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| {
        format!(
            "--tls-key {}: {}",
            files.key.display(),
            pem_problem(&e, "a PEM private key (PKCS#8, PKCS#1 or SEC1)")
        )
    })?;
    // ring: builds with a C compiler alone. rustls 0.23.48 deprecates it
    // for lacking post-quantum key exchange (X25519MLKEM768), which its
    // aws-lc-rs provider has; moving there is this line plus a cmake-free
    // aws-lc build on every target we ship, not done yet.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client_ca = match &files.client_ca {
        Some(path) => Some((
            read_roots(path, "--tls-client-ca")?,
            path,
            "--tls-client-ca",
        )),
        None => None,
    };
    let mismatch = |e: rustls::Error| {
        format!(
            "--tls-key {} does not fit --tls-cert {}: {e}",
            files.key.display(),
            files.cert.display()
        )
    };
    let make = |alpn: &[u8],
                clients: Option<&(Arc<RootCertStore>, &PathBuf, &str)>|
     -> Result<Arc<ServerConfig>, String> {
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(VERSIONS)
            .map_err(|e| format!("TLS set-up: {e}"))?;
        let builder = match clients {
            Some((roots, path, option)) => {
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
                        .build()
                        .map_err(|e| format!("{option} {}: {e}", path.display()))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        // rustls checks here that the key belongs to the certificate.
        let mut config = builder
            .with_single_cert(certs.clone(), key.clone_key())
            .map_err(mismatch)?;
        config.alpn_protocols = vec![alpn.to_vec()];
        Ok(Arc::new(config))
    };
    let peer = match &files.peer_ca {
        Some(path) => {
            let roots = read_roots(path, "--peer-ca")?;
            let mut client = ClientConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(VERSIONS)
                .map_err(|e| format!("TLS set-up: {e}"))?
                .with_root_certificates(roots.clone())
                .with_client_auth_cert(certs.clone(), key.clone_key())
                .map_err(mismatch)?;
            client.alpn_protocols = vec![PEER_ALPN.to_vec()];
            Some(PeerConfigs {
                server: make(PEER_ALPN, Some(&(roots, path, "--peer-ca")))?,
                client: Arc::new(client),
            })
        }
        None => None,
    };
    Ok(Configs {
        grpc: make(b"h2", client_ca.as_ref())?,
        http: make(b"http/1.1", client_ca.as_ref())?,
        not_after,
        peer,
    })
}

/// The CA certificates in a PEM file, as a trust anchor store.
fn read_roots(path: &Path, option: &str) -> Result<Arc<RootCertStore>, String> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(path, option)? {
        roots.add(cert).map_err(|e| {
            format!(
                "{option} {}: not a usable CA certificate: {e}",
                path.display()
            )
        })?;
    }
    Ok(Arc::new(roots))
}

fn read_certs(path: &Path, option: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let what = "PEM certificates (-----BEGIN CERTIFICATE-----)";
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{option} {}: {}", path.display(), pem_problem(&e, what)))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{option} {}: {}", path.display(), pem_problem(&e, what)))?;
    if certs.is_empty() {
        return Err(format!(
            "{option} {}: no certificate in the file (expected {what})",
            path.display()
        ));
    }
    Ok(certs)
}

fn pem_problem(e: &rustls::pki_types::pem::Error, what: &str) -> String {
    use rustls::pki_types::pem::Error as E;
    match e {
        E::Io(io) => format!("cannot read: {io}"),
        E::NoItemsFound => format!("no {what} in the file"),
        other => format!("not {what}: {other:?}"),
    }
}

/// The leaf certificate must be valid now: a node that starts with an
/// expired certificate would fail every handshake. Returns its expiry.
fn check_validity(leaf: &CertificateDer<'_>, path: &Path) -> Result<String, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).map_err(|e| {
        format!(
            "--tls-cert {}: the first certificate cannot be parsed: {e}",
            path.display()
        )
    })?;
    let validity = cert.validity();
    let now = x509_parser::time::ASN1Time::now();
    if now < validity.not_before {
        return Err(format!(
            "--tls-cert {}: the certificate is not valid before {}",
            path.display(),
            validity.not_before
        ));
    }
    if now > validity.not_after {
        return Err(format!(
            "--tls-cert {}: the certificate expired on {}",
            path.display(),
            validity.not_after
        ));
    }
    Ok(validity.not_after.to_string())
}
