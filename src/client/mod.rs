//! A small blocking WebSocket client on `std::net`, driving the same protocol core as the
//! server (in the client role: frames masked with fresh keys, §5.3), over plain TCP
//! (`ws://`) or TLS (`wss://`, feature `tls`).
//!
//! Used by `wsloop client`, the load generator and tests.

#[cfg(feature = "cli")]
pub mod cli;
#[cfg(feature = "cli")]
mod recover;
#[cfg(feature = "tls")]
pub mod tls;
mod transport;

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::proto::client_handshake::{self, Response, MAX_RESPONSE_HEAD};
use crate::proto::mask::MaskKeys;
use crate::proto::{Connection, Event, Limits, MessageEncoder, MessageKind, ProtocolError};
use transport::{ReadHalf, SharedWriter};

/// Why a client operation failed.
#[derive(Debug)]
pub enum ClientError {
    /// The URL is not `ws://host[:port][/path]` or `wss://host[:port][/path]`.
    Url(String),
    /// The socket failed.
    Io(io::Error),
    /// TLS could not be set up: the server's certificate was refused (expired, for another
    /// name, from an unknown CA), the handshake failed, or the CA file is unusable; or this
    /// build has no TLS. One line, for people.
    Tls(String),
    /// The server refused the upgrade or answered something else than a valid 101.
    Handshake(String),
    /// The server broke the protocol.
    Protocol(ProtocolError),
    /// The connection is closed.
    Closed,
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Url(u) => write!(
                f,
                "invalid URL {u:?} (want ws://host[:port]/path or wss://host[:port]/path)"
            ),
            ClientError::Io(e) => write!(f, "{e}"),
            ClientError::Tls(why) => write!(f, "TLS: {why}"),
            ClientError::Handshake(why) => write!(f, "handshake failed: {why}"),
            ClientError::Protocol(e) => write!(f, "protocol error: {e}"),
            ClientError::Closed => f.write_str("connection closed"),
        }
    }
}

impl std::error::Error for ClientError {}

impl From<io::Error> for ClientError {
    fn from(e: io::Error) -> Self {
        ClientError::Io(e)
    }
}

/// A message or control frame received by the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Received {
    /// A text message.
    Text(String),
    /// A binary message.
    Binary(Vec<u8>),
    /// A ping (already answered).
    Ping(Vec<u8>),
    /// A pong.
    Pong(Vec<u8>),
    /// The server's close frame: code and reason.
    Close(Option<u16>, String),
}

/// The parts of a `ws://` or `wss://` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WsUrl {
    /// `wss://`: the connection runs over TLS (RFC 6455 §3).
    pub secure: bool,
    /// `host:port` to connect to (port 80, or 443 for `wss://`, when absent).
    pub authority: String,
    /// The request target, `/` when absent.
    pub path: String,
}

impl WsUrl {
    /// Parses `ws://host[:port][/path]` or `wss://host[:port][/path]` (RFC 6455 §3).
    pub fn parse(url: &str) -> Result<WsUrl, ClientError> {
        let (secure, rest) = match (url.strip_prefix("ws://"), url.strip_prefix("wss://")) {
            (Some(rest), _) => (false, rest),
            (_, Some(rest)) => (true, rest),
            _ => return Err(ClientError::Url(url.to_owned())),
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() {
            return Err(ClientError::Url(url.to_owned()));
        }
        let has_port = match authority.rfind(':') {
            Some(i) => !authority[i..].contains(']'),
            None => false,
        };
        let authority = match (has_port, secure) {
            (true, _) => authority.to_owned(),
            (false, false) => format!("{authority}:80"),
            (false, true) => format!("{authority}:443"),
        };
        let path = if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_owned()
        };
        Ok(WsUrl {
            secure,
            authority,
            path,
        })
    }

    /// The host without the port (and an IPv6 address without its brackets): the name the
    /// server's certificate must be valid for.
    pub fn host(&self) -> &str {
        let host = self
            .authority
            .rsplit_once(':')
            .map_or(self.authority.as_str(), |(host, _)| host);
        host.trim_start_matches('[').trim_end_matches(']')
    }
}

