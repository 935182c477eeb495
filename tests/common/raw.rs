//! A raw, blocking WebSocket client for tests: it writes whatever bytes a test asks for (any
//! FIN/RSV/opcode/mask/length combination, valid or not, whole or in chunks with pauses) and
//! reads the server's frames back with bounded waits, checking what RFC 6455 requires of every
//! server frame (§5.1: unmasked; §5.2: minimal length encoding).
//!
//! Nothing here trusts the code under test: the accept key is computed with the `sha1` and
//! `base64` crates directly, and frames are encoded and decoded by hand.
//!
//! Typical use:
//!
//! ```ignore
//! let mut c = RawClient::open(server.addr);
//! c.send(&OutFrame::text("hi")).unwrap();
//! let echo = c.read_frame().unwrap();
//! assert_eq!((echo.opcode, &echo.payload[..]), (opcode::TEXT, &b"hi"[..]));
//! c.send(&OutFrame::close(1000, "")).unwrap();
//! assert_eq!(c.expect_close(false), Some(1000));
//! ```

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use sha1::{Digest, Sha1};

/// How long one read (a whole frame, the handshake answer, the end of the stream) may take
/// unless the test sets another wait with [`RawClient::set_timeout`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest HTTP answer head the client accepts before giving up.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// §1.3: the GUID appended to the key before hashing.
const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Opcode values of RFC 6455 §5.2 (raw `u8` so that tests can also send reserved ones).
pub mod opcode {
    /// 0x0: continuation.
    pub const CONTINUATION: u8 = 0x0;
    /// 0x1: text.
    pub const TEXT: u8 = 0x1;
    /// 0x2: binary.
    pub const BINARY: u8 = 0x2;
    /// 0x8: close.
    pub const CLOSE: u8 = 0x8;
    /// 0x9: ping.
    pub const PING: u8 = 0x9;
    /// 0xA: pong.
    pub const PONG: u8 = 0xA;
}

/// The `Sec-WebSocket-Accept` value for `key` (§4.2.2 step 5.4), computed independently of
/// the crate under test.
pub fn accept_key(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(WEBSOCKET_GUID.as_bytes());
    BASE64.encode(sha.finalize())
}

/// A fresh pseudo-random 32-bit value (deterministic per process; tests need variety, not
/// secrecy). Never returns 0.
fn next_random() -> u32 {
    static COUNTER: AtomicU32 = AtomicU32::new(1);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // A multiplicative hash spreads consecutive counters over all bytes.
    let x = n.wrapping_mul(0x9E37_79B1).rotate_left(13) ^ 0x5A5A_A5A5;
    if x == 0 {
        1
    } else {
        x
    }
}

/// XORs `data` with `key`, the key starting at byte `offset` of the payload (§5.3).
pub fn apply_mask(data: &mut [u8], key: [u8; 4], offset: usize) {
    let mut rotated = [0u8; 4];
    for (i, r) in rotated.iter_mut().enumerate() {
        *r = key[(offset + i) % 4];
    }
    let word = u32::from_ne_bytes(rotated);
    let mut chunks = data.chunks_exact_mut(4);
    for chunk in &mut chunks {
        let v = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]) ^ word;
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= rotated[i];
    }
}

