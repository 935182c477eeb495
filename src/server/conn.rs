//! One connection as the event loop sees it: stream, phase, read buffer, outbound queue.

use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use super::body::BodyRead;
use super::handler::{ConnId, Listener};
use super::outbound::OutQueue;
use super::outbound::OutStorage;
use super::pool::BufferPool;
use super::transport::Transport;
use crate::proto::handshake::HeadReader;
use crate::proto::{Connection, OpCode};

/// Moves the control frames the protocol owes the peer into the outbound queue, in order;
/// a pong replaces one still waiting at the end of the queue.
pub(crate) fn queue_control_frames(
    ws: &mut Connection,
    out: &mut OutQueue,
    storage: &mut OutStorage,
) {
    if !ws.wants_transmit() {
        return;
    }
    out.borrow(storage, true);
    while let Some(frame) = ws.poll_transmit() {
        match frame.opcode() {
            OpCode::Pong => out.push_pong(frame.as_bytes()),
            _ => out.push_bytes(frame.as_bytes()),
        }
    }
}

/// A connection's share of its address's limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Counted {
    /// Accepted from this peer address; its request head is not complete.
    Handshaking(IpAddr),
    /// An open WebSocket connection of this client address.
    Open(IpAddr),
}

/// Where a connection stands.
#[derive(Debug)]
pub(crate) enum Phase {
    /// Reading the HTTP upgrade request.
    Handshake(HeadReader),
    /// Reading the body of a request the application asked for (`Route::ReadBody`), under
    /// the head's deadline.
    Body(Box<BodyRead>),
    /// The application works out the answer to a request whose body it read
    /// ([`Answer::Later`](super::handler::Answer::Later)), under the head's deadline; input
    /// meanwhile is dropped (the answer closes the connection).
    Answering,
    /// WebSocket frames flow (possibly with a close sent and its reply awaited).
    Open(Box<Connection>),
    /// The last bytes (a close frame or an HTTP error) are queued; after they are written the
    /// write side is shut down and input is read and dropped until the peer closes, so that
    /// unread input cannot make the kernel reset the connection before the peer reads them.
    Closing,
}

/// What one read brought.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ReadOutcome {
    /// Bytes read; 0 is the end of the stream.
    pub(crate) n: usize,
    /// The read did not fill the free space: the socket had nothing more at that moment.
    pub(crate) short: bool,
}

/// A read buffer: bytes received and not yet decoded are `data[start..end]`.
#[derive(Debug, Default)]
pub(crate) struct ReadBuf {
    data: Vec<u8>,
    start: usize,
    end: usize,
}

impl ReadBuf {
    /// The bytes waiting to be decoded.
    pub(crate) fn pending_mut(&mut self) -> &mut [u8] {
        &mut self.data[self.start..self.end]
    }

