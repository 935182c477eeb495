//! # wsloop
//!
//! A tiny WebSocket server (RFC 6455) on a single-threaded `mio` event loop.
//!
//! - [`proto`]: the protocol core without I/O (handshake, frames, masking, UTF-8, messages,
//!   close handshake).
//! - [`server`]: the event loop: listeners, connections, buffers, timers, broadcast.
//! - [`app`]: applications on top of the loop: the echo testee and `serve` (JSON chat,
//!   HTTP routes, access control, metrics).
//! - [`cluster`]: the Redis Pub/Sub bridge between nodes.
//! - [`client`]: a small blocking client for the CLI and tests.
//! - [`bench`]: the load generator (`wsloop bench`).

#[macro_use]
pub mod log;
pub mod app;
pub mod backoff;
pub mod bench;
pub mod client;
pub mod cluster;
pub mod duration;
pub use wsloop_proto as proto;
pub mod server;
