//! The health and Prometheus pages of `wsloop serve`, rendered from the loop's counters.

use std::fmt::Write as _;
use std::time::Duration;

use crate::server::Stats;

/// The chat's own counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChatCounters {
    /// Messages refused with `rate_limited`.
    pub rate_limited: u64,
    /// Connections closed for flooding past the message rate.
    pub flood_disconnects: u64,
}

/// The Redis bridge's counters, when clustered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClusterMetrics {
    /// Both Redis connections are up.
    pub up: bool,
    /// Publications handed to Redis.
    pub published: u64,
    /// Publications not sent to Redis (down or overloaded).
    pub publish_failures: u64,
    /// Publications received from Redis.
    pub received: u64,
}

/// Renders the Prometheus text exposition format (version 0.0.4).
pub fn prometheus(
    stats: &Stats,
    chat: ChatCounters,
    uptime: Duration,
    cluster: Option<ClusterMetrics>,
) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, u64)]| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    let one = |v: u64| vec![(String::new(), v)];
    metric(
        "wsloop_connections",
        "gauge",
        "WebSocket connections open now.",
        &one(stats.open as u64),
    );
    metric(
        "wsloop_tcp_connections",
        "gauge",
        "TCP connections held now (handshaking, open or closing).",
        &one(stats.connections as u64),
    );
    metric(
        "wsloop_connections_total",
        "counter",
        "WebSocket connections opened.",
        &one(stats.upgraded),
    );
    metric(
        "wsloop_accepted_total",
        "counter",
        "TCP connections accepted.",
        &one(stats.accepted),
    );
    metric(
        "wsloop_messages_received_total",
        "counter",
        "Data messages received.",
        &one(stats.messages_in),
    );
    metric(
        "wsloop_messages_sent_total",
        "counter",
        "Data messages sent (a broadcast counts once per receiver).",
        &one(stats.messages_out),
    );
    metric(
        "wsloop_bytes_received_total",
        "counter",
        "Bytes read from sockets.",
        &one(stats.bytes_in),
    );
    metric(
        "wsloop_bytes_sent_total",
        "counter",
        "Bytes written to sockets.",
        &one(stats.bytes_out),
    );
    metric(
        "wsloop_broadcast_encodes_total",
        "counter",
        "Frames encoded for broadcasts (once per broadcast and form; per receiver with deflate context takeover).",
        &one(stats.broadcast_encodes),
    );
    metric(
        "wsloop_deflate_negotiated_total",
        "counter",
        "Upgrades that negotiated permessage-deflate.",
        &one(stats.deflate_negotiated),
    );
    metric(
        "wsloop_deflate_connections",
        "gauge",
        "Open connections with permessage-deflate.",
        &one(stats.deflate_open as u64),
    );
    let rejections: Vec<(String, u64)> = stats
        .rejections
        .iter()
        .map(|(reason, n)| (format!("{{reason=\"{reason}\"}}"), *n))
        .collect();
    metric(
        "wsloop_handshake_rejections_total",
        "counter",
        "Upgrades refused, by reason.",
        &rejections,
    );
    let closes: Vec<(String, u64)> = stats
        .closes
        .iter()
        .map(|(code, n)| (format!("{{code=\"{code}\"}}"), *n))
        .collect();
    metric(
        "wsloop_closes_total",
        "counter",
        "WebSocket connections ended, by close code.",
        &closes,
    );
    metric(
        "wsloop_protocol_errors_total",
        "counter",
        "Connections failed for a protocol error.",
        &one(stats.protocol_errors),
    );
    metric(
        "wsloop_slow_consumer_disconnects_total",
        "counter",
        "Connections closed because their outbound queue passed the cap.",
        &one(stats.slow_consumers),
    );
    metric(
        "wsloop_heartbeat_timeouts_total",
        "counter",
        "Connections closed for not answering a heartbeat ping.",
        &one(stats.heartbeat_timeouts),
    );
    metric(
        "wsloop_uptime_seconds",
        "gauge",
        "Seconds since start.",
        &one(uptime.as_secs()),
    );
    metric(
        "wsloop_idle_timeouts_total",
        "counter",
        "Connections closed for sending nothing for the idle timeout.",
        &one(stats.idle_timeouts),
    );
    metric(
        "wsloop_ping_flood_disconnects_total",
        "counter",
        "Connections failed (1008) for sending pings faster than allowed.",
        &one(stats.ping_floods),
    );
    metric(
        "wsloop_rate_limited_messages_total",
        "counter",
        "Chat messages refused with rate_limited.",
        &one(chat.rate_limited),
    );
    metric(
        "wsloop_message_flood_disconnects_total",
        "counter",
        "Connections closed (1008) for flooding past the message rate.",
        &one(chat.flood_disconnects),
    );
    if let Some(c) = cluster {
        metric(
            "wsloop_redis_up",
            "gauge",
            "1 when both Redis connections are up.",
            &one(u64::from(c.up)),
        );
        metric(
            "wsloop_redis_published_total",
            "counter",
            "Publications sent to Redis.",
            &one(c.published),
        );
        metric(
            "wsloop_redis_publish_failures_total",
            "counter",
            "Publications not sent to Redis (down or overloaded).",
            &one(c.publish_failures),
        );
        metric(
            "wsloop_redis_received_total",
            "counter",
            "Publications received from Redis (own echoes included).",
            &one(c.received),
        );
    }
    out
}

/// The `/healthz` JSON body.
pub fn health(status: &str, stats: &Stats, uptime: Duration) -> String {
    serde_json::json!({
        "status": status,
        "connections": stats.open,
        "uptime_s": uptime.as_secs(),
    })
    .to_string()
}
