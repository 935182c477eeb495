//! permessage-deflate (RFC 7692) on a connection: turning it on as negotiated, how each
//! outgoing message is sent, the connection's own compressor, and inflating what arrives,
//! bounded and UTF-8-checked as it grows.

use super::{Connection, Partial};
use crate::error::ProtocolError;
use crate::event::MessageKind;

impl Connection {
    /// Turns on permessage-deflate as negotiated in the handshake
    /// ([`crate::extension::negotiate`]): RSV1 frames are then inflated, and
    /// [`outgoing`](Self::outgoing) says how to send each message.
    pub fn with_deflate(mut self, agreed: crate::extension::Negotiated) -> Self {
        self.deflate = Some(Box::new(crate::deflate::Session::new(agreed, self.role)));
        self
    }

    /// What was negotiated for permessage-deflate, if anything.
    pub fn deflate(&self) -> Option<&crate::extension::Negotiated> {
        self.deflate.as_ref().map(|d| &d.sending.agreed)
    }

    /// How a message of `len` bytes goes out on this connection.
    pub fn outgoing(&self, len: usize) -> crate::deflate::Outgoing {
        self.deflate
            .as_ref()
            .map_or(crate::deflate::Outgoing::Plain, |d| d.sending.outgoing(len))
    }

    /// Appends `payload` compressed with this connection's own stream (context takeover) to
    /// `out`; send it as a frame with RSV1. Only for [`Outgoing::Stream`](crate::deflate::Outgoing):
    /// without permessage-deflate nothing is appended.
    pub fn compress(&mut self, payload: &[u8], out: &mut Vec<u8>) {
        if let Some(d) = &mut self.deflate {
            d.sending.compress(payload, out, false);
        }
    }

    /// Bytes this connection holds for compression (inflater and compressor state).
    pub fn compression_memory(&self) -> usize {
        self.deflate.as_ref().map_or(0, |d| d.memory())
    }
}

/// Inflates a piece of a compressed message onto `out`, or with `None` ends the message
/// (§7.2.2's tail), checking the inflated text as it grows: the limit applies to what
/// inflates (RFC 6455 §10.4), and an invalid text fails at its first bad byte even when the
/// compressed frame is not complete.
pub(super) fn inflate(
    session: &mut Option<Box<crate::deflate::Session>>,
    chunk: Option<&[u8]>,
    out: &mut Vec<u8>,
    message: &mut Partial,
    max_message: u64,
) -> Result<(), ProtocolError> {
    use crate::deflate::InflateError;
    // RSV1 is only accepted once negotiated, so the session is there.
    let Some(session) = session else {
        return Err(ProtocolError::ReservedBits);
    };
    let limit = usize::try_from(max_message).unwrap_or(usize::MAX);
    let before = out.len();
    let inflater = session.inflater();
    let result = match chunk {
        Some(chunk) => inflater.inflate(chunk, out, limit),
        None => inflater.finish_message(out, limit),
    };
    result.map_err(|e| match e {
        InflateError::Corrupt => ProtocolError::InvalidCompressedData,
        InflateError::TooLarge => ProtocolError::MessageTooLarge,
    })?;
    if chunk.is_none() {
        session.message_done();
    }
    if message.kind == MessageKind::Text {
        message
            .utf8
            .feed(&out[before..])
            .map_err(|_| ProtocolError::InvalidUtf8)?;
    }
    Ok(())
}
