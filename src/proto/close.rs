//! Close frames: status codes (RFC 6455 §7.4) and the close payload (§5.5.1).

use super::error::ProtocolError;

/// Status codes of RFC 6455 §7.4.1 that this crate sends.
pub mod code {
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
}

/// Whether `code` may appear in a close frame on the wire (§7.4.1, §7.4.2 and the IANA
/// registry): 1000-1003, 1007-1014 and the 3000-4999 ranges for libraries and applications.
/// 1004 is reserved, 1005, 1006 and 1015 "MUST NOT be set as a status code in a Close control
/// frame", everything else below 3000 is unassigned and 5000+ is undefined.
pub fn is_valid_wire_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// The contents of a received close frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CloseFrame<'a> {
    /// The status code; `None` for an empty close payload (§7.1.5: "no status code").
    pub code: Option<u16>,
    /// The reason, already checked to be UTF-8.
    pub reason: &'a str,
}

/// Parses the payload of a close frame (§5.5.1): empty, or a 2-byte big-endian code followed
/// by a UTF-8 reason.
pub fn parse_close_payload(payload: &[u8]) -> Result<CloseFrame<'_>, ProtocolError> {
    match payload {
        [] => Ok(CloseFrame {
            code: None,
            reason: "",
        }),
        [_] => Err(ProtocolError::ClosePayloadTooShort),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !is_valid_wire_code(code) {
                return Err(ProtocolError::InvalidCloseCode(code));
            }
            let reason =
                std::str::from_utf8(reason).map_err(|_| ProtocolError::InvalidCloseReason)?;
            Ok(CloseFrame {
                code: Some(code),
                reason,
            })
        }
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
    fn autobahn_7_9_invalid_codes_are_rejected() {
        for c in [
            0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ] {
            assert!(!is_valid_wire_code(c), "{c}");
            let bytes = c.to_be_bytes();
            assert_eq!(
                parse_close_payload(&bytes),
                Err(ProtocolError::InvalidCloseCode(c))
            );
        }
    }

    #[test]
    fn payload_forms() {
        assert_eq!(parse_close_payload(&[]).unwrap().code, None);
        assert_eq!(
            parse_close_payload(&[0x03]),
            Err(ProtocolError::ClosePayloadTooShort)
        );
        let ok = parse_close_payload(b"\x03\xe8bye").unwrap();
        assert_eq!((ok.code, ok.reason), (Some(1000), "bye"));
        // Autobahn 7.5.1: a reason with an invalid UTF-8 sequence.
        assert_eq!(
            parse_close_payload(b"\x03\xe8\xce\xba\xed\xa0\x80"),
            Err(ProtocolError::InvalidCloseReason)
        );
    }
}
