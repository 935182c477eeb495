//! The compression of permessage-deflate (RFC 7692 §7.2): raw DEFLATE with the
//! `00 00 ff ff` tail removed on the way out and put back on the way in, inflation bounded
//! as it happens.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use crate::event::Role;
use crate::extension::Negotiated;

/// §7.2.1: the bytes a sync flush ends with, removed from each compressed message and
/// appended again before inflating (§7.2.2).
pub const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Output is produced at most this much at a time, so that a limit is noticed within one
/// step of being crossed and nothing is reserved for what a header merely promises.
const INFLATE_STEP: usize = 16 * 1024;
/// The least room given to one step, however short the input.
const MIN_INFLATE_STEP: usize = 256;

/// What went wrong while inflating.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InflateError {
    /// Not valid DEFLATE data.
    Corrupt,
    /// The inflated message would exceed the limit.
    TooLarge,
}

/// An inflater for one direction of one connection.
pub struct Inflater {
    raw: Decompress,
    /// The sender ended its DEFLATE stream (a block with BFINAL) and nothing followed yet.
    ended: bool,
    /// A stream ended in the message in progress (see [`Inflater::inflate`]).
    ended_in_message: bool,
}

impl std::fmt::Debug for Inflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inflater")
            .field("ended", &self.ended)
            .field("ended_in_message", &self.ended_in_message)
            .finish()
    }
}

impl Default for Inflater {
    fn default() -> Self {
        Self::new()
    }
}

impl Inflater {
    /// A fresh raw inflater (a 32 KiB window, enough for any agreed window size).
    pub fn new() -> Self {
        Inflater {
            raw: Decompress::new(false),
            ended: false,
            ended_in_message: false,
        }
    }

    /// Inflates `input` (part of a message's compressed payload) onto the end of `out`,
    /// failing with [`InflateError::TooLarge`] as soon as `out` would grow past `limit`:
    /// at most the limit plus one byte are ever written, whatever the
    /// ratio, so a bomb costs bounded memory and CPU proportional to the limit.
    pub fn inflate(
        &mut self,
        mut input: &[u8],
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Result<(), InflateError> {
        while !input.is_empty() {
            // Bytes after a final block start a new stream (§7.2.3.4's example ends its
            // BFINAL block with a 0x00 that, with the tail, is an empty stored block).
            self.ended = false;
            let start = out.len();
            // Room in proportion to the input, so that a stream of tiny frames does not
            // clear 16 KiB per byte; a step that fills it just loops again.
            let room = INFLATE_STEP
                .min(input.len().saturating_mul(8).max(MIN_INFLATE_STEP))
                .min(limit.saturating_sub(start).saturating_add(1));
            // Grow by doubling, never past the limit (plus the byte that detects crossing it).
            if start + room > out.capacity() {
                let target = (2 * out.capacity())
                    .max(start + room)
                    .min(limit.saturating_add(1));
                out.reserve_exact(target.max(start + room) - start);
            }
            out.resize(start + room, 0);
            let (in_before, out_before) = (self.raw.total_in(), self.raw.total_out());
            let status = self
                .raw
                .decompress(input, &mut out[start..], FlushDecompress::Sync);
            let used = (self.raw.total_in() - in_before) as usize;
            let produced = (self.raw.total_out() - out_before) as usize;
            out.truncate(start + produced);
            input = &input[used.min(input.len())..];
            if out.len() > limit {
                return Err(InflateError::TooLarge);
            }
            match status {
                // §7.2.3.4: a sender may end a message with a final block; the bytes after
                // it (with the tail, an empty block) start a new stream. A second end in one
                // message is no sender's way of flushing, and each end costs a reset that
                // clears the 32 KiB window: refused, so that a message of two-byte final
                // blocks cannot buy 32 KiB of work with every two bytes.
                Ok(Status::StreamEnd) if self.ended_in_message => {
                    return Err(InflateError::Corrupt)
                }
                Ok(Status::StreamEnd) => {
                    self.raw.reset(false);
                    self.ended = true;
                    self.ended_in_message = true;
                }
                Ok(Status::Ok) if used > 0 || produced > 0 => {}
                // No progress with room to write: the input cannot be inflated.
                Ok(Status::Ok | Status::BufError) | Err(_) => return Err(InflateError::Corrupt),
            }
        }
        Ok(())
    }

    /// Ends a message (§7.2.2: "Append 4 octets of 0x00 0x00 0xff 0xff to the tail end of
    /// the payload of the message" and inflate). A message whose last block was final
    /// needs no tail: the next one starts a fresh stream.
    pub fn finish_message(&mut self, out: &mut Vec<u8>, limit: usize) -> Result<(), InflateError> {
        if !self.ended {
            self.inflate(&TAIL, out, limit)?;
        }
        self.ended = false;
        self.ended_in_message = false;
        Ok(())
    }

    /// Forgets the window (no context takeover).
    pub fn reset(&mut self) {
        self.raw.reset(false);
        self.ended = false;
        self.ended_in_message = false;
    }
}

/// A compressor for one direction: one connection's stream (context takeover), or one
/// shared by every message compressed on its own.
pub struct Deflater {
    raw: Compress,
}

impl std::fmt::Debug for Deflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deflater").finish_non_exhaustive()
    }
}

