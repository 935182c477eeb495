//! The chat protocol as tables, in process (PROTOCOL.md): each row is one request from a
//! member and the exact reply it must get. No sockets: the chat is fed messages through a
//! `Ctx` whose recorded commands are read back, so every error code is checked once, here,
//! and `tests/serve.rs` only shows that an error reply reaches a real client.
//!
//! The scaffolding checks for every error row what PROTOCOL.md promises of all errors: the
//! only command is one `error` to the sender with exactly `type`, `code` and `message`, the
//! message names what was wrong, nothing reaches anyone else, and no subscription changed.

use std::time::Instant;

use serde_json::{json, Value};

use super::{Chat, ChatLimits};
use crate::proto::{Message, MessageKind};
use crate::server::handler::{Commands, Recorded};
use crate::server::{ConnId, Ctx};

mod deliveries;
mod errors;
mod history;
mod limits;
mod presence;
mod recovery_property;
mod shared_history;

/// Small limits, so that rows can sit on both sides of each one.
fn limits() -> ChatLimits {
    ChatLimits {
        max_content: 10,
        max_channel_name: 8,
        max_channels: 2,
        max_messages_per_second: 1_000.0,
    }
}

/// The member whose requests the rows send.
fn sender() -> ConnId {
    ConnId::new(1, 1)
}

/// Another member, subscribed to [`OBSERVED`]: a request wrongly carried out would reach it.
fn observer() -> ConnId {
    ConnId::new(2, 2)
}

const OBSERVED: [&str; 2] = ["news", "three"];

/// A request: a text or a binary message.
#[derive(Clone, Debug)]
enum Request {
    Text(String),
    Binary(Vec<u8>),
}

fn text(request: impl Into<String>) -> Request {
    Request::Text(request.into())
}

/// A chat with the sender and the observer joined, at one instant (so the rate limit's
/// bucket never refills between requests).
struct Room {
    chat: Chat,
    commands: Commands,
    now: Instant,
}

impl Room {
    fn new(limits: ChatLimits) -> Room {
        Room::with_chat(Chat::new(limits))
    }

    fn with_chat(chat: Chat) -> Room {
        let mut room = Room {
            chat,
            commands: Commands::default(),
            now: Instant::now(),
        };
        for id in [sender(), observer()] {
            let mut ctx = Ctx::new(&mut room.commands, room.now);
            room.chat.join(&mut ctx, id, None);
        }
        for channel in OBSERVED {
            let request = json!({"type": "subscribe", "channel": channel}).to_string();
            room.setup(observer(), &request);
        }
        room.commands.clear();
        room
    }

    /// Hands `request` from `from` to the chat; returns what it recorded.
    fn handle(&mut self, from: ConnId, request: &Request) -> Vec<Recorded> {
        let message = match request {
            Request::Text(text) => Message {
                kind: MessageKind::Text,
                data: text.as_bytes(),
            },
            Request::Binary(data) => Message {
                kind: MessageKind::Binary,
                data,
            },
        };
        let mut ctx = Ctx::new(&mut self.commands, self.now);
        self.chat.handle(&mut ctx, from, message);
        let recorded = self.commands.recorded();
        self.commands.clear();
        recorded
    }

    /// `id` disconnects; returns what that recorded.
    fn leave(&mut self, id: ConnId) -> Vec<Recorded> {
        let mut ctx = Ctx::new(&mut self.commands, self.now);
        self.chat.leave(&mut ctx, id);
        let recorded = self.commands.recorded();
        self.commands.clear();
        recorded
    }

    /// A request that sets a row up: it must not be refused.
    fn setup(&mut self, from: ConnId, request: &str) {
        for command in self.handle(from, &text(request)) {
            if let Recorded::Send { payload, .. } = &command {
                let reply = json_of(payload);
                assert_ne!(reply["type"], "error", "setup {request}: {reply}");
            }
        }
    }

    /// Every subscription, sorted: what an error must leave as it was.
    fn subscriptions(&self) -> Vec<(String, Vec<ConnId>)> {
        let mut all: Vec<(String, Vec<ConnId>)> = self
            .chat
            .channels
            .iter()
            .map(|(name, ids)| {
                let mut ids: Vec<ConnId> = ids.iter().copied().collect();
                ids.sort();
                (name.clone(), ids)
            })
            .collect();
        all.sort();
        for (id, member) in &self.chat.members {
            let mine: Vec<&String> = member.channels.iter().collect();
            all.push((format!("member {id}: {mine:?}"), Vec::new()));
        }
        all.sort();
        all
    }
}

/// What `id` was sent (directly or in a broadcast), in order, as JSON.
fn sent_to(recorded: &[Recorded], id: ConnId) -> Vec<Value> {
    recorded
        .iter()
        .filter_map(|command| match command {
            Recorded::Send { to, payload, .. } if *to == id => Some(json_of(payload)),
            Recorded::Broadcast {
                targets, payload, ..
            } if targets.contains(&id) => Some(json_of(payload)),
            _ => None,
        })
        .collect()
}

fn json_of(payload: &[u8]) -> Value {
    serde_json::from_slice(payload)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(payload)))
}

/// Whether `text` contains `word` as a whole word (split on anything not alphanumeric or `_`).
fn mentions_word(text: &str, word: &str) -> bool {
    text.split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .any(|w| w == word)
}

/// Strings past [`limits`] and past anything a reply may quote.
fn big(n: usize) -> String {
    "a".repeat(n)
}
