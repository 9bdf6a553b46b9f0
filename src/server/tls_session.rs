//! A session over TLS: wraps any [`Session`] (the gRPC or the gateway
//! session, a peer node's serving or client session) so that the driver feeds it ciphertext and writes ciphertext,
//! while the wrapped session sees the same plaintext bytes it would see on
//! a plain socket. rustls does the protocol, sans-IO like everything here:
//! bytes read go into `rustls::Connection::read_tls`, the plaintext
//! it yields goes to the inner session, and the inner session's output is
//! encrypted into this session's output after every call, so the driver
//! still makes one write per turn.
//!
//! A handshake that fails (no client certificate when one is required, an
//! untrusted one, no common protocol version or ALPN, bytes that are not
//! TLS) ends the connection after rustls's alert; the caller counts it
//! (`handshake_failed`), as one not done by its deadline
//! (--header-timeout from the accept).

use super::driver::Session;
use super::lifecycle::Room;
use bytes::{Buf, BytesMut};
use rustls::Connection;
use std::io::{Read, Write};
use std::time::Instant;

pub struct TlsSession<S> {
    /// The server side of an accepted connection, or the client side of
    /// one to a peer node.
    tls: Connection,
    inner: S,
    /// Plaintext decrypted but not yet taken by the inner session.
    plain: BytesMut,
    /// Ciphertext to write.
    out: Vec<u8>,
    /// A TLS error ended the connection (alert queued in `out`).
    failed: Option<rustls::Error>,
    handshaken: bool,
    /// The handshake must be over by then (--header-timeout from the accept).
    handshake_by: Instant,
    close_sent: bool,
}

impl<S: Session> TlsSession<S> {
    pub fn new(tls: impl Into<Connection>, inner: S, handshake_by: Instant) -> TlsSession<S> {
        let mut tls = tls.into();
        // What the inner session writes is bounded by its own budget
        // (`Room`); rustls's default cap would make writes fail instead.
        tls.set_buffer_limit(None);
        TlsSession {
            tls,
            inner,
            plain: BytesMut::new(),
            out: Vec::new(),
            failed: None,
            handshaken: false,
            handshake_by,
            close_sent: false,
        }
    }

    /// The handshake failed: the connection was closed by TLS itself.
    pub fn handshake_failed(&self) -> bool {
        self.failed.is_some() && !self.handshaken
    }

    /// Why TLS ended the connection, if it did.
    pub fn error(&self) -> Option<&rustls::Error> {
        self.failed.as_ref()
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Takes ciphertext from `input` until it is used up or TLS fails.
    fn decrypt(&mut self, input: &mut BytesMut) {
        while !input.is_empty() && self.failed.is_none() {
            let mut reader: &[u8] = input;
            let n = match self.tls.read_tls(&mut reader) {
                Ok(0) => break,
                Ok(n) => n,
                Err(_) => {
                    // rustls's buffer is full: its plaintext was not taken.
                    // Cannot happen (all of it is moved out below), but
                    // ending the connection is the safe answer.
                    self.failed = Some(rustls::Error::General("TLS input buffer full".into()));
                    break;
                }
            };
            input.advance(n);
            match self.tls.process_new_packets() {
                Ok(state) => {
                    let len = state.plaintext_bytes_to_read();
                    if len > 0 {
                        let at = self.plain.len();
                        self.plain.resize(at + len, 0);
                        match self.tls.reader().read_exact(&mut self.plain[at..]) {
                            Ok(()) => {}
                            Err(_) => self.plain.truncate(at),
                        }
                    }
                    if !self.tls.is_handshaking() {
                        self.handshaken = true;
                    }
                    if state.peer_has_closed() {
                        input.clear();
                        self.inner.on_eof();
                        break;
                    }
                }
                Err(e) => {
                    self.failed = Some(e);
                    input.clear();
                }
            }
        }
        if self.failed.is_some() {
            input.clear();
        }
    }

    /// Gives the inner session the plaintext it has room for; true when
    /// it stopped early for lack of room (as `Session::on_input`). A
    /// partial message left in `plain` waits for more bytes.
    fn feed(&mut self, room: Room, now: Instant) -> bool {
        if self.plain.is_empty() || !self.handshaken || self.failed.is_some() {
            return false;
        }
        if !self.inner.wants_input(room) {
            return true;
        }
        self.inner.on_input(&mut self.plain, room, now)
    }

    /// Encrypts what the inner session produced into `out`.
    fn seal(&mut self) {
        let produced = self.inner.output();
        if !produced.is_empty() && self.failed.is_none() {
            // Unbounded buffer (see `new`): write_all cannot come up short.
            if self.tls.writer().write_all(produced).is_err() {
                self.failed = Some(rustls::Error::General("TLS output refused".into()));
            }
        }
        self.inner.clear_output();
        if self.inner.is_done() && !self.close_sent && self.failed.is_none() {
            self.tls.send_close_notify();
            self.close_sent = true;
        }
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut self.out) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }
}

