//! The stream between a connection's socket and the loop: the socket's bytes as they are, or
//! (feature `tls`) TLS records that rustls turns into plaintext and back. This is the only
//! place that knows which one a connection uses; the loop reads and writes plaintext.
//!
//! TLS is driven as in rustls' `tlsserver-mio` example, never owning the socket: a read
//! drains the plaintext rustls holds, then feeds it the socket's bytes (`read_tls`,
//! `process_new_packets`) until there is plaintext or the socket would block; a write
//! encrypts into rustls' bounded buffer and pushes records out (`write_tls`). What the socket
//! did not take stays in rustls and counts as output waiting, so writable interest, "drained"
//! and the FIN after the close all account for it.

use std::io::{self, IoSlice, Read, Write};

#[cfg(feature = "tls")]
use super::stats::TlsFailure;

/// A connection's stream: plain, or TLS over the socket `S` (a TCP socket, or the
/// simulation's in-memory pipe).
#[derive(Debug)]
pub(crate) struct Transport<S> {
    socket: S,
    #[cfg(feature = "tls")]
    tls: Option<Box<tls::Session>>,
}

impl<S: Read + Write> Transport<S> {
    /// Plain bytes over `socket`.
    pub(crate) fn plain(socket: S) -> Self {
        Transport {
            socket,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    /// TLS over `socket`, the server side of `session`.
    #[cfg(feature = "tls")]
    pub(crate) fn tls(socket: S, session: rustls::ServerConnection) -> Self {
        Transport {
            socket,
            tls: Some(Box::new(tls::Session::new(session))),
        }
    }

    /// The socket, to register it, shut it down or drop it.
    pub(crate) fn socket_mut(&mut self) -> &mut S {
        &mut self.socket
    }

    /// Whether a read that did not fill the buffer means the socket is empty. Not with TLS:
    /// rustls reads at most a few KiB of records at a time, and edge-triggered readiness
    /// will not come again for bytes still in the socket.
    pub(crate) fn short_read_drains(&self) -> bool {
        #[cfg(feature = "tls")]
        if self.tls.is_some() {
            return false;
        }
        true
    }

    /// Output waits below the loop's queue (TLS records the socket has not taken): the
    /// connection must be flushed.
    pub(crate) fn wants_write(&self) -> bool {
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            return tls.wants_write();
        }
        false
    }

    /// Writes what waits below the loop's queue. Returns whether nothing is left.
    pub(crate) fn flush_pending(&mut self) -> io::Result<bool> {
        #[cfg(feature = "tls")]
        if let Some(tls) = &mut self.tls {
            return tls.push(&mut self.socket);
        }
        Ok(true)
    }

    /// Ends the stream in the protocol before the FIN: TLS sends its close_notify (RFC 8446
    /// §6.1), once. Returns whether everything is written, so that the FIN may follow.
    pub(crate) fn close(&mut self) -> io::Result<bool> {
        #[cfg(feature = "tls")]
        if let Some(tls) = &mut self.tls {
            tls.close_notify();
            return tls.push(&mut self.socket);
        }
        Ok(true)
    }

    /// The TLS handshake has completed since the last call (reported once).
    pub(crate) fn take_handshake_completed(&mut self) -> bool {
        #[cfg(feature = "tls")]
        if let Some(tls) = &mut self.tls {
            return tls.take_handshake_completed();
        }
        false
    }

    /// A TLS handshake has started and not completed.
    pub(crate) fn is_handshaking(&self) -> bool {
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            return tls.is_handshaking();
        }
        false
    }
}

impl<S: Read + Write> Read for Transport<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        #[cfg(feature = "tls")]
        if let Some(tls) = &mut self.tls {
            let result = tls.read(&mut self.socket, buf);
            if let Err(e) = &result {
                if failure(e) == Some(TlsFailure::PlainHttp) {
                    // The client speaks plain HTTP: it can read only a plain answer.
                    self.tls = None;
                }
            }
            return result;
        }
        self.socket.read(buf)
    }
}

