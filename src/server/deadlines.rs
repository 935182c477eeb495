//! Deadlines: what the loop does when a connection's deadline comes up (the handshake
//! deadline, the end of the linger, the protocol core's heartbeat, idle and close timers), how
//! it follows the core's timers as they move, and how it moves every deadline when the loop
//! itself was paused.

use std::time::{Duration, Instant};

use super::conn::{queue_control_frames, Phase};
use super::handler::{CloseReason, Ctx};
use super::http::HttpResponse;
use super::net::Net;
use super::stats::{Rejection, TlsFailure};
use super::{Handler, Server};
use crate::log::Level;
use crate::proto::Expired;

impl<H: Handler, N: Net> Server<H, N> {
    /// The loop could not run for `paused`: every connection's deadline moves by as much (the
    /// handshake deadline, the protocol core's timers, the linger), and the application is
    /// told so that its rate limits do not charge clients for what queued up meanwhile.
    pub(super) fn paused(&mut self, paused: Duration, now: Instant) {
        log!(
            Level::Warn,
            "the event loop was paused for {paused:?}: deadlines and rate limits move by as much"
        );
        self.stats.pauses += 1;
        for slot in self.conns.slots() {
            let Some(conn) = self.conns.get_mut(slot) else {
                continue;
            };
            match &mut conn.phase {
                Phase::Open(ws) => {
                    ws.handle_pause(paused, now);
                    self.sync_deadline(slot);
                }
                Phase::Handshake(_) | Phase::Body(_) | Phase::Answering | Phase::Closing => {
                    if let Some(deadline) = conn.deadline.as_mut() {
                        *deadline += paused;
                        self.timers.schedule(*deadline, conn.id);
                    }
                }
            }
        }
        let mut ctx = Ctx::new(&mut self.commands, now);
        self.handler.on_pause(&mut ctx, paused);
        self.apply_commands(None, now);
    }

    /// Schedules a connection's deadline if its protocol core moved it.
    pub(super) fn sync_deadline(&mut self, slot: usize) {
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        if let Some(when) = conn.moved_deadline() {
            self.timers.schedule(when, conn.id);
        }
    }

    pub(super) fn fire_deadlines(&mut self, now: Instant) {
        if self.handler.next_timer().is_some_and(|due| due <= now) {
            let mut ctx = Ctx::new(&mut self.commands, now);
            self.handler.on_timer(&mut ctx);
            self.apply_commands(None, now);
        }
        while let Some((when, id)) = self.timers.pop_due(now) {
            let Some((slot, conn)) = self.conns.by_id(id) else {
                continue;
            };
            // A stale entry: the deadline moved since it was scheduled.
            if conn.deadline.take_if(|due| *due == when).is_none() {
                continue;
            }
            // Before a peer is judged by what it has not sent, what waits in its socket is
            // read: a loop that cannot keep up (a starved core, a storm of new connections)
            // may not have got to a request head, a pong or a message that came in time. (A
            // head still incomplete after the read times out as before: the deadline does
            // not move.)
            let judges_silence = match &conn.phase {
                Phase::Handshake(_) | Phase::Body(_) => true,
                Phase::Open(ws) => ws.judges_silence(now),
                Phase::Answering | Phase::Closing => false,
            };
            if judges_silence {
                let before = std::mem::discriminant(&conn.phase);
                self.on_readable(slot, now, false);
                // What was read may have moved the connection on: a complete head opened it,
                // a close frame started the closing handshake (its reply still queued). The
                // new phase set its own deadline; judging it by this one would drop a reply
                // unsent or answer 503 to a request that is being served.
                match self.conns.by_id(id) {
                    Some((_, conn)) if std::mem::discriminant(&conn.phase) == before => {}
                    _ => continue,
                }
            }
            let Some((slot, conn)) = self.conns.by_id(id) else {
                continue;
            };
            match &mut conn.phase {
                Phase::Handshake(_) | Phase::Body(_) => {
                    log!(Level::Info, "{}: handshake timed out", conn.peer);
                    if conn.transport.is_handshaking() {
                        self.stats.tls_failed(TlsFailure::Timeout);
                    }
                    self.stats.reject(Rejection::HandshakeTimeout);
                    self.remove(slot, CloseReason::Abnormal, now);
                }
                Phase::Answering => {
                    log!(
                        Level::Warn,
                        "{}: the application did not answer in time",
                        conn.peer
                    );
                    let late = HttpResponse::text(503, "no answer in time; try again");
                    self.respond(slot, &late, false, now);
                }
                Phase::Closing => self.remove(slot, CloseReason::Abnormal, now),
                Phase::Open(ws) => {
                    let mut gone = false;
                    while let Some(expired) = ws.handle_timeout(now) {
                        match expired {
                            Expired::PingSent => {}
                            Expired::Idle => {
                                log!(Level::Info, "{}: idle, closing", conn.peer);
                                self.stats.idle_timeouts += 1;
                            }
                            Expired::PongMissing => {
                                log!(
                                    Level::Info,
                                    "{}: no pong within {:?}, closing as dead",
                                    conn.peer,
                                    self.config.ping_timeout
                                );
                                self.stats.heartbeat_timeouts += 1;
                                gone = true;
                            }
                            Expired::CloseReplyMissing => {
                                log!(Level::Debug, "{}: no close reply in time", conn.peer);
                                gone = true;
                            }
                        }
                    }
                    if gone {
                        self.remove(slot, CloseReason::Abnormal, now);
                        continue;
                    }
                    queue_control_frames(ws, &mut conn.out, &mut self.out_storage);
                    self.conns.mark_dirty(slot);
                    self.sync_deadline(slot);
                }
            }
        }
    }
}
