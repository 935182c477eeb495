//! What the raw mio peers (`raw-echo`, `raw-broadcast`) share: the least a server must do to
//! be a WebSocket peer at all. Answering the upgrade (a 101 with `Sec-WebSocket-Accept`, RFC
//! 6455 §4.2.2), reading a frame header, unmasking (§5.3), and writing until the socket would
//! block. Nothing is validated beyond what these need.

use std::io::{self, ErrorKind, Write};
use std::net::Shutdown;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Registry, Token};
use slab::Slab;

use crate::{announce, Args};

/// The listener's token; connections use their slot numbers.
pub const LISTENER: Token = Token(usize::MAX);

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use sha1::{Digest, Sha1};

/// Largest upgrade request head.
pub const MAX_HEAD: usize = 8 * 1024;
/// The largest frame header: 2 bytes, 8 of extended length, 4 of mask key (§5.2).
pub const MAX_HEADER: usize = 14;
/// RFC 6455 §1.3: appended to the client's key before hashing.
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// What a request head read so far asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Upgrade {
    /// The head is not complete yet.
    Incomplete,
    /// Answer this HTTP error and close.
    Refuse(&'static [u8]),
    /// Answer `response` (a 101); the head was `len` bytes, what follows is frames.
    Accept { response: Vec<u8>, len: usize },
}

