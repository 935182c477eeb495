//! Applications that run on the event loop.

pub mod echo;
