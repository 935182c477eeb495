//! Streaming UTF-8 validation for text messages that arrive in fragments (RFC 6455 §5.6, §8.1).
//!
//! A text message must be valid UTF-8 as a whole, but a fragment (or a piece of a frame that
//! arrived in one read) may end in the middle of a code point. The validator keeps at most three
//! bytes of an unfinished code point between calls and fails at the first byte that can no longer
//! start or continue a valid sequence ("fail fast", checked by Autobahn 6.4.x), without waiting
//! for the message to end.

/// The first byte at which the input stopped being valid UTF-8.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidUtf8;

/// Validates a byte stream piece by piece.
#[derive(Clone, Debug, Default)]
pub struct Utf8Validator {
    /// Bytes of a code point whose remaining bytes have not arrived yet.
    pending: [u8; 4],
    pending_len: u8,
}

impl Utf8Validator {
    /// A validator at the start of a message.
    pub fn new() -> Self {
        Self::default()
    }

    /// Validates the next piece. Returns `Err` as soon as the bytes seen so far cannot be the
    /// prefix of any valid UTF-8 text.
    pub fn feed(&mut self, mut input: &[u8]) -> Result<(), InvalidUtf8> {
        // First finish a code point left over from the previous piece, one byte at a time
        // (at most three bytes are needed).
        while self.pending_len > 0 {
            let Some((&byte, rest)) = input.split_first() else {
                return Ok(());
            };
            input = rest;
            self.pending[self.pending_len as usize] = byte;
            let len = self.pending_len as usize + 1;
            match std::str::from_utf8(&self.pending[..len]) {
                Ok(_) => self.pending_len = 0,
                Err(e) if e.error_len().is_some() => return Err(InvalidUtf8),
                // Still a valid prefix of a longer code point.
                Err(_) => self.pending_len = len as u8,
            }
        }
        match std::str::from_utf8(input) {
            Ok(_) => Ok(()),
            // error_len() is None only when the input ends inside a code point whose bytes so
            // far are a valid prefix: keep them for the next piece.
            Err(e) if e.error_len().is_none() => {
                let tail = &input[e.valid_up_to()..];
                self.pending[..tail.len()].copy_from_slice(tail);
                self.pending_len = tail.len() as u8;
                Ok(())
            }
            Err(_) => Err(InvalidUtf8),
        }
    }

    /// Checks that the message did not end inside a code point.
    pub fn finish(&mut self) -> Result<(), InvalidUtf8> {
        let complete = self.pending_len == 0;
        self.pending_len = 0;
        if complete {
            Ok(())
        } else {
            Err(InvalidUtf8)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_split(bytes: &[u8], at: usize) -> Result<(), InvalidUtf8> {
        let mut v = Utf8Validator::new();
        v.feed(&bytes[..at])?;
        v.feed(&bytes[at..])?;
        v.finish()
    }

    #[test]
    fn valid_text_split_anywhere_is_valid() {
        // "κόσμε" (Autobahn 6.2.x) and a 4-byte code point.
        let text = "κόσμε𝄞!".as_bytes();
        for at in 0..=text.len() {
            assert_eq!(feed_split(text, at), Ok(()), "split at {at}");
        }
    }

    #[test]
    fn fails_at_the_first_bad_byte_before_the_message_ends() {
        // Autobahn 6.4.1: U+110000 encoded as f4 90 80 80 is out of range; f4 90 is already
        // impossible, so the error comes before the rest arrives.
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed("κόσμε".as_bytes()), Ok(()));
        assert_eq!(v.feed(&[0xf4]), Ok(()));
        assert_eq!(v.feed(&[0x90]), Err(InvalidUtf8));
    }

    #[test]
    fn surrogates_and_overlongs_are_rejected() {
        for bad in [
            &[0xed, 0xa0, 0x80][..],
            &[0xc0, 0xaf],
            &[0xe0, 0x80, 0xaf],
            &[0xff],
        ] {
            let mut v = Utf8Validator::new();
            assert_eq!(v.feed(bad), Err(InvalidUtf8), "{bad:02x?}");
        }
    }

    #[test]
    fn truncated_code_point_fails_at_finish() {
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(&[0xe2, 0x82]), Ok(()));
        assert_eq!(v.finish(), Err(InvalidUtf8));
    }
}
