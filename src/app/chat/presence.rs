//! Who is in a channel: the `presence` request and `GET /api/presence` answer with the users
//! subscribed on this node and, in a cluster, those the other nodes keep in Redis (a mirror
//! refreshed by `cluster::Presence`); with `--presence-events` a channel announces each
//! subscription (`join`) and its end (`leave`) to its subscribers, on every node.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::{now_ms, Chat, ClusterOp, PresenceChange};
use crate::app::topics::Topic;
use crate::server::{ConnId, Ctx};

/// Per channel, the users subscribed to it, by user id: their names.
pub type PresenceTable = BTreeMap<String, BTreeMap<String, String>>;

impl Chat {
    /// Turns `join` and `leave` announcements on or off (`--presence-events`).
    pub fn announce_presence(mut self, on: bool) -> Self {
        self.presence_events = on;
        self
    }

    /// The other nodes' presence, as last read from Redis.
    pub fn set_remote_presence(&mut self, table: PresenceTable) {
        self.remote_presence = table;
    }

    /// The users in `channel`, on this node and the others, by user id (one entry per user
    /// however many connections it has): their names.
    pub fn presence(&self, channel: &str) -> BTreeMap<String, String> {
        let mut users = self
            .remote_presence
            .get(channel)
            .cloned()
            .unwrap_or_default();
        for id in self.channels.get(channel).into_iter().flatten() {
            if let Some(member) = self.members.get(id) {
                users.insert(member.user.clone(), member.name.clone());
            }
        }
        users
    }

    /// The `presence` reply (also the body of `GET /api/presence`): `users`, sorted by id.
    pub fn presence_json(&self, channel: &str) -> Value {
        let users: Vec<Value> = self
            .presence(channel)
            .into_iter()
            .map(|(user, name)| json!({"user": user, "name": name}))
            .collect();
        json!({"type": "presence", "channel": channel, "users": users})
    }

    /// `id` subscribed to `channel`: the cluster's table learns it, and with
    /// `--presence-events` the channel hears a `join`.
    pub(super) fn joined(&mut self, ctx: &mut Ctx<'_>, channel: &str, id: ConnId) {
        self.presence_changed(ctx, channel, id, "join");
    }

    /// `id` left `channel` (unsubscribed or disconnected); the mirror of [`joined`](Self::joined).
    pub(super) fn left(&mut self, ctx: &mut Ctx<'_>, channel: &str, id: ConnId) {
        self.presence_changed(ctx, channel, id, "leave");
    }

    fn presence_changed(&mut self, ctx: &mut Ctx<'_>, channel: &str, id: ConnId, kind: &str) {
        let Some(member) = self.members.get(&id) else {
            return;
        };
        let (user, name) = (member.user.clone(), member.name.clone());
        let op = if kind == "join" {
            PresenceChange::Joined {
                channel: channel.to_owned(),
                user: user.clone(),
                name: name.clone(),
            }
        } else {
            PresenceChange::Left {
                channel: channel.to_owned(),
                user: user.clone(),
            }
        };
        self.record(ClusterOp::Presence(op));
        if self.presence_events {
            let event = json!({"type": kind, "channel": channel, "user": user, "name": name,
                               "id": self.public_id(id), "ts": now_ms()})
            .to_string();
            let topic = Topic::Channel(channel.to_owned());
            self.deliver(ctx, &topic, &event);
            self.record(ClusterOp::Publish(topic, event));
        }
    }
}
