//! A non-blocking WebSocket client on mio for the load generator: many connections on one
//! thread, frames masked and decoded by the protocol core in the client role
//! ([`wsloop::proto::Connection`]), and everything a turn queued for a connection written with
//! one `write`, over plain TCP or TLS ([`Stream`]).
//!
//! A scenario is a [`Handler`]: it owns per-connection state (`Handler::Conn`) and gets each
//! connection's events (opened, data message, ended) with an [`Outbox`] to answer into.
//! Pings are answered and closes echoed by the protocol core without the scenario.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Read, Write};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use super::net::{self, Target};
use super::reflect::unmask_reflected;
use super::stream::{Stream, TlsTarget};
use wsloop::client::tls::tls_error;
use wsloop::proto::client_handshake::{self as handshake, ClientRequest, Response};
use wsloop::proto::extension::DeflateOffer;
use wsloop::proto::mask::MaskKeys;

pub use super::outbox::Outbox;
use super::report::Wire;
use wsloop::proto::{
    close_code, Connection, Event as WsEvent, Limits, Message, MessageEncoder, Role,
};

/// The per-thread read buffer. Whole messages up to this size are handed out in place; a
/// larger one is gathered by the protocol core as it arrives, so only a partial frame
/// header or control frame (or a partial response head) is ever left over between reads.
pub const READ_CHUNK: usize = 64 * 1024;

/// How often deadlines (connect, handshake, close) are checked while any is pending.
const DEADLINE_SCAN: Duration = Duration::from_millis(50);

/// What happened on a connection.
#[derive(Debug)]
pub enum Event<'a> {
    /// The opening handshake completed.
    Opened,
    /// A text or binary message arrived.
    Message(Message<'a>),
    /// The connection is gone; its state is dropped after this.
    Ended(End),
}

/// How a connection ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End {
    /// This end started the closing handshake and it completed.
    Closed,
    /// The server started the closing handshake (with this code).
    ServerClosed(Option<u16>),
    /// Connect, handshake, protocol or I/O failure, or a timeout.
    Failed(String),
}

impl End {
    /// What went wrong, if anything did: only a close this end asked for is clean.
    pub fn error(&self) -> Option<String> {
        match self {
            End::Closed => None,
            End::ServerClosed(Some(code)) => Some(format!("server closed with code {code}")),
            End::ServerClosed(None) => Some("server closed without a code".into()),
            End::Failed(why) => Some(why.clone()),
        }
    }
}

/// What the handler wants done with the connection after an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing more.
    Keep,
    /// Start the closing handshake (code 1000).
    Close,
}

/// A scenario's side of the driver.
pub trait Handler {
    /// Per-connection state.
    type Conn;

    /// One event on one connection. Frames queued in `out` are written at the end of the
    /// turn (or of [`Driver::visit`]).
    fn on_event(
        &mut self,
        conn: &mut Self::Conn,
        event: Event<'_>,
        out: &mut Outbox,
        now: Instant,
    ) -> Action;
}

/// One server of the run (one URL of `--url`): where to connect, and how over TLS.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// Where and what to ask for.
    pub target: Target,
    /// `wss://`: each connection to it runs TLS with this.
    pub tls: Option<TlsTarget>,
}

/// How every connection of a [`Driver`] is made and run.
#[derive(Clone, Debug)]
pub struct ConnectionOptions {
    pub timeouts: Timeouts,
    /// What the client accepts from the server.
    pub limits: Limits,
    /// The server reflects the client's masked frames (see `unmask_reflected`).
    pub accept_masked: bool,
    /// The permessage-deflate offer every connection makes.
    pub deflate: Option<DeflateOffer>,
}

/// Connect and close timeouts.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// TCP connect plus the opening handshake.
    pub connect: Duration,
    /// From the close this end sends (or receives) to the server closing TCP.
    pub close: Duration,
}

