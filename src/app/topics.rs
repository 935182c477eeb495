//! The chat's vocabulary on the wire between nodes: which topics it publishes on, how they
//! are named, and the publication envelope (`node stream seq \n event JSON`) that lets a node
//! tell its own echo apart and count what it missed. The bridge under it (`cluster`) moves
//! topic names and bytes only.

/// Where a published event goes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Topic {
    /// Every connected client (chat).
    All,
    /// The subscribers of one channel.
    Channel(String),
    /// The connections of the users an event names (`direct` messages and disconnections
    /// from the server API): every node holds this topic and finds the user's connections.
    Users,
}

impl Topic {
    /// The topic's name on the bus: `<prefix>chat` or `<prefix>channel:<name>`.
    pub fn name(&self, prefix: &str) -> String {
        match self {
            Topic::All => format!("{prefix}chat"),
            Topic::Users => format!("{prefix}users"),
            Topic::Channel(name) => format!("{prefix}channel:{name}"),
        }
    }

    /// The topic a name on the bus stands for (`None` for names of somebody else's).
    pub fn from_name(name: &str, prefix: &str) -> Option<Topic> {
        let rest = name.strip_prefix(prefix)?;
        match rest {
            "chat" => return Some(Topic::All),
            "users" => return Some(Topic::Users),
            _ => {}
        }
        rest.strip_prefix("channel:")
            .map(|c| Topic::Channel(c.to_owned()))
    }
}

/// Who sent a publication, and where it stands in the sender's sequence on its topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Origin<'a> {
    /// The sending node's id.
    pub node: &'a str,
    /// The sending process and its numbering (a new stream restarts the numbering).
    pub stream: &'a str,
    /// 1 for the stream's first publication on the topic, then one more each.
    pub seq: u64,
}

/// A publication on the wire: `node stream seq`, a newline, the event's JSON text. Node ids
/// and streams hold no space or newline, so the first newline and the spaces split them
/// without parsing the JSON.
pub fn encode_envelope(origin: Origin<'_>, event: &str) -> Vec<u8> {
    let Origin { node, stream, seq } = origin;
    format!("{node} {stream} {seq}\n{event}").into_bytes()
}

/// Splits a publication into its origin and event JSON text; `None` when it is not one. A
/// publication of a node from before the numbering (`node id \n event JSON`) has `seq` 0 and
/// an empty stream: it is delivered, nothing can be counted for it.
pub fn decode_envelope(payload: &[u8]) -> Option<(Origin<'_>, &str)> {
    let text = std::str::from_utf8(payload).ok()?;
    let (head, event) = text.split_once('\n')?;
    let mut fields = head.split(' ');
    let origin = match (fields.next(), fields.next(), fields.next(), fields.next()) {
        (Some(node), None, _, _) => Origin {
            node,
            stream: "",
            seq: 0,
        },
        (Some(node), Some(stream), Some(seq), None) => Origin {
            node,
            stream,
            seq: seq.parse().ok().filter(|&n| n > 0)?,
        },
        _ => return None,
    };
    Some((origin, event))
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
/// holds no space or newline, which end it in the envelope).
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
            Topic::Users,
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
        let origin = Origin {
            node: "n1",
            stream: "00ff.0",
            seq: 7,
        };
        let e = encode_envelope(origin, r#"{"type":"chat","content":"a\nb"}"#);
        assert_eq!(e, b"n1 00ff.0 7\n{\"type\":\"chat\",\"content\":\"a\\nb\"}");
        assert_eq!(
            decode_envelope(&e),
            Some((origin, r#"{"type":"chat","content":"a\nb"}"#))
        );
        for bad in [
            &b"no newline"[..],
            b"n1 s 1\n\xff",
            b"n1 s\n{}",
            b"n1 s 0\n{}",
            b"n1 s x\n{}",
            b"n1 s -1\n{}",
            b"n1 s 1 extra\n{}",
        ] {
            assert_eq!(
                decode_envelope(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(validate_node_id("node-1_a").is_ok());
        assert!(validate_node_id("bad\nid").is_err());
        assert!(validate_node_id("").is_err());
        assert!(validate_node_id(&"a".repeat(65)).is_err());
    }
}
