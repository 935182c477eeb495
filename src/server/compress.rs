//! Outgoing messages framed as each connection agreed in its handshake: plain, or compressed
//! by permessage-deflate (RFC 7692), either on their own with one compressor the whole loop
//! shares (`server_no_context_takeover`) or with the connection's own stream.

use std::sync::Arc;

use super::outbound::{OutQueue, OutStorage};
use crate::proto::frame::encode_frame;
#[cfg(feature = "deflate")]
use crate::proto::{
    deflate::{Deflater, Outgoing},
    frame::encode_header,
};
use crate::proto::{Connection, MessageKind};

/// The loop's compression state: one compressor for every message compressed on its own
/// (it is reset before each), and the buffer compressed payloads are built in.
#[derive(Debug, Default)]
pub(crate) struct Compressor {
    #[cfg(feature = "deflate")]
    fresh: Option<Deflater>,
    #[cfg(feature = "deflate")]
    scratch: Vec<u8>,
}

/// The scratch buffer is kept up to this size between messages.
#[cfg(feature = "deflate")]
const RETAINED_SCRATCH: usize = 64 * 1024;

impl Compressor {
    /// Frames one message for `ws` into `out`, compressed if the connection agreed to it
    /// and the message is worth it.
    pub(crate) fn push(
        &mut self,
        out: &mut OutQueue,
        ws: &mut Connection,
        kind: MessageKind,
        payload: &[u8],
    ) {
        #[cfg(feature = "deflate")]
        {
            let compressed = match ws.outgoing(payload.len()) {
                Outgoing::Plain => None,
                Outgoing::Fresh => Some(self.compress_fresh(ws, payload)),
                Outgoing::Stream => {
                    self.scratch.clear();
                    ws.compress(payload, &mut self.scratch);
                    Some(&self.scratch[..])
                }
            };
            if let Some(compressed) = compressed {
                out.push_compressed(kind.opcode(), compressed);
                self.trim();
                return;
            }
        }
        #[cfg(not(feature = "deflate"))]
        let _ = ws;
        out.push_frame(kind.opcode(), payload);
    }

    /// `payload` compressed on its own, in the scratch buffer.
    #[cfg(feature = "deflate")]
    fn compress_fresh(&mut self, ws: &Connection, payload: &[u8]) -> &[u8] {
        let level = ws.deflate().map_or(6, |agreed| agreed.level);
        self.scratch.clear();
        self.fresh
            .get_or_insert_with(|| Deflater::new(level))
            .compress_message(payload, &mut self.scratch, true);
        &self.scratch
    }

    #[cfg(feature = "deflate")]
    fn trim(&mut self) {
        if self.scratch.capacity() > RETAINED_SCRATCH {
            self.scratch = Vec::new();
        }
    }
}

/// Where a broadcast's plain frame was encoded.
enum Plain {
    /// In the turn's buffer (`OutStorage`), at this range.
    Turn((u32, u32)),
    /// Too long for it: on its own.
    Shared(Arc<[u8]>),
}

/// One broadcast's frames: the plain frame and the frame compressed on its own are each
/// encoded at most once and shared by every receiver that takes them; only receivers with
/// context takeover need a compression of their own.
pub(crate) struct Broadcast<'p> {
    kind: MessageKind,
    payload: &'p [u8],
    plain: Option<Plain>,
    #[cfg(feature = "deflate")]
    fresh: Option<Arc<[u8]>>,
    /// Encodings done (shared frames and per-receiver compressions).
    pub(crate) encodes: u64,
}

impl<'p> Broadcast<'p> {
    pub(crate) fn new(kind: MessageKind, payload: &'p [u8]) -> Self {
        Broadcast {
            kind,
            payload,
            plain: None,
            #[cfg(feature = "deflate")]
            fresh: None,
            encodes: 0,
        }
    }

    /// Queues the message for `ws`; a plain frame is encoded into the turn's buffer in
    /// `storage` (see [`OutStorage::push_turn_frame`]).
    pub(crate) fn push(
        &mut self,
        out: &mut OutQueue,
        ws: &mut Connection,
        compressor: &mut Compressor,
        storage: &mut OutStorage,
    ) {
        #[cfg(feature = "deflate")]
        match ws.outgoing(self.payload.len()) {
            Outgoing::Plain => {}
            Outgoing::Fresh => {
                if self.fresh.is_none() {
                    let compressed = compressor.compress_fresh(ws, self.payload);
                    let header =
                        encode_header(true, self.kind.opcode(), None, compressed.len() as u64)
                            .compressed();
                    let mut frame = Vec::with_capacity(header.as_bytes().len() + compressed.len());
                    frame.extend_from_slice(header.as_bytes());
                    frame.extend_from_slice(compressed);
                    self.fresh = Some(frame.into());
                    self.encodes += 1;
                    compressor.trim();
                }
                if let Some(frame) = &self.fresh {
                    out.push_shared(Arc::clone(frame));
                }
                return;
            }
            Outgoing::Stream => {
                compressor.push(out, ws, self.kind, self.payload);
                self.encodes += 1;
                return;
            }
        }
        #[cfg(not(feature = "deflate"))]
        let _ = (ws, compressor);
        if self.plain.is_none() {
            let (kind, payload) = (self.kind, self.payload);
            let encode = |frame: &mut Vec<u8>| {
                encode_frame(frame, true, kind.opcode(), None, payload);
            };
            self.plain = Some(match storage.push_turn_frame(encode) {
                Some(range) => Plain::Turn(range),
                None => {
                    let mut frame = Vec::new();
                    encode(&mut frame);
                    Plain::Shared(frame.into())
                }
            });
            self.encodes += 1;
        }
        match &self.plain {
            Some(Plain::Turn(range)) => out.push_turn(*range),
            Some(Plain::Shared(frame)) => out.push_shared(Arc::clone(frame)),
            None => {}
        }
    }
}
