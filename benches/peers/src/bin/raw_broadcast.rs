//! `raw-broadcast`: the ceiling of the broadcast benchmark. A mio loop on one thread that
//! does the least a server can do per receiver, so that the distance between it and
//! `wsloop broadcast` is what wsloop itself costs per delivered frame.
//!
//! Every data frame a client sends goes to every connected client, the sender included (as
//! `wsloop broadcast` and `tungstenite-broadcast` do): its payload is unmasked and the frame
//! re-encoded once, into the one buffer of this loop turn's frames. Every receiver gets the
//! same bytes in the same order, so at the end of the turn that buffer is written to each
//! socket as it is: one `write` per receiver per turn, no per-receiver encoding, copy or
//! allocation (only what a socket does not take is copied into its queue). No UTF-8 check,
//! no limits beyond a bound on a half-received frame and on a receiver's queue, no control
//! frame rules: a ping is answered, a close echoed, fragments are forwarded as they came.
//!
//! The upgrade is answered as `raw-echo` answers it (`wsloop_peers::raw`).

use std::io::{self, ErrorKind, Read};

use mio::net::TcpListener;
use mio::{Poll, Token};
use slab::Slab;
use wsloop_peers::raw::{self, Header, Socket, Upgrade};
use wsloop_peers::Args;

/// The loop's one read buffer.
const READ_BUFFER: usize = 64 * 1024;
/// Largest frame (header and payload) a client may send; the same as `serve`'s 1 MiB.
const MAX_FRAME: usize = 1 << 20;
/// A receiver with this many bytes unwritten is dropped (a slow consumer).
const MAX_QUEUED: usize = 4 << 20;

#[derive(Debug)]
enum Phase {
    /// Reading the upgrade request head.
    Head(Vec<u8>),
    /// Frames flow; the bytes of a frame that is not complete yet (usually none).
    Open(Vec<u8>),
    /// The last bytes are queued; input is read and dropped until the peer closes.
    Closing,
}

#[derive(Debug)]
struct Conn {
    socket: Socket,
    phase: Phase,
}

/// What a client's frames asked for besides the broadcast.
enum Outcome {
    Open,
    /// A close was echoed: shut the write side once written.
    Closing,
    /// Drop the connection now.
    Drop,
}

struct Server {
    poll: Poll,
    listener: TcpListener,
    conns: Slab<Conn>,
    input: Vec<u8>,
    /// The frames of this loop turn, encoded once for every receiver.
    turn: Vec<u8>,
    /// A reply for one connection alone (101, pong, close).
    reply: Vec<u8>,
}

fn main() -> io::Result<()> {
    let args = Args::parse("raw-broadcast", &[]);
    raw::run(&args, |poll, listener| Server {
        poll,
        listener,
        conns: Slab::default(),
        input: vec![0; READ_BUFFER],
        turn: Vec::with_capacity(READ_BUFFER),
        reply: Vec::new(),
    })
}

impl raw::Peer for Server {
    fn poll(&mut self) -> &mut Poll {
        &mut self.poll
    }

    fn accept_all(&mut self) {
        raw::accept_all(
            &self.listener,
            self.poll.registry(),
            &mut self.conns,
            |socket| Conn {
                socket,
                phase: Phase::Head(Vec::new()),
            },
        );
    }

