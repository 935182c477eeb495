//! Counters kept by the event loop, read by applications (health and metrics pages).

use std::collections::BTreeMap;
use std::fmt;

use crate::proto::handshake::HandshakeError;

/// Why a request or a connection was refused before it opened: the loop's admission limits,
/// the §4.2.1 upgrade checks, and the application's routing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rejection {
    /// The address sends request heads faster than its rate (429).
    RequestRate,
    /// The server holds its maximum of open connections (503).
    ServerFull,
    /// The address holds its maximum of open connections (429).
    AddressConnections,
    /// The address has its maximum of connections whose head is incomplete (closed at accept).
    PendingHandshakes,
    /// The request head was not complete within the handshake timeout (closed).
    HandshakeTimeout,
    /// The request head is larger than the limit (431).
    HeadTooLarge,
    /// The request head has more header fields than the limit (431).
    TooManyHeaders,
    /// The request head is not HTTP/1.x (400).
    Malformed,
    /// An upgrade with a method other than GET (400).
    NotGet,
    /// An upgrade over HTTP/1.0 (400).
    HttpVersion,
    /// An HTTP/1.1 request without `Host` (400).
    MissingHost,
    /// Several `Host` lines, or an invalid one (400).
    BadHost,
    /// A request-target its method does not allow (400).
    BadTarget,
    /// An upgrade repeating `Sec-WebSocket-Key` or `Sec-WebSocket-Version` (400).
    RepeatedHeader,
    /// An upgrade declaring a request body (400).
    UpgradeWithBody,
    /// `Upgrade` does not name websocket (400).
    NotWebSocket,
    /// `Connection` does not name upgrade (400).
    MissingConnectionUpgrade,
    /// `Sec-WebSocket-Key` is not 16 bytes in base64 (400).
    BadKey,
    /// `Sec-WebSocket-Version` is not 13 (426).
    UnsupportedVersion,
    /// The application serves no WebSocket on this path (404).
    NotFound,
    /// The application does not allow this `Origin` (403).
    OriginNotAllowed,
    /// The application requires a token that was missing or unknown (401).
    Unauthorized,
}

impl Rejection {
    /// Every reason, so that metrics can show each one from the start.
    pub const ALL: [Rejection; 22] = [
        Rejection::RequestRate,
        Rejection::ServerFull,
        Rejection::AddressConnections,
        Rejection::PendingHandshakes,
        Rejection::HandshakeTimeout,
        Rejection::HeadTooLarge,
        Rejection::TooManyHeaders,
        Rejection::Malformed,
        Rejection::NotGet,
        Rejection::HttpVersion,
        Rejection::MissingHost,
        Rejection::BadHost,
        Rejection::BadTarget,
        Rejection::RepeatedHeader,
        Rejection::UpgradeWithBody,
        Rejection::NotWebSocket,
        Rejection::MissingConnectionUpgrade,
        Rejection::BadKey,
        Rejection::UnsupportedVersion,
        Rejection::NotFound,
        Rejection::OriginNotAllowed,
        Rejection::Unauthorized,
    ];

    /// The metric label (`reason="..."`).
    pub fn label(self) -> &'static str {
        match self {
            Rejection::RequestRate => "request_rate",
            Rejection::ServerFull => "server_full",
            Rejection::AddressConnections => "address_connections",
            Rejection::PendingHandshakes => "pending_handshakes",
            Rejection::HandshakeTimeout => "handshake_timeout",
            Rejection::HeadTooLarge => "head_too_large",
            Rejection::TooManyHeaders => "too_many_headers",
            Rejection::Malformed => "malformed",
            Rejection::NotGet => "not_get",
            Rejection::HttpVersion => "http_version",
            Rejection::MissingHost => "missing_host",
            Rejection::BadHost => "bad_host",
            Rejection::BadTarget => "bad_target",
            Rejection::RepeatedHeader => "repeated_header",
            Rejection::UpgradeWithBody => "upgrade_with_body",
            Rejection::NotWebSocket => "not_websocket",
            Rejection::MissingConnectionUpgrade => "missing_connection_upgrade",
            Rejection::BadKey => "bad_key",
            Rejection::UnsupportedVersion => "unsupported_version",
            Rejection::NotFound => "not_found",
            Rejection::OriginNotAllowed => "origin_not_allowed",
            Rejection::Unauthorized => "unauthorized",
        }
    }
}

