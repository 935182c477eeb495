//! `raw-echo`: the ceiling of the side-by-side benchmarks. A mio loop on one thread that does
//! as little as a server can do per message, so that the distance between it and a WebSocket
//! server is what the WebSocket server itself costs, and what remains is the kernel's and mio's.
//!
//! # Which ceiling
//!
//! The load generator speaks WebSocket: it needs a 101 to its upgrade request, and a strict
//! client fails the connection on a masked frame from the server (RFC 6455 §5.1). So both modes
//! answer the upgrade request with a valid 101 (`Sec-WebSocket-Accept` from SHA-1 and base64);
//! that is work per connection, not per message, and no benchmark figure is per connection.
//! After the 101:
//!
//! - `--mode bytes`: every byte that arrives is written back unchanged: a raw TCP echo on
//!   mio, no WebSocket at all. This is the "raw mio TCP echo" figure (3.4 µs of server
//!   CPU per 16-byte message). The client gets its own masked frames back, so the load
//!   generator must accept masked frames from this server (`wsloop bench --accept-masked`).
//! - `--mode frames` (the default): the least WebSocket work a server can do: each client frame
//!   goes back with its payload unmasked (§5.3) and the header rewritten without the mask key,
//!   a ping answered as a pong and a close echoed as the close reply (then the write side is
//!   shut). No UTF-8 check, no reassembly of fragments, no limits, no control frame rules:
//!   frames are echoed one by one as they arrive, even in pieces. Any strict client talks to
//!   it. It costs a few nanoseconds per small message more than `bytes` (16 bytes unmasked, a
//!   header rewritten, one copy into the output buffer).
//!
//! The fairest ceiling for a WebSocket server is `frames`: it is work wsloop cannot avoid, done
//! with nothing else around it. `bytes` is the literal figure and shows how far `frames`
//! is from the bare socket.
//!
//! # Memory
//!
//! An idle connection holds its socket, a few bytes of state and no buffer: reads land in one
//! buffer owned by the loop, frames are rewritten into one output buffer owned by the loop, and
//! only bytes the socket did not take are copied into a per-connection queue (released once
//! written). That is what the 0.08 KB per idle connection measures.

use std::io::{self, ErrorKind, Read};

use mio::net::TcpListener;
use mio::{Poll, Token};
use slab::Slab;
use wsloop_peers::raw::{self, Header, Socket, Upgrade, MAX_HEADER};
use wsloop_peers::Args;

/// The loop's one read buffer.
const READ_BUFFER: usize = 64 * 1024;
/// Reading from a connection stops while this many bytes wait for it to read its echoes.
const MAX_QUEUED: usize = 4 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Bytes,
    Frames,
}

/// The frame being echoed in `frames` mode.
#[derive(Debug, Default)]
struct Frames {
    /// The start of a header that arrived in pieces.
    header: [u8; MAX_HEADER],
    header_len: u8,
    /// Inside a payload: its mask key, bytes still to come, position in the key.
    payload: Option<([u8; 4], u64, usize)>,
    /// The frame being echoed is a close: after it the connection closes.
    is_close: bool,
}

#[derive(Debug)]
enum Phase {
    /// Reading the upgrade request head.
    Head(Vec<u8>),
    /// Echoing.
    Open(Frames),
    /// The last bytes are queued; input is read and dropped until the peer closes.
    Closing,
}

#[derive(Debug)]
struct Conn {
    socket: Socket,
    phase: Phase,
    read_paused: bool,
}

/// What one piece of input did to the connection.
enum Outcome {
    Open,
    /// The close reply or an HTTP error is out: shut the write side once written.
    Closing,
    /// Drop the connection now.
    Drop,
}

struct Server {
    poll: Poll,
    listener: TcpListener,
    conns: Slab<Conn>,
    mode: Mode,
    input: Vec<u8>,
    output: Vec<u8>,
}

