//! What the loop needs of the network, so that the same server logic runs on mio's TCP
//! sockets or on the simulation's in-memory pipes ([`super::sim`]).
//!
//! The loop reads and writes streams until they would block, and tells the network which
//! streams it wants to hear about: input always, writability only while output waits
//! (interest derived from state, as rustls' mio example derives it from `wants_write()`).

use std::io::{self, Read, Write};
use std::net::Shutdown;

use mio::net::TcpStream;
use mio::{Interest, Poll, Token};

use super::acceptor::Acceptor;

/// The sockets a [`Server`](super::Server) runs on.
pub trait Net {
    /// A connected, non-blocking byte stream: reads and writes end with `WouldBlock`.
    type Stream: Read + Write;

    /// Starts watching a new stream for input; its events name `slot`.
    fn register(&mut self, stream: &mut Self::Stream, slot: usize) -> io::Result<()>;

    /// Watches for writability as well as input (`true`), or for input only.
    fn watch_writable(
        &mut self,
        stream: &mut Self::Stream,
        slot: usize,
        writable: bool,
    ) -> io::Result<()>;

    /// Stops watching a stream about to be dropped.
    fn deregister(&mut self, stream: &mut Self::Stream) -> io::Result<()>;

    /// Sends the end of the stream (TCP FIN): nothing more will be written.
    fn shutdown_write(stream: &mut Self::Stream) -> io::Result<()>;
}

/// The real network: a `mio::Poll` and the listening sockets.
#[derive(Debug)]
pub struct MioNet {
    pub(crate) poll: Poll,
    pub(crate) acceptor: Acceptor,
}

impl Net for MioNet {
    type Stream = TcpStream;

    fn register(&mut self, stream: &mut TcpStream, slot: usize) -> io::Result<()> {
        self.poll
            .registry()
            .register(stream, Token(slot), Interest::READABLE)
    }

    fn watch_writable(
        &mut self,
        stream: &mut TcpStream,
        slot: usize,
        writable: bool,
    ) -> io::Result<()> {
        let interest = if writable {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        self.poll
            .registry()
            .reregister(stream, Token(slot), interest)
    }

    fn deregister(&mut self, stream: &mut TcpStream) -> io::Result<()> {
        self.poll.registry().deregister(stream)
    }

    fn shutdown_write(stream: &mut TcpStream) -> io::Result<()> {
        stream.shutdown(Shutdown::Write)
    }
}
