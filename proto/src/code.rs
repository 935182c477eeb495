//! Close status codes (RFC 6455 §7.4): the codes this crate sends, which codes may appear on
//! the wire, and [`Policy`], the closes an endpoint starts for its own policy.
//!
//! Protocol violations get their codes from [`crate::ProtocolError::close_code`]; everything
//! a server closes for by its own policy (shutdown, idle, slow consumer, ping flood, message
//! flood) comes from [`Policy`]. Between them they are the one place a close code is decided.

use std::fmt;

/// 1000: the purpose of the connection has been fulfilled.
pub const NORMAL: u16 = 1000;
/// 1001: the endpoint is going away (server shutdown).
pub const GOING_AWAY: u16 = 1001;
/// 1002: the peer broke the protocol.
pub const PROTOCOL_ERROR: u16 = 1002;
/// 1003: a kind of data the endpoint cannot accept.
pub const UNSUPPORTED_DATA: u16 = 1003;
/// 1007: data inconsistent with the message type (text that is not UTF-8).
pub const INVALID_PAYLOAD: u16 = 1007;
/// 1008: a message that violates the endpoint's policy.
pub const POLICY_VIOLATION: u16 = 1008;
/// 1009: a message too big to process.
pub const MESSAGE_TOO_BIG: u16 = 1009;
/// 1011: the server met an unexpected condition.
pub const INTERNAL_ERROR: u16 = 1011;
/// 1013: try again later (IANA registry), used for overload.
pub const TRY_AGAIN_LATER: u16 = 1013;

/// Whether `code` may appear in a close frame on the wire (§7.4.1, §7.4.2 and the IANA
/// registry): 1000-1003, 1007-1014 and the 3000-4999 ranges for libraries and applications.
/// 1004 is reserved, 1005, 1006 and 1015 "MUST NOT be set as a status code in a Close control
/// frame", everything else below 3000 is unassigned and 5000+ is undefined.
pub fn is_valid_wire_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// A close this end starts for its own policy rather than for a protocol violation.
///
/// Each variant has its status code and the reason sent on the wire ([`Policy::wire_reason`]);
/// `Display` is the longer text for logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Policy {
    /// The server is shutting down (1001, §7.4.1: "going away").
    Shutdown,
    /// The peer sent nothing, not even a pong, for the idle timeout (1001).
    IdleTimeout,
    /// The peer does not read what it is sent: its outbound queue passed the cap (1008).
    SlowConsumer,
    /// The peer sends more pings per second than allowed (1008). The protocol core detects
    /// it and fails the connection as [`crate::ProtocolError::PingFlood`], with this code
    /// and reason.
    PingFlood,
    /// The peer sends messages faster than the application allows (1008).
    MessageFlood,
}

impl Policy {
    /// Every policy close, for tables and pre-set metric labels.
    pub const ALL: [Policy; 5] = [
        Policy::Shutdown,
        Policy::IdleTimeout,
        Policy::SlowConsumer,
        Policy::PingFlood,
        Policy::MessageFlood,
    ];

    /// The status code of the close frame (§7.4.1).
    pub fn code(self) -> u16 {
        match self {
            Policy::Shutdown | Policy::IdleTimeout => GOING_AWAY,
            Policy::SlowConsumer | Policy::PingFlood | Policy::MessageFlood => POLICY_VIOLATION,
        }
    }

    /// The reason carried in the close frame: short, stable, and what clients may match on.
    pub fn wire_reason(self) -> &'static str {
        match self {
            Policy::Shutdown => "server shutting down",
            Policy::IdleTimeout => "idle timeout",
            Policy::SlowConsumer => "slow consumer",
            Policy::PingFlood => "ping rate exceeded",
            Policy::MessageFlood => "message rate exceeded",
        }
    }

    /// A snake_case name for metric labels.
    pub fn label(self) -> &'static str {
        match self {
            Policy::Shutdown => "shutdown",
            Policy::IdleTimeout => "idle_timeout",
            Policy::SlowConsumer => "slow_consumer",
            Policy::PingFlood => "ping_flood",
            Policy::MessageFlood => "message_flood",
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Policy::Shutdown => "the server is shutting down",
            Policy::IdleTimeout => "nothing received for the idle timeout",
            Policy::SlowConsumer => "outbound queue over the cap: the peer does not read",
            Policy::PingFlood => "more pings per second than allowed",
            Policy::MessageFlood => "messages sent faster than the allowed rate",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn autobahn_7_7_valid_codes_are_accepted() {
        for c in [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999,
        ] {
            assert!(is_valid_wire_code(c), "{c}");
        }
    }

    #[test]
    fn policy_closes_have_wire_codes_and_reasons_that_fit_a_control_frame() {
        for p in Policy::ALL {
            assert!(is_valid_wire_code(p.code()), "{p:?}");
            // §5.5: a control frame carries at most 125 bytes, 2 of them the code.
            assert!(p.wire_reason().len() <= 123, "{p:?}");
        }
        assert_eq!(Policy::Shutdown.code(), 1001);
        assert_eq!(Policy::SlowConsumer.code(), 1008);
    }
}
