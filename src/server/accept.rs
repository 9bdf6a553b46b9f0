//! What a connection accepted on the gRPC port is, and who serves it.
//! Its first bytes decide:
//! - the plaintext peer magic: another node (`peer_session`), unless the
//!   node requires TLS between nodes (`--peer-ca`), which refuses it;
//! - a TLS ClientHello, on a node with `--tls-cert`: a peer node when it
//!   offers the peer ALPN and the node has `--peer-ca` (mutual TLS against
//!   the peer CA), else a gRPC client (ALPN h2);
//! - anything else: a plaintext gRPC client (`grpc`), which a TLS node
//!   answers with GOAWAY INADEQUATE_SECURITY.
//!
//! `--max-connections`: past it clients are turned away, and peers too
//! unless they prove who they are (mutual TLS, or `--peer-secret-file`);
//! an authenticated peer may exceed the limit, an unauthenticated one is
//! never served.

use super::driver::{self, Session};
use super::grpc::GrpcSession;
use super::lifecycle::{linger, ConnShared, OpenGuard, Registry};
use super::peer_client::Peers;
use super::peer_session::PeerSession;
use super::tls_session::TlsSession;
use super::NodeShared;
use crate::metrics::{Guard, Interface};
use crate::protocol::http2::{ErrorCode, ServerSettings};
use crate::protocol::peer;
use crate::runtime::{self, Stream};
use crate::shard::Shard;
use crate::tls::PEER_ALPN;
use bytes::{Buf, BytesMut};
use futures_lite::future;
use rustls::server::{Accepted, Acceptor};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

