//! The event loop: one thread, one `mio::Poll`, a table of connections.
//!
//! Each loop turn waits for readiness (or the next deadline), then for every ready connection
//! reads until the socket would block, decodes what arrived and calls the [`Handler`]; the
//! commands the handler recorded are carried out at once (queued on the target connections),
//! and at the end of the turn every connection with new output is written once, with a
//! vectored write. Writable interest is registered only while a queue is not empty.
//!
//! The loop is generic over the [`Net`] it runs on: [`MioNet`] (TCP) in production, the
//! in-memory pipes of [`sim`] in tests, which drive the same code on a virtual clock. Timed
//! protocol rules (heartbeat, close and idle deadlines, ping rate) live in the protocol core;
//! the loop keeps only socket concerns (accept, the handshake deadline, the linger) and wakes
//! each connection when its core asks to be woken.
//!
//! The parts, by the state each owns: `config` (settings), `table` (the connections and
//! their work lists), `acceptor` (listeners, pause when out of descriptors), [`admission`]
//! (per-address limits), `http` (plain responses), `input` (request head, then frames),
//! `fanout` (the commands a handler recorded: sends, broadcasts, closes, slow consumers),
//! `deadlines` (what happens when a connection's deadline comes up).
//!
//! An application implements [`Handler`]; [`Server::bind`] and [`Server::run_until`] run it.

mod acceptor;
pub mod admission;
mod body;
mod compress;
pub mod config;
mod conn;
mod deadlines;
mod fanout;
pub mod handler;
pub mod http;
mod input;
mod listener;
pub mod net;
pub mod outbound;
mod pool;
pub mod sim;
mod stats;
mod table;
mod timers;
#[cfg(feature = "tls")]
pub mod tls;
mod transport;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token, Waker};

use crate::log::Level;
use crate::proto::{Policy, Timeouts};
use acceptor::Acceptor;
use admission::AddressTable;
pub use admission::{AddressLimits, ProxyHeader};
pub use config::Config;
use conn::{Conn, Counted, Phase, ReadOutcome};
use handler::Commands;
pub use handler::{Answer, CloseReason, ConnId, Ctx, Handler, Listener, OpenInfo, Route};
pub use http::HttpResponse;
pub use net::{MioNet, Net};
use outbound::OutStorage;
use pool::BufferPool;
pub use stats::{Rejection, Stats, TlsFailure};
use table::ConnTable;
use timers::Timers;
use transport::Transport;

/// Listener tokens sit just below the waker's at the top of the token space; connection tokens
/// are slab keys.
const LISTENER_TOKEN_BASE: usize = usize::MAX - 1 - MAX_LISTENERS;
/// Most listeners one server can have (the tokens reserved for them).
const MAX_LISTENERS: usize = 64;
/// The token of the waker that interrupts the poll (signals, other threads).
const WAKER_TOKEN: Token = Token(usize::MAX);
/// Size of a connection's read buffer while it is reading.
const READ_BUFFER: usize = 16 * 1024;
/// Reads one connection may do per loop turn before the others get their turn; what is left
/// in its socket is read in the next turn (readiness is edge-triggered, so the loop remembers).
const READS_PER_TURN: usize = 16;
/// Idle buffers kept for reuse by the next busy connections, per pool.
const POOLED_BUFFERS: usize = 256;
/// The longest the loop blocks in one poll: waking at least this often lets it see that it
/// was paused (the poll returned much later than asked) even when no deadline is near.
const MAX_POLL_WAIT: Duration = Duration::from_secs(1);
/// A poll that returns this much later than asked means the process was paused.
const PAUSE_THRESHOLD: Duration = Duration::from_millis(500);
/// After a pause, polls without waiting to take in everything that arrived meanwhile before
/// any deadline is judged, at most this many times.
const CATCH_UP_POLLS: usize = 64;

