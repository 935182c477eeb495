//! The event loop's settings.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::admission::{AddressLimits, ProxyHeader};
use super::handler::Listener;
use crate::proto::{Limits, Timeouts};

/// Settings of the event loop.
#[derive(Clone, Debug)]
pub struct Config {
    /// Addresses to listen on (IPv4 and IPv6); with [`tls`](Self::tls), they speak TLS.
    pub listen: Vec<SocketAddr>,
    /// Further addresses that always speak plain HTTP and WebSocket, e.g. for health checks
    /// of a load balancer beside TLS ones.
    pub listen_plain: Vec<SocketAddr>,
    /// Addresses for the application's backend and operators, never exposed to clients:
    /// plain HTTP, no per-address request rate, and the handler sees their requests as
    /// [`Listener::Internal`].
    pub listen_internal: Vec<SocketAddr>,
    /// Speak TLS (wss://, https://) on the `listen` addresses with this certificate.
    #[cfg(feature = "tls")]
    pub tls: Option<super::tls::TlsConfig>,
    /// Protocol limits (handshake, frame, message sizes).
    pub limits: Limits,
    /// A connection whose upgrade request is not complete by then is closed.
    pub handshake_timeout: Duration,
    /// How long to wait for the peer's close after ours, and for the peer to close TCP.
    pub close_timeout: Duration,
    /// Subprotocols this server speaks, preferred first.
    pub protocols: Vec<String>,
    /// Outbound bytes queued for one connection above which the loop stops reading its
    /// requests, and above which a connection that is sent messages it did not ask for
    /// (broadcasts) is closed with 1008 as a slow consumer.
    pub max_backpressure: usize,
    /// Send a heartbeat ping after this long (none: no heartbeat).
    pub ping_interval: Option<Duration>,
    /// Close a connection that has not answered a heartbeat ping within this time.
    pub ping_timeout: Duration,
    /// Share the listening ports with other processes (`SO_REUSEPORT`).
    pub reuse_port: bool,
    /// Behind a trusted proxy: the header it puts the client's address in (admission and
    /// logs then use that address). `None`: the TCP peer is the client.
    pub trust_proxy: Option<ProxyHeader>,
    /// Open WebSocket connections in all; further upgrades get 503.
    pub max_connections: usize,
    /// Per-address limits: open connections and request heads per second (429 beyond).
    pub per_address: AddressLimits,
    /// Close a connection that has sent nothing (not even a pong) for this long.
    pub idle_timeout: Option<Duration>,
    /// Pings a client may send per second; more fails the connection with 1008.
    pub max_pings_per_second: u32,
    /// Accept permessage-deflate offers (RFC 7692) with these settings; `None`: never.
    #[cfg(feature = "deflate")]
    pub deflate: Option<crate::proto::extension::DeflateConfig>,
}

impl Config {
    /// Which list the listener at `index` (in the order [`addresses`](Self::addresses)
    /// gives) belongs to.
    pub fn listener(&self, index: usize) -> Listener {
        if index < self.listen.len() {
            Listener::Listen
        } else if index < self.listen.len() + self.listen_plain.len() {
            Listener::Plain
        } else {
            Listener::Internal
        }
    }

    /// Every address to bind: `listen`, then `listen_plain`, then `listen_internal`.
    pub fn addresses(&self) -> Vec<SocketAddr> {
        [
            self.listen.as_slice(),
            &self.listen_plain,
            &self.listen_internal,
        ]
        .concat()
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 9001))],
            listen_plain: Vec::new(),
            listen_internal: Vec::new(),
            #[cfg(feature = "tls")]
            tls: None,
            limits: Limits::default(),
            handshake_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(5),
            protocols: Vec::new(),
            max_backpressure: 4 * 1024 * 1024,
            ping_interval: None,
            ping_timeout: Duration::from_secs(10),
            reuse_port: false,
            trust_proxy: None,
            max_connections: 100_000,
            per_address: AddressLimits {
                max_connections: 1_000,
                max_pending_handshakes: 128,
                requests_per_second: 50.0,
                burst: 100.0,
            },
            idle_timeout: None,
            max_pings_per_second: 50,
            #[cfg(feature = "deflate")]
            deflate: None,
        }
    }
}

impl Config {
    /// The timed rules each WebSocket connection's protocol core enforces.
    pub fn timeouts(&self) -> Timeouts {
        Timeouts {
            ping_interval: self.ping_interval,
            ping_timeout: self.ping_timeout,
            close_timeout: self.close_timeout,
            idle_timeout: self.idle_timeout,
            max_pings_per_second: Some(self.max_pings_per_second),
        }
    }

    /// When a connection accepted at `now` must have sent its whole request head.
    pub(crate) fn handshake_deadline(&self, now: Instant) -> Instant {
        now + self.handshake_timeout
    }
}
