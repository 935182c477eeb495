//! Scale-out across processes through Redis Pub/Sub.
//!
//! Every node delivers its own clients' messages locally at once and publishes them to Redis;
//! every node delivers what other nodes publish to its own clients, and drops its own
//! publications when Redis echoes them back (they carry the node id). Each client therefore
//! receives each message exactly once while Redis is up. Pub/Sub keeps nothing for a node that
//! is disconnected: across a Redis outage delivery between nodes is at-most-once (messages
//! published during the outage are counted and lost; nothing is delivered twice after it).
//!
//! The event loop never waits for Redis: [`Bridge`] runs two threads with blocking Redis
//! connections (one subscribed, one publishing) and talks to the loop through channels; the
//! subscriber wakes the loop with a `mio::Waker` when messages arrive.

mod redis_bridge;

pub use redis_bridge::{Bridge, Inbound};

/// Settings of the Redis bridge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisConfig {
    /// `redis://HOST:PORT[/DB]`.
    pub url: String,
    /// This node's id: stamped on its publications so it can recognise its own echo.
    pub node_id: String,
    /// Prefix of every Redis topic (`wsloop:` by default).
    pub prefix: String,
    /// Largest publication relayed from Redis to the loop; a larger one is dropped (no node
    /// of the cluster makes one, so it comes from somebody else on the topics).
    pub max_event: usize,
}

impl RedisConfig {
    /// The URL without its password (`redis://user:secret@host` → `redis://***@host`), for logs.
    pub fn redacted_url(&self) -> String {
        let url = &self.url;
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
            None => url.clone(),
        }
    }
}

/// Where a published event goes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Topic {
    /// Every connected client (chat).
    All,
    /// The subscribers of one channel.
    Channel(String),
}

impl Topic {
    /// The Redis topic name: `<prefix>chat` or `<prefix>channel:<name>`.
    pub fn redis_name(&self, prefix: &str) -> String {
        match self {
            Topic::All => format!("{prefix}chat"),
            Topic::Channel(name) => format!("{prefix}channel:{name}"),
        }
    }

    /// The topic a Redis topic name stands for.
    pub fn from_redis_name(name: &str, prefix: &str) -> Option<Topic> {
        let rest = name.strip_prefix(prefix)?;
        if rest == "chat" {
            return Some(Topic::All);
        }
        rest.strip_prefix("channel:")
            .map(|c| Topic::Channel(c.to_owned()))
    }
}

/// A publication on the wire: the node id, a newline, the event's JSON text. Node ids cannot
/// contain a newline, so the first newline splits them without parsing the JSON.
pub fn encode_envelope(node_id: &str, event: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(node_id.len() + 1 + event.len());
    out.extend_from_slice(node_id.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(event.as_bytes());
    out
}

/// Splits a publication into (node id, event JSON text).
pub fn decode_envelope(payload: &[u8]) -> Option<(&str, &str)> {
    let text = std::str::from_utf8(payload).ok()?;
    text.split_once('\n')
}

/// A fresh random node id (8 hex digits).
pub fn random_node_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let n = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    format!("{:08x}", n as u32)
}

/// Checks a node id given on the command line.
pub fn validate_node_id(id: &str) -> Result<(), String> {
    if id.is_empty()
        || id.len() > 64
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(format!(
            "node id {id:?} must be 1-64 characters of [A-Za-z0-9_-]"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_round_trip() {
        for topic in [
            Topic::All,
            Topic::Channel("news".into()),
            Topic::Channel("a:b".into()),
        ] {
            let name = topic.redis_name("wsloop:");
            assert_eq!(Topic::from_redis_name(&name, "wsloop:"), Some(topic));
        }
        assert_eq!(Topic::All.redis_name("p:"), "p:chat");
        assert_eq!(Topic::from_redis_name("other:chat", "wsloop:"), None);
    }

    #[test]
    fn logged_urls_carry_no_password() {
        let config = |url: &str| RedisConfig {
            url: url.into(),
            node_id: "n".into(),
            prefix: "p:".into(),
            max_event: 1,
        };
        let cases = [
            (
                "redis://:secret@10.0.0.1:6379/0",
                "redis://***@10.0.0.1:6379/0",
            ),
            ("redis://user:secret@host/2", "redis://***@host/2"),
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
            ("redis://host/path@x", "redis://host/path@x"),
        ];
        for (url, logged) in cases {
            assert_eq!(config(url).redacted_url(), logged, "{url}");
        }
    }

    #[test]
    fn envelopes() {
        let e = encode_envelope("n1", r#"{"type":"chat","content":"a\nb"}"#);
        assert_eq!(
            decode_envelope(&e),
            Some(("n1", r#"{"type":"chat","content":"a\nb"}"#))
        );
        assert_eq!(decode_envelope(b"no newline"), None);
        assert!(validate_node_id("node-1_a").is_ok());
        assert!(validate_node_id("bad\nid").is_err());
        assert!(validate_node_id("").is_err());
    }
}
