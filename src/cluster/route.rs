//! Where a Redis key lives, and a connection there ([`Router`]): with `--redis`, the one
//! Redis; with `--redis-cluster`, the master owning the key's slot (CRC16 of the key's hash
//! tag, mod 16384; the slot map from `CLUSTER SLOTS`), one connection per master.
//!
//! Routing is by hand over plain connections rather than through redis-rs's cluster client:
//! that client has no sharded Pub/Sub on its sync side, and the subscriber needs the slot map
//! anyway to put each `SSUBSCRIBE` on the right master. Any error (a closed connection,
//! `MOVED`/`ASK` after a slot moved, a failover) is answered by [`Router::invalidate`]: the
//! next use asks the cluster for its slot map again.

use std::collections::BTreeMap;

use super::redis_bridge::{client_for, CONNECT_TIMEOUT, REPLY_TIMEOUT};
use super::RedisConfig;

/// Slots in a Redis Cluster.
const SLOTS: usize = 16_384;

/// The part of a key that is hashed: the text between the first `{` and the next `}` when
/// that is not empty, else the whole key (Redis Cluster specification, "Hash tags").
fn hash_tag(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&b| b == b'{') {
        if let Some(len) = key[open + 1..].iter().position(|&b| b == b'}') {
            if len > 0 {
                return &key[open + 1..open + 1 + len];
            }
        }
    }
    key
}

