//! `wsloop serve` as one node of a cluster (feature `redis`): the chat's topics and
//! envelopes carried over the Redis bridge, and the bookkeeping that makes every loss between
//! nodes show in a metric.
//!
//! Every node delivers its own clients' messages locally at once and publishes them;
//! every node delivers what other nodes publish to its own clients, and drops its own
//! publications when Redis echoes them back (the envelope carries the node id and a token of
//! the process). Each client therefore receives each message exactly once while Redis is up.
//! Pub/Sub keeps nothing for a node that is disconnected: across a Redis outage or restart
//! delivery between nodes is at-most-once. Each node numbers its publications per topic, so
//! a receiving node counts the ones it never got (`missed`) when the next one arrives.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use super::chat::{Chat, ClusterOp};
use super::metrics::ClusterMetrics;
use super::topics::{decode_envelope, encode_envelope, Origin, Topic};
use crate::cluster::{Bridge, Inbound};
use crate::log::Level;
use crate::server::Ctx;

/// Sequence counters (sent) or positions (received) kept before they are forgotten all at
/// once; a forgotten stream restarts and nothing is counted for it.
const MAX_STREAMS: usize = 65_536;
/// How long a publication from another process under this node's id keeps it reported.
const TWIN_FOR: Duration = Duration::from_secs(10);

/// The bridge with this node's id and the prefix of its topic names.
pub struct ClusterNode {
    bridge: Bridge,
    id: String,
    prefix: String,
    /// The next sequence number per topic name, of this node's stream.
    sent: HashMap<String, u64>,
    /// `token.epoch`: the epoch grows when `sent` is forgotten.
    stream: String,
    epoch: u64,
    /// Topic names this node subscribes to: what it should receive everything of.
    wanted: HashSet<String>,
    /// Per (topic name, sending node): the stream and the last sequence number received.
    received: HashMap<(String, String), (String, u64)>,
    missed: u64,
    malformed: u64,
    /// When a publication under this node's id came from another process.
    twin_seen: Option<Instant>,
}

impl ClusterNode {
    /// Joins the cluster through a started bridge: subscribes the topic every node
    /// publishes chat on. `id` must pass [`validate_node_id`](super::topics::validate_node_id).
    pub fn new(bridge: Bridge, id: String, prefix: String) -> ClusterNode {
        let mut node = ClusterNode {
            stream: format!("{}.0", bridge.token()),
            bridge,
            id,
            prefix,
            sent: HashMap::new(),
            epoch: 0,
            wanted: HashSet::new(),
            received: HashMap::new(),
            missed: 0,
            malformed: 0,
            twin_seen: None,
        };
        node.want(Topic::All.name(&node.prefix));
        node
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
                ClusterOp::Publish(topic, event) => self.publish(topic.name(&self.prefix), &event),
                ClusterOp::Subscribe(channel) => {
                    self.want(Topic::Channel(channel).name(&self.prefix));
                }
                ClusterOp::Unsubscribe(channel) => {
                    let name = Topic::Channel(channel).name(&self.prefix);
                    // Nothing on it is owed to this node any more: a later subscription
                    // starts afresh.
                    self.wanted.remove(&name);
                    self.received.retain(|(topic, _), _| *topic != name);
                    self.bridge.unsubscribe(name);
                }
            }
        }
    }

    fn publish(&mut self, name: String, event: &str) {
        if self.sent.len() >= MAX_STREAMS && !self.sent.contains_key(&name) {
            // A new epoch tells receivers that the numbering restarts.
            self.sent.clear();
            self.epoch += 1;
            self.stream = format!("{}.{}", self.bridge.token(), self.epoch);
        }
        let seq = self.sent.entry(name.clone()).or_insert(0);
        *seq += 1;
        let origin = Origin {
            node: &self.id,
            stream: &self.stream,
            seq: *seq,
        };
        let payload = encode_envelope(origin, event);
        self.bridge.publish(name, payload);
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

    /// Whether a publication is this process's own echo; counts what this node missed of
    /// the sender's stream before it.
    fn own_or_count(&mut self, topic: &str, origin: Origin<'_>) -> bool {
        if origin.node == self.id {
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
        }
        if origin.seq == 0 || !self.wanted.contains(topic) {
            return false;
        }
        if self.received.len() >= MAX_STREAMS {
            self.received.clear();
        }
        let key = (topic.to_owned(), origin.node.to_owned());
        match self.received.get_mut(&key) {
            Some((stream, last)) if stream == origin.stream => {
                // Redis keeps each connection's order: a number further on means the ones
                // between never reached this node. One further back is a publication whose
                // outcome was unknown arriving late: delivered, nothing counted.
                if origin.seq > *last {
                    self.missed += origin.seq - *last - 1;
                    *last = origin.seq;
                }
            }
            Some(entry) => *entry = (origin.stream.to_owned(), origin.seq),
            None => {
                self.received
                    .insert(key, (origin.stream.to_owned(), origin.seq));
            }
        }
        false
    }

    /// Delivers what other nodes published since the last call to this node's clients;
    /// this node's own publications come back from Redis too and are dropped (they were
    /// delivered locally when sent).
    pub fn deliver(&mut self, chat: &mut Chat, ctx: &mut Ctx<'_>) {
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
            };
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
