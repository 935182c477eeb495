//! The byte stream under a client connection: plain TCP for `ws://`, TLS over TCP for
//! `wss://` (feature `tls`). It comes in two halves, so that one thread can block reading
//! while others send: the write half is shared behind a mutex (whole frames never
//! interleave), the read half belongs to the [`Client`](super::Client).

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{ClientError, TlsOptions, WsUrl};

/// The write half, shared by the client and its [`ClientWriter`](super::ClientWriter)s.
pub(super) type SharedWriter = Arc<Mutex<WriteHalf>>;

/// What the client reads from.
pub(super) enum ReadHalf {
    /// `ws://`.
    Plain(TcpStream),
    /// `wss://`: decrypted bytes.
    #[cfg(feature = "tls")]
    Tls(super::tls::TlsReader),
}

/// What the client writes to.
pub(super) enum WriteHalf {
    /// `ws://`.
    Plain(TcpStream),
    /// `wss://`: bytes are encrypted on the way.
    #[cfg(feature = "tls")]
    Tls(super::tls::TlsWriter),
}

/// Connects to the first of `authority`'s addresses that answers, giving each `timeout`
/// (`localhost` may resolve to `::1` first, where nothing listens).
pub(super) fn connect_timeout(
    authority: &str,
    timeout: Duration,
) -> Result<TcpStream, ClientError> {
    let mut failure = None;
    for addr in authority.to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(stream) => return Ok(stream),
            Err(e) => failure = Some(e),
        }
    }
    Err(failure.map_or_else(|| ClientError::Url(authority.to_owned()), ClientError::Io))
}

/// Splits a connected socket into halves; for `wss://` after the TLS handshake, which checks
/// the server's certificate against `url`'s host as `tls` says.
pub(super) fn open(
    stream: TcpStream,
    url: &WsUrl,
    tls: &TlsOptions,
) -> Result<(ReadHalf, SharedWriter), ClientError> {
    if !url.secure {
        let writer = Arc::new(Mutex::new(WriteHalf::Plain(stream.try_clone()?)));
        return Ok((ReadHalf::Plain(stream), writer));
    }
    #[cfg(feature = "tls")]
    {
        let (reader, writer) = super::tls::handshake(stream, url.host(), tls)?;
        Ok((ReadHalf::Tls(reader), writer))
    }
    #[cfg(not(feature = "tls"))]
    {
        let _ = tls;
        Err(ClientError::Tls(
            "this wsloop was built without the `tls` feature (no wss://)".into(),
        ))
    }
}

impl ReadHalf {
    /// How long a read may block (`None`: forever); a read that times out fails with
    /// `WouldBlock` or `TimedOut` and loses nothing.
    pub(super) fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            ReadHalf::Plain(s) => s.set_read_timeout(timeout),
            #[cfg(feature = "tls")]
            ReadHalf::Tls(s) => s.set_read_timeout(timeout),
        }
    }
}

impl Read for ReadHalf {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            ReadHalf::Plain(s) => s.read(buf),
            #[cfg(feature = "tls")]
            ReadHalf::Tls(s) => s.read(buf),
        }
    }
}

impl Write for WriteHalf {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            WriteHalf::Plain(s) => s.write(buf),
            #[cfg(feature = "tls")]
            WriteHalf::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            WriteHalf::Plain(s) => s.flush(),
            #[cfg(feature = "tls")]
            WriteHalf::Tls(s) => s.flush(),
        }
    }
}
