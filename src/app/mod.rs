//! Applications that run on the event loop.

pub mod access;
pub mod chat;
pub mod echo;
pub mod metrics;
#[cfg(feature = "redis")]
pub mod node;
pub mod process;
pub mod serve;
pub mod topics;
