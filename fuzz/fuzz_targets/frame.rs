//! `decode_header` on arbitrary bytes never panics, and:
//! - a decoded header is at most 14 bytes (and at least 2) and no longer than the input;
//! - re-encoding it with `encode_header` and decoding again gives the same header, in no more
//!   bytes than the original (the encoder uses the minimal length form, RFC 6455 §5.2);
//! - every strict prefix of a decoded header is "need more" (nothing consumed), and 14 bytes
//!   always decide;
//! - an error is one that can be judged from a header and maps to close code 1002.
//!
//! A second check encodes a header built from the input and decodes it back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsloop_proto::close_code;
use wsloop_proto::frame::{decode_header, encode_header, FrameHeader, MAX_HEADER_LEN};
use wsloop_proto::{OpCode, ProtocolError};

fuzz_target!(|data: &[u8]| {
    match decode_header(data) {
        Ok(Some((header, used))) => {
            assert!((2..=MAX_HEADER_LEN).contains(&used), "used {used}");
            assert!(used <= data.len());
            let encoded = encode_header(header.fin, header.opcode, header.mask, header.payload_len);
            let bytes = encoded.as_bytes();
            assert!(
                bytes.len() <= used,
                "{bytes:02x?} longer than {:02x?}",
                &data[..used]
            );
            assert_eq!(bytes[0], data[0], "FIN, RSV and opcode are kept");
            assert_eq!(bytes[1] & 0x80, data[1] & 0x80, "MASK is kept");
            assert_eq!(decode_header(bytes), Ok(Some((header, bytes.len()))));
            for cut in 0..used {
                assert_eq!(decode_header(&data[..cut]), Ok(None), "prefix of {cut}");
            }
        }
        Ok(None) => assert!(data.len() < MAX_HEADER_LEN, "14 bytes always decide"),
        Err(e) => {
            assert!(
                matches!(
                    e,
                    ProtocolError::ReservedBits
                        | ProtocolError::ReservedOpcode(_)
                        | ProtocolError::LengthTopBitSet
                        | ProtocolError::FragmentedControlFrame
                        | ProtocolError::ControlFrameTooLong
                ),
                "{e:?} is not a header-level error"
            );
            assert_eq!(e.close_code(), close_code::PROTOCOL_ERROR);
            // More bytes do not change the verdict.
            let mut longer = data.to_vec();
            longer.extend_from_slice(&[0xff; MAX_HEADER_LEN]);
            assert_eq!(decode_header(&longer), Err(e));
        }
    }

    // The other direction: any valid header encodes and decodes back to itself.
    if let [b0, b1, k0, k1, k2, k3, l @ ..] = data {
        if l.len() < 8 {
            return;
        }
        let opcode = [
            OpCode::Continuation,
            OpCode::Text,
            OpCode::Binary,
            OpCode::Close,
            OpCode::Ping,
            OpCode::Pong,
        ][usize::from(*b0 % 6)];
        let mut fin = b0 & 0x80 != 0;
        let mask = (b1 & 1 != 0).then_some([*k0, *k1, *k2, *k3]);
        let mut len = u64::from_be_bytes([l[0], l[1], l[2], l[3], l[4], l[5], l[6], l[7]]) >> 1;
        // Spread lengths over the three forms, not only the 64-bit one.
        len >>= (b1 >> 1) % 64;
        if opcode.is_control() {
            fin = true;
            len %= 126;
        }
        let header = FrameHeader {
            fin,
            compressed: false,
            opcode,
            mask,
            payload_len: len,
        };
        let encoded = encode_header(fin, opcode, mask, len);
        let bytes = encoded.as_bytes();
        let want_len = match len {
            0..=125 => 2,
            126..=0xffff => 4,
            _ => 10,
        } + if mask.is_some() { 4 } else { 0 };
        assert_eq!(bytes.len(), want_len);
        assert_eq!(decode_header(bytes), Ok(Some((header, want_len))));
    }
});
