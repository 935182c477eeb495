//! `wsloop serve` as one node of a cluster (feature `redis`): the chat's topics and
//! envelopes carried over the Redis bridge, and the bookkeeping that makes every loss between
//! nodes show in a metric.
//!
//! Without history in Redis, every node delivers its own clients' messages locally at once
//! and publishes them; every node delivers what other nodes publish to its own clients, and
//! drops its own publications when Redis echoes them back (the envelope carries the node id
//! and a token of the process). Each client therefore receives each message exactly once
//! while Redis is up. Pub/Sub keeps nothing for a node that is disconnected: across a Redis
//! outage or restart delivery between nodes is at-most-once. Each node numbers its
//! publications per topic, so a receiving node counts the ones it never got (`missed`) when
//! the next one arrives.
//!
//! With history in Redis (`--history-size` above 0), chats and channel messages are recorded
//! in the topic's stream (`cluster::streams`) and every node, the sender's included,
//! delivers them when they come back with their offset; the chat orders them and catches up
//! from the stream after a gap (`app::history::shared`).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use super::chat::{Chat, ClusterOp};
use super::history::shared::{ReadAnswer, Recorded};
use super::history::Position;
use super::metrics::ClusterMetrics;
use super::topics::{decode_envelope, encode_envelope, Origin, Topic};
use crate::cluster::streams::{split_recorded, Entries};
use crate::cluster::{Bridge, Inbound, Presence};
use crate::log::Level;
use crate::server::Ctx;

/// Sequence counters (sent) or positions (received) kept before they are forgotten all at
/// once; a forgotten stream restarts and nothing is counted for it.
const MAX_STREAMS: usize = 65_536;
/// How long a publication from another process under this node's id keeps it reported.
const TWIN_FOR: Duration = Duration::from_secs(10);

/// Where each sender's numbering stands, per (topic name, sending node): its stream and the
/// last sequence number received.
#[derive(Debug, Default)]
struct Positions(HashMap<(String, String), (String, u64)>);

impl Positions {
    /// Takes note of a publication; returns how many of the sender's publications on the
    /// topic before it never arrived.
    fn advance(&mut self, topic: &str, origin: Origin<'_>) -> u64 {
        if self.0.len() >= MAX_STREAMS {
            self.0.clear();
        }
        let key = (topic.to_owned(), origin.node.to_owned());
        match self.0.get_mut(&key) {
            Some((stream, last)) if stream == origin.stream => {
                // Redis keeps each connection's order: a number further on means the ones
                // between never reached this node. One further back is a publication whose
                // outcome was unknown arriving late: delivered, nothing counted.
                if origin.seq <= *last {
                    return 0;
                }
                let missed = origin.seq - *last - 1;
                *last = origin.seq;
                missed
            }
            // A new sender, or a sender's new stream (restarted, or its counters forgotten).
            _ => {
                self.0.insert(key, (origin.stream.to_owned(), origin.seq));
                0
            }
        }
    }

    /// Forgets a topic this node no longer receives: a later subscription starts afresh.
    fn forget(&mut self, topic: &str) {
        self.0.retain(|(t, _), _| t != topic);
    }
}

/// The bridge with this node's id and the prefix of its topic names.
pub struct ClusterNode {
    bridge: Bridge,
    presence: Presence,
    id: String,
    prefix: String,
    /// The next sequence number per topic name, of this node's stream.
    sent: HashMap<String, u64>,
    /// `token.epoch`: the epoch grows when `sent` is forgotten.
    stream: String,
    epoch: u64,
    /// Topic names this node subscribes to: what it should receive everything of.
    wanted: HashSet<String>,
    received: Positions,
    missed: u64,
    malformed: u64,
    /// When a publication under this node's id came from another process.
    twin_seen: Option<Instant>,
}

impl ClusterNode {
    /// Joins the cluster through a started bridge: subscribes the topics every node
    /// publishes chat and the server API's user events on. `id` must pass [`validate_node_id`](super::topics::validate_node_id).
    pub fn new(bridge: Bridge, presence: Presence, id: String, prefix: String) -> ClusterNode {
        let mut node = ClusterNode {
            stream: format!("{}.0", bridge.token()),
            bridge,
            presence,
            id,
            prefix,
            sent: HashMap::new(),
            epoch: 0,
            wanted: HashSet::new(),
            received: Positions::default(),
            missed: 0,
            malformed: 0,
            twin_seen: None,
        };
        for topic in ClusterNode::standing_topics(&node.prefix) {
            node.want(topic);
        }
        node
    }

