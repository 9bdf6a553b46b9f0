//! Certificates for tests, made with rcgen: a CA, leaves signed by it
//! (servers, clients, nodes that are both), and a temporary directory
//! for the PEM files a node is started with.

use super::{guard_events, prom, Node};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

pub struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = p.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// (certificate PEM, key PEM) of a leaf signed by this CA.
    pub fn leaf(&self, name: &str, client: bool, expired: bool) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let sans = if client {
            vec![format!("{name}.clients.test")]
        } else {
            vec!["localhost".to_string(), "127.0.0.1".to_string()]
        };
        let mut p = CertificateParams::new(sans).unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        p.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        if expired {
            p.not_before = rcgen::date_time_ymd(2020, 1, 1);
            p.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// (certificate PEM, key PEM) of a node: valid as a server and as a
    /// client (it is both to its peers), naming `ip`.
    pub fn node(&self, name: &str, ip: &str) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec![
            format!("{name}.nodes.test"),
            "localhost".to_string(),
            ip.to_string(),
        ])
        .unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// A temporary directory for one test's files.
pub struct Dir(pub PathBuf);

impl Dir {
    pub fn new(tag: &str) -> Dir {
        let d = std::env::temp_dir().join(format!(
            "shardcache-tls-{tag}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn arg(p: &Path) -> String {
    p.display().to_string()
}

/// A tonic channel over TLS trusting `ca_pem`, optionally with a client
/// certificate. Err: the connection or handshake failed.
pub async fn tls_channel(
    node: &Node,
    ca_pem: &str,
    identity: Option<(&str, &str)>,
) -> Result<Channel, String> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    let ep = Endpoint::from_shared(format!("https://{}", node.addr))
        .unwrap()
        .tls_config(tls)
        .map_err(|e| format!("{e:?}"))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5));
    ep.connect().await.map_err(|e| format!("{e:?}"))
}

pub fn curl(args: &[&str]) -> (bool, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "5"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("curl (apt-get install curl; ./.ci/test installs it)");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// `https://localhost:PORT{path}` for curl, pinned to 127.0.0.1.
pub fn https(node: &Node, path: &str) -> (String, String) {
    let port = node.http_addr().port();
    (
        format!("localhost:{port}:127.0.0.1"),
        format!("https://localhost:{port}{path}"),
    )
}

/// /metrics read over TLS with curl (with a client certificate if given).
pub fn scrape_tls(node: &Node, ca: &Path, client: Option<(&Path, &Path)>) -> prom::Exposition {
    let (resolve, url) = https(node, "/metrics");
    let mut args = vec!["--resolve", &resolve, "--cacert"];
    let ca = arg(ca);
    args.push(&ca);
    let (c, k);
    if let Some((cert, key)) = client {
        c = arg(cert);
        k = arg(key);
        args.extend(["--cert", &c, "--key", &k]);
    }
    args.push(&url);
    let (ok, text) = curl(&args);
    assert!(ok, "GET /metrics over TLS: {text}");
    prom::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// A guard counter from /metrics, read over TLS with curl.
pub fn guard_events_tls(
    node: &Node,
    ca: &Path,
    client: Option<(&Path, &Path)>,
    event: &str,
) -> f64 {
    guard_events(&scrape_tls(node, ca, client), event)
}
