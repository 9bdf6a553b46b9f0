//! The listen ports, reserved by the main thread before any shard binds
//! them: port 0 becomes one port shared by every shard, a fixed port that
//! another process already accepts on is refused, and the gateway's and the
//! per-shard ports may not overlap the gRPC one.

use crate::runtime;
use std::net::SocketAddr;
use std::time::Duration;

/// Reserves `addr` for the shards (port 0 becomes one port for all of
/// them). SO_REUSEPORT lets another process of the same user bind the same
/// port and silently take half its connections (two nodes on one host
/// left on the default --http port), so a fixed port that something
/// already accepts on is refused: one connect on loopback at start-up.
pub(super) fn reserve(
    addr: SocketAddr,
    flag: &str,
) -> Result<(socket2::Socket, SocketAddr), String> {
    if addr.port() != 0 {
        let mut probe = addr;
        if probe.ip().is_unspecified() {
            probe.set_ip(match addr {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        if std::net::TcpStream::connect_timeout(&probe, Duration::from_millis(200)).is_ok() {
            return Err(format!(
                "cannot bind {flag}{addr}: another process already listens on it \
                 (is another node running on this host? give each its own --listen and --http)"
            ));
        }
    }
    runtime::reserve_port(addr).map_err(|e| format!("cannot bind {flag}{addr}: {e}"))
}

/// Reserves the gateway's address like the gRPC one. Refuses an address
/// that would share the gRPC port: with SO_REUSEPORT both listeners would
/// take its connections.
pub(super) fn reserve_http(
    http: Option<SocketAddr>,
    grpc: SocketAddr,
) -> Result<Option<(socket2::Socket, SocketAddr)>, String> {
    let Some(want) = http else {
        return Ok(None);
    };
    let (reservation, bound) = reserve(want, "--http ")?;
    let overlaps = bound.port() == grpc.port()
        && (bound.ip() == grpc.ip() || bound.ip().is_unspecified() || grpc.ip().is_unspecified());
    if overlaps {
        return Err(format!(
            "--http {want} and --listen {grpc} share a port: give the gateway a port of its own"
        ));
    }
    Ok(Some((reservation, bound)))
}

/// Reserves the per-shard ports (--shard-ports BASE: BASE+i for shard i on
/// the gRPC address), refusing ones past 65535, ones the gRPC or gateway
/// address uses, and ones another process accepts on.
pub(super) fn reserve_shard_ports(
    base: Option<u16>,
    shards: usize,
    grpc: SocketAddr,
    http: Option<SocketAddr>,
) -> Result<Vec<socket2::Socket>, String> {
    let Some(base) = base else {
        return Ok(Vec::new());
    };
    let last = u32::from(base) + shards as u32 - 1;
    if last > u32::from(u16::MAX) {
        return Err(format!(
            "--shard-ports {base}: {shards} shards need ports {base}-{last}, past 65535"
        ));
    }
    let ports = u32::from(base)..=last;
    for (what, taken) in [("--listen", Some(grpc)), ("--http", http)] {
        if let Some(t) = taken.filter(|t| ports.contains(&u32::from(t.port()))) {
            return Err(format!(
                "--shard-ports {base}: ports {base}-{last} include {what} {t}; \
                 give the shard ports a range of their own"
            ));
        }
    }
    ports
        .map(|p| {
            let addr = SocketAddr::new(grpc.ip(), p as u16);
            reserve(addr, "--shard-ports ").map(|(socket, _)| socket)
        })
        .collect()
}
