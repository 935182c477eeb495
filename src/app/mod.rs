//! Applications that run on the event loop.

pub mod access;
#[cfg(feature = "auth")]
pub mod api;
#[cfg(feature = "auth")]
pub mod auth;
pub mod broadcast;
pub mod chat;
pub mod echo;
pub mod gate;
pub mod history;
pub mod identity;
#[cfg(feature = "auth")]
pub mod json_http;
#[cfg(feature = "auth")]
pub mod login;
pub mod metrics;
#[cfg(feature = "redis")]
pub mod node;
pub mod process;
pub mod serve;
pub mod topics;