/// How a `wss://` connection checks the server's certificate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// A PEM file of CA certificates to trust *instead of* the system's (a private CA, or
    /// test certificates); `None`: the system's trusted CAs.
    pub ca_file: Option<PathBuf>,
    /// Accept whatever certificate the server shows, for any name (self-signed test setups
    /// only: the connection is encrypted but the server is not authenticated).
    pub insecure: bool,
}

/// Options for [`Client::connect_with`].
#[derive(Clone, Debug, Default)]
pub struct ClientOptions {
    /// Extra request header lines (`Name: value`), e.g. `Authorization: Bearer x`.
    pub headers: Vec<String>,
    /// Subprotocols to offer.
    pub protocols: Vec<String>,
    /// Connect and read timeout (`None`: block).
    pub timeout: Option<Duration>,
    /// Largest message accepted from the server (default 64 MiB).
    pub max_message: Option<u64>,
    /// Certificate checks for `wss://`.
    pub tls: TlsOptions,
    /// Offer permessage-deflate (RFC 7692); what the server agreed to is then
    /// [`Client::deflate`], and messages are compressed and inflated as agreed.
    #[cfg(feature = "deflate")]
    pub deflate: Option<crate::proto::extension::DeflateOffer>,
}

/// A connected WebSocket client.
pub struct Client {
    /// The read side.
    stream: ReadHalf,
    /// The write side, shared with [`ClientWriter`]s so frames never interleave.
    writer: SharedWriter,
    /// Frames data messages (masks, compression), shared with [`ClientWriter`]s: with
    /// permessage-deflate's context takeover there is one compressor per connection.
    encoder: Arc<Mutex<MessageEncoder>>,
    conn: Connection,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    protocol: Option<String>,
}

fn random_u64() -> u64 {
    RandomState::new().build_hasher().finish()
}

impl Client {
    /// Connects and performs the opening handshake.
    pub fn connect(url: &str) -> Result<Client, ClientError> {
        Client::connect_with(url, &ClientOptions::default())
    }

    /// Connects with options.
    pub fn connect_with(url: &str, options: &ClientOptions) -> Result<Client, ClientError> {
        let url = WsUrl::parse(url)?;
        let stream = match options.timeout {
            Some(t) => transport::connect_timeout(&url.authority, t)?,
            None => TcpStream::connect(&url.authority)?,
        };
        stream.set_read_timeout(options.timeout)?;
        stream.set_nodelay(true)?;
        Client::handshake(stream, &url, options)
    }

    /// Performs the opening handshake for `url` on a socket the caller connected (e.g. from
    /// a chosen source address).
    pub fn handshake_on(
        stream: TcpStream,
        url: &str,
        options: &ClientOptions,
    ) -> Result<Client, ClientError> {
        stream.set_read_timeout(options.timeout)?;
        stream.set_nodelay(true)?;
        Client::handshake(stream, &WsUrl::parse(url)?, options)
    }

    fn handshake(
        stream: TcpStream,
        url: &WsUrl,
        options: &ClientOptions,
    ) -> Result<Client, ClientError> {
        let (mut stream, writer) = transport::open(stream, url, &options.tls)?;
        let mut nonce = [0u8; 16];
        nonce[..8].copy_from_slice(&random_u64().to_ne_bytes());
        nonce[8..].copy_from_slice(&random_u64().to_ne_bytes());
        let request = client_handshake::request(
            &url.authority,
            &url.path,
            nonce,
            &options.protocols,
            &options.headers,
        );
        #[cfg(feature = "deflate")]
        let request = match &options.deflate {
            Some(offer) => request.with_deflate(offer.clone()),
            None => request,
        };
        lock(&writer)?.write_all(&request.bytes)?;

        let mut buf = vec![0u8; MAX_RESPONSE_HEAD + 1];
        let mut end = 0;
        let (head_len, protocol, conn) = loop {
            let n = stream.read(&mut buf[end..])?;
            end += n;
            match client_handshake::check_response(&buf[..end], &request) {
                Response::Accepted {
                    head_len,
                    protocol,
                    #[cfg(feature = "deflate")]
                    deflate,
                } => {
                    let limits = Limits::with_max_message(
                        options.max_message.unwrap_or(Limits::default().max_message),
                    );
                    let conn = Connection::new_client(limits, MaskKeys::from_os());
                    #[cfg(feature = "deflate")]
                    let conn = match deflate {
                        Some(agreed) => conn.with_deflate(agreed),
                        None => conn,
                    };
                    break (head_len, protocol, conn);
                }
                Response::Refused(why) => return Err(ClientError::Handshake(why)),
                Response::Partial if n == 0 || end == buf.len() => {
                    return Err(ClientError::Handshake(
                        "connection closed during handshake".into(),
                    ))
                }
                Response::Partial => {}
            }
        };
        Ok(Client {
            writer,
            encoder: Arc::new(Mutex::new(conn.encoder(MaskKeys::from_os()))),
            stream,
            conn,
            buf,
            start: head_len,
            end,
            protocol,
        })
    }

