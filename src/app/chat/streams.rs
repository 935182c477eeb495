//! The chat's side of history kept in Redis (`--redis` with `--history-size` above 0): events
//! are recorded through the cluster and delivered, on every node alike, when they come back
//! with their offset; a `subscribe` (with or without `since`) and a `history` request read
//! the stream through the cluster, and a recovering connection's live events wait until its
//! replay is sent (PROTOCOL.md, Recovery).

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use super::{send_json, Chat, ChatError, ClusterOp};
use crate::app::history::shared::{ReadAnswer, ReadQuery, Recorded, Sequencer, SharedStats};
use crate::app::history::Position;
use crate::app::topics::Topic;
use crate::server::{ConnId, Ctx};

/// Live events held for one recovering connection; past it they are dropped and read from
/// the stream once the replay is out.
const RECOVERY_BUFFER: usize = 1_024;

/// What a read was asked for.
#[derive(Debug)]
enum ReadFor {
    /// A connection's `subscribe`: replay after `since`, then (`reply`) its `subscribed`;
    /// without `reply`, the continuation of a recovery whose buffer overflowed.
    Subscribe {
        id: ConnId,
        channel: String,
        since: Option<Position>,
        reply: bool,
    },
    /// A `history` request (with `since`: what came after it).
    History {
        id: ConnId,
        channel: Option<String>,
        since: Option<Position>,
    },
    /// This node fills a gap in a topic.
    CatchUp(Topic),
}

/// An event held for a recovering connection.
#[derive(Clone, Debug)]
pub(super) enum Held {
    /// Recorded in the history: sent only if the replay did not have it.
    Recorded(Recorded),
    /// Not recorded (`join`, `leave`): sent after the replay.
    Plain(String),
}

/// A connection's live events on a channel while its replay is being read.
#[derive(Debug, Default)]
struct Recovery {
    buffer: Vec<Held>,
    overflowed: bool,
    /// Its `subscribed` was sent (a continuation).
    answered: bool,
}

/// History in Redis: the reads out, the recovering connections, the topics' order.
#[derive(Debug)]
pub(super) struct SharedHistory {
    size: usize,
    sequencer: Sequencer,
    next_read: u64,
    reads: HashMap<u64, ReadFor>,
    recovering: HashMap<(ConnId, String), Recovery>,
    /// Connections whose replay reached further than this node's deliveries: live events up
    /// to here are theirs already.
    floors: HashMap<(ConnId, String), Position>,
}

impl SharedHistory {
    pub(super) fn new(size: usize) -> Self {
        SharedHistory {
            size,
            sequencer: Sequencer::new(size),
            next_read: 0,
            reads: HashMap::new(),
            recovering: HashMap::new(),
            floors: HashMap::new(),
        }
    }

    pub(super) fn stats(&self) -> SharedStats {
        self.sequencer.stats
    }
}

/// `event` (a JSON object's text) with its `offset` and `epoch`; `None` if it is not one.
fn stamped(event: &Recorded) -> Option<String> {
    let mut fields: Map<String, Value> = serde_json::from_str(&event.event).ok()?;
    fields.insert("offset".into(), event.offset.into());
    fields.insert("epoch".into(), event.epoch.clone().into());
    Some(Value::Object(fields).to_string())
}

fn redis_unavailable() -> ChatError {
    ChatError::new(
        "redis_unavailable",
        "history is kept in Redis, which this server cannot reach now; nothing was published",
    )
}

impl Chat {
    /// Keeps `size` events per channel in Redis Streams (with the cluster).
    pub fn with_shared_history(mut self, size: usize) -> Self {
        self.history = None;
        self.shared = (size > 0).then(|| SharedHistory::new(size));
        self
    }

    /// Publishes `event` on `topic`: with history in Redis it is recorded there and delivered
    /// when it comes back (refused while Redis is down); otherwise stamped, delivered here at
    /// once and published. Returns how many of this node's clients are on the topic.
    pub(super) fn publish_event(
        &mut self,
        ctx: &mut Ctx<'_>,
        topic: Topic,
        event: Value,
    ) -> Result<usize, ChatError> {
        if self.shared.is_none() {
            let event = self.stamp(&topic, event, ctx.now());
            let delivered = self.deliver(ctx, &topic, &event);
            self.record(ClusterOp::Publish(topic, event));
            return Ok(delivered);
        }
        if !self.subscriber_up {
            return Err(redis_unavailable());
        }
        let receivers = match &topic {
            Topic::Channel(name) => self.channels.get(name).map_or(0, |s| s.len()),
            _ => self.members.len(),
        };
        self.record(ClusterOp::Record(topic, event.to_string()));
        Ok(receivers)
    }

