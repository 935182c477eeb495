//! Frames reflected by a server that sends the client's own bytes back (`--accept-masked`):
//! rewritten as a server would have sent them, so that the protocol core can take them.

use wsloop::proto::frame::{decode_header, encode_header};
use wsloop::proto::mask::apply_mask;

use super::driver::READ_CHUNK;

/// Rewrites the complete frames at the start of `buf` as a server would have sent them:
/// payload unmasked, header without the mask key. This is for a server that reflects the
/// client's bytes unchanged (`raw-echo --mode bytes`, the bare TCP ceiling of the benchmarks),
/// whose masked frames RFC 6455 §5.1 would have this client refuse. An incomplete frame at the
/// end is moved down behind the rewritten ones, untouched, to be rewritten once whole.
/// Returns the length of the rewritten frames and of all the bytes left.
pub fn unmask_reflected(buf: &mut [u8]) -> Result<(usize, usize), String> {
    let (mut read, mut write) = (0, 0);
    while let Some((header, header_len)) = decode_header(&buf[read..]).map_err(|e| e.to_string())? {
        let payload_len = header.payload_len as usize;
        let total = header_len.saturating_add(payload_len);
        if total > READ_CHUNK {
            return Err(format!("a {total}-byte frame does not fit the read buffer"));
        }
        if buf.len() - read < total {
            break;
        }
        let plain = encode_header(header.fin, header.opcode, None, header.payload_len);
        let plain = plain.as_bytes();
        // The header only shrinks, so the payload moves down (or stays).
        let payload_at = write + plain.len();
        buf.copy_within(read + header_len..read + total, payload_at);
        buf[write..payload_at].copy_from_slice(plain);
        if let Some(key) = header.mask {
            apply_mask(&mut buf[payload_at..payload_at + payload_len], key, 0);
        }
        read += total;
        write = payload_at + payload_len;
    }
    let len = buf.len();
    buf.copy_within(read..len, write);
    Ok((write, write + len - read))
}

#[cfg(test)]
mod tests {
    use super::*;
    use wsloop::proto::frame::encode_frame;
    use wsloop::proto::OpCode;

    #[test]
    fn reflected_frames_lose_their_masks_and_a_partial_one_waits() {
        let key = Some([0x37, 0xfa, 0x21, 0x3d]);
        let mut wire = Vec::new();
        encode_frame(&mut wire, true, OpCode::Text, key, b"Hello");
        encode_frame(&mut wire, true, OpCode::Binary, key, &[9; 300]);
        let whole = wire.len();
        encode_frame(&mut wire, true, OpCode::Text, key, b"later");
        // The third frame has only its header and two payload bytes so far.
        wire.truncate(whole + 2 + 4 + 2);
        let partial = wire[whole..].to_vec();
        let (rewritten, left) = unmask_reflected(&mut wire).unwrap();
        let mut want = Vec::new();
        encode_frame(&mut want, true, OpCode::Text, None, b"Hello");
        encode_frame(&mut want, true, OpCode::Binary, None, &[9; 300]);
        assert_eq!(&wire[..rewritten], &want[..]);
        assert_eq!(&wire[rewritten..left], &partial[..]);
        // Once whole, it is rewritten too.
        let mut full = Vec::new();
        encode_frame(&mut full, true, OpCode::Text, key, b"later");
        let (rewritten, left) = unmask_reflected(&mut full).unwrap();
        assert_eq!((rewritten, left), (7, 7));
        assert_eq!(&full[..7], b"\x81\x05later");
        // A frame that cannot fit the read buffer is an error, not a wait forever.
        let mut huge = Vec::new();
        encode_frame(&mut huge, true, OpCode::Binary, key, &vec![0; READ_CHUNK]);
        huge.truncate(100);
        assert!(unmask_reflected(&mut huge).is_err());
    }
}
