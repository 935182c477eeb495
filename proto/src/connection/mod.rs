//! The per-connection WebSocket state machine after the handshake: bytes in, events and
//! control frames out. No sockets, no clocks.
//!
//! The caller owns the read buffer. [`Connection::poll_event`] decodes from it and reports how
//! many bytes it used; a data frame that is already complete in the buffer is unmasked in place
//! and handed out as a slice of it (no copy). A frame that arrives in pieces, or a fragmented
//! message, is unmasked and UTF-8-checked piece by piece as it arrives (so an invalid text
//! fails at the first bad byte, RFC 6455 §8.1) and gathered into an internal buffer.
//!
//! Replies the protocol owes the peer (a pong for a ping §5.5.2, the echo of a close §5.5.1, the
//! close that fails the connection §7.1.7) are not written here: they wait in the connection
//! until the caller takes them with [`Connection::poll_transmit`].
//!
//! Time is an input like bytes: every call that may start a timer takes `now`, and
//! [`Connection::poll_timeout`] says when [`Connection::handle_timeout`] is next due
//! (heartbeat, close deadline, idle timeout; see [`crate::timers`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::close::parse_close_payload;
use crate::code::{is_valid_wire_code, Policy, INTERNAL_ERROR};
use crate::control::{ControlFrame, ControlPayload, OwedControl};
use crate::encoder::MessageEncoder;
use crate::error::ProtocolError;
use crate::event::{Event, Message, MessageKind, Role};
use crate::frame::{decode_header_ext, FrameHeader, OpCode, MAX_CONTROL_PAYLOAD};
use crate::limits::Limits;
use crate::mask::{apply_mask, MaskKeys};
use crate::timers::{Clock, Due, Expired, Timeouts, HEARTBEAT_PAYLOAD};
use crate::utf8::Utf8Validator;

#[cfg(feature = "deflate")]
mod compression;
#[cfg(feature = "deflate")]
use compression::inflate;

/// Where the closing handshake stands (§7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CloseState {
    /// Data flows both ways.
    Open,
    /// This end sent a close and waits for the peer's. It sends no more data (§5.5.1: "the
    /// endpoint MUST NOT send any more data frames"), but still delivers what the peer sent
    /// before seeing the close: those messages were sent in good faith.
    CloseSent,
    /// Both closes exchanged, or the connection failed: nothing more is read; the transport
    /// should be closed once queued frames are written.
    Closed,
}

/// A data message whose frames have not all arrived.
#[derive(Clone, Debug)]
pub(super) struct Partial {
    kind: MessageKind,
    /// The first frame had RSV1 (permessage-deflate): payloads are inflated as they come.
    compressed: bool,
    /// Payload bytes received (compressed ones for a compressed message).
    len: u64,
    fragments: u32,
    utf8: Utf8Validator,
}

/// Where the decoder stands in the byte stream.
#[derive(Debug)]
enum ReadState {
    /// At a frame boundary, no message in progress.
    Idle,
    /// At a frame boundary inside a fragmented message.
    BetweenFragments(Partial),
    /// Inside the payload of a data frame whose bytes arrive in pieces.
    InPayload {
        message: Partial,
        fin: bool,
        mask: Option<[u8; 4]>,
        remaining: u64,
        offset: usize,
    },
}

/// What one decoding step found; offsets instead of borrows so the loop in `poll_event` can
/// keep mutating state until it has something to hand out.
enum Step {
    NeedMore,
    Continue,
    /// A complete frame whose payload starts `header_len` bytes into the consumed range.
    InPlace {
        kind: Found,
        header_len: usize,
    },
    /// A message gathered in the internal buffer.
    Assembled(MessageKind),
}

#[derive(Clone, Copy)]
enum Found {
    Data(MessageKind),
    Ping,
    Pong,
    Close,
}

/// Buffers larger than this are released after use instead of kept for the next message.
const RETAINED_ASSEMBLY_CAPACITY: usize = 64 * 1024;