impl<S: Read + Write> Write for Transport<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        #[cfg(feature = "tls")]
        if let Some(tls) = &mut self.tls {
            return tls.write(&mut self.socket, &[IoSlice::new(buf)]);
        }
        self.socket.write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        #[cfg(feature = "tls")]
        if let Some(tls) = &mut self.tls {
            return tls.write(&mut self.socket, bufs);
        }
        self.socket.write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.flush_pending()? {
            true => Ok(()),
            false => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

/// Why a TLS handshake failed, if `error` is such a failure (as a read reports it).
#[cfg(feature = "tls")]
pub(crate) fn failure(error: &io::Error) -> Option<TlsFailure> {
    error
        .get_ref()
        .and_then(|e| e.downcast_ref::<tls::Failed>())
        .map(|f| f.class)
}

#[cfg(feature = "tls")]
mod tls {
    use std::fmt;
    use std::io::{self, IoSlice, Read, Write};

    use rustls::ServerConnection;

    use crate::server::stats::TlsFailure;

    /// TLS record content type of a handshake message (RFC 8446 §5.1): what a ClientHello
    /// starts with.
    const HANDSHAKE_RECORD: u8 = 0x16;

    /// A TLS failure, as the error of a read: its class and rustls' words.
    #[derive(Debug)]
    pub(super) struct Failed {
        pub(super) class: TlsFailure,
        detail: String,
    }

    impl fmt::Display for Failed {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "TLS handshake failed ({}): {}", self.class, self.detail)
        }
    }

    impl std::error::Error for Failed {}

    fn failed(class: TlsFailure, detail: impl fmt::Display) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidData,
            Failed {
                class,
                detail: detail.to_string(),
            },
        )
    }

    /// One connection's TLS state.
    #[derive(Debug)]
    pub(super) struct Session {
        conn: ServerConnection,
        /// The peer's first byte has been looked at.
        first_byte_seen: bool,
        /// The completed handshake has been reported.
        completion_reported: bool,
        /// Our close_notify is queued.
        closing: bool,
    }

    impl Session {
        pub(super) fn new(conn: ServerConnection) -> Self {
            Session {
                conn,
                first_byte_seen: false,
                completion_reported: false,
                closing: false,
            }
        }

        pub(super) fn wants_write(&self) -> bool {
            self.conn.wants_write()
        }

        pub(super) fn is_handshaking(&self) -> bool {
            self.conn.is_handshaking()
        }

        pub(super) fn take_handshake_completed(&mut self) -> bool {
            let done = !self.conn.is_handshaking() && !self.completion_reported;
            self.completion_reported |= done;
            done
        }

        pub(super) fn close_notify(&mut self) {
            if !std::mem::replace(&mut self.closing, true) {
                self.conn.send_close_notify();
            }
        }

        /// Plaintext into `buf`: what rustls holds, else what the socket's records decrypt
        /// to. `Ok(0)` is the end of the stream (close_notify, or the peer's FIN without it:
        /// a WebSocket message is framed with its length, so a cut stream cannot pass for a
        /// shorter message). `WouldBlock` once the socket is empty.
        pub(super) fn read<S: Read + Write>(
            &mut self,
            socket: &mut S,
            buf: &mut [u8],
        ) -> io::Result<usize> {
            loop {
                match self.conn.reader().read(buf) {
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                    Err(e) => return Err(e),
                }
                // Only now, with rustls' plaintext drained, may it read more records: its
                // received-plaintext buffer stays within its fixed bound.
                self.read_records(socket)?;
                if let Err(e) = self.conn.process_new_packets() {
                    let class = match e {
                        rustls::Error::AlertReceived(_) => TlsFailure::PeerAlert,
                        _ => TlsFailure::Protocol,
                    };
                    // The alert rustls queued tells the peer why; best effort, as the
                    // connection is dropped right after.
                    let _ = self.conn.write_tls(socket);
                    return Err(failed(class, e));
                }
            }
        }

        /// One `read_tls` from the socket. The first bytes tell a TLS client from a plain
        /// HTTP one or garbage before rustls parses them.
        fn read_records<S: Read>(&mut self, socket: &mut S) -> io::Result<usize> {
            if self.first_byte_seen {
                return self.conn.read_tls(socket);
            }
            let mut sniff = FirstByte {
                inner: socket,
                first: None,
            };
            let n = self.conn.read_tls(&mut sniff)?;
            if let Some(first) = sniff.first {
                self.first_byte_seen = true;
                match first {
                    HANDSHAKE_RECORD => {}
                    b'A'..=b'Z' => {
                        return Err(failed(
                            TlsFailure::PlainHttp,
                            "plain HTTP to the TLS port, answered 400",
                        ));
                    }
                    other => {
                        return Err(failed(
                            TlsFailure::NotTls,
                            format_args!("first byte {other:#04x} is not a handshake record"),
                        ));
                    }
                }
            }
            Ok(n)
        }

        /// Encrypts what rustls' buffer takes of `bufs` and pushes the records out. Fails
        /// with `WouldBlock`, taking nothing, while earlier records still wait for the
        /// socket, so that rustls never holds more than its limit.
        pub(super) fn write<S: Write>(
            &mut self,
            socket: &mut S,
            bufs: &[IoSlice<'_>],
        ) -> io::Result<usize> {
            if !self.push(socket)? {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = self.conn.writer().write_vectored(bufs)?;
            if n == 0 && bufs.iter().any(|b| !b.is_empty()) {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.push(socket)?;
            Ok(n)
        }

        /// Writes queued records until none wait (`true`) or the socket would block.
        pub(super) fn push<S: Write>(&mut self, socket: &mut S) -> io::Result<bool> {
            while self.conn.wants_write() {
                match self.conn.write_tls(socket) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(true)
        }
    }

    /// A reader that remembers the first byte it passed on.
    struct FirstByte<'a, R> {
        inner: &'a mut R,
        first: Option<u8>,
    }

    impl<R: Read> Read for FirstByte<'_, R> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.inner.read(buf)?;
            if n > 0 && self.first.is_none() {
                self.first = Some(buf[0]);
            }
            Ok(n)
        }
    }
}
