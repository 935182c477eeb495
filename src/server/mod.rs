//! The event loop: one thread, one `mio::Poll`, a `Slab` of connections.
//!
//! Each loop turn waits for readiness (or the next deadline), then for every ready connection
//! reads until the socket would block, decodes what arrived and calls the [`Handler`]; the
//! commands the handler recorded are carried out at once (queued on the target connections),
//! and at the end of the turn every connection with new output is written once, with a
//! vectored write. Writable interest is registered only while a queue is not empty.

pub mod address;
mod conn;
pub mod handler;
mod listener;
pub mod outbound;
mod pool;
mod stats;
mod timers;

use std::io;
use std::net::{IpAddr, Shutdown, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use crate::log::Level;
use crate::proto::close_code;
use crate::proto::frame::encode_frame;
use crate::proto::handshake::{
    select_protocol, validate_upgrade, write_rejection, write_response, write_switching_protocols,
    HandshakeError, HeadReader, Request,
};
use crate::proto::{Connection, Event, Limits, OpCode};
use address::{client_addr, AddressLimits, AddressTable};
use conn::{Conn, Counted, Phase, ReadBuf, ReadOutcome, Timer};
pub use handler::{CloseReason, ConnId, Ctx, Handler, HttpResponse, OpenInfo, Route};
use handler::{Command, Commands, Requester};
use outbound::{OutQueue, OutStorage};
use pool::BufferPool;
pub use stats::Stats;
use timers::Timers;

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
/// How long accepting pauses when the process is out of file descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Linux errno values for descriptor exhaustion (accept(2)): EMFILE and ENFILE.
const EMFILE: i32 = 24;
const ENFILE: i32 = 23;
/// The payload of heartbeat pings.
const HEARTBEAT_PAYLOAD: &[u8] = b"wsloop-heartbeat";

/// Settings of the event loop.
#[derive(Clone, Debug)]
pub struct Config {
    /// Addresses to listen on (IPv4 and IPv6).
    pub listen: Vec<SocketAddr>,
    /// Protocol limits (handshake, frame, message sizes).
    pub limits: Limits,
    /// A connection whose upgrade request is not complete by then is closed.
    pub handshake_timeout: Duration,
    /// How long to wait for the peer's close after ours, and for the peer to close TCP.
    pub close_timeout: Duration,
    /// Subprotocols this server speaks, preferred first.
    pub protocols: Vec<String>,
    /// Outbound bytes queued for one connection above which the loop stops reading its
    /// requests, and above which a connection that is sent messages it did not ask for
    /// (broadcasts) is closed with 1008 as a slow consumer.
    pub max_backpressure: usize,
    /// Send a heartbeat ping after this long (none: no heartbeat).
    pub ping_interval: Option<Duration>,
    /// Close a connection that has not answered a heartbeat ping within this time.
    pub ping_timeout: Duration,
    /// Share the listening ports with other processes (`SO_REUSEPORT`).
    pub reuse_port: bool,
    /// Take the client address from `X-Real-IP` / `X-Forwarded-For` (behind a trusted proxy).
    pub trust_proxy: bool,
    /// Open WebSocket connections in all; further upgrades get 503.
    pub max_connections: usize,
    /// Per-address limits: open connections and request heads per second (429 beyond).
    pub per_address: AddressLimits,
    /// Close a connection that has sent nothing (not even a pong) for this long.
    pub idle_timeout: Option<Duration>,
    /// Pings a client may send per second; more fails the connection with 1008.
    pub max_pings_per_second: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 9001))],
            limits: Limits::default(),
            handshake_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(5),
            protocols: Vec::new(),
            max_backpressure: 4 * 1024 * 1024,
            ping_interval: None,
            ping_timeout: Duration::from_secs(10),
            reuse_port: false,
            trust_proxy: false,
            max_connections: 100_000,
            per_address: AddressLimits {
                max_connections: 1_000,
                max_pending_handshakes: 128,
                requests_per_second: 50.0,
                burst: 100.0,
            },
            idle_timeout: None,
            max_pings_per_second: 50,
        }
    }
}

/// The server: listeners, connections and the application.
pub struct Server<H: Handler> {
    poll: Poll,
    listeners: Vec<TcpListener>,
    conns: Slab<Conn>,
    handler: H,
    config: Config,
    timers: Timers,
    commands: Commands,
    dirty: Vec<usize>,
    next_serial: u32,
    accept_paused_until: Option<Instant>,
    /// Accepting has failed for lack of descriptors since the last successful accept (so the
    /// warning is logged once per episode, not every retry).
    descriptors_exhausted: bool,
    /// Shutting down: listeners closed, closes sent, waiting for the connections to end.
    draining: bool,
    addresses: AddressTable,
    read_buffers: BufferPool,
    out_storage: OutStorage,
    /// Connections with input left in their socket after their share of a turn.
    read_ready: Vec<usize>,
    stats: Stats,
}

