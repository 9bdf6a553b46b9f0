//! The HTTP origin: a group's source of truth reached with a plain GET.
//!
//! `origin = "http://127.0.0.1:9000/users/{key}"`: `{key}` (and `{group}`,
//! if present) are replaced by the percent-encoded key (group); 200 is the
//! value (its body), 404 means no such key, anything else is an error. One
//! connection per load (`Connection: close`), made on the loading shard's
//! own io_uring, so a slow origin delays only the keys waiting on it.
//! Cleartext HTTP/1.1 only; the host name is resolved once, at start-up.

use super::{LoadError, LoadFuture, Loader};
use crate::protocol::http1::{self, Limits, ResponseDecoder};
use crate::runtime::Stream;
use bytes::BytesMut;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct HttpOrigin {
    template: String,
    addr: SocketAddr,
    /// The Host header: the URL's authority.
    host: String,
    /// The path with `{key}` / `{group}` still in it.
    path: String,
    max_body: usize,
}

impl HttpOrigin {
    /// Parses and resolves `template`; the error says what is wrong with it.
    /// `max_body` bounds a value (the node's --max-value).
    pub fn parse(template: &str, max_body: usize) -> Result<HttpOrigin, String> {
        let rest = template.strip_prefix("http://").ok_or_else(|| {
            format!("'{template}' is not an http:// URL (https is not supported)")
        })?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(format!("'{template}' has no host (or has user info)"));
        }
        if !path.contains("{key}") {
            return Err(format!(
                "'{template}' has no {{key}} placeholder for the key in its path"
            ));
        }
        let with_port = if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| !p.contains(']'))
        {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        let addr = with_port
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve the host of '{template}': {e}"))?
            .next()
            .ok_or_else(|| format!("the host of '{template}' has no address"))?;
        Ok(HttpOrigin {
            template: template.to_string(),
            addr,
            host: authority.to_string(),
            path: path.to_string(),
            max_body,
        })
    }

    /// The request path for (group, key).
    fn path_for(&self, group: &str, key: &str) -> String {
        self.path
            .replace("{group}", &percent_encode(group))
            .replace("{key}", &percent_encode(key))
    }

    async fn fetch(&self, group: &str, key: &str) -> Result<Option<bytes::Bytes>, LoadError> {
        let fail = |what: String| LoadError::Failed(what);
        let mut stream = Stream::connect(self.addr, CONNECT_TIMEOUT)
            .await
            .map_err(|e| fail(format!("cannot connect to {}: {e}", self.addr)))?;
        let _ = stream.set_nodelay();
        let mut req = Vec::with_capacity(256);
        http1::encode_get(&mut req, &self.host, &self.path_for(group, key));
        stream
            .write_all(&req)
            .await
            .map_err(|e| fail(format!("sending the request: {e}")))?;
        let mut decoder = ResponseDecoder::new(Limits {
            max_head: 16 << 10,
            max_headers: 64,
            max_body: self.max_body,
            max_post_body: self.max_body,
        });
        let mut input = BytesMut::with_capacity(16 << 10);
        let mut rbuf = vec![0u8; 64 << 10];
        let response = loop {
            let n = stream
                .read(&mut rbuf)
                .await
                .map_err(|e| fail(format!("reading the response: {e}")))?;
            if n == 0 {
                break decoder
                    .finish()
                    .map_err(|e| fail(format!("bad response: {}", e.reason)))?;
            }
            input.extend_from_slice(&rbuf[..n]);
            match decoder.decode(&mut input) {
                Ok(Some(r)) => break r,
                Ok(None) => {}
                Err(e) => return Err(fail(format!("bad response: {}", e.reason))),
            }
        };
        let _ = stream.shutdown_write().await;
        match response.status {
            200 => Ok(Some(response.body)),
            404 => Ok(None),
            s => Err(fail(format!("HTTP {s} {}", http1::reason_phrase(s).trim()))),
        }
    }
}

impl Loader for HttpOrigin {
    fn load<'a>(&'a self, group: &'a str, key: &'a str) -> LoadFuture<'a> {
        Box::pin(self.fetch(group, key))
    }

    fn describe(&self) -> String {
        format!("origin {}", self.template)
    }
}

/// Everything but RFC 3986's unreserved characters, as %XX.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates() {
        let o = HttpOrigin::parse("http://127.0.0.1:9000/users/{key}", 1024).unwrap();
        assert_eq!(o.addr, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(o.host, "127.0.0.1:9000");
        assert_eq!(o.path_for("g", "a b/ü"), "/users/a%20b%2F%C3%BC");
        let o = HttpOrigin::parse("http://127.0.0.1/{group}/x?k={key}", 1024).unwrap();
        assert_eq!(o.addr.port(), 80);
        assert_eq!(o.path_for("users", "42"), "/users/x?k=42");
        assert!(o.describe().contains("127.0.0.1/{group}"));
        for bad in [
            "https://127.0.0.1/{key}",
            "127.0.0.1/{key}",
            "http:///{key}",
            "http://127.0.0.1:9000/users",
            "http://127.0.0.1:99999/{key}",
            "http://user@127.0.0.1/{key}",
        ] {
            assert!(HttpOrigin::parse(bad, 1024).is_err(), "{bad}");
        }
    }
}
