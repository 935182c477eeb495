//! A tiny compressed frame costs bounded work (RFC 7692 with RFC 6455 §10.4's concern for
//! what a peer can make a server spend): what a hostile peer can send cheaply (one-byte
//! fragments, empty stored blocks as sync flushes, tiny messages, final blocks) costs the
//! server work in proportion to the bytes, with no allocation per frame and no buffer that
//! grows beyond what was inflated.
//!
//! A counting global allocator (this test binary's own) sees the allocations of the thread
//! that runs each test; the read buffer's capacity (`Connection::buffered`) shows the room
//! each inflation step prepares, which is also the memory it clears.
#![cfg(feature = "deflate")]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::Instant;

use wsloop_proto::extension::{negotiate, DeflateConfig};
use wsloop_proto::frame::{encode_header, OpCode};
use wsloop_proto::mask::apply_mask;
use wsloop_proto::{Connection, Event, Limits, ProtocolError};

thread_local! {
    /// Allocator calls (alloc, alloc_zeroed, realloc) made by this thread.
    static CALLS: Cell<u64> = const { Cell::new(0) };
    /// Bytes this thread holds (allocated minus freed by it).
    static LIVE: Cell<isize> = const { Cell::new(0) };
}

fn count(call: bool, bytes: isize) {
    CALLS.with(|c| c.set(c.get() + u64::from(call)));
    LIVE.with(|l| l.set(l.get() + bytes));
}

struct Counting;

// SAFETY: every call is passed to `System` unchanged; counting touches a const-initialised
// thread-local `Cell`, which never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(true, layout.size() as isize);
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(true, layout.size() as isize);
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(true, new_size as isize - layout.size() as isize);
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(false, -(layout.size() as isize));
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn allocations() -> u64 {
    CALLS.with(Cell::get)
}

fn live_bytes() -> isize {
    LIVE.with(Cell::get)
}

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
/// A sync flush: an empty stored block (RFC 1951 §3.2.4), five bytes that inflate to nothing.
const EMPTY_STORED_BLOCK: [u8; 5] = [0x00, 0x00, 0x00, 0xff, 0xff];
/// RFC 7692 §7.2.3.2: "Hello" again, a back-reference into the previous message's window.
const HELLO_AGAIN: [u8; 5] = [0xf2, 0x00, 0x11, 0x00, 0x00];
/// RFC 7692 §7.2.3.1: "Hello" compressed.
const HELLO: [u8; 7] = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
/// An empty block with BFINAL set (fixed Huffman codes, only the end-of-block code).
const FINAL_EMPTY_BLOCK: [u8; 2] = [0x03, 0x00];

/// A server connection that agreed to `offer`.
fn server(offer: &str) -> Connection {
    let agreed = negotiate(&DeflateConfig::default(), [offer]).expect("accepted");
    Connection::new_server(Limits::default()).with_deflate(agreed)
}

/// A masked client frame; `b0` carries FIN, RSV1 and the opcode.
fn frame(b0: u8, payload: &[u8]) -> Vec<u8> {
    let opcode = if b0 & 0x0f == 0 {
        OpCode::Continuation
    } else {
        OpCode::Text
    };
    let mut out = encode_header(b0 & 0x80 != 0, opcode, Some(KEY), payload.len() as u64)
        .as_bytes()
        .to_vec();
    out[0] |= b0 & 0x40;
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], KEY, 0);
    out
}

/// Feeds one frame whole; returns whether it completed a message equal to `want`, without
/// allocating (the counts are the connection's).
fn feed(conn: &mut Connection, bytes: &mut [u8], want: &[u8]) -> Result<bool, ProtocolError> {
    let len = bytes.len();
    let (used, event) = conn.poll_event(bytes, Instant::now())?;
    assert_eq!(used, len, "one whole frame is used at once");
    Ok(match event {
        Some(Event::Message(m)) => {
            assert_eq!(m.data, want);
            true
        }
        _ => false,
    })
}

/// The room an inflation step prepares (and clears) is in proportion to its input: a step
/// on one byte may not reserve 16 KiB.
const ROOM_FOR_A_BYTE: usize = 1024;

