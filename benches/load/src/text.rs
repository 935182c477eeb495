//! Text that compresses as chat traffic does: words from a small vocabulary in a
//! pseudo-random order, so that permessage-deflate's figures are not those of a repeated
//! pattern (which compresses to almost nothing).

/// The vocabulary: chat words, names and numbers.
const WORDS: &[&str] = &[
    "the", "message", "channel", "user", "hello", "status", "update", "ok", "error", "value",
    "time", "price", "order", "sent", "received", "room", "typing", "online", "away", "photo",
    "link", "reply", "thread", "today", "meeting", "at", "noon", "2026", "12", "42", "7", "true",
    "false", "and", "with", "from", "see", "you", "later", "thanks",
];

/// A xorshift sequence: cheap, deterministic per seed.
struct Sequence(u64);

impl Sequence {
    fn new(seed: u64) -> Self {
        Sequence(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// Syllables of the rarer words: two or three make one of about 8,000.
const SYLLABLES: &[&str] = &[
    "ka", "lo", "mi", "sen", "tor", "va", "ri", "pel", "dun", "ex", "qua", "zo", "bri", "nat",
    "ul", "fem", "gos", "hy", "jen", "wer",
];

/// Appends words separated by spaces to `out` until it has grown by exactly `len` bytes:
/// half of them common chat words, the others rarer made-up words and numbers, so that the
/// text compresses about as well as chat does (a few common words alone would compress
/// far better, and make a compressor search long match chains). ASCII without quotes or
/// backslashes: it fits a JSON string as it is.
pub fn push_words(out: &mut String, len: usize, seed: u64) {
    let end = out.len() + len;
    let mut sequence = Sequence::new(seed);
    while out.len() < end {
        match sequence.below(4) {
            0 | 1 => out.push_str(WORDS[sequence.below(WORDS.len())]),
            2 => {
                for _ in 0..2 + sequence.below(2) {
                    out.push_str(SYLLABLES[sequence.below(SYLLABLES.len())]);
                }
            }
            _ => out.push_str(&sequence.below(100_000).to_string()),
        }
        out.push(' ');
    }
    out.truncate(end);
}

/// `len` bytes of JSON-like text: chat messages with varying senders, channels, ids and
/// contents, one after the other.
pub fn json_like(len: usize, seed: u64) -> String {
    let mut out = String::with_capacity(len + 160);
    let mut sequence = Sequence::new(seed);
    while out.len() < len {
        let (from, room, id) = (
            sequence.below(50),
            sequence.below(8),
            sequence.below(100_000),
        );
        out.push_str(&format!(
            r#"{{"type":"chat","from":"user{from}","channel":"room{room}","id":{id},"content":""#
        ));
        let words = 20 + sequence.below(60);
        push_words(&mut out, words, sequence.below(1 << 20) as u64);
        out.push_str("\"}\n");
    }
    out.truncate(len);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_lengths_and_plain_ascii() {
        for len in [0, 1, 16, 4096, 65_536] {
            let json = json_like(len, 3);
            assert_eq!(json.len(), len);
            assert!(json.is_ascii());
            let mut words = String::from("x");
            push_words(&mut words, len, 9);
            assert_eq!(words.len(), len + 1);
            assert!(!words.contains(['"', '\\']));
        }
        assert_ne!(json_like(200, 1), json_like(200, 2));
        assert!(json_like(300, 1).starts_with(r#"{"type":"chat","from":"user"#));
    }
}
