//! The interface between the event loop and an application: the [`Handler`] callbacks and the
//! [`Ctx`] through which a callback sends, broadcasts and closes.
//!
//! A callback runs while the loop still borrows the message from the connection's read buffer,
//! so `Ctx` does not touch other connections directly: it records commands (payloads go into
//! one reused arena, so recording allocates nothing in the steady state), and the loop carries
//! them out as soon as the callback returns, in order. The one exception is the commonest
//! command, a reply to the connection whose message is being handled: its outbound queue is
//! at hand, so the reply is framed straight into it.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::time::{Duration, Instant};

use super::http::HttpResponse;
use super::outbound::{OutQueue, OutStorage};
use super::stats::{Rejection, Stats};
use crate::proto::handshake::Request;
use crate::proto::{Message, MessageKind, Policy};

/// A connection's identity: its slot in the connection table plus a serial number, so that an
/// id held by an application never names a later connection that reuses the slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(u64);

impl ConnId {
    pub(crate) fn new(slot: usize, serial: u32) -> Self {
        ConnId((u64::from(serial) << 32) | slot as u64)
    }

    pub(crate) fn slot(self) -> usize {
        (self.0 & 0xFFFF_FFFF) as usize
    }

    /// The serial number: unique among the connections of one process (until 2^32 accepts).
    pub fn serial(self) -> u32 {
        (self.0 >> 32) as u32
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.serial())
    }
}

/// What an application learns about a connection when it opens.
#[derive(Debug)]
pub struct OpenInfo<'a> {
    /// The TCP peer.
    pub peer: SocketAddr,
    /// The client's address: the peer's, or from the proxy's header with `trust_proxy`.
    pub client: IpAddr,
    /// The upgrade request.
    pub request: &'a Request,
    /// The subprotocol agreed in the handshake, if any.
    pub protocol: Option<&'a str>,
}

/// How a connection ended, as seen by the application.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// A closing handshake with this code (`None`: the close frame had no code).
    Handshake(Option<u16>),
    /// This end failed the connection with this code (protocol error, limit, timeout).
    Failed(u16),
    /// The transport went away without a closing handshake (§7.1.5: code 1006).
    Abnormal,
}

impl CloseReason {
    /// The close code this ending is counted under (§7.1.5: 1005 when the close had no code,
    /// 1006 when there was no close frame).
    pub fn code(self) -> u16 {
        match self {
            CloseReason::Handshake(Some(code)) | CloseReason::Failed(code) => code,
            CloseReason::Handshake(None) => 1005,
            CloseReason::Abnormal => 1006,
        }
    }
}

/// What to do with a complete request head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// Check it as a WebSocket upgrade (RFC 6455 §4.2.1) and open the connection.
    Upgrade,
    /// Answer with plain HTTP.
    Respond(HttpResponse),
    /// Refuse an upgrade (counted in the stats under the reason).
    Reject(HttpResponse, Rejection),
    /// Read the request's body (its `Content-Length`, at most this many bytes; longer gets
    /// 413, chunked 411), then answer what [`Handler::on_body`] returns.
    ReadBody(usize),
}

/// Which of the configured address lists ([`Config`](super::Config)) a connection came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    /// A `listen` address (TLS when the server has a certificate).
    Listen,
    /// A `listen_plain` address: plain HTTP and WebSocket beside TLS ones.
    Plain,
    /// A `listen_internal` address: plain, for the application's backend and operators.
    Internal,
}

/// The answer to a request with a body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// This response, now.
    Now(HttpResponse),
    /// The application answers later with [`Ctx::respond`] (work it does off the loop, such
    /// as checking a password hash); without an answer by the head's deadline the client
    /// gets 503.
    Later,
}

/// An application on the event loop.
pub trait Handler {
    /// Routes a request head from `peer`, which came in on a `listener` address; the default
    /// treats every request as a WebSocket upgrade.
    fn on_request(
        &mut self,
        _request: &Request,
        _peer: SocketAddr,
        _listener: Listener,
        _stats: &Stats,
    ) -> Route {
        Route::Upgrade
    }

    /// The body of a request routed with [`Route::ReadBody`] has arrived on connection `id`:
    /// the answer, now or later. The callback may send to WebSocket connections through
    /// `ctx`.
    fn on_body(
        &mut self,
        _ctx: &mut Ctx<'_>,
        _id: ConnId,
        _request: &Request,
        _body: &[u8],
    ) -> Answer {
        Answer::Now(HttpResponse::text(404, "not found"))
    }

