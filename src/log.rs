//! Logging through the [`log`](https://docs.rs/log) facade: the library emits records and an
//! embedder decides where they go (the `wsloop` binary prints them to stderr).
//!
//! Call sites inside the crate write `log!(Level::Warn, "bad frame from {peer}")`; the macro
//! forwards to `log::log!`, so a disabled level costs one atomic load, as with any `log` user.
//! Records carry the module path as their target (`wsloop::server`, `wsloop::cluster::...`).

/// Severity of a log record, most severe first (the `log` crate's level).
///
/// What each level is used for here: `Error` something failed that needs attention; `Warn`
/// a peer misbehaved or a limit was hit; `Info` lifecycle (listening, shutting down);
/// `Debug` per-connection events; `Trace` per-frame detail.
pub use ::log::Level;

/// The `log` crate, for [`log!`](crate::log!) expanded in other crates.
#[doc(hidden)]
pub use ::log as facade;

/// Logs at a level through the `log` facade: `log!(Level::Warn, "bad frame from {peer}")`.
#[macro_export]
macro_rules! log {
    ($level:expr, $($arg:tt)*) => {
        $crate::log::facade::log!($level, $($arg)*)
    };
}
