//! The WebSocket protocol core of wsloop (RFC 6455), free of I/O: bytes and the current time
//! in; events, bytes and the next deadline out.
//!
//! Nothing here touches a socket, reads a clock or knows JSON, and nothing panics on what a
//! peer sends. wsloop's mio event loop and its blocking client both drive it; so can any
//! other runtime, or a test on a virtual clock.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::{Duration, Instant};
//! use wsloop_proto::{Connection, Event, Expired, Limits, Timeouts};
//!
//! let start = Instant::now();
//! let heartbeat = Some(Duration::from_secs(20));
//! let timeouts = Timeouts { ping_interval: heartbeat, ..Timeouts::default() };
//! let timeouts = Arc::new(timeouts); // one for all the connections of a server
//! let mut conn = Connection::new_server(Limits::default()).with_timeouts(timeouts, start);
//!
//! // RFC 6455 §5.7: a masked "Hello" from the client, decoded in place.
//! let mut bytes = [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58];
//! let (used, event) = conn.poll_event(&mut bytes, start).unwrap();
//! assert_eq!(used, 11);
//! assert!(matches!(event, Some(Event::Message(m)) if m.data == b"Hello"));
//!
//! // Time is an input too: when the heartbeat is due, a ping waits in `poll_transmit`.
//! let due = conn.poll_timeout().unwrap();
//! assert_eq!(conn.handle_timeout(due), Some(Expired::PingSent));
//! assert_eq!(conn.poll_transmit().unwrap().as_bytes()[0], 0x89);
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod client_handshake;
pub mod close;
pub mod code;
pub mod connection;
mod control;
#[cfg(feature = "deflate")]
pub mod deflate;
pub mod encoder;
pub mod error;
pub mod event;
#[cfg(feature = "deflate")]
pub mod extension;
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
pub use encoder::MessageEncoder;
pub use error::ProtocolError;
pub use event::{Event, Message, MessageKind, Role};
pub use frame::OpCode;
pub use limits::Limits;
pub use timers::{Expired, Timeouts};
