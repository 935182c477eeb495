//! `wsloop client --reconnect` recovers wsloop channels and the chat (PROTOCOL.md, "Recovery"):
//! it follows the channels the user subscribed to and the server confirmed with `subscribed`,
//! and the chat to everyone once a wsloop server (its `welcome`) sent a chat with a position;
//! remembers the `offset` and `epoch` of the last event seen on each; after a reconnection
//! subscribes again with `since`, and asks for the missed chats with `history` and `since`
//! (printed one per line, as if they had come live, with the live chats that came meanwhile
//! held back until then); and says where it could not get back everything that was missed. A
//! generic server (an echo) never answers `subscribed` or `welcome`, so nothing is ever sent
//! to it on our own.

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

/// Live chats held while the chat's `history` answer is awaited; past this they are dropped
/// and a gap is marked.
const MAX_HELD_CHATS: usize = 1_024;

/// The chat's recovery under way: its `history` request is out.
#[derive(Debug)]
struct ChatRecovery {
    since: Position,
    /// The first replayed chat came and was compared with `since`.
    checked: bool,
    held: Vec<String>,
    overflowed: bool,
}

/// What to show of what arrived, in order.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Shown {
    /// A message, as it came or as replayed.
    Line(String),
    /// A note for standard error (a gap).
    Status(String),
}

/// The channels being followed; shared by the input side (what is sent) and the connection
/// side (what arrives). Only the user's own lines add channels: the server cannot grow it.
#[derive(Debug, Default)]
pub(super) struct Recovery {
    channels: BTreeMap<String, Channel>,
    /// A `welcome` came: the server speaks wsloop's protocol, so its chats are followed.
    wsloop: bool,
    /// The last chat to everyone seen.
    chat: Option<Position>,
    chat_recovery: Option<ChatRecovery>,
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

    /// The requests for a new connection: every confirmed channel subscribed again, with
    /// `since` where its position is known, then the chat's `history` since the last chat
    /// seen; and a status line for each.
    pub(super) fn resubscriptions(&mut self) -> Vec<(String, String)> {
        let confirmed = self.channels.iter_mut().filter(|(_, c)| c.confirmed);
        let mut requests: Vec<(String, String)> = confirmed
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
            .collect();
        // Held chats of a connection lost before its answer were not shown: the new request
        // asks from the same place.
        self.chat_recovery = self.chat.clone().map(|since| {
            let request = json!({"type": "history",
                                 "since": {"offset": since.offset, "epoch": since.epoch}});
            let status = format!("recovering the chat since offset {}", since.offset);
            requests.push((request.to_string(), status));
            ChatRecovery {
                since,
                checked: false,
                held: Vec::new(),
                overflowed: false,
            }
        });
        requests
    }

    /// A text message arrived: what to show for it, in order (the gap markers of followed
    /// channels and the chat, `#news: 12 messages may be missing`; the chat's replay in place
    /// of the `history` answer; nothing for a chat held back).
    pub(super) fn received(&mut self, text: String) -> Vec<Shown> {
        let Ok(Value::Object(event)) = serde_json::from_str::<Value>(&text) else {
            return vec![Shown::Line(text)];
        };
        let kind = event.get("type").and_then(Value::as_str);
        let to_everyone = !event.contains_key("channel");
        let mut shown = Vec::new();
        match kind {
            Some("welcome") => self.wsloop = true,
            Some("chat") if self.wsloop && to_everyone => {
                match &mut self.chat_recovery {
                    Some(recovery) if recovery.held.len() < MAX_HELD_CHATS => {
                        recovery.held.push(text);
                    }
                    Some(recovery) => recovery.overflowed = true,
                    None => self.show_chat(&event, text, &mut shown),
                }
                return shown;
            }
            Some("history") if to_everyone && self.chat_recovery.is_some() => {
                self.finish_chat_recovery(&event, &mut shown);
                return shown;
            }
            Some("error") if self.chat_recovery.is_some() => {
                let code = event.get("code").and_then(Value::as_str);
                if matches!(code, Some("redis_unavailable" | "history_off")) {
                    // The answer to our `history`: the chat cannot be recovered now.
                    shown.push(Shown::Line(text));
                    self.finish_chat_recovery(&Map::new(), &mut shown);
                    return shown;
                }
            }
            _ => {}
        }
        if let Some(gap) = self.channel_event(&event) {
            shown.push(Shown::Status(gap));
        }
        shown.push(Shown::Line(text));
        shown
    }