    fn ask(&mut self, topic: Topic, query: ReadQuery, what: ReadFor) {
        let Some(shared) = &mut self.shared else {
            return;
        };
        shared.next_read += 1;
        shared.sequencer.stats.reads += 1;
        let id = shared.next_read;
        shared.reads.insert(id, what);
        self.record(ClusterOp::Read { id, topic, query });
    }

    /// Starts `id`'s recovery on `channel` (its Redis subscription is confirmed): reads
    /// what came after `since` (where the channel stands, without it) while its live events
    /// wait. Returns `false` without history in Redis.
    pub(super) fn recover(
        &mut self,
        id: ConnId,
        channel: &str,
        since: Option<Position>,
        reply: bool,
    ) -> bool {
        let Some(shared) = &mut self.shared else {
            return false;
        };
        let key = (id, channel.to_owned());
        shared.floors.remove(&key);
        // What waited since the `subscribe` (see `hold`) keeps waiting.
        shared.recovering.entry(key).or_default().answered = !reply;
        let query = ReadQuery::After {
            from: since.as_ref().map_or(0, |s| s.offset.saturating_add(1)),
            epoch: since.as_ref().map_or(String::new(), |s| s.epoch.clone()),
            count: if since.is_some() { shared.size } else { 0 },
            whole_on_new_epoch: false,
        };
        let topic = Topic::Channel(channel.to_owned());
        let what = ReadFor::Subscribe {
            id,
            channel: channel.to_owned(),
            since,
            reply,
        };
        self.ask(topic, query, what);
        true
    }

    /// `id` subscribed to `channel` and waits for the node's Redis subscription before its
    /// recovery starts: its live events wait from now on.
    pub(super) fn hold(&mut self, id: ConnId, channel: &str) {
        if let Some(shared) = &mut self.shared {
            let key = (id, channel.to_owned());
            shared.floors.remove(&key);
            shared.recovering.entry(key).or_default();
        }
    }

    /// Asks for a `history` request's events: the last `limit`, or with `since` those after
    /// it (at most the last `limit`); `false` without history in Redis.
    pub(super) fn read_history(
        &mut self,
        id: ConnId,
        channel: Option<&str>,
        limit: usize,
        since: Option<&Position>,
    ) -> bool {
        let Some(shared) = &self.shared else {
            return false;
        };
        let count = limit.min(shared.size);
        let topic = channel.map_or(Topic::All, |c| Topic::Channel(c.to_owned()));
        let query = match since {
            Some(since) => ReadQuery::After {
                from: since.offset.saturating_add(1),
                epoch: since.epoch.clone(),
                count,
                whole_on_new_epoch: false,
            },
            None => ReadQuery::Last { count },
        };
        let what = ReadFor::History {
            id,
            channel: channel.map(str::to_owned),
            since: since.cloned(),
        };
        self.ask(topic, query, what);
        true
    }

    /// An event came back from Redis with its position: delivered in offset order, once.
    pub fn on_recorded(&mut self, ctx: &mut Ctx<'_>, topic: &Topic, event: Recorded) {
        let Some(shared) = &mut self.shared else {
            return;
        };
        let flow = shared.sequencer.live(topic, event);
        self.follow(ctx, topic, flow);
    }

    fn follow(
        &mut self,
        ctx: &mut Ctx<'_>,
        topic: &Topic,
        flow: crate::app::history::shared::Flow,
    ) {
        for event in flow.deliver {
            self.fan_out(ctx, topic, Held::Recorded(event));
        }
        for (topic, query) in flow.reads {
            self.ask(topic.clone(), query, ReadFor::CatchUp(topic));
        }
    }

    /// The Redis subscriber came back: every topic catches up on what it missed.
    pub(super) fn catch_up(&mut self) {
        let Some(shared) = &mut self.shared else {
            return;
        };
        for (topic, query) in shared.sequencer.reconnected() {
            self.ask(topic.clone(), query, ReadFor::CatchUp(topic));
        }
    }

