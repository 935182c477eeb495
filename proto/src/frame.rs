//! The frame header of RFC 6455 §5.2: decoding (pure, over a byte slice) and encoding.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-------+-+-------------+-------------------------------+
//! |F|R|R|R| opcode|M| Payload len |    Extended payload length    |
//! |I|S|S|S|  (4)  |A|     (7)     |             (16/64)           |
//! |N|V|V|V|       |S|             |   (if payload len==126/127)   |
//! +-+-+-+-+-------+-+-------------+ - - - - - - - - - - - - - - - +
//! |     Extended payload length continued, if payload len == 127  |
//! + - - - - - - - - - - - - - - - +-------------------------------+
//! |                               |Masking-key, if MASK set to 1  |
//! +-------------------------------+-------------------------------+
//! ```

use super::error::ProtocolError;
use super::mask::apply_mask;

/// The largest header: 2 bytes, 8 bytes of extended length, 4 bytes of mask key.
pub const MAX_HEADER_LEN: usize = 14;
/// §5.5: control frames carry at most 125 bytes of payload.
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// The opcodes defined by §5.2 (the others are reserved and rejected when decoding).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpCode {
    /// 0x0: continues a fragmented message.
    Continuation,
    /// 0x1: UTF-8 text.
    Text,
    /// 0x2: binary data.
    Binary,
    /// 0x8: connection close.
    Close,
    /// 0x9: ping.
    Ping,
    /// 0xA: pong.
    Pong,
}

impl OpCode {
    /// Decodes the 4-bit opcode field.
    pub fn from_bits(bits: u8) -> Result<OpCode, ProtocolError> {
        match bits {
            0x0 => Ok(OpCode::Continuation),
            0x1 => Ok(OpCode::Text),
            0x2 => Ok(OpCode::Binary),
            0x8 => Ok(OpCode::Close),
            0x9 => Ok(OpCode::Ping),
            0xA => Ok(OpCode::Pong),
            other => Err(ProtocolError::ReservedOpcode(other)),
        }
    }

    /// The 4-bit value on the wire.
    pub fn bits(self) -> u8 {
        match self {
            OpCode::Continuation => 0x0,
            OpCode::Text => 0x1,
            OpCode::Binary => 0x2,
            OpCode::Close => 0x8,
            OpCode::Ping => 0x9,
            OpCode::Pong => 0xA,
        }
    }

    /// §5.5: opcodes with the high bit set are control frames.
    pub fn is_control(self) -> bool {
        self.bits() & 0x8 != 0
    }
}

/// A decoded frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// FIN: this is the final fragment of a message.
    pub fin: bool,
    /// The frame's opcode.
    pub opcode: OpCode,
    /// The masking key, present on every client-to-server frame.
    pub mask: Option<[u8; 4]>,
    /// The payload length as declared (not yet checked against any limit).
    pub payload_len: u64,
    /// RSV1, the "Per-Message Compressed" bit of permessage-deflate (RFC 7692 §6); only
    /// ever set when decoded with [`decode_header_ext`] allowing it.
    pub compressed: bool,
}

/// Decodes a frame header from the start of `buf`.
///
/// Returns `Ok(None)` when `buf` holds only part of a header (nothing is consumed), or the header
/// with its length in bytes. Rejects what can be judged from the header alone: reserved bits
/// (no extension negotiated), reserved opcodes, a 64-bit length with the top bit set,
/// and control frames that are fragmented or longer than 125 bytes.
pub fn decode_header(buf: &[u8]) -> Result<Option<(FrameHeader, usize)>, ProtocolError> {
    decode_header_ext(buf, false)
}