    /// Reads until the socket would block (mio is edge-triggered): data frames go into the
    /// turn's buffer, replies to this connection are written at once.
    fn on_readable(&mut self, slot: usize) {
        loop {
            let Some(conn) = self.conns.get_mut(slot) else {
                return;
            };
            let n = match conn.socket.stream.read(&mut self.input) {
                Ok(0) => return self.remove(slot),
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return self.remove(slot),
            };
            self.reply.clear();
            let outcome = match &mut conn.phase {
                Phase::Closing => Outcome::Closing,
                Phase::Head(head) => {
                    head.extend_from_slice(&self.input[..n]);
                    match raw::upgrade(head) {
                        Upgrade::Incomplete => Outcome::Open,
                        Upgrade::Refuse(answer) => {
                            self.reply.extend_from_slice(answer);
                            Outcome::Closing
                        }
                        Upgrade::Accept { response, len } => {
                            self.reply.extend_from_slice(&response);
                            // Frames that came in the same read as the head.
                            let mut rest = head.split_off(len);
                            let mut partial = Vec::new();
                            let outcome =
                                on_frames(&mut partial, &mut rest, &mut self.turn, &mut self.reply);
                            conn.phase = Phase::Open(partial);
                            outcome
                        }
                    }
                }
                Phase::Open(partial) if partial.is_empty() => on_frames(
                    partial,
                    &mut self.input[..n],
                    &mut self.turn,
                    &mut self.reply,
                ),
                Phase::Open(partial) => {
                    partial.extend_from_slice(&self.input[..n]);
                    let mut pending = std::mem::take(partial);
                    on_frames(partial, &mut pending, &mut self.turn, &mut self.reply)
                }
            };
            let result = match outcome {
                Outcome::Drop => return self.remove(slot),
                Outcome::Closing => {
                    conn.phase = Phase::Closing;
                    conn.socket.send(&self.reply)
                }
                Outcome::Open => conn.socket.send(&self.reply),
            };
            if result.and_then(|()| self.after_write(slot)).is_err() {
                return self.remove(slot);
            }
        }
    }

    /// The end of a loop turn: this turn's frames to every open connection, one write each.
    fn end_turn(&mut self) {
        if self.turn.is_empty() {
            return;
        }
        let mut failed = Vec::new();
        for (slot, conn) in self.conns.iter_mut() {
            if !matches!(conn.phase, Phase::Open(_)) {
                continue;
            }
            if conn.socket.queued.len() + self.turn.len() > MAX_QUEUED
                || conn.socket.send(&self.turn).is_err()
            {
                failed.push(slot);
            }
        }
        self.turn.clear();
        let slots: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.socket.interest_stale())
            .map(|(slot, _)| slot)
            .collect();
        for slot in slots {
            if self.after_write(slot).is_err() {
                failed.push(slot);
            }
        }
        for slot in failed {
            self.remove(slot);
        }
    }

    fn on_writable(&mut self, slot: usize) {
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        if conn
            .socket
            .write_queued()
            .and_then(|()| self.after_write(slot))
            .is_err()
        {
            self.remove(slot);
        }
    }
}

impl Server {
    fn after_write(&mut self, slot: usize) -> io::Result<()> {
        let Some(conn) = self.conns.get_mut(slot) else {
            return Ok(());
        };
        let closing = matches!(conn.phase, Phase::Closing);
        conn.socket
            .after_write(self.poll.registry(), Token(slot), closing)
    }

    fn remove(&mut self, slot: usize) {
        if let Some(mut conn) = self.conns.try_remove(slot) {
            let _ = self.poll.registry().deregister(&mut conn.socket.stream);
        }
    }
}

/// Takes the complete frames in `input`: data frames (unmasked, header re-encoded) into `turn`
/// for everyone, a pong for a ping and the echo of a close into `reply`; keeps an incomplete
/// frame's bytes in `partial`.
fn on_frames(
    partial: &mut Vec<u8>,
    input: &mut [u8],
    turn: &mut Vec<u8>,
    reply: &mut Vec<u8>,
) -> Outcome {
    let mut pos = 0;
    while let Some(Header {
        b0,
        len,
        key,
        header_len,
    }) = raw::parse_header(&input[pos..])
    {
        let size = header_len as u64 + len;
        if size > MAX_FRAME as u64 {
            return Outcome::Drop;
        }
        // §5.1: a client frame must be masked.
        let Some(key) = key else {
            return Outcome::Drop;
        };
        let start = pos + header_len;
        let Some(payload) = input.get_mut(start..start + len as usize) else {
            break;
        };
        raw::unmask(payload, key, 0);
        pos = start + payload.len();
        let out = match b0 & 0x0F {
            0x8 => {
                raw::push_header(reply, b0, len);
                reply.extend_from_slice(payload);
                return Outcome::Closing;
            }
            0x9 => {
                raw::push_header(reply, (b0 & 0xF0) | 0xA, len);
                &mut *reply
            }
            0xA => continue,
            _ => {
                raw::push_header(turn, b0, len);
                &mut *turn
            }
        };
        out.extend_from_slice(payload);
    }
    let rest = &input[pos..];
    if rest.len() > MAX_FRAME {
        return Outcome::Drop;
    }
    partial.extend_from_slice(rest);
    Outcome::Open
}
