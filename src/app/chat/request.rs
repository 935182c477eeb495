//! A chat request as it arrives: JSON checked field by field into a [`Request`], so that
//! every mistake gets an `error` naming the field (PROTOCOL.md, "Errors").

use serde_json::{Map, Value};

use super::{recovery, Chat, ChatError};
use crate::app::history::Position;

/// A well-formed request.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Request {
    Ping {
        ts: Value,
    },
    Chat {
        content: String,
    },
    Subscribe {
        channel: String,
        since: Option<Position>,
    },
    Unsubscribe {
        channel: String,
    },
    Publish {
        channel: String,
        content: String,
    },
    Auth {
        token: String,
    },
    Presence {
        channel: String,
    },
    History {
        channel: Option<String>,
        limit: usize,
        since: Option<Position>,
    },
}

impl Chat {
    pub(super) fn parse(&self, data: &[u8]) -> Result<Request, ChatError> {
        // serde_json refuses nesting deeper than 128 levels, so hostile input cannot exhaust
        // the stack; the frame size limit bounds everything else.
        let value: Value = serde_json::from_slice(data)
            .map_err(|e| ChatError::new("invalid_json", format!("not valid JSON: {e}")))?;
        let Value::Object(object) = value else {
            return Err(ChatError::new(
                "invalid_json",
                "a message must be a JSON object",
            ));
        };
        let kind = match object.get("type") {
            Some(Value::String(kind)) => kind.as_str(),
            _ => {
                return Err(ChatError::new(
                    "missing_type",
                    "field 'type' (a string) is required",
                ))
            }
        };
        match kind {
            "ping" => match object.get("ts") {
                Some(ts @ Value::Number(_)) => Ok(Request::Ping { ts: ts.clone() }),
                Some(_) => Err(wrong_type("ts", "a number")),
                None => Err(missing("ts")),
            },
            "chat" => Ok(Request::Chat {
                content: self.content(&object)?,
            }),
            "subscribe" => Ok(Request::Subscribe {
                channel: self.channel(&object)?,
                since: recovery::since_field(&object)?,
            }),
            "unsubscribe" => Ok(Request::Unsubscribe {
                channel: self.channel(&object)?,
            }),
            "publish" => Ok(Request::Publish {
                channel: self.channel(&object)?,
                content: self.content(&object)?,
            }),
            "presence" => Ok(Request::Presence {
                channel: self.channel(&object)?,
            }),
            "auth" => Ok(Request::Auth {
                token: string_field(&object, "token")?.to_owned(),
            }),
            "history" => Ok(Request::History {
                channel: match object.get("channel") {
                    Some(_) => Some(self.channel(&object)?),
                    None => None,
                },
                limit: recovery::limit_field(&object)?,
                since: recovery::since_field(&object)?,
            }),
            other => {
                // Quote at most a short prefix: the reply must not echo a huge value back.
                let shown: String = other.chars().take(32).collect();
                let more = if shown.len() < other.len() { "..." } else { "" };
                Err(ChatError::new(
                    "unknown_type",
                    format!("unknown type {shown:?}{more} (ping, chat, subscribe, unsubscribe, publish, presence, history, auth)"),
                ))
            }
        }
    }

    fn content(&self, object: &Map<String, Value>) -> Result<String, ChatError> {
        let content = string_field(object, "content")?;
        self.check_content(content)?;
        Ok(content.to_owned())
    }

    /// `content` is within `--max-content`.
    pub(super) fn check_content(&self, content: &str) -> Result<(), ChatError> {
        if content.len() > self.limits.max_content {
            return Err(ChatError::new(
                "content_too_long",
                format!(
                    "content is {} bytes; the limit is {}",
                    content.len(),
                    self.limits.max_content
                ),
            ));
        }
        Ok(())
    }

    fn channel(&self, object: &Map<String, Value>) -> Result<String, ChatError> {
        let channel = string_field(object, "channel")?;
        self.check_channel(channel)?;
        Ok(channel.to_owned())
    }

    /// A channel name is 1 to `--max-channel-name` bytes long.
    pub(crate) fn check_channel(&self, channel: &str) -> Result<(), ChatError> {
        if channel.is_empty() || channel.len() > self.limits.max_channel_name {
            return Err(ChatError::new(
                "invalid_channel",
                format!(
                    "a channel name must be 1 to {} bytes long",
                    self.limits.max_channel_name
                ),
            ));
        }
        Ok(())
    }
}

pub(super) fn missing(field: &str) -> ChatError {
    ChatError::new("missing_field", format!("field '{field}' is required"))
}

pub(super) fn wrong_type(field: &str, want: &str) -> ChatError {
    ChatError::new("wrong_type", format!("field '{field}' must be {want}"))
}

pub(super) fn string_field<'a>(
    object: &'a Map<String, Value>,
    field: &str,
) -> Result<&'a str, ChatError> {
    match object.get(field) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(wrong_type(field, "a string")),
        None => Err(missing(field)),
    }
}