    /// Shows a chat unless its offset was shown already; the first one after a `since`
    /// marks what is missing before it.
    fn show_chat(&mut self, event: &Map<String, Value>, text: String, shown: &mut Vec<Shown>) {
        if let Some(position) = Position::of(event) {
            if let Some(last) = &self.chat {
                if last.epoch == position.epoch && position.offset <= last.offset {
                    return;
                }
            }
            if let Some(recovery) = self.chat_recovery.as_mut().filter(|r| !r.checked) {
                recovery.checked = true;
                if let Some(count) = missing_before(&recovery.since, &position) {
                    shown.push(Shown::Status(chat_gap_line(count)));
                }
            }
            self.chat = Some(position);
        }
        shown.push(Shown::Line(text));
    }

    /// The chat's `history` answer (or an error for it): its events, a gap it could not
    /// fill, then the live chats held meanwhile.
    fn finish_chat_recovery(&mut self, answer: &Map<String, Value>, shown: &mut Vec<Shown>) {
        let messages = answer.get("messages").and_then(Value::as_array);
        for message in messages.into_iter().flatten() {
            if let Value::Object(event) = message {
                self.show_chat(event, message.to_string(), shown);
            }
        }
        let Some(recovery) = self.chat_recovery.take() else {
            return;
        };
        let tip = Position::of(answer);
        let whole = answer.get("recovered").and_then(Value::as_bool) == Some(true);
        if !whole && !recovery.checked {
            // Nothing was replayed: all after `since` is gone (an unknown number on another
            // epoch, or when Redis could not be read).
            let since = &recovery.since;
            let missing = match &tip {
                Some(tip) if tip.epoch == since.epoch => {
                    (tip.offset > since.offset).then(|| Some(tip.offset - since.offset))
                }
                _ => Some(None),
            };
            if let Some(count) = missing {
                shown.push(Shown::Status(chat_gap_line(count)));
            }
        }
        if let Some(tip) = tip {
            self.chat = Some(tip);
        }
        for text in recovery.held {
            if let Ok(Value::Object(event)) = serde_json::from_str::<Value>(&text) {
                self.show_chat(&event, text, shown);
            }
        }
        if recovery.overflowed {
            shown.push(Shown::Status(chat_gap_line(None)));
        }
    }

