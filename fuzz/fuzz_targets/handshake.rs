//! `HeadReader::read` on arbitrary bytes, delivered as a growing buffer cut at arbitrary points:
//! - never panics;
//! - the result for the chunked input equals the result for the whole input (the reader's
//!   resumed search for the blank line finds the same head, or the same error);
//! - a head that is found has a length within the input and the size limit;
//! - when a request parses, `validate_upgrade` does not panic, and an accept key is 28 base64
//!   characters (base64 of a 20-byte SHA-1, RFC 6455 §4.2.2); a 101 is written without
//!   panicking and starts with its status line, and a refusal earns 400, 426 or 431.
//!
//! Input: byte 0 picks the limits (0: the defaults; n > 0: a head of at most 16·n bytes and at
//! most 1 + n % 32 headers), byte 1 is the number of cuts (mod 17), then 2 bytes per cut (big
//! endian, modulo the data length + 1), then the data.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsloop_proto::handshake::{
    validate_upgrade, write_switching_protocols, HandshakeError, HeadReader,
};
use wsloop_proto::Limits;

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

fn is_base64(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'+' || c == b'/'
}

fuzz_target!(|input: &[u8]| {
    let Some((&pick, rest)) = input.split_first() else {
        return;
    };
    let limits = match pick {
        0 => Limits::default(),
        n => Limits {
            max_handshake_bytes: 16 * usize::from(n),
            max_headers: 1 + usize::from(n % 32),
            ..Limits::default()
        },
    };
    let (cuts, data) = cuts_and_rest(rest);

    let whole = HeadReader::new().read(data, &limits);

    let mut reader = HeadReader::new();
    let mut chunked = Ok(None);
    for end in cuts.into_iter().chain([data.len()]) {
        chunked = reader.read(&data[..end], &limits);
        if !matches!(chunked, Ok(None)) {
            break;
        }
    }
    assert_eq!(chunked, whole, "chunked and whole disagree");

    match whole {
        Ok(Some((request, head_len))) => {
            assert!(head_len <= data.len());
            assert!(head_len <= limits.max_handshake_bytes);
            let _ = (request.path(), request.wants_upgrade());
            let mut out = Vec::new();
            match validate_upgrade(&request) {
                Ok(upgrade) => {
                    let accept = upgrade.accept.as_bytes();
                    assert_eq!(accept.len(), 28, "{}", upgrade.accept);
                    assert!(
                        accept[..27].iter().all(|&c| is_base64(c)),
                        "{}",
                        upgrade.accept
                    );
                    assert_eq!(accept[27], b'=');
                    let protocol = upgrade.offered_protocols.first().map(String::as_str);
                    write_switching_protocols(&mut out, &upgrade.accept, protocol, None);
                    assert!(out.starts_with(b"HTTP/1.1 101 Switching Protocols\r\n"));
                }
                Err(e) => assert_rejection(&e),
            }
        }
        Ok(None) => assert!(data.len() <= limits.max_handshake_bytes),
        Err(e) => assert_rejection(&e),
    }
});

/// A refusal earns a 4xx status the server can answer with, and a reason for its body.
fn assert_rejection(e: &HandshakeError) {
    assert!(matches!(e.status(), 400 | 426 | 431), "{e:?}");
    assert!(!e.reason().is_empty());
}
