//! Input: a connection's bytes as they are decoded, first the HTTP request head (routed by
//! the handler, admitted, upgraded or answered), then WebSocket frames (handed to the
//! handler as messages; what the protocol owes the peer queued in order).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use super::admission::{admit, client_addr, refusal};
use super::body::{body_length, BodyRead};
use super::conn::{queue_control_frames, Counted, Phase};
use super::handler::{Answer, CloseReason, Ctx, Listener, OpenInfo, Requester, Route};
use super::http::HttpResponse;
use super::net::Net;
use super::stats::Rejection;
use super::{Handler, Server};
use crate::log::Level;
#[cfg(feature = "deflate")]
use crate::proto::extension::negotiate;
use crate::proto::handshake::{
    check_request, select_protocol, validate_upgrade, write_switching_protocols, HandshakeError,
    Request,
};
use crate::proto::{Connection, Event, ProtocolError};

impl<H: Handler, N: Net> Server<H, N> {
    /// Decodes everything pending in the connection's read buffer.
    pub(super) fn process_input(&mut self, slot: usize, now: Instant) {
        loop {
            let Some(conn) = self.conns.get_mut(slot) else {
                return;
            };
            let more = match &mut conn.phase {
                Phase::Closing | Phase::Answering => {
                    conn.rbuf.clear();
                    false
                }
                Phase::Handshake(reader) => {
                    match reader.read(conn.rbuf.pending(), &self.config.limits) {
                        Ok(None) => false,
                        Ok(Some((request, head_len))) => {
                            // Bytes after the head are WebSocket frames: keep them.
                            conn.rbuf.consume(head_len);
                            if let Some(counted) = conn.counted.take() {
                                self.addresses.release(counted);
                            }
                            self.on_request(slot, &request, now)
                        }
                        Err(e) => {
                            self.reject_handshake(slot, &e, Asker::UNKNOWN, now);
                            false
                        }
                    }
                }
                Phase::Body(read) => {
                    let used = read.absorb(conn.rbuf.pending());
                    conn.rbuf.consume(used);
                    if read.complete() {
                        self.answer_body(slot, now);
                    }
                    false
                }
                Phase::Open(_) => self.next_frame(slot, now),
            };
            if !more {
                return;
            }
        }
    }

