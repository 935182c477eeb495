//! Payload masking (RFC 6455 §5.3): `octet i XOR key[i mod 4]`.
//!
//! Masking is an involution, so the same function masks (client side) and unmasks (server
//! side). The fast version works eight bytes at a time on a key widened to a `u64`; the scalar
//! version is the reference it is tested (and fuzzed) against.

/// Masks or unmasks `buf` in place. `offset` is how many payload bytes of the same frame came
/// before `buf`, so a payload that arrives in pieces can be unmasked piece by piece.
pub fn apply_mask(buf: &mut [u8], key: [u8; 4], offset: usize) {
    // Rotate the key so that key[0] applies to buf[0].
    let rotated = key_at(key, offset);
    let mut chunks = buf.chunks_exact_mut(8);
    let wide = u64::from_ne_bytes([
        rotated[0], rotated[1], rotated[2], rotated[3], rotated[0], rotated[1], rotated[2],
        rotated[3],
    ]);
    for chunk in &mut chunks {
        // chunks_exact_mut guarantees 8 bytes, so the conversion cannot fail.
        let word = u64::from_ne_bytes([
            chunk[0], chunk[1], chunk[2], chunk[3], chunk[4], chunk[5], chunk[6], chunk[7],
        ]) ^ wide;
        chunk.copy_from_slice(&word.to_ne_bytes());
    }
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= rotated[i % 4];
    }
}

/// Byte-at-a-time masking, exactly as §5.3 states it. The reference for tests and fuzzing.
pub fn apply_mask_scalar(buf: &mut [u8], key: [u8; 4], offset: usize) {
    for (i, byte) in buf.iter_mut().enumerate() {
        *byte ^= key[(offset + i) % 4];
    }
}

/// Masking keys for a client. §5.3: the key "MUST be derived from a strong source of
/// entropy", and a client that can be made to send chosen bytes must not let an observer
/// predict the next key (the attack on proxies' caches the masking exists to stop).
///
/// Two sources:
/// - [`MaskKeys::from_os`]: the operating system's CSPRNG (`getrandom`), drawn 64 keys at a
///   time. What a client on a real network uses (`wsloop client`, [`Client`] in wsloop).
/// - A `u64` seed (`MaskKeys::from(seed)`): xorshift64 over it, which is fast and
///   repeatable but **predictable** after a few keys. For simulations, tests, fuzzing and load
///   generators talking to a server on loopback; never across intermediaries.
///
/// [`Client`]: https://docs.rs/wsloop/latest/wsloop/client/struct.Client.html
#[derive(Clone, Debug)]
pub struct MaskKeys(Source);

#[derive(Clone, Debug)]
enum Source {
    Seeded(u64),
    // Boxed so that a connection's `Option<MaskKeys>` stays 16 bytes (a server's is `None`).
    Os(Box<Pool>),
}

/// Keys the OS gave, used in order, refilled when spent.
#[derive(Clone, Debug)]
struct Pool {
    keys: [[u8; 4]; POOL_KEYS],
    next: usize,
}

/// Keys per draw from the OS: one `getrandom` call per 64 frames.
const POOL_KEYS: usize = 64;

impl MaskKeys {
    /// Keys from the operating system's CSPRNG.
    pub fn from_os() -> Self {
        MaskKeys(Source::Os(Box::new(Pool {
            keys: [[0; 4]; POOL_KEYS],
            next: POOL_KEYS,
        })))
    }

    /// The next key.
    pub fn next_key(&mut self) -> [u8; 4] {
        match &mut self.0 {
            Source::Seeded(state) => {
                let mut x = *state;
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *state = x;
                (x as u32).to_ne_bytes()
            }
            Source::Os(pool) => {
                if pool.next == POOL_KEYS {
                    pool.refill();
                }
                pool.next += 1;
                pool.keys[pool.next - 1]
            }
        }
    }
}

impl Pool {
    fn refill(&mut self) {
        let bytes = self.keys.as_flattened_mut();
        if getrandom::fill(bytes).is_err() {
            // No OS source at all (getrandom fails only on platforms without one): keys from
            // std's per-process random SipHash keys, so they are at least not fixed.
            use std::hash::{BuildHasher, Hasher};
            for chunk in bytes.chunks_mut(8) {
                let word = std::collections::hash_map::RandomState::new()
                    .build_hasher()
                    .finish();
                chunk.copy_from_slice(&word.to_ne_bytes()[..chunk.len()]);
            }
        }
        self.next = 0;
    }
}

/// Seeded, predictable keys (see [`MaskKeys`]).
impl From<u64> for MaskKeys {
    fn from(seed: u64) -> Self {
        // xorshift must not start at zero.
        MaskKeys(Source::Seeded(seed | 1))
    }
}

fn key_at(key: [u8; 4], offset: usize) -> [u8; 4] {
    let s = offset % 4;
    [key[s], key[(s + 1) % 4], key[(s + 2) % 4], key[(s + 3) % 4]]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_5_7_masked_hello() {
        // RFC 6455 §5.7: "A single-frame masked text message" with key 37 fa 21 3d.
        let mut payload = [0x7f, 0x9f, 0x4d, 0x51, 0x58];
        apply_mask(&mut payload, [0x37, 0xfa, 0x21, 0x3d], 0);
        assert_eq!(&payload, b"Hello");
    }

    #[test]
    fn fast_equals_scalar_for_every_length_and_offset() {
        let key = [0xde, 0xad, 0xbe, 0xef];
        for len in 0..40 {
            for offset in 0..8 {
                let data: Vec<u8> = (0..len as u8).map(|b| b.wrapping_mul(31)).collect();
                let mut fast = data.clone();
                let mut slow = data.clone();
                apply_mask(&mut fast, key, offset);
                apply_mask_scalar(&mut slow, key, offset);
                assert_eq!(fast, slow, "len {len} offset {offset}");
            }
        }
    }

    #[test]
    fn unmasking_in_pieces_equals_unmasking_at_once() {
        let key = [1, 2, 3, 4];
        let data: Vec<u8> = (0..100u8).collect();
        let mut whole = data.clone();
        apply_mask(&mut whole, key, 0);
        let mut pieces = data.clone();
        let (a, rest) = pieces.split_at_mut(7);
        let (b, c) = rest.split_at_mut(13);
        apply_mask(a, key, 0);
        apply_mask(b, key, 7);
        apply_mask(c, key, 20);
        assert_eq!(whole, pieces);
    }
}
