//! What the application's backend does through the server API: publish and broadcast as the
//! server, send a `direct` message to every connection of a user, disconnect a user. Each is
//! carried out on this node and recorded for the other nodes (a user's connections may be on
//! any of them).

use serde_json::{json, Value};

use super::{now_ms, Chat, ChatError, ClusterOp};
use crate::app::topics::Topic;
use crate::server::{ConnId, Ctx};

/// The close code of a connection the backend disconnected (PROTOCOL.md): 4003, after HTTP's
/// 403, from the range RFC 6455 §7.4.2 leaves to applications.
pub const DISCONNECT_CLOSE: u16 = 4003;

impl Chat {
    /// A `message` on `channel` from `from` (id `server`) to its subscribers; returns how many
    /// on this node received it.
    pub fn publish_from_backend(
        &mut self,
        ctx: &mut Ctx<'_>,
        channel: &str,
        content: &str,
        from: &str,
    ) -> Result<usize, ChatError> {
        self.check_channel(channel)?;
        self.check_content(content)?;
        let topic = Topic::Channel(channel.to_owned());
        let event = json!({"type": "message", "channel": channel, "from": from, "id": "server",
                           "content": content, "ts": now_ms()});
        self.publish_event(ctx, topic, event)
    }

    /// A `chat` from `from` (id `server`) to everyone; returns how many on this node received
    /// it.
    pub fn broadcast_from_backend(
        &mut self,
        ctx: &mut Ctx<'_>,
        content: &str,
        from: &str,
    ) -> Result<usize, ChatError> {
        self.check_content(content)?;
        let event = json!({"type": "chat", "from": from, "id": "server", "content": content,
                           "ts": now_ms()});
        self.publish_event(ctx, Topic::All, event)
    }

    /// A `direct` message to every connection of `user`; returns how many on this node
    /// received it.
    pub fn send_to_user(
        &mut self,
        ctx: &mut Ctx<'_>,
        user: &str,
        content: &str,
        from: &str,
    ) -> Result<usize, ChatError> {
        self.check_content(content)?;
        let event = json!({"type": "direct", "to": user, "from": from, "content": content,
                           "ts": now_ms()})
        .to_string();
        Ok(self.deliver_everywhere(ctx, Topic::Users, event))
    }

    /// Closes every connection of `user` with 4003; returns how many on this node.
    pub fn disconnect_user(&mut self, ctx: &mut Ctx<'_>, user: &str) -> usize {
        let event = json!({"type": "disconnect", "to": user}).to_string();
        self.deliver_everywhere(ctx, Topic::Users, event)
    }

    fn deliver_everywhere(&mut self, ctx: &mut Ctx<'_>, topic: Topic, event: String) -> usize {
        let delivered = self.deliver(ctx, &topic, &event);
        self.record(ClusterOp::Publish(topic, event));
        delivered
    }

    /// This node's channels and how many of its connections are in each, by name.
    pub fn channel_counts(&self) -> Vec<(&str, usize)> {
        let mut counts: Vec<_> = self
            .channels
            .iter()
            .map(|(name, members)| (name.as_str(), members.len()))
            .collect();
        counts.sort();
        counts
    }

    /// This node's connections of a user.
    fn connections_of(&self, user: &str) -> Vec<ConnId> {
        let mut ids: Vec<ConnId> = self
            .members
            .iter()
            .filter(|(_, m)| m.user == user)
            .map(|(id, _)| *id)
            .collect();
        ids.sort();
        ids
    }

    /// Carries out an event of the users' topic on this node: a `direct` message goes to the
    /// user's connections as it is, a `disconnect` closes them. Returns how many.
    pub(super) fn deliver_to_user(&self, ctx: &mut Ctx<'_>, event: &str) -> usize {
        let Ok(value) = serde_json::from_str::<Value>(event) else {
            return 0;
        };
        let Some(user) = value["to"].as_str() else {
            return 0;
        };
        let ids = self.connections_of(user);
        match value["type"].as_str() {
            Some("direct") => {
                let count = ids.len();
                if count > 0 {
                    ctx.broadcast(ids, crate::proto::MessageKind::Text, event.as_bytes());
                }
                count
            }
            Some("disconnect") => {
                for id in &ids {
                    ctx.close(*id, DISCONNECT_CLOSE, "disconnected by the server");
                }
                ids.len()
            }
            _ => 0,
        }
    }
}