/// CRC16/XMODEM (polynomial 0x1021, initial value 0), the checksum Redis Cluster hashes
/// keys with (not cryptography).
fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in data {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The cluster slot of a key (or of a shard channel: channels hash as keys do).
pub fn slot(key: &[u8]) -> u16 {
    crc16(hash_tag(key)) % SLOTS as u16
}

/// The URL of a cluster node at `host:port`, with the scheme and credentials of `seed`.
fn node_url(seed: &str, host: &str, port: i64) -> String {
    let (scheme, rest) = seed.split_once("://").unwrap_or(("redis", seed));
    let authority = rest.split('/').next().unwrap_or("");
    let credentials = authority.rfind('@').map_or("", |at| &authority[..=at]);
    if host.contains(':') {
        format!("{scheme}://{credentials}[{host}]:{port}")
    } else {
        format!("{scheme}://{credentials}{host}:{port}")
    }
}

/// Prepares a fresh connection (loads scripts, say) before it is used.
pub(super) type Init = fn(&mut redis::Connection) -> redis::RedisResult<()>;

/// Connections to where keys live (see the module's documentation).
pub(super) struct Router {
    config: RedisConfig,
    /// Node URLs; a node is its index. With one Redis: its URL alone.
    nodes: Vec<String>,
    /// Per slot, its master's index (cluster mode; empty until the map is asked for).
    owners: Vec<Option<usize>>,
    connections: BTreeMap<usize, redis::Connection>,
    init: Init,
}

impl Router {
    /// A router for `config`'s Redis or cluster; connects on first use.
    pub(super) fn new(config: &RedisConfig, init: Init) -> Router {
        Router {
            nodes: config.urls().map(str::to_owned).collect(),
            config: config.clone(),
            owners: Vec::new(),
            connections: BTreeMap::new(),
            init,
        }
    }

    /// Routes to the masters of a Redis Cluster (rather than to one Redis).
    pub(super) fn is_cluster(&self) -> bool {
        self.config.cluster
    }

    /// The node that holds `key` (in a cluster, asks for the slot map if it is not known).
    pub(super) fn node_of(&mut self, key: &[u8]) -> Result<usize, String> {
        if !self.config.cluster {
            return Ok(0);
        }
        if self.owners.is_empty() {
            self.refresh()?;
        }
        let slot = usize::from(slot(key));
        self.owners
            .get(slot)
            .copied()
            .flatten()
            .ok_or_else(|| format!("redis cluster: no master serves slot {slot}"))
    }

    /// The connection to `node`, opened (and prepared) if needed.
    pub(super) fn connection(&mut self, node: usize) -> Result<&mut redis::Connection, String> {
        if !self.connections.contains_key(&node) {
            let opened = self
                .open(node, redis::ProtocolVersion::RESP2)
                .and_then(|mut c| {
                    (self.init)(&mut c).map_err(|e| e.to_string())?;
                    Ok(c)
                });
            match opened {
                Ok(c) => self.connections.insert(node, c),
                // The node may be gone (a failover): ask for the slot map again next time.
                Err(e) => {
                    self.invalidate();
                    return Err(e);
                }
            };
        }
        self.connections
            .get_mut(&node)
            .ok_or_else(|| "redis: connection lost".to_owned())
    }

    /// The connection to where `key` lives.
    pub(super) fn connection_for(&mut self, key: &[u8]) -> Result<&mut redis::Connection, String> {
        let node = self.node_of(key)?;
        self.connection(node)
    }

    /// A new connection to `node` speaking `protocol`, not kept (the subscriber's own), with
    /// the reply timeouts.
    pub(super) fn open(
        &self,
        node: usize,
        protocol: redis::ProtocolVersion,
    ) -> Result<redis::Connection, String> {
        let url = self.nodes.get(node).ok_or("redis: unknown node")?;
        open_url(url, &self.config, protocol)
    }

    /// Forgets every connection and the slot map, after an error: the next use reconnects
    /// and asks the cluster where slots are now.
    pub(super) fn invalidate(&mut self) {
        self.connections.clear();
        self.owners.clear();
    }

    /// Asks the seeds, then the nodes known before, for the slot map; the first answer wins.
    fn refresh(&mut self) -> Result<(), String> {
        let mut candidates: Vec<String> = self.config.urls().map(str::to_owned).collect();
        candidates.extend(self.nodes.iter().cloned());
        candidates.dedup();
        let mut last_error = "redis cluster: no seed node".to_owned();
        for url in candidates {
            let answer =
                open_url(&url, &self.config, redis::ProtocolVersion::RESP2).and_then(|mut c| {
                    redis::cmd("CLUSTER")
                        .arg("SLOTS")
                        .query::<redis::Value>(&mut c)
                        .map_err(|e| e.to_string())
                });
            match answer.and_then(|a| parse_slots(&a, &url).ok_or("bad CLUSTER SLOTS".into())) {
                Ok(ranges) => {
                    self.install(ranges);
                    return Ok(());
                }
                Err(e) => {
                    last_error = format!("redis cluster seed {}: {e}", RedisConfig::redact(&url))
                }
            }
        }
        Err(last_error)
    }

    fn install(&mut self, ranges: Vec<(usize, usize, String)>) {
        self.connections.clear();
        self.nodes.clear();
        self.owners = vec![None; SLOTS];
        for (first, last, url) in ranges {
            let node = match self.nodes.iter().position(|n| *n == url) {
                Some(i) => i,
                None => {
                    self.nodes.push(url);
                    self.nodes.len() - 1
                }
            };
            for owner in &mut self.owners[first..=last.min(SLOTS - 1)] {
                *owner = Some(node);
            }
        }
    }
}

/// A connection to `url` with the bridge's connect and reply timeouts.
fn open_url(
    url: &str,
    config: &RedisConfig,
    protocol: redis::ProtocolVersion,
) -> Result<redis::Connection, String> {
    let e = |e: redis::RedisError| e.to_string();
    let c = client_for(url, config, protocol)?
        .get_connection_with_timeout(CONNECT_TIMEOUT)
        .map_err(e)?;
    c.set_read_timeout(Some(REPLY_TIMEOUT)).map_err(e)?;
    c.set_write_timeout(Some(REPLY_TIMEOUT)).map_err(e)?;
    Ok(c)
}

/// `CLUSTER SLOTS`: `[[first, last, [host, port, ...], replicas...], ...]` → (first, last,
/// master URL). An empty host means the node that answered (`asked`).
fn parse_slots(answer: &redis::Value, asked: &str) -> Option<Vec<(usize, usize, String)>> {
    use redis::Value::{Array, BulkString, Int};
    let Array(entries) = answer else { return None };
    let asked_host = asked
        .split_once("://")
        .map_or(asked, |(_, rest)| rest)
        .split('/')
        .next()
        .and_then(|a| a.rsplit('@').next())
        .and_then(|a| a.rsplit_once(':'))
        .map(|(host, _)| host.trim_matches(['[', ']']))?;
    let mut ranges = Vec::with_capacity(entries.len());
    for entry in entries {
        let Array(fields) = entry else { return None };
        let [Int(first), Int(last), Array(master), ..] = fields.as_slice() else {
            return None;
        };
        let [BulkString(host), Int(port), ..] = master.as_slice() else {
            return None;
        };
        let host = std::str::from_utf8(host).ok()?;
        let host = if host.is_empty() || host == "?" {
            asked_host
        } else {
            host
        };
        let first = usize::try_from(*first).ok()?;
        let last = usize::try_from(*last).ok()?;
        (first <= last && first < SLOTS).then_some(())?;
        ranges.push((first, last, node_url(asked, host, *port)));
    }
    Some(ranges)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_the_specification() {
        // The test vector of the Redis Cluster specification.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(slot(b"123456789"), 12739); // 0x31C3 is below 16384
        assert_eq!(hash_tag(b"{user1000}.following"), b"user1000");
        assert_eq!(hash_tag(b"foo{}{bar}"), b"foo{}{bar}");
        assert_eq!(hash_tag(b"foo{{bar}}zap"), b"{bar");
        assert_eq!(hash_tag(b"foo{bar}{zap}"), b"bar");
        assert_eq!(hash_tag(b"no tag{"), b"no tag{");
        // A channel's stream and meta keys share the slot of its shard channel.
        let topic = "p:channel:x";
        assert_eq!(
            slot(format!("{{{topic}}}:stream").as_bytes()),
            slot(topic.as_bytes())
        );
    }

    #[test]
    fn node_urls_keep_the_seed_scheme_and_credentials() {
        assert_eq!(
            node_url("rediss://:pw@seed:7000/0", "10.0.0.2", 7001),
            "rediss://:pw@10.0.0.2:7001"
        );
        assert_eq!(
            node_url("redis://seed:7000", "::1", 7002),
            "redis://[::1]:7002"
        );
    }

    #[test]
    fn slot_maps_parse() {
        use redis::Value::{Array, BulkString, Int};
        let master = |host: &str, port| Array(vec![BulkString(host.into()), Int(port)]);
        let answer = Array(vec![
            Array(vec![
                Int(0),
                Int(5460),
                master("127.0.0.1", 7000),
                master("x", 1),
            ]),
            Array(vec![Int(5461), Int(16383), master("", 7001)]),
        ]);
        assert_eq!(
            parse_slots(&answer, "redis://127.0.0.9:7005/0"),
            Some(vec![
                (0, 5460, "redis://127.0.0.1:7000".to_owned()),
                (5461, 16383, "redis://127.0.0.9:7001".to_owned()),
            ])
        );
        assert_eq!(parse_slots(&Int(1), "redis://h:1"), None);
        let reversed = Array(vec![Array(vec![Int(9), Int(1), master("h", 1)])]);
        assert_eq!(parse_slots(&reversed, "redis://h:1"), None);
    }
}