    /// A WebSocket connection was opened (the 101 is queued).
    fn on_open(&mut self, _ctx: &mut Ctx<'_>, _id: ConnId, _info: &OpenInfo<'_>) {}

    /// A complete text or binary message arrived.
    fn on_message(&mut self, ctx: &mut Ctx<'_>, id: ConnId, message: Message<'_>);

    /// A pong arrived (heartbeat replies).
    fn on_pong(&mut self, _ctx: &mut Ctx<'_>, _id: ConnId, _payload: &[u8]) {}

    /// The connection ended; `id` is not valid afterwards.
    fn on_close(&mut self, _ctx: &mut Ctx<'_>, _id: ConnId, _reason: CloseReason) {}

    /// The loop's waker fired: input from another thread (e.g. the Redis bridge) may wait.
    fn on_wake(&mut self, _ctx: &mut Ctx<'_>) {}

    /// The loop could not run for `paused` (the process was stopped or descheduled): what
    /// clients sent meanwhile arrives at once. Rate limits should not charge them for it.
    /// The loop has already moved every connection's deadlines by as much.
    fn on_pause(&mut self, _ctx: &mut Ctx<'_>, _paused: Duration) {}

    /// When the application next needs [`on_timer`](Self::on_timer) (a deadline of its own,
    /// such as a credential's expiry); asked after every callback. `None`: no deadline.
    fn next_timer(&self) -> Option<Instant> {
        None
    }

    /// The time [`next_timer`](Self::next_timer) asked for has come (`ctx.now()` is at or
    /// past it).
    fn on_timer(&mut self, _ctx: &mut Ctx<'_>) {}
}

/// A recorded action, carried out by the loop after the callback.
#[derive(Debug)]
pub(crate) enum Command {
    Send {
        to: ConnId,
        kind: MessageKind,
        payload: Range<usize>,
    },
    Broadcast {
        targets: Range<usize>,
        kind: MessageKind,
        payload: Range<usize>,
    },
    Close {
        to: ConnId,
        code: u16,
        reason: Range<usize>,
        /// Wait for the peer's close (a closing handshake) or not (failing the connection).
        handshake: bool,
    },
    /// The answer to a request the application took [`Answer::Later`]: the response's bytes.
    Respond { to: ConnId, response: Range<usize> },
}

/// Commands recorded by callbacks, with their payloads in one arena.
#[derive(Debug, Default)]
pub(crate) struct Commands {
    pub(crate) list: Vec<Command>,
    pub(crate) arena: Vec<u8>,
    pub(crate) targets: Vec<ConnId>,
}

impl Commands {
    fn store(&mut self, bytes: &[u8]) -> Range<usize> {
        let start = self.arena.len();
        self.arena.extend_from_slice(bytes);
        start..self.arena.len()
    }

    /// Forgets carried-out commands, keeping the arena's memory unless it grew large.
    pub(crate) fn clear(&mut self) {
        const RETAINED: usize = 1 << 20;
        self.list.clear();
        self.targets.clear();
        self.arena.clear();
        if self.arena.capacity() > RETAINED {
            self.arena = Vec::new();
        }
    }
}

/// The open connection whose message a callback handles, with its outbound queue.
pub(crate) struct Requester<'a> {
    pub(crate) id: ConnId,
    pub(crate) out: &'a mut OutQueue,
    pub(crate) storage: &'a mut OutStorage,
    /// Replies framed into `out` (counted into the loop's stats afterwards).
    pub(crate) replies: u64,
}

/// What a callback may do: send, broadcast, close.
pub struct Ctx<'a> {
    commands: &'a mut Commands,
    now: Instant,
    requester: Option<Requester<'a>>,
}

impl<'a> Ctx<'a> {
    pub(crate) fn new(commands: &'a mut Commands, now: Instant) -> Self {
        Ctx {
            commands,
            now,
            requester: None,
        }
    }

    /// A context for a callback about a message from `requester`, which is open: replies to
    /// it go straight to its queue.
    pub(crate) fn for_message(
        commands: &'a mut Commands,
        now: Instant,
        requester: Requester<'a>,
    ) -> Self {
        Ctx {
            commands,
            now,
            requester: Some(requester),
        }
    }

    /// Replies framed directly by [`send`](Self::send) during the callback.
    pub(crate) fn direct_replies(&self) -> u64 {
        self.requester.as_ref().map_or(0, |r| r.replies)
    }
}

impl Ctx<'_> {
    /// The loop's current time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Sends a message to one connection.
    pub fn send(&mut self, to: ConnId, kind: MessageKind, payload: &[u8]) {
        // Straight into the requester's queue, unless an earlier command of this callback
        // is still to be carried out: that one must reach the socket first.
        if self.commands.list.is_empty() {
            if let Some(r) = self.requester.as_mut().filter(|r| r.id == to) {
                r.out.borrow(r.storage, true);
                r.out.push_frame(kind.opcode(), payload);
                r.replies += 1;
                return;
            }
        }
        let payload = self.commands.store(payload);
        self.commands.list.push(Command::Send { to, kind, payload });
    }

    /// Sends a text message to one connection.
    pub fn send_text(&mut self, to: ConnId, text: &str) {
        self.send(to, MessageKind::Text, text.as_bytes());
    }

    /// Sends one message to many connections: the frame is encoded once and shared.
    pub fn broadcast<I: IntoIterator<Item = ConnId>>(
        &mut self,
        targets: I,
        kind: MessageKind,
        payload: &[u8],
    ) {
        let start = self.commands.targets.len();
        self.commands.targets.extend(targets);
        let targets = start..self.commands.targets.len();
        let payload = self.commands.store(payload);
        self.commands.list.push(Command::Broadcast {
            targets,
            kind,
            payload,
        });
    }

    /// Answers the request that connection `to` waits on ([`Answer::Later`]); nothing happens
    /// if it has gone or was already answered (503 at its deadline).
    pub fn respond(&mut self, to: ConnId, response: &HttpResponse) {
        let mut bytes = Vec::with_capacity(response.body.len() + 256);
        response.write_to(&mut bytes, false);
        let response = self.commands.store(&bytes);
        self.commands.list.push(Command::Respond { to, response });
    }

    /// Starts the closing handshake with `code` and `reason` (cut to fit a control frame);
    /// the peer has the close timeout to answer.
    pub fn close(&mut self, to: ConnId, code: u16, reason: &str) {
        self.push_close(to, code, reason, true);
    }

    /// Fails the connection (§7.1.7): sends the close and closes TCP once it is written,
    /// without waiting for an answer. For peers that flood or break policy.
    pub fn fail(&mut self, to: ConnId, code: u16, reason: &str) {
        self.push_close(to, code, reason, false);
    }

    /// Starts the closing handshake for one of the server's policies (its code and reason).
    pub fn close_for(&mut self, to: ConnId, policy: Policy) {
        self.close(to, policy.code(), policy.wire_reason());
    }

    /// Fails the connection for one of the server's policies (its code and reason).
    pub fn fail_for(&mut self, to: ConnId, policy: Policy) {
        self.fail(to, policy.code(), policy.wire_reason());
    }

    fn push_close(&mut self, to: ConnId, code: u16, reason: &str, handshake: bool) {
        let reason = self.commands.store(reason.as_bytes());
        self.commands.list.push(Command::Close {
            to,
            code,
            reason,
            handshake,
        });
    }
}

/// A recorded command as a test reads it back, its payload copied out of the arena.
#[cfg(test)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Recorded {
    Send {
        to: ConnId,
        kind: MessageKind,
        payload: Vec<u8>,
    },
    Broadcast {
        targets: Vec<ConnId>,
        kind: MessageKind,
        payload: Vec<u8>,
    },
    Close {
        to: ConnId,
        code: u16,
        reason: Vec<u8>,
        handshake: bool,
    },
    Respond {
        to: ConnId,
        response: Vec<u8>,
    },
}

#[cfg(test)]
impl Commands {
    /// What the callbacks recorded, in order: lets an application be tested in process,
    /// with a `Ctx` from [`Ctx::new`] (no requester, so every send is recorded).
    pub(crate) fn recorded(&self) -> Vec<Recorded> {
        let bytes = |range: &Range<usize>| self.arena[range.clone()].to_vec();
        self.list
            .iter()
            .map(|command| match command {
                Command::Send { to, kind, payload } => Recorded::Send {
                    to: *to,
                    kind: *kind,
                    payload: bytes(payload),
                },
                Command::Broadcast {
                    targets,
                    kind,
                    payload,
                } => Recorded::Broadcast {
                    targets: self.targets[targets.clone()].to_vec(),
                    kind: *kind,
                    payload: bytes(payload),
                },
                Command::Close {
                    to,
                    code,
                    reason,
                    handshake,
                } => Recorded::Close {
                    to: *to,
                    code: *code,
                    reason: bytes(reason),
                    handshake: *handshake,
                },
                Command::Respond { to, response } => Recorded::Respond {
                    to: *to,
                    response: bytes(response),
                },
            })
            .collect()
    }
}