/// The first byte of a TLS connection (a handshake record: ClientHello).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Serves one connection accepted on the gRPC port; `refuse`: it is over
/// --max-connections.
#[allow(clippy::too_many_arguments)]
pub async fn serve(
    mut stream: Stream,
    shard: Rc<Shard>,
    peers: Rc<Peers>,
    node: Arc<NodeShared>,
    registry: Rc<Registry>,
    settings: ServerSettings,
    refuse: bool,
    _guard: OpenGuard,
) {
    let _ = stream.set_nodelay();
    // A client that reads nothing for this long is disconnected.
    let _ = stream.set_write_timeout(node.config.idle_timeout);
    let shared = Rc::new(ConnShared::default());
    let id = registry.add(shared.clone());
    let mut input = BytesMut::new();
    let first_bytes_by = Instant::now() + node.config.header_timeout;
    let tls = node.tls.as_ref().map(|t| t.current());
    let peer_tls = tls.as_ref().and_then(|t| t.peer.as_ref());
    let c = Conn {
        id,
        shared: &shared,
        registry: &registry,
        by: first_bytes_by,
    };
    match sniff(&mut stream, &mut input, &c).await {
        Some(Kind::Peer) if peer_tls.is_some() => {
            // --peer-ca: a peer must prove itself with its certificate.
            registry.count(Guard::PeerAuthFailed);
            tracing::debug!(
                "closing a plaintext peer connection: this node requires --peer-ca TLS"
            );
        }
        // Over the limit, only a peer that proves it knows the secret is
        // served (the session closes one that does not).
        Some(Kind::Peer) if refuse && node.peer_secret.is_none() => {
            registry.count(Guard::ConnectionLimit)
        }
        Some(Kind::Peer) => {
            input.advance(peer::MAGIC.len());
            let mut s = PeerSession::new(shard, peers, node, shared.mailbox().clone());
            let _ = driver::drive(&mut stream, &mut s, &shared, Some(&registry), input).await;
        }
        Some(Kind::Client) => {
            let speaks_tls = input.first() == Some(&TLS_HANDSHAKE_RECORD);
            // Made only for a connection that turns out to be a client.
            let grpc = || {
                GrpcSession::new(
                    shard.clone(),
                    peers.clone(),
                    node.clone(),
                    shared.mailbox().clone(),
                    settings.clone(),
                )
            };
            match tls {
                // Only a peer may get past the limit: without peer TLS, no
                // need to read the ClientHello to know this is no peer.
                Some(_) if speaks_tls && refuse && peer_tls.is_none() => {
                    registry.count(Guard::ConnectionLimit)
                }
                Some(tls) if speaks_tls => {
                    let hello = match client_hello(&mut stream, &mut input, &c).await {
                        Ok(hello) => hello,
                        Err(why) => {
                            registry.count(if Instant::now() >= first_bytes_by {
                                Guard::HeaderTimeout
                            } else {
                                Guard::TlsHandshakeFailed
                            });
                            tracing::debug!("TLS connection closed before its handshake: {why}");
                            return c.close(&mut stream).await;
                        }
                    };
                    let offers_peer = hello
                        .client_hello()
                        .alpn()
                        .is_some_and(|mut a| a.any(|p| p == PEER_ALPN));
                    match tls.peer.as_ref().filter(|_| offers_peer) {
                        Some(p) => {
                            let s = PeerSession::new(
                                shard.clone(),
                                peers.clone(),
                                node.clone(),
                                shared.mailbox().clone(),
                            );
                            c.drive_tls(&mut stream, hello, &p.server, s, input).await;
                        }
                        None if refuse => registry.count(Guard::ConnectionLimit),
                        None => {
                            shard.connection_opened(Interface::Grpc);
                            let s = grpc();
                            c.drive_tls(&mut stream, hello, &tls.grpc, s, input).await;
                            shard.connection_closed(Interface::Grpc);
                        }
                    }
                }
                _ if refuse => {
                    registry.count(Guard::ConnectionLimit);
                    // A TLS client could not read a plaintext GOAWAY: it is
                    // just closed.
                    if !speaks_tls {
                        let mut s = grpc();
                        let msg = format!(
                            "connection limit reached (--max-connections {})",
                            node.config.max_connections
                        );
                        s.go_away(ErrorCode::RefusedStream, msg.as_bytes());
                        let _ = stream.write_all(s.output()).await;
                    }
                }
                Some(_) => {
                    registry.count(Guard::PlaintextRefused);
                    let mut s = grpc();
                    s.go_away(
                        ErrorCode::InadequateSecurity,
                        b"this node requires TLS (it was started with --tls-cert)",
                    );
                    let _ = stream.write_all(s.output()).await;
                }
                // Plaintext, or a TLS client of a plaintext node (the
                // HTTP/2 layer finds no preface and says so).
                None => {
                    shard.connection_opened(Interface::Grpc);
                    let mut s = grpc();
                    let _ =
                        driver::drive(&mut stream, &mut s, &shared, Some(&registry), input).await;
                    shard.connection_closed(Interface::Grpc);
                }
            }
        }
        None => {
            if Instant::now() >= first_bytes_by {
                registry.count(Guard::HeaderTimeout);
            }
        }
    }
    c.close(&mut stream).await;
}

/// The connection being told apart, and its first bytes' deadline.
struct Conn<'a> {
    /// Its entry in the registry.
    id: u64,
    shared: &'a ConnShared,
    registry: &'a Registry,
    by: Instant,
}