impl Deflater {
    /// A raw compressor at `level` (0-9).
    pub fn new(level: u8) -> Self {
        Deflater {
            raw: Compress::new(Compression::new(u32::from(level.min(9))), false),
        }
    }

    /// Appends the compressed payload of one message to `out` (§7.2.1: compress, flush to a
    /// byte boundary, and "Remove 4 octets (that are 0x00 0x00 0xff 0xff) from the tail end").
    /// `fresh`: forget earlier messages first (no context takeover).
    pub fn compress_message(&mut self, payload: &[u8], out: &mut Vec<u8>, fresh: bool) {
        if fresh {
            self.raw.reset();
        }
        let start = out.len();
        let mut input = payload;
        loop {
            out.reserve(input.len() / 2 + 64);
            let before = self.raw.total_in();
            // Compressing into a Vec cannot fail: the stream is always in a valid state.
            let _ = self.raw.compress_vec(input, out, FlushCompress::Sync);
            input = &input[(self.raw.total_in() - before) as usize..];
            // Done when all input is taken and the flush fit (room was left over).
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
        }
        if out[start..].ends_with(&TAIL) {
            out.truncate(out.len() - TAIL.len());
        }
        if out.len() == start {
            // §7.2.3.6: an empty message is sent as a single 0x00 (an empty stored block
            // would also do; the receiver appends the tail either way).
            out.push(0x00);
        }
    }
}

/// How one outgoing message is sent on a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outgoing {
    /// As is, RSV1 clear (nothing negotiated, or below the threshold or over the window).
    Plain,
    /// Compressed on its own (`server_no_context_takeover`): any [`Deflater`] will do, and
    /// the bytes are the same for every such receiver, so a broadcast compresses once.
    Fresh,
    /// Compressed with this connection's own stream ([`crate::Connection::compress`]).
    Stream,
}

/// What one end needs to compress what it sends: the agreement, the role it plays in it
/// (which parameters govern its sending), and, once used, its own compressor.
#[derive(Debug)]
pub(crate) struct Sending {
    pub(crate) agreed: Negotiated,
    role: Role,
    /// Boxed: zlib-rs keeps its stream inline, and an idle connection should not carry it.
    deflater: Option<Box<Deflater>>,
}

impl Sending {
    pub(crate) fn new(agreed: Negotiated, role: Role) -> Self {
        Sending {
            agreed,
            role,
            deflater: None,
        }
    }

    pub(crate) fn outgoing(&self, len: usize) -> Outgoing {
        self.agreed.outgoing(self.role, len)
    }

    /// Appends `payload` compressed with this end's own compressor; `fresh`: on its own.
    pub(crate) fn compress(&mut self, payload: &[u8], out: &mut Vec<u8>, fresh: bool) {
        let level = self.agreed.level;
        self.deflater
            .get_or_insert_with(|| Box::new(Deflater::new(level)))
            .compress_message(payload, out, fresh);
    }

    fn memory(&self) -> usize {
        self.deflater.as_ref().map_or(0, |_| DEFLATER_BYTES)
    }
}

/// A connection's permessage-deflate state: what was agreed, and the inflater and
/// compressor, each allocated only while needed (an inflater for a message in progress or,
/// with context takeover, for the connection's life; a compressor only with context takeover).
#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) sending: Sending,
    /// Boxed like the compressor.
    inflater: Option<Box<Inflater>>,
}

/// What a boxed inflater holds once used (zlib-rs: its state and the 32 KiB window), for
/// memory accounting; `proto/tests/inflate_cost.rs` checks it against an allocator's count.
pub const INFLATER_BYTES: usize = 47_712;
/// What a boxed compressor holds once used (zlib-rs at memory level 8: window, hash chains,
/// output buffer), for memory accounting; checked the same way.
pub const DEFLATER_BYTES: usize = 380_176;

impl Session {
    pub(crate) fn new(agreed: Negotiated, role: Role) -> Self {
        Session {
            sending: Sending::new(agreed, role),
            inflater: None,
        }
    }