    /// Decodes one event from an open connection's buffer and hands it to the handler.
    /// Returns whether more may be decoded.
    fn next_frame(&mut self, slot: usize, now: Instant) -> bool {
        let Some(conn) = self.conns.get_mut(slot) else {
            return false;
        };
        let Phase::Open(ws) = &mut conn.phase else {
            return false;
        };
        let id = conn.id;
        // §5.5.1: data may be sent until our close goes out; after it, a reply is dropped as
        // any send to a closing connection is.
        // A reply that may be compressed needs the connection's compressor, which the
        // message being handled borrows: it goes through the command list instead.
        let requester = (ws.is_open() && sends_plain(ws)).then_some(Requester {
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
        let (used, more) = match ws.poll_event(conn.rbuf.pending_mut(), now) {
            Err(e) => {
                log_violation(conn.peer, e);
                // A flood has its own counter; the others are the peer's bugs.
                match e {
                    ProtocolError::PingFlood => self.stats.ping_floods += 1,
                    _ => self.stats.protocol_errors += 1,
                }
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
                    Event::Pong(payload) => self.handler.on_pong(&mut ctx, id, payload),
                    Event::Close(frame) => close_reason = Some(CloseReason::Handshake(frame.code)),
                    Event::Ping(_) => {}
                }
                (used, true)
            }
        };
        self.stats.messages_out += ctx.direct_replies();
        conn.rbuf.consume(used);
        // Re-borrow: the handler call above ended the borrow of `ws`'s event.
        let Phase::Open(ws) = &mut conn.phase else {
            return false;
        };
        queue_control_frames(ws, &mut conn.out, &mut self.out_storage);
        let closed = ws.is_closed();
        self.conns.mark_dirty(slot);
        self.sync_deadline(slot);
        self.apply_commands(Some(id), now);
        if closed {
            let reason = close_reason.unwrap_or(CloseReason::Abnormal);
            self.begin_closing(slot, reason, now);
            return false;
        }
        more
    }

    /// Answers a complete request head as the handler routes it: an upgrade (101 and the
    /// WebSocket phase, or the handshake error), or a plain HTTP response.
    /// Returns whether the connection is now open.
    fn on_request(&mut self, slot: usize, request: &Request, now: Instant) -> bool {
        let Some(conn) = self.conns.get(slot) else {
            return false;
        };
        let (peer, listener) = (conn.peer, conn.listener);
        let mut asker = Asker {
            client: None,
            head: request.method == "HEAD",
        };
        if let Err(e) = check_request(request) {
            self.reject_handshake(slot, &e, asker, now);
            return false;
        }
        let client = client_addr(request, peer, self.config.trust_proxy);
        asker.client = Some(client);
        let counts = (self.stats.open, self.config.max_connections);
        // The internal addresses serve the application's own backend: how often it asks is
        // not a client's request rate to limit.
        let rate_limited = listener != Listener::Internal;
        let admitted = admit(
            &mut self.addresses,
            request,
            client,
            counts,
            rate_limited,
            now,
        );
        if let Err(rejection) = admitted {
            self.refuse(slot, &refusal(rejection), rejection, asker, now);
            return false;
        }
        match self
            .handler
            .on_request(request, peer, listener, &self.stats)
        {
            Route::Upgrade => self.upgrade(slot, request, client, now),
            Route::Respond(response) => {
                self.respond(slot, &response, asker.head, now);
                false
            }
            Route::Reject(response, rejection) => {
                self.refuse(slot, &response, rejection, asker, now);
                false
            }
            Route::ReadBody(limit) => self.start_body(slot, request, limit, now),
        }
    }

    /// Starts reading a request's body; the bytes after the head are its first ones.
    /// Returns whether more input may be decoded now.
    fn start_body(&mut self, slot: usize, request: &Request, limit: usize, now: Instant) -> bool {
        let length = match body_length(request, limit) {
            Ok(length) => length,
            Err(response) => {
                self.respond(slot, &response, false, now);
                return false;
            }
        };
        let Some(conn) = self.conns.get_mut(slot) else {
            return false;
        };
        // RFC 9110 §10.1.1: a client that waits for "100 Continue" before the body (curl does
        // for bodies over 1 KiB) is told to go on at once, the length being acceptable.
        let go_on = length > 0 && request.has_token("Expect", "100-continue");
        if go_on {
            conn.out.push_bytes(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        conn.phase = Phase::Body(Box::new(BodyRead {
            request: request.clone(),
            body: Vec::with_capacity(length),
            length,
        }));
        if go_on {
            self.conns.mark_dirty(slot);
        }
        true
    }

    /// A request's body is complete: the application answers it.
    fn answer_body(&mut self, slot: usize, now: Instant) {
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        let Phase::Body(read) = std::mem::replace(&mut conn.phase, Phase::Answering) else {
            return;
        };
        let id = conn.id;
        let mut ctx = Ctx::new(&mut self.commands, now);
        let answer = self
            .handler
            .on_body(&mut ctx, id, &read.request, &read.body);
        if let Answer::Now(response) = answer {
            self.respond(slot, &response, false, now);
        }
        // After the answer: a `respond` the callback recorded for another connection waiting
        // on its answer is carried out too.
        self.apply_commands(None, now);
    }

    /// Answers a refused request, logs and counts why, and closes.
    fn refuse(
        &mut self,
        slot: usize,
        response: &HttpResponse,
        why: Rejection,
        asker: Asker,
        now: Instant,
    ) {
        if let Some(conn) = self.conns.get(slot) {
            let (peer, status) = (conn.peer, response.status);
            match asker.client {
                Some(client) => log!(Level::Info, "{peer}: refused ({client}): {status} {why}"),
                None => log!(Level::Info, "{peer}: refused: {status} {why}"),
            }
        }
        self.stats.reject(why);
        self.respond(slot, response, asker.head, now);
    }

    fn upgrade(&mut self, slot: usize, request: &Request, client: IpAddr, now: Instant) -> bool {
        let upgrade = match validate_upgrade(request) {
            Ok(u) => u,
            Err(e) => {
                let asker = Asker {
                    client: Some(client),
                    head: false,
                };
                self.reject_handshake(slot, &e, asker, now);
                return false;
            }
        };
        let Some(conn) = self.conns.get_mut(slot) else {
            return false;
        };
        let protocol = select_protocol(&self.config.protocols, &upgrade.offered_protocols);
        let ws = Connection::new_server(self.config.limits.clone())
            .with_timeouts(Arc::clone(&self.timeouts), now);
        // RFC 7692 §5: the first offer this server can honour, or none.
        #[cfg(feature = "deflate")]
        let (ws, extensions) =
            match self.config.deflate.as_ref().and_then(|config| {
                negotiate(config, request.header_values("Sec-WebSocket-Extensions"))
            }) {
                Some(agreed) => (ws.with_deflate(agreed), Some(agreed.response_header())),
                None => (ws, None),
            };
        #[cfg(not(feature = "deflate"))]
        let extensions: Option<String> = None;
        if extensions.is_some() {
            conn.deflate = true;
            self.stats.deflate_negotiated += 1;
            self.stats.deflate_open += 1;
        }
        let mut head = Vec::with_capacity(160);
        write_switching_protocols(&mut head, &upgrade.accept, protocol, extensions.as_deref());
        conn.out.push_bytes(&head);
        conn.deadline = ws.poll_timeout();
        if let Some(when) = conn.deadline {
            self.timers.schedule(when, conn.id);
        }
        conn.phase = Phase::Open(Box::new(ws));
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
        self.conns.mark_dirty(slot);
        self.apply_commands(Some(id), now);
        true
    }

    /// Refuses a handshake with its HTTP status and closes.
    fn reject_handshake(
        &mut self,
        slot: usize,
        error: &HandshakeError,
        asker: Asker,
        now: Instant,
    ) {
        let response = HttpResponse::refusing(error);
        self.refuse(slot, &response, Rejection::from(error), asker, now);
    }

    /// Sends an HTTP response (its head only, for HEAD) and closes.
    pub(super) fn respond(
        &mut self,
        slot: usize,
        response: &HttpResponse,
        head_only: bool,
        now: Instant,
    ) {
        let mut bytes = Vec::with_capacity(response.body.len() + 256);
        response.write_to(&mut bytes, head_only);
        self.respond_bytes(slot, &bytes, now);
    }

    /// Queues an encoded HTTP response and closes after it.
    pub(super) fn respond_bytes(&mut self, slot: usize, response: &[u8], now: Instant) {
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        conn.out.push_bytes(response);
        self.begin_closing(slot, CloseReason::Abnormal, now);
    }
}

/// What the loop knows of the request it answers.
#[derive(Clone, Copy, Debug)]
struct Asker {
    /// The client's address (behind a trusted proxy not the peer's), once known.
    client: Option<IpAddr>,
    /// The method is HEAD: the answer carries no body (RFC 9110 §9.3.2).
    head: bool,
}

impl Asker {
    /// A head that could not be parsed: nothing is known.
    const UNKNOWN: Asker = Asker {
        client: None,
        head: false,
    };
}

/// Every message to this connection goes out as a plain frame (no permessage-deflate).
fn sends_plain(ws: &Connection) -> bool {
    #[cfg(feature = "deflate")]
    return ws.deflate().is_none();
    #[cfg(not(feature = "deflate"))]
    {
        let _ = ws;
        true
    }
}

/// Logs a violation: a flood is worth a warning, the rest are the peer's bugs.
fn log_violation(peer: std::net::SocketAddr, error: ProtocolError) {
    match error {
        ProtocolError::PingFlood => log!(Level::Warn, "{peer}: {error}, closing"),
        _ => log!(Level::Debug, "{peer}: protocol error: {error}"),
    }
}
