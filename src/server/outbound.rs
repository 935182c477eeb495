//! A connection's outbound queue: frames waiting for the socket to accept them.
//!
//! Bytes encoded for this connection alone are appended to owned buffers; a broadcast frame is
//! encoded once into the loop turn's buffer, which every receiver's queue refers to by range
//! (a long one is shared on its own, `Arc`). Writing gathers up to `MAX_IOVECS` pieces into
//! one vectored write, so a burst of replies or broadcasts costs one system call.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::sync::Arc;

use super::pool::{BufferPool, Pool};
use crate::proto::frame::{encode_header, EncodedHeader, OpCode};

/// Pieces gathered into one `writev`.
const MAX_IOVECS: usize = 64;
/// Up to this many pieces are gathered in a smaller array (cheaper to set up).
const FEW_IOVECS: usize = 16;
/// An owned buffer is not grown past this by small frames; a new one is started instead, so
/// a buffer that has been written can be recycled while the rest waits.
const OWNED_CHUNK_TARGET: usize = 64 * 1024;
/// Written buffers up to this capacity are kept for reuse (no allocation per message).
const SPARE_CAPACITY: usize = 64 * 1024;
/// Chunk lists up to this many slots go back to the pool; a longer one (a queue that backed
/// up) is freed.
const POOLED_SLOTS: usize = MAX_IOVECS;

/// A broadcast frame at most this long goes into the turn's buffer; a longer one is shared
/// on its own (a receiver that cannot take it keeps only that frame, not the whole turn).
const TURN_FRAME_MAX: usize = 16 * 1024;
/// The turn's buffer takes frames while it is shorter than this.
const TURN_BUFFER_MAX: usize = 1 << 20;
/// A receiver left with turn frames keeps the turn's buffer alive only if it is at most this
/// many times the bytes of its own frames in it; otherwise they are copied out.
const FREEZE_RATIO: usize = 4;

#[derive(Debug)]
pub(crate) enum Chunk {
    Owned(Vec<u8>),
    Shared(Arc<[u8]>),
    /// Frames broadcast in this loop turn: a range of the turn's buffer ([`OutStorage`]),
    /// valid until the turn ends. Consecutive ones merge, so a receiver owed many frames in a
    /// turn has one chunk, written with one slice.
    Turn {
        start: u32,
        end: u32,
    },
    /// What a receiver's socket did not take of a past turn's buffer, which it keeps alive.
    Frozen {
        turn: Arc<Vec<u8>>,
        start: u32,
        end: u32,
    },
}

impl Chunk {
    fn len(&self) -> usize {
        match self {
            Chunk::Owned(v) => v.len(),
            Chunk::Shared(s) => s.len(),
            Chunk::Turn { start, end } | Chunk::Frozen { start, end, .. } => (end - start) as usize,
        }
    }

    /// The bytes; `turn` is the current turn's buffer.
    fn bytes<'a>(&'a self, turn: &'a [u8]) -> &'a [u8] {
        match self {
            Chunk::Owned(v) => v,
            Chunk::Shared(s) => s,
            Chunk::Turn { start, end } => turn.get(*start as usize..*end as usize).unwrap_or(&[]),
            Chunk::Frozen { turn, start, end } => {
                turn.get(*start as usize..*end as usize).unwrap_or(&[])
            }
        }
    }
}

/// Bytes waiting to be written to one connection, in order.
#[derive(Debug, Default)]
pub struct OutQueue {
    chunks: VecDeque<Chunk>,
    /// Bytes of the front chunk already written.
    written: usize,
    /// Bytes queued and not yet written.
    len: usize,
    spare: Option<Vec<u8>>,
    /// Length of a pong at the very end of the queue, not yet started: while the peer is not
    /// reading, a newer pong replaces it (§5.5.3: a pong may answer only the most recent
    /// ping), so a peer that pings without reading is owed one pong, not one per ping.
    /// A byte holds it: a pong frame is at most 127 bytes (§5.5: payload of 125 at most),
    /// and the queue is in every connection, so its size counts.
    tail_pong: Option<u8>,
    /// The socket refused part of the last write: the peer is not keeping up.
    blocked: bool,
}