/// Moves the control frames the protocol owes the peer into the outbound queue, in order;
/// a pong replaces one still waiting at the end of the queue.
fn queue_control_frames(ws: &mut Connection, out: &mut OutQueue, storage: &mut OutStorage) {
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

impl<H: Handler> Server<H> {
    /// Binds every listen address.
    pub fn bind(config: Config, handler: H) -> io::Result<Self> {
        if config.listen.is_empty() || config.listen.len() > MAX_LISTENERS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("between 1 and {MAX_LISTENERS} listen addresses are needed"),
            ));
        }
        let mut listeners = config
            .listen
            .iter()
            .map(|addr| listener::bind(*addr, config.reuse_port))
            .collect::<io::Result<Vec<_>>>()?;
        let poll = Poll::new()?;
        for (i, listener) in listeners.iter_mut().enumerate() {
            poll.registry().register(
                listener,
                Token(LISTENER_TOKEN_BASE + i),
                Interest::READABLE,
            )?;
        }
        Ok(Server {
            poll,
            listeners,
            conns: Slab::new(),
            handler,
            addresses: AddressTable::new(config.per_address, Instant::now()),
            read_buffers: BufferPool::new(
                POOLED_BUFFERS,
                READ_BUFFER.max(config.limits.max_handshake_bytes + 1),
            ),
            out_storage: OutStorage::new(POOLED_BUFFERS),
            read_ready: Vec::new(),
            config,
            timers: Timers::default(),
            commands: Commands::default(),
            dirty: Vec::new(),
            next_serial: 0,
            accept_paused_until: None,
            descriptors_exhausted: false,
            draining: false,
            stats: Stats::default(),
        })
    }

    /// The addresses actually bound (port 0 resolved).
    pub fn local_addrs(&self) -> io::Result<Vec<SocketAddr>> {
        self.listeners.iter().map(TcpListener::local_addr).collect()
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

    /// A waker that interrupts the poll from another thread (e.g. a signal handler thread).
    pub fn waker(&self) -> io::Result<Waker> {
        Waker::new(self.poll.registry(), WAKER_TOKEN)
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
        self.draining = true;
        for mut listener in self.listeners.drain(..) {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        let slots: Vec<usize> = self.conns.iter().map(|(slot, _)| slot).collect();
        log!(
            Level::Info,
            "shutting down: closing {} connections",
            slots.len()
        );
        for slot in slots {
            let Some(conn) = self.conns.get_mut(slot) else {
                continue;
            };
            match &conn.phase {
                Phase::Handshake(_) => self.remove(slot, CloseReason::Abnormal, now),
                Phase::Open(_) => {
                    let id = conn.id;
                    self.close_conn(id, close_code::GOING_AWAY, "server shutting down", now);
                }
                Phase::Closing => {}
            }
        }
        self.flush_dirty(now);
    }

    /// One loop turn: wait for readiness (at most `max_wait`, or until the next deadline),
    /// handle it, fire due deadlines, write queued output.
    pub fn turn(&mut self, events: &mut Events, max_wait: Option<Duration>) -> io::Result<()> {
        let now = Instant::now();
        let next = [self.timers.next(), self.accept_paused_until]
            .into_iter()
            .flatten()
            .min();
        let mut timeout = next.map(|t| t.saturating_duration_since(now));
        if !self.read_ready.is_empty() {
            timeout = Some(Duration::ZERO);
        }
        if let Some(max) = max_wait {
            timeout = Some(timeout.map_or(max, |t| t.min(max)));
        }
        match self.poll.poll(events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e),
        }
        let now = Instant::now();
        for event in events.iter() {
            match event.token() {
                WAKER_TOKEN => {
                    let mut ctx = Ctx::new(&mut self.commands, now);
                    self.handler.on_wake(&mut ctx);
                    self.apply_commands(None, now);
                }
                Token(t) if t >= LISTENER_TOKEN_BASE => self.accept_all(now),
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
        // Connections that used up their share of the previous turn go after this turn's
        // events; any that use it up again wait for the next turn.
        for slot in std::mem::take(&mut self.read_ready) {
            if let Some(conn) = self.conns.get_mut(slot) {
                conn.read_ready = false;
                self.on_readable(slot, now, false);
            }
        }
        if self.accept_paused_until.is_some_and(|t| t <= now) {
            self.accept_paused_until = None;
            self.accept_all(now);
        }
        self.fire_deadlines(now);
        self.flush_dirty(now);
        self.addresses.sweep(now);
        Ok(())
    }

    fn accept_all(&mut self, now: Instant) {
        if self.accept_paused_until.is_some() || self.draining {
            return;
        }
        for i in 0..self.listeners.len() {
            loop {
                match self.listeners[i].accept() {
                    Ok((socket, peer)) => {
                        if std::mem::take(&mut self.descriptors_exhausted) {
                            log!(Level::Info, "accepting again");
                        }
                        self.add_conn(socket, peer, now);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if matches!(e.raw_os_error(), Some(EMFILE | ENFILE)) => {
                        // Out of descriptors: the pending connection stays in the backlog.
                        // Retrying at once would spin; wait a little, or until a connection
                        // closes and frees a descriptor.
                        if !std::mem::replace(&mut self.descriptors_exhausted, true) {
                            log!(Level::Warn, "accept paused until descriptors free up: {e}");
                        }
                        self.accept_paused_until = Some(now + ACCEPT_BACKOFF);
                        return;
                    }
                    Err(e) => {
                        // ECONNABORTED and friends concern one connection: go on.
                        log!(Level::Debug, "accept failed: {e}");
                        if e.kind() != io::ErrorKind::ConnectionAborted
                            && e.kind() != io::ErrorKind::Interrupted
                        {
                            break;
                        }
                    }
                }
            }
        }
    }

    fn add_conn(&mut self, mut socket: TcpStream, peer: SocketAddr, now: Instant) {
        // Behind a trusted proxy every connection comes from the proxy: the per-address
        // limits then apply to the forwarded address, once the head is read.
        let handshaking = (!self.config.trust_proxy).then_some(peer.ip());
        if let Some(ip) = handshaking {
            if !self.addresses.start_handshake(ip, now) {
                log!(
                    Level::Info,
                    "{peer}: refused: too many pending handshakes from {ip}"
                );
                *self
                    .stats
                    .rejections
                    .entry("pending_handshakes")
                    .or_default() += 1;
                return;
            }
        }
        // Small frames go out at once; the loop batches writes itself.
        if let Err(e) = socket.set_nodelay(true) {
            log!(Level::Debug, "{peer}: set_nodelay: {e}");
        }
        let entry = self.conns.vacant_entry();
        let slot = entry.key();
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut socket, Token(slot), Interest::READABLE)
        {
            log!(Level::Warn, "{peer}: register: {e}");
            if let Some(ip) = handshaking {
                self.addresses.end_handshake(ip);
            }
            return;
        }
        self.next_serial = self.next_serial.wrapping_add(1);
        let id = ConnId::new(slot, self.next_serial);
        let deadline = now + self.config.handshake_timeout;
        entry.insert(Conn {
            id,
            socket,
            peer,
            phase: Phase::Handshake(HeadReader::new()),
            rbuf: ReadBuf::default(),
            out: OutQueue::default(),
            interest: Interest::READABLE,
            deadline: Some((deadline, Timer::Handshake)),
            idle_check: None,
            opened: false,
            read_paused: false,
            write_shut: false,
            dirty: false,
            read_ready: false,
            counted: handshaking.map(Counted::Handshaking),
            last_read: now,
            ping_window: (now, 0),
        });
        self.timers.schedule(deadline, id, Timer::Handshake);
        self.stats.accepted += 1;
        self.stats.connections += 1;
        log!(Level::Debug, "{peer}: accepted as {id}");
    }

    /// Sets a connection's protocol timer, or its idle check.
    fn set_timer(timers: &mut Timers, conn: &mut Conn, timer: Timer, when: Instant) {
        match timer {
            Timer::Idle => conn.idle_check = Some(when),
            _ => conn.deadline = Some((when, timer)),
        }
        timers.schedule(when, conn.id, timer);
    }

    fn read_capacity(&self) -> usize {
        READ_BUFFER.max(self.config.limits.max_handshake_bytes + 1)
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
                self.mark_read_ready(slot);
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
            match conn
                .rbuf
                .read_from(&mut conn.socket, capacity, &mut self.read_buffers)
            {
                Ok(ReadOutcome { n: 0, .. }) => {
                    self.on_eof(slot, now);
                    return;
                }
                Ok(ReadOutcome { n, short }) => {
                    self.stats.bytes_in += n as u64;
                    conn.last_read = now;
                    self.process_input(slot, now);
                    if short && stop_when_short {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log!(Level::Debug, "{}: read: {e}", conn.peer);
                    self.remove(slot, CloseReason::Abnormal, now);
                    return;
                }
            }
        }
        if let Some(conn) = self.conns.get_mut(slot) {
            if !matches!(conn.phase, Phase::Handshake(_)) {
                conn.rbuf.release_if_empty(&mut self.read_buffers);
            }
        }
    }

    fn on_eof(&mut self, slot: usize, now: Instant) {
        let Some(conn) = self.conns.get(slot) else {
            return;
        };
        if conn.opened {
            log!(
                Level::Debug,
                "{}: connection dropped without a close",
                conn.peer
            );
        }
        self.remove(slot, CloseReason::Abnormal, now);
    }

    /// Decodes everything pending in the connection's read buffer.
    fn process_input(&mut self, slot: usize, now: Instant) {
        loop {
            let Some(conn) = self.conns.get_mut(slot) else {
                return;
            };
            let id = conn.id;
            match &mut conn.phase {
                Phase::Closing => {
                    conn.rbuf.clear();
                    return;
                }
                Phase::Handshake(reader) => {
                    match reader.read(conn.rbuf.pending(), &self.config.limits) {
                        Ok(None) => return,
                        Ok(Some((request, head_len))) => {
                            // Bytes after the head are WebSocket frames: keep them.
                            conn.rbuf.consume(head_len);
                            if let Some(counted) = conn.counted.take() {
                                self.addresses.release(counted);
                            }
                            if !self.on_request(slot, &request, now) {
                                return;
                            }
                        }
                        Err(e) => {
                            self.reject_handshake(slot, &e, now);
                            return;
                        }
                    }
                }
                Phase::Open(ws) => {
                    // §5.5.1: data may be sent until our close goes out; after it, a reply
                    // is dropped as any send to a closing connection is.
                    let requester = ws.is_open().then_some(Requester {
                        id,
                        out: &mut conn.out,
                        storage: &mut self.out_storage,
                        replies: 0,
                    });
                    let mut ctx = match requester {
                        Some(r) => Ctx::for_message(&mut self.commands, now, r),
                        None => Ctx::new(&mut self.commands, now),
                    };
                    let mut close_reason = None;
                    let mut got_pong = false;
                    let mut ping_flood = false;
                    let (used, more) = match ws.poll_event(conn.rbuf.pending_mut()) {
                        Err(e) => {
                            log!(Level::Debug, "{}: protocol error: {e}", conn.peer);
                            self.stats.protocol_errors += 1;
                            close_reason = Some(CloseReason::Failed(e.close_code()));
                            // Nothing after the violation is read (§7.1.7).
                            (conn.rbuf.pending().len(), false)
                        }
                        Ok((used, None)) => (used, false),
                        Ok((used, Some(event))) => {
                            match event {
                                Event::Message(message) => {
                                    self.stats.messages_in += 1;
                                    self.handler.on_message(&mut ctx, id, message);
                                }
                                Event::Pong(payload) => {
                                    got_pong = true;
                                    self.handler.on_pong(&mut ctx, id, payload);
                                }
                                Event::Close(frame) => {
                                    close_reason = Some(CloseReason::Handshake(frame.code));
                                }
                                Event::Ping(_) => {
                                    let (start, count) = &mut conn.ping_window;
                                    if now.saturating_duration_since(*start)
                                        >= Duration::from_secs(1)
                                    {
                                        *start = now;
                                        *count = 0;
                                    }
                                    *count += 1;
                                    ping_flood = *count > self.config.max_pings_per_second;
                                }
                            }
                            (used, true)
                        }
                    };
                    self.stats.messages_out += ctx.direct_replies();
                    conn.rbuf.consume(used);
                    // Any pong answers the heartbeat: the peer is alive (§5.5.3).
                    if let (true, Some((_, Timer::PongDue)), Some(interval)) =
                        (got_pong, conn.deadline, self.config.ping_interval)
                    {
                        Self::set_timer(&mut self.timers, conn, Timer::NextPing, now + interval);
                    }
                    // Re-borrow: the handler call above ended the borrow of `ws`'s event.
                    let Phase::Open(ws) = &mut conn.phase else {
                        return;
                    };
                    queue_control_frames(ws, &mut conn.out, &mut self.out_storage);
                    let closed = ws.is_closed();
                    self.mark_dirty(slot);
                    self.apply_commands(Some(id), now);
                    if ping_flood && !closed {
                        log!(
                            Level::Warn,
                            "{id}: more than {} pings per second",
                            self.config.max_pings_per_second
                        );
                        self.stats.ping_floods += 1;
                        self.fail_with(
                            id,
                            close_code::POLICY_VIOLATION,
                            "ping rate exceeded",
                            false,
                            now,
                        );
                        return;
                    }
                    if closed {
                        self.begin_closing(
                            slot,
                            close_reason.unwrap_or(CloseReason::Abnormal),
                            now,
                        );
                        return;
                    }
                    if !more {
                        return;
                    }
                }
            }
        }
    }

    /// Answers a complete request head as the handler routes it: an upgrade (101 and the
    /// WebSocket phase, or the handshake error), or a plain HTTP response.
    /// Returns whether the connection is now open.
    fn on_request(&mut self, slot: usize, request: &Request, now: Instant) -> bool {
        let Some(conn) = self.conns.get(slot) else {
            return false;
        };
        let peer = conn.peer;
        let client = client_addr(request, peer, self.config.trust_proxy);
        if let Some((response, reason)) = self.admission(request, client, now) {
            log!(
                Level::Info,
                "{peer}: refused ({client}): {} {reason}",
                response.status
            );
            *self.stats.rejections.entry(reason).or_default() += 1;
            self.respond(slot, &response, now);
            return false;
        }
        match self.handler.on_request(request, peer, &self.stats) {
            Route::Upgrade => self.upgrade(slot, request, client, now),
            Route::Respond(response) => {
                self.respond(slot, &response, now);
                false
            }
            Route::Reject(response, reason) => {
                log!(
                    Level::Info,
                    "{peer}: upgrade refused: {} {reason}",
                    response.status
                );
                *self.stats.rejections.entry(reason).or_default() += 1;
                self.respond(slot, &response, now);
                false
            }
        }
    }

    /// The loop's own limits, checked before the application sees a request: the request
    /// rate of the address (429), and for upgrades the total (503) and per-address (429)
    /// connection counts.
    fn admission(
        &mut self,
        request: &Request,
        client: IpAddr,
        now: Instant,
    ) -> Option<(HttpResponse, &'static str)> {
        let refuse = |status, body: &str, reason| {
            let mut response = HttpResponse::text(status, body);
            response.headers = "Retry-After: 1\r\n".into();
            Some((response, reason))
        };
        if !self.addresses.admit_request(client, now) {
            return refuse(429, "too many requests from this address", "request_rate");
        }
        if !request.wants_upgrade() {
            return None;
        }
        if self.stats.open >= self.config.max_connections {
            return refuse(503, "server is full", "server_full");
        }
        if !self.addresses.may_open(client) {
            return refuse(
                429,
                "too many connections from this address",
                "address_connections",
            );
        }
        None
    }

    fn upgrade(&mut self, slot: usize, request: &Request, client: IpAddr, now: Instant) -> bool {
        let upgrade = match validate_upgrade(request) {
            Ok(u) => u,
            Err(e) => {
                self.reject_handshake(slot, &e, now);
                return false;
            }
        };
        let Some(conn) = self.conns.get_mut(slot) else {
            return false;
        };
        let protocol = select_protocol(&self.config.protocols, &upgrade.offered_protocols);
        let mut head = Vec::with_capacity(160);
        write_switching_protocols(&mut head, &upgrade.accept, protocol);
        conn.out.push_bytes(&head);
        conn.phase = Phase::Open(Box::new(Connection::new_server(self.config.limits.clone())));
        conn.deadline = None;
        if let Some(interval) = self.config.ping_interval {
            Self::set_timer(&mut self.timers, conn, Timer::NextPing, now + interval);
        }
        if let Some(idle) = self.config.idle_timeout {
            Self::set_timer(&mut self.timers, conn, Timer::Idle, now + idle);
        }
        conn.opened = true;
        conn.counted = Some(Counted::Open(client));
        self.addresses.opened(client, now);
        self.stats.upgraded += 1;
        self.stats.open += 1;
        let (id, peer) = (conn.id, conn.peer);
        // The path only: a query string may carry a token.
        log!(Level::Debug, "{peer}: upgraded {} as {id}", request.path());
        let info = OpenInfo {
            peer,
            client,
            request,
            protocol,
        };
        let mut ctx = Ctx::new(&mut self.commands, now);
        self.handler.on_open(&mut ctx, id, &info);
        self.mark_dirty(slot);
        self.apply_commands(Some(id), now);
        true
    }

    /// Refuses a handshake with its HTTP status and closes.
    fn reject_handshake(&mut self, slot: usize, error: &HandshakeError, now: Instant) {
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        log!(
            Level::Info,
            "{}: handshake refused: {} {}",
            conn.peer,
            error.status(),
            error.reason()
        );
        *self.stats.rejections.entry(error.label()).or_default() += 1;
        let mut response = Vec::with_capacity(256);
        write_rejection(&mut response, error);
        conn.out.push_bytes(&response);
        self.begin_closing(slot, CloseReason::Abnormal, now);
    }

    /// Sends an HTTP response and closes.
    fn respond(&mut self, slot: usize, response: &HttpResponse, now: Instant) {
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        let mut bytes = Vec::with_capacity(response.body.len() + 256);
        write_response(
            &mut bytes,
            response.status,
            response.content_type,
            &response.headers,
            &response.body,
        );
        conn.out.push_bytes(&bytes);
        self.begin_closing(slot, CloseReason::Abnormal, now);
    }

    /// Enters the Closing phase: the queued bytes are the last; tell the application.
    fn begin_closing(&mut self, slot: usize, reason: CloseReason, now: Instant) {
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        conn.phase = Phase::Closing;
        conn.rbuf.clear();
        Self::set_timer(
            &mut self.timers,
            conn,
            Timer::Linger,
            now + self.config.close_timeout,
        );
        self.mark_dirty(slot);
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
        *self.stats.closes.entry(reason.code()).or_default() += 1;
        let mut ctx = Ctx::new(&mut self.commands, now);
        self.handler.on_close(&mut ctx, id, reason);
        self.apply_commands(None, now);
    }

    /// Removes a connection from the table, telling the application if it was open.
    fn remove(&mut self, slot: usize, reason: CloseReason, now: Instant) {
        if !self.conns.contains(slot) {
            return;
        }
        self.ended(slot, reason, now);
        let mut conn = self.conns.remove(slot);
        self.stats.connections -= 1;
        if let Err(e) = self.poll.registry().deregister(&mut conn.socket) {
            log!(Level::Debug, "{}: deregister: {e}", conn.peer);
        }
        drop(conn);
        // A descriptor was freed: if accepting paused for lack of them, try again now.
        if self.accept_paused_until.take().is_some() {
            self.accept_all(now);
        }
    }

    fn conn_by_id(conns: &mut Slab<Conn>, id: ConnId) -> Option<(usize, &mut Conn)> {
        let slot = id.slot();
        conns
            .get_mut(slot)
            .filter(|c| c.id == id)
            .map(|c| (slot, c))
    }

    /// Starts the closing handshake on an open connection; the peer has `close_timeout` to
    /// answer.
    fn close_conn(&mut self, id: ConnId, code: u16, reason: &str, now: Instant) {
        let Some((slot, conn)) = Self::conn_by_id(&mut self.conns, id) else {
            return;
        };
        let Phase::Open(ws) = &mut conn.phase else {
            return;
        };
        if ws.close(code, reason) {
            queue_control_frames(ws, &mut conn.out, &mut self.out_storage);
            Self::set_timer(
                &mut self.timers,
                conn,
                Timer::CloseReply,
                now + self.config.close_timeout,
            );
            self.mark_dirty(slot);
        }
    }

    /// Whether a connection's queue is over the cap even after writing what its socket takes
    /// now: a reader whose queue filled within one turn is not a slow consumer, one whose
    /// socket is full as well is. A write error is left for the next flush to handle.
    fn over_cap(conn: &mut Conn, cap: usize, stats: &mut Stats) -> bool {
        if conn.out.len() < cap {
            return false;
        }
        let before = conn.out.len();
        let _ = conn.out.write_to(&mut conn.socket);
        stats.bytes_out += (before - conn.out.len()) as u64;
        conn.out.len() >= cap
    }

    /// The slot of `to` if it can be sent a message now: it exists and is open (no close sent
    /// or received), and, unless it asked for the message, its queue is not over the cap even
    /// after writing what its socket takes; otherwise it is added to `slow`.
    fn deliverable(
        &mut self,
        to: ConnId,
        requester: Option<ConnId>,
        slow: &mut Vec<ConnId>,
    ) -> Option<usize> {
        let (slot, conn) = Self::conn_by_id(&mut self.conns, to)?;
        if !matches!(&conn.phase, Phase::Open(ws) if ws.is_open()) {
            return None;
        }
        if Some(to) != requester
            && Self::over_cap(conn, self.config.max_backpressure, &mut self.stats)
        {
            slow.push(to);
            return None;
        }
        Some(slot)
    }

    /// Carries out the commands recorded by the handler. `requester` is the connection whose
    /// input led to them: replies to it are bounded by pausing its reads, while a connection
    /// that lets unrequested messages pile up past the cap is a slow consumer and is closed.
    fn apply_commands(&mut self, requester: Option<ConnId>, now: Instant) {
        // The common case after a message: nothing recorded (a reply went straight out).
        if self.commands.list.is_empty() {
            return;
        }
        let mut commands = std::mem::take(&mut self.commands);
        let mut slow = Vec::new();
        for command in &commands.list {
            match command {
                Command::Send { to, kind, payload } => {
                    let Some(slot) = self.deliverable(*to, requester, &mut slow) else {
                        continue;
                    };
                    let conn = &mut self.conns[slot];
                    conn.out.borrow(&mut self.out_storage, true);
                    conn.out
                        .push_frame(kind.opcode(), &commands.arena[payload.clone()]);
                    self.stats.messages_out += 1;
                    self.mark_dirty(slot);
                }
                Command::Broadcast {
                    targets,
                    kind,
                    payload,
                } => {
                    let mut frame = Vec::new();
                    encode_frame(
                        &mut frame,
                        true,
                        kind.opcode(),
                        None,
                        &commands.arena[payload.clone()],
                    );
                    let frame: Arc<[u8]> = frame.into();
                    self.stats.broadcast_encodes += 1;
                    for to in &commands.targets[targets.clone()] {
                        let Some(slot) = self.deliverable(*to, requester, &mut slow) else {
                            continue;
                        };
                        let out = &mut self.conns[slot].out;
                        out.borrow(&mut self.out_storage, false);
                        out.push_shared(Arc::clone(&frame));
                        self.stats.messages_out += 1;
                        self.mark_dirty(slot);
                    }
                }
                Command::Close {
                    to,
                    code,
                    reason,
                    handshake,
                } => {
                    let reason = std::str::from_utf8(&commands.arena[reason.clone()]).unwrap_or("");
                    if *handshake {
                        self.close_conn(*to, *code, reason, now);
                    } else {
                        self.fail_with(*to, *code, reason, false, now);
                    }
                }
            }
        }
        commands.clear();
        // Carrying out a command never calls the handler, so nothing was recorded meanwhile.
        self.commands = commands;
        slow.sort_unstable();
        slow.dedup();
        for id in slow {
            self.drop_slow_consumer(id, now);
        }
    }

    /// Closes a connection whose queue is over the cap with 1008; queued messages are
    /// dropped (all but the frame being written) so the close frame goes out next.
    fn drop_slow_consumer(&mut self, id: ConnId, now: Instant) {
        if let Some((_, conn)) = Self::conn_by_id(&mut self.conns, id) {
            log!(
                Level::Warn,
                "{}: slow consumer ({} bytes queued), closing",
                conn.peer,
                conn.out.len()
            );
            self.stats.slow_consumers += 1;
        }
        self.fail_with(id, close_code::POLICY_VIOLATION, "slow consumer", true, now);
    }

    /// Fails a connection (a policy violation: 1008) without waiting for the close reply: a
    /// peer that floods or does not read will not answer in time. With `drop_queued`, queued
    /// messages are dropped so the close goes out next.
    fn fail_with(&mut self, id: ConnId, code: u16, reason: &str, drop_queued: bool, now: Instant) {
        let Some((slot, conn)) = Self::conn_by_id(&mut self.conns, id) else {
            return;
        };
        let Phase::Open(ws) = &mut conn.phase else {
            return;
        };
        if drop_queued {
            conn.out.truncate_to_front();
        }
        ws.close(code, reason);
        queue_control_frames(ws, &mut conn.out, &mut self.out_storage);
        self.begin_closing(slot, CloseReason::Failed(code), now);
    }

    fn mark_read_ready(&mut self, slot: usize) {
        if let Some(conn) = self.conns.get_mut(slot) {
            if !conn.read_ready {
                conn.read_ready = true;
                self.read_ready.push(slot);
            }
        }
    }

    fn mark_dirty(&mut self, slot: usize) {
        if let Some(conn) = self.conns.get_mut(slot) {
            if !conn.dirty {
                conn.dirty = true;
                self.dirty.push(slot);
            }
        }
    }

    fn flush_dirty(&mut self, now: Instant) {
        while let Some(slot) = self.dirty.pop() {
            if let Some(conn) = self.conns.get_mut(slot) {
                conn.dirty = false;
                self.flush(slot, now);
            }
        }
    }

    /// Writes what the socket takes, keeps writable interest only while output remains,
    /// and resumes reading a connection paused for backpressure once its queue drains.
    fn flush(&mut self, slot: usize, now: Instant) {
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        let before = conn.out.len();
        let result = conn.out.write_to(&mut conn.socket);
        self.stats.bytes_out += (before - conn.out.len()) as u64;
        let drained = match result {
            Ok(drained) => drained,
            Err(e) => {
                log!(Level::Debug, "{}: write: {e}", conn.peer);
                self.remove(slot, CloseReason::Abnormal, now);
                return;
            }
        };
        conn.out.give_back(&mut self.out_storage);
        if drained && matches!(conn.phase, Phase::Closing) && !conn.write_shut {
            conn.write_shut = true;
            conn.out.release();
            // FIN after the last frame; the peer answers with its own FIN (§7.1.1: the
            // server should close the TCP connection first).
            if let Err(e) = conn.socket.shutdown(Shutdown::Write) {
                log!(Level::Debug, "{}: shutdown: {e}", conn.peer);
                self.remove(slot, CloseReason::Abnormal, now);
                return;
            }
        }
        let wanted = if drained {
            Interest::READABLE
        } else {
            Interest::READABLE | Interest::WRITABLE
        };
        if wanted != conn.interest {
            if let Err(e) = self
                .poll
                .registry()
                .reregister(&mut conn.socket, Token(slot), wanted)
            {
                log!(Level::Debug, "{}: reregister: {e}", conn.peer);
                self.remove(slot, CloseReason::Abnormal, now);
                return;
            }
            conn.interest = wanted;
        }
        if conn.read_paused && conn.out.len() < self.config.max_backpressure / 2 {
            // Input may be waiting with no new readiness edge to come: read it next turn.
            conn.read_paused = false;
            self.mark_read_ready(slot);
        }
    }

    fn fire_deadlines(&mut self, now: Instant) {
        while let Some((when, id, timer)) = self.timers.pop_due(now) {
            let Some((slot, conn)) = Self::conn_by_id(&mut self.conns, id) else {
                continue;
            };
            let current = match timer {
                Timer::Idle => conn.idle_check.take_if(|due| *due == when),
                _ => conn
                    .deadline
                    .take_if(|(due, t)| (*due, *t) == (when, timer))
                    .map(|(d, _)| d),
            };
            if current.is_none() {
                continue;
            }
            match timer {
                Timer::Handshake => {
                    log!(Level::Info, "{}: handshake timed out", conn.peer);
                    *self
                        .stats
                        .rejections
                        .entry("handshake_timeout")
                        .or_default() += 1;
                    self.remove(slot, CloseReason::Abnormal, now);
                }
                Timer::NextPing => {
                    if let Phase::Open(ws) = &mut conn.phase {
                        // Refused only while closing, and then a close timer replaced this one.
                        ws.ping(HEARTBEAT_PAYLOAD);
                        queue_control_frames(ws, &mut conn.out, &mut self.out_storage);
                        Self::set_timer(
                            &mut self.timers,
                            conn,
                            Timer::PongDue,
                            now + self.config.ping_timeout,
                        );
                        self.mark_dirty(slot);
                    }
                }
                Timer::PongDue => {
                    log!(
                        Level::Info,
                        "{}: no pong within {:?}, closing as dead",
                        conn.peer,
                        self.config.ping_timeout
                    );
                    self.stats.heartbeat_timeouts += 1;
                    self.remove(slot, CloseReason::Abnormal, now);
                }
                Timer::CloseReply => {
                    log!(Level::Debug, "{}: no close reply in time", conn.peer);
                    self.remove(slot, CloseReason::Abnormal, now);
                }
                Timer::Linger => self.remove(slot, CloseReason::Abnormal, now),
                Timer::Idle => {
                    let (Some(idle), Phase::Open(_)) = (self.config.idle_timeout, &conn.phase)
                    else {
                        continue;
                    };
                    let silent_until = conn.last_read + idle;
                    if now < silent_until {
                        Self::set_timer(&mut self.timers, conn, Timer::Idle, silent_until);
                    } else {
                        log!(Level::Info, "{}: idle for {idle:?}, closing", conn.peer);
                        self.stats.idle_timeouts += 1;
                        self.close_conn(id, close_code::GOING_AWAY, "idle timeout", now);
                    }
                }
            }
        }
    }
}
