//! The health and Prometheus pages of `wsloop serve`, rendered from the loop's counters.

use std::fmt::Write as _;
use std::time::Duration;

use super::history::shared::SharedStats;
use super::history::HistoryStats;
use super::process::ProcessStats;
use crate::server::{Rejection, Stats, TlsFailure};

/// The close codes shown from the start, at 0: those of RFC 6455 §7.4.1 that a connection can
/// end with (1005: a close without a code, 1006: no close at all). Others appear when seen.
const CLOSE_CODES: [u16; 11] = [
    1000, 1001, 1002, 1003, 1005, 1006, 1007, 1008, 1009, 1010, 1011,
];

/// The chat's own counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChatCounters {
    /// Messages refused with `rate_limited`.
    pub rate_limited: u64,
    /// Connections closed for flooding past the message rate.
    pub flood_disconnects: u64,
    /// What the channel history holds.
    pub history: HistoryStats,
    /// History in Redis: reads, replays, catch-ups (`None`: not kept there).
    pub shared: Option<SharedStats>,
}

/// The Redis bridge's counters, when clustered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClusterMetrics {
    /// Both Redis connections are up.
    pub up: bool,
    /// Publications Redis confirmed.
    pub published: u64,
    /// Publications never handed to Redis (down, queue full, drain timeout): lost.
    pub publish_failures: u64,
    /// Publications sent without an answer in time: other nodes may get them late, or never.
    pub publish_unknown: u64,
    /// Publications received from Redis.
    pub received: u64,
    /// Publications of other nodes that never reached this node (gaps in their numbering).
    pub missed: u64,
    /// Publications from Redis not delivered: over the size limit, or not an envelope.
    pub discarded: u64,
    /// Another process runs under this node's id.
    pub duplicate_node_id: bool,
}

/// The two formats of the metrics page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exposition {
    /// The Prometheus text format 0.0.4: a counter's `# TYPE` line names its `_total` sample.
    Text,
    /// OpenMetrics 1.0: a counter's `# TYPE` line names the family, without `_total`, and the
    /// page ends with `# EOF`.
    OpenMetrics,
}

impl Exposition {
    /// OpenMetrics when the scraper's `Accept` asks for it (Prometheus does by default), the
    /// text format otherwise.
    pub fn negotiate(accept: Option<&str>) -> Exposition {
        match accept {
            Some(a)
                if a.to_ascii_lowercase()
                    .contains("application/openmetrics-text") =>
            {
                Exposition::OpenMetrics
            }
            _ => Exposition::Text,
        }
    }

