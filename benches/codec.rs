//! Micro-benchmarks of the protocol core (criterion): what each message costs before any
//! system call.
//!
//! - `mask/{fast,scalar}/N`: `apply_mask` against the byte-at-a-time reference, in bytes/s,
//!   over 16 B, 4 KiB and 1 MiB.
//! - `utf8/{feed,from_utf8}/{ascii,mixed}/N`: the streaming validator against
//!   `std::str::from_utf8`, in bytes/s, on ASCII and on mixed text (2-, 3- and 4-byte
//!   sequences among ASCII).
//! - `frame/decode_header/*` and `frame/encode_header/*`: one header of each length form
//!   (7-bit, 16-bit, 64-bit), in ns.
//! - `poll_event/{text,binary}_16B`: a server-side `Connection` decoding a buffer of 1,000
//!   masked 16-byte frames (unmask, UTF-8 check for text, hand out in place), in messages/s.
//! - `deflate/{compress,compress_fresh,inflate}/{16B,4KiB_json,64KiB_json}`: permessage-deflate
//!   per message (feature `deflate`): compressing with context takeover and on its own, and
//!   inflating what was compressed on its own, in bytes/s of the uncompressed message.
//! - `deflate_tiny/{one_byte_fragments,tiny_messages,tiny_messages_no_context_takeover,
//!   final_block_messages,empty_fixed_blocks_per_byte}`: what a hostile peer's tiny
//!   compressed frames cost a server `Connection`, in frames/s (1,000 to a buffer): one-byte
//!   fragments of sync flushes, 5-byte messages with and without context takeover, messages
//!   that are one empty final block; and, per byte, one message of 800 empty fixed-code
//!   blocks (an inflater that built its Huffman tables for every block, as miniz_oxide does,
//!   pays microseconds for each).
//!
//! Run: `cargo bench --bench codec` (a filter after `--` picks groups: `-- mask`).

use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use wsloop::proto::frame::{decode_header, encode_frame, encode_header};
use wsloop::proto::mask::{apply_mask, apply_mask_scalar};
use wsloop::proto::utf8::Utf8Validator;
use wsloop::proto::{Connection, Event, Limits, OpCode};

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
const SIZES: [(usize, &str); 3] = [(16, "16B"), (4096, "4KiB"), (1 << 20, "1MiB")];

fn mask(c: &mut Criterion) {
    let mut group = c.benchmark_group("mask");
    for (size, label) in SIZES {
        let mut buf: Vec<u8> = (0..size).map(|i| i as u8).collect();
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(format!("fast/{label}"), |b| {
            b.iter(|| apply_mask(black_box(&mut buf), black_box(KEY), 0))
        });
        group.bench_function(format!("scalar/{label}"), |b| {
            b.iter(|| apply_mask_scalar(black_box(&mut buf), black_box(KEY), 0))
        });
    }
    group.finish();
}

/// `len` bytes of text made of `piece` repeated, cut at a character boundary.
fn text(piece: &str, len: usize) -> Vec<u8> {
    let mut s = piece.repeat(len / piece.len() + 1);
    let mut cut = len;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    s.truncate(cut);
    s.into_bytes()
}

fn utf8(c: &mut Criterion) {
    let mut group = c.benchmark_group("utf8");
    // Mostly ASCII with 2-byte (Greek), 3-byte (CJK, ✓) and 4-byte (𝄞) sequences.
    let inputs = [
        (
            "ascii",
            "The quick brown fox jumps over the lazy dog. 0123456789 ",
        ),
        ("mixed", "chat: κόσμε 你好 ✓ 𝄞 — naïve café, ok? "),
    ];
    for (name, piece) in inputs {
        for (size, label) in [(4096, "4KiB"), (1 << 20, "1MiB")] {
            let data = text(piece, size);
            group.throughput(Throughput::Bytes(data.len() as u64));
            group.bench_function(format!("feed/{name}/{label}"), |b| {
                b.iter(|| {
                    let mut v = Utf8Validator::new();
                    v.feed(black_box(&data)).unwrap();
                    v.finish().unwrap();
                })
            });
            group.bench_function(format!("from_utf8/{name}/{label}"), |b| {
                b.iter(|| std::str::from_utf8(black_box(&data)).unwrap().len())
            });
        }
    }
    group.finish();
}

