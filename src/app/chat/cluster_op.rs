//! What a clustered chat asks of the other nodes (carried out by `app::node`).

use crate::app::topics::Topic;

/// What a clustered chat asks of the other nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClusterOp {
    /// Deliver this event (JSON text) on the topic to the other nodes' clients.
    Publish(Topic, String),
    /// The first local client joined this channel: start receiving it from other nodes.
    Subscribe(String),
    /// The last local client left this channel: stop receiving it.
    Unsubscribe(String),
    /// A connection of `user` subscribed to `channel` (presence).
    Joined {
        /// The channel.
        channel: String,
        /// The user id.
        user: String,
        /// The user's name.
        name: String,
    },
    /// A connection of `user` left `channel` (presence).
    Left {
        /// The channel.
        channel: String,
        /// The user id.
        user: String,
    },
}
