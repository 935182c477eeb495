//! `Utf8Validator` fed arbitrary chunks agrees with `std::str::from_utf8` on the whole input,
//! and fails exactly at the chunk holding the first byte after which no valid UTF-8 can follow
//! (fail fast, RFC 6455 §8.1 / Autobahn 6.4.x): not before, not later, and not only at `finish`.
//! Input truncated inside a code point fails at `finish` and nowhere earlier.
//!
//! Input: byte 0 is the number of cuts (mod 17), then 2 bytes per cut (big endian, taken modulo
//! the data length + 1), then the data.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsloop_proto::utf8::Utf8Validator;

fn cuts_and_rest(input: &[u8]) -> (Vec<usize>, &[u8]) {
    let Some((&n, rest)) = input.split_first() else {
        return (Vec::new(), input);
    };
    let take = (2 * usize::from(n % 17)).min(rest.len() & !1);
    let (raw, data) = rest.split_at(take);
    let mut cuts: Vec<usize> = raw
        .chunks_exact(2)
        .map(|c| usize::from(u16::from_be_bytes([c[0], c[1]])) % (data.len() + 1))
        .collect();
    cuts.sort_unstable();
    (cuts, data)
}

/// The index of the first byte at which `data` stops being a prefix of valid UTF-8, if any.
fn first_bad_byte(data: &[u8]) -> Option<usize> {
    let e = std::str::from_utf8(data).err()?;
    e.error_len()?;
    let start = e.valid_up_to();
    (1..=4)
        .take_while(|k| start + k <= data.len())
        .find(|k| {
            std::str::from_utf8(&data[start..start + k])
                .err()
                .is_some_and(|e| e.error_len().is_some())
        })
        .map(|k| start + k - 1)
        .or_else(|| panic!("no bad byte found after {start} in {data:02x?}"))
}

fuzz_target!(|input: &[u8]| {
    let (cuts, data) = cuts_and_rest(input);
    let valid = std::str::from_utf8(data).is_ok();
    let bad = first_bad_byte(data);

    let mut validator = Utf8Validator::new();
    let mut failed_in = None;
    let mut start = 0;
    for end in cuts.into_iter().chain([data.len()]) {
        if validator.feed(&data[start..end]).is_err() {
            failed_in = Some(start..end);
            break;
        }
        start = end;
    }
    let finished = failed_in.is_none() && validator.finish().is_ok();
    assert_eq!(finished, valid, "{data:02x?}");
    match (bad, failed_in) {
        (Some(bad), Some(chunk)) => assert!(
            chunk.contains(&bad),
            "first bad byte {bad}, failed in chunk {chunk:?}: {data:02x?}"
        ),
        (Some(bad), None) => panic!("bad byte {bad} not caught by feed: {data:02x?}"),
        (None, Some(chunk)) => panic!("valid prefix failed in chunk {chunk:?}: {data:02x?}"),
        (None, None) => {}
    }
});
