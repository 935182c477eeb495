//! What a connection of the load generator sends: frames queued per connection, masked with
//! fresh keys (RFC 6455 §5.3) and compressed when permessage-deflate was agreed, written in
//! one go by the [`Driver`](crate::driver::Driver).

use wsloop::proto::frame::encode_header;
use wsloop::proto::mask::apply_mask;
use wsloop::proto::{MessageEncoder, MessageKind};

/// Frames queued for one connection, masked with fresh keys (§5.3) and compressed when
/// permessage-deflate was agreed, written in one go.
#[derive(Debug)]
pub struct Outbox {
    /// Frames not written yet (and, before that, the ones written this turn).
    pub(crate) buf: Vec<u8>,
    /// How much of `buf` the socket took.
    pub(crate) written: usize,
    /// Masks, and compresses as agreed once the handshake is done.
    pub(crate) encoder: MessageEncoder,
    /// A payload to be compressed is built here first.
    scratch: Vec<u8>,
}

impl Outbox {
    pub(crate) fn new(bytes: Vec<u8>, encoder: MessageEncoder) -> Self {
        Outbox {
            buf: bytes,
            written: 0,
            encoder,
            scratch: Vec::new(),
        }
    }

    /// Queues a data message in one frame.
    pub fn send(&mut self, kind: MessageKind, payload: &[u8]) {
        self.encoder.encode(kind, payload, &mut self.buf);
    }

    /// Queues a data message of `len` bytes that `fill` writes: in place in the frame when
    /// it goes out plain (no copy of a payload built elsewhere), else in a scratch buffer
    /// that is then compressed.
    pub fn send_with(&mut self, kind: MessageKind, len: usize, fill: impl FnOnce(&mut [u8])) {
        if self.encoder.compresses(len) {
            self.scratch.resize(len, 0);
            fill(&mut self.scratch);
            self.encoder.encode(kind, &self.scratch, &mut self.buf);
            return;
        }
        let key = self.encoder.next_mask();
        let header = encode_header(true, kind.opcode(), key, len as u64);
        self.buf.extend_from_slice(header.as_bytes());
        let start = self.buf.len();
        self.buf.resize(start + len, 0);
        fill(&mut self.buf[start..]);
        if let Some(key) = key {
            apply_mask(&mut self.buf[start..], key, 0);
        }
    }

    pub(crate) fn is_flushed(&self) -> bool {
        self.written == self.buf.len()
    }
}