/// One WebSocket connection's protocol state.
#[derive(Debug)]
pub struct Connection {
    role: Role,
    limits: Limits,
    read: ReadState,
    close: CloseState,
    /// Payload of fragmented or piecewise-arrived messages.
    assembly: Vec<u8>,
    /// `assembly` was handed out by the previous `poll_event` and is cleared by the next.
    assembly_delivered: bool,
    /// Control frames owed to the peer. Boxed, and only while one is owed: each payload may
    /// be 125 bytes, and an idle connection should not carry 381 bytes for frames it does
    /// not owe (the server drains them within the turn that queued them).
    owed: Option<Box<OwedControl>>,
    /// Masking keys; present in the client role only.
    mask_keys: Option<MaskKeys>,
    /// Heartbeat, close deadline, idle timeout, ping rate; none until armed.
    clock: Option<Clock>,
    /// permessage-deflate, when negotiated (boxed: a connection without it pays 8 bytes).
    #[cfg(feature = "deflate")]
    deflate: Option<Box<crate::deflate::Session>>,
}

impl Connection {
    /// A server-side connection without timers (see [`with_timeouts`](Self::with_timeouts)).
    pub fn new_server(limits: Limits) -> Self {
        Self::new(Role::Server, limits, None)
    }

    /// Arms the timed rules, counting from `now`: heartbeat, close deadline, idle timeout
    /// and the ping rate. Without this a connection has no deadlines and no ping limit.
    /// The settings are shared: a server hands every connection a clone of one `Arc`.
    pub fn with_timeouts(mut self, timeouts: Arc<Timeouts>, now: Instant) -> Self {
        self.clock = Some(Clock::new(timeouts, now));
        self
    }

    /// A client-side connection masking its frames with `mask_keys`: §5.3 asks for keys an
    /// intermediary cannot predict, so [`MaskKeys::from_os`] on a real network; a `u64`
    /// seed gives repeatable (predictable) keys for simulations and tests.
    pub fn new_client(limits: Limits, mask_keys: impl Into<MaskKeys>) -> Self {
        Self::new(Role::Client, limits, Some(mask_keys.into()))
    }

    fn new(role: Role, limits: Limits, mask_keys: Option<MaskKeys>) -> Self {
        Connection {
            role,
            limits,
            read: ReadState::Idle,
            close: CloseState::Open,
            assembly: Vec::new(),
            assembly_delivered: false,
            owed: None,
            mask_keys,
            clock: None,
            #[cfg(feature = "deflate")]
            deflate: None,
        }
    }

    fn deflate_negotiated(&self) -> bool {
        #[cfg(feature = "deflate")]
        return self.deflate.is_some();
        #[cfg(not(feature = "deflate"))]
        false
    }

    /// The role this connection plays.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Data may still be sent (no close sent or received).
    pub fn is_open(&self) -> bool {
        self.close == CloseState::Open
    }

    /// This end sent a close and waits for the peer's.
    pub fn is_close_sent(&self) -> bool {
        self.close == CloseState::CloseSent
    }

    /// The closing handshake is over (or the connection failed): once the frames from
    /// [`poll_transmit`](Self::poll_transmit) are written, the transport should be closed.
    pub fn is_closed(&self) -> bool {
        self.close == CloseState::Closed
    }

    /// Bytes this connection holds for a message in progress (for memory accounting).
    pub fn buffered(&self) -> usize {
        self.assembly.capacity()
    }

    /// Starts the closing handshake (§7.1.2) at `now`; the peer has the close timeout to
    /// answer. Returns false if a close was already sent or received. A code that may not
    /// appear on the wire (§7.4.1: 1005, 1006, 1015, unassigned ranges) is replaced by 1011:
    /// the application erred, not the peer.
    pub fn close(&mut self, code: u16, reason: &str, now: Instant) -> bool {
        if self.close != CloseState::Open {
            return false;
        }
        let code = if is_valid_wire_code(code) {
            code
        } else {
            INTERNAL_ERROR
        };
        self.owed_mut().close = Some(ControlPayload::close(Some(code), reason));
        self.close = CloseState::CloseSent;
        if let Some(clock) = &mut self.clock {
            clock.close_sent(now);
        }
        true
    }

