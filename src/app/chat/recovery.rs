//! The chat's side of channel history (PROTOCOL.md, "Recovery"): every `chat` and `message`
//! is stamped with its topic's `offset` and `epoch`, a `subscribe` with `since` replays what
//! the client missed before the live events go on, and `history` answers the last events.

use std::time::Instant;

use serde_json::{json, Map, Value};

use super::{send_json, Chat, ChatError};
use crate::app::history::Position;
use crate::app::topics::Topic;
use crate::server::{ConnId, Ctx};

impl Chat {
    /// The text of `event` (an object) on `topic`: stored in the history with its offset and
    /// epoch when there is one, as it is otherwise.
    pub(super) fn stamp(&mut self, topic: &Topic, event: Value, now: Instant) -> String {
        match (&mut self.history, event) {
            (Some(history), Value::Object(fields)) => history.append(topic, fields, now),
            (_, event) => event.to_string(),
        }
    }

    /// Sends `id` (just subscribed to `channel`) what it missed after `since`, then returns
    /// its `subscribed` answer: with the channel's `offset` and `epoch` when history is on,
    /// and `recovered` when `since` was given. Both happen within one request, before any
    /// other event can be delivered: nothing falls between the replay and the live events.
    pub(super) fn replay(
        &mut self,
        ctx: &mut Ctx<'_>,
        id: ConnId,
        channel: &str,
        since: Option<&Position>,
    ) -> Value {
        let mut reply = json!({"type": "subscribed", "channel": channel});
        let topic = Topic::Channel(channel.to_owned());
        let Some(history) = &mut self.history else {
            if since.is_some() {
                reply["recovered"] = false.into();
            }
            return reply;
        };
        let tip = match since {
            Some(since) => {
                let replay = history.since(&topic, since, ctx.now());
                for event in &replay.events {
                    ctx.send_text(id, event);
                }
                reply["recovered"] = replay.recovered.into();
                replay.tip
            }
            None => history.tip(&topic, ctx.now()),
        };
        reply["offset"] = tip.offset.into();
        reply["epoch"] = tip.epoch.into();
        reply
    }

    /// Answers a `history` request (the channel is permitted to the member): the last `limit`
    /// events of `channel` (the chat's without one); with `since`, of those after it, and
    /// whether they are all of them (`recovered`). This is how a client recovers the chat,
    /// which it receives without subscribing: it asks once it is connected again.
    pub(super) fn answer_history(
        &mut self,
        ctx: &mut Ctx<'_>,
        id: ConnId,
        channel: Option<&str>,
        limit: usize,
        since: Option<&Position>,
    ) -> Result<(), ChatError> {
        let Some(history) = &mut self.history else {
            return Err(ChatError::new(
                "history_off",
                "this server keeps no history (--history-size 0)",
            ));
        };
        let topic = channel.map_or(Topic::All, |name| Topic::Channel(name.to_owned()));
        let mut reply = json!({"type": "history", "messages": []});
        if let Some(name) = channel {
            reply["channel"] = name.into();
        }
        // Reading creates no history (`last`), so that requests for made-up names cost
        // nothing: one that has none answers without a position.
        let held = history.last(&topic, limit);
        let found = match (since, held) {
            (_, None) => None,
            (None, Some(held)) => Some(held),
            (Some(since), Some(_)) => {
                let replay = history.since(&topic, since, ctx.now());
                let skip = replay.events.len().saturating_sub(limit);
                reply["recovered"] = (replay.recovered && skip == 0).into();
                Some((replay.tip, replay.events.into_iter().skip(skip).collect()))
            }
        };
        if since.is_some() && found.is_none() {
            reply["recovered"] = false.into();
        }
        if let Some((tip, events)) = found {
            // Stored events are JSON objects this server wrote.
            let events = events.iter().filter_map(|e| serde_json::from_str(e).ok());
            reply["messages"] = Value::Array(events.collect());
            reply["offset"] = tip.offset.into();
            reply["epoch"] = tip.epoch.into();
        }
        send_json(ctx, id, &reply);
        Ok(())
    }

    /// The last subscriber of `channel` left.
    pub(super) fn release_history(&mut self, channel: &str) {
        if let Some(history) = &mut self.history {
            history.release(&Topic::Channel(channel.to_owned()));
        }
    }

    /// Forgets the histories idle past their ttl.
    pub fn expire_history(&mut self, now: Instant) {
        if let Some(history) = &mut self.history {
            history.expire(now);
        }
    }

    /// When [`expire_history`](Self::expire_history) next has something to do.
    pub fn next_history_expiry(&self) -> Option<Instant> {
        self.history.as_ref().and_then(|h| h.next_expiry())
    }
}

/// The optional `since` of a `subscribe`: `{"offset": N, "epoch": "..."}`.
pub(super) fn since_field(object: &Map<String, Value>) -> Result<Option<Position>, ChatError> {
    let Some(since) = object.get("since") else {
        return Ok(None);
    };
    let want = "an object {\"offset\": a whole number, \"epoch\": a string}";
    let wrong = || ChatError::new("wrong_type", format!("field 'since' must be {want}"));
    let offset = since
        .get("offset")
        .and_then(Value::as_u64)
        .ok_or_else(wrong)?;
    let epoch = since
        .get("epoch")
        .and_then(Value::as_str)
        .ok_or_else(wrong)?;
    Ok(Some(Position {
        offset,
        epoch: epoch.to_owned(),
    }))
}

/// The optional `limit` of a `history` request: 1 or more (default: all that is held).
pub(super) fn limit_field(object: &Map<String, Value>) -> Result<usize, ChatError> {
    match object.get("limit") {
        None => Ok(usize::MAX),
        Some(limit) => match limit.as_u64() {
            Some(n) if n >= 1 => Ok(usize::try_from(n).unwrap_or(usize::MAX)),
            _ => Err(ChatError::new(
                "wrong_type",
                "field 'limit' must be a whole number of 1 or more",
            )),
        },
    }
}
