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

use std::io::{self, ErrorKind, Read, Write};
use std::net::Shutdown;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use sha1::{Digest, Sha1};
use slab::Slab;
use wsloop_peers::{announce, Args};

/// The listener's token; connections use their slot numbers.
const LISTENER: Token = Token(usize::MAX);
/// The loop's one read buffer.
const READ_BUFFER: usize = 64 * 1024;
/// Largest upgrade request head.
const MAX_HEAD: usize = 8 * 1024;
/// Reading from a connection stops while this many bytes wait for it to read its echoes.
const MAX_QUEUED: usize = 4 << 20;
/// RFC 6455 §1.3: appended to the client's key before hashing.
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// The largest frame header: 2 bytes, 8 of extended length, 4 of mask key (§5.2).
const MAX_HEADER: usize = 14;

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
    stream: TcpStream,
    phase: Phase,
    /// Bytes the socket has not taken yet (usually none, and then unallocated).
    queued: Vec<u8>,
    writable_interest: bool,
    read_paused: bool,
    write_shut: bool,
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
    let mut listener = TcpListener::bind(args.addr())?;
    let poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    announce(listener.local_addr()?);
    let mut server = Server {
        poll,
        listener,
        conns: Slab::default(),
        mode,
        input: vec![0; READ_BUFFER],
        output: Vec::with_capacity(READ_BUFFER + MAX_HEADER),
    };
    let mut events = Events::with_capacity(1024);
    loop {
        match server.poll.poll(&mut events, None) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for event in events.iter() {
            match event.token() {
                LISTENER => server.accept_all(),
                Token(slot) => {
                    if event.is_writable() {
                        server.on_writable(slot);
                    }
                    if event.is_readable() || event.is_read_closed() || event.is_error() {
                        server.on_readable(slot);
                    }
                }
            }
        }
    }
}

impl Server {
    fn accept_all(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((mut stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let entry = self.conns.vacant_entry();
                    let slot = entry.key();
                    if self
                        .poll
                        .registry()
                        .register(&mut stream, Token(slot), Interest::READABLE)
                        .is_err()
                    {
                        continue;
                    }
                    entry.insert(Conn {
                        stream,
                        phase: Phase::Head(Vec::new()),
                        queued: Vec::new(),
                        writable_interest: false,
                        read_paused: false,
                        write_shut: false,
                    });
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                // A connection that went away before it was accepted, or out of descriptors:
                // try again on the next readiness event.
                Err(_) => return,
            }
        }
    }