/// [`decode_header`] on a connection that may have negotiated permessage-deflate: with
/// `rsv1_allowed`, RSV1 marks a compressed data frame (RFC 7692 §6).
pub fn decode_header_ext(
    buf: &[u8],
    rsv1_allowed: bool,
) -> Result<Option<(FrameHeader, usize)>, ProtocolError> {
    let [b0, b1, ..] = *buf else {
        return Ok(None);
    };
    let fin = b0 & 0x80 != 0;
    let compressed = b0 & 0x40 != 0;
    // RFC 6455 §5.2: RSV1-3 "MUST be 0 unless an extension is negotiated that defines
    // meanings for non-zero values".
    if b0 & 0x30 != 0 || (compressed && !rsv1_allowed) {
        return Err(ProtocolError::ReservedBits);
    }
    let opcode = OpCode::from_bits(b0 & 0x0F)?;
    // RFC 7692 §6.1: "An endpoint MUST NOT set the "Per-Message Compressed" bit of control
    // frames"; receiving one fails the connection.
    if compressed && opcode.is_control() {
        return Err(ProtocolError::CompressedControlFrame);
    }
    let masked = b1 & 0x80 != 0;
    let (payload_len, mut pos) = match b1 & 0x7F {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => {
                let mut be = [0u8; 8];
                be.copy_from_slice(b);
                let len = u64::from_be_bytes(be);
                if len >> 63 != 0 {
                    return Err(ProtocolError::LengthTopBitSet);
                }
                (len, 10)
            }
            None => return Ok(None),
        },
        short => (u64::from(short), 2),
    };
    if opcode.is_control() {
        if !fin {
            return Err(ProtocolError::FragmentedControlFrame);
        }
        if payload_len > MAX_CONTROL_PAYLOAD as u64 {
            return Err(ProtocolError::ControlFrameTooLong);
        }
    }
    let mask = if masked {
        match buf.get(pos..pos + 4) {
            Some(k) => {
                pos += 4;
                Some([k[0], k[1], k[2], k[3]])
            }
            None => return Ok(None),
        }
    } else {
        None
    };
    Ok(Some((
        FrameHeader {
            fin,
            opcode,
            mask,
            payload_len,
            compressed,
        },
        pos,
    )))
}

/// An encoded header: up to 14 bytes on the stack.
#[derive(Clone, Copy, Debug)]
pub struct EncodedHeader {
    bytes: [u8; MAX_HEADER_LEN],
    len: u8,
}

impl EncodedHeader {
    /// The same header with RSV1 set: the first frame of a compressed message (RFC 7692 §6).
    pub fn compressed(mut self) -> Self {
        self.bytes[0] |= 0x40;
        self
    }

