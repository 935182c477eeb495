//! Counters kept by the event loop, read by applications (health and metrics pages).

use std::collections::BTreeMap;

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
    /// Frames encoded for broadcasts (one per broadcast, whatever the receiver count).
    pub broadcast_encodes: u64,
    /// Upgrades refused, by reason.
    pub rejections: BTreeMap<&'static str, u64>,
    /// WebSocket connections ended, by close code (1005: close without a code, 1006: no close).
    pub closes: BTreeMap<u16, u64>,
    /// Connections failed for a protocol error.
    pub protocol_errors: u64,
    /// Connections closed because their outbound queue passed the cap.
    pub slow_consumers: u64,
    /// Connections closed because they did not answer a heartbeat ping.
    pub heartbeat_timeouts: u64,
    /// Connections closed because they sent nothing for the idle timeout.
    pub idle_timeouts: u64,
    /// Connections failed for sending pings faster than allowed.
    pub ping_floods: u64,
}
