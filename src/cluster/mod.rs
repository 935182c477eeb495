//! A bridge between the event loop and Redis Pub/Sub (feature `redis`): publish bytes on a
//! topic name, subscribe and unsubscribe topic names, receive (topic name, bytes). What the
//! topics and payloads mean is the application's business (`app::topics`, `app::node`).
//!
//! The event loop never waits for Redis: [`Bridge`] runs two threads with blocking Redis
//! connections (one subscribed, one publishing) and talks to the loop through channels; the
//! subscriber wakes the loop with a `mio::Waker` when messages arrive. The subscriber PINGs
//! Redis after a second of silence, so a hung Redis shows in [`Bridge::is_up`] within about
//! three seconds even on a node that publishes nothing; the publisher pipelines its queue and
//! tells publications Redis confirmed from those whose outcome is unknown.
//!
//! With [`RedisConfig::history`], recorded topics also keep their history in Redis Streams
//! ([`streams`]): the publisher appends through a script ([`Bridge::append`]) and a reader
//! thread answers [`Bridge::read`] with [`Inbound::Read`].
//!
//! [`Presence`] keeps who is in which channel in Redis keys with a TTL, on a thread of its
//! own.

mod presence;
mod publisher;
mod redis_bridge;
mod route;
mod sharded;
pub mod streams;

use std::path::PathBuf;

pub use presence::{Presence, PresenceChange, PresenceConfig, PresenceTable};
pub use redis_bridge::{Bridge, Inbound};

/// Settings of the Redis bridge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisConfig {
    /// `redis://HOST:PORT[/DB]`, or `rediss://...` for TLS (feature `tls`); with
    /// [`cluster`](Self::cluster), the seed nodes' URLs, comma-separated.
    pub url: String,
    /// `url` names seed nodes of a Redis Cluster: keys and shard channels are routed to the
    /// master of their slot (`cluster::route`), Pub/Sub is sharded (`SPUBLISH`, `SSUBSCRIBE`).
    pub cluster: bool,
    /// With `rediss://`: a PEM file of the CA certificates that Redis's certificate must
    /// chain to, trusted instead of the system's (feature `tls`).
    pub ca_file: Option<PathBuf>,
    /// Largest publication relayed from Redis to the loop; a larger one is dropped (the
    /// application makes none, so it comes from somebody else on the topics).
    pub max_payload: usize,
    /// A key this process claims while it runs (renewed every second, expiring 3 s after the
    /// last renewal): finding it renewed by another process means two processes were given
    /// one name ([`Bridge::claim_contested`]).
    pub claim: Option<String>,
    /// Keep the history of recorded topics in Redis Streams ([`Bridge::append`],
    /// [`Bridge::read`]); `None`: publications are Pub/Sub only.
    pub history: Option<streams::StreamSettings>,
}

impl RedisConfig {
    /// The URL(s) without passwords (`redis://user:secret@host` → `redis://***@host`), for
    /// logs.
    pub fn redacted_url(&self) -> String {
        self.urls().map(Self::redact).collect::<Vec<_>>().join(",")
    }

    /// The URL, or each seed node's URL.
    pub fn urls(&self) -> impl Iterator<Item = &str> {
        self.url.split(',')
    }

    /// One URL without its password.
    pub(crate) fn redact(url: &str) -> String {
        let authority_start = url.find("://").map_or(0, |i| i + 3);
        let authority_end = url[authority_start..]
            .find('/')
            .map_or(url.len(), |i| authority_start + i);
        match url[authority_start..authority_end].rfind('@') {
            Some(at) => format!(
                "{}***{}",
                &url[..authority_start],
                &url[authority_start + at..]
            ),
            None => url.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logged_urls_carry_no_password() {
        let config = |url: &str| RedisConfig {
            url: url.into(),
            cluster: false,
            ca_file: None,
            max_payload: 1,
            claim: None,
            history: None,
        };
        let cases = [
            (
                "redis://:secret@10.0.0.1:6379/0",
                "redis://***@10.0.0.1:6379/0",
            ),
            ("redis://user:secret@host/2", "redis://***@host/2"),
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
            (
                "rediss://:secret@redis.lan:6380/0",
                "rediss://***@redis.lan:6380/0",
            ),
            ("redis://host/path@x", "redis://host/path@x"),
            (
                "redis://:a@h1:7000,redis://:b@h2:7001",
                "redis://***@h1:7000,redis://***@h2:7001",
            ),
        ];
        for (url, logged) in cases {
            assert_eq!(config(url).redacted_url(), logged, "{url}");
        }
    }
}
