//! Listening sockets, optionally shared between processes with `SO_REUSEPORT`.

use std::io;
use std::net::SocketAddr;

use mio::net::TcpListener;
#[cfg(feature = "reuse-port")]
use socket2::{Domain, Protocol, Socket, Type};

/// Pending connections the kernel may hold per listener (the listen(2) backlog).
#[cfg(feature = "reuse-port")]
const BACKLOG: i32 = 1024;

/// Binds a non-blocking listener. With `reuse_port`, several processes can bind the same
/// address and the kernel spreads incoming connections among them (Linux `SO_REUSEPORT`).
#[cfg(feature = "reuse-port")]
pub fn bind(addr: SocketAddr, reuse_port: bool) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // Restarting on the same port must not fail because of connections in TIME_WAIT.
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        // An IPv6 listener serves IPv6 only, so that 0.0.0.0 and [::] can both be given.
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(TcpListener::from_std(socket.into()))
}

/// Binds a non-blocking listener with mio (`SO_REUSEADDR`, backlog 1024; an IPv6 listener
/// keeps the system's dual-stack default). `reuse_port` needs the `reuse-port` feature.
#[cfg(not(feature = "reuse-port"))]
pub fn bind(addr: SocketAddr, reuse_port: bool) -> io::Result<TcpListener> {
    if reuse_port {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "reuse_port (SO_REUSEPORT) needs wsloop built with the `reuse-port` feature",
        ));
    }
    TcpListener::bind(addr)
}
