//! A client connection's byte stream on its non-blocking socket: plain for `ws://`, TLS for
//! `wss://` (a rustls `ClientConnection` fed from and draining into the same socket, as in
//! rustls's mio examples). The driver reads and writes both the same way: `WouldBlock` means
//! "wait for the next readiness edge".

use std::io::{self, Read, Write};
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};

use wsloop::client::tls::{client_config, server_name};
use wsloop::client::TlsOptions;

/// What every `wss://` connection of a run shares: the configuration (trusted CAs, or none
/// checked) and the name the server's certificate must hold.
#[derive(Clone, Debug)]
pub struct TlsTarget {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

impl TlsTarget {
    /// For a server at `host` (an IPv4 address or `localhost`), checked as `options` say.
    pub fn new(host: &str, options: &TlsOptions) -> Result<TlsTarget, String> {
        Ok(TlsTarget {
            config: client_config(options).map_err(|e| e.to_string())?,
            name: server_name(host).map_err(|e| e.to_string())?,
        })
    }
}

/// A connection's socket, with TLS on it or not.
#[derive(Debug)]
pub enum Stream {
    /// `ws://`.
    Plain(TcpStream),
    /// `wss://` (boxed: rustls's state is a few hundred bytes a plain connection need not
    /// carry).
    Tls(Box<TlsStream>),
}

/// A socket and the TLS state that encrypts what goes over it.
#[derive(Debug)]
pub struct TlsStream {
    socket: TcpStream,
    tls: ClientConnection,
}

impl Stream {
    /// `socket` as it is, or with a TLS client for `tls` on it (the handshake starts with the
    /// first write).
    pub fn new(socket: TcpStream, tls: Option<&TlsTarget>) -> io::Result<Stream> {
        Ok(match tls {
            None => Stream::Plain(socket),
            Some(target) => {
                let tls = ClientConnection::new(Arc::clone(&target.config), target.name.clone())
                    .map_err(io::Error::other)?;
                Stream::Tls(Box::new(TlsStream { socket, tls }))
            }
        })
    }

    /// The socket, for the poll's registry and the connect check.
    pub fn socket(&mut self) -> &mut TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => &mut s.socket,
        }
    }

    /// Whether a read that returned less than asked emptied the socket. Not under TLS: one
    /// socket read can hold more records than the plaintext asked for, so reading goes on
    /// until `WouldBlock` (with edge-triggered readiness, bytes left behind raise no event).
    pub fn short_read_drains(&self) -> bool {
        matches!(self, Stream::Plain(_))
    }

    /// Writes the TLS records still waiting (handshake messages, encrypted frames) as far as
    /// the socket takes them; the rest goes at the next writable edge.
    pub fn send_pending(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(_) => Ok(()),
            Stream::Tls(s) => s.send_records(),
        }
    }
}

impl TlsStream {
    fn send_records(&mut self) -> io::Result<()> {
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut self.socket) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let s = match self {
            Stream::Plain(s) => return s.read(buf),
            Stream::Tls(s) => s,
        };
        loop {
            match s.tls.reader().read(buf) {
                // Ok(0): the server's close_notify.
                Ok(n) => return Ok(n),
                // TCP closed without a close_notify: the WebSocket layer sees any cut (a frame
                // left incomplete, no close frame), so it is the end like a plain FIN.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            // Nothing decrypted: more records from the socket (WouldBlock when it is empty).
            s.tls.read_tls(&mut s.socket)?;
            s.tls
                .process_new_packets()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            // The handshake's next flight, or a key update's answer.
            s.send_records()?;
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let s = match self {
            Stream::Plain(s) => return s.write(buf),
            Stream::Tls(s) => s,
        };
        s.send_records()?;
        // Taken into rustls's bounded buffer (before the handshake is done, too: it goes out
        // encrypted once the handshake completes).
        let taken = s.tls.writer().write(buf)?;
        s.send_records()?;
        match taken {
            0 => Err(io::ErrorKind::WouldBlock.into()),
            n => Ok(n),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_pending()
    }
}