/// Renders bytes as hex, eliding the middle of long runs, for failure messages.
pub fn hex(bytes: &[u8]) -> String {
    const SHOWN: usize = 48;
    let render = |b: &[u8]| {
        b.iter()
            .map(|x| format!("{x:02x}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    if bytes.len() <= SHOWN {
        format!("[{}]", render(bytes))
    } else {
        format!(
            "[{} ... {}] ({} bytes)",
            render(&bytes[..SHOWN / 2]),
            render(&bytes[bytes.len() - 8..]),
            bytes.len()
        )
    }
}

/// How a frame's length is written on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LengthForm {
    /// The shortest form (§5.2 requires it).
    Minimal,
    /// Always the 16-bit form (126), even for short payloads.
    Extended16,
    /// Always the 64-bit form (127).
    Extended64,
}

/// A frame for the client to send. Built valid by default (FIN set, RSV 0, masked with a fresh
/// key, minimal length); every field can be made wrong on purpose.
#[derive(Clone, PartialEq, Eq)]
pub struct OutFrame {
    /// FIN bit.
    pub fin: bool,
    /// RSV1-3 as a 3-bit number (RSV1 is the highest bit: 4).
    pub rsv: u8,
    /// Any 4-bit opcode, reserved ones included.
    pub opcode: u8,
    /// The masking key, or `None` to send the frame unmasked (a violation for a client).
    pub mask: Option<[u8; 4]>,
    /// The payload as the application sees it (masked while encoding).
    pub payload: Vec<u8>,
    /// A length to declare instead of the payload's real length (to lie about it).
    pub declared_len: Option<u64>,
    /// How to encode the length field.
    pub length_form: LengthForm,
}

impl OutFrame {
    /// A final, masked frame with this opcode and payload.
    pub fn new(opcode: u8, payload: impl Into<Vec<u8>>) -> OutFrame {
        OutFrame {
            fin: true,
            rsv: 0,
            opcode,
            mask: Some(next_random().to_ne_bytes()),
            payload: payload.into(),
            declared_len: None,
            length_form: LengthForm::Minimal,
        }
    }

    /// A text frame.
    pub fn text(payload: impl Into<Vec<u8>>) -> OutFrame {
        OutFrame::new(opcode::TEXT, payload)
    }

    /// A binary frame.
    pub fn binary(payload: impl Into<Vec<u8>>) -> OutFrame {
        OutFrame::new(opcode::BINARY, payload)
    }

    /// A continuation frame.
    pub fn continuation(payload: impl Into<Vec<u8>>) -> OutFrame {
        OutFrame::new(opcode::CONTINUATION, payload)
    }

    /// A ping.
    pub fn ping(payload: impl Into<Vec<u8>>) -> OutFrame {
        OutFrame::new(opcode::PING, payload)
    }

    /// A pong.
    pub fn pong(payload: impl Into<Vec<u8>>) -> OutFrame {
        OutFrame::new(opcode::PONG, payload)
    }

    /// A close frame with a status code and a reason given as raw bytes (so that invalid
    /// UTF-8 can be sent).
    pub fn close(code: u16, reason: impl AsRef<[u8]>) -> OutFrame {
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(reason.as_ref());
        OutFrame::new(opcode::CLOSE, payload)
    }

    /// A close frame with an empty payload (no status code).
    pub fn close_empty() -> OutFrame {
        OutFrame::new(opcode::CLOSE, Vec::new())
    }

    /// Sets FIN.
    pub fn fin(mut self, fin: bool) -> OutFrame {
        self.fin = fin;
        self
    }

    /// Sets the three RSV bits (`0..=7`).
    pub fn rsv(mut self, rsv: u8) -> OutFrame {
        assert!(rsv <= 7, "RSV is three bits");
        self.rsv = rsv;
        self
    }

    /// Sends the frame without a mask (clients must mask, §5.1).
    pub fn unmasked(mut self) -> OutFrame {
        self.mask = None;
        self
    }

    /// Uses this masking key.
    pub fn mask_key(mut self, key: [u8; 4]) -> OutFrame {
        self.mask = Some(key);
        self
    }

    /// Declares this payload length instead of the real one.
    pub fn declared_len(mut self, len: u64) -> OutFrame {
        self.declared_len = Some(len);
        self
    }

    /// Encodes the length in this form.
    pub fn length_form(mut self, form: LengthForm) -> OutFrame {
        self.length_form = form;
        self
    }

    /// The header bytes: 2, plus 2 or 8 of extended length, plus 4 of mask key.
    pub fn header(&self) -> Vec<u8> {
        let len = self.declared_len.unwrap_or(self.payload.len() as u64);
        let mut h = Vec::with_capacity(14);
        h.push((u8::from(self.fin) << 7) | (self.rsv << 4) | (self.opcode & 0x0F));
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        let form = match self.length_form {
            LengthForm::Minimal if len <= 125 => None,
            LengthForm::Minimal if len <= 0xFFFF => Some(LengthForm::Extended16),
            LengthForm::Minimal => Some(LengthForm::Extended64),
            other => Some(other),
        };
        match form {
            None => h.push(mask_bit | len as u8),
            Some(LengthForm::Extended16) => {
                h.push(mask_bit | 126);
                h.extend_from_slice(&(len as u16).to_be_bytes());
            }
            Some(_) => {
                h.push(mask_bit | 127);
                h.extend_from_slice(&len.to_be_bytes());
            }
        }
        if let Some(key) = self.mask {
            h.extend_from_slice(&key);
        }
        h
    }

    /// How many bytes the header takes (the payload starts there in [`encode`](Self::encode)).
    pub fn header_len(&self) -> usize {
        self.header().len()
    }

    /// The frame as it goes on the wire: header, then the (masked) payload.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.header();
        out.reserve(self.payload.len());
        let start = out.len();
        out.extend_from_slice(&self.payload);
        if let Some(key) = self.mask {
            apply_mask(&mut out[start..], key, 0);
        }
        out
    }
}

