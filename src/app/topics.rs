//! The chat's vocabulary on the wire between nodes: which topics it publishes on, how they
//! are named, and the publication envelope (`node id \n event JSON`) that lets a node tell
//! its own echo apart. The bridge under it (`cluster`) moves topic names and bytes only.

/// Where a published event goes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Topic {
    /// Every connected client (chat).
    All,
    /// The subscribers of one channel.
    Channel(String),
}

impl Topic {
    /// The topic's name on the bus: `<prefix>chat` or `<prefix>channel:<name>`.
    pub fn name(&self, prefix: &str) -> String {
        match self {
            Topic::All => format!("{prefix}chat"),
            Topic::Channel(name) => format!("{prefix}channel:{name}"),
        }
    }

    /// The topic a name on the bus stands for (`None` for names of somebody else's).
    pub fn from_name(name: &str, prefix: &str) -> Option<Topic> {
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

/// Splits a publication into (node id, event JSON text); `None` when it is not one.
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

/// Checks a node id given on the command line: 1-64 characters of `[A-Za-z0-9_-]` (so it
/// holds no newline, which ends it in the envelope).
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
            let name = topic.name("wsloop:");
            assert_eq!(Topic::from_name(&name, "wsloop:"), Some(topic));
        }
        assert_eq!(Topic::All.name("p:"), "p:chat");
        assert_eq!(Topic::Channel("x".into()).name("p:"), "p:channel:x");
        assert_eq!(Topic::from_name("other:chat", "wsloop:"), None);
    }

    #[test]
    fn envelopes() {
        let e = encode_envelope("n1", r#"{"type":"chat","content":"a\nb"}"#);
        assert_eq!(e, b"n1\n{\"type\":\"chat\",\"content\":\"a\\nb\"}");
        assert_eq!(
            decode_envelope(&e),
            Some(("n1", r#"{"type":"chat","content":"a\nb"}"#))
        );
        assert_eq!(decode_envelope(b"no newline"), None);
        assert_eq!(decode_envelope(b"n1\n\xff"), None);
        assert!(validate_node_id("node-1_a").is_ok());
        assert!(validate_node_id("bad\nid").is_err());
        assert!(validate_node_id("").is_err());
        assert!(validate_node_id(&"a".repeat(65)).is_err());
    }
}