    /// This node's last subscriber of `channel` left.
    pub(super) fn forget_shared(&mut self, channel: &str) {
        if let Some(shared) = &mut self.shared {
            shared.sequencer.forget(&Topic::Channel(channel.to_owned()));
        }
    }

    /// `id` is no longer on `channel`: its recovery and floor go. Returns whether its
    /// `subscribed` was still owed.
    pub(super) fn drop_recovery(&mut self, id: ConnId, channel: &str) -> bool {
        let Some(shared) = &mut self.shared else {
            return false;
        };
        let key = (id, channel.to_owned());
        shared.floors.remove(&key);
        shared.recovering.remove(&key).is_some_and(|r| !r.answered)
    }

    /// Delivers one event to this node's clients on `topic`; recovering connections hold it,
    /// those whose replay went past it skip it. Returns to how many it went or waits.
    pub(super) fn fan_out(&mut self, ctx: &mut Ctx<'_>, topic: &Topic, event: Held) -> usize {
        let text = match &event {
            Held::Recorded(recorded) => match stamped(recorded) {
                Some(text) => text,
                None => return 0,
            },
            Held::Plain(text) => text.clone(),
        };
        let (Topic::Channel(channel), Some(shared)) = (topic, &mut self.shared) else {
            return self.broadcast_topic(ctx, topic, &text);
        };
        let special: Vec<ConnId> = shared
            .recovering
            .keys()
            .chain(shared.floors.keys())
            .filter(|(_, c)| c == channel)
            .map(|(id, _)| *id)
            .collect();
        if special.is_empty() {
            return self.broadcast_topic(ctx, topic, &text);
        }
        let plain: Vec<ConnId> = self.channels.get(channel).map_or(Vec::new(), |set| {
            set.iter()
                .filter(|id| !special.contains(id))
                .copied()
                .collect()
        });
        let count = plain.len() + special.len();
        let n = plain.len();
        super::broadcast_to(ctx, plain.into_iter(), n, &text);
        for id in special {
            let key = (id, channel.clone());
            if let Some(recovery) = shared.recovering.get_mut(&key) {
                if recovery.buffer.len() < RECOVERY_BUFFER {
                    recovery.buffer.push(event.clone());
                } else {
                    recovery.overflowed = true;
                }
                continue;
            }
            if let (Some(floor), Held::Recorded(recorded)) = (shared.floors.get(&key), &event) {
                if floor.epoch == recorded.epoch && recorded.offset <= floor.offset {
                    continue;
                }
                shared.floors.remove(&key);
            }
            ctx.send_text(id, &text);
        }
        count
    }

    /// The answer to read `id`.
    pub fn on_read(&mut self, ctx: &mut Ctx<'_>, id: u64, answer: Result<ReadAnswer, String>) {
        let Some(shared) = &mut self.shared else {
            return;
        };
        let Some(what) = shared.reads.remove(&id) else {
            return;
        };
        if answer.is_err() {
            shared.sequencer.stats.read_failures += 1;
        }
        match what {
            ReadFor::CatchUp(topic) => {
                let flow = shared.sequencer.caught_up(&topic, answer);
                self.follow(ctx, &topic, flow);
            }
            ReadFor::History { id, channel, since } => match answer {
                Ok(answer) => self.send_history(ctx, id, channel.as_deref(), since, answer),
                Err(_) => {
                    let error = ChatError::new(
                        "redis_unavailable",
                        "history is kept in Redis, which this server cannot reach now",
                    );
                    super::send_error(ctx, id, &error);
                }
            },
            ReadFor::Subscribe {
                id,
                channel,
                since,
                reply,
            } => self.finish_recovery(ctx, id, &channel, since, reply, answer),
        }
    }