fn main() -> io::Result<()> {
    let args = Args::parse("raw-echo", &["frames", "bytes"]);
    let mode = match args.mode.as_deref() {
        Some("bytes") => Mode::Bytes,
        _ => Mode::Frames,
    };
    raw::run(&args, |poll, listener| Server {
        poll,
        listener,
        conns: Slab::default(),
        mode,
        input: vec![0; READ_BUFFER],
        output: Vec::with_capacity(READ_BUFFER + MAX_HEADER),
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
                read_paused: false,
            },
        );
    }

    /// Reads until the socket would block (mio is edge-triggered), echoing after each read.
    fn on_readable(&mut self, slot: usize) {
        loop {
            let Some(conn) = self.conns.get_mut(slot) else {
                return;
            };
            if conn.socket.queued.len() >= MAX_QUEUED {
                conn.read_paused = true;
                return;
            }
            let n = match conn.socket.stream.read(&mut self.input) {
                Ok(0) => return self.remove(slot),
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return self.remove(slot),
            };
            let input = &mut self.input[..n];
            let outcome = match &mut conn.phase {
                Phase::Closing => Ok(Outcome::Closing),
                Phase::Head(head) => {
                    head.extend_from_slice(input);
                    on_head(conn, self.mode, &mut self.output)
                }
                Phase::Open(frames) => match self.mode {
                    Mode::Bytes => conn.socket.send(input).map(|()| Outcome::Open),
                    Mode::Frames => {
                        self.output.clear();
                        let outcome = echo_frames(frames, input, &mut self.output);
                        conn.socket.send(&self.output).map(|()| outcome)
                    }
                },
            };
            match outcome {
                Ok(Outcome::Open) => {}
                Ok(Outcome::Closing) => conn.phase = Phase::Closing,
                Ok(Outcome::Drop) | Err(_) => return self.remove(slot),
            }
            if self.after_write(slot).is_err() {
                return self.remove(slot);
            }
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
            return self.remove(slot);
        }
        if let Some(conn) = self.conns.get_mut(slot) {
            if conn.read_paused && conn.socket.queued.len() < MAX_QUEUED / 2 {
                conn.read_paused = false;
                self.on_readable(slot);
            }
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

/// Answers the upgrade request once its head is complete, then echoes what followed it.
fn on_head(conn: &mut Conn, mode: Mode, output: &mut Vec<u8>) -> io::Result<Outcome> {
    let Phase::Head(head) = &mut conn.phase else {
        return Ok(Outcome::Open);
    };
    let (response, len) = match raw::upgrade(head) {
        Upgrade::Incomplete => return Ok(Outcome::Open),
        Upgrade::Refuse(answer) => {
            conn.socket.send(answer)?;
            return Ok(Outcome::Closing);
        }
        Upgrade::Accept { response, len } => (response, len),
    };
    let mut rest = head.split_off(len);
    output.clear();
    output.extend_from_slice(&response);
    conn.phase = Phase::Open(Frames::default());
    // Frames that came in the same read as the head.
    let outcome = match (&mut conn.phase, mode) {
        (Phase::Open(_), Mode::Bytes) => {
            output.extend_from_slice(&rest);
            Outcome::Open
        }
        (Phase::Open(frames), Mode::Frames) => echo_frames(frames, &mut rest, output),
        _ => Outcome::Open,
    };
    conn.socket.send(output)?;
    Ok(outcome)
}

/// Rewrites the client frames in `input` into `output`: unmasked payload, header without the
/// key, ping turned into pong. Frames may start and end anywhere; `frames` carries the state
/// across reads.
fn echo_frames(frames: &mut Frames, input: &mut [u8], output: &mut Vec<u8>) -> Outcome {
    let mut pos = 0;
    loop {
        if let Some((key, remaining, offset)) = &mut frames.payload {
            let n = (*remaining).min((input.len() - pos) as u64) as usize;
            let chunk = &mut input[pos..pos + n];
            raw::unmask(chunk, *key, *offset);
            output.extend_from_slice(chunk);
            pos += n;
            *remaining -= n as u64;
            *offset = (*offset + n) % 4;
            if *remaining > 0 {
                return Outcome::Open;
            }
            frames.payload = None;
            if frames.is_close {
                return Outcome::Closing;
            }
        }
        if pos == input.len() {
            return Outcome::Open;
        }
        // A header, perhaps continuing one that began in an earlier read.
        let have = frames.header_len as usize;
        let take = (MAX_HEADER - have).min(input.len() - pos);
        frames.header[have..have + take].copy_from_slice(&input[pos..pos + take]);
        let Some(Header {
            b0,
            len,
            key,
            header_len,
        }) = raw::parse_header(&frames.header[..have + take])
        else {
            frames.header_len = (have + take) as u8;
            return Outcome::Open;
        };
        pos += header_len - have;
        frames.header_len = 0;
        // §5.1: a client frame must be masked; this server has nothing to unmask it with.
        let Some(key) = key else {
            return Outcome::Drop;
        };
        let opcode = b0 & 0x0F;
        let b0 = if opcode == 0x9 { (b0 & 0xF0) | 0xA } else { b0 };
        frames.is_close = opcode == 0x8;
        raw::push_header(output, b0, len);
        if len > 0 {
            frames.payload = Some((key, len, 0));
        } else if frames.is_close {
            return Outcome::Closing;
        }
    }
}
