//! # wsloop
//!
//! A tiny WebSocket server (RFC 6455) on a single-threaded `mio` event loop.
//!
//! An application implements [`server::Handler`]: it is told of connections, messages and
//! closes, and answers through a [`server::Ctx`] (send, broadcast, close). The loop does the
//! rest: handshake, framing, masking, UTF-8, limits, heartbeat, backpressure, shutdown.
//!
//! ```no_run
//! use wsloop::proto::Message;
//! use wsloop::server::{Config, ConnId, Ctx, Handler, Server};
//!
//! struct Echo;
//!
//! impl Handler for Echo {
//!     fn on_message(&mut self, ctx: &mut Ctx<'_>, id: ConnId, message: Message<'_>) {
//!         ctx.send(id, message.kind, message.data);
//!     }
//! }
//!
//! let config = Config { listen: vec!["127.0.0.1:9001".parse()?], ..Config::default() };
//! Server::bind(config, Echo)?.run()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The same `Server` runs on a virtual network and clock in tests: see [`server::sim`].
//! `examples/echo.rs` and `examples/chat.rs` are complete programs.
//!
//! - [`proto`]: the protocol core without I/O, the `wsloop-proto` crate (handshake, frames,
//!   masking, UTF-8, messages, close handshake, timers).
//! - [`server`]: the event loop: listeners, connections, buffers, deadlines, broadcast.
//! - [`app`]: applications on top of the loop: the echo testee and `serve` (JSON chat,
//!   HTTP routes, access control, metrics).
//! - `cluster` (feature `redis`): the Redis Pub/Sub bridge between nodes: topic names and
//!   bytes.
//! - [`client`]: a small blocking client for the CLI and tests.
//!
//! The load generator is the separate `wsloop-bench` crate (`benches/load`).
//!
//! ## Cargo features
//!
//! - `cli` (default): the `wsloop` binary (clap, signal handling) and `client::cli`.
//! - `redis` (default): the Redis Pub/Sub bridge, `cluster::Bridge`.
//! - `reuse-port` (default): `Config::reuse_port` (`SO_REUSEPORT`) through socket2.
//! - `tls` (default): TLS on the listen addresses (`server::tls::TlsConfig`, `Config::tls`),
//!   `wss://` in the client (`client::tls`) and `rediss://` to Redis, with rustls and the ring
//!   provider.
//!
//! With no features the library needs only mio, slab, httparse, sha1, base64, serde_json
//! and the `log` facade.
//!
//! ## Logging
//!
//! The library logs through the [`log`](https://docs.rs/log) facade (targets `wsloop::...`)
//! and installs no logger: an embedder routes the records with its own.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[macro_use]
pub mod log;
pub mod app;
pub mod backoff;
pub mod client;
#[cfg(feature = "redis")]
pub mod cluster;
pub mod duration;
pub use wsloop_proto as proto;
pub mod server;