    /// Starts the closing handshake for one of this end's policies (its code and wire
    /// reason come from [`Policy`]).
    pub fn close_for(&mut self, policy: Policy, now: Instant) -> bool {
        self.close(policy.code(), policy.wire_reason(), now)
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due: the heartbeat, the idle
    /// check, or, once this end has sent a close, the close deadline. `None`: no timer runs.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.close {
            CloseState::Open | CloseState::CloseSent => self.clock.as_ref()?.next(),
            CloseState::Closed => None,
        }
    }

    /// Whether [`handle_timeout`](Self::handle_timeout) at `now` would judge the peer by
    /// input it has not sent (a missing pong or close reply, silence past the idle timeout):
    /// the caller should first read what waits in the socket, which an overloaded loop may
    /// not have got to, so that no peer is judged dead with its answer unread.
    pub fn judges_silence(&self, now: Instant) -> bool {
        self.close != CloseState::Closed
            && self.clock.as_ref().is_some_and(|c| c.judges_silence(now))
    }

    /// Acts on the deadlines that have passed at `now`, one per call: call it until it
    /// returns `None`, then take what [`poll_transmit`](Self::poll_transmit) has.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<Expired> {
        if self.close == CloseState::Closed {
            return None;
        }
        match self.clock.as_mut()?.expire(now)? {
            Due::Ping => {
                self.ping(HEARTBEAT_PAYLOAD);
                Some(Expired::PingSent)
            }
            Due::PongMissing => {
                self.abandon();
                Some(Expired::PongMissing)
            }
            Due::CloseReply => {
                self.abandon();
                Some(Expired::CloseReplyMissing)
            }
            Due::Idle => {
                self.close_for(Policy::IdleTimeout, now);
                Some(Expired::Idle)
            }
        }
    }

    /// Tells the connection that its caller could not run for `paused`, until `now` (a stopped
    /// process, a host that descheduled it): its deadlines move by as much, so the peer is not
    /// judged idle or dead for time this end was not listening, and the pings it sent
    /// meanwhile at its allowed rate are not taken for a flood when they arrive together.
    pub fn handle_pause(&mut self, paused: Duration, now: Instant) {
        if let Some(clock) = &mut self.clock {
            clock.pause(paused, now);
        }
    }

    /// Gives up on a peer that stopped answering: nothing more is sent or read.
    fn abandon(&mut self) {
        self.close = CloseState::Closed;
        self.read = ReadState::Idle;
        self.owed = None;
    }

    /// Queues a ping (for heartbeats); a ping still queued is replaced. Returns false, and
    /// queues nothing, once a close was sent or received, or for a payload longer than a
    /// control frame may carry (§5.5: 125 bytes; a cut payload would not be the one the
    /// caller expects back in the pong).
    pub fn ping(&mut self, payload: &[u8]) -> bool {
        if self.close != CloseState::Open || payload.len() > MAX_CONTROL_PAYLOAD {
            return false;
        }
        self.owed_mut().ping = Some(ControlPayload::new(payload));
        true
    }

    /// The masking key for the next frame this end sends: a fresh one for a client, none
    /// for a server (§5.1: "A server MUST NOT mask any frames").
    pub fn next_mask(&mut self) -> Option<[u8; 4]> {
        self.mask_keys.as_mut().map(MaskKeys::next_key)
    }

    /// The sending half for this connection's data messages: masked in the client role
    /// with `mask_keys` (as for [`new_client`](Self::new_client)), compressed as
    /// permessage-deflate was agreed. Make one per connection (see [`MessageEncoder`]).
    pub fn encoder(&self, mask_keys: impl Into<MaskKeys>) -> MessageEncoder {
        let encoder = MessageEncoder::new(self.role, mask_keys);
        #[cfg(feature = "deflate")]
        if let Some(agreed) = self.deflate() {
            return encoder.with_deflate(*agreed, self.role);
        }
        encoder
    }

    fn owed_mut(&mut self) -> &mut OwedControl {
        self.owed.get_or_insert_with(Box::default)
    }

    /// Whether [`poll_transmit`](Self::poll_transmit) has a frame to give.
    pub fn wants_transmit(&self) -> bool {
        self.owed.is_some()
    }

    /// The next control frame to write: owed pongs, a queued ping, then the close.
    pub fn poll_transmit(&mut self) -> Option<ControlFrame> {
        let owed = self.owed.as_mut()?;
        let (opcode, payload) = if let Some(p) = owed.pong.take() {
            (OpCode::Pong, p)
        } else if let Some(p) = owed.ping.take() {
            (OpCode::Ping, p)
        } else if let Some(p) = owed.close.take() {
            (OpCode::Close, p)
        } else {
            self.owed = None;
            return None;
        };
        if owed.is_empty() {
            self.owed = None;
        }
        let mask = self.next_mask();
        Some(ControlFrame::encode(opcode, payload.as_bytes(), mask))
    }

    /// Decodes from `buf` until one event is found or the bytes run out.
    ///
    /// Returns how many bytes of `buf` were used (the caller drops them once done with the
    /// event) and the event, if any. An error fails the connection: the close frame with the
    /// error's code is queued for [`poll_transmit`](Self::poll_transmit) and nothing more is
    /// decoded. After the closing handshake, input is discarded (§5.5.1). `now` is when
    /// the bytes arrived: input resets the idle timeout, and pings count against their rate.
    pub fn poll_event<'a>(
        &'a mut self,
        buf: &'a mut [u8],
        now: Instant,
    ) -> Result<(usize, Option<Event<'a>>), ProtocolError> {
        if let (Some(clock), false) = (&mut self.clock, buf.is_empty()) {
            clock.input(now);
        }
        if self.assembly_delivered {
            self.assembly_delivered = false;
            self.assembly.clear();
            if self.assembly.capacity() > RETAINED_ASSEMBLY_CAPACITY {
                self.assembly = Vec::new();
            }
        }
        let mut pos = 0;
        let (end, step) = loop {
            if self.close == CloseState::Closed {
                return Ok((buf.len(), None));
            }
            match self.step(&mut buf[pos..], now) {
                Err(e) => return Err(self.fail(e)),
                Ok((used, Step::Continue)) => pos += used,
                Ok((used, Step::NeedMore)) => return Ok((pos + used, None)),
                Ok((used, step)) => break (pos + used, step),
            }
        };
        let this: &'a Self = self;
        let event = match step {
            Step::InPlace { kind, header_len } => {
                let payload = &buf[pos + header_len..end];
                match kind {
                    Found::Data(kind) => Event::Message(Message {
                        kind,
                        data: payload,
                    }),
                    Found::Ping => Event::Ping(payload),
                    Found::Pong => Event::Pong(payload),
                    // Checked in `on_control`; parsing again cannot fail.
                    Found::Close => Event::Close(parse_close_payload(payload)?),
                }
            }
            Step::Assembled(kind) => Event::Message(Message {
                kind,
                data: &this.assembly,
            }),
            Step::NeedMore | Step::Continue => return Ok((end, None)),
        };
        Ok((end, Some(event)))
    }

    /// Fails the connection (§7.1.7): queue the close with the error's code, read no more.
    fn fail(&mut self, error: ProtocolError) -> ProtocolError {
        if self.close == CloseState::Open {
            self.owed_mut().close = Some(ControlPayload::close(
                Some(error.close_code()),
                error.wire_reason(),
            ));
        }
        self.close = CloseState::Closed;
        self.read = ReadState::Idle;
        error
    }

    fn step(&mut self, buf: &mut [u8], now: Instant) -> Result<(usize, Step), ProtocolError> {
        if let ReadState::InPayload { .. } = self.read {
            return self.read_payload(buf);
        }
        let Some((header, header_len)) = decode_header_ext(buf, self.deflate_negotiated())? else {
            return Ok((0, Step::NeedMore));
        };
        self.check_mask(&header)?;
        // Control frames are at most 125 bytes: wait until one is whole, then handle it in
        // place. They may come between the fragments of a message (§5.4).
        if header.opcode.is_control() {
            let total = header_len + header.payload_len as usize;
            if buf.len() < total {
                return Ok((0, Step::NeedMore));
            }
            let payload = &mut buf[header_len..total];
            if let Some(key) = header.mask {
                apply_mask(payload, key, 0);
            }
            let found = self.on_control(header.opcode, payload, now)?;
            return Ok((
                total,
                Step::InPlace {
                    kind: found,
                    header_len,
                },
            ));
        }
        let message = self.start_frame(&header)?;
        let total = header_len as u64 + header.payload_len;
        // Fast path: a whole unfragmented message already in the buffer is handed out in place.
        if let Some(kind) = message.as_ref().err().copied() {
            if header.fin && !header.compressed && total <= buf.len() as u64 {
                let total = total as usize;
                let payload = &mut buf[header_len..total];
                if let Some(key) = header.mask {
                    apply_mask(payload, key, 0);
                }
                // ASCII is valid UTF-8 and much cheaper to check (short chat messages).
                if kind == MessageKind::Text
                    && !payload.is_ascii()
                    && std::str::from_utf8(payload).is_err()
                {
                    return Err(ProtocolError::InvalidUtf8);
                }
                return Ok((
                    total,
                    Step::InPlace {
                        kind: Found::Data(kind),
                        header_len,
                    },
                ));
            }
        }
        let message = message.unwrap_or_else(|kind| Partial {
            kind,
            compressed: header.compressed,
            len: 0,
            fragments: 0,
            utf8: Utf8Validator::new(),
        });
        self.read = ReadState::InPayload {
            message: Partial {
                fragments: message.fragments + 1,
                ..message
            },
            fin: header.fin,
            mask: header.mask,
            remaining: header.payload_len,
            offset: 0,
        };
        Ok((header_len, Step::Continue))
    }

    /// §5.1: masking depends on who sends.
    fn check_mask(&self, header: &FrameHeader) -> Result<(), ProtocolError> {
        match (self.role, header.mask.is_some()) {
            (Role::Server, false) => Err(ProtocolError::UnmaskedFrame),
            (Role::Client, true) => Err(ProtocolError::MaskedFrame),
            _ => Ok(()),
        }
    }

    /// Applies §5.4's fragmentation rules and the size limits to a data frame header, before
    /// anything is allocated. Returns the message in progress it continues, or `Err(kind)`
    /// for the first frame of a new message.
    fn start_frame(
        &mut self,
        header: &FrameHeader,
    ) -> Result<Result<Partial, MessageKind>, ProtocolError> {
        if header.payload_len > self.limits.max_frame_payload {
            return Err(ProtocolError::FrameTooLarge);
        }
        let state = std::mem::replace(&mut self.read, ReadState::Idle);
        // RFC 7692 §6.1: the bit is set "only on the first frame"; an endpoint "MUST NOT set
        // the "Per-Message Compressed" bit of ... non-first fragments of a data message".
        if header.compressed && header.opcode == OpCode::Continuation {
            return Err(ProtocolError::CompressedContinuation);
        }
        let continued = match (header.opcode, state) {
            (OpCode::Continuation, ReadState::BetweenFragments(partial)) => Ok(partial),
            (OpCode::Continuation, _) => return Err(ProtocolError::UnexpectedContinuation),
            (OpCode::Text, ReadState::Idle) => Err(MessageKind::Text),
            (OpCode::Binary, ReadState::Idle) => Err(MessageKind::Binary),
            (OpCode::Text | OpCode::Binary, _) => return Err(ProtocolError::ExpectedContinuation),
            // Control opcodes never reach here; decode_header sorted them out.
            (OpCode::Close | OpCode::Ping | OpCode::Pong, _) => {
                return Err(ProtocolError::ReservedOpcode(header.opcode.bits()))
            }
        };
        let so_far = continued.as_ref().map_or(0, |p| p.len);
        if so_far.saturating_add(header.payload_len) > self.limits.max_message {
            return Err(ProtocolError::MessageTooLarge);
        }
        if let Ok(p) = &continued {
            if p.fragments >= self.limits.max_fragments {
                return Err(ProtocolError::TooManyFragments);
            }
        }
        Ok(continued)
    }

    /// Takes what has arrived of a data frame's payload.
    fn read_payload(&mut self, buf: &mut [u8]) -> Result<(usize, Step), ProtocolError> {
        let ReadState::InPayload {
            message,
            fin,
            mask,
            remaining,
            offset,
        } = &mut self.read
        else {
            return Ok((0, Step::Continue));
        };
        let n = (*remaining).min(buf.len() as u64) as usize;
        let chunk = &mut buf[..n];
        if let Some(key) = *mask {
            apply_mask(chunk, key, *offset);
        }
        if message.compressed {
            #[cfg(feature = "deflate")]
            inflate(
                &mut self.deflate,
                Some(chunk),
                &mut self.assembly,
                message,
                self.limits.max_message,
            )?;
        } else {
            if message.kind == MessageKind::Text {
                message
                    .utf8
                    .feed(chunk)
                    .map_err(|_| ProtocolError::InvalidUtf8)?;
            }
            self.assembly.extend_from_slice(chunk);
        }
        message.len += n as u64;
        *remaining -= n as u64;
        *offset += n;
        if *remaining > 0 {
            return Ok((n, Step::NeedMore));
        }
        let fin = *fin;
        let ReadState::InPayload { mut message, .. } =
            std::mem::replace(&mut self.read, ReadState::Idle)
        else {
            return Ok((n, Step::Continue));
        };
        if !fin {
            self.read = ReadState::BetweenFragments(message);
            return Ok((n, Step::Continue));
        }
        #[cfg(feature = "deflate")]
        if message.compressed {
            inflate(
                &mut self.deflate,
                None,
                &mut self.assembly,
                &mut message,
                self.limits.max_message,
            )?;
        }
        if message.kind == MessageKind::Text {
            message
                .utf8
                .finish()
                .map_err(|_| ProtocolError::InvalidUtf8)?;
        }
        self.assembly_delivered = true;
        Ok((n, Step::Assembled(message.kind)))
    }

    /// Handles a complete, unmasked control frame (§5.5).
    fn on_control(
        &mut self,
        opcode: OpCode,
        payload: &[u8],
        now: Instant,
    ) -> Result<Found, ProtocolError> {
        match opcode {
            OpCode::Ping => {
                if let Some(clock) = &mut self.clock {
                    if !clock.ping_allowed(now) {
                        return Err(ProtocolError::PingFlood);
                    }
                }
                // §5.5.2: "an endpoint MUST send a Pong frame in response, unless it already
                // received a Close frame": also after sending one (only data is barred then).
                // Once the peer's close is in, no frame is read at all, so this is always owed.
                self.owed_mut().pong = Some(ControlPayload::new(payload));
                Ok(Found::Ping)
            }
            OpCode::Pong => {
                if let Some(clock) = &mut self.clock {
                    clock.pong(now);
                }
                Ok(Found::Pong)
            }
            OpCode::Close => {
                let frame = parse_close_payload(payload)?;
                if self.close == CloseState::Open {
                    // §5.5.1: "It SHOULD use the status code it received"; an empty close is
                    // answered with an empty close.
                    self.owed_mut().close = Some(ControlPayload::close(frame.code, ""));
                }
                self.close = CloseState::Closed;
                Ok(Found::Close)
            }
            OpCode::Continuation | OpCode::Text | OpCode::Binary => {
                Err(ProtocolError::ReservedOpcode(opcode.bits()))
            }
        }
    }
}
