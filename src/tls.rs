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
//! Files are checked at start-up (and by `check-config`) so that an
//! operator learns of a missing, unreadable, expired or mismatched file
//! from the option that names it, not from clients failing later.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use rustls::RootCertStore;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// The PEM files of `--tls-cert`, `--tls-key` and `--tls-client-ca`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// When set, clients must present a certificate that chains to it.
    pub client_ca: Option<PathBuf>,
}

/// The rustls settings of the two ports.
pub struct Configs {
    /// The gRPC port: ALPN `h2` only.
    pub grpc: Arc<ServerConfig>,
    /// The gateway: ALPN `http/1.1` only.
    pub http: Arc<ServerConfig>,
    /// When the certificate stops being valid, as the certificate says it.
    pub not_after: String,
}

/// The node's current TLS settings, shared by every shard.
pub struct Tls {
    files: TlsFiles,
    // Read once per accepted connection (not per request), written on reload.
    current: RwLock<Arc<Configs>>,
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
    let roots = match &files.client_ca {
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certs(path, "--tls-client-ca")? {
                roots.add(cert).map_err(|e| {
                    format!(
                        "--tls-client-ca {}: not a usable CA certificate: {e}",
                        path.display()
                    )
                })?;
            }
            Some(Arc::new(roots))
        }
        None => None,
    };
    let make = |alpn: &[u8]| -> Result<Arc<ServerConfig>, String> {
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(VERSIONS)
            .map_err(|e| format!("TLS set-up: {e}"))?;
        let builder = match (&roots, &files.client_ca) {
            (Some(roots), Some(path)) => {
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
                        .build()
                        .map_err(|e| format!("--tls-client-ca {}: {e}", path.display()))?;
                builder.with_client_cert_verifier(verifier)
            }
            _ => builder.with_no_client_auth(),
        };
        // rustls checks here that the key belongs to the certificate.
        let mut config = builder
            .with_single_cert(certs.clone(), key.clone_key())
            .map_err(|e| {
                format!(
                    "--tls-key {} does not fit --tls-cert {}: {e}",
                    files.key.display(),
                    files.cert.display()
                )
            })?;
        config.alpn_protocols = vec![alpn.to_vec()];
        Ok(Arc::new(config))
    };
    Ok(Configs {
        grpc: make(b"h2")?,
        http: make(b"http/1.1")?,
        not_after,
    })
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
