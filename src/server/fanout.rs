//! Fan-out: carrying out what a handler recorded (sends, broadcasts encoded once per form and
//! shared, closes), checking that each target can take a message, and failing slow consumers.

use std::time::Instant;

use super::compress::Broadcast;
use super::conn::{queue_control_frames, Conn, Phase};
use super::handler::{CloseReason, Command, ConnId};
use super::net::Net;
use super::outbound::{OutQueue, OutStorage};
use super::stats::Stats;
use super::{Handler, Server};
use crate::log::Level;
use crate::proto::{Connection, Policy};

impl<H: Handler, N: Net> Server<H, N> {
    /// Carries out the commands recorded by the handler. `requester` is the connection whose
    /// input led to them: replies to it are bounded by pausing its reads, while a connection
    /// that lets unrequested messages pile up past the cap is a slow consumer and is closed.
    pub(super) fn apply_commands(&mut self, requester: Option<ConnId>, now: Instant) {
        // The common case after a message: nothing recorded (a reply went straight out).
        if self.commands.list.is_empty() {
            return;
        }
        let mut commands = std::mem::take(&mut self.commands);
        let mut compressor = std::mem::take(&mut self.compressor);
        let mut slow = Vec::new();
        for command in &commands.list {
            match command {
                Command::Send { to, kind, payload } => {
                    let payload = &commands.arena[payload.clone()];
                    self.deliver(*to, requester, &mut slow, true, |out, ws, _| {
                        compressor.push(out, ws, *kind, payload);
                    });
                }
                Command::Broadcast {
                    targets,
                    kind,
                    payload,
                } => {
                    // Encoded once per form (plain, compressed on its own) and shared;
                    // compressed per receiver only with context takeover.
                    let mut frames = Broadcast::new(*kind, &commands.arena[payload.clone()]);
                    for to in &commands.targets[targets.clone()] {
                        self.deliver(*to, requester, &mut slow, false, |out, ws, storage| {
                            frames.push(out, ws, &mut compressor, storage);
                        });
                    }
                    self.stats.broadcast_encodes += frames.encodes;
                }
                Command::Respond { to, response } => {
                    // Only to the request it answers: the connection may have gone, or been
                    // answered with 503 at its deadline, and its slot reused.
                    if let Some((slot, conn)) = self.conns.by_id(*to) {
                        if matches!(conn.phase, Phase::Answering) {
                            self.respond_bytes(slot, &commands.arena[response.clone()], now);
                        }
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
        self.compressor = compressor;
        // Several broadcasts of one callback may find the same consumer slow: fail it once.
        slow.sort_unstable();
        slow.dedup();
        for id in slow {
            self.drop_slow_consumer(id, now);
        }
    }

    /// Queues one message for `to` with `push` if it can take it now: it exists and is open
    /// (no close sent or received), and, unless it asked for the message, its queue is not
    /// over the cap even after writing what its socket takes; otherwise it is added to
    /// `slow`. A buffer is lent for a frame encoded into the queue (`owned`), none for a
    /// shared one. One table lookup for all of it: a broadcast does this per receiver.
    fn deliver(
        &mut self,
        to: ConnId,
        requester: Option<ConnId>,
        slow: &mut Vec<ConnId>,
        owned: bool,
        push: impl FnOnce(&mut OutQueue, &mut Connection, &mut OutStorage),
    ) {
        let Some((slot, conn)) = self.conns.by_id(to) else {
            return;
        };
        if !matches!(&conn.phase, Phase::Open(ws) if ws.is_open()) {
            return;
        }
        let cap = self.config.max_backpressure;
        if Some(to) != requester && over_cap(conn, cap, &mut self.stats, &self.out_storage) {
            slow.push(to);
            return;
        }
        let Phase::Open(ws) = &mut conn.phase else {
            return;
        };
        conn.out.borrow(&mut self.out_storage, owned);
        push(&mut conn.out, ws, &mut self.out_storage);
        self.stats.messages_out += 1;
        self.conns.mark_dirty(slot);
    }

    /// Starts the closing handshake on an open connection; the peer has the close timeout
    /// to answer (the protocol core keeps that deadline).
    pub(super) fn close_conn(&mut self, id: ConnId, code: u16, reason: &str, now: Instant) {
        let Some((slot, conn)) = self.conns.by_id(id) else {
            return;
        };
        let Phase::Open(ws) = &mut conn.phase else {
            return;
        };
        if ws.close(code, reason, now) {
            queue_control_frames(ws, &mut conn.out, &mut self.out_storage);
            self.conns.mark_dirty(slot);
            self.sync_deadline(slot);
        }
    }

    /// Closes a connection whose queue is over the cap; queued messages are dropped (all but
    /// the frame being written) so the close frame goes out next.
    fn drop_slow_consumer(&mut self, id: ConnId, now: Instant) {
        if let Some((_, conn)) = self.conns.by_id(id) {
            log!(
                Level::Warn,
                "{}: slow consumer ({} bytes queued), closing",
                conn.peer,
                conn.out.len()
            );
            self.stats.slow_consumers += 1;
        }
        let policy = Policy::SlowConsumer;
        self.fail_with(id, policy.code(), policy.wire_reason(), true, now);
    }

    /// Fails a connection without waiting for the close reply: a peer that floods or does
    /// not read will not answer in time. With `drop_queued`, queued messages are dropped so
    /// the close goes out next.
    fn fail_with(&mut self, id: ConnId, code: u16, reason: &str, drop_queued: bool, now: Instant) {
        let Some((slot, conn)) = self.conns.by_id(id) else {
            return;
        };
        let Phase::Open(ws) = &mut conn.phase else {
            return;
        };
        if drop_queued {
            conn.out.truncate_to_front();
        }
        ws.close(code, reason, now);
        queue_control_frames(ws, &mut conn.out, &mut self.out_storage);
        self.begin_closing(slot, CloseReason::Failed(code), now);
    }
}

/// Whether a connection's queue is over the cap even after writing what its socket takes
/// now: a reader whose queue filled within one turn is not a slow consumer, one whose socket
/// is full as well is. A write error is left for the next flush to handle.
fn over_cap<S: std::io::Read + std::io::Write>(
    conn: &mut Conn<S>,
    cap: usize,
    stats: &mut Stats,
    storage: &OutStorage,
) -> bool {
    if conn.out.len() < cap {
        return false;
    }
    let before = conn.out.len();
    let _ = conn.out.write_to(&mut conn.transport, storage);
    stats.bytes_out += (before - conn.out.len()) as u64;
    conn.out.len() >= cap
}