#[derive(Debug)]
enum Phase {
    /// TCP connect in progress; the request waits in the outbox. Holds what the answer must
    /// carry (its bytes are in the outbox).
    Connecting(ClientRequest),
    /// Request sent, reading the response head.
    Handshaking(ClientRequest),
    /// Frames flow (possibly closing).
    Open,
}

#[derive(Debug)]
struct Client<C> {
    stream: Stream,
    phase: Phase,
    ws: Connection,
    out: Outbox,
    /// Undecoded bytes kept between reads (a partial header or control frame).
    leftover: Vec<u8>,
    /// Connect, handshake or close deadline.
    deadline: Option<Instant>,
    /// This end started the closing handshake.
    closing: bool,
    /// The server's close frame code.
    close_code: Option<u16>,
    /// The server reflects this client's masked frames (see [`unmask_reflected`]).
    reflected: bool,
    conn: C,
}

/// The connections of one thread and their mio poll.
pub struct Driver<C> {
    poll: Poll,
    events: Events,
    /// Keys (and whether the server's FIN is in) of the connections a poll reported.
    fired: Vec<(usize, bool)>,
    /// Keys being visited, closed or expired.
    ready: Vec<usize>,
    clients: Slab<Client<C>>,
    /// The servers, at least one; connection g goes to `net::target_of(g, len)`.
    endpoints: Vec<Endpoint>,
    sources: Vec<Ipv4Addr>,
    next_source: usize,
    random: MaskKeys,
    scratch: Vec<u8>,
    timeouts: Timeouts,
    limits: Limits,
    accept_masked: bool,
    /// Offer permessage-deflate on every connection.
    deflate: Option<DeflateOffer>,
    next_scan: Option<Instant>,
    /// Bytes read from and written to the sockets so far (handshakes included).
    wire: Wire,
    /// Connections still to be closed, last first (once closing has begun).
    to_close: Option<Vec<usize>>,
}

impl<C> Driver<C> {
    /// A driver for connections to `endpoints` (at least one), bound round-robin to
    /// `sources` (starting at `first_source`; none: the kernel picks the source address), each
    /// made and run as `options` say.
    pub fn new(
        endpoints: Vec<Endpoint>,
        sources: Vec<Ipv4Addr>,
        first_source: usize,
        options: ConnectionOptions,
    ) -> io::Result<Self> {
        assert!(
            !endpoints.is_empty(),
            "a driver needs a server to connect to"
        );
        let ConnectionOptions {
            timeouts,
            limits,
            accept_masked,
            deflate,
        } = options;
        Ok(Driver {
            poll: Poll::new()?,
            events: Events::with_capacity(1024),
            fired: Vec::new(),
            ready: Vec::new(),
            clients: Slab::new(),
            endpoints,
            sources,
            next_source: first_source,
            random: MaskKeys::from(RandomState::new().build_hasher().finish()),
            scratch: vec![0; READ_CHUNK],
            timeouts,
            limits,
            accept_masked,
            deflate,
            next_scan: None,
            wire: Wire::default(),
            to_close: None,
        })
    }

    /// Bytes on the wire so far.
    pub fn wire(&self) -> Wire {
        self.wire
    }

    /// Open connections, and those still connecting or closing.
    pub fn len(&self) -> usize {
        self.clients.len()
    }

    /// No connection left.
    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    fn random_u64(&mut self) -> u64 {
        let high = u32::from_ne_bytes(self.random.next_key());
        let low = u32::from_ne_bytes(self.random.next_key());
        (u64::from(high) << 32) | u64::from(low)
    }

