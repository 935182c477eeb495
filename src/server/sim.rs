//! A deterministic simulation of the server: in-memory pipes instead of sockets, a virtual
//! clock instead of the system's.
//!
//! [`Sim`] runs the real [`Server`] logic (handshake, admission, frames, the handler,
//! fan-out, backpressure, deadlines) over [`SimNet`]. A test connects peers, writes bytes as
//! a client would, reads what the server wrote, and moves time forward with
//! [`Sim::advance`]: a heartbeat test covers a minute of pings in microseconds, with nothing
//! left to the scheduler. Nothing here reads the system clock except [`Sim::new`], once, for
//! an arbitrary origin.
//!
//! ```
//! use std::time::Duration;
//! use wsloop::app::echo::Echo;
//! use wsloop::server::{sim::Sim, Config};
//!
//! let config = Config { idle_timeout: Some(Duration::from_secs(30)), ..Config::default() };
//! let mut sim = Sim::new(config, Echo);
//! let peer = sim.connect();
//! sim.send(&peer, b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
//!     Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n");
//! assert!(sim.take(&peer).starts_with(b"HTTP/1.1 101 "));
//! sim.advance(Duration::from_secs(30));
//! // Idle for 30 s: a close frame with 1001 "idle timeout" (RFC 6455 §5.5.1).
//! assert_eq!(sim.take(&peer)[..4], [0x88, 14, 0x03, 0xe9]);
//! ```

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, IoSlice, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::net::Net;
use super::{Config, Handler, Listener, Server};

/// Unread bytes a peer's receive side holds by default before the server's writes block.
const DEFAULT_WINDOW: usize = 1 << 30;

/// One connection's two directions, shared by the server's stream and the test's peer.
#[derive(Debug)]
struct Pipe {
    /// Bytes the peer sent that the server has not read.
    to_server: VecDeque<u8>,
    /// The peer sent its FIN.
    peer_closed: bool,
    /// Bytes the server wrote that the peer has not taken.
    to_peer: Vec<u8>,
    /// Most unread bytes `to_peer` may hold; writes beyond block.
    window: usize,
    /// The server shut its write side (FIN).
    server_write_shut: bool,
    /// The server dropped the connection.
    dropped: bool,
    /// The server's slot for this stream, while registered.
    slot: Option<usize>,
    /// The server wants to hear when it may write.
    watching_writable: bool,
    /// Write calls (plain or vectored) that moved bytes to the peer.
    writes: u64,
}

/// The server's end of a simulated connection.
#[derive(Debug)]
pub struct SimStream(Rc<RefCell<Pipe>>);

impl Read for SimStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut pipe = self.0.borrow_mut();
        if pipe.to_server.is_empty() {
            return if pipe.peer_closed {
                Ok(0)
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            };
        }
        let n = buf.len().min(pipe.to_server.len());
        for (dst, src) in buf.iter_mut().zip(pipe.to_server.drain(..n)) {
            *dst = src;
        }
        Ok(n)
    }
}

