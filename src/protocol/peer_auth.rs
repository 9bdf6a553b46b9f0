//! The peer handshake: a node that serves peer connections with
//! `--peer-secret-file` set proves that whoever opened one knows the same
//! secret before it reads a single operation from it, and the secret never
//! crosses the wire.
//!
//! ```text
//! client                                  server (after the MAGIC)
//!                   <- CHALLENGE  kind 0x86, id 0: nonce (32 random bytes)
//! AUTH  kind 6, id 0: HMAC-SHA256(secret, CONTEXT || nonce)  ->
//! ... requests as usual, once AUTH is sent
//! ```
//!
//! The server checks the MAC in constant time (ring's `hmac::verify`); a
//! first frame that is not a valid AUTH closes the connection. The nonce
//! is fresh per connection, so a recorded AUTH is worth nothing on another.
//! What this does not give: secrecy of the traffic (peer frames are
//! plaintext) and protection against someone who can rewrite packets
//! between two nodes after the handshake; those need TLS between peers.
//! Pure computation; framing is `peer`'s, state is the sessions'.

use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use std::path::Path;

/// Bytes of a challenge nonce and of a MAC.
pub const NONCE_LEN: usize = 32;
pub const MAC_LEN: usize = 32;

/// Binds a MAC to this protocol and version, so one made for anything else
/// with the same key is of no use here.
const CONTEXT: &[u8] = b"shardcache peer auth v1\0";

/// Shortest secret accepted: 16 bytes (128 bits) of whatever the file holds.
pub const MIN_SECRET: usize = 16;

/// The shared secret of `--peer-secret-file`.
pub struct PeerSecret {
    key: hmac::Key,
}

impl std::fmt::Debug for PeerSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerSecret(..)")
    }
}

impl PeerSecret {
    /// The secret is the file's bytes without trailing whitespace (an
    /// editor's final newline must not change it).
    pub fn load(path: &Path) -> Result<PeerSecret, String> {
        let bytes = std::fs::read(path)
            .map_err(|e| format!("--peer-secret-file {}: cannot read: {e}", path.display()))?;
        let end = bytes
            .iter()
            .rposition(|b| !b.is_ascii_whitespace())
            .map_or(0, |i| i + 1);
        if end < MIN_SECRET {
            return Err(format!(
                "--peer-secret-file {}: the secret has {end} bytes; at least {MIN_SECRET} are needed \
                 (e.g. `head -c 32 /dev/urandom | base64 > FILE`)",
                path.display()
            ));
        }
        Ok(PeerSecret::new(&bytes[..end]))
    }

    pub fn new(secret: &[u8]) -> PeerSecret {
        PeerSecret {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    /// The answer to `nonce`.
    pub fn mac(&self, nonce: &[u8]) -> [u8; MAC_LEN] {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(CONTEXT);
        ctx.update(nonce);
        let tag = ctx.sign();
        let mut out = [0u8; MAC_LEN];
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// Whether `mac` answers `nonce` (constant time).
    pub fn verify(&self, nonce: &[u8], mac: &[u8]) -> bool {
        let mut msg = Vec::with_capacity(CONTEXT.len() + nonce.len());
        msg.extend_from_slice(CONTEXT);
        msg.extend_from_slice(nonce);
        hmac::verify(&self.key, &msg, mac).is_ok()
    }
}

/// A fresh challenge; None only if the system's random source fails.
pub fn challenge() -> Option<[u8; NONCE_LEN]> {
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new().fill(&mut nonce).ok()?;
    Some(nonce)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_right_secret_answers_and_others_do_not() {
        let a = PeerSecret::new(b"0123456789abcdef-shared");
        let b = PeerSecret::new(b"0123456789abcdef-other!");
        let n1 = challenge().unwrap();
        let n2 = challenge().unwrap();
        assert_ne!(n1, n2, "two challenges alike");
        assert!(a.verify(&n1, &a.mac(&n1)));
        assert!(!a.verify(&n1, &b.mac(&n1)), "another secret passed");
        assert!(
            !a.verify(&n2, &a.mac(&n1)),
            "an answer to another nonce passed"
        );
        assert!(!a.verify(&n1, &a.mac(&n1)[..31]), "a short MAC passed");
    }

    #[test]
    fn secret_files_are_checked() {
        let dir = std::env::temp_dir().join(format!("peer-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let short = dir.join("short");
        std::fs::write(&short, "tooshort\n").unwrap();
        let e = PeerSecret::load(&short).unwrap_err();
        assert!(
            e.contains("--peer-secret-file") && e.contains("8 bytes"),
            "{e}"
        );
        let missing = dir.join("missing");
        let e = PeerSecret::load(&missing).unwrap_err();
        assert!(e.contains("cannot read"), "{e}");
        // A trailing newline is not part of the secret.
        let a = dir.join("a");
        let b = dir.join("b");
        std::fs::write(&a, "0123456789abcdef0123\n").unwrap();
        std::fs::write(&b, "0123456789abcdef0123").unwrap();
        let n = challenge().unwrap();
        let (a, b) = (PeerSecret::load(&a).unwrap(), PeerSecret::load(&b).unwrap());
        assert!(b.verify(&n, &a.mac(&n)));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