    /// Starts connecting connection number `number` of the run (which picks its server);
    /// returns its key (for [`visit`](Self::visit)). Errors are those of socket(2), bind(2)
    /// and connect(2) (e.g. no free port).
    pub fn open(&mut self, conn: C, number: usize, now: Instant) -> io::Result<usize> {
        let mut nonce = [0u8; 16];
        nonce[..8].copy_from_slice(&self.random_u64().to_ne_bytes());
        nonce[8..].copy_from_slice(&self.random_u64().to_ne_bytes());
        let encoder = MessageEncoder::new(Role::Client, self.random_u64());
        let ws = Connection::new_client(self.limits.clone(), self.random_u64());
        let source = match self.sources.len() {
            0 => None,
            n => {
                self.next_source = self.next_source.wrapping_add(1);
                Some(self.sources[self.next_source % n])
            }
        };
        let endpoint = &self.endpoints[net::target_of(number, self.endpoints.len())];
        let target = &endpoint.target;
        let mut socket = net::connect(target.addr, source).map_err(|e| match source {
            Some(ip) => io::Error::new(e.kind(), format!("connect from {ip}: {e}")),
            None => io::Error::new(e.kind(), format!("connect: {e}")),
        })?;
        let mut request = handshake::request(&target.host, &target.path, nonce, &[], &[]);
        if let Some(offer) = &self.deflate {
            request = request.with_deflate(offer.clone());
        }
        let entry = self.clients.vacant_entry();
        let key = entry.key();
        self.poll.registry().register(
            &mut socket,
            Token(key),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        entry.insert(Client {
            stream: Stream::new(socket, endpoint.tls.as_ref())?,
            out: Outbox::new(std::mem::take(&mut request.bytes), encoder),
            phase: Phase::Connecting(request),
            ws,
            leftover: Vec::new(),
            deadline: Some(now + self.timeouts.connect),
            closing: false,
            close_code: None,
            reflected: self.accept_masked,
            conn,
        });
        self.arm(now);
        Ok(key)
    }

    /// Waits up to `timeout` for readiness and handles what came: connects complete,
    /// responses are checked, frames decoded and handed to `h`, queued frames written.
    pub fn turn<H: Handler<Conn = C>>(&mut self, h: &mut H, timeout: Duration) -> io::Result<()> {
        let timeout = match self.next_scan {
            Some(at) => timeout.min(at.saturating_duration_since(Instant::now())),
            None => timeout,
        };
        if let Err(e) = self.poll.poll(&mut self.events, Some(timeout)) {
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        let now = Instant::now();
        self.fired.clear();
        let fired = self
            .events
            .iter()
            .map(|e| (e.token().0, e.is_read_closed()));
        self.fired.extend(fired);
        for i in 0..self.fired.len() {
            let (key, fin) = self.fired[i];
            let Some(client) = self.clients.get_mut(key) else {
                continue;
            };
            let mut turn = Turn {
                scratch: &mut self.scratch,
                handler: &mut *h,
                now,
                close_timeout: self.timeouts.close,
                wire: &mut self.wire,
            };
            let result = client.service(&mut turn, fin);
            self.settle(key, result, h, now);
        }
        if self.next_scan.is_some_and(|at| now >= at) {
            self.expire(h, now);
        }
        Ok(())
    }

    /// Lets `f` queue frames on connection `key` if it is open and has not started closing,
    /// then writes them.
    pub fn visit<H: Handler<Conn = C>>(
        &mut self,
        key: usize,
        h: &mut H,
        now: Instant,
        f: impl FnOnce(&mut H, &mut C, &mut Outbox) -> Action,
    ) {
        let Some(client) = self.clients.get_mut(key) else {
            return;
        };
        if !matches!(client.phase, Phase::Open) || !client.ws.is_open() {
            return;
        }
        if f(h, &mut client.conn, &mut client.out) == Action::Close {
            client.start_close(now + self.timeouts.close);
        }
        let result = client.flush(&mut self.wire);
        self.settle(key, result, h, now);
    }

    /// [`visit`](Self::visit) for every connection.
    pub fn visit_all<H: Handler<Conn = C>>(
        &mut self,
        h: &mut H,
        now: Instant,
        mut f: impl FnMut(&mut H, &mut C, &mut Outbox) -> Action,
    ) {
        self.ready.clear();
        self.ready.extend(self.clients.iter().map(|(key, _)| key));
        for i in 0..self.ready.len() {
            let key = self.ready[i];
            self.visit(key, h, now, &mut f);
        }
    }

    /// Starts the closing handshake on up to `batch` more connections (of those there were
    /// at the first call), dropping those not open yet (they end as failed); returns how
    /// many are still to be closed. Closing in batches with turns between them keeps the
    /// others answered: a load generator closing 20,000 connections in one go on a busy core
    /// would leave their pings unanswered for seconds, and the server would count them dead.
    /// Turn until [`is_empty`](Self::is_empty): each one ends when the server has closed TCP,
    /// or at the close timeout.
    pub fn close_next<H: Handler<Conn = C>>(
        &mut self,
        h: &mut H,
        now: Instant,
        batch: usize,
    ) -> usize {
        let to_close = self
            .to_close
            .get_or_insert_with(|| self.clients.iter().map(|(key, _)| key).rev().collect());
        let keys: Vec<usize> = (0..batch).map_while(|_| to_close.pop()).collect();
        let left = to_close.len();
        for key in keys {
            let opening = self
                .clients
                .get(key)
                .is_some_and(|c| !matches!(c.phase, Phase::Open));
            if opening {
                let end = End::Failed("closed before the opening handshake completed".into());
                self.end(key, end, h, now);
            } else {
                self.visit(key, h, now, |_, _, _| Action::Close);
            }
        }
        left
    }

    /// After servicing a connection: end it on failure, else watch its deadline.
    fn settle<H: Handler<Conn = C>>(
        &mut self,
        key: usize,
        result: Result<(), End>,
        h: &mut H,
        now: Instant,
    ) {
        match result {
            Err(end) => self.end(key, end, h, now),
            Ok(()) => {
                if self.clients.get(key).is_some_and(|c| c.deadline.is_some()) {
                    self.arm(now);
                }
            }
        }
    }

    fn end<H: Handler<Conn = C>>(&mut self, key: usize, end: End, h: &mut H, now: Instant) {
        let Some(mut client) = self.clients.try_remove(key) else {
            return;
        };
        // Closing the descriptor would remove it from the epoll set anyway; this keeps mio's
        // bookkeeping exact.
        let _ = self.poll.registry().deregister(client.stream.socket());
        h.on_event(&mut client.conn, Event::Ended(end), &mut client.out, now);
    }

    fn arm(&mut self, now: Instant) {
        if self.next_scan.is_none() {
            self.next_scan = Some(now + DEADLINE_SCAN);
        }
    }

    /// Ends the connections whose deadline has passed.
    fn expire<H: Handler<Conn = C>>(&mut self, h: &mut H, now: Instant) {
        self.ready.clear();
        self.ready.extend(
            self.clients
                .iter()
                .filter(|(_, c)| c.deadline.is_some_and(|d| d <= now))
                .map(|(key, _)| key),
        );
        for i in 0..self.ready.len() {
            let key = self.ready[i];
            let what = match self.clients.get(key).map(|c| &c.phase) {
                Some(Phase::Connecting(_)) => "TCP connect",
                Some(Phase::Handshaking(_)) => "opening handshake",
                _ => "closing handshake",
            };
            self.end(key, End::Failed(format!("{what} timed out")), h, now);
        }
        let pending = self.clients.iter().any(|(_, c)| c.deadline.is_some());
        self.next_scan = pending.then(|| now + DEADLINE_SCAN);
    }
}

/// What servicing a connection needs besides the connection.
struct Turn<'a, H> {
    /// The thread's read buffer.
    scratch: &'a mut [u8],
    handler: &'a mut H,
    now: Instant,
    close_timeout: Duration,
    wire: &'a mut Wire,
}

impl<C> Client<C> {
    /// Handles readiness: finishes the connect, reads and decodes, writes what is queued.
    /// `fin`: the event said the server's FIN is in (read until EOF).
    fn service<H: Handler<Conn = C>>(&mut self, t: &mut Turn<'_, H>, fin: bool) -> Result<(), End> {
        if let Phase::Connecting(request) = &mut self.phase {
            match net::connect_finished(self.stream.socket()) {
                Ok(false) => return Ok(()),
                Ok(true) => self.phase = Phase::Handshaking(std::mem::take(request)),
                Err(e) => return Err(End::Failed(format!("connect: {e}"))),
            }
        }
        let eof = match self.read(t, fin) {
            Ok(eof) => eof,
            Err(end) => {
                // The failing close frame (§7.1.7) the protocol core queued goes out first.
                let _ = self.flush(t.wire);
                return Err(end);
            }
        };
        self.flush(t.wire)?;
        if self.reflected && self.closing && self.ws.is_closed() {
            // The close came back as it went, and a reflecting server never closes TCP
            // (§7.1.1 would have it close first): the handshake is complete, hang up.
            return Err(End::Closed);
        }
        if !eof {
            return Ok(());
        }
        Err(match self.phase {
            Phase::Open if self.ws.is_closed() && self.closing => End::Closed,
            Phase::Open if self.ws.is_closed() => End::ServerClosed(self.close_code),
            Phase::Open => End::Failed("server closed TCP without a close frame".into()),
            _ => End::Failed("server closed TCP during the opening handshake".into()),
        })
    }