impl Write for SimStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut pipe = self.0.borrow_mut();
        if pipe.server_write_shut {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        let mut room = pipe.window.saturating_sub(pipe.to_peer.len());
        if room == 0 && bufs.iter().any(|b| !b.is_empty()) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let mut written = 0;
        for buf in bufs {
            let n = buf.len().min(room);
            pipe.to_peer.extend_from_slice(&buf[..n]);
            written += n;
            room -= n;
        }
        if written > 0 {
            pipe.writes += 1;
        }
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The simulated network: streams carry their own registration, so it holds nothing.
#[derive(Debug, Default)]
pub struct SimNet;

impl Net for SimNet {
    type Stream = SimStream;

    fn register(&mut self, stream: &mut SimStream, slot: usize) -> io::Result<()> {
        stream.0.borrow_mut().slot = Some(slot);
        Ok(())
    }

    fn watch_writable(
        &mut self,
        stream: &mut SimStream,
        _slot: usize,
        writable: bool,
    ) -> io::Result<()> {
        stream.0.borrow_mut().watching_writable = writable;
        Ok(())
    }

    fn deregister(&mut self, stream: &mut SimStream) -> io::Result<()> {
        let mut pipe = stream.0.borrow_mut();
        pipe.slot = None;
        pipe.dropped = true;
        Ok(())
    }

    fn shutdown_write(stream: &mut SimStream) -> io::Result<()> {
        stream.0.borrow_mut().server_write_shut = true;
        Ok(())
    }
}

/// The test's end of a simulated connection.
#[derive(Debug, Clone)]
pub struct SimPeer {
    pipe: Rc<RefCell<Pipe>>,
    addr: SocketAddr,
}

impl SimPeer {
    /// The peer's address as the server sees it.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// A server on the simulated network, with its virtual clock.
pub struct Sim<H: Handler> {
    server: Server<H, SimNet>,
    now: Instant,
    next_port: u16,
}

impl<H: Handler> Sim<H> {
    /// A server with `config` (its listen addresses are ignored) running `handler`.
    pub fn new(config: Config, handler: H) -> Self {
        Sim {
            server: Server::on_net(SimNet, config, handler),
            now: Instant::now(),
            next_port: 40_000,
        }
    }

    /// The virtual time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The server (its stats, its handler).
    pub fn server(&self) -> &Server<H, SimNet> {
        &self.server
    }

    /// The server, to reach its handler.
    pub fn server_mut(&mut self) -> &mut Server<H, SimNet> {
        &mut self.server
    }

    /// A new connection from 127.0.0.1, accepted by the server.
    pub fn connect(&mut self) -> SimPeer {
        self.connect_from(IpAddr::V4(Ipv4Addr::LOCALHOST))
    }

    /// A new connection from `ip`, accepted by the server (unless admission refuses it at
    /// accept: then the peer reads the end of the stream).
    pub fn connect_from(&mut self, ip: IpAddr) -> SimPeer {
        self.connect_to(ip, Listener::Listen)
    }

    /// A new connection from `ip` to an address of the kind `listener`.
    pub fn connect_to(&mut self, ip: IpAddr, listener: Listener) -> SimPeer {
        self.next_port = self.next_port.wrapping_add(1);
        let addr = SocketAddr::new(ip, self.next_port);
        let pipe = Rc::new(RefCell::new(Pipe {
            to_server: VecDeque::new(),
            peer_closed: false,
            to_peer: Vec::new(),
            window: DEFAULT_WINDOW,
            server_write_shut: false,
            dropped: false,
            slot: None,
            watching_writable: false,
            writes: 0,
        }));
        self.server
            .add_conn(SimStream(Rc::clone(&pipe)), addr, listener, self.now);
        if pipe.borrow().slot.is_none() {
            pipe.borrow_mut().dropped = true;
        }
        self.server.finish_turn(self.now);
        SimPeer { pipe, addr }
    }

    /// The peer sends `bytes`; the server reads and handles them at the current time.
    pub fn send(&mut self, peer: &SimPeer, bytes: &[u8]) {
        peer.pipe.borrow_mut().to_server.extend(bytes);
        self.readable(peer);
    }

    /// The peer sends its FIN (or the network drops the connection).
    pub fn hang_up(&mut self, peer: &SimPeer) {
        peer.pipe.borrow_mut().peer_closed = true;
        self.readable(peer);
    }

    fn readable(&mut self, peer: &SimPeer) {
        let slot = peer.pipe.borrow().slot;
        if let Some(slot) = slot {
            self.server.on_readable(slot, self.now, false);
        }
        self.settle();
    }

    /// Takes the bytes the server has written to the peer; the room they free lets the
    /// server write more, as a socket's send buffer draining would.
    pub fn take(&mut self, peer: &SimPeer) -> Vec<u8> {
        let (bytes, slot) = {
            let mut pipe = peer.pipe.borrow_mut();
            let slot = pipe.slot.filter(|_| pipe.watching_writable);
            (std::mem::take(&mut pipe.to_peer), slot)
        };
        if let Some(slot) = slot {
            self.server.flush(slot, self.now);
            self.settle();
        }
        bytes
    }

    /// Sets how many unread bytes the peer's side holds before the server's writes block
    /// (a peer that stops reading has a small window).
    pub fn set_window(&mut self, peer: &SimPeer, bytes: usize) {
        peer.pipe.borrow_mut().window = bytes;
    }

    /// Moves the clock forward by `by`, firing every deadline on the way at its own time.
    pub fn advance(&mut self, by: Duration) {
        let until = self.now + by;
        while let Some(next) = self.server.next_deadline().filter(|t| *t <= until) {
            self.now = self.now.max(next);
            self.settle();
        }
        self.now = until;
        self.settle();
    }

    /// The peer sends `bytes` while the server is not running (see [`pause`](Self::pause)):
    /// they wait in the socket.
    pub fn send_later(&mut self, peer: &SimPeer, bytes: &[u8]) {
        peer.pipe.borrow_mut().to_server.extend(bytes);
    }

    /// The server process is paused (stopped, descheduled) for `paused`: the clock jumps,
    /// then the loop notices, as the real one does from a poll that came back late, moves
    /// the deadlines, and takes in what was sent meanwhile before it judges any of them.
    pub fn pause(&mut self, paused: Duration) {
        self.now += paused;
        self.server.paused(paused, self.now);
        // Everything that arrived meanwhile is read before any deadline is judged.
        for slot in self.server.conns.slots() {
            self.server.on_readable(slot, self.now, false);
        }
        self.settle();
    }

    /// The loop's waker fired (input from another thread may wait).
    pub fn wake(&mut self) {
        self.server.wake(self.now);
        self.settle();
    }

    /// Starts a graceful shutdown: every open connection is sent 1001.
    pub fn shutdown(&mut self) {
        self.server.drain(self.now);
        self.settle();
    }

    /// The server still holds the connection (it has not dropped it).
    pub fn is_connected(&self, peer: &SimPeer) -> bool {
        !peer.pipe.borrow().dropped
    }

    /// The server has sent its FIN (after a close or an HTTP response) or dropped the
    /// connection: the peer will read no more.
    pub fn is_closed_by_server(&self, peer: &SimPeer) -> bool {
        let pipe = peer.pipe.borrow();
        pipe.server_write_shut || pipe.dropped
    }

    /// The server wants to be told when it may write to this peer.
    pub fn is_watching_writable(&self, peer: &SimPeer) -> bool {
        peer.pipe.borrow().watching_writable
    }

    /// How many write calls (plain or vectored) have moved bytes to the peer so far: frames
    /// queued for it within one loop turn should cost one.
    pub fn writes(&self, peer: &SimPeer) -> u64 {
        peer.pipe.borrow().writes
    }

    /// Connections in the server's table.
    pub fn connections(&self) -> usize {
        self.server.conns.len()
    }

    /// Finishes the turn, and the next ones while connections have input left over.
    fn settle(&mut self) {
        self.server.finish_turn(self.now);
        while self.server.conns.has_read_ready() {
            self.server.finish_turn(self.now);
        }
    }
}
