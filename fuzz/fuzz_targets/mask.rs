//! `apply_mask` (eight bytes at a time) equals `apply_mask_scalar` (RFC 6455 §5.3 as written)
//! for any data, key and offset; unmasking in two pieces equals unmasking at once; masking twice
//! gives the data back.
//!
//! Input: 4 bytes of key, 2 bytes of offset (big endian), then the data.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsloop_proto::mask::{apply_mask, apply_mask_scalar};

fuzz_target!(|input: &[u8]| {
    let [k0, k1, k2, k3, o0, o1, data @ ..] = input else {
        return;
    };
    let key = [*k0, *k1, *k2, *k3];
    let offset = usize::from(u16::from_be_bytes([*o0, *o1]));

    let mut fast = data.to_vec();
    let mut scalar = data.to_vec();
    apply_mask(&mut fast, key, offset);
    apply_mask_scalar(&mut scalar, key, offset);
    assert_eq!(fast, scalar, "key {key:02x?} offset {offset}");

    // A payload unmasked piece by piece, each piece with its offset in the frame.
    let split = offset % (data.len() + 1);
    let mut pieces = data.to_vec();
    let (a, b) = pieces.split_at_mut(split);
    apply_mask(a, key, offset);
    apply_mask(b, key, offset + split);
    assert_eq!(pieces, scalar, "split at {split}");

    // Masking is an involution.
    apply_mask(&mut fast, key, offset);
    assert_eq!(fast, data);
});