    /// Reads until the socket would block (mio is edge-triggered), echoing after each read.
    fn on_readable(&mut self, slot: usize) {
        loop {
            let Some(conn) = self.conns.get_mut(slot) else {
                return;
            };
            if conn.queued.len() >= MAX_QUEUED {
                conn.read_paused = true;
                return;
            }
            let n = match conn.stream.read(&mut self.input) {
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
                    Mode::Bytes => send(conn, input).map(|()| Outcome::Open),
                    Mode::Frames => {
                        self.output.clear();
                        let outcome = echo_frames(frames, input, &mut self.output);
                        send(conn, &self.output).map(|()| outcome)
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
        let queued = std::mem::take(&mut conn.queued);
        let result = write_some(&mut conn.stream, &queued).map(|written| {
            conn.queued = queued;
            conn.queued.drain(..written);
            if conn.queued.is_empty() {
                // Idle connections hold no buffer.
                conn.queued = Vec::new();
            }
        });
        if result.and_then(|()| self.after_write(slot)).is_err() {
            return self.remove(slot);
        }
        if let Some(conn) = self.conns.get_mut(slot) {
            if conn.read_paused && conn.queued.len() < MAX_QUEUED / 2 {
                conn.read_paused = false;
                self.on_readable(slot);
            }
        }
    }

    /// Keeps writable interest only while bytes are queued; shuts the write side of a closing
    /// connection once its last bytes are out.
    fn after_write(&mut self, slot: usize) -> io::Result<()> {
        let Some(conn) = self.conns.get_mut(slot) else {
            return Ok(());
        };
        let want_writable = !conn.queued.is_empty();
        if want_writable != conn.writable_interest {
            let interest = if want_writable {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            self.poll
                .registry()
                .reregister(&mut conn.stream, Token(slot), interest)?;
            conn.writable_interest = want_writable;
        }
        if !want_writable && matches!(conn.phase, Phase::Closing) && !conn.write_shut {
            conn.write_shut = true;
            conn.stream.shutdown(Shutdown::Write)?;
        }
        Ok(())
    }

    fn remove(&mut self, slot: usize) {
        if let Some(mut conn) = self.conns.try_remove(slot) {
            let _ = self.poll.registry().deregister(&mut conn.stream);
        }
    }
}

/// Answers the upgrade request once its head is complete, then echoes what followed it.
fn on_head(conn: &mut Conn, mode: Mode, output: &mut Vec<u8>) -> io::Result<Outcome> {
    let Phase::Head(head) = &mut conn.phase else {
        return Ok(Outcome::Open);
    };
    let Some(end) = head
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
    else {
        if head.len() > MAX_HEAD {
            send(
                conn,
                b"HTTP/1.1 431 Request Header Fields Too Large\r\n\r\n",
            )?;
            return Ok(Outcome::Closing);
        }
        return Ok(Outcome::Open);
    };
    let Some(key) = header_value(&head[..end], "sec-websocket-key") else {
        send(
            conn,
            b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n",
        )?;
        return Ok(Outcome::Closing);
    };
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(GUID.as_bytes());
    let accept = BASE64.encode(sha.finalize());
    let mut rest = head.split_off(end);
    output.clear();
    output.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n",
    );
    output.extend_from_slice(format!("Sec-WebSocket-Accept: {accept}\r\n\r\n").as_bytes());
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
    send(conn, output)?;
    Ok(outcome)
}

/// The value of a header in a request head, by case-insensitive name.
fn header_value<'a>(head: &'a [u8], name: &str) -> Option<&'a [u8]> {
    head.split(|&b| b == b'\n').skip(1).find_map(|line| {
        let colon = line.iter().position(|&b| b == b':')?;
        let (field, value) = line.split_at(colon);
        if !field.eq_ignore_ascii_case(name.as_bytes()) {
            return None;
        }
        Some(value[1..].trim_ascii())
    })
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
            unmask(chunk, *key, *offset);
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
        let Some((b0, len, key, header_len)) = parse_header(&frames.header[..have + take]) else {
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
        match len {
            0..=125 => output.extend_from_slice(&[b0, len as u8]),
            126..=0xFFFF => {
                output.extend_from_slice(&[b0, 126]);
                output.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                output.extend_from_slice(&[b0, 127]);
                output.extend_from_slice(&len.to_be_bytes());
            }
        }
        if len > 0 {
            frames.payload = Some((key, len, 0));
        } else if frames.is_close {
            return Outcome::Closing;
        }
    }
}

/// Decodes a frame header (§5.2): first byte, payload length, mask key, header length; `None`
/// while incomplete. Nothing is validated.
fn parse_header(buf: &[u8]) -> Option<(u8, u64, Option<[u8; 4]>, usize)> {
    let (&b0, rest) = buf.split_first()?;
    let &b1 = rest.first()?;
    let (len, mut pos) = match b1 & 0x7F {
        126 => (
            u64::from(u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?)),
            4,
        ),
        127 => (u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?), 10),
        short => (u64::from(short), 2),
    };
    let key = if b1 & 0x80 != 0 {
        let key: [u8; 4] = buf.get(pos..pos + 4)?.try_into().ok()?;
        pos += 4;
        Some(key)
    } else {
        None
    };
    Some((b0, len, key, pos))
}

/// §5.3: `octet i XOR key[(offset + i) mod 4]`, eight bytes at a time.
fn unmask(buf: &mut [u8], key: [u8; 4], offset: usize) {
    let k: [u8; 4] = std::array::from_fn(|i| key[(offset + i) % 4]);
    let wide = u64::from_ne_bytes([k[0], k[1], k[2], k[3], k[0], k[1], k[2], k[3]]);
    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
    }
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= k[i % 4];
    }
}

/// Writes `bytes` after what is already queued: straight to the socket when nothing is, and
/// whatever the socket does not take is queued (writable interest follows in `after_write`).
fn send(conn: &mut Conn, bytes: &[u8]) -> io::Result<()> {
    if !conn.queued.is_empty() {
        conn.queued.extend_from_slice(bytes);
        return Ok(());
    }
    let written = write_some(&mut conn.stream, bytes)?;
    conn.queued.extend_from_slice(&bytes[written..]);
    Ok(())
}

/// Writes until done or the socket would block; returns how much was written.
fn write_some(stream: &mut TcpStream, bytes: &[u8]) -> io::Result<usize> {
    let mut written = 0;
    while written < bytes.len() {
        match stream.write(&bytes[written..]) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(written)
}
