//! What a connection hands its caller: the role it plays, messages and the other events
//! decoded from the peer's bytes.

use crate::close::CloseFrame;
use crate::frame::OpCode;

/// Which end of the connection this is; decides masking (§5.1, §5.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Receives masked frames, sends unmasked ones.
    Server,
    /// Sends masked frames (keys from a generator seeded by the caller), receives unmasked ones.
    Client,
}

/// The kind of a data message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageKind {
    /// Opcode 0x1: the data is valid UTF-8 (checked before the message is handed out).
    Text,
    /// Opcode 0x2: arbitrary bytes.
    Binary,
}

impl MessageKind {
    /// The opcode of the first frame of such a message.
    pub fn opcode(self) -> OpCode {
        match self {
            MessageKind::Text => OpCode::Text,
            MessageKind::Binary => OpCode::Binary,
        }
    }
}

/// A complete data message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Message<'a> {
    /// Text or binary.
    pub kind: MessageKind,
    /// The unmasked payload; valid UTF-8 when `kind` is `Text`.
    pub data: &'a [u8],
}

impl<'a> Message<'a> {
    /// The text of a text message.
    pub fn as_text(&self) -> Option<&'a str> {
        match self.kind {
            MessageKind::Text => std::str::from_utf8(self.data).ok(),
            MessageKind::Binary => None,
        }
    }
}

/// What the peer sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A complete text or binary message.
    Message(Message<'a>),
    /// A ping; the pong is already queued for [`Connection::poll_transmit`](crate::Connection::poll_transmit).
    Ping(&'a [u8]),
    /// A pong (solicited or not, §5.5.3).
    Pong(&'a [u8]),
    /// The peer's close frame. If this end had not sent one, the echo is queued; either way
    /// the closing handshake is complete once queued frames are flushed (§7.1.1).
    Close(CloseFrame<'a>),
}