impl OutQueue {
    /// Bytes queued and not yet written.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Nothing waits to be written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends raw bytes (an HTTP response, a control frame).
    pub fn push_bytes(&mut self, bytes: &[u8]) {
        self.tail_pong = None;
        self.owned_tail(bytes.len()).extend_from_slice(bytes);
        self.len += bytes.len();
    }

    /// Appends an encoded pong. While the peer is not reading, it replaces a pong still
    /// waiting at the end of the queue; a peer that reads gets a pong for every ping.
    pub fn push_pong(&mut self, frame: &[u8]) {
        if let Some(old) = self.tail_pong.take().filter(|_| self.blocked) {
            let old = usize::from(old);
            let untouched = match self.chunks.len() {
                0 => false,
                // The only chunk is being written: the pong must not have started.
                1 => self.written + old <= self.chunks.front().map_or(0, Chunk::len),
                _ => true,
            };
            if let (true, Some(Chunk::Owned(v))) = (untouched, self.chunks.back_mut()) {
                v.truncate(v.len() - old);
                self.len -= old;
            }
        }
        self.push_bytes(frame);
        self.tail_pong = u8::try_from(frame.len()).ok();
    }

    /// Appends one unmasked frame (server to client, §5.1).
    pub fn push_frame(&mut self, opcode: OpCode, payload: &[u8]) {
        self.push_with_header(
            encode_header(true, opcode, None, payload.len() as u64),
            payload,
        );
    }

    /// Appends one unmasked frame whose payload is a compressed message (RSV1 set, RFC 7692 §6).
    pub fn push_compressed(&mut self, opcode: OpCode, payload: &[u8]) {
        let header = encode_header(true, opcode, None, payload.len() as u64).compressed();
        self.push_with_header(header, payload);
    }

    fn push_with_header(&mut self, header: EncodedHeader, payload: &[u8]) {
        self.tail_pong = None;
        let tail = self.owned_tail(header.as_bytes().len() + payload.len());
        tail.extend_from_slice(header.as_bytes());
        tail.extend_from_slice(payload);
        self.len += header.as_bytes().len() + payload.len();
    }

    /// Appends `range` of the turn's buffer (a frame broadcast this turn). Every queue given
    /// one is dirty, so it is written before the turn ends; if its socket does not take it
    /// all, the loop notes it ([`OutStorage::note_straggler`]).
    pub(crate) fn push_turn(&mut self, range: (u32, u32)) {
        self.tail_pong = None;
        self.len += (range.1 - range.0) as usize;
        match self.chunks.back_mut() {
            Some(Chunk::Turn { end, .. }) if *end == range.0 => *end = range.1,
            _ => self.chunks.push_back(Chunk::Turn {
                start: range.0,
                end: range.1,
            }),
        }
    }

    /// The turn ends: what is left of its frames is taken from `frozen` from now on.
    fn end_turn(&mut self, frozen: &Arc<Vec<u8>>) {
        for chunk in &mut self.chunks {
            if let Chunk::Turn { start, end } = *chunk {
                *chunk = Chunk::Frozen {
                    turn: Arc::clone(frozen),
                    start,
                    end,
                };
            }
        }
    }

    /// The turn ends, and this queue's frames are a small part of the turn's buffer: they
    /// are copied out, rather than keeping the whole buffer alive.
    fn copy_turn(&mut self, turn: &[u8]) {
        for chunk in &mut self.chunks {
            if let Chunk::Turn { .. } = chunk {
                *chunk = Chunk::Shared(Arc::from(chunk.bytes(turn)));
            }
        }
    }

    /// Bytes of the current turn's buffer this queue refers to.
    fn turn_bytes(&self) -> usize {
        let turn = self
            .chunks
            .iter()
            .filter(|c| matches!(c, Chunk::Turn { .. }));
        turn.map(Chunk::len).sum()
    }

    /// Holds frames of the current turn's buffer.
    pub(crate) fn holds_turn(&self) -> bool {
        self.chunks.iter().any(|c| matches!(c, Chunk::Turn { .. }))
    }

    /// Appends a frame shared with other connections' queues.
    pub fn push_shared(&mut self, frame: Arc<[u8]>) {
        self.tail_pong = None;
        self.len += frame.len();
        self.chunks.push_back(Chunk::Shared(frame));
    }

