//! `wsloop client --reconnect` recovers wsloop channels (PROTOCOL.md, "Recovery"): it follows
//! the channels the user subscribed to and the server confirmed with `subscribed`, remembers
//! the `offset` and `epoch` of the last event seen on each, subscribes again with `since` after
//! a reconnection, and says where it could not get back everything that was missed. A generic
//! server (an echo) never answers `subscribed`, so nothing is ever sent to it on our own.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

/// A place in a channel: the offset of its last event in an epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Position {
    offset: u64,
    epoch: String,
}

impl Position {
    /// The `offset` and `epoch` of a `message` or `subscribed`, when it has them.
    fn of(event: &Map<String, Value>) -> Option<Position> {
        Some(Position {
            offset: event.get("offset")?.as_u64()?,
            epoch: event.get("epoch")?.as_str()?.to_owned(),
        })
    }
}

/// What the client knows of one channel the user subscribed to.
#[derive(Debug, Default)]
struct Channel {
    /// The server answered `subscribed` once: it speaks wsloop's protocol.
    confirmed: bool,
    /// The last event seen (or where `subscribed` said the channel stood).
    position: Option<Position>,
    /// Subscribed again with this `since`; the replay has not shown yet whether it is whole.
    recovering: Option<Position>,
}

/// The channels being followed; shared by the input side (what is sent) and the connection
/// side (what arrives). Only the user's own lines add channels: the server cannot grow it.
#[derive(Debug, Default)]
pub(super) struct Recovery {
    channels: BTreeMap<String, Channel>,
}

impl Recovery {
    /// A line the user sends: a `subscribe` starts following its channel, an `unsubscribe`
    /// ends it. Other lines, and lines that are not wsloop requests, change nothing.
    pub(super) fn sent(&mut self, line: &str) {
        let Ok(Value::Object(request)) = serde_json::from_str::<Value>(line) else {
            return;
        };
        let Some(channel) = request.get("channel").and_then(Value::as_str) else {
            return;
        };
        match request.get("type").and_then(Value::as_str) {
            Some("subscribe") => {
                self.channels.entry(channel.to_owned()).or_default();
            }
            Some("unsubscribe") => {
                self.channels.remove(channel);
            }
            _ => {}
        }
    }

    /// The `subscribe` requests for a new connection: every confirmed channel again, with
    /// `since` where its position is known; and a status line for each.
    pub(super) fn resubscriptions(&mut self) -> Vec<(String, String)> {
        let confirmed = self.channels.iter_mut().filter(|(_, c)| c.confirmed);
        confirmed
            .map(|(name, channel)| {
                let mut request = json!({"type": "subscribe", "channel": name});
                let status = match &channel.position {
                    Some(p) => {
                        request["since"] = json!({"offset": p.offset, "epoch": p.epoch});
                        format!("resubscribing to #{name} since offset {}", p.offset)
                    }
                    None => format!("resubscribing to #{name}"),
                };
                channel.recovering = channel.position.clone();
                (request.to_string(), status)
            })
            .collect()
    }

    /// A text message arrived: keeps the positions of followed channels; returns the line
    /// that marks a gap to show before it (`#news: 12 messages may be missing`).
    pub(super) fn received(&mut self, text: &str) -> Option<String> {
        let Ok(Value::Object(event)) = serde_json::from_str::<Value>(text) else {
            return None;
        };
        let name = event.get("channel")?.as_str()?;
        let channel = self.channels.get_mut(name)?;
        let position = Position::of(&event);
        let missing = match event.get("type")?.as_str()? {
            "message" => {
                let position = position?;
                // The first replayed event tells whether the replay starts right after `since`.
                let missing = channel
                    .recovering
                    .take()
                    .and_then(|since| missing_before(&since, &position));
                channel.position = Some(position);
                missing
            }
            "subscribed" => {
                channel.confirmed = true;
                let since = channel.recovering.take();
                let whole = event.get("recovered").and_then(Value::as_bool) != Some(false);
                let missing = match (since, &position) {
                    (Some(since), Some(tip)) if !whole => Some(match since.epoch == tip.epoch {
                        // Nothing was replayed: all after `since` is gone.
                        true if tip.offset > since.offset => Some(tip.offset - since.offset),
                        _ => None,
                    }),
                    (Some(_), None) if !whole => Some(None),
                    _ => None,
                };
                if position.is_some() {
                    channel.position = position;
                }
                missing
            }
            _ => None,
        };
        missing.map(|count| gap_line(name, count))
    }
}

