//! `wsloop serve` as one node of a cluster (feature `redis`): the chat's topics and
//! envelopes carried over the Redis bridge.
//!
//! Every node delivers its own clients' messages locally at once and publishes them;
//! every node delivers what other nodes publish to its own clients, and drops its own
//! publications when Redis echoes them back (the envelope carries the node id). Each client
//! therefore receives each message exactly once while Redis is up. Pub/Sub keeps nothing for
//! a node that is disconnected: across a Redis outage delivery between nodes is at-most-once
//! (messages published during the outage are counted and lost; nothing is delivered twice
//! after it).

use super::chat::{Chat, ClusterOp};
use super::metrics::ClusterMetrics;
use super::topics::{decode_envelope, encode_envelope, Topic};
use crate::cluster::{Bridge, Inbound};
use crate::server::Ctx;

/// The bridge with this node's id and the prefix of its topic names.
pub struct ClusterNode {
    bridge: Bridge,
    id: String,
    prefix: String,
}

impl ClusterNode {
    /// Joins the cluster through a started bridge: subscribes the topic every node
    /// publishes chat on. `id` must pass [`validate_node_id`](super::topics::validate_node_id).
    pub fn new(bridge: Bridge, id: String, prefix: String) -> ClusterNode {
        bridge.subscribe(Topic::All.name(&prefix));
        ClusterNode { bridge, id, prefix }
    }

    /// This node's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Hands what the chat wants the other nodes to know to the bridge.
    pub fn forward(&self, ops: Vec<ClusterOp>) {
        for op in ops {
            match op {
                ClusterOp::Publish(topic, event) => self
                    .bridge
                    .publish(topic.name(&self.prefix), encode_envelope(&self.id, &event)),
                ClusterOp::Subscribe(channel) => self
                    .bridge
                    .subscribe(Topic::Channel(channel).name(&self.prefix)),
                ClusterOp::Unsubscribe(channel) => self
                    .bridge
                    .unsubscribe(Topic::Channel(channel).name(&self.prefix)),
            }
        }
    }

    /// The bridge's counters, for `/metrics` and `/healthz`.
    pub fn metrics(&self) -> ClusterMetrics {
        ClusterMetrics {
            up: self.bridge.is_up(),
            published: self.bridge.published(),
            publish_failures: self.bridge.publish_failures(),
            received: self.bridge.received(),
        }
    }

    /// Delivers what other nodes published since the last call to this node's clients;
    /// this node's own publications come back from Redis too and are dropped (they were
    /// delivered locally when sent).
    pub fn deliver(&self, chat: &mut Chat, ctx: &mut Ctx<'_>) {
        for inbound in self.bridge.drain() {
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
            let Some((node, event)) = decode_envelope(&payload) else {
                log!(
                    crate::log::Level::Warn,
                    "redis: malformed publication on {topic}"
                );
                continue;
            };
            if node == self.id {
                continue;
            }
            if let Some(topic) = Topic::from_name(&topic, &self.prefix) {
                chat.deliver(ctx, &topic, event);
            }
        }
    }
}