    pub(crate) fn pending(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    /// Marks `n` bytes as decoded.
    pub(crate) fn consume(&mut self, n: usize) {
        self.start = self.start.saturating_add(n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Drops everything received.
    pub(crate) fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
    }

    /// Gives an empty buffer back to the pool (idle connections hold no read buffer).
    pub(crate) fn release_if_empty(&mut self, pool: &mut BufferPool) {
        if self.start == self.end && self.data.capacity() > 0 {
            pool.give(std::mem::take(&mut self.data));
            self.clear();
        }
    }

    /// Reads once from `socket` into free space (see [`ReadOutcome`]), taking a buffer from the
    /// pool or making room first. `capacity` bounds the buffer; the caller decodes between
    /// reads, so pending bytes never exceed one head or one frame header plus a control frame.
    pub(crate) fn read_from<R: Read>(
        &mut self,
        socket: &mut R,
        capacity: usize,
        pool: &mut BufferPool,
    ) -> io::Result<ReadOutcome> {
        if self.data.capacity() == 0 {
            self.data = pool.take(capacity);
        }
        if self.data.len() < capacity {
            self.data.resize(capacity, 0);
        }
        if self.end == self.data.len() && self.start > 0 {
            self.data.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.data.len() {
            // Full with undecodable bytes: the caller's limits make this unreachable for a
            // well-sized buffer; report it as an error rather than spin.
            return Err(io::Error::new(
                io::ErrorKind::OutOfMemory,
                "read buffer full",
            ));
        }
        let room = self.data.len() - self.end;
        let n = socket.read(&mut self.data[self.end..])?;
        self.end += n;
        Ok(ReadOutcome { n, short: n < room })
    }
}

/// A connection in the table, over a stream of type `S` (a TCP socket, or an in-memory pipe
/// in the simulation).
#[derive(Debug)]
pub(crate) struct Conn<S> {
    pub(crate) id: ConnId,
    /// The socket, plain or with TLS.
    pub(crate) transport: Transport<S>,
    pub(crate) peer: SocketAddr,
    /// The kind of address it came in on (the handler routes by it).
    pub(crate) listener: Listener,
    pub(crate) phase: Phase,
    pub(crate) rbuf: ReadBuf,
    pub(crate) out: OutQueue,
    /// Writable interest is registered (only while output waits).
    pub(crate) watching_writable: bool,
    /// When the loop must look at this connection again: the handshake deadline, the
    /// protocol core's next timeout while open, or the end of the linger while closing.
    pub(crate) deadline: Option<Instant>,
    /// The application saw `on_open` and has not yet seen `on_close`.
    pub(crate) opened: bool,
    /// permessage-deflate was negotiated (counted in `Stats::deflate_open` while open).
    pub(crate) deflate: bool,
    /// Reading stopped because the outbound queue is over its high-water mark.
    pub(crate) read_paused: bool,
    /// The write side has been shut down (Closing phase, queue flushed).
    pub(crate) write_shut: bool,
    /// Queued output awaits the flush at the end of the loop turn.
    pub(crate) dirty: bool,
    /// Input is left in the socket for the next turn (the connection is in `read_ready`).
    pub(crate) read_ready: bool,
    /// What this connection counts for in the per-address table, given back once.
    pub(crate) counted: Option<Counted>,
}

impl<S> Conn<S> {
    /// A connection just accepted: reading its request head until `deadline`.
    pub(crate) fn accepted(
        id: ConnId,
        transport: Transport<S>,
        peer: SocketAddr,
        listener: Listener,
        deadline: Instant,
        counted: Option<Counted>,
    ) -> Self {
        Conn {
            id,
            transport,
            peer,
            listener,
            phase: Phase::Handshake(HeadReader::new()),
            rbuf: ReadBuf::default(),
            out: OutQueue::default(),
            watching_writable: false,
            deadline: Some(deadline),
            opened: false,
            deflate: false,
            read_paused: false,
            write_shut: false,
            dirty: false,
            read_ready: false,
            counted,
        }
    }

    /// The deadline this connection's phase asks for now, if it differs from the one
    /// scheduled (the caller schedules it). Only open connections' deadlines move by
    /// themselves: the protocol core's heartbeat, idle and close timers.
    pub(crate) fn moved_deadline(&mut self) -> Option<Instant> {
        let Phase::Open(ws) = &self.phase else {
            return None;
        };
        let wanted = ws.poll_timeout();
        if wanted == self.deadline {
            return None;
        }
        self.deadline = wanted;
        wanted
    }
}

#[cfg(test)]
mod tests {
    /// An idle open connection holds its table entry and its boxed protocol state, and no
    /// buffers (they go back to the pools): keep that at half the 1 KB-per-connection budget,
    /// leaving room for the timer heap, the allocator's share and an application's state.
    #[test]
    fn an_idle_connection_fits_the_memory_budget() {
        let entry = std::mem::size_of::<super::Conn<mio::net::TcpStream>>();
        let protocol = std::mem::size_of::<crate::proto::Connection>();
        assert!(
            entry + protocol <= 512,
            "Conn {entry} B + Connection {protocol} B exceed the idle budget"
        );
    }

    /// A plain connection pays one pointer for TLS (the session is boxed, and only TLS
    /// connections have one).
    #[test]
    fn tls_costs_a_plain_connection_one_pointer() {
        use std::mem::size_of;
        let transport = size_of::<super::Transport<mio::net::TcpStream>>();
        let socket = size_of::<mio::net::TcpStream>();
        let pointer = if cfg!(feature = "tls") {
            size_of::<usize>()
        } else {
            0
        };
        assert!(
            transport <= (socket + pointer).next_multiple_of(size_of::<usize>()),
            "Transport {transport} B for a {socket} B socket"
        );
    }
}