/// The server: the network it runs on, its connections and the application.
pub struct Server<H: Handler, N: Net = MioNet> {
    net: N,
    conns: ConnTable<N::Stream>,
    handler: H,
    config: Config,
    /// The timed rules every connection's protocol core enforces (from `config`), shared.
    timeouts: Arc<Timeouts>,
    timers: Timers,
    commands: Commands,
    addresses: AddressTable,
    read_buffers: BufferPool,
    out_storage: OutStorage,
    /// The compressor shared by messages compressed on their own (permessage-deflate).
    compressor: compress::Compressor,
    /// Shutting down: listeners closed, closes sent, waiting for the connections to end.
    draining: bool,
    /// A connection was removed: accepting, if it paused for lack of descriptors, may go on.
    freed_descriptor: bool,
    stats: Stats,
}

impl<H: Handler> Server<H> {
    /// Binds every listen address (`listen`, then `listen_plain`, then `listen_internal`).
    pub fn bind(config: Config, handler: H) -> io::Result<Self> {
        let addrs = config.addresses();
        if config.listen.is_empty() || addrs.len() > MAX_LISTENERS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("between 1 and {MAX_LISTENERS} listen addresses are needed"),
            ));
        }
        let poll = Poll::new()?;
        let acceptor = Acceptor::bind(
            &addrs,
            config.reuse_port,
            poll.registry(),
            LISTENER_TOKEN_BASE,
        )?;
        Ok(Server::on_net(MioNet { poll, acceptor }, config, handler))
    }

    /// The addresses actually bound (port 0 resolved): those of `listen`, then those of
    /// `listen_plain`, then those of `listen_internal`.
    pub fn local_addrs(&self) -> io::Result<Vec<SocketAddr>> {
        self.net.acceptor.local_addrs()
    }

    /// A waker that interrupts the poll from another thread (e.g. a signal handler thread).
    pub fn waker(&self) -> io::Result<Waker> {
        Waker::new(self.net.poll.registry(), WAKER_TOKEN)
    }

    /// Runs the loop forever (until an I/O error of the poll itself).
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            self.turn(&mut events, None)?;
        }
    }

    /// Runs until `stop` is set (wake the loop with [`waker`](Self::waker) after setting it),
    /// then shuts down gracefully: stop accepting, send close 1001 to every client, wait up to
    /// `drain_timeout` for the closes to complete.
    pub fn run_until(&mut self, stop: &AtomicBool, drain_timeout: Duration) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        while !stop.load(Ordering::Relaxed) {
            self.turn(&mut events, None)?;
        }
        let deadline = Instant::now() + drain_timeout;
        self.begin_shutdown(Instant::now());
        while !self.conns.is_empty() {
            let now = Instant::now();
            if now >= deadline {
                log!(
                    Level::Warn,
                    "drain timeout: dropping {} connections",
                    self.conns.len()
                );
                break;
            }
            self.turn(&mut events, Some(deadline - now))?;
        }
        Ok(())
    }

    /// Stops accepting and starts the closing handshake (1001) with every client.
    pub fn begin_shutdown(&mut self, now: Instant) {
        self.net.acceptor.close(self.net.poll.registry());
        self.drain(now);
    }

    /// One loop turn: wait for readiness (at most `max_wait`, or until the next deadline),
    /// handle it, fire due deadlines, write queued output.
    pub fn turn(&mut self, events: &mut Events, max_wait: Option<Duration>) -> io::Result<()> {
        let before = Instant::now();
        let next = [self.next_deadline(), self.net.acceptor.paused_until()]
            .into_iter()
            .flatten()
            .min();
        let mut timeout = next.map_or(MAX_POLL_WAIT, |t| {
            t.saturating_duration_since(before).min(MAX_POLL_WAIT)
        });
        if self.conns.has_read_ready() {
            timeout = Duration::ZERO;
        }
        if let Some(max) = max_wait {
            timeout = timeout.min(max);
        }
        match self.net.poll.poll(events, Some(timeout)) {
            Ok(()) => {}
            // A signal (SIGCONT after a stop among them) cut the wait short: no events, but
            // the time it reports still counts.
            Err(e) if e.kind() == io::ErrorKind::Interrupted => events.clear(),
            Err(e) => return Err(e),
        }
        let now = Instant::now();
        let late = now.saturating_duration_since(before + timeout);
        if late >= PAUSE_THRESHOLD {
            // Before the input: what arrives now was sent while the loop was not running.
            self.paused(late, now);
        }
        self.dispatch(events, now);
        if late >= PAUSE_THRESHOLD {
            self.catch_up(events, now)?;
        }
        let pause_over = self.net.acceptor.paused_until().is_some_and(|t| t <= now);
        if (std::mem::take(&mut self.freed_descriptor) || pause_over) && self.net.acceptor.resume()
        {
            self.accept_pending(now);
        }
        self.finish_turn(now);
        Ok(())
    }

    /// Handles one poll's events.
    fn dispatch(&mut self, events: &Events, now: Instant) {
        for event in events.iter() {
            match event.token() {
                WAKER_TOKEN => self.wake(now),
                Token(t) if t >= LISTENER_TOKEN_BASE => self.accept_pending(now),
                Token(slot) => {
                    if event.is_writable() {
                        self.flush(slot, now);
                    }
                    if event.is_readable() || event.is_read_closed() || event.is_error() {
                        // On Linux, epoll reports every arrival after a read that left the
                        // socket empty, so a short read means "drained" and the read that
                        // would only return EAGAIN is skipped (one system call per message
                        // less). Not when the peer's FIN came with this event: no further
                        // event will tell about it, so read on to the end of the stream.
                        let more_events_come = !event.is_read_closed() && !event.is_error();
                        self.on_readable(slot, now, more_events_come);
                    }
                }
            }
        }
    }

    /// After a pause: takes in everything that arrived meanwhile (more than one poll's worth
    /// of events when many clients sent something) before any deadline is judged, so that
    /// no client is found idle or dead with its data unread in the socket.
    fn catch_up(&mut self, events: &mut Events, now: Instant) -> io::Result<()> {
        let mut polls = 0;
        while events.iter().count() == events.capacity() && polls < CATCH_UP_POLLS {
            self.net.poll.poll(events, Some(Duration::ZERO))?;
            self.dispatch(events, now);
            polls += 1;
        }
        Ok(())
    }

    fn accept_pending(&mut self, now: Instant) {
        if self.draining {
            return;
        }
        while let Some((socket, peer, listener)) = self.net.acceptor.next(now) {
            // Small frames go out at once; the loop batches writes itself.
            if let Err(e) = socket.set_nodelay(true) {
                log!(Level::Debug, "{peer}: set_nodelay: {e}");
            }
            let listener = self.config.listener(listener);
            self.add_conn(socket, peer, listener, now);
        }
    }
}