/// Answers an upgrade request head once it is complete.
pub fn upgrade(head: &[u8]) -> Upgrade {
    let Some(len) = head
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
    else {
        return if head.len() > MAX_HEAD {
            Upgrade::Refuse(b"HTTP/1.1 431 Request Header Fields Too Large\r\n\r\n")
        } else {
            Upgrade::Incomplete
        };
    };
    let Some(key) = header_value(&head[..len], "sec-websocket-key") else {
        return Upgrade::Refuse(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
    };
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(GUID.as_bytes());
    let accept = BASE64.encode(sha.finalize());
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    Upgrade::Accept {
        response: response.into_bytes(),
        len,
    }
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

/// A decoded frame header (§5.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// The first byte: FIN, RSV and opcode.
    pub b0: u8,
    /// Payload length.
    pub len: u64,
    /// The mask key, if the frame is masked.
    pub key: Option<[u8; 4]>,
    /// Bytes of header.
    pub header_len: usize,
}

/// Decodes a frame header; `None` while incomplete. Nothing is validated.
pub fn parse_header(buf: &[u8]) -> Option<Header> {
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
    Some(Header {
        b0,
        len,
        key,
        header_len: pos,
    })
}

/// Appends an unmasked frame header (server to client, §5.1) for `len` bytes of payload.
pub fn push_header(output: &mut Vec<u8>, b0: u8, len: u64) {
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
}

/// §5.3: `octet i XOR key[(offset + i) mod 4]`, eight bytes at a time.
pub fn unmask(buf: &mut [u8], key: [u8; 4], offset: usize) {
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

/// Writes `bytes` after what is already `queued`: straight to the socket when nothing is, and
/// whatever the socket does not take is queued (the caller watches for writability while
/// `queued` is not empty). An empty `bytes` is no system call.
pub fn send<W: Write>(stream: &mut W, queued: &mut Vec<u8>, bytes: &[u8]) -> io::Result<()> {
    if !queued.is_empty() {
        queued.extend_from_slice(bytes);
        return Ok(());
    }
    let written = write_some(stream, bytes)?;
    queued.extend_from_slice(&bytes[written..]);
    Ok(())
}

/// Writes until done or the socket would block; returns how much was written.
pub fn write_some<W: Write>(stream: &mut W, bytes: &[u8]) -> io::Result<usize> {
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

/// A raw peer's server: what its loop ([`run`]) calls on readiness.
pub trait Peer {
    fn poll(&mut self) -> &mut Poll;
    /// The listener is ready: accept what is pending.
    fn accept_all(&mut self);
    /// A connection's socket takes output again.
    fn on_writable(&mut self, slot: usize);
    /// A connection's socket has input (or its end, or an error).
    fn on_readable(&mut self, slot: usize);
    /// Every event of this poll is handled.
    fn end_turn(&mut self) {}
}

/// Binds 127.0.0.1 (the port of `args`), announces the address, makes the server from its
/// poll and listener and runs its loop forever.
pub fn run<P: Peer>(args: &Args, make: impl FnOnce(Poll, TcpListener) -> P) -> io::Result<()> {
    let mut listener = TcpListener::bind(args.addr())?;
    let poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    announce(listener.local_addr()?);
    let mut server = make(poll, listener);
    let mut events = Events::with_capacity(1024);
    loop {
        match server.poll().poll(&mut events, None) {
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
        server.end_turn();
    }
}

/// A raw peer's connected socket and the bytes it has not taken yet.
#[derive(Debug)]
pub struct Socket {
    pub stream: TcpStream,
    /// Bytes the socket has not taken yet (usually none, and then unallocated).
    pub queued: Vec<u8>,
    writable_interest: bool,
    write_shut: bool,
}

impl Socket {
    /// Writes `bytes` after what is queued ([`send`]).
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        send(&mut self.stream, &mut self.queued, bytes)
    }

    /// On writability: writes what is queued, as much as the socket takes.
    pub fn write_queued(&mut self) -> io::Result<()> {
        let queued = std::mem::take(&mut self.queued);
        let written = write_some(&mut self.stream, &queued)?;
        self.queued = queued;
        self.queued.drain(..written);
        if self.queued.is_empty() {
            // Idle connections hold no buffer.
            self.queued = Vec::new();
        }
        Ok(())
    }

    /// After a write: keeps writable interest only while bytes are queued, and shuts the
    /// write side of a `closing` connection once its last bytes are out.
    pub fn after_write(
        &mut self,
        registry: &Registry,
        token: Token,
        closing: bool,
    ) -> io::Result<()> {
        let want_writable = !self.queued.is_empty();
        if want_writable != self.writable_interest {
            let interest = if want_writable {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            registry.reregister(&mut self.stream, token, interest)?;
            self.writable_interest = want_writable;
        }
        if !want_writable && closing && !self.write_shut {
            self.write_shut = true;
            self.stream.shutdown(Shutdown::Write)?;
        }
        Ok(())
    }

    /// Whether writable interest is not what the queue asks for ([`Socket::after_write`] due).
    pub fn interest_stale(&self) -> bool {
        self.queued.is_empty() == self.writable_interest
    }
}

/// Accepts every pending connection into `conns` (slot numbers as tokens), each made by `make`
/// around its socket, registered for input.
pub fn accept_all<T>(
    listener: &TcpListener,
    registry: &Registry,
    conns: &mut Slab<T>,
    make: impl Fn(Socket) -> T,
) {
    loop {
        match listener.accept() {
            Ok((mut stream, _)) => {
                let _ = stream.set_nodelay(true);
                let entry = conns.vacant_entry();
                let token = Token(entry.key());
                if registry
                    .register(&mut stream, token, Interest::READABLE)
                    .is_err()
                {
                    continue;
                }
                entry.insert(make(Socket {
                    stream,
                    queued: Vec::new(),
                    writable_interest: false,
                    write_shut: false,
                }));
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            // Gone before it was accepted, or out of descriptors: the next readiness event.
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rfc_example_key_is_accepted() {
        // RFC 6455 §1.3's example key and accept value.
        let head =
            b"GET / HTTP/1.1\r\nHost: x\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\nrest";
        let Upgrade::Accept { response, len } = upgrade(head) else {
            panic!("not accepted");
        };
        assert_eq!(len, head.len() - 4);
        let text = String::from_utf8(response).expect("ASCII");
        assert!(text.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    }

    #[test]
    fn headers_round_trip() {
        for len in [0u64, 125, 126, 65535, 65536] {
            let mut out = Vec::new();
            push_header(&mut out, 0x81, len);
            let h = parse_header(&out).expect("complete");
            assert_eq!(
                (h.b0, h.len, h.key, h.header_len),
                (0x81, len, None, out.len())
            );
        }
    }
}