    /// The topics a node always listens to (the chat, and the users' direct messages):
    /// give them to [`Bridge::start`] so that the node is up only once they are subscribed.
    pub fn standing_topics(prefix: &str) -> Vec<String> {
        vec![Topic::All.name(prefix), Topic::Users.name(prefix)]
    }

    /// This node's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The Redis key that only one process may hold for this node id.
    pub fn claim_key(id: &str, prefix: &str) -> String {
        format!("{prefix}node:{id}")
    }

    fn want(&mut self, name: String) {
        self.wanted.insert(name.clone());
        self.bridge.subscribe(name);
    }

    /// Hands what the chat wants the other nodes to know to the bridge.
    pub fn forward(&mut self, ops: Vec<ClusterOp>) {
        for op in ops {
            match op {
                ClusterOp::Publish(topic, event) => {
                    let name = topic.name(&self.prefix);
                    let payload = self.envelope(&name, &event);
                    self.bridge.publish(name, payload);
                }
                ClusterOp::Record(topic, event) => {
                    let name = topic.name(&self.prefix);
                    let payload = self.envelope(&name, &event);
                    self.bridge.append(name, payload);
                }
                ClusterOp::Read { id, topic, query } => {
                    self.bridge.read(id, topic.name(&self.prefix), query);
                }
                ClusterOp::Subscribe(channel) => {
                    self.want(Topic::Channel(channel).name(&self.prefix));
                }
                ClusterOp::Unsubscribe(channel) => {
                    let name = Topic::Channel(channel).name(&self.prefix);
                    // Nothing on it is owed to this node any more: a later subscription
                    // starts afresh.
                    self.wanted.remove(&name);
                    self.received.forget(&name);
                    self.bridge.unsubscribe(name);
                }
                ClusterOp::Presence(change) => self.presence.change(change),
            }
        }
    }

    /// The publication of `event` on topic `name`: this node's next number on it.
    fn envelope(&mut self, name: &str, event: &str) -> Vec<u8> {
        if self.sent.len() >= MAX_STREAMS && !self.sent.contains_key(name) {
            // A new epoch tells receivers that the numbering restarts.
            self.sent.clear();
            self.epoch += 1;
            self.stream = format!("{}.{}", self.bridge.token(), self.epoch);
        }
        let seq = self.sent.entry(name.to_owned()).or_insert(0);
        *seq += 1;
        let origin = Origin {
            node: &self.id,
            stream: &self.stream,
            seq: *seq,
        };
        encode_envelope(origin, event)
    }

    /// Graceful shutdown: hands every queued publication to Redis, waiting at most
    /// `timeout` (the publisher has been at it since the signal); logs what could not be.
    pub fn close(&mut self, timeout: Duration) {
        let left = self.bridge.close(timeout);
        if left > 0 {
            log!(
                Level::Warn,
                "drain timeout: {left} publications not handed to Redis"
            );
        }
    }

    /// Another process runs under this node's id (it renewed our claim in Redis, or
    /// published under our id) within the last 10 seconds.
    fn twin(&self) -> bool {
        self.bridge.claim_contested() || self.twin_seen.is_some_and(|at| at.elapsed() < TWIN_FOR)
    }

    /// The bridge's counters, for `/metrics` and `/healthz`.
    pub fn metrics(&self) -> ClusterMetrics {
        ClusterMetrics {
            up: self.bridge.is_up(),
            published: self.bridge.published(),
            publish_failures: self.bridge.dropped(),
            publish_unknown: self.bridge.unknown(),
            received: self.bridge.received(),
            missed: self.missed,
            discarded: self.bridge.oversized() + self.malformed,
            duplicate_node_id: self.twin(),
        }
    }

    /// Whether a publication is this process's own echo (one of another process under this
    /// node's id is reported).
    fn own(&mut self, origin: Origin<'_>) -> bool {
        if origin.node != self.id {
            return false;
        }
        if origin.stream.split('.').next() == Some(self.bridge.token()) {
            return true;
        }
        if !self.twin() {
            log!(
                Level::Error,
                "redis: another process publishes as node {}: node ids must differ",
                self.id
            );
        }
        self.twin_seen = Some(Instant::now());
        false
    }