impl<H: Handler, N: Net> Server<H, N> {
    /// A server on `net` with no connections yet.
    fn on_net(net: N, config: Config, handler: H) -> Self {
        Server {
            net,
            conns: ConnTable::default(),
            handler,
            addresses: AddressTable::new(config.per_address, Instant::now()),
            read_buffers: BufferPool::new(
                POOLED_BUFFERS,
                READ_BUFFER.max(config.limits.max_handshake_bytes + 1),
            ),
            out_storage: OutStorage::new(POOLED_BUFFERS),
            compressor: compress::Compressor::default(),
            timeouts: Arc::new(config.timeouts()),
            config,
            timers: Timers::default(),
            commands: Commands::default(),
            draining: false,
            freed_descriptor: false,
            stats: Stats::default(),
        }
    }

    /// The loop's counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The application.
    pub fn handler(&self) -> &H {
        &self.handler
    }

    /// The application, to configure it after the server is bound.
    pub fn handler_mut(&mut self) -> &mut H {
        &mut self.handler
    }

    /// The settings the server runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// A reading connection's buffer: a frame header plus a control frame, or a whole head.
    fn read_capacity(&self) -> usize {
        READ_BUFFER.max(self.config.limits.max_handshake_bytes + 1)
    }

    /// When the loop must next act without input: the earliest connection deadline, or the
    /// application's own.
    fn next_deadline(&self) -> Option<Instant> {
        [self.timers.next(), self.handler.next_timer()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Starts the closing handshake (1001) with every client and drops connections whose
    /// handshake is not complete; the caller stops accepting.
    fn drain(&mut self, now: Instant) {
        self.draining = true;
        let slots = self.conns.slots();
        log!(
            Level::Info,
            "shutting down: closing {} connections",
            slots.len()
        );
        for slot in slots {
            let Some(conn) = self.conns.get(slot) else {
                continue;
            };
            match &conn.phase {
                Phase::Handshake(_) | Phase::Body(_) | Phase::Answering => {
                    self.remove(slot, CloseReason::Abnormal, now)
                }
                Phase::Open(_) => {
                    let id = conn.id;
                    self.close_conn(
                        id,
                        Policy::Shutdown.code(),
                        Policy::Shutdown.wire_reason(),
                        now,
                    );
                }
                Phase::Closing => {}
            }
        }
        self.flush_dirty(now);
    }

    /// The other end of the loop's waker: input from another thread may wait.
    fn wake(&mut self, now: Instant) {
        let mut ctx = Ctx::new(&mut self.commands, now);
        self.handler.on_wake(&mut ctx);
        self.apply_commands(None, now);
    }

    /// The stream of a connection accepted on `listener`: TLS on a `listen` address when
    /// configured, plain otherwise.
    fn transport(&self, socket: N::Stream, listener: Listener) -> Option<Transport<N::Stream>> {
        #[cfg(feature = "tls")]
        if let Some(tls) = self
            .config
            .tls
            .as_ref()
            .filter(|_| listener == Listener::Listen)
        {
            return match tls.accept() {
                Ok(session) => Some(Transport::tls(socket, session)),
                Err(e) => {
                    log!(Level::Warn, "TLS session: {e}");
                    None
                }
            };
        }
        let _ = listener;
        Some(Transport::plain(socket))
    }

    /// Takes a new connection into the table; it has the handshake timeout to send its
    /// request head (after the TLS handshake, on a TLS address).
    fn add_conn(&mut self, socket: N::Stream, peer: SocketAddr, listener: Listener, now: Instant) {
        // Behind a trusted proxy every connection comes from the proxy: the per-address
        // limits then apply to the forwarded address, once the head is read.
        let handshaking = self
            .config
            .trust_proxy
            .is_none()
            .then_some(peer.ip().to_canonical());
        if let Some(ip) = handshaking {
            if !self.addresses.start_handshake(ip, now) {
                log!(
                    Level::Info,
                    "{peer}: refused: too many pending handshakes from {ip}"
                );
                self.stats.reject(Rejection::PendingHandshakes);
                return;
            }
        }
        let id = self.conns.next_id();
        // A refused connection never gets a TLS session.
        let mut transport = self.transport(socket, listener);
        let registered = transport.as_mut().is_some_and(|t| {
            self.net
                .register(t.socket_mut(), id.slot())
                .map_err(|e| log!(Level::Warn, "{peer}: register: {e}"))
                .is_ok()
        });
        let Some(transport) = transport.filter(|_| registered) else {
            if let Some(ip) = handshaking {
                self.addresses.end_handshake(ip);
            }
            return;
        };
        let deadline = self.config.handshake_deadline(now);
        let counted = handshaking.map(Counted::Handshaking);
        self.conns.insert(Conn::accepted(
            id, transport, peer, listener, deadline, counted,
        ));
        self.timers.schedule(deadline, id);
        self.stats.accepted += 1;
        self.stats.connections += 1;
        log!(Level::Debug, "{peer}: accepted as {id}");
    }

    /// After the events of a turn: connections that used up their share of reads go again,
    /// due deadlines fire, queued output is written.
    fn finish_turn(&mut self, now: Instant) {
        // Connections that used up their share of the previous turn go after this turn's
        // events; any that use it up again wait for the next turn.
        for slot in self.conns.take_read_ready() {
            self.on_readable(slot, now, false);
        }
        self.fire_deadlines(now);
        self.flush_dirty(now);
        self.out_storage.settle(now);
        self.addresses.sweep(now);
    }

    /// Reads until the socket would block (or, with `stop_when_short`, until a read leaves it
    /// empty), decoding after each read, or until the connection has had its share of the
    /// turn.
    fn on_readable(&mut self, slot: usize, now: Instant, stop_when_short: bool) {
        let capacity = self.read_capacity();
        for reads in 0.. {
            let Some(conn) = self.conns.get_mut(slot) else {
                return;
            };
            if reads == READS_PER_TURN {
                self.conns.mark_read_ready(slot);
                break;
            }
            if conn.out.len() >= self.config.max_backpressure
                && !matches!(conn.phase, Phase::Closing)
            {
                // The peer is not reading what it asked for: stop reading its requests until
                // it does (flush resumes reading).
                conn.read_paused = true;
                break;
            }
            let read = conn
                .rbuf
                .read_from(&mut conn.transport, capacity, &mut self.read_buffers);
            if conn.transport.take_handshake_completed() {
                log!(Level::Debug, "{}: TLS handshake completed", conn.peer);
                self.stats.tls_handshakes += 1;
            }
            match read {
                Ok(ReadOutcome { n: 0, .. }) => {
                    if conn.opened {
                        log!(
                            Level::Debug,
                            "{}: connection dropped without a close",
                            conn.peer
                        );
                    }
                    if conn.transport.is_handshaking() {
                        log!(
                            Level::Debug,
                            "{}: closed during the TLS handshake",
                            conn.peer
                        );
                        self.stats.tls_failed(TlsFailure::Closed);
                    }
                    self.remove(slot, CloseReason::Abnormal, now);
                    return;
                }
                Ok(ReadOutcome { n, short }) => {
                    let drained = short && stop_when_short && conn.transport.short_read_drains();
                    self.stats.bytes_in += n as u64;
                    self.process_input(slot, now);
                    if drained {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.read_failed(slot, &e, now);
                    return;
                }
            }
        }
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        conn.rbuf.release_if_empty(&mut self.read_buffers);
        // TLS handshake records to send.
        if conn.transport.wants_write() {
            self.conns.mark_dirty(slot);
        }
    }

    /// A read failed: a TLS handshake that failed is counted by class (plain HTTP to the TLS
    /// port is answered with a plain 400); the connection closes.
    fn read_failed(&mut self, slot: usize, error: &io::Error, now: Instant) {
        let Some(conn) = self.conns.get(slot) else {
            return;
        };
        let peer = conn.peer;
        #[cfg(feature = "tls")]
        if let Some(class) = transport::failure(error) {
            log!(Level::Info, "{peer}: {error}, closing");
            self.stats.tls_failed(class);
            if class == TlsFailure::PlainHttp {
                let response =
                    HttpResponse::text(400, "This port speaks TLS: use https:// or wss://.");
                self.respond(slot, &response, false, now);
                return;
            }
        }
        log!(Level::Debug, "{peer}: read: {error}");
        self.remove(slot, CloseReason::Abnormal, now);
    }

    /// Enters the Closing phase: the queued bytes are the last; tell the application.
    fn begin_closing(&mut self, slot: usize, reason: CloseReason, now: Instant) {
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        conn.phase = Phase::Closing;
        conn.rbuf.clear();
        let linger_until = now + self.config.close_timeout;
        conn.deadline = Some(linger_until);
        self.timers.schedule(linger_until, conn.id);
        self.conns.mark_dirty(slot);
        self.ended(slot, reason, now);
    }

    /// A connection is closing or gone: give back its share of the address limits and tell
    /// the application, once, if it was open.
    fn ended(&mut self, slot: usize, reason: CloseReason, now: Instant) {
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        if let Some(counted) = conn.counted.take() {
            self.addresses.release(counted);
        }
        if !std::mem::replace(&mut conn.opened, false) {
            return;
        }
        let id = conn.id;
        self.stats.open -= 1;
        if std::mem::replace(&mut conn.deflate, false) {
            self.stats.deflate_open -= 1;
        }
        *self.stats.closes.entry(reason.code()).or_default() += 1;
        let mut ctx = Ctx::new(&mut self.commands, now);
        self.handler.on_close(&mut ctx, id, reason);
        self.apply_commands(None, now);
    }

    /// Removes a connection from the table, telling the application if it was open.
    fn remove(&mut self, slot: usize, reason: CloseReason, now: Instant) {
        if self.conns.get(slot).is_none() {
            return;
        }
        self.ended(slot, reason, now);
        let Some(mut conn) = self.conns.remove(slot) else {
            return;
        };
        self.stats.connections -= 1;
        if let Err(e) = self.net.deregister(conn.transport.socket_mut()) {
            log!(Level::Debug, "{}: deregister: {e}", conn.peer);
        }
        drop(conn);
        self.freed_descriptor = true;
    }

    fn flush_dirty(&mut self, now: Instant) {
        while let Some(slot) = self.conns.pop_dirty() {
            self.flush(slot, now);
        }
        // Every queue given this turn's broadcast frames has been written: what is left of
        // them must outlive the turn's buffer.
        let mut stragglers = self.out_storage.take_stragglers();
        for slot in stragglers.drain(..) {
            if let Some(conn) = self.conns.get_mut(slot) {
                self.out_storage.end_turn_for(&mut conn.out);
            }
        }
        self.out_storage.finish_turn(stragglers);
    }

    /// Writes what the socket takes, keeps writable interest only while output remains,
    /// and resumes reading a connection paused for backpressure once its queue drains.
    fn flush(&mut self, slot: usize, now: Instant) {
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        let before = conn.out.len();
        // Drained once the queue is written and nothing waits below it (TLS records).
        let result = conn
            .out
            .write_to(&mut conn.transport, &self.out_storage)
            .and_then(|empty| match empty {
                true => conn.transport.flush_pending(),
                false => Ok(false),
            });
        self.stats.bytes_out += (before - conn.out.len()) as u64;
        let mut drained = match result {
            Ok(drained) => drained,
            Err(e) => {
                log!(Level::Debug, "{}: write: {e}", conn.peer);
                self.remove(slot, CloseReason::Abnormal, now);
                return;
            }
        };
        if !drained && conn.out.holds_turn() {
            self.out_storage.note_straggler(slot);
        }
        conn.out.give_back(&mut self.out_storage);
        if drained && matches!(conn.phase, Phase::Closing) && !conn.write_shut {
            // TLS ends with close_notify before the FIN (RFC 8446 §6.1); then FIN after the
            // last frame, and the peer answers with its own FIN (§7.1.1: the server should
            // close the TCP connection first).
            let closed = conn.transport.close().and_then(|written| {
                if written {
                    conn.write_shut = true;
                    conn.out.release();
                    N::shutdown_write(conn.transport.socket_mut())?;
                }
                Ok(written)
            });
            match closed {
                Ok(written) => drained = written,
                Err(e) => {
                    log!(Level::Debug, "{}: shutdown: {e}", conn.peer);
                    self.remove(slot, CloseReason::Abnormal, now);
                    return;
                }
            }
        }
        if drained == conn.watching_writable {
            if let Err(e) = self
                .net
                .watch_writable(conn.transport.socket_mut(), slot, !drained)
            {
                log!(Level::Debug, "{}: reregister: {e}", conn.peer);
                self.remove(slot, CloseReason::Abnormal, now);
                return;
            }
            conn.watching_writable = !drained;
        }
        if conn.read_paused && conn.out.len() < self.config.max_backpressure / 2 {
            // Input may be waiting with no new readiness edge to come: read it next turn.
            conn.read_paused = false;
            self.conns.mark_read_ready(slot);
        }
    }
}
