//! Close frames: status codes (RFC 6455 §7.4) and the close payload (§5.5.1).

use crate::code::is_valid_wire_code;
use crate::error::ProtocolError;

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
