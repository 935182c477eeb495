//! Size limits of the protocol core, in one place so that no other module carries a magic number.
//!
//! Every limit is checked against what a header *declares*, before anything is allocated
//! (a peer that announces a 2^63-byte frame gets 1009 without the server reserving a byte).

/// Limits that bound what one peer can make the core buffer or compute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest HTTP request head (request line and headers, up to the blank line), in bytes.
    /// A larger head is answered with 431 as soon as the limit is crossed.
    pub max_handshake_bytes: usize,
    /// Most headers an upgrade request may carry; more is answered with 431.
    pub max_headers: usize,
    /// Largest payload one frame may declare. A larger declaration closes with 1009.
    pub max_frame_payload: u64,
    /// Largest reassembled message (all fragments together). A larger one closes with 1009.
    pub max_message: u64,
    /// Most frames one fragmented message may consist of; more closes with 1009, so a peer
    /// cannot keep a message open forever with empty continuations.
    pub max_fragments: u32,
}

/// Default head size: 8 KiB, the common limit of HTTP servers (nginx's default header buffer).
pub const DEFAULT_MAX_HANDSHAKE_BYTES: usize = 8 * 1024;
/// Default header count.
pub const DEFAULT_MAX_HEADERS: usize = 64;
/// Default message size: 64 MiB, large enough for Autobahn section 9 (16 MiB messages).
pub const DEFAULT_MAX_MESSAGE: u64 = 64 * 1024 * 1024;
/// Default fragment count per message: Autobahn 9.6/9.7 never needs more than 2^16 + a margin.
pub const DEFAULT_MAX_FRAGMENTS: u32 = 1 << 20;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_handshake_bytes: DEFAULT_MAX_HANDSHAKE_BYTES,
            max_headers: DEFAULT_MAX_HEADERS,
            max_frame_payload: DEFAULT_MAX_MESSAGE,
            max_message: DEFAULT_MAX_MESSAGE,
            max_fragments: DEFAULT_MAX_FRAGMENTS,
        }
    }
}

impl Limits {
    /// Limits with the given message size; a single frame may be as large as a message.
    pub fn with_max_message(max_message: u64) -> Self {
        Limits {
            max_frame_payload: max_message,
            max_message,
            ..Limits::default()
        }
    }
}
