//! The listening sockets: accept until `WouldBlock`, pause without spinning when the
//! process is out of file descriptors, and leave a reserve of descriptors to the rest of the
//! process (the Redis bridge must be able to reconnect while clients queue to get in).

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};

use super::listener;
use crate::log::Level;

/// How long accepting pauses when the process is out of file descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Linux errno values for descriptor exhaustion (accept(2)): EMFILE and ENFILE.
const EMFILE: i32 = 24;
const ENFILE: i32 = 23;
/// Descriptors below the `nofile` limit that clients never get: the Redis bridge's two
/// connections (each closed before it is replaced), name resolution, with room to spare.
const RESERVE: u64 = 8;

/// The soft `nofile` limit, from `/proc/self/limits` (`None` when unlimited or unknown).
fn nofile_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Listeners and whether accepting is paused.
#[derive(Debug)]
pub(crate) struct Acceptor {
    listeners: Vec<TcpListener>,
    /// The listener `next` asks first (the earlier ones were drained this round).
    cursor: usize,
    paused_until: Option<Instant>,
    /// Accepting has failed for lack of descriptors since the last successful accept (so the
    /// warning is logged once per episode, not every retry).
    exhausted: bool,
    /// Accepted sockets with a descriptor number from here up are closed at once: the
    /// kernel hands out the lowest free number, so such a socket means fewer than
    /// [`RESERVE`] descriptors are left for the rest of the process.
    reserve_from: Option<u64>,
}

impl Acceptor {
    /// Binds every address and registers the listeners under `token_base + i`.
    pub(crate) fn bind(
        addrs: &[SocketAddr],
        reuse_port: bool,
        registry: &Registry,
        token_base: usize,
    ) -> io::Result<Self> {
        let mut listeners = addrs
            .iter()
            .map(|addr| listener::bind(*addr, reuse_port))
            .collect::<io::Result<Vec<_>>>()?;
        for (i, listener) in listeners.iter_mut().enumerate() {
            registry.register(listener, Token(token_base + i), Interest::READABLE)?;
        }
        Ok(Acceptor {
            listeners,
            cursor: 0,
            paused_until: None,
            exhausted: false,
            reserve_from: nofile_limit().map(|n| n.saturating_sub(RESERVE)),
        })
    }

    /// The addresses actually bound (port 0 resolved).
    pub(crate) fn local_addrs(&self) -> io::Result<Vec<SocketAddr>> {
        self.listeners.iter().map(TcpListener::local_addr).collect()
    }

    /// Closes every listener (shutdown): new clients are refused by the kernel.
    pub(crate) fn close(&mut self, registry: &Registry) {
        for mut listener in self.listeners.drain(..) {
            let _ = registry.deregister(&mut listener);
        }
    }

    /// When a pause for lack of descriptors ends.
    pub(crate) fn paused_until(&self) -> Option<Instant> {
        self.paused_until
    }

    /// Ends a pause early (a descriptor was freed, or the pause ran out). Returns whether
    /// accepting was paused.
    pub(crate) fn resume(&mut self) -> bool {
        self.paused_until.take().is_some()
    }

    /// Pauses accepting for lack of descriptors; warns once per episode.
    fn pause(&mut self, now: Instant, why: &str) {
        if !std::mem::replace(&mut self.exhausted, true) {
            log!(
                Level::Warn,
                "accept paused until descriptors free up: {why}"
            );
        }
        self.paused_until = Some(now + ACCEPT_BACKOFF);
    }

    /// The socket took a descriptor of the reserve.
    fn in_reserve(&self, stream: &TcpStream) -> bool {
        let fd = u64::try_from(stream.as_raw_fd()).unwrap_or(u64::MAX);
        self.reserve_from.is_some_and(|from| fd >= from)
    }

    /// The next pending connection of any listener, with the listener's index (the order
    /// of the addresses given to [`bind`](Self::bind)), or `None` once all would block (or
    /// accepting paused). Call until `None`: readiness is edge-triggered.
    pub(crate) fn next(&mut self, now: Instant) -> Option<(TcpStream, SocketAddr, usize)> {
        if self.paused_until.is_some() {
            return None;
        }
        while let Some(listener) = self.listeners.get(self.cursor) {
            match listener.accept() {
                Ok((stream, _)) if self.in_reserve(&stream) => {
                    // Closing it refuses this client now instead of leaving it to wait;
                    // accepting pauses as for EMFILE.
                    drop(stream);
                    self.pause(
                        now,
                        &format!("only the {RESERVE} descriptors kept are left"),
                    );
                    break;
                }
                Ok((stream, peer)) => {
                    if std::mem::take(&mut self.exhausted) {
                        log!(Level::Info, "accepting again");
                    }
                    return Some((stream, peer, self.cursor));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.cursor += 1,
                Err(e) if matches!(e.raw_os_error(), Some(EMFILE | ENFILE)) => {
                    // Out of descriptors: the pending connection stays in the backlog.
                    // Retrying at once would spin; wait a little, or until a connection
                    // closes and frees a descriptor.
                    self.pause(now, &e.to_string());
                    break;
                }
                // ECONNABORTED and friends concern one connection: go on.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionAborted | io::ErrorKind::Interrupted
                    ) =>
                {
                    log!(Level::Debug, "accept failed: {e}");
                }
                Err(e) => {
                    log!(Level::Debug, "accept failed: {e}");
                    self.cursor += 1;
                }
            }
        }
        self.cursor = 0;
        None
    }
}