    /// The inflater for the message in progress.
    pub(crate) fn inflater(&mut self) -> &mut Inflater {
        self.inflater.get_or_insert_with(Box::default)
    }

    /// A compressed message is complete: when the peer compresses each message on its own,
    /// the window is of no further use, and the inflater's memory goes back.
    pub(crate) fn message_done(&mut self) {
        let peer = match self.sending.role {
            Role::Server => Role::Client,
            Role::Client => Role::Server,
        };
        if self.sending.agreed.sender_rules(peer).0 {
            self.inflater = None;
        }
    }

    /// Bytes held for compression now (approximate: the backend's state sizes).
    pub(crate) fn memory(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.inflater.as_ref().map_or(0, |_| INFLATER_BYTES)
            + self.sending.memory()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inflate_all(parts: &[&[u8]], limit: usize) -> Result<Vec<u8>, InflateError> {
        let mut i = Inflater::new();
        let mut out = Vec::new();
        for p in parts {
            i.inflate(p, &mut out, limit)?;
        }
        i.finish_message(&mut out, limit)?;
        Ok(out)
    }

    /// RFC 7692 §7.2.3.1: "Hello" compressed in one block.
    const HELLO: [u8; 7] = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];

    #[test]
    fn rfc_7692_7_2_3_1_hello() {
        assert_eq!(inflate_all(&[&HELLO], 100).unwrap(), b"Hello");
        // Split anywhere (a fragmented message, §7.2.3.1's second example cuts after 3).
        for cut in 0..HELLO.len() {
            let (a, b) = HELLO.split_at(cut);
            assert_eq!(inflate_all(&[a, b], 100).unwrap(), b"Hello", "cut {cut}");
        }
        let mut out = Vec::new();
        Deflater::new(6).compress_message(b"Hello", &mut out, true);
        assert_eq!(out, HELLO);
    }

    #[test]
    fn rfc_7692_7_2_3_2_context_takeover() {
        // The second "Hello" with the first one's window: a back-reference.
        let mut i = Inflater::new();
        let mut out = Vec::new();
        i.inflate(&HELLO, &mut out, 100).unwrap();
        i.finish_message(&mut out, 100).unwrap();
        out.clear();
        i.inflate(&[0xf2, 0x00, 0x11, 0x00, 0x00], &mut out, 100)
            .unwrap();
        i.finish_message(&mut out, 100).unwrap();
        assert_eq!(out, b"Hello");
        let mut d = Deflater::new(6);
        let mut wire = Vec::new();
        d.compress_message(b"Hello", &mut wire, false);
        wire.clear();
        d.compress_message(b"Hello", &mut wire, false);
        assert_eq!(wire, [0xf2, 0x00, 0x11, 0x00, 0x00]);
    }

    #[test]
    fn rfc_7692_7_2_3_3_uncompressed_block_and_7_2_3_4_bfinal() {
        // §7.2.3.3: "Hello" in a stored block.
        let stored = [
            0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00,
        ];
        assert_eq!(inflate_all(&[&stored], 100).unwrap(), b"Hello");
        // §7.2.3.4: "Hello" in a final block (BFINAL set) with the empty block that follows.
        let bfinal = [0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00];
        assert_eq!(inflate_all(&[&bfinal], 100).unwrap(), b"Hello");
    }

    #[test]
    fn a_bomb_is_refused_before_memory_grows() {
        let mut bomb = Vec::new();
        Deflater::new(9).compress_message(&vec![0u8; 8 << 20], &mut bomb, true);
        assert!(bomb.len() < 64 * 1024, "{}", bomb.len());
        let mut out = Vec::new();
        let err = Inflater::new().inflate(&bomb, &mut out, 1 << 20);
        assert_eq!(err, Err(InflateError::TooLarge));
        assert!(out.capacity() <= (1 << 20) + 1, "{}", out.capacity());
    }

    #[test]
    fn garbage_is_corrupt_not_a_panic() {
        // BTYPE 11 is reserved (RFC 1951 §3.2.3).
        assert_eq!(
            inflate_all(&[&[0xff, 0xff, 0xff]], 100),
            Err(InflateError::Corrupt)
        );
        // A stored block whose NLEN is not the complement of LEN.
        let bad_len = [0x00, 0x05, 0x00, 0x00, 0x00];
        assert_eq!(inflate_all(&[&bad_len], 100), Err(InflateError::Corrupt));
    }

    #[test]
    fn round_trips_and_empty_message() {
        let text: Vec<u8> = (0..100_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        for payload in [&b""[..], b"a", &text] {
            let mut wire = Vec::new();
            Deflater::new(1).compress_message(payload, &mut wire, true);
            assert_eq!(inflate_all(&[&wire], 1 << 22).unwrap(), payload);
        }
    }
}