    /// The page's `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            Exposition::Text => "text/plain; version=0.0.4; charset=utf-8",
            Exposition::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// Renders the metrics page in the format asked for. Every family has one
/// name of its own (a gauge `x` next to a counter `x_total` would be one OpenMetrics family,
/// and parsers reject the page), and every labelled counter shows all its known labels
/// from the start, at 0, so that `rate()` sees the first increase.
pub fn prometheus(
    stats: &Stats,
    chat: ChatCounters,
    uptime: Duration,
    cluster: Option<ClusterMetrics>,
    process: Option<ProcessStats>,
    format: Exposition,
) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, String)]| {
        let family = match (format, kind) {
            (Exposition::OpenMetrics, "counter") => name.trim_end_matches("_total"),
            _ => name,
        };
        let _ = writeln!(out, "# HELP {family} {help}");
        let _ = writeln!(out, "# TYPE {family} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    let one = |v: &dyn std::fmt::Display| vec![(String::new(), v.to_string())];
    metric(
        "wsloop_build_info",
        "gauge",
        "Always 1; the version of wsloop in a label.",
        &[(
            format!("{{version=\"{}\"}}", env!("CARGO_PKG_VERSION")),
            "1".into(),
        )],
    );
    metric(
        "wsloop_open_connections",
        "gauge",
        "WebSocket connections open now.",
        &one(&stats.open),
    );
    metric(
        "wsloop_tcp_connections",
        "gauge",
        "TCP connections held now (handshaking, open or closing).",
        &one(&stats.connections),
    );
    metric(
        "wsloop_connections_total",
        "counter",
        "WebSocket connections opened.",
        &one(&stats.upgraded),
    );
    metric(
        "wsloop_accepted_total",
        "counter",
        "TCP connections accepted.",
        &one(&stats.accepted),
    );
    metric(
        "wsloop_messages_received_total",
        "counter",
        "Data messages received.",
        &one(&stats.messages_in),
    );
    metric(
        "wsloop_messages_sent_total",
        "counter",
        "Data messages sent (a broadcast counts once per receiver).",
        &one(&stats.messages_out),
    );
    metric(
        "wsloop_bytes_received_total",
        "counter",
        "Bytes read from sockets.",
        &one(&stats.bytes_in),
    );
    metric(
        "wsloop_bytes_sent_total",
        "counter",
        "Bytes written to sockets.",
        &one(&stats.bytes_out),
    );
    metric(
        "wsloop_broadcast_encodes_total",
        "counter",
        "Frames encoded for broadcasts (once per broadcast and form; per receiver with deflate context takeover).",
        &one(&stats.broadcast_encodes),
    );
    metric(
        "wsloop_deflate_negotiated_total",
        "counter",
        "Upgrades that negotiated permessage-deflate.",
        &one(&stats.deflate_negotiated),
    );
    metric(
        "wsloop_deflate_connections",
        "gauge",
        "Open connections with permessage-deflate.",
        &one(&stats.deflate_open),
    );
    let rejections: Vec<(String, String)> = Rejection::ALL
        .iter()
        .map(|reason| {
            let n = stats.rejections.get(reason).copied().unwrap_or(0);
            (format!("{{reason=\"{reason}\"}}"), n.to_string())
        })
        .collect();
    metric(
        "wsloop_handshake_rejections_total",
        "counter",
        "Upgrades refused, by reason.",
        &rejections,
    );
    let mut closes = stats.closes.clone();
    for code in CLOSE_CODES {
        closes.entry(code).or_default();
    }
    let closes: Vec<(String, String)> = closes
        .iter()
        .map(|(code, n)| (format!("{{code=\"{code}\"}}"), n.to_string()))
        .collect();
    metric(
        "wsloop_closes_total",
        "counter",
        "WebSocket connections ended, by close code.",
        &closes,
    );
    metric(
        "wsloop_tls_handshakes_total",
        "counter",
        "TLS handshakes completed (0 without --tls-cert).",
        &one(&stats.tls_handshakes),
    );
    let tls_failures: Vec<(String, String)> = TlsFailure::ALL
        .iter()
        .map(|class| {
            let n = stats.tls_failures.get(class).copied().unwrap_or(0);
            (format!("{{reason=\"{class}\"}}"), n.to_string())
        })
        .collect();
    metric(
        "wsloop_tls_handshake_failures_total",
        "counter",
        "TLS handshakes that did not complete, by class.",
        &tls_failures,
    );
    metric(
        "wsloop_protocol_errors_total",
        "counter",
        "Connections failed for a protocol error.",
        &one(&stats.protocol_errors),
    );
    metric(
        "wsloop_slow_consumer_disconnects_total",
        "counter",
        "Connections closed because their outbound queue passed the cap.",
        &one(&stats.slow_consumers),
    );
    metric(
        "wsloop_heartbeat_timeouts_total",
        "counter",
        "Connections closed for not answering a heartbeat ping.",
        &one(&stats.heartbeat_timeouts),
    );
    metric(
        "wsloop_uptime_seconds",
        "gauge",
        "Seconds since start.",
        &one(&uptime.as_secs()),
    );
    metric(
        "wsloop_idle_timeouts_total",
        "counter",
        "Connections closed for sending nothing for the idle timeout.",
        &one(&stats.idle_timeouts),
    );
    metric(
        "wsloop_ping_flood_disconnects_total",
        "counter",
        "Connections failed (1008) for sending pings faster than allowed.",
        &one(&stats.ping_floods),
    );
    metric(
        "wsloop_rate_limited_messages_total",
        "counter",
        "Chat messages refused with rate_limited.",
        &one(&chat.rate_limited),
    );
    metric(
        "wsloop_message_flood_disconnects_total",
        "counter",
        "Connections closed (1008) for flooding past the message rate.",
        &one(&chat.flood_disconnects),
    );
    metric(
        "wsloop_history_bytes",
        "gauge",
        "Bytes of channel history held (the text of the stored events).",
        &one(&chat.history.bytes),
    );
    metric(
        "wsloop_history_messages",
        "gauge",
        "Events held in channel history.",
        &one(&chat.history.messages),
    );
    metric(
        "wsloop_history_evictions_total",
        "counter",
        "Events dropped from history, oldest first, to stay within --history-max-bytes.",
        &one(&chat.history.evictions),
    );
    if let Some(shared) = &chat.shared {
        let series: [(&str, &str, u64); 6] = [
            ("wsloop_history_reads_total", "Reads of the history in Redis (recoveries, history requests, catch-ups).", shared.reads),
            ("wsloop_history_read_failures_total", "Reads of the history in Redis that failed (answered without history).", shared.read_failures),
            ("wsloop_history_replayed_total", "Events replayed from the history in Redis to recovering clients.", shared.replayed),
            ("wsloop_history_catchup_total", "Events this node read from the history in Redis after a gap in Pub/Sub (an outage).", shared.caught_up),
            ("wsloop_history_duplicates_total", "Events from Redis dropped as already delivered.", shared.duplicates),
            ("wsloop_history_lost_total", "Events this node could not deliver: gone from the history in Redis before its catch-up, or skipped when a catch-up read failed.", shared.lost),
        ];
        for (name, help, value) in series {
            metric(name, "counter", help, &one(&value));
        }
    }
    if let Some(p) = process {
        metric(
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            &one(&p.cpu_seconds),
        );
        metric(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            &one(&p.resident_memory_bytes),
        );
        metric(
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            &one(&p.open_fds),
        );
        if let Some(max) = p.max_fds {
            metric(
                "process_max_fds",
                "gauge",
                "Maximum number of open file descriptors.",
                &one(&max),
            );
        }
        if let Some(start) = p.start_time_seconds {
            metric(
                "process_start_time_seconds",
                "gauge",
                "Start time of the process since unix epoch in seconds.",
                &one(&start),
            );
        }
    }
    if let Some(c) = cluster {
        metric(
            "wsloop_redis_up",
            "gauge",
            "1 when both Redis connections are up.",
            &one(&u64::from(c.up)),
        );
        metric(
            "wsloop_redis_published_total",
            "counter",
            "Publications Redis confirmed.",
            &one(&c.published),
        );
        metric(
            "wsloop_redis_publish_failures_total",
            "counter",
            "Publications never handed to Redis (down, queue full, drain timeout): no other node gets them.",
            &one(&c.publish_failures),
        );
        metric(
            "wsloop_redis_publish_unknown_total",
            "counter",
            "Publications sent to Redis without an answer in time: other nodes may get them late, or never.",
            &one(&c.publish_unknown),
        );
        metric(
            "wsloop_redis_missed_total",
            "counter",
            "Publications of other nodes that never reached this node (gaps in their numbering).",
            &one(&c.missed),
        );
        metric(
            "wsloop_redis_discarded_total",
            "counter",
            "Publications from Redis not delivered: over the size limit, or not from a wsloop node.",
            &one(&c.discarded),
        );
        metric(
            "wsloop_redis_duplicate_node_id",
            "gauge",
            "1 while another process runs under this node's id.",
            &one(&u64::from(c.duplicate_node_id)),
        );
        metric(
            "wsloop_redis_received_total",
            "counter",
            "Publications received from Redis (own echoes included).",
            &one(&c.received),
        );
    }
    if format == Exposition::OpenMetrics {
        out.push_str("# EOF\n");
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