    /// Whether a publication is this process's own echo; counts what this node missed of
    /// the sender's stream before it.
    fn own_or_count(&mut self, topic: &str, origin: Origin<'_>) -> bool {
        if self.own(origin) {
            return true;
        }
        if origin.seq == 0 || !self.wanted.contains(topic) {
            return false;
        }
        self.missed += self.received.advance(topic, origin);
        false
    }

    /// Delivers what other nodes published since the last call to this node's clients;
    /// this node's own publications come back from Redis too and are dropped (they were
    /// delivered locally when sent).
    pub fn deliver(&mut self, chat: &mut Chat, ctx: &mut Ctx<'_>) {
        if let Some(table) = self.presence.take_remote() {
            chat.set_remote_presence(table);
        }
        let inbound: Vec<Inbound> = self.bridge.drain().collect();
        for inbound in inbound {
            let (topic, payload) = match inbound {
                Inbound::Message { topic, payload } => (topic, payload),
                Inbound::Subscribed(topic) => {
                    if let Some(Topic::Channel(channel)) = Topic::from_name(&topic, &self.prefix) {
                        chat.confirm_subscription(ctx, &channel);
                    }
                    continue;
                }
                Inbound::Status(up) => {
                    chat.set_subscriber_up(ctx, up);
                    continue;
                }
                Inbound::Read { id, result } => {
                    chat.on_read(ctx, id, result.map(read_answer));
                    continue;
                }
            };
            if let Some((offset, epoch, payload)) = split_recorded(&payload) {
                let Some((origin, event)) = decode_envelope(payload) else {
                    self.malformed += 1;
                    log!(
                        Level::Warn,
                        "redis: malformed recorded publication on {topic}"
                    );
                    continue;
                };
                // Recorded events are delivered by every node, the sender's included, and
                // what never came is read from the stream (`wsloop_history_lost_total` counts
                // what cannot be): only the twin check here.
                self.own(origin);
                if let Some(topic) = Topic::from_name(&topic, &self.prefix) {
                    let event = Recorded {
                        offset,
                        epoch: epoch.to_owned(),
                        event: event.to_owned(),
                    };
                    chat.on_recorded(ctx, &topic, event);
                }
                continue;
            }
            let Some((origin, event)) = decode_envelope(&payload) else {
                self.malformed += 1;
                log!(Level::Warn, "redis: malformed publication on {topic}");
                continue;
            };
            if self.own_or_count(&topic, origin) {
                continue;
            }
            if let Some(topic) = Topic::from_name(&topic, &self.prefix) {
                chat.deliver(ctx, &topic, event);
            }
        }
    }
}

/// A stream read's entries as the chat takes them: each publication's event (those that are
/// not a node's envelope are left out).
fn read_answer(entries: Entries) -> ReadAnswer {
    let events = entries
        .entries
        .iter()
        .filter_map(|(offset, payload)| {
            let (_, event) = decode_envelope(payload)?;
            Some((*offset, event.to_owned()))
        })
        .collect();
    ReadAnswer {
        tip: Position {
            offset: entries.tip,
            epoch: entries.epoch,
        },
        events,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(node: &'static str, stream: &'static str, seq: u64) -> Origin<'static> {
        Origin { node, stream, seq }
    }

    #[test]
    fn gaps_in_a_senders_numbering_are_counted_once() {
        let mut p = Positions::default();
        assert_eq!(p.advance("t", from("a", "s", 7)), 0, "first sight");
        assert_eq!(p.advance("t", from("a", "s", 8)), 0);
        assert_eq!(p.advance("t", from("a", "s", 11)), 2, "9 and 10 never came");
        assert_eq!(
            p.advance("t", from("a", "s", 10)),
            0,
            "late, not counted again"
        );
        assert_eq!(p.advance("t", from("a", "s", 12)), 0);
        assert_eq!(p.advance("t", from("b", "s", 5)), 0, "another sender");
        assert_eq!(p.advance("u", from("a", "s", 40)), 0, "another topic");
        assert_eq!(p.advance("t", from("a", "r", 1)), 0, "a restarted sender");
        assert_eq!(p.advance("t", from("a", "r", 3)), 1);
        p.forget("t");
        assert_eq!(
            p.advance("t", from("a", "r", 9)),
            0,
            "forgotten: starts afresh"
        );
        assert_eq!(p.advance("u", from("a", "s", 42)), 1, "other topics kept");
    }
}
