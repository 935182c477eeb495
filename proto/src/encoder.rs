//! Framing the data messages one end sends: masked with fresh keys in the client role
//! (RFC 6455 §5.3), and compressed when permessage-deflate was agreed (RFC 7692 §7.2.1),
//! with RSV1 on the frame (§6).
//!
//! A [`MessageEncoder`] is the sending half of a connection, apart from the
//! [`Connection`](crate::Connection) that decodes what arrives, so that another thread (or a
//! scenario holding a message the connection handed out) can send while it receives. Make
//! one per connection: with context takeover, every message must go through the same
//! compressor, in the order the messages are written.

use crate::event::{MessageKind, Role};
use crate::frame::encode_frame;
use crate::mask::MaskKeys;

/// Frames outgoing data messages for one connection.
#[derive(Debug)]
pub struct MessageEncoder {
    /// Masking keys; present in the client role only.
    mask_keys: Option<MaskKeys>,
    /// permessage-deflate's sending half, when negotiated.
    #[cfg(feature = "deflate")]
    deflate: Option<Box<crate::deflate::Sending>>,
}

impl MessageEncoder {
    /// An encoder for `role` without compression; a client masks with `mask_keys`
    /// ([`MaskKeys::from_os`] on a real network, §5.3; a `u64` seed for repeatable keys),
    /// a server ignores them.
    pub fn new(role: Role, mask_keys: impl Into<MaskKeys>) -> Self {
        MessageEncoder {
            mask_keys: (role == Role::Client).then(|| mask_keys.into()),
            #[cfg(feature = "deflate")]
            deflate: None,
        }
    }

    /// Compresses as `agreed` for `role` (the agreement of
    /// [`crate::extension::negotiate`] or [`crate::extension::DeflateOffer::accept`]).
    #[cfg(feature = "deflate")]
    pub fn with_deflate(mut self, agreed: crate::extension::Negotiated, role: Role) -> Self {
        self.deflate = Some(Box::new(crate::deflate::Sending::new(agreed, role)));
        self
    }

    /// Whether a message of `len` bytes goes out compressed.
    pub fn compresses(&self, len: usize) -> bool {
        #[cfg(feature = "deflate")]
        if let Some(sending) = &self.deflate {
            return sending.outgoing(len) != crate::deflate::Outgoing::Plain;
        }
        let _ = len;
        false
    }

    /// The masking key for the next frame: a fresh one in the client role, none in the
    /// server's (§5.1: "A server MUST NOT mask any frames").
    pub fn next_mask(&mut self) -> Option<[u8; 4]> {
        self.mask_keys.as_mut().map(MaskKeys::next_key)
    }

    /// Appends `payload` to `out` as one whole frame: compressed if permessage-deflate was
    /// agreed and the message is worth it, masked in the client role.
    pub fn encode(&mut self, kind: MessageKind, payload: &[u8], out: &mut Vec<u8>) {
        let mask = self.next_mask();
        #[cfg(feature = "deflate")]
        if let Some(sending) = &mut self.deflate {
            use crate::deflate::Outgoing;
            let fresh = match sending.outgoing(payload.len()) {
                Outgoing::Plain => None,
                Outgoing::Fresh => Some(true),
                Outgoing::Stream => Some(false),
            };
            if let Some(fresh) = fresh {
                compressed_frame(out, kind, mask, |out| sending.compress(payload, out, fresh));
                return;
            }
        }
        encode_frame(out, true, kind.opcode(), mask, payload);
    }
}

/// Appends a frame with RSV1 whose payload `compress` appends: the payload is written after
/// room for the longest header, which then moves down behind the real one (no copy of the
/// payload into a second buffer).
#[cfg(feature = "deflate")]
fn compressed_frame(
    out: &mut Vec<u8>,
    kind: MessageKind,
    mask: Option<[u8; 4]>,
    compress: impl FnOnce(&mut Vec<u8>),
) {
    use crate::frame::{encode_header, MAX_HEADER_LEN};
    let start = out.len();
    out.resize(start + MAX_HEADER_LEN, 0);
    compress(out);
    let payload_at = start + MAX_HEADER_LEN;
    let len = out.len() - payload_at;
    let header = encode_header(true, kind.opcode(), mask, len as u64).compressed();
    let header = header.as_bytes();
    out.copy_within(payload_at.., start + header.len());
    out.truncate(start + header.len() + len);
    out[start..start + header.len()].copy_from_slice(header);
    if let Some(key) = mask {
        crate::mask::apply_mask(&mut out[start + header.len()..], key, 0);
    }
}