    /// The owned buffer at the back of the queue with room for `additional` bytes.
    fn owned_tail(&mut self, additional: usize) -> &mut Vec<u8> {
        let reusable = matches!(
            self.chunks.back(),
            Some(Chunk::Owned(v)) if v.len() + additional <= OWNED_CHUNK_TARGET || v.is_empty()
        );
        if !reusable {
            let fresh = self.spare.take().unwrap_or_default();
            self.chunks.push_back(Chunk::Owned(fresh));
        }
        match self.chunks.back_mut() {
            Some(Chunk::Owned(v)) => {
                v.reserve(additional);
                v
            }
            // Just ensured the back is an owned chunk.
            _ => unreachable!("owned tail"),
        }
    }

    /// Writes as much as the socket takes. Returns `Ok(true)` once the queue is empty,
    /// `Ok(false)` when the socket would block with bytes left.
    /// `storage` holds the turn's buffer that broadcast frames may be in.
    pub(crate) fn write_to<W: Write>(
        &mut self,
        socket: &mut W,
        storage: &OutStorage,
    ) -> io::Result<bool> {
        let turn = storage.turn.buffer.as_slice();
        while self.len > 0 {
            let result = if self.chunks.len() == 1 {
                // One chunk (the common case of a reply): a plain write costs less than a
                // vectored one.
                socket.write(&self.chunks[0].bytes(turn)[self.written..])
            } else if self.chunks.len() <= FEW_IOVECS {
                // A few chunks: a small array, not the 1 KiB of the full one to clear before
                // every write.
                self.write_gathered::<FEW_IOVECS, W>(socket, turn)
            } else {
                self.write_gathered::<MAX_IOVECS, W>(socket, turn)
            };
            match result {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.advance(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.blocked = true;
                    return Ok(false);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.blocked = false;
        Ok(true)
    }

    /// One vectored write of the first `N` chunks at most.
    fn write_gathered<const N: usize, W: Write>(
        &self,
        socket: &mut W,
        turn: &[u8],
    ) -> io::Result<usize> {
        let mut slices = [IoSlice::new(&[]); N];
        let count = self.chunks.len().min(N);
        for (i, chunk) in self.chunks.iter().take(count).enumerate() {
            let bytes = chunk.bytes(turn);
            slices[i] = IoSlice::new(if i == 0 {
                &bytes[self.written..]
            } else {
                bytes
            });
        }
        socket.write_vectored(&slices[..count])
    }

    fn advance(&mut self, mut n: usize) {
        self.len -= n;
        while n > 0 {
            let Some(front) = self.chunks.front() else {
                break;
            };
            let left = front.len() - self.written;
            if n < left {
                self.written += n;
                return;
            }
            n -= left;
            self.written = 0;
            if self.chunks.len() == 1 {
                // The tail (and any pong in it) is written.
                self.tail_pong = None;
            }
            if let Some(Chunk::Owned(mut v)) = self.chunks.pop_front() {
                if v.capacity() <= SPARE_CAPACITY {
                    v.clear();
                    self.spare = Some(v);
                }
            }
        }
    }

    /// Drops everything queued except the chunk being written (a chunk always holds whole
    /// frames, so what remains ends at a frame boundary and a close frame can follow).
    pub fn truncate_to_front(&mut self) {
        if self.written == 0 {
            self.chunks.clear();
        } else {
            self.chunks.truncate(1);
        }
        self.len = self.chunks.front().map_or(0, |c| c.len() - self.written);
    }

    /// Takes what the next push needs from `storage`: the chunk list's slots if the queue has
    /// none, and for owned bytes (`owned`) a buffer if none is spare or being filled. With
    /// [`give_back`](Self::give_back) after each flush, queuing allocates nothing in the
    /// steady state while an idle queue holds no heap memory.
    pub(crate) fn borrow(&mut self, storage: &mut OutStorage, owned: bool) {
        if self.chunks.capacity() == 0 {
            self.chunks = storage.slots.take(0);
        }
        if owned && self.spare.is_none() && !matches!(self.chunks.back(), Some(Chunk::Owned(_))) {
            let mut buffer = storage.buffers.take(0);
            buffer.clear();
            self.spare = Some(buffer);
        }
    }

    /// Gives the spare buffer and the chunk list back to `storage` once nothing is queued
    /// (the connection went idle).
    pub(crate) fn give_back(&mut self, storage: &mut OutStorage) {
        if !self.is_empty() {
            return;
        }
        if let Some(buffer) = self.spare.take() {
            storage.buffers.give(buffer);
        }
        if self.chunks.is_empty() {
            storage.slots.give(std::mem::take(&mut self.chunks));
        }
    }

    /// Drops every queued byte and the spare buffer (the connection is going away).
    pub fn release(&mut self) {
        *self = OutQueue::default();
    }
}

/// The frames broadcast in one loop turn, each encoded once into one buffer that every
/// receiver's queue refers to by range: no reference count, allocation or chunk per frame
/// and receiver, and a receiver owed many frames writes them as one slice (as the raw
/// ceiling of the benchmarks does). When the turn ends, a receiver whose socket did not take
/// everything keeps the buffer alive (it is frozen, shared) and the next turn starts a new
/// one; otherwise the buffer is reused.
#[derive(Debug, Default)]
struct TurnFrames {
    buffer: Arc<Vec<u8>>,
    /// Slots of the connections whose sockets did not take all their turn frames.
    stragglers: Vec<usize>,
    /// A receiver kept the buffer at the end of the turn.
    frozen: bool,
}

/// The loop's free lists of outbound storage (see [`OutQueue::borrow`]): buffers for bytes
/// encoded per connection, and chunk lists, kept for as many queues as recent turns filled
/// at once (every receiver of a broadcast needs one; see [`Pool::elastic`]).
#[derive(Debug)]
pub(crate) struct OutStorage {
    buffers: BufferPool,
    slots: Pool<VecDeque<Chunk>>,
    turn: TurnFrames,
}

impl OutStorage {
    /// Appends one frame to the turn's buffer and returns its range, or `None` when it is
    /// too long for it (the caller shares it on its own).
    pub(crate) fn push_turn_frame(
        &mut self,
        encode: impl FnOnce(&mut Vec<u8>),
    ) -> Option<(u32, u32)> {
        // Never fails: the buffer is shared only once frozen, and then replaced.
        let buffer = Arc::make_mut(&mut self.turn.buffer);
        if buffer.len() >= TURN_BUFFER_MAX {
            return None;
        }
        let start = buffer.len();
        encode(buffer);
        if buffer.len() - start > TURN_FRAME_MAX {
            buffer.truncate(start);
            return None;
        }
        Some((
            u32::try_from(start).ok()?,
            u32::try_from(buffer.len()).ok()?,
        ))
    }

    /// Remembers a connection whose socket did not take all its frames of this turn.
    pub(crate) fn note_straggler(&mut self, slot: usize) {
        self.turn.stragglers.push(slot);
    }

    /// The slots noted in this turn, to pass to [`end_turn_for`](Self::end_turn_for) once
    /// every dirty queue has been written, then back to [`finish_turn`](Self::finish_turn).
    pub(crate) fn take_stragglers(&mut self) -> Vec<usize> {
        std::mem::take(&mut self.turn.stragglers)
    }

    /// The turn ends for one noted queue (noted twice, or drained since: nothing to do): the
    /// rest of its turn frames is taken from the turn's buffer, frozen and shared, from now
    /// on.
    pub(crate) fn end_turn_for(&mut self, queue: &mut OutQueue) {
        let held = queue.turn_bytes();
        if held == 0 {
            return;
        }
        // A receiver keeps the whole buffer only if its own frames are a fair part of it:
        // what it pins stays within FREEZE_RATIO times what its queue counts against
        // --max-backpressure.
        if self.turn.buffer.len() <= held.saturating_mul(FREEZE_RATIO) {
            self.turn.frozen = true;
            queue.end_turn(&self.turn.buffer);
        } else {
            queue.copy_turn(&self.turn.buffer);
        }
    }

    /// After [`end_turn_for`](Self::end_turn_for) on every noted queue: the next turn
    /// reuses the buffer, or starts a new one if receivers keep the old one.
    pub(crate) fn finish_turn(&mut self, mut stragglers: Vec<usize>) {
        stragglers.clear();
        self.turn.stragglers = stragglers;
        if std::mem::take(&mut self.turn.frozen) {
            self.turn.buffer = Arc::default();
        } else if let Some(buffer) = Arc::get_mut(&mut self.turn.buffer) {
            buffer.clear();
        }
    }

    /// Once per loop turn: lets the chunk lists kept for a past burst go.
    pub(crate) fn settle(&mut self, now: std::time::Instant) {
        self.slots.settle(now);
    }

    /// Keeps up to `keep` idle buffers, and at least `keep` chunk lists.
    pub(crate) fn new(keep: usize) -> Self {
        OutStorage {
            buffers: BufferPool::new(keep, SPARE_CAPACITY),
            // Elastic: a broadcast lends a list to every receiver in the same turn.
            slots: Pool::elastic(keep, POOLED_SLOTS),
            turn: TurnFrames::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that takes at most `max` bytes per call and then blocks once.
    struct Trickle {
        out: Vec<u8>,
        max: usize,
        block_next: bool,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let block = self.block_next;
            self.block_next = !block;
            if block {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.max);
            self.out.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_newer_pong_replaces_one_not_yet_started_while_the_peer_does_not_read() {
        // A peer that reads gets every pong (Autobahn 2.10 sends ten pings at once).
        let mut q = OutQueue::default();
        q.push_pong(&[0x8a, 0x01, b'a']);
        q.push_pong(&[0x8a, 0x01, b'b']);
        assert_eq!(q.len(), 6);
        let mut sink = Trickle {
            out: Vec::new(),
            max: 100,
            block_next: false,
        };
        assert!(q.write_to(&mut sink, &OutStorage::new(0)).unwrap());
        // Once the socket refuses a write, owed pongs collapse into the newest.
        let mut q = OutQueue::default();
        q.push_frame(OpCode::Text, b"hi");
        let mut stuck = Trickle {
            out: Vec::new(),
            max: 0,
            block_next: true,
        };
        assert!(!q.write_to(&mut stuck, &OutStorage::new(0)).unwrap());
        q.push_pong(&[0x8a, 0x01, b'1']);
        q.push_pong(&[0x8a, 0x01, b'2']);
        assert_eq!(q.len(), 7);
        // A pong after other data is not merged with an earlier one.
        q.push_frame(OpCode::Text, b"x");
        q.push_pong(&[0x8a, 0x01, b'3']);
        let mut w = Trickle {
            out: Vec::new(),
            max: 2,
            block_next: false,
        };
        // Start writing the last pong, then owe a new one: the started one must stay whole.
        while q.len() > 2 {
            let _ = q.write_to(&mut w, &OutStorage::new(0));
        }
        q.push_pong(&[0x8a, 0x01, b'4']);
        while !q.write_to(&mut w, &OutStorage::new(0)).unwrap() {}
        assert_eq!(
            w.out,
            [0x81, 2, b'h', b'i', 0x8a, 1, b'2', 0x81, 1, b'x', 0x8a, 1, b'3', 0x8a, 1, b'4']
        );
    }

    #[test]
    fn an_idle_queue_holds_no_storage_and_a_busy_one_reuses_the_pools() {
        let mut storage = OutStorage::new(4);
        let mut q = OutQueue::default();
        let mut sink = Trickle {
            out: Vec::new(),
            max: usize::MAX,
            block_next: false,
        };
        q.borrow(&mut storage, true);
        q.push_frame(OpCode::Text, b"one");
        while !q.write_to(&mut sink, &OutStorage::new(0)).unwrap() {}
        q.give_back(&mut storage);
        assert_eq!(q.chunks.capacity(), 0, "the chunk list went back");
        assert!(q.spare.is_none(), "the buffer went back");
        let (slots, buffers) = (storage.slots.free.len(), storage.buffers.free.len());
        assert_eq!((slots, buffers), (1, 1));
        // The next reply takes both from the pools instead of allocating.
        q.borrow(&mut storage, true);
        q.push_frame(OpCode::Text, b"two");
        assert_eq!(
            (storage.slots.free.len(), storage.buffers.free.len()),
            (0, 0)
        );
        // Nothing goes back while bytes are queued.
        q.give_back(&mut storage);
        assert_eq!(
            (storage.slots.free.len(), storage.buffers.free.len()),
            (0, 0)
        );
        while !q.write_to(&mut sink, &OutStorage::new(0)).unwrap() {}
        assert_eq!(
            sink.out,
            [0x81, 3, b'o', b'n', b'e', 0x81, 3, b't', b'w', b'o']
        );
    }

    #[test]
    fn turn_frames_left_at_the_end_of_the_turn_are_kept_in_proportion() {
        let mut storage = OutStorage::new(4);
        let frame = |text: &'static [u8]| {
            move |buf: &mut Vec<u8>| {
                buf.extend_from_slice(&[0x81, text.len() as u8]);
                buf.extend_from_slice(text);
            }
        };
        let a = storage.push_turn_frame(frame(b"aaaa")).unwrap();
        let b = storage
            .push_turn_frame(frame(b"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"))
            .unwrap();
        // One queue owed both frames (merged into one chunk), one owed only the first.
        let (mut both, mut first) = (OutQueue::default(), OutQueue::default());
        both.push_turn(a);
        both.push_turn(b);
        first.push_turn(a);
        assert_eq!(both.chunks.len(), 1, "consecutive turn frames merge");
        assert_eq!(both.turn_bytes(), 38);
        storage.end_turn_for(&mut both);
        storage.end_turn_for(&mut first);
        // The first queue's 6 bytes are under a quarter of the 38: copied out; the other
        // keeps the buffer, which the next turn no longer uses.
        assert!(matches!(both.chunks[0], Chunk::Frozen { .. }));
        assert!(matches!(first.chunks[0], Chunk::Shared(_)));
        let stragglers = storage.take_stragglers();
        storage.finish_turn(stragglers);
        let c = storage.push_turn_frame(frame(b"cc")).unwrap();
        assert_eq!(c, (0, 4), "a new buffer");
        let mut sink = Trickle {
            out: Vec::new(),
            max: usize::MAX,
            block_next: false,
        };
        both.push_turn(c);
        while !both.write_to(&mut sink, &storage).unwrap() {}
        let mut want = vec![0x81, 4];
        want.extend_from_slice(b"aaaa");
        want.extend_from_slice(&[0x81, 30]);
        want.extend_from_slice(&[b'b'; 30]);
        want.extend_from_slice(&[0x81, 2, b'c', b'c']);
        assert_eq!(sink.out, want);
        sink.out.clear();
        while !first.write_to(&mut sink, &storage).unwrap() {}
        assert_eq!(sink.out, [0x81, 4, b'a', b'a', b'a', b'a']);
    }

    #[test]
    fn truncation_keeps_the_frame_being_written() {
        let mut q = OutQueue::default();
        q.push_shared(Arc::from(&[0x81, 0x02, b'h', b'i'][..]));
        q.push_frame(OpCode::Text, b"dropped");
        let mut w = Trickle {
            out: Vec::new(),
            max: 1,
            block_next: false,
        };
        assert!(!q.write_to(&mut w, &OutStorage::new(0)).unwrap());
        q.truncate_to_front();
        assert_eq!(q.len(), 3);
        q.push_frame(OpCode::Close, &[0x03, 0xf0]);
        while !q.write_to(&mut w, &OutStorage::new(0)).unwrap() {}
        assert_eq!(w.out, [0x81, 0x02, b'h', b'i', 0x88, 0x02, 0x03, 0xf0]);
    }

    #[test]
    fn partial_writes_keep_order_across_owned_and_shared_chunks() {
        let mut q = OutQueue::default();
        q.push_frame(OpCode::Text, b"one");
        q.push_shared(Arc::from(&[0x81, 0x03, b't', b'w', b'o'][..]));
        q.push_frame(OpCode::Binary, &[7; 200]);
        let total = q.len();
        let mut w = Trickle {
            out: Vec::new(),
            max: 7,
            block_next: false,
        };
        let mut rounds = 0;
        while !q.write_to(&mut w, &OutStorage::new(0)).unwrap() {
            rounds += 1;
            assert!(rounds < 1000);
        }
        assert_eq!(w.out.len(), total);
        assert_eq!(
            &w.out[..10],
            &[0x81, 3, b'o', b'n', b'e', 0x81, 3, b't', b'w', b'o']
        );
        assert_eq!(&w.out[10..14], &[0x82, 126, 0, 200]);
        assert!(q.is_empty());
    }
}