    /// The subprotocol the server chose.
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    /// What was agreed for permessage-deflate (`None`: not offered, or declined).
    #[cfg(feature = "deflate")]
    pub fn deflate(&self) -> Option<&crate::proto::extension::Negotiated> {
        self.conn.deflate()
    }

    /// Sets the read timeout (`None`: block).
    pub fn set_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.stream.set_read_timeout(timeout)
    }

    /// Sends a text message.
    pub fn send_text(&mut self, text: &str) -> Result<(), ClientError> {
        self.send(MessageKind::Text, text.as_bytes())
    }

    /// Sends a binary message.
    pub fn send_binary(&mut self, data: &[u8]) -> Result<(), ClientError> {
        self.send(MessageKind::Binary, data)
    }

    /// Sends a data message in one frame (compressed if agreed and worth it).
    pub fn send(&mut self, kind: MessageKind, data: &[u8]) -> Result<(), ClientError> {
        if !self.conn.is_open() {
            return Err(ClientError::Closed);
        }
        write_message(&self.encoder, &self.writer, kind, data)
    }

    /// Sends a ping (at most 125 bytes of payload, RFC 6455 §5.5).
    pub fn ping(&mut self, payload: &[u8]) -> Result<(), ClientError> {
        if !self.conn.is_open() {
            return Err(ClientError::Closed);
        }
        if !self.conn.ping(payload) {
            return Err(ClientError::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a ping payload is at most 125 bytes",
            )));
        }
        self.flush_control()
    }

    /// A handle that sends data messages from another thread while this one receives.
    pub fn writer(&self) -> ClientWriter {
        ClientWriter {
            stream: Arc::clone(&self.writer),
            encoder: Arc::clone(&self.encoder),
        }
    }

    /// Starts the closing handshake; [`recv`](Self::recv) then returns the server's close.
    pub fn close(&mut self, code: u16, reason: &str) -> Result<(), ClientError> {
        self.conn.close(code, reason, Instant::now());
        self.flush_control()
    }

    fn flush_control(&mut self) -> Result<(), ClientError> {
        while let Some(frame) = self.conn.poll_transmit() {
            lock(&self.writer)?.write_all(frame.as_bytes())?;
        }
        Ok(())
    }

    /// Waits for the next message, control frame or close. Pings are answered automatically.
    pub fn recv(&mut self) -> Result<Received, ClientError> {
        loop {
            let result = self
                .conn
                .poll_event(&mut self.buf[self.start..self.end], Instant::now());
            let (used, received) = match result {
                Err(e) => {
                    self.flush_control()?;
                    return Err(ClientError::Protocol(e));
                }
                Ok((used, event)) => (used, event.map(to_received)),
            };
            self.start += used;
            self.flush_control()?;
            if let Some(received) = received {
                return Ok(received);
            }
            if self.conn.is_closed() {
                return Err(ClientError::Closed);
            }
            if self.start == self.end {
                self.start = 0;
                self.end = 0;
            } else if self.end == self.buf.len() {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            let n = self.stream.read(&mut self.buf[self.end..])?;
            if n == 0 {
                return Err(ClientError::Closed);
            }
            self.end += n;
        }
    }

    /// Waits for the next text or binary message, skipping control frames; a close is an error.
    pub fn recv_message(&mut self) -> Result<Received, ClientError> {
        loop {
            match self.recv()? {
                Received::Ping(_) | Received::Pong(_) => {}
                Received::Close(..) => return Err(ClientError::Closed),
                message => return Ok(message),
            }
        }
    }
}