/// What is missing before `first`, the first event replayed after `since`: `None` when it
/// follows on; `Some(Some(n))`, n events of the same epoch; `Some(None)`, an unknown number
/// (the epoch changed: offsets of different epochs are unrelated).
fn missing_before(since: &Position, first: &Position) -> Option<Option<u64>> {
    if since.epoch != first.epoch {
        return Some(None);
    }
    let n = first.offset.saturating_sub(since.offset + 1);
    (n > 0).then_some(Some(n))
}

/// The marker of a gap in `channel`: how many messages, when it is known.
fn gap_line(channel: &str, count: Option<u64>) -> String {
    match count {
        Some(1) => format!("#{channel}: 1 message may be missing"),
        Some(n) => format!("#{channel}: {n} messages may be missing"),
        None => format!("#{channel}: messages may be missing"),
    }
}

#[cfg(test)]
mod tests {
    use super::Recovery;

    fn following(lines: &[&str]) -> Recovery {
        let mut recovery = Recovery::default();
        recovery.sent(r#"{"type":"subscribe","channel":"news"}"#);
        for line in lines {
            assert_eq!(recovery.received(line), None, "{line}");
        }
        recovery
    }

    #[test]
    fn resubscribes_confirmed_channels_with_the_last_offset() {
        let mut recovery = following(&[
            r#"{"type":"subscribed","channel":"news","offset":3,"epoch":"e1"}"#,
            r#"{"type":"message","channel":"news","offset":4,"epoch":"e1"}"#,
        ]);
        recovery.sent(r#"{"type":"subscribe","channel":"never-confirmed"}"#);
        let again = recovery.resubscriptions();
        assert_eq!(again.len(), 1);
        let request: serde_json::Value = serde_json::from_str(&again[0].0).expect("JSON");
        assert_eq!(
            request,
            serde_json::json!({"type":"subscribe","channel":"news",
                               "since":{"offset":4,"epoch":"e1"}})
        );
        assert_eq!(again[0].1, "resubscribing to #news since offset 4");
        recovery.sent(r#"{"type":"unsubscribe","channel":"news"}"#);
        assert!(recovery.resubscriptions().is_empty());
    }

    #[test]
    fn a_gap_is_counted_from_the_offsets_or_marked_when_the_epoch_changed() {
        let subscribed = r#"{"type":"subscribed","channel":"news","offset":4,"epoch":"e1"}"#;
        let mut recovery = following(&[subscribed]);
        recovery.resubscriptions();
        let trimmed = r#"{"type":"message","channel":"news","offset":7,"epoch":"e1"}"#;
        assert_eq!(
            recovery.received(trimmed).as_deref(),
            Some("#news: 2 messages may be missing")
        );
        let answer =
            r#"{"type":"subscribed","channel":"news","offset":7,"epoch":"e1","recovered":false}"#;
        assert_eq!(recovery.received(answer), None, "reported once");

        recovery.resubscriptions();
        let restarted =
            r#"{"type":"subscribed","channel":"news","offset":0,"epoch":"e2","recovered":false}"#;
        assert_eq!(
            recovery.received(restarted).as_deref(),
            Some("#news: messages may be missing")
        );
        recovery.resubscriptions();
        let whole = [
            r#"{"type":"message","channel":"news","offset":1,"epoch":"e2"}"#,
            r#"{"type":"subscribed","channel":"news","offset":1,"epoch":"e2","recovered":true}"#,
        ];
        for line in whole {
            assert_eq!(recovery.received(line), None, "{line}");
        }
    }
}
