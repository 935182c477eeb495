//! The permessage-deflate inflater (RFC 7692 §7.2.2) on arbitrary compressed input never
//! panics and never holds more than its limit (plus the one byte that detects crossing it);
//! on valid input (the data compressed at an arbitrary level, cut into two frames anywhere)
//! it gives back exactly the data, or `TooLarge` exactly when the data exceeds the limit.
//!
//! Input: bytes 0-1 are the limit (big endian), byte 2 the cut (a fraction of the length
//! out of 255) and the level (mod 10), then the data.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsloop_proto::deflate::{Deflater, InflateError, Inflater};

fn inflate(frames: [&[u8]; 2], limit: usize) -> Result<Vec<u8>, InflateError> {
    let mut inflater = Inflater::new();
    let mut out = Vec::new();
    let result = (|| {
        inflater.inflate(frames[0], &mut out, limit)?;
        inflater.inflate(frames[1], &mut out, limit)?;
        inflater.finish_message(&mut out, limit)
    })();
    assert!(out.capacity() <= limit + 1, "held {}", out.capacity());
    assert!(out.len() <= limit + 1);
    result.map(|()| out)
}

fn cut(data: &[u8], at: u8) -> [&[u8]; 2] {
    let (a, b) = data.split_at(data.len() * usize::from(at) / 255);
    [a, b]
}

fuzz_target!(|input: &[u8]| {
    let [l0, l1, c, data @ ..] = input else {
        return;
    };
    let limit = usize::from(u16::from_be_bytes([*l0, *l1]));
    // Arbitrary bytes: any answer but a panic, within the limit.
    if let Ok(out) = inflate(cut(data, *c), limit) {
        assert!(out.len() <= limit);
    }
    // The data compressed: a round trip, or TooLarge exactly past the limit.
    let mut compressed = Vec::new();
    Deflater::new(*c % 10).compress_message(data, &mut compressed, true);
    match inflate(cut(&compressed, *c), limit) {
        Ok(out) => assert_eq!(out, data),
        Err(InflateError::TooLarge) => assert!(data.len() > limit),
        Err(InflateError::Corrupt) => panic!("our own compression did not inflate"),
    }
});
