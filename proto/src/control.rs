//! Control frames (RFC 6455 §5.5) one end owes the other, held in fixed storage until the
//! caller takes them, and encoded into at most 131 bytes without allocating.

use crate::frame::{encode_header, OpCode, MAX_CONTROL_PAYLOAD};
use crate::mask::apply_mask;

/// A control frame's payload held until it is sent.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ControlPayload {
    bytes: [u8; MAX_CONTROL_PAYLOAD],
    len: u8,
}

impl ControlPayload {
    pub(crate) fn new(data: &[u8]) -> Self {
        let len = data.len().min(MAX_CONTROL_PAYLOAD);
        let mut bytes = [0; MAX_CONTROL_PAYLOAD];
        bytes[..len].copy_from_slice(&data[..len]);
        ControlPayload {
            bytes,
            len: len as u8,
        }
    }

    /// §5.5.1: a 2-byte code then a UTF-8 reason, cut at a character boundary to fit 125 bytes.
    pub(crate) fn close(code: Option<u16>, reason: &str) -> Self {
        let Some(code) = code else {
            return ControlPayload::new(&[]);
        };
        let mut cut = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        let mut bytes = [0; MAX_CONTROL_PAYLOAD];
        bytes[..2].copy_from_slice(&code.to_be_bytes());
        bytes[2..2 + cut].copy_from_slice(&reason.as_bytes()[..cut]);
        ControlPayload {
            bytes,
            len: (2 + cut) as u8,
        }
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

/// The control frames one end owes the other, at most one of each kind.
#[derive(Debug, Default)]
pub(crate) struct OwedControl {
    /// §5.5.3: a pong answers the most recent ping, so a newer ping replaces an owed pong.
    pub(crate) pong: Option<ControlPayload>,
    pub(crate) ping: Option<ControlPayload>,
    pub(crate) close: Option<ControlPayload>,
}

impl OwedControl {
    pub(crate) fn is_empty(&self) -> bool {
        self.pong.is_none() && self.ping.is_none() && self.close.is_none()
    }
}

/// An encoded control frame ready to be written.
#[derive(Clone, Copy, Debug)]
pub struct ControlFrame {
    bytes: [u8; 6 + MAX_CONTROL_PAYLOAD],
    len: u8,
    opcode: OpCode,
}

impl ControlFrame {
    /// Encodes a control frame, masking it with `mask` (client role).
    pub(crate) fn encode(opcode: OpCode, data: &[u8], mask: Option<[u8; 4]>) -> Self {
        let header = encode_header(true, opcode, mask, data.len() as u64);
        let hlen = header.as_bytes().len();
        let mut frame = ControlFrame {
            bytes: [0; 6 + MAX_CONTROL_PAYLOAD],
            len: (hlen + data.len()) as u8,
            opcode,
        };
        frame.bytes[..hlen].copy_from_slice(header.as_bytes());
        frame.bytes[hlen..hlen + data.len()].copy_from_slice(data);
        if let Some(key) = mask {
            apply_mask(&mut frame.bytes[hlen..hlen + data.len()], key, 0);
        }
        frame
    }

    /// The frame bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }

    /// Ping, pong or close.
    pub fn opcode(&self) -> OpCode {
        self.opcode
    }
}
