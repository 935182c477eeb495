//! Applications that run on the event loop.

pub mod access;
pub mod chat;
pub mod echo;
pub mod metrics;
pub mod serve;