/// Sends data messages on a [`Client`]'s connection from another thread.
pub struct ClientWriter {
    stream: SharedWriter,
    encoder: Arc<Mutex<MessageEncoder>>,
}

impl ClientWriter {
    /// Sends a data message in one frame (compressed if agreed and worth it).
    pub fn send(&mut self, kind: MessageKind, data: &[u8]) -> Result<(), ClientError> {
        write_message(&self.encoder, &self.stream, kind, data)
    }

    /// Sends a text message.
    pub fn send_text(&mut self, text: &str) -> Result<(), ClientError> {
        self.send(MessageKind::Text, text.as_bytes())
    }

    /// Sends a binary message.
    pub fn send_binary(&mut self, data: &[u8]) -> Result<(), ClientError> {
        self.send(MessageKind::Binary, data)
    }
}

fn lock<T>(shared: &Mutex<T>) -> Result<std::sync::MutexGuard<'_, T>, ClientError> {
    shared
        .lock()
        .map_err(|_| ClientError::Io(io::Error::other("writer lock poisoned")))
}

/// Encodes one message and writes its frame. The encoder stays locked until the frame is
/// written: with context takeover, messages must reach the peer in the order they were
/// compressed (RFC 7692 §7.2.1).
fn write_message(
    encoder: &Mutex<MessageEncoder>,
    stream: &SharedWriter,
    kind: MessageKind,
    payload: &[u8],
) -> Result<(), ClientError> {
    let mut encoder = lock(encoder)?;
    let mut frame = Vec::with_capacity(payload.len() + 14);
    encoder.encode(kind, payload, &mut frame);
    lock(stream)?.write_all(&frame)?;
    Ok(())
}

fn to_received(event: Event<'_>) -> Received {
    match event {
        Event::Message(m) => match m.as_text() {
            Some(text) => Received::Text(text.to_owned()),
            None => Received::Binary(m.data.to_vec()),
        },
        Event::Ping(p) => Received::Ping(p.to_vec()),
        Event::Pong(p) => Received::Pong(p.to_vec()),
        Event::Close(c) => Received::Close(c.code, c.reason.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = WsUrl::parse("ws://127.0.0.1:9001/chat?x=1").unwrap();
        assert_eq!(
            (u.authority.as_str(), u.path.as_str()),
            ("127.0.0.1:9001", "/chat?x=1")
        );
        let u = WsUrl::parse("ws://localhost").unwrap();
        assert_eq!(
            (u.authority.as_str(), u.path.as_str()),
            ("localhost:80", "/")
        );
        let u = WsUrl::parse("ws://[::1]:8080").unwrap();
        assert_eq!(u.authority, "[::1]:8080");
        let u = WsUrl::parse("ws://[::1]/x").unwrap();
        assert_eq!(u.authority, "[::1]:80");
        assert!(!u.secure);
        assert_eq!(u.host(), "::1");
        let u = WsUrl::parse("wss://chat.example.org/ws").unwrap();
        assert_eq!(
            (u.secure, u.authority.as_str(), u.host(), u.path.as_str()),
            (true, "chat.example.org:443", "chat.example.org", "/ws")
        );
        let u = WsUrl::parse("wss://127.0.0.1:8443?x").unwrap();
        assert_eq!(
            (u.authority.as_str(), u.host(), u.path.as_str()),
            ("127.0.0.1:8443", "127.0.0.1", "/?x")
        );
        assert!(WsUrl::parse("http://x").is_err());
        assert!(WsUrl::parse("https://x").is_err());
        assert!(WsUrl::parse("ws://").is_err());
        assert!(WsUrl::parse("wss://").is_err());
    }
}