    /// Reads what the socket has and hands out its events. Returns whether the server
    /// closed TCP.
    fn read<H: Handler<Conn = C>>(&mut self, t: &mut Turn<'_, H>, fin: bool) -> Result<bool, End> {
        let mut filled = self.leftover.len();
        t.scratch[..filled].copy_from_slice(&self.leftover);
        self.leftover.clear();
        let mut eof = false;
        loop {
            let space = t.scratch.len() - filled;
            if space == 0 {
                return Err(End::Failed(
                    "response head larger than the read buffer".into(),
                ));
            }
            let n = match self.stream.read(&mut t.scratch[filled..]) {
                Ok(0) => {
                    eof = true;
                    0
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(End::Failed(match tls_error(&e) {
                        Some(why) => format!("TLS: {why}"),
                        None => format!("read: {e}"),
                    }))
                }
            };
            filled += n;
            t.wire.bytes_in += n as u64;
            let used;
            (used, filled) = self.consume(t, filled)?;
            t.scratch.copy_within(used..filled, 0);
            filled -= used;
            // A read that did not fill the buffer emptied the socket's receive queue: with
            // edge-triggered epoll, bytes (or a FIN) that arrive later raise a new event, so
            // the extra read(2) that would only answer EAGAIN is skipped. A FIN already in
            // when the event was raised raises no other: then read on to the EOF.
            if eof || (n < space && !fin && self.stream.short_read_drains()) {
                break;
            }
        }
        self.leftover.extend_from_slice(&t.scratch[..filled]);
        Ok(eof)
    }

