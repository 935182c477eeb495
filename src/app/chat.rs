//! The JSON chat protocol of `wsloop serve` (see PROTOCOL.md): a registry of connected clients,
//! chat to everyone, channels with subscribe / unsubscribe / publish.
//!
//! Requests are checked field by field so that every mistake gets an `error` reply naming it,
//! and nothing reaches anyone else. Deliveries to many clients go through the loop's
//! broadcast pass, which encodes each frame once.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::history::{History, HistoryLimits, MemoryHistory, Position};
use super::identity::{ChannelRules, Identity};
use super::metrics::ChatCounters;
use super::topics::Topic;
use crate::proto::{Message, MessageKind};
use crate::server::{ConnId, Ctx};
pub use cluster_op::{ClusterOp, PresenceChange};
use ids::incarnation;
pub use presence::PresenceTable;
use request::Request;

/// Limits of the chat protocol.
#[derive(Clone, Debug, PartialEq)]
pub struct ChatLimits {
    /// Longest `content`, in bytes.
    pub max_content: usize,
    /// Longest channel name, in bytes.
    pub max_channel_name: usize,
    /// Most channels one connection may be subscribed to.
    pub max_channels: usize,
    /// Messages per second one connection may send, sustained (twice as many in a burst).
    /// Beyond it a message gets `rate_limited`. Refused messages count as strikes that fade
    /// at the same rate; a client whose strikes pass a burst's worth (it keeps sending well
    /// over the rate, not just a little) is closed with 1008.
    pub max_messages_per_second: f64,
}

impl Default for ChatLimits {
    fn default() -> Self {
        ChatLimits {
            max_content: 16 * 1024,
            max_channel_name: 64,
            max_channels: 32,
            max_messages_per_second: 50.0,
        }
    }
}

/// One connected client.
#[derive(Clone, Debug)]
pub struct Member {
    /// The user id: a credential's subject, or the connection id when anonymous.
    pub user: String,
    /// The name shown as `from`: the credential's name, or the connection id.
    pub name: String,
    /// The channels the credential allows (`None`: all).
    rules: Option<ChannelRules>,
    /// The channels it is subscribed to.
    pub channels: BTreeSet<String>,
    /// Message budget (a token bucket refilled at the rate limit).
    tokens: f64,
    refilled: Instant,
    /// Messages refused for the rate, fading at the rate (see `admit`).
    strikes: f64,
    /// The member is being closed for flooding: its further messages are dropped unread.
    closing: bool,
}

/// A request that could not be carried out: the `error` reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatError {
    /// Stable machine-readable code (PROTOCOL.md).
    pub code: &'static str,
    /// What was wrong, for people.
    pub message: String,
}