    fn send_history(
        &self,
        ctx: &mut Ctx<'_>,
        id: ConnId,
        channel: Option<&str>,
        since: Option<Position>,
        a: ReadAnswer,
    ) {
        let mut reply = json!({"type": "history", "messages": []});
        if let Some(name) = channel {
            reply["channel"] = name.into();
        }
        if let Some(since) = since {
            // Recovered: the same epoch, and every offset after `since` up to the tip came
            // (a short history, or the request's `limit`, leaves some out).
            // (A position past the tip, which no client was given, recovers nothing, as on
            // one node.)
            let same = a.tip.epoch == since.epoch && since.offset <= a.tip.offset;
            let whole = same && a.events.len() as u64 == a.tip.offset - since.offset;
            reply["recovered"] = whole.into();
        }
        if !a.tip.epoch.is_empty() {
            let events = a.events.into_iter().filter_map(|(offset, event)| {
                let event = Recorded {
                    offset,
                    epoch: a.tip.epoch.clone(),
                    event,
                };
                stamped(&event).and_then(|text| serde_json::from_str(&text).ok())
            });
            reply["messages"] = Value::Array(events.collect());
            reply["offset"] = a.tip.offset.into();
            reply["epoch"] = a.tip.epoch.into();
        }
        send_json(ctx, id, &reply);
    }

    /// The replay of `id` on `channel` arrived: the missed events, its `subscribed`, the live
    /// events that waited (those after the replay), then live.
    fn finish_recovery(
        &mut self,
        ctx: &mut Ctx<'_>,
        id: ConnId,
        channel: &str,
        since: Option<Position>,
        reply: bool,
        answer: Result<ReadAnswer, String>,
    ) {
        let Some(shared) = &mut self.shared else {
            return;
        };
        let key = (id, channel.to_owned());
        let subscribed = self
            .members
            .get(&id)
            .is_some_and(|m| m.channels.contains(channel));
        let recovery = shared.recovering.remove(&key);
        let (Some(recovery), true) = (recovery, subscribed) else {
            return;
        };
        let mut subscribed = json!({"type": "subscribed", "channel": channel});
        let Ok(answer) = answer else {
            // Redis cannot be read: no position to give; live events go on.
            if since.is_some() {
                subscribed["recovered"] = false.into();
            }
            send_json(ctx, id, &subscribed);
            for held in &recovery.buffer {
                let text = match held {
                    Held::Recorded(event) => stamped(event),
                    Held::Plain(text) => Some(text.clone()),
                };
                if let Some(text) = text {
                    ctx.send_text(id, &text);
                }
            }
            return;
        };
        let tip = answer.tip;
        // The history is the last `size` events: the stream, trimmed with `MAXLEN ~`, may
        // hold a few more.
        let window = tip.offset.saturating_sub(shared.size as u64) + 1;
        if let Some(since) = &since {
            let same = since.epoch == tip.epoch && since.offset <= tip.offset;
            let events: Vec<_> = answer
                .events
                .into_iter()
                .filter(|(offset, _)| same && *offset > since.offset && *offset >= window)
                .collect();
            let first = events.first().map_or(tip.offset + 1, |(offset, _)| *offset);
            shared.sequencer.stats.replayed += events.len() as u64;
            for (offset, event) in events {
                let event = Recorded {
                    offset,
                    epoch: tip.epoch.clone(),
                    event,
                };
                if let Some(text) = stamped(&event) {
                    ctx.send_text(id, &text);
                }
            }
            subscribed["recovered"] = (same && since.offset + 1 >= first).into();
        }
        if reply {
            subscribed["offset"] = tip.offset.into();
            subscribed["epoch"] = tip.epoch.clone().into();
            send_json(ctx, id, &subscribed);
        }
        let mut sent = tip;
        for held in recovery.buffer {
            let event = match held {
                Held::Plain(text) => {
                    ctx.send_text(id, &text);
                    continue;
                }
                Held::Recorded(event) => event,
            };
            if event.epoch == sent.epoch && event.offset <= sent.offset {
                continue;
            }
            if let Some(text) = stamped(&event) {
                ctx.send_text(id, &text);
            }
            sent = event.position();
        }
        if recovery.overflowed {
            // Live events were dropped: read them from the stream, after what was sent.
            self.recover(id, channel, Some(sent), false);
            return;
        }
        let topic = Topic::Channel(channel.to_owned());
        let behind = match shared.sequencer.last(&topic) {
            Some(last) => last.epoch != sent.epoch || last.offset < sent.offset,
            None => true,
        };
        if behind {
            shared.floors.insert(key, sent);
        }
    }
}