impl fmt::Debug for OutFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "OutFrame {{ fin: {}, rsv: {}, opcode: {:#x}, mask: {:?}, payload: {} }}",
            self.fin,
            self.rsv,
            self.opcode,
            self.mask,
            hex(&self.payload)
        )
    }
}

/// Encodes `frames` back to back, as one buffer for a single write.
pub fn encode_all(frames: &[OutFrame]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in frames {
        out.extend_from_slice(&f.encode());
    }
    out
}

/// Splits a message into frames of at most `size` payload bytes: the first with `first_opcode`,
/// the rest continuations, FIN on the last only (an empty message is one empty frame).
pub fn fragments(first_opcode: u8, payload: &[u8], size: usize) -> Vec<OutFrame> {
    assert!(size > 0, "fragment size must be positive");
    let pieces: Vec<&[u8]> = if payload.is_empty() {
        vec![&[][..]]
    } else {
        payload.chunks(size).collect()
    };
    let last = pieces.len() - 1;
    pieces
        .into_iter()
        .enumerate()
        .map(|(i, piece)| {
            let op = if i == 0 {
                first_opcode
            } else {
                opcode::CONTINUATION
            };
            OutFrame::new(op, piece).fin(i == last)
        })
        .collect()
}

/// A frame received from the server, unmasked.
#[derive(Clone, PartialEq, Eq)]
pub struct Frame {
    /// FIN bit.
    pub fin: bool,
    /// RSV1-3 as a 3-bit number.
    pub rsv: u8,
    /// The 4-bit opcode as sent.
    pub opcode: u8,
    /// The payload.
    pub payload: Vec<u8>,
}

impl Frame {
    /// For a close frame: the status code (`None` for an empty payload) and the reason bytes.
    /// Panics on a one-byte close payload, which no endpoint may send (§5.5.1).
    pub fn close_code(&self) -> (Option<u16>, &[u8]) {
        match self.payload.as_slice() {
            [] => (None, &[]),
            [_] => panic!("close frame with a 1-byte payload: {self:?}"),
            [hi, lo, reason @ ..] => (Some(u16::from_be_bytes([*hi, *lo])), reason),
        }
    }
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Frame {{ fin: {}, rsv: {}, opcode: {:#x}, payload: {} }}",
            self.fin,
            self.rsv,
            self.opcode,
            hex(&self.payload)
        )
    }
}

/// Why a read did not produce what was asked.
#[derive(Debug)]
pub enum ReadError {
    /// Nothing (or not enough) arrived within the wait; `partial` holds bytes already buffered.
    Timeout {
        /// Bytes buffered but not yet forming what was asked.
        partial: Vec<u8>,
    },
    /// The server closed the connection (read returned 0).
    Eof {
        /// Bytes buffered but not yet forming what was asked.
        partial: Vec<u8>,
    },
    /// The connection was reset (RST) or otherwise broke.
    Reset(io::Error),
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Timeout { partial } => {
                write!(f, "timed out; buffered bytes so far: {}", hex(partial))
            }
            ReadError::Eof { partial } => {
                write!(
                    f,
                    "server closed the connection; buffered bytes: {}",
                    hex(partial)
                )
            }
            ReadError::Reset(e) => write!(f, "connection broke: {e}"),
        }
    }
}