impl<S: Session> Session for TlsSession<S> {
    fn on_input(&mut self, input: &mut BytesMut, room: Room, now: Instant) -> bool {
        self.decrypt(input);
        let left = self.feed(room, now);
        self.seal();
        left
    }

    fn on_eof(&mut self) {
        self.inner.on_eof();
        self.seal();
    }

    fn on_read_error(&mut self, error: std::io::Error) {
        self.inner.on_read_error(error);
        self.seal();
    }

    fn on_wake(&mut self, room: Room, now: Instant) {
        if !self.handshaken && now >= self.handshake_by && self.failed.is_none() {
            self.failed = Some(rustls::Error::General("handshake not done in time".into()));
        }
        self.inner.on_wake(room, now);
        self.feed(room, now);
        self.seal();
    }

    fn on_idle(&mut self) {
        self.inner.on_idle();
        self.seal();
    }

    fn on_shutdown(&mut self) {
        self.inner.on_shutdown();
        self.seal();
    }

    fn output(&self) -> &[u8] {
        &self.out
    }

    fn clear_output(&mut self) {
        self.out.clear();
    }

    fn held(&self) -> usize {
        self.inner.held() + self.plain.len() + self.out.len()
    }

    fn wants_input(&self, room: Room) -> bool {
        if self.failed.is_some() {
            return false;
        }
        if !self.handshaken {
            return true;
        }
        self.inner.wants_input(room)
    }

    fn next_deadline(&self) -> Option<Instant> {
        let inner = self.inner.next_deadline();
        if self.handshaken {
            return inner;
        }
        Some(inner.map_or(self.handshake_by, |d| d.min(self.handshake_by)))
    }

    fn busy(&self) -> bool {
        self.inner.busy()
    }

    fn backlog(&self) -> bool {
        self.inner.backlog()
    }

    fn is_done(&self) -> bool {
        self.failed.is_some() || self.inner.is_done()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
    use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};
    use std::sync::Arc;
    use std::time::Duration;

    /// Answers every byte it gets, upper-cased; done after "BYE".
    #[derive(Default)]
    struct Shout {
        out: Vec<u8>,
        /// Everything it was given.
        seen: Vec<u8>,
        done: bool,
        eof: bool,
    }

    impl Session for Shout {
        fn on_input(&mut self, input: &mut BytesMut, _: Room, _: Instant) -> bool {
            self.out.extend(input.iter().map(u8::to_ascii_uppercase));
            self.seen.extend_from_slice(input);
            self.done |= input.ends_with(b"bye");
            input.clear();
            false
        }
        fn on_eof(&mut self) {
            self.eof = true;
        }
        fn on_wake(&mut self, _: Room, _: Instant) {}
        fn on_idle(&mut self) {}
        fn on_shutdown(&mut self) {}
        fn output(&self) -> &[u8] {
            &self.out
        }
        fn clear_output(&mut self) {
            self.out.clear();
        }
        fn held(&self) -> usize {
            self.out.len()
        }
        fn wants_input(&self, _: Room) -> bool {
            !self.done
        }
        fn next_deadline(&self) -> Option<Instant> {
            None
        }
        fn busy(&self) -> bool {
            false
        }
        fn is_done(&self) -> bool {
            self.done || self.eof
        }
    }

