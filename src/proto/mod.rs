//! The WebSocket protocol core (RFC 6455), free of I/O: bytes in, events and bytes out.
//!
//! Nothing here touches a socket, a clock or JSON, and nothing panics on what a peer sends.
//! The event loop in [`crate::server`] and the blocking [`crate::client`] both drive it.

pub mod client_handshake;
pub mod close;
pub mod connection;
pub mod error;
pub mod frame;
pub mod handshake;
pub mod limits;
pub mod mask;
pub mod utf8;

pub use close::{code as close_code, CloseFrame};
pub use connection::{Connection, ControlFrame, Event, Message, MessageKind, Role};
pub use error::ProtocolError;
pub use frame::OpCode;
pub use limits::Limits;