/// How the server ended the TCP connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpEnd {
    /// An orderly close: read returned 0 (FIN).
    Eof,
    /// A reset (RST), as happens when the server closes with unread bytes in its buffer.
    Reset,
}

/// Whether an I/O error means the peer tore the connection down.
fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::NotConnected
    )
}

/// Whether an I/O error is a read timeout.
/// Whether a read or write failed only because its wait ran out.
pub fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// What a raw client talks over: the TCP connection itself, or a TLS stream on it
/// (`tests/common/tls.rs`). Waits are set on the TCP socket underneath.
pub trait Wire: Read + Write + Send {
    /// The TCP socket (timeouts, options, clones for plain tests).
    fn tcp(&self) -> &TcpStream;
}

impl Wire for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

/// A blocking client over one TCP connection, with a bounded wait on every read and write.
pub struct RawClient {
    stream: Box<dyn Wire>,
    /// Bytes read from the socket but not yet consumed.
    buf: Vec<u8>,
    timeout: Duration,
}

impl RawClient {
    /// Connects over TCP only (no handshake), with `TCP_NODELAY` so that each write leaves
    /// as its own segment.
    pub fn connect_tcp(addr: SocketAddr) -> RawClient {
        RawClient::connect_wrapped(addr, |tcp| Box::new(tcp))
    }

    /// Connects over TCP (with `TCP_NODELAY`) and talks over what `wrap` makes of the
    /// socket (e.g. a TLS stream); no WebSocket handshake.
    pub fn connect_wrapped(
        addr: SocketAddr,
        wrap: impl FnOnce(TcpStream) -> Box<dyn Wire>,
    ) -> RawClient {
        let stream = TcpStream::connect_timeout(&addr, DEFAULT_TIMEOUT)
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        stream.set_nodelay(true).expect("TCP_NODELAY");
        RawClient::from_wire(wrap(stream))
    }

    /// A client over a connected stream; no WebSocket handshake.
    pub fn from_wire(stream: Box<dyn Wire>) -> RawClient {
        let mut client = RawClient {
            stream,
            buf: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
        };
        client.set_timeout(DEFAULT_TIMEOUT);
        client
    }

    /// Connects and completes the opening handshake on `/`.
    pub fn open(addr: SocketAddr) -> RawClient {
        let mut client = RawClient::connect_tcp(addr);
        client.handshake("/");
        client
    }