impl From<&HandshakeError> for Rejection {
    fn from(error: &HandshakeError) -> Self {
        match error {
            HandshakeError::HeadTooLarge => Rejection::HeadTooLarge,
            HandshakeError::TooManyHeaders => Rejection::TooManyHeaders,
            HandshakeError::Malformed(_) => Rejection::Malformed,
            HandshakeError::NotGet => Rejection::NotGet,
            HandshakeError::HttpVersion => Rejection::HttpVersion,
            HandshakeError::MissingHost => Rejection::MissingHost,
            HandshakeError::BadHost => Rejection::BadHost,
            HandshakeError::BadTarget => Rejection::BadTarget,
            HandshakeError::RepeatedHeader(_) => Rejection::RepeatedHeader,
            HandshakeError::UpgradeWithBody => Rejection::UpgradeWithBody,
            HandshakeError::NotWebSocketUpgrade => Rejection::NotWebSocket,
            HandshakeError::MissingConnectionUpgrade => Rejection::MissingConnectionUpgrade,
            HandshakeError::BadKey => Rejection::BadKey,
            HandshakeError::UnsupportedVersion => Rejection::UnsupportedVersion,
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// Why a TLS handshake did not complete, by class (the `reason` label of the metric).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TlsFailure {
    /// The client sent a plain HTTP request to the TLS port (answered with a plain 400).
    PlainHttp,
    /// The first bytes were not a TLS handshake record.
    NotTls,
    /// The client aborted with an alert (e.g. it does not trust the certificate).
    PeerAlert,
    /// A TLS error on the server's side: no version, cipher suite or ALPN protocol in
    /// common, a malformed or unexpected message.
    Protocol,
    /// The client closed the connection before the handshake completed.
    Closed,
    /// The handshake deadline passed first (a stalled or trickled handshake).
    Timeout,
}

impl TlsFailure {
    /// Every class, so that metrics can show each one from the start.
    pub const ALL: [TlsFailure; 6] = [
        TlsFailure::PlainHttp,
        TlsFailure::NotTls,
        TlsFailure::PeerAlert,
        TlsFailure::Protocol,
        TlsFailure::Closed,
        TlsFailure::Timeout,
    ];

    /// The metric label (`reason="..."`).
    pub fn label(self) -> &'static str {
        match self {
            TlsFailure::PlainHttp => "plain_http",
            TlsFailure::NotTls => "not_tls",
            TlsFailure::PeerAlert => "peer_alert",
            TlsFailure::Protocol => "protocol",
            TlsFailure::Closed => "closed",
            TlsFailure::Timeout => "timeout",
        }
    }
}

impl fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// What the loop has seen since it started.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Connections in the table (handshaking, open or closing).
    pub connections: usize,
    /// WebSocket connections open (upgraded and not yet closed).
    pub open: usize,
    /// Connections accepted since start.
    pub accepted: u64,
    /// Connections upgraded to WebSocket since start.
    pub upgraded: u64,
    /// Data messages received.
    pub messages_in: u64,
    /// Data messages queued for sending (a broadcast counts once per receiver).
    pub messages_out: u64,
    /// Bytes read from sockets.
    pub bytes_in: u64,
    /// Bytes written to sockets.
    pub bytes_out: u64,
    /// Frames encoded for broadcasts: one per form a broadcast takes (plain, or compressed on
    /// its own for every receiver without context takeover), whatever the receiver count,
    /// plus one per receiver that compresses with context takeover.
    pub broadcast_encodes: u64,
    /// Upgrades that negotiated permessage-deflate, since start.
    pub deflate_negotiated: u64,
    /// Open WebSocket connections with permessage-deflate (each holds at most the memory
    /// the README states for its parameters).
    pub deflate_open: usize,
    /// Requests and connections refused, by reason.
    pub rejections: BTreeMap<Rejection, u64>,
    /// WebSocket connections ended, by close code (1005: close without a code, 1006: no close).
    pub closes: BTreeMap<u16, u64>,
    /// Connections failed for a protocol error (other than a ping flood, counted apart).
    pub protocol_errors: u64,
    /// Connections closed because their outbound queue passed the cap.
    pub slow_consumers: u64,
    /// Connections closed because they did not answer a heartbeat ping.
    pub heartbeat_timeouts: u64,
    /// Connections closed because they sent nothing for the idle timeout.
    pub idle_timeouts: u64,
    /// Connections failed for sending pings faster than allowed.
    pub ping_floods: u64,
    /// TLS handshakes completed.
    pub tls_handshakes: u64,
    /// TLS handshakes that failed, by class.
    pub tls_failures: BTreeMap<TlsFailure, u64>,
    /// Times the loop found it had been paused (stopped or descheduled for half a second or
    /// more) and moved every deadline by the pause.
    pub pauses: u64,
}

impl Stats {
    /// Counts one refusal.
    pub(crate) fn reject(&mut self, reason: Rejection) {
        *self.rejections.entry(reason).or_default() += 1;
    }

    /// Counts one failed TLS handshake.
    pub(crate) fn tls_failed(&mut self, class: TlsFailure) {
        *self.tls_failures.entry(class).or_default() += 1;
    }
}
