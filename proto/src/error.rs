//! Protocol violations, one variant per rule of RFC 6455, and the close code each one earns.

use std::fmt;

use crate::code::{self, Policy};

/// A violation by the peer that fails the WebSocket connection (RFC 6455 §7.1.7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtocolError {
    /// §5.1: "The server MUST close the connection upon receiving a frame that is not masked."
    UnmaskedFrame,
    /// §5.1: "A client MUST close a connection if it detects a masked frame."
    MaskedFrame,
    /// §5.2: RSV1-3 "MUST be 0 unless an extension is negotiated".
    ReservedBits,
    /// §5.2: opcodes 0x3-0x7 and 0xB-0xF are reserved; "the receiving endpoint MUST _Fail_".
    ReservedOpcode(u8),
    /// §5.5: "All control frames MUST have a payload length of 125 bytes or less".
    ControlFrameTooLong,
    /// §5.5: "All control frames ... MUST NOT be fragmented."
    FragmentedControlFrame,
    /// §5.2: in the 64-bit length form "the most significant bit MUST be 0".
    LengthTopBitSet,
    /// §5.4: a continuation frame with no message in progress.
    UnexpectedContinuation,
    /// §5.4: a new text or binary frame while a fragmented message is in progress.
    ExpectedContinuation,
    /// §8.1: a text message (or close reason) that is not valid UTF-8.
    InvalidUtf8,
    /// §5.5.1: a close payload of exactly one byte cannot hold a status code.
    ClosePayloadTooShort,
    /// §7.4: a close code that is not allowed on the wire.
    InvalidCloseCode(u16),
    /// §5.5.1 / §8.1: a close reason that is not valid UTF-8.
    InvalidCloseReason,
    /// §10.4: a frame declaring more payload than this endpoint accepts.
    FrameTooLarge,
    /// §10.4: a message growing past the message size limit.
    MessageTooLarge,
    /// §10.4: a fragmented message made of more frames than allowed.
    TooManyFragments,
    /// RFC 7692 §6.1: "An endpoint MUST NOT set the "Per-Message Compressed" bit of control
    /// frames".
    CompressedControlFrame,
    /// RFC 7692 §6.1: nor "of non-first fragments of a data message".
    CompressedContinuation,
    /// RFC 7692 §7.2.2: a compressed message that does not inflate (invalid DEFLATE data).
    InvalidCompressedData,
    /// §10.4: more pings per second than this endpoint answers; each one owes a pong, so a
    /// flood of them would make the peer's input cost this end output without limit.
    PingFlood,
}

impl ProtocolError {
    /// The status code sent in the close frame that fails the connection (§7.4.1).
    pub fn close_code(self) -> u16 {
        match self {
            ProtocolError::UnmaskedFrame
            | ProtocolError::MaskedFrame
            | ProtocolError::ReservedBits
            | ProtocolError::ReservedOpcode(_)
            | ProtocolError::ControlFrameTooLong
            | ProtocolError::FragmentedControlFrame
            | ProtocolError::LengthTopBitSet
            | ProtocolError::UnexpectedContinuation
            | ProtocolError::ExpectedContinuation
            | ProtocolError::ClosePayloadTooShort
            | ProtocolError::InvalidCloseCode(_)
            | ProtocolError::CompressedControlFrame
            | ProtocolError::CompressedContinuation => code::PROTOCOL_ERROR,
            // The payload does not match the message's (compressed) type: 1007, as Node ws
            // and Python websockets answer it.
            ProtocolError::InvalidUtf8
            | ProtocolError::InvalidCloseReason
            | ProtocolError::InvalidCompressedData => code::INVALID_PAYLOAD,
            ProtocolError::FrameTooLarge
            | ProtocolError::MessageTooLarge
            | ProtocolError::TooManyFragments => code::MESSAGE_TOO_BIG,
            ProtocolError::PingFlood => Policy::PingFlood.code(),
        }
    }

    /// The reason sent in that close frame: short and stable (the longer text of `Display`
    /// is for logs and may carry details such as the offending code).
    pub fn wire_reason(self) -> &'static str {
        match self {
            ProtocolError::UnmaskedFrame => "client frame is not masked",
            ProtocolError::MaskedFrame => "server frame is masked",
            ProtocolError::ReservedBits => "reserved bits set without an extension",
            ProtocolError::ReservedOpcode(_) => "reserved opcode",
            ProtocolError::ControlFrameTooLong => "control frame over 125 bytes",
            ProtocolError::FragmentedControlFrame => "fragmented control frame",
            ProtocolError::LengthTopBitSet => "64-bit length with the top bit set",
            ProtocolError::UnexpectedContinuation => {
                "continuation frame without a message in progress"
            }
            ProtocolError::ExpectedContinuation => "new data frame inside a fragmented message",
            ProtocolError::InvalidUtf8 => "text message is not valid UTF-8",
            ProtocolError::ClosePayloadTooShort => "close payload of 1 byte",
            ProtocolError::InvalidCloseCode(_) => "invalid close code",
            ProtocolError::InvalidCloseReason => "close reason is not valid UTF-8",
            ProtocolError::FrameTooLarge => "frame larger than the limit",
            ProtocolError::MessageTooLarge => "message larger than the limit",
            ProtocolError::TooManyFragments => "message has too many fragments",
            ProtocolError::PingFlood => Policy::PingFlood.wire_reason(),
            ProtocolError::CompressedControlFrame => "compressed control frame",
            ProtocolError::CompressedContinuation => "RSV1 on a continuation frame",
            ProtocolError::InvalidCompressedData => "invalid compressed data",
        }
    }
}

impl fmt::Display for ProtocolError {
    /// The wire reason, with the offending value where there is one (for logs).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::ReservedOpcode(op) => write!(f, "reserved opcode {op:#x}"),
            ProtocolError::InvalidCloseCode(c) => write!(f, "invalid close code {c}"),
            _ => f.write_str(self.wire_reason()),
        }
    }
}

impl std::error::Error for ProtocolError {}