    /// The wait for each read and write from now on.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
        self.stream
            .tcp()
            .set_write_timeout(Some(timeout))
            .expect("set write timeout");
    }

    /// The current wait.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The TCP socket, for tests that need socket options or raw access.
    pub fn stream(&self) -> &TcpStream {
        self.stream.tcp()
    }

    /// Sends an upgrade request for `path` with a fresh key and checks the answer: status 101,
    /// `Upgrade: websocket`, `Connection: Upgrade` and the right `Sec-WebSocket-Accept`
    /// (§4.2.2, §4.1 client rules 1-4). Returns the response head.
    pub fn handshake(&mut self, path: &str) -> String {
        let mut nonce = [0u8; 16];
        for chunk in nonce.chunks_mut(4) {
            chunk.copy_from_slice(&next_random().to_ne_bytes());
        }
        let key = BASE64.encode(nonce);
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        self.send_raw(request.as_bytes())
            .expect("write upgrade request");
        let head = self
            .read_http_head()
            .unwrap_or_else(|e| panic!("handshake answer: {e}"));
        let mut lines = head.split("\r\n");
        let status = lines.next().unwrap_or_default();
        assert!(
            status.starts_with("HTTP/1.1 101"),
            "expected 101 Switching Protocols, got: {head:?}"
        );
        let header = |name: &str| -> Vec<String> {
            head.split("\r\n")
                .skip(1)
                .filter_map(|l| l.split_once(':'))
                .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
                .map(|(_, v)| v.trim().to_owned())
                .collect()
        };
        assert!(
            header("Upgrade")
                .iter()
                .any(|v| v.eq_ignore_ascii_case("websocket")),
            "101 without `Upgrade: websocket`: {head:?}"
        );
        assert!(
            header("Connection")
                .iter()
                .flat_map(|v| v.split(','))
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade")),
            "101 without `Connection: Upgrade`: {head:?}"
        );
        assert_eq!(
            header("Sec-WebSocket-Accept"),
            [accept_key(&key)],
            "wrong or missing Sec-WebSocket-Accept for key {key}: {head:?}"
        );
        head
    }

    /// Reads an HTTP response head up to and including the blank line; bytes after it stay
    /// buffered for [`read_frame`](Self::read_frame).
    pub fn read_http_head(&mut self) -> Result<String, ReadError> {
        let deadline = Instant::now() + self.timeout;
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head: Vec<u8> = self.buf.drain(..end + 4).collect();
                return Ok(String::from_utf8_lossy(&head[..end]).into_owned());
            }
            assert!(
                self.buf.len() <= MAX_RESPONSE_HEAD,
                "response head over {MAX_RESPONSE_HEAD} bytes: {}",
                hex(&self.buf)
            );
            self.read_more(deadline)?;
        }
    }

    /// Writes bytes as they are, in one `write_all`.
    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Writes bytes in chunks of `chop` bytes, one write each, sleeping `pause` between them.
    pub fn send_chopped(&mut self, bytes: &[u8], chop: usize, pause: Duration) -> io::Result<()> {
        assert!(chop > 0, "chop size must be positive");
        for (i, chunk) in bytes.chunks(chop).enumerate() {
            if i > 0 && !pause.is_zero() {
                std::thread::sleep(pause);
            }
            self.send_raw(chunk)?;
        }
        Ok(())
    }

    /// Encodes and writes one frame.
    pub fn send(&mut self, frame: &OutFrame) -> io::Result<()> {
        self.send_raw(&frame.encode())
    }

    /// Encodes frames back to back and writes them in one go.
    pub fn send_all(&mut self, frames: &[OutFrame]) -> io::Result<()> {
        self.send_raw(&encode_all(frames))
    }

    /// Reads once more from the socket into the buffer, waiting until `deadline` at most.
    fn read_more(&mut self, deadline: Instant) -> Result<(), ReadError> {
        let mut chunk = vec![0u8; 256 * 1024];
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(ReadError::Timeout {
                    partial: self.buf.clone(),
                });
            }
            self.stream
                .tcp()
                .set_read_timeout(Some(deadline - now))
                .expect("set read timeout");
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    return Err(ReadError::Eof {
                        partial: self.buf.clone(),
                    })
                }
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if is_timeout(&e) => continue,
                Err(e) if is_reset(&e) => return Err(ReadError::Reset(e)),
                Err(e) => panic!("read failed: {e}"),
            }
        }
    }

    /// Makes sure at least `n` bytes are buffered.
    fn fill(&mut self, n: usize, deadline: Instant) -> Result<(), ReadError> {
        while self.buf.len() < n {
            self.read_more(deadline)?;
        }
        Ok(())
    }

    /// Reads one frame within the wait. Panics if the server masked it (§5.1: "A server MUST
    /// NOT mask any frames") or did not use the minimal length encoding (§5.2).
    pub fn try_read_frame(&mut self) -> Result<Frame, ReadError> {
        let deadline = Instant::now() + self.timeout;
        self.fill(2, deadline)?;
        let (b0, b1) = (self.buf[0], self.buf[1]);
        assert_eq!(
            b1 & 0x80,
            0,
            "server sent a masked frame (RFC 6455 §5.1): {}",
            hex(&self.buf)
        );
        let (len, header_len) = match b1 & 0x7F {
            126 => {
                self.fill(4, deadline)?;
                let len = u64::from(u16::from_be_bytes([self.buf[2], self.buf[3]]));
                assert!(
                    len > 125,
                    "16-bit length form for {len} bytes (§5.2 minimal encoding)"
                );
                (len, 4)
            }
            127 => {
                self.fill(10, deadline)?;
                let mut be = [0u8; 8];
                be.copy_from_slice(&self.buf[2..10]);
                let len = u64::from_be_bytes(be);
                assert!(
                    len > 0xFFFF,
                    "64-bit length form for {len} bytes (§5.2 minimal encoding)"
                );
                (len, 10)
            }
            short => (u64::from(short), 2),
        };
        let total = header_len + usize::try_from(len).expect("frame length fits in memory");
        self.fill(total, deadline)?;
        let bytes: Vec<u8> = self.buf.drain(..total).collect();
        Ok(Frame {
            fin: b0 & 0x80 != 0,
            rsv: (b0 >> 4) & 0x07,
            opcode: b0 & 0x0F,
            payload: bytes[header_len..].to_vec(),
        })
    }

    /// Reads one frame; panics with what was seen if none arrives within the wait.
    pub fn read_frame(&mut self) -> Frame {
        self.try_read_frame()
            .unwrap_or_else(|e| panic!("expected a frame from the server: {e}"))
    }

    /// Asserts that nothing arrives for `quiet` (the server neither sends nor closes).
    pub fn expect_silence(&mut self, quiet: Duration) {
        assert!(
            self.buf.is_empty(),
            "unexpected bytes from the server: {}",
            hex(&self.buf)
        );
        match self.read_more(Instant::now() + quiet) {
            Err(ReadError::Timeout { .. }) => {}
            Ok(()) => panic!(
                "expected silence for {quiet:?}, but the server sent {}",
                hex(&self.buf)
            ),
            Err(e) => panic!("expected silence for {quiet:?}, but: {e}"),
        }
    }

    /// Reads the next frame, asserts it is a close frame with a valid UTF-8 reason, and
    /// returns its code (`None` for an empty close).
    pub fn read_close(&mut self) -> Option<u16> {
        let frame = self.read_frame();
        assert_eq!(
            frame.opcode,
            opcode::CLOSE,
            "expected a close frame, got {frame:?}"
        );
        assert!(
            frame.fin && frame.rsv == 0,
            "malformed close frame {frame:?}"
        );
        let (code, reason) = frame.close_code();
        assert!(
            std::str::from_utf8(reason).is_ok(),
            "close reason is not UTF-8 (§5.5.1): {frame:?}"
        );
        code
    }

    /// Answers a close frame the way a client does (§5.5.1): a close with the same code, or an
    /// empty close for an empty one. A failed write is ignored, since the server may have
    /// closed the connection already.
    pub fn reply_close(&mut self, code: Option<u16>) {
        let reply = match code {
            Some(code) => OutFrame::close(code, b""),
            None => OutFrame::close_empty(),
        };
        let _ = self.send(&reply);
    }

    /// The end of a connection the server closes: reads its close frame, answers it if
    /// `reply` (pass `false` when the client has sent its own close already), and asserts the
    /// server then closes TCP in order ([`expect_eof`](Self::expect_eof)). Returns the code.
    pub fn expect_close(&mut self, reply: bool) -> Option<u16> {
        let code = self.read_close();
        if reply {
            self.reply_close(code);
        }
        self.expect_eof();
        code
    }

    /// Asserts the server closes the TCP connection in order (read returns 0) within the wait;
    /// a reset, more bytes or no close at all fail.
    pub fn expect_eof(&mut self) {
        let end = self.expect_tcp_close();
        assert_eq!(
            end,
            TcpEnd::Eof,
            "server reset the connection instead of closing it in order"
        );
    }

    /// Waits for the server to close the TCP connection, and says how it did. Panics if the
    /// server sends anything more (no frame may follow a close, §5.5.1) or keeps the
    /// connection open past the wait.
    pub fn expect_tcp_close(&mut self) -> TcpEnd {
        assert!(
            self.buf.is_empty(),
            "bytes after the server's close frame: {}",
            hex(&self.buf)
        );
        let deadline = Instant::now() + self.timeout;
        match self.read_more(deadline) {
            Err(ReadError::Eof { .. }) => TcpEnd::Eof,
            Err(ReadError::Reset(_)) => TcpEnd::Reset,
            Err(ReadError::Timeout { .. }) => {
                panic!(
                    "server did not close the TCP connection within {:?}",
                    self.timeout
                )
            }
            Ok(()) => panic!("bytes after the server's close frame: {}", hex(&self.buf)),
        }
    }
}
