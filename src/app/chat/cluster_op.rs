//! What a clustered chat asks of the other nodes (carried out by `app::node`).

use crate::app::history::shared::ReadQuery;
use crate::app::topics::Topic;

/// What a clustered chat asks of the other nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClusterOp {
    /// Deliver this event (JSON text) on the topic to the other nodes' clients.
    Publish(Topic, String),
    /// Record this event (JSON text, without position) in the topic's history in Redis and
    /// publish it with its position to every node, this one included.
    Record(Topic, String),
    /// Read the topic's history in Redis; the answer goes to [`Chat::on_read`] with `id`.
    ///
    /// [`Chat::on_read`]: super::Chat::on_read
    Read {
        /// The read's number.
        id: u64,
        /// The topic.
        topic: Topic,
        /// What to read.
        query: ReadQuery,
    },
    /// The first local client joined this channel: start receiving it from other nodes.
    Subscribe(String),
    /// The last local client left this channel: stop receiving it.
    Unsubscribe(String),
    /// A change of this node's presence (carried out by `cluster::Presence`).
    Presence(PresenceChange),
}

/// A change of this node's presence: which users are on which channel here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PresenceChange {
    /// A connection of `user` (named `name`) subscribed to `channel`.
    Joined {
        /// The channel.
        channel: String,
        /// The user id.
        user: String,
        /// The user's name.
        name: String,
    },
    /// A connection of `user` left `channel`.
    Left {
        /// The channel.
        channel: String,
        /// The user id.
        user: String,
    },
}