fn frame(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame");
    // One masked client header of each length form (RFC 6455 §5.2).
    for (len, label) in [(16u64, "7bit"), (4096, "16bit"), (1 << 20, "64bit")] {
        let header = encode_header(true, OpCode::Binary, Some(KEY), len);
        let bytes = header.as_bytes().to_vec();
        group.bench_function(format!("decode_header/{label}"), |b| {
            b.iter(|| decode_header(black_box(&bytes)).unwrap().unwrap())
        });
        group.bench_function(format!("encode_header/{label}"), |b| {
            b.iter(|| encode_header(true, OpCode::Binary, None, black_box(len)))
        });
    }
    group.finish();
}

/// Frames in one buffer, as a client that writes faster than the server reads leaves them.
const FRAMES: usize = 1000;

fn poll_event(c: &mut Criterion) {
    let mut group = c.benchmark_group("poll_event");
    group.throughput(Throughput::Elements(FRAMES as u64));
    for (opcode, label) in [(OpCode::Text, "text_16B"), (OpCode::Binary, "binary_16B")] {
        let mut wire = Vec::new();
        for i in 0..FRAMES {
            let key = [i as u8, 0x5a, (i >> 8) as u8, 0xa5];
            encode_frame(&mut wire, true, opcode, Some(key), b"0123456789abcdef");
        }
        group.bench_function(label, |b| {
            // Unmasking happens in place, so each iteration needs a fresh copy (made outside
            // the timing) and a fresh connection.
            // Timers armed as the server arms them: input also resets the idle clock.
            let now = Instant::now();
            let timeouts = std::sync::Arc::new(wsloop::server::Config::default().timeouts());
            b.iter_batched_ref(
                || {
                    let conn = Connection::new_server(Limits::default());
                    (conn.with_timeouts(timeouts.clone(), now), wire.clone())
                },
                |(conn, buf)| {
                    let mut pos = 0;
                    let mut messages = 0;
                    while pos < buf.len() {
                        let (used, event) = conn.poll_event(&mut buf[pos..], now).unwrap();
                        if let Some(Event::Message(m)) = event {
                            black_box(m.data);
                            messages += 1;
                        }
                        pos += used;
                    }
                    assert_eq!(messages, FRAMES);
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

/// JSON-like chat traffic of `len` bytes (ids and names vary, keys repeat).
#[cfg(feature = "deflate")]
fn json_like(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 64);
    let mut i = 1u64;
    while out.len() < len {
        let line = format!(
            "{{\"type\":\"chat\",\"id\":{i},\"from\":\"user{}\",\"text\":\"hi\"}},",
            i % 97
        );
        out.extend_from_slice(line.as_bytes());
        i = i.wrapping_mul(6364136223846793005).wrapping_add(1) % 1_000_003;
    }
    out.truncate(len);
    out
}

#[cfg(feature = "deflate")]
fn deflate(c: &mut Criterion) {
    use wsloop::proto::deflate::{Deflater, Inflater};
    let mut group = c.benchmark_group("deflate");
    for (label, payload) in [
        ("16B", json_like(16)),
        ("4KiB_json", json_like(4096)),
        ("64KiB_json", json_like(65536)),
    ] {
        group.throughput(Throughput::Bytes(payload.len() as u64));
        let mut out = Vec::new();
        for (name, fresh) in [("compress", false), ("compress_fresh", true)] {
            let mut deflater = Deflater::new(6);
            group.bench_function(format!("{name}/{label}"), |b| {
                b.iter(|| {
                    out.clear();
                    deflater.compress_message(black_box(&payload), &mut out, fresh);
                    black_box(out.len())
                })
            });
        }
        let mut compressed = Vec::new();
        Deflater::new(6).compress_message(&payload, &mut compressed, true);
        eprintln!(
            "deflate/{label}: {} B compressed to {} B ({:.1}% saved)",
            payload.len(),
            compressed.len(),
            100.0 * (1.0 - compressed.len() as f64 / payload.len() as f64)
        );
        let mut inflater = Inflater::new();
        group.bench_function(format!("inflate/{label}"), |b| {
            b.iter(|| {
                out.clear();
                inflater
                    .inflate(black_box(&compressed), &mut out, usize::MAX)
                    .unwrap();
                inflater.finish_message(&mut out, usize::MAX).unwrap();
                inflater.reset();
                black_box(out.len())
            })
        });
    }
    group.finish();
}

/// What a hostile peer's tiny compressed frames cost a server `Connection`, per frame, 1,000
/// frames to a buffer (compare `poll_event/text_16B`, a plain 16-byte message).
#[cfg(feature = "deflate")]
fn deflate_tiny(c: &mut Criterion) {
    use wsloop::proto::extension::{negotiate, DeflateConfig};
    /// RFC 7692 §7.2.3.1 and §7.2.3.2: "Hello", and "Hello" again as a back-reference.
    const HELLO: &[u8] = &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
    const HELLO_AGAIN: &[u8] = &[0xf2, 0x00, 0x11, 0x00, 0x00];
    let frame = |wire: &mut Vec<u8>, b0: u8, payload: &[u8]| {
        let start = wire.len();
        encode_frame(wire, b0 & 0x80 != 0, OpCode::Text, Some(KEY), payload);
        wire[start] = b0; // FIN, RSV1 and the opcode as given
    };
    let mut cases: Vec<(&str, &str, Vec<u8>)> = Vec::new();
    // One message of sync flushes (empty stored blocks) sent one byte per frame.
    let mut wire = Vec::new();
    let flushes = [0x00, 0x00, 0x00, 0xff, 0xff].repeat(FRAMES / 5);
    for (i, byte) in flushes.iter().enumerate() {
        let b0 = match i {
            0 => 0x41,
            _ if i == FRAMES - 1 => 0x80,
            _ => 0x00,
        };
        frame(&mut wire, b0, &[*byte]);
    }
    cases.push(("one_byte_fragments", "permessage-deflate", wire));
    // Tiny messages referring back into the window (context takeover).
    let mut wire = Vec::new();
    frame(&mut wire, 0xc1, HELLO);
    (1..FRAMES).for_each(|_| frame(&mut wire, 0xc1, HELLO_AGAIN));
    cases.push(("tiny_messages", "permessage-deflate", wire));
    // The same without context takeover: an inflater made and dropped per message.
    let mut wire = Vec::new();
    (0..FRAMES).for_each(|_| frame(&mut wire, 0xc1, HELLO));
    let no_takeover = "permessage-deflate; client_no_context_takeover";
    cases.push(("tiny_messages_no_context_takeover", no_takeover, wire));
    // Messages that are one empty final block: the window is reset after each.
    let mut wire = Vec::new();
    (0..FRAMES).for_each(|_| frame(&mut wire, 0xc1, &[0x03, 0x00]));
    cases.push(("final_block_messages", "permessage-deflate", wire));
    // One message of 800 empty blocks with fixed codes (10 bits each: BFINAL 0, BTYPE 01,
    // the end-of-block code), 1,000 bytes that inflate to nothing; per element: per byte.
    let blocks: Vec<u8> = (0..FRAMES)
        .map(|byte| {
            // Bit i of the stream is set when i is 1 modulo 10 (BTYPE's low bit).
            (0..8).fold(0u8, |b, bit| {
                b | (u8::from((byte * 8 + bit) % 10 == 1) << bit)
            })
        })
        .chain([0x00]) // with the tail, an empty stored block (RFC 7692 §7.2.2)
        .collect();
    let mut wire = Vec::new();
    frame(&mut wire, 0xc1, &blocks);
    cases.push(("empty_fixed_blocks_per_byte", "permessage-deflate", wire));

    let mut group = c.benchmark_group("deflate_tiny");
    group.throughput(Throughput::Elements(FRAMES as u64));
    for (label, offer, wire) in cases {
        let agreed = negotiate(&DeflateConfig::default(), [offer]).unwrap();
        group.bench_function(label, |b| {
            let now = Instant::now();
            b.iter_batched_ref(
                || {
                    let conn = Connection::new_server(Limits::default()).with_deflate(agreed);
                    (conn, wire.clone())
                },
                |(conn, buf)| {
                    let mut pos = 0;
                    while pos < buf.len() {
                        let (used, event) = conn.poll_event(&mut buf[pos..], now).unwrap();
                        black_box(event);
                        pos += used;
                    }
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

#[cfg(feature = "deflate")]
criterion_group!(
    benches,
    mask,
    utf8,
    frame,
    poll_event,
    deflate,
    deflate_tiny
);
#[cfg(not(feature = "deflate"))]
criterion_group!(benches, mask, utf8, frame, poll_event);
criterion_main!(benches);