#[test]
fn a_hundred_thousand_one_byte_fragments_cost_no_allocation_and_no_room_each() {
    // One message: 20,000 sync flushes (empty stored blocks), 100,000 compressed bytes that
    // inflate to nothing, sent one byte per frame.
    let payload = EMPTY_STORED_BLOCK.repeat(20_000);
    let last = payload.len() - 1;
    let mut frames: Vec<Vec<u8>> = payload
        .iter()
        .enumerate()
        .map(|(i, byte)| match i {
            0 => frame(0x41, &[*byte]), // text, RSV1, more to come
            _ if i == last => frame(0x80, &[*byte]),
            _ => frame(0x00, &[*byte]),
        })
        .collect();
    let mut conn = server("permessage-deflate");
    let before = allocations();
    let mut warm = before;
    for (i, frame) in frames.iter_mut().enumerate() {
        let complete = feed(&mut conn, frame, b"").expect("valid");
        assert_eq!(complete, i == last, "fragment {i}");
        assert!(
            conn.buffered() <= ROOM_FOR_A_BYTE,
            "fragment {i}: {} bytes of room for one byte of input",
            conn.buffered()
        );
        if i == 99 {
            // The inflater is made and the buffers have their size.
            warm = allocations();
            assert!(warm - before <= 8, "{} allocations to start", warm - before);
        }
    }
    assert_eq!(
        allocations() - warm,
        0,
        "allocations after the first 100 frames"
    );
}

#[test]
fn a_hundred_thousand_tiny_messages_cost_no_allocation_each() {
    let mut conn = server("permessage-deflate");
    assert_eq!(
        feed(&mut conn, &mut frame(0xc1, &HELLO), b"Hello"),
        Ok(true)
    );
    // Each one refers back into the window the previous ones left (context takeover).
    let mut frames = vec![frame(0xc1, &HELLO_AGAIN); 100_000];
    let before = allocations();
    for (i, frame) in frames.iter_mut().enumerate() {
        assert_eq!(feed(&mut conn, frame, b"Hello"), Ok(true), "message {i}");
        assert!(conn.buffered() <= ROOM_FOR_A_BYTE, "{}", conn.buffered());
    }
    assert_eq!(
        allocations() - before,
        0,
        "allocations for 100,000 messages"
    );

    // Without context takeover the inflater goes back after each message: two allocations
    // per compressed message (the inflater and zlib's state), never more, and nothing kept.
    let mut conn = server("permessage-deflate; client_no_context_takeover");
    let mut frames = vec![frame(0xc1, &HELLO); 10_000];
    let before = allocations();
    for frame in &mut frames {
        assert_eq!(feed(&mut conn, frame, b"Hello"), Ok(true));
    }
    let calls = allocations() - before;
    assert!(
        calls <= 20_000 + 8,
        "{calls} allocations for 10,000 messages"
    );
    assert!(conn.compression_memory() < 1024);
}

#[test]
fn a_message_ends_its_deflate_stream_at_most_once() {
    // §7.2.3.4's shape, a final block then an empty one, is fine, message after message:
    // each ends its stream once.
    let mut conn = server("permessage-deflate");
    let bfinal = [0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00];
    for _ in 0..1000 {
        assert_eq!(
            feed(&mut conn, &mut frame(0xc1, &bfinal), b"Hello"),
            Ok(true)
        );
        assert_eq!(
            feed(&mut conn, &mut frame(0xc1, &FINAL_EMPTY_BLOCK), b""),
            Ok(true)
        );
    }
    // 50,000 final blocks in one message would each reset the 32 KiB window (1.6 GB of
    // memory cleared for 100 KB): the second one fails the connection with 1007.
    let mut conn = server("permessage-deflate");
    let hostile = FINAL_EMPTY_BLOCK.repeat(50_000);
    assert_eq!(
        feed(&mut conn, &mut frame(0xc1, &hostile), b""),
        Err(ProtocolError::InvalidCompressedData)
    );
    let close = conn.poll_transmit().expect("the close");
    assert_eq!(close.as_bytes(), b"\x88\x19\x03\xefinvalid compressed data");
}

#[test]
fn the_compression_memory_figures_are_what_the_allocator_sees() {
    use wsloop_proto::deflate::{Deflater, Inflater, DEFLATER_BYTES, INFLATER_BYTES};
    // Negotiated and idle: the agreed parameters, boxed (README: "40 B while idle").
    let before = live_bytes();
    let idle = server("permessage-deflate");
    assert_eq!(idle.compression_memory(), 40);
    assert_eq!(live_bytes() - before, 40);
    let mut out = Vec::with_capacity(1 << 16);
    let before = live_bytes();
    // Boxed, as a connection holds them.
    let mut inflater = Box::new(Inflater::new());
    inflater
        .inflate(&HELLO, &mut out, 1 << 16)
        .expect("inflates");
    inflater
        .finish_message(&mut out, 1 << 16)
        .expect("inflates");
    assert_eq!(out, b"Hello");
    assert_eq!(
        live_bytes() - before,
        INFLATER_BYTES as isize,
        "an inflater in use"
    );
    drop(inflater);
    let before = live_bytes();
    let mut deflater = Box::new(Deflater::new(6));
    deflater.compress_message(&[b'a'; 1000], &mut out, false);
    assert_eq!(
        live_bytes() - before,
        DEFLATER_BYTES as isize,
        "a compressor in use"
    );
}