    /// The header bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

/// Encodes a header with the shortest length form (§5.2: "the minimal number of bytes MUST be
/// used to encode the length").
pub fn encode_header(
    fin: bool,
    opcode: OpCode,
    mask: Option<[u8; 4]>,
    payload_len: u64,
) -> EncodedHeader {
    let mut bytes = [0u8; MAX_HEADER_LEN];
    bytes[0] = (u8::from(fin) << 7) | opcode.bits();
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let mut len = match payload_len {
        0..=125 => {
            bytes[1] = mask_bit | payload_len as u8;
            2
        }
        126..=0xFFFF => {
            bytes[1] = mask_bit | 126;
            bytes[2..4].copy_from_slice(&(payload_len as u16).to_be_bytes());
            4
        }
        _ => {
            bytes[1] = mask_bit | 127;
            bytes[2..10].copy_from_slice(&payload_len.to_be_bytes());
            10
        }
    };
    if let Some(key) = mask {
        bytes[len..len + 4].copy_from_slice(&key);
        len += 4;
    }
    EncodedHeader {
        bytes,
        len: len as u8,
    }
}

/// Appends a whole frame (header and payload, masked when `mask` is given) to `out`.
pub fn encode_frame(
    out: &mut Vec<u8>,
    fin: bool,
    opcode: OpCode,
    mask: Option<[u8; 4]>,
    payload: &[u8],
) {
    let header = encode_header(fin, opcode, mask, payload.len() as u64);
    out.reserve(header.as_bytes().len() + payload.len());
    out.extend_from_slice(header.as_bytes());
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(key) = mask {
        apply_mask(&mut out[start..], key, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoded(buf: &[u8]) -> (FrameHeader, usize) {
        decode_header(buf).unwrap().unwrap()
    }

    #[test]
    fn rfc_5_7_unmasked_text() {
        // RFC 6455 §5.7: "A single-frame unmasked text message".
        let (h, n) = decoded(&[0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
        assert_eq!(
            (h.fin, h.opcode, h.mask, h.payload_len, n),
            (true, OpCode::Text, None, 5, 2)
        );
    }

    #[test]
    fn rfc_5_7_masked_text() {
        // RFC 6455 §5.7: "A single-frame masked text message".
        let (h, n) = decoded(&[0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f]);
        assert_eq!(h.mask, Some([0x37, 0xfa, 0x21, 0x3d]));
        assert_eq!((h.payload_len, n), (5, 6));
    }

    #[test]
    fn rfc_5_7_fragmented_text() {
        // RFC 6455 §5.7: "A fragmented unmasked text message": "Hel" then "lo".
        let (first, _) = decoded(&[0x01, 0x03, 0x48, 0x65, 0x6c]);
        let (second, _) = decoded(&[0x80, 0x02, 0x6c, 0x6f]);
        assert_eq!((first.fin, first.opcode), (false, OpCode::Text));
        assert_eq!((second.fin, second.opcode), (true, OpCode::Continuation));
    }

    #[test]
    fn rfc_5_7_ping_and_pong() {
        // RFC 6455 §5.7: unmasked Ping "Hello", masked Pong "Hello".
        let (ping, _) = decoded(&[0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
        assert_eq!(ping.opcode, OpCode::Ping);
        let (pong, n) = decoded(&[0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51]);
        assert_eq!((pong.opcode, n), (OpCode::Pong, 6));
    }

    #[test]
    fn rfc_5_7_length_forms() {
        // RFC 6455 §5.7: 256 bytes binary in one unmasked frame: 0x82 0x7E 0x0100.
        let (h, n) = decoded(&[0x82, 0x7e, 0x01, 0x00]);
        assert_eq!((h.opcode, h.payload_len, n), (OpCode::Binary, 256, 4));
        // 64 KiB binary in one unmasked frame: 0x82 0x7F 0x0000000000010000.
        let (h, n) = decoded(&[0x82, 0x7f, 0, 0, 0, 0, 0, 1, 0, 0]);
        assert_eq!((h.payload_len, n), (65536, 10));
    }

    #[test]
    fn encode_matches_rfc_bytes_for_each_length_form() {
        assert_eq!(
            encode_header(true, OpCode::Text, None, 5).as_bytes(),
            &[0x81, 0x05]
        );
        assert_eq!(
            encode_header(true, OpCode::Binary, None, 256).as_bytes(),
            &[0x82, 0x7e, 0x01, 0x00]
        );
        assert_eq!(
            encode_header(true, OpCode::Binary, None, 65536).as_bytes(),
            &[0x82, 0x7f, 0, 0, 0, 0, 0, 1, 0, 0]
        );
        let mut frame = Vec::new();
        encode_frame(
            &mut frame,
            true,
            OpCode::Text,
            Some([0x37, 0xfa, 0x21, 0x3d]),
            b"Hello",
        );
        assert_eq!(
            frame,
            [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]
        );
    }

    #[test]
    fn boundaries_of_length_forms_round_trip() {
        for len in [0u64, 125, 126, 65535, 65536, (1 << 63) - 1] {
            let h = encode_header(false, OpCode::Binary, Some([1, 2, 3, 4]), len);
            let (d, n) = decoded(h.as_bytes());
            assert_eq!((d.payload_len, d.fin, n), (len, false, h.as_bytes().len()));
        }
    }

    #[test]
    fn partial_headers_need_more() {
        let full = [0x82, 0xff, 0, 0, 0, 0, 0, 1, 0, 0, 9, 9, 9, 9];
        for cut in 0..full.len() {
            assert_eq!(decode_header(&full[..cut]), Ok(None), "cut at {cut}");
        }
        assert!(decode_header(&full).unwrap().is_some());
    }

    #[test]
    fn rsv1_only_where_permessage_deflate_allows_it() {
        // RFC 7692 §7.2.3.1: a compressed "Hello" frame header.
        assert_eq!(
            decode_header(&[0xc1, 0x07]),
            Err(ProtocolError::ReservedBits)
        );
        let (h, _) = decode_header_ext(&[0xc1, 0x07], true).unwrap().unwrap();
        assert!(h.compressed && h.fin);
        assert_eq!(
            decode_header_ext(&[0xc9, 0x00], true),
            Err(ProtocolError::CompressedControlFrame)
        );
        assert_eq!(
            decode_header_ext(&[0xa1, 0x00], true),
            Err(ProtocolError::ReservedBits)
        );
        assert_eq!(
            encode_header(true, OpCode::Text, None, 7)
                .compressed()
                .as_bytes(),
            &[0xc1, 0x07]
        );
    }

    #[test]
    fn header_level_violations() {
        assert_eq!(
            decode_header(&[0xc1, 0x80]),
            Err(ProtocolError::ReservedBits)
        );
        assert_eq!(
            decode_header(&[0x83, 0x80]),
            Err(ProtocolError::ReservedOpcode(3))
        );
        assert_eq!(
            decode_header(&[0x8b, 0x80]),
            Err(ProtocolError::ReservedOpcode(0xb))
        );
        assert_eq!(
            decode_header(&[0x09, 0x80]),
            Err(ProtocolError::FragmentedControlFrame)
        );
        assert_eq!(
            decode_header(&[0x89, 0xfe, 0, 126]),
            Err(ProtocolError::ControlFrameTooLong)
        );
        assert_eq!(
            decode_header(&[0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0]),
            Err(ProtocolError::LengthTopBitSet)
        );
    }
}