    #[allow(deprecated)]
    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    fn pair() -> (TlsSession<Shout>, ClientConnection, Instant) {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let der = CertificateDer::from(cert.cert.der().to_vec());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.key_pair.serialize_der()));
        let server = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![der.clone()], key)
            .unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(der).unwrap();
        let client = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let now = Instant::now();
        let server = ServerConnection::new(Arc::new(server)).unwrap();
        let session = TlsSession::new(server, Shout::default(), now + Duration::from_secs(1));
        let name = ServerName::try_from("localhost").unwrap();
        let client = ClientConnection::new(Arc::new(client), name).unwrap();
        (session, client, now)
    }

    /// Moves bytes both ways until neither side has any to send.
    fn pump(s: &mut TlsSession<Shout>, c: &mut ClientConnection, now: Instant) {
        for _ in 0..16 {
            let mut wire = Vec::new();
            while c.wants_write() {
                c.write_tls(&mut wire).unwrap();
            }
            let mut input = BytesMut::from(&wire[..]);
            if !input.is_empty() {
                s.on_input(&mut input, Room::UNLIMITED, now);
                assert!(input.is_empty(), "ciphertext left unread");
            }
            let back = s.output().to_vec();
            s.clear_output();
            if back.is_empty() && wire.is_empty() {
                return;
            }
            let mut rd: &[u8] = &back;
            while !rd.is_empty() {
                c.read_tls(&mut rd).unwrap();
                c.process_new_packets().unwrap();
            }
        }
    }

    fn read_all(c: &mut ClientConnection) -> Vec<u8> {
        let mut got = Vec::new();
        let _ = c.reader().read_to_end(&mut got);
        got
    }

    #[test]
    fn plaintext_reaches_the_inner_session_and_its_answer_comes_back_sealed() {
        let (mut s, mut c, now) = pair();
        pump(&mut s, &mut c, now);
        assert!(!c.is_handshaking(), "handshake did not finish");
        c.writer().write_all(b"hello, ").unwrap();
        c.writer().write_all(b"world").unwrap();
        pump(&mut s, &mut c, now);
        assert_eq!(read_all(&mut c), b"HELLO, WORLD");
        // The inner session ends: close_notify follows its last answer.
        c.writer().write_all(b"bye").unwrap();
        pump(&mut s, &mut c, now);
        assert_eq!(read_all(&mut c), b"BYE");
        assert!(s.is_done());
        assert!(!s.handshake_failed());
        let mut buf = [0u8; 1];
        assert_eq!(c.reader().read(&mut buf).unwrap(), 0, "no close_notify");
    }

    #[test]
    fn bytes_that_are_not_tls_end_the_connection_with_an_alert() {
        let (mut s, _, now) = pair();
        let mut input = BytesMut::from(&b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..]);
        s.on_input(&mut input, Room::UNLIMITED, now);
        assert!(s.handshake_failed() && s.is_done());
        assert!(!s.wants_input(Room::UNLIMITED));
        assert!(!s.output().is_empty(), "no alert for the client");
    }

    #[test]
    fn a_handshake_not_done_by_its_deadline_ends_the_connection() {
        let (mut s, mut c, now) = pair();
        // The ClientHello arrives, then nothing.
        let mut wire = Vec::new();
        c.write_tls(&mut wire).unwrap();
        s.on_input(&mut BytesMut::from(&wire[..]), Room::UNLIMITED, now);
        let by = s.next_deadline().expect("a handshake deadline");
        assert_eq!(by, now + Duration::from_secs(1));
        s.on_wake(Room::UNLIMITED, by - Duration::from_millis(1));
        assert!(!s.is_done());
        s.on_wake(Room::UNLIMITED, by);
        assert!(s.is_done() && s.handshake_failed());
    }

    /// Both ends as sessions: the client's inner session writes before
    /// the handshake (as a peer client's first requests do); its bytes
    /// wait in rustls and arrive once the handshake is done.
    #[test]
    fn a_client_session_speaks_first_and_its_bytes_wait_for_the_handshake() {
        let (mut server, c, now) = pair();
        let mut client = TlsSession::new(
            c,
            Shout {
                out: b"bye".to_vec(),
                ..Shout::default()
            },
            now + Duration::from_secs(1),
        );
        client.on_wake(Room::UNLIMITED, now);
        assert!(!client.output().is_empty(), "no ClientHello");
        for _ in 0..8 {
            let mut wire = BytesMut::from(client.output());
            client.clear_output();
            server.on_input(&mut wire, Room::UNLIMITED, now);
            let mut back = BytesMut::from(server.output());
            server.clear_output();
            if back.is_empty() {
                break;
            }
            client.on_input(&mut back, Room::UNLIMITED, now);
        }
        assert!(!client.handshake_failed() && !server.handshake_failed());
        assert_eq!(server.inner().seen, b"bye");
        assert_eq!(client.inner().seen, b"BYE");
        assert!(server.is_done(), "the server's session did not end");
    }
}