    /// Decodes the first `filled` bytes of the read buffer (the response head first, while
    /// handshaking); returns the bytes used and how many the buffer holds now (fewer, once
    /// reflected frames have lost their masking keys).
    fn consume<H: Handler<Conn = C>>(
        &mut self,
        t: &mut Turn<'_, H>,
        filled: usize,
    ) -> Result<(usize, usize), End> {
        let mut buf = &mut t.scratch[..filled];
        let (h, now, close_timeout) = (&mut *t.handler, t.now, t.close_timeout);
        let mut start = 0;
        if let Phase::Handshaking(request) = &self.phase {
            match handshake::check_response(buf, request) {
                Response::Partial => return Ok((0, filled)),
                Response::Refused(why) => return Err(End::Failed(why)),
                Response::Accepted {
                    head_len, deflate, ..
                } => {
                    if let Some(agreed) = deflate {
                        self.deflate(agreed);
                    }
                    self.phase = Phase::Open;
                    self.deadline = None;
                    let action = h.on_event(&mut self.conn, Event::Opened, &mut self.out, now);
                    if action == Action::Close {
                        self.start_close(now + close_timeout);
                    }
                    start = head_len;
                }
            }
        }
        let mut filled = filled;
        let mut end = filled;
        if self.reflected && matches!(self.phase, Phase::Open) {
            let (rewritten, now_filled) = unmask_reflected(&mut buf[start..])
                .map_err(|e| End::Failed(format!("reflected frames: {e}")))?;
            (end, filled) = (start + rewritten, start + now_filled);
            buf = &mut buf[..end];
        }
        let mut pos = start;
        loop {
            let mark = self.out.buf.len();
            let (used, action) = match self.ws.poll_event(&mut buf[pos..], Instant::now()) {
                Err(e) => {
                    self.queue_control();
                    return Err(End::Failed(format!("protocol error: {e}")));
                }
                Ok((used, None)) => {
                    pos += used;
                    break;
                }
                Ok((used, Some(WsEvent::Message(m)))) => {
                    let event = Event::Message(m);
                    (used, h.on_event(&mut self.conn, event, &mut self.out, now))
                }
                Ok((used, Some(WsEvent::Close(frame)))) => {
                    self.close_code = frame.code;
                    self.deadline = Some(now + close_timeout);
                    (used, Action::Keep)
                }
                // Pings are answered by the protocol core; pongs need nothing.
                Ok((used, Some(WsEvent::Ping(_) | WsEvent::Pong(_)))) => (used, Action::Keep),
            };
            pos += used;
            if !self.ws.is_open() {
                // §5.5.1: no data frames after a close; drop what the handler queued.
                self.out.buf.truncate(mark);
            }
            if action == Action::Close {
                self.start_close(now + close_timeout);
            }
        }
        self.queue_control();
        debug_assert!(pos <= end);
        Ok((pos, filled))
    }

