//! Every error code of PROTOCOL.md: one error reply to the sender and nothing else.

use super::*;

/// One refused request: the requests the sender makes first, the request, the error code,
/// and the words its message must contain.
struct ErrorRow {
    setup: &'static [&'static str],
    request: Request,
    code: &'static str,
    mentions: &'static [&'static str],
}

fn refused(request: Request, code: &'static str, mentions: &'static [&'static str]) -> ErrorRow {
    ErrorRow {
        setup: &[],
        request,
        code,
        mentions,
    }
}

impl ErrorRow {
    fn after(mut self, setup: &'static [&'static str]) -> ErrorRow {
        self.setup = setup;
        self
    }
}

/// Every error code of PROTOCOL.md, each with the requests that must get it.
fn error_rows() -> Vec<ErrorRow> {
    let mb = big(1_000_000);
    let mut rows = vec![
        // invalid_json: not JSON, or not an object.
        refused(text("hello"), "invalid_json", &[]),
        refused(text(""), "invalid_json", &[]),
        refused(text(r#"{"type":"chat","content":"x""#), "invalid_json", &[]),
        refused(text("{'type':'chat'}"), "invalid_json", &[]),
        refused(
            text(r#"[{"type":"chat","content":"x"}]"#),
            "invalid_json",
            &[],
        ),
        refused(text(r#""chat""#), "invalid_json", &[]),
        refused(text("42"), "invalid_json", &[]),
        refused(text("null"), "invalid_json", &[]),
        refused(text("true"), "invalid_json", &[]),
        // Hostile JSON: serde_json's nesting bound (128) keeps the stack safe.
        refused(
            text(format!(
                r#"{{"type":"chat","content":"x","deep":{}{}}}"#,
                "[".repeat(500_000),
                "]".repeat(500_000)
            )),
            "invalid_json",
            &[],
        ),
        refused(
            text(format!(
                "{}1{}",
                r#"{"a":"#.repeat(100_000),
                "}".repeat(100_000)
            )),
            "invalid_json",
            &[],
        ),
        refused(text("[".repeat(1_000_000)), "invalid_json", &[]),
        refused(
            text(format!(
                r#"{{"type":{}"ping"{}}}"#,
                "[".repeat(300_000),
                "]".repeat(300_000)
            )),
            "invalid_json",
            &[],
        ),
        // Numbers out of f64's range (a 500,000-digit integer too) are refused by the parser.
        refused(
            text(r#"{"type":"ping","ts":1e999999}"#),
            "invalid_json",
            &[],
        ),
        refused(text(r#"{"type":"ping","ts":-1e400}"#), "invalid_json", &[]),
        refused(
            text(format!(r#"{{"type":"ping","ts":{}}}"#, "9".repeat(500_000))),
            "invalid_json",
            &[],
        ),
        // missing_type: no `type`, or not a string.
        refused(text("{}"), "missing_type", &["type"]),
        refused(text(r#"{"content":"x"}"#), "missing_type", &["type"]),
        refused(
            text(r#"{"channel":"news","content":"x"}"#),
            "missing_type",
            &["type"],
        ),
        refused(
            text(r#"{"type":5,"content":"x"}"#),
            "missing_type",
            &["type"],
        ),
        refused(
            text(r#"{"type":null,"content":"x"}"#),
            "missing_type",
            &["type"],
        ),
        refused(
            text(r#"{"type":true,"content":"x"}"#),
            "missing_type",
            &["type"],
        ),
        refused(
            text(r#"{"type":["chat"],"content":"x"}"#),
            "missing_type",
            &["type"],
        ),
        refused(
            text(r#"{"type":{"name":"chat"},"content":"x"}"#),
            "missing_type",
            &["type"],
        ),
        // unknown_type: case-sensitive, and server-to-client types are not requests.
        refused(
            text(r#"{"type":"shout","content":"x"}"#),
            "unknown_type",
            &["shout"],
        ),
        refused(
            text(r#"{"type":"Chat","content":"x"}"#),
            "unknown_type",
            &["Chat"],
        ),
        refused(
            text(r#"{"type":"message","channel":"news","content":"x"}"#),
            "unknown_type",
            &["message"],
        ),
        refused(text(r#"{"type":""}"#), "unknown_type", &[]),
        // since and limit (PROTOCOL.md, Recovery); this chat keeps no history.
        refused(
            text(r#"{"type":"subscribe","channel":"news","since":5}"#),
            "wrong_type",
            &["since"],
        ),
        refused(
            text(r#"{"type":"subscribe","channel":"news","since":{"offset":-1,"epoch":"e"}}"#),
            "wrong_type",
            &["since"],
        ),
        refused(
            text(r#"{"type":"subscribe","channel":"news","since":{"offset":1}}"#),
            "wrong_type",
            &["since"],
        ),
        refused(
            text(r#"{"type":"history","channel":"news","limit":0}"#),
            "wrong_type",
            &["limit"],
        ),
        refused(text(r#"{"type":"history"}"#), "history_off", &["history"]),
        // redis_unavailable: history in Redis, which this node cannot reach.
        refused(
            text(r#"{"type":"publish","channel":"news","content":"x"}"#),
            "redis_unavailable",
            &["Redis", "published"],
        ),
        refused(
            text(r#"{"type":"chat","content":"x"}"#),
            "redis_unavailable",
            &["Redis"],
        ),
        // missing_field, naming the field.
        refused(text(r#"{"type":"chat"}"#), "missing_field", &["content"]),
        refused(
            text(r#"{"type":"chat","text":"x"}"#),
            "missing_field",
            &["content"],
        ),
        refused(
            text(r#"{"type":"publish","content":"x"}"#),
            "missing_field",
            &["channel"],
        ),
        refused(
            text(r#"{"type":"publish","channel":"news"}"#),
            "missing_field",
            &["content"],
        ),
        refused(text(r#"{"type":"ping"}"#), "missing_field", &["ts"]),
        refused(
            text(r#"{"type":"subscribe"}"#),
            "missing_field",
            &["channel"],
        ),
        refused(
            text(r#"{"type":"unsubscribe"}"#),
            "missing_field",
            &["channel"],
        ),
        refused(
            text(format!(r#"{{"type":"chat","{mb}":1}}"#)),
            "missing_field",
            &["content"],
        ),
        // wrong_type, naming the field.
        refused(
            text(r#"{"type":"chat","content":5}"#),
            "wrong_type",
            &["content"],
        ),
        refused(
            text(r#"{"type":"chat","content":null}"#),
            "wrong_type",
            &["content"],
        ),
        refused(
            text(r#"{"type":"chat","content":["x"]}"#),
            "wrong_type",
            &["content"],
        ),
        refused(
            text(r#"{"type":"publish","channel":{"name":"news"},"content":"x"}"#),
            "wrong_type",
            &["channel"],
        ),
        refused(
            text(r#"{"type":"publish","channel":5,"content":"x"}"#),
            "wrong_type",
            &["channel"],
        ),
        refused(
            text(r#"{"type":"publish","channel":"news","content":true}"#),
            "wrong_type",
            &["content"],
        ),
        refused(
            text(r#"{"type":"subscribe","channel":["news"]}"#),
            "wrong_type",
            &["channel"],
        ),
        refused(
            text(r#"{"type":"unsubscribe","channel":null}"#),
            "wrong_type",
            &["channel"],
        ),
        refused(
            text(r#"{"type":"ping","ts":"1795000000000"}"#),
            "wrong_type",
            &["ts"],
        ),
        refused(text(r#"{"type":"ping","ts":null}"#), "wrong_type", &["ts"]),
        refused(text(r#"{"type":"ping","ts":[1]}"#), "wrong_type", &["ts"]),
        // Hostile megabyte strings are refused by the limits, not echoed.
        refused(
            text(format!(r#"{{"type":"chat","content":"{mb}"}}"#)),
            "content_too_long",
            &["content"],
        ),
        refused(
            text(format!(
                r#"{{"type":"chat","content":"{}"}}"#,
                r"\u00e9".repeat(170_000)
            )),
            "content_too_long",
            &["content"],
        ),
        refused(
            text(format!(
                r#"{{"type":"publish","channel":"c","content":"{mb}"}}"#
            )),
            "content_too_long",
            &["content"],
        ),
        refused(
            text(format!(r#"{{"type":"subscribe","channel":"{mb}"}}"#)),
            "invalid_channel",
            &["channel"],
        ),
        // not_subscribed: never subscribed (the channel exists through the observer), a
        // channel nobody is in, and unsubscribed twice.
        refused(
            text(r#"{"type":"unsubscribe","channel":"news"}"#),
            "not_subscribed",
            &["news"],
        ),
        refused(
            text(r#"{"type":"unsubscribe","channel":"ghost"}"#),
            "not_subscribed",
            &["ghost"],
        ),
        refused(
            text(r#"{"type":"unsubscribe","channel":"news"}"#),
            "not_subscribed",
            &["news"],
        )
        .after(&[
            r#"{"type":"subscribe","channel":"news"}"#,
            r#"{"type":"unsubscribe","channel":"news"}"#,
        ]),
        // too_many_channels: a third channel past max_channels (2), naming the limit.
        refused(
            text(r#"{"type":"subscribe","channel":"three"}"#),
            "too_many_channels",
            &["2"],
        )
        .after(&[
            r#"{"type":"subscribe","channel":"one"}"#,
            r#"{"type":"subscribe","channel":"two"}"#,
        ]),
        // binary_not_supported, whatever the bytes.
        refused(
            Request::Binary(br#"{"type":"chat","content":"x"}"#.to_vec()),
            "binary_not_supported",
            &["binary"],
        ),
        refused(
            Request::Binary(br#"{"type":"publish","channel":"news","content":"x"}"#.to_vec()),
            "binary_not_supported",
            &["binary"],
        ),
        refused(
            Request::Binary(vec![0xff, 0x00]),
            "binary_not_supported",
            &["binary"],
        ),
        // rate_limited: past the burst (twice the rate); with the clock standing still,
        // a rate of 1 allows two messages.
        refused(
            text(r#"{"type":"ping","ts":1}"#),
            "rate_limited",
            &["second"],
        )
        .after(&[r#"{"type":"ping","ts":1}"#, r#"{"type":"ping","ts":2}"#]),
    ];
    // content_too_long counts bytes: 11 ASCII bytes, 6 characters in 11 and 12 bytes.
    for content in ["0123456789a", "éééééa", "éééééé"] {
        let chat = json!({"type": "chat", "content": content});
        let publish = json!({"type": "publish", "channel": "news", "content": content});
        for request in [chat, publish] {
            rows.push(refused(
                text(request.to_string()),
                "content_too_long",
                &["content"],
            ));
        }
    }
    // invalid_channel: empty, 9 ASCII bytes, 4 two-byte characters and one more byte.
    for channel in ["", "123456789", "éééé1"] {
        for request in [
            json!({"type": "subscribe", "channel": channel}),
            json!({"type": "unsubscribe", "channel": channel}),
            json!({"type": "publish", "channel": channel, "content": "x"}),
        ] {
            rows.push(refused(
                text(request.to_string()),
                "invalid_channel",
                &["channel"],
            ));
        }
    }
    rows
}

/// The room a row runs in: the rate-limit rows need a bucket of one message; the Redis rows
/// a cluster node with history in Redis whose link is down (as at its start).
fn room_for(code: &str) -> Room {
    match code {
        "rate_limited" => Room::new(ChatLimits {
            max_messages_per_second: 1.0,
            ..limits()
        }),
        "redis_unavailable" => {
            Room::with_chat(Chat::clustered(limits(), "n1".into()).with_shared_history(10))
        }
        _ => Room::new(limits()),
    }
}

#[test]
fn every_error_code_is_one_error_reply_to_the_sender_and_nothing_else() {
    let rows = error_rows();
    for row in &rows {
        let mut room = room_for(row.code);
        for request in row.setup {
            room.setup(sender(), request);
        }
        let before = room.subscriptions();
        let what: String = format!("{:?}", row.request).chars().take(80).collect();
        let recorded = room.handle(sender(), &row.request);
        let [Recorded::Send { to, kind, payload }] = &recorded[..] else {
            panic!("{what}: want one error to the sender, got {recorded:?}");
        };
        assert_eq!((*to, *kind), (sender(), MessageKind::Text), "{what}");
        let reply = json_of(payload);
        let object = reply.as_object().expect("an object");
        let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["code", "message", "type"], "{what}: {reply}");
        assert_eq!(
            (reply["type"].as_str(), reply["code"].as_str()),
            (Some("error"), Some(row.code)),
            "{what}: {reply}"
        );
        let message = reply["message"].as_str().expect("message is a string");
        assert!(!message.is_empty(), "{what}: empty message");
        // A reply never quotes a huge value back.
        assert!(message.len() < 200, "{what}: {} bytes", message.len());
        for word in row.mentions {
            assert!(
                mentions_word(message, word),
                "{what}: should mention {word:?}: {message:?}"
            );
        }
        assert_eq!(
            room.subscriptions(),
            before,
            "{what}: subscriptions changed"
        );
    }
    // Every code of PROTOCOL.md has a row, but those that need a token's identity, which
    // tests/auth.rs checks on the simulation with signed tokens.
    const NEED_A_TOKEN: [&str; 2] = ["forbidden", "invalid_token"];
    let codes: std::collections::BTreeSet<&str> = rows.iter().map(|r| r.code).collect();
    let documented = include_str!("../../../../PROTOCOL.md")
        .split("## Errors")
        .nth(1)
        .expect("PROTOCOL.md has an Errors section")
        .split("\n## ")
        .next()
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("| `")?.split('`').next())
        .filter(|code| !NEED_A_TOKEN.contains(code))
        .collect::<std::collections::BTreeSet<&str>>();
    assert_eq!(codes, documented, "error codes with rows vs PROTOCOL.md");
}