    /// An event of a followed channel: keeps its position; returns the line that marks a
    /// gap to show before it.
    fn channel_event(&mut self, event: &Map<String, Value>) -> Option<String> {
        let name = event.get("channel")?.as_str()?;
        let channel = self.channels.get_mut(name)?;
        let position = Position::of(event);
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

/// How many messages may be missing: `count` when it is known.
fn missing_text(count: Option<u64>) -> String {
    match count {
        Some(1) => "1 message may be missing".to_owned(),
        Some(n) => format!("{n} messages may be missing"),
        None => "messages may be missing".to_owned(),
    }
}

/// The marker of a gap in `channel`.
fn gap_line(channel: &str, count: Option<u64>) -> String {
    format!("#{channel}: {}", missing_text(count))
}

/// The marker of a gap in the chat to everyone.
fn chat_gap_line(count: Option<u64>) -> String {
    format!("chat: {}", missing_text(count))
}

#[cfg(test)]
mod tests {
    use super::{Recovery, Shown};

    /// The status lines (gap markers) among what is shown.
    fn notes(shown: &[Shown]) -> Vec<&str> {
        shown
            .iter()
            .filter_map(|s| match s {
                Shown::Status(note) => Some(note.as_str()),
                Shown::Line(_) => None,
            })
            .collect()
    }

    /// The `offset` of each line shown.
    fn offsets(shown: &[Shown]) -> Vec<u64> {
        shown
            .iter()
            .filter_map(|s| match s {
                Shown::Line(line) => {
                    serde_json::from_str::<serde_json::Value>(line).ok()?["offset"].as_u64()
                }
                Shown::Status(_) => None,
            })
            .collect()
    }

    /// Lines that arrive and are shown as they are, with no note.
    fn arrive(recovery: &mut Recovery, lines: &[&str]) {
        for line in lines {
            assert_eq!(
                recovery.received(line.to_string()),
                [Shown::Line(line.to_string())],
                "{line}"
            );
        }
    }

    fn following(lines: &[&str]) -> Recovery {
        let mut recovery = Recovery::default();
        recovery.sent(r#"{"type":"subscribe","channel":"news"}"#);
        arrive(&mut recovery, lines);
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
            recovery.received(trimmed.to_string()),
            [
                Shown::Status("#news: 2 messages may be missing".into()),
                Shown::Line(trimmed.into())
            ]
        );
        let answer =
            r#"{"type":"subscribed","channel":"news","offset":7,"epoch":"e1","recovered":false}"#;
        arrive(&mut recovery, &[answer]); // reported once

        recovery.resubscriptions();
        let restarted =
            r#"{"type":"subscribed","channel":"news","offset":0,"epoch":"e2","recovered":false}"#;
        assert_eq!(
            notes(&recovery.received(restarted.to_string())),
            ["#news: messages may be missing"]
        );
        recovery.resubscriptions();
        arrive(
            &mut recovery,
            &[
                r#"{"type":"message","channel":"news","offset":1,"epoch":"e2"}"#,
                r#"{"type":"subscribed","channel":"news","offset":1,"epoch":"e2","recovered":true}"#,
            ],
        );
    }

    const WELCOME: &str = r#"{"type":"welcome","user":"u"}"#;

    fn chat(offset: u64, epoch: &str) -> String {
        format!(r#"{{"type":"chat","content":"c{offset}","offset":{offset},"epoch":"{epoch}"}}"#)
    }

    /// A client of a wsloop server that saw chats up to offset 2 of epoch e1 and reconnected.
    fn back_in_the_chat() -> Recovery {
        let mut recovery = Recovery::default();
        arrive(&mut recovery, &[WELCOME, &chat(1, "e1"), &chat(2, "e1")]);
        let again = recovery.resubscriptions();
        let request: serde_json::Value = serde_json::from_str(&again[0].0).expect("JSON");
        assert_eq!(
            (request, again[0].1.as_str()),
            (
                serde_json::json!({"type":"history","since":{"offset":2,"epoch":"e1"}}),
                "recovering the chat since offset 2"
            )
        );
        arrive(&mut recovery, &[WELCOME]);
        recovery
    }

    #[test]
    fn the_chat_is_recovered_with_history_and_live_chats_wait_for_it() {
        let mut recovery = back_in_the_chat();
        assert_eq!(recovery.received(chat(4, "e1")), [], "held back");
        assert_eq!(recovery.received(chat(5, "e1")), []);
        let answer = format!(
            r#"{{"type":"history","messages":[{},{}],"recovered":true,"offset":4,"epoch":"e1"}}"#,
            chat(3, "e1"),
            chat(4, "e1")
        );
        let shown = recovery.received(answer);
        assert_eq!(offsets(&shown), [3, 4, 5], "in order, each once");
        assert_eq!(notes(&shown), [] as [&str; 0]);
        arrive(&mut recovery, &[&chat(6, "e1")]);
        assert_eq!(recovery.received(chat(6, "e1")), [], "a repeat is dropped");
    }

    #[test]
    fn a_chat_gap_is_marked_with_its_size_or_as_unknown() {
        let mut recovery = back_in_the_chat();
        let trimmed = format!(
            r#"{{"type":"history","messages":[{}],"recovered":false,"offset":5,"epoch":"e1"}}"#,
            chat(5, "e1")
        );
        let shown = recovery.received(trimmed);
        assert_eq!(notes(&shown), ["chat: 2 messages may be missing"]);
        assert_eq!(offsets(&shown), [5]);

        let mut recovery = back_in_the_chat();
        let elsewhere =
            r#"{"type":"history","messages":[],"recovered":false,"offset":0,"epoch":"e2"}"#;
        assert_eq!(
            recovery.received(elsewhere.to_string()),
            [Shown::Status("chat: messages may be missing".into())]
        );
        arrive(&mut recovery, &[&chat(1, "e2")]);

        let mut recovery = back_in_the_chat();
        let down = r#"{"type":"error","code":"redis_unavailable","message":"m"}"#;
        assert_eq!(
            recovery.received(down.to_string()),
            [
                Shown::Line(down.into()),
                Shown::Status("chat: messages may be missing".into())
            ]
        );
    }

    #[test]
    fn chats_are_not_followed_without_a_welcome() {
        let mut recovery = Recovery::default();
        arrive(&mut recovery, &[&chat(1, "e1")]);
        assert!(
            recovery.resubscriptions().is_empty(),
            "an echo of a typed chat"
        );
    }
}