    /// Turns on permessage-deflate as the server agreed: inflating what arrives,
    /// compressing what the outbox sends.
    fn deflate(&mut self, agreed: wsloop::proto::extension::Negotiated) {
        let plain = Connection::new_client(Limits::default(), 0);
        self.ws = std::mem::replace(&mut self.ws, plain).with_deflate(agreed);
        let plain = MessageEncoder::new(Role::Client, 0);
        self.out.encoder =
            std::mem::replace(&mut self.out.encoder, plain).with_deflate(agreed, Role::Client);
    }

    /// Queues the control frames the protocol core owes the server (pongs, the close).
    fn queue_control(&mut self) {
        while let Some(frame) = self.ws.poll_transmit() {
            self.out.buf.extend_from_slice(frame.as_bytes());
        }
    }

    fn start_close(&mut self, deadline: Instant) {
        if self.ws.close(close_code::NORMAL, "", Instant::now()) {
            self.closing = true;
            self.deadline = Some(deadline);
        }
        self.queue_control();
    }

    /// Writes the outbox until it is empty or the socket is full (the rest goes when it is
    /// writable again), then the TLS records still waiting.
    fn flush(&mut self, wire: &mut Wire) -> Result<(), End> {
        if matches!(self.phase, Phase::Connecting(_)) {
            return Ok(());
        }
        while !self.out.is_flushed() {
            match self.stream.write(&self.out.buf[self.out.written..]) {
                Ok(0) => return Err(End::Failed("write: connection closed".into())),
                Ok(n) => {
                    self.out.written += n;
                    wire.bytes_out += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(End::Failed(format!("write: {e}"))),
            }
        }
        self.out.buf.clear();
        self.out.written = 0;
        self.stream
            .send_pending()
            .map_err(|e| End::Failed(format!("write: {e}")))
    }
}
