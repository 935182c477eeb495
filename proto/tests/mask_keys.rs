//! A client's masking keys must be unpredictable (RFC 6455 §5.3): an observer who saw some
//! keys on the wire must not be able to name the next one. The attack below recovers a
//! xorshift64 generator's state from eight keys; it works on seeded keys (which is why they are
//! only for simulations and tests) and must fail on the OS's keys.

use wsloop_proto::mask::MaskKeys;

fn xorshift(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

/// Keys observed before the guess. Each step shifts the state right by at most 7 bits, so
/// the top of the state reaches a key's 32 bits only after five keys.
const OBSERVED: usize = 8;

/// Bit `i` of the `OBSERVED` keys a state gives next (key `i / 32`, bit `i % 32`): a linear
/// function of the state over GF(2).
fn key_bit(mut x: u64, i: usize) -> u64 {
    for _ in 0..=i / 32 {
        x = xorshift(x);
    }
    x >> (i % 32) & 1
}

/// A state that gives the observed keys, by Gaussian elimination over GF(2); `None` when
/// no state does.
fn state_behind(observed: &[u32]) -> Option<u64> {
    // Row i: which state bits make output bit i, and that output bit.
    let mut rows: Vec<(u64, u64)> = (0..32 * OBSERVED)
        .map(|i| {
            let mask = (0..64)
                .filter(|&bit| key_bit(1 << bit, i) == 1)
                .fold(0u64, |m, bit| m | 1 << bit);
            (mask, u64::from(observed[i / 32] >> (i % 32) & 1))
        })
        .collect();
    let mut pivots = Vec::new();
    for bit in 0..64 {
        let top = pivots.len();
        let Some(p) = (top..rows.len()).find(|&r| rows[r].0 >> bit & 1 == 1) else {
            continue;
        };
        rows.swap(top, p);
        let pivot = rows[top];
        for (r, row) in rows.iter_mut().enumerate() {
            if r != top && row.0 >> bit & 1 == 1 {
                row.0 ^= pivot.0;
                row.1 ^= pivot.1;
            }
        }
        pivots.push(bit);
    }
    if rows[pivots.len()..].iter().any(|&(_, value)| value == 1) {
        return None;
    }
    let x = pivots
        .iter()
        .enumerate()
        .fold(0u64, |x, (r, bit)| x | rows[r].1 << bit);
    Some(x)
}

/// Predicts the next key from the ones before, as an observer of a xorshift client would.
fn predicted_next(keys: &mut MaskKeys) -> (Option<[u8; 4]>, [u8; 4]) {
    let observed: Vec<u32> = (0..OBSERVED)
        .map(|_| u32::from_ne_bytes(keys.next_key()))
        .collect();
    let guess = state_behind(&observed).map(|mut x| {
        for _ in 0..=OBSERVED {
            x = xorshift(x);
        }
        (x as u32).to_ne_bytes()
    });
    (guess, keys.next_key())
}

#[test]
fn seeded_keys_are_predictable_so_the_attack_is_real() {
    for seed in [1, 0x5eed, 0xdead_beef_0bad_cafe] {
        let (guess, third) = predicted_next(&mut MaskKeys::from(seed));
        assert_eq!(guess, Some(third), "seed {seed:#x}");
    }
}

#[test]
fn keys_from_the_os_cannot_be_predicted_from_earlier_ones() {
    let mut keys = MaskKeys::from_os();
    // 100 tries across refills of the pool (64 keys per draw); each guess is right by chance
    // with probability 2^-32.
    let right = (0..100)
        .filter(|_| {
            let (guess, third) = predicted_next(&mut keys);
            guess == Some(third)
        })
        .count();
    assert_eq!(right, 0);
}

#[test]
fn two_clients_get_different_keys() {
    let draw = |keys: &mut MaskKeys| (0..130).map(|_| keys.next_key()).collect::<Vec<_>>();
    let (a, b) = (
        draw(&mut MaskKeys::from_os()),
        draw(&mut MaskKeys::from_os()),
    );
    assert_ne!(a, b);
    assert_ne!(a[..64], a[64..128], "a refill draws new keys");
}

#[test]
fn a_server_connection_pays_no_more_for_the_os_pool() {
    // A server's connection holds `None` here; the pool is boxed so that idle connections
    // stay as small as with a seed alone.
    assert_eq!(std::mem::size_of::<Option<MaskKeys>>(), 16);
}