impl Conn<'_> {
    /// Runs `session` over TLS on `stream` from the ClientHello in
    /// `hello`; the handshake must be over by the first bytes' deadline.
    async fn drive_tls<S: Session>(
        &self,
        stream: &mut Stream,
        hello: Accepted,
        config: &Arc<rustls::ServerConfig>,
        session: S,
        input: BytesMut,
    ) {
        let conn = match hello.into_connection(config.clone()) {
            Ok(conn) => conn,
            Err((e, _)) => {
                self.registry.count(Guard::TlsHandshakeFailed);
                tracing::debug!("TLS handshake refused: {e}");
                return;
            }
        };
        let mut t = TlsSession::new(conn, session, self.by);
        let _ = driver::drive(stream, &mut t, self.shared, Some(self.registry), input).await;
        if t.handshake_failed() {
            self.registry.count(Guard::TlsHandshakeFailed);
            if let Some(e) = t.error() {
                tracing::debug!("TLS handshake failed: {e}");
            }
        }
    }

    async fn close(&self, stream: &mut Stream) {
        self.shared.mailbox().close();
        self.registry.remove(self.id);
        linger(stream).await;
    }

    /// Reads more bytes into `input`: false when the connection closed,
    /// went idle, sent too little by the deadline, or the node shuts down
    /// (then `shutdown` says so).
    async fn read_more(&self, stream: &mut Stream, input: &mut BytesMut) -> Read {
        let mut rbuf = [0u8; 4096];
        loop {
            let read = future::or(
                async { Some(stream.read(&mut rbuf).await) },
                future::or(
                    async {
                        self.shared.mailbox().wait().await;
                        None
                    },
                    async {
                        runtime::sleep_until(Some(self.by)).await;
                        Some(Err(std::io::ErrorKind::TimedOut.into()))
                    },
                ),
            )
            .await;
            match read {
                Some(Ok(0)) => return Read::Closed("closed".into()),
                Some(Err(e)) => return Read::Closed(e.to_string()),
                Some(Ok(n)) => {
                    self.shared.touch();
                    input.extend_from_slice(rbuf.get(..n).unwrap_or_default());
                    return Read::More;
                }
                None if self.shared.take_idle() => return Read::Closed("idle".into()),
                None if self.shared.shutdown_requested() => return Read::ShuttingDown,
                None => {}
            }
        }
    }
}

enum Read {
    More,
    Closed(String),
    ShuttingDown,
}

enum Kind {
    Client,
    Peer,
}

/// Reads until the first bytes tell a peer (the full magic) from a client
/// (anything else; the HTTP/2 layer judges its preface, TLS its
/// ClientHello). None when the connection closed, went idle or sent too
/// little by the deadline.
async fn sniff(stream: &mut Stream, input: &mut BytesMut, c: &Conn<'_>) -> Option<Kind> {
    loop {
        let n = input.len().min(peer::MAGIC.len());
        if input[..n] != peer::MAGIC[..n] {
            return Some(Kind::Client);
        }
        if n == peer::MAGIC.len() {
            return Some(Kind::Peer);
        }
        match c.read_more(stream, input).await {
            Read::More => {}
            Read::Closed(_) => return None,
            // Shutting down before the first byte: treat it as a client,
            // whose HTTP/2 connection then gets a proper GOAWAY.
            Read::ShuttingDown => return Some(Kind::Client),
        }
    }
}

/// Reads a TLS ClientHello: its offered ALPN protocols say who is calling
/// before a server configuration is chosen. rustls bounds what it buffers.
async fn client_hello(
    stream: &mut Stream,
    input: &mut BytesMut,
    c: &Conn<'_>,
) -> Result<Accepted, String> {
    let mut acceptor = Acceptor::default();
    loop {
        while !input.is_empty() {
            let mut bytes: &[u8] = input;
            match acceptor.read_tls(&mut bytes) {
                Ok(0) => break,
                Ok(n) => input.advance(n),
                Err(e) => return Err(format!("ClientHello: {e}")),
            }
        }
        match acceptor.accept() {
            Ok(Some(hello)) => return Ok(hello),
            // rustls took no more and still wants more: never in practice
            // (it refuses an oversized hello), but input must not grow.
            Ok(None) if !input.is_empty() => return Err("ClientHello too large".into()),
            Ok(None) => {}
            Err((e, _)) => return Err(format!("ClientHello: {e}")),
        }
        match c.read_more(stream, input).await {
            Read::More => {}
            Read::Closed(why) => return Err(why),
            Read::ShuttingDown => return Err("the node is shutting down".into()),
        }
    }
}
