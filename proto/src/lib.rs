//! The WebSocket protocol core of wsloop (RFC 6455), free of I/O: bytes and the current time
//! in; events, bytes and the next deadline out.
//!
//! Nothing here touches a socket, reads a clock or knows JSON, and nothing panics on what a
//! peer sends. wsloop's mio event loop and its blocking client both drive it; so can any
//! other runtime, or a test on a virtual clock.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod client_handshake;
pub mod close;
pub mod code;
pub mod connection;
mod control;
pub mod error;
pub mod event;
pub mod frame;
pub mod handshake;
pub mod limits;
pub mod mask;
pub mod timers;
pub mod utf8;

pub use close::CloseFrame;
/// The close status codes, under the name the rest of wsloop uses.
pub use code as close_code;
pub use code::Policy;
pub use connection::Connection;
pub use control::ControlFrame;
pub use error::ProtocolError;
pub use event::{Event, Message, MessageKind, Role};
pub use frame::OpCode;
pub use limits::Limits;
pub use timers::{Expired, Timeouts};