impl ChatError {
    /// An error with this code and message.
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        ChatError {
            code,
            message: message.into(),
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The chat state: members and channels.
#[derive(Debug, Default)]
pub struct Chat {
    limits: ChatLimits,
    members: HashMap<ConnId, Member>,
    channels: HashMap<String, HashSet<ConnId>>,
    /// This node's id when clustered: prefixes connection ids (unique across nodes) and
    /// turns on `cluster_ops`.
    node: Option<String>,
    /// A random tag of this start of the server: connection ids carry it, so that they do
    /// not repeat after a restart (serials start again at 1).
    incarnation: String,
    cluster_ops: Vec<ClusterOp>,
    /// Clustered: channels whose Redis subscription is not confirmed yet, with the members
    /// waiting for their `subscribed` (and the `since` they gave).
    pending_acks: HashMap<String, Vec<(ConnId, Option<Position>)>>,
    /// Clustered: this node's Redis subscriber is connected, so a new channel's `subscribed`
    /// waits for Redis to confirm it (while it is down, nothing would).
    subscriber_up: bool,
    counters: ChatCounters,
    /// `--presence-events`: channels announce joins and leaves.
    presence_events: bool,
    /// The other nodes' presence, as last read from Redis.
    remote_presence: PresenceTable,
    /// The recent events of every channel and of the chat (`None`: none kept).
    history: Option<Box<dyn History + Send>>,
    /// Clustered with history: it is kept in Redis Streams instead.
    shared: Option<streams::SharedHistory>,
}

impl Chat {
    /// An empty chat with these limits.
    pub fn new(limits: ChatLimits) -> Self {
        Chat {
            limits,
            incarnation: incarnation(),
            ..Chat::default()
        }
    }

    /// An empty chat that is one node of a cluster.
    pub fn clustered(limits: ChatLimits, node_id: String) -> Self {
        Chat {
            limits,
            node: Some(node_id),
            incarnation: incarnation(),
            ..Chat::default()
        }
    }

    /// Keeps `limits.size` events per channel in memory (none when 0).
    pub fn with_history(mut self, limits: HistoryLimits) -> Self {
        self.history = (limits.size > 0).then(|| {
            Box::new(MemoryHistory::new(limits, incarnation())) as Box<dyn History + Send>
        });
        self
    }

    /// A connected member.
    pub fn member(&self, id: ConnId) -> Option<&Member> {
        self.members.get(&id)
    }

    /// Rate-limit counters, for `/metrics`.
    pub fn counters(&self) -> ChatCounters {
        ChatCounters {
            history: self.history.as_ref().map(|h| h.stats()).unwrap_or_default(),
            shared: self.shared.as_ref().map(|s| s.stats()),
            ..self.counters
        }
    }

    /// What the other nodes must be told since the last call (empty when not clustered).
    pub fn take_cluster_ops(&mut self) -> Vec<ClusterOp> {
        std::mem::take(&mut self.cluster_ops)
    }

    fn record(&mut self, op: ClusterOp) {
        if self.node.is_some() {
            self.cluster_ops.push(op);
        }
    }

    /// The public id of a connection, unique across restarts and nodes: the node id in a
    /// cluster, this start's tag, and the connection's serial (`node1-k3x9qa-7`).
    pub fn public_id(&self, id: ConnId) -> String {
        match &self.node {
            Some(node) => format!("{node}-{}-{id}", self.incarnation),
            None => format!("{}-{id}", self.incarnation),
        }
    }

    /// Redis confirmed this node's subscription to `channel`: acknowledge the members that
    /// asked for it (with history in Redis: read their replay first).
    pub fn confirm_subscription(&mut self, ctx: &mut Ctx<'_>, channel: &str) {
        for (id, since) in self.pending_acks.remove(channel).unwrap_or_default() {
            if !self.recover(id, channel, since, true) {
                send_json(ctx, id, &json!({"type": "subscribed", "channel": channel}));
            }
        }
    }

    /// The Redis subscriber went up or down. While it is down, every waiting subscription is
    /// acknowledged (waiting would leave clients without an answer; cross-node delivery
    /// resumes when it is back) and new ones are acknowledged at once. When it is back, the
    /// topics of history in Redis catch up on what was published meanwhile.
    pub fn set_subscriber_up(&mut self, ctx: &mut Ctx<'_>, up: bool) {
        self.subscriber_up = up;
        if up {
            self.catch_up();
            return;
        }
        for (channel, waiting) in std::mem::take(&mut self.pending_acks) {
            for (id, since) in waiting {
                if !self.recover(id, &channel, since, true) {
                    send_json(ctx, id, &json!({"type": "subscribed", "channel": channel}));
                }
            }
        }
    }

    /// Broadcasts `event` to this node's clients on `topic` (also for events published by
    /// other nodes); returns how many there are. With history in Redis, a channel's
    /// recovering connections get it after their replay.
    pub fn deliver(&mut self, ctx: &mut Ctx<'_>, topic: &Topic, event: &str) -> usize {
        match (topic, &self.shared) {
            (Topic::Channel(_), Some(_)) => self.fan_out(ctx, topic, Held::Plain(event.into())),
            _ => self.broadcast_topic(ctx, topic, event),
        }
    }

    /// Broadcasts `event` to every client of this node on `topic`.
    fn broadcast_topic(&self, ctx: &mut Ctx<'_>, topic: &Topic, event: &str) -> usize {
        match topic {
            Topic::All => {
                broadcast_to(ctx, self.members.keys().copied(), self.members.len(), event)
            }
            Topic::Channel(name) => self.channels.get(name).map_or(0, |set| {
                broadcast_to(ctx, set.iter().copied(), set.len(), event)
            }),
            Topic::Users => self.deliver_to_user(ctx, event),
        }
    }

    /// Registers a new connection (anonymous without an identity: its id is its name) and
    /// sends it `welcome`.
    pub fn join(&mut self, ctx: &mut Ctx<'_>, id: ConnId, identity: Option<Identity>) {
        let public_id = self.public_id(id);
        let identity = identity.unwrap_or_else(|| Identity::named(&public_id, &public_id));
        let welcome = json!({"type": "welcome", "id": public_id, "user": identity.user,
                             "name": identity.name, "ts": now_ms()});
        send_json(ctx, id, &welcome);
        self.members.insert(
            id,
            Member {
                user: identity.user,
                name: identity.name,
                rules: identity.channels,
                channels: BTreeSet::new(),
                tokens: self.burst(),
                refilled: ctx.now(),
                strikes: 0.0,
                closing: false,
            },
        );
    }

    /// Forgets a connection and its subscriptions.
    pub fn leave(&mut self, ctx: &mut Ctx<'_>, id: ConnId) {
        for waiting in self.pending_acks.values_mut() {
            waiting.retain(|(w, _)| *w != id);
        }
        let channels = self.members.get(&id).map(|m| m.channels.clone());
        for channel in channels.unwrap_or_default() {
            self.remove_subscriber(ctx, &channel, id);
        }
        self.members.remove(&id);
    }

    /// Takes `id` (still a member) out of `channel`'s subscribers.
    fn remove_subscriber(&mut self, ctx: &mut Ctx<'_>, channel: &str, id: ConnId) {
        self.drop_recovery(id, channel);
        if let Some(subscribers) = self.channels.get_mut(channel) {
            subscribers.remove(&id);
            if subscribers.is_empty() {
                self.channels.remove(channel);
                self.release_history(channel);
                self.forget_shared(channel);
                self.record(ClusterOp::Unsubscribe(channel.to_owned()));
            }
        }
        self.left(ctx, channel, id);
    }

    /// The server could not run for `paused`: what members sent meanwhile arrives at once.
    /// Each bucket gets the tokens of the pause on top of what it holds (even past the
    /// burst), so a member that kept to the rate is not refused for our pause.
    pub fn pause(&mut self, paused: Duration) {
        let credit = paused.as_secs_f64() * self.limits.max_messages_per_second;
        for member in self.members.values_mut() {
            member.tokens += credit;
        }
    }

    fn burst(&self) -> f64 {
        2.0 * self.limits.max_messages_per_second
    }

    /// Takes a token for one message. `Err(Some(close))` refuses it: `close` when the member
    /// has kept flooding past a whole burst of refusals and must be closed; `Err(None)` drops
    /// it silently (the member is already being closed).
    fn admit(&mut self, id: ConnId, now: Instant) -> Result<(), Option<bool>> {
        let (rate, burst) = (self.limits.max_messages_per_second, self.burst());
        let Some(member) = self.members.get_mut(&id) else {
            return Ok(());
        };
        if member.closing {
            return Err(None);
        }
        let elapsed = now.saturating_duration_since(member.refilled).as_secs_f64();
        // Refill up to the burst; a credit above it (see `pause`) is spent, not cut.
        member.tokens = (member.tokens + elapsed * rate).min(burst.max(member.tokens));
        // Strikes fade at the rate instead of resetting with each refilled token: a client
        // that floods gets a token now and then, and must not be forgiven each time.
        member.strikes = (member.strikes - elapsed * rate).max(0.0);
        member.refilled = now;
        if member.tokens >= 1.0 {
            member.tokens -= 1.0;
            return Ok(());
        }
        member.strikes += 1.0;
        let close = member.strikes > burst;
        member.closing = close;
        Err(Some(close))
    }

    /// A member sent a new token (`auth` while open) and it verified: the same user goes on
    /// under the token's name and channels, and is told so. A token of another user is
    /// refused with `forbidden`.
    pub fn reauthenticate(&mut self, ctx: &mut Ctx<'_>, id: ConnId, identity: Identity) {
        let Some(member) = self.members.get_mut(&id) else {
            return;
        };
        if member.user != identity.user {
            let error = ChatError::new(
                "forbidden",
                "a new token must be for the same user (\"sub\")",
            );
            return send_error(ctx, id, &error);
        }
        member.name = identity.name;
        member.rules = identity.channels;
        let reply = json!({"type": "authenticated", "user": member.user, "name": member.name,
                           "expires": identity.expires_at});
        send_json(ctx, id, &reply);
    }

    /// Handles one message from a member. Returns the token of an `auth` message, which the
    /// caller checks (the chat knows no keys) and answers with [`reauthenticate`] or an
    /// `error`.
    ///
    /// [`reauthenticate`]: Self::reauthenticate
    pub fn handle(
        &mut self,
        ctx: &mut Ctx<'_>,
        id: ConnId,
        message: Message<'_>,
    ) -> Option<String> {
        match self.admit(id, ctx.now()) {
            Ok(()) => {}
            Err(None) => return None,
            Err(Some(false)) => {
                self.counters.rate_limited += 1;
                let reply = json!({"type": "error", "code": "rate_limited",
                    "message": format!("more than {} messages per second", self.limits.max_messages_per_second)});
                send_json(ctx, id, &reply);
                return None;
            }
            Err(Some(true)) => {
                self.counters.flood_disconnects += 1;
                log!(crate::log::Level::Warn, "{id}: message flood, closing");
                ctx.fail_for(id, crate::proto::Policy::MessageFlood);
                return None;
            }
        }
        let result = match message.kind {
            MessageKind::Binary => Err(ChatError::new(
                "binary_not_supported",
                "binary messages are not part of the protocol; send JSON text",
            )),
            MessageKind::Text => match self.parse(message.data) {
                Ok(Request::Auth { token }) => return Some(token),
                Ok(request) => self.execute(ctx, id, request),
                Err(error) => Err(error),
            },
        };
        if let Err(error) = result {
            send_error(ctx, id, &error);
        }
        None
    }

    fn execute(
        &mut self,
        ctx: &mut Ctx<'_>,
        id: ConnId,
        request: Request,
    ) -> Result<(), ChatError> {
        let public_id = self.public_id(id);
        let Some(member) = self.members.get_mut(&id) else {
            return Ok(());
        };
        match request {
            Request::Ping { ts } => {
                send_json(
                    ctx,
                    id,
                    &json!({"type": "pong", "ts": now_ms(), "echo": ts}),
                );
            }
            Request::Chat { content } => {
                let out = json!({"type": "chat", "from": member.name, "id": public_id,
                                 "content": content, "ts": now_ms()});
                self.publish_event(ctx, Topic::All, out)?;
            }
            Request::Subscribe { channel, since } => {
                permitted(member, &channel)?;
                let new = !member.channels.contains(&channel);
                if new {
                    if member.channels.len() >= self.limits.max_channels {
                        return Err(ChatError::new(
                            "too_many_channels",
                            format!(
                                "at most {} channels per connection",
                                self.limits.max_channels
                            ),
                        ));
                    }
                    member.channels.insert(channel.clone());
                    let subscribers = self.channels.entry(channel.clone()).or_default();
                    subscribers.insert(id);
                    if subscribers.len() == 1 {
                        self.record(ClusterOp::Subscribe(channel.clone()));
                        if self.node.is_some() && self.subscriber_up {
                            // The channel is new on this node: `subscribed` waits until Redis
                            // confirms the node's subscription, so that a publication made
                            // after the client saw it reaches the client.
                            self.pending_acks.insert(channel.clone(), Vec::new());
                        }
                    }
                }
                if let Some(waiting) = self.pending_acks.get_mut(&channel) {
                    waiting.push((id, since));
                    self.hold(id, &channel);
                } else if !self.recover(id, &channel, since.clone(), true) {
                    let reply = self.replay(ctx, id, &channel, since.as_ref());
                    send_json(ctx, id, &reply);
                }
                if new {
                    self.joined(ctx, &channel, id);
                }
            }
            Request::Unsubscribe { channel } => {
                // Replies keep the order of requests: a pending `subscribed` goes first.
                let mut owed = false;
                if let Some(waiting) = self.pending_acks.get_mut(&channel) {
                    if let Some(i) = waiting.iter().position(|(w, _)| *w == id) {
                        waiting.swap_remove(i);
                        owed = true;
                    }
                }
                if !member.channels.remove(&channel) {
                    return Err(ChatError::new(
                        "not_subscribed",
                        format!("not subscribed to {channel:?}"),
                    ));
                }
                if self.drop_recovery(id, &channel) || owed {
                    send_json(ctx, id, &json!({"type": "subscribed", "channel": channel}));
                }
                self.remove_subscriber(ctx, &channel, id);
                send_json(
                    ctx,
                    id,
                    &json!({"type": "unsubscribed", "channel": channel}),
                );
            }
            Request::Publish { channel, content } => {
                permitted(member, &channel)?;
                let out = json!({"type": "message", "channel": channel, "from": member.name,
                                 "id": public_id, "content": content, "ts": now_ms()});
                let topic = Topic::Channel(channel.clone());
                let receivers = self.publish_event(ctx, topic, out)?;
                send_json(
                    ctx,
                    id,
                    &json!({"type": "published", "channel": channel, "receivers": receivers}),
                );
            }
            Request::Presence { channel } => {
                permitted(member, &channel)?;
                send_json(ctx, id, &self.presence_json(&channel));
            }
            Request::History {
                channel,
                limit,
                since,
            } => {
                if let Some(name) = &channel {
                    permitted(member, name)?;
                }
                let (channel, since) = (channel.as_deref(), since.as_ref());
                if !self.read_history(id, channel, limit, since) {
                    self.answer_history(ctx, id, channel, limit, since)?;
                }
            }
            // Taken apart in `handle`.
            Request::Auth { .. } => {}
        }
        Ok(())
    }
}

/// A member may use a channel its credential's `channels` allows (any without such a list).
fn permitted(member: &Member, channel: &str) -> Result<(), ChatError> {
    match &member.rules {
        Some(rules) if !rules.allows(channel) => Err(ChatError::new(
            "forbidden",
            format!("your token does not allow channel {channel:?}"),
        )),
        _ => Ok(()),
    }
}

/// Sends an `error` reply.
pub fn send_error(ctx: &mut Ctx<'_>, to: ConnId, error: &ChatError) {
    let reply = json!({"type": "error", "code": error.code, "message": error.message});
    send_json(ctx, to, &reply);
}

fn send_json(ctx: &mut Ctx<'_>, to: ConnId, value: &Value) {
    ctx.send_text(to, &value.to_string());
}

/// Broadcasts to `count` targets, if there are any (an empty broadcast would still be encoded).
fn broadcast_to(
    ctx: &mut Ctx<'_>,
    targets: impl Iterator<Item = ConnId>,
    count: usize,
    text: &str,
) -> usize {
    if count > 0 {
        ctx.broadcast(targets, MessageKind::Text, text.as_bytes());
    }
    count
}

mod backend;
mod cluster_op;
mod ids;
mod presence;
mod recovery;
mod request;
mod streams;

use streams::Held;
#[cfg(test)]
mod tests;
