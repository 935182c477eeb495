//! Requests at the edge of each limit are carried out; the message rate and floods.

use super::*;

/// One accepted request at the edge of a limit (or next to an error row): the requests the
/// sender makes first, the request, and fields the first recorded command must carry.
struct AcceptRow {
    setup: &'static [&'static str],
    request: String,
    first: Value,
}

fn accepted(setup: &'static [&'static str], request: Value, first: Value) -> AcceptRow {
    AcceptRow {
        setup,
        request: request.to_string(),
        first,
    }
}

fn accept_rows() -> Vec<AcceptRow> {
    let subscribed_to_two: &'static [&'static str] = &[
        r#"{"type":"subscribe","channel":"one"}"#,
        r#"{"type":"subscribe","channel":"two"}"#,
    ];
    let mut rows = Vec::new();
    // Exactly max_content (10) bytes: ASCII, and 5 two-byte characters.
    for content in ["0123456789", "ééééé"] {
        rows.push(accepted(
            &[],
            json!({"type": "chat", "content": content}),
            json!({"type": "chat", "content": content}),
        ));
        rows.push(accepted(
            &[],
            json!({"type": "publish", "channel": "news", "content": content}),
            json!({"type": "message", "channel": "news", "content": content}),
        ));
    }
    // Exactly max_channel_name (8) bytes: ASCII, and 4 two-byte characters.
    for channel in ["12345678", "éééé"] {
        rows.push(accepted(
            &[],
            json!({"type": "subscribe", "channel": channel}),
            json!({"type": "subscribed", "channel": channel}),
        ));
    }
    // At max_channels, subscribing again to a channel it is in is not a new subscription,
    // and leaving one makes room.
    rows.push(accepted(
        subscribed_to_two,
        json!({"type": "subscribe", "channel": "one"}),
        json!({"type": "subscribed", "channel": "one"}),
    ));
    rows.push(accepted(
        &[
            r#"{"type":"subscribe","channel":"one"}"#,
            r#"{"type":"subscribe","channel":"two"}"#,
            r#"{"type":"unsubscribe","channel":"two"}"#,
        ],
        json!({"type": "subscribe", "channel": "three"}),
        json!({"type": "subscribed", "channel": "three"}),
    ));
    // Huge spellings of tiny numbers round to 0 and are numbers: the ping is answered.
    for ts in [
        format!("0.{}1", "0".repeat(500_000)),
        format!("1e-{}", "9".repeat(500_000)),
    ] {
        rows.push(AcceptRow {
            setup: &[],
            request: format!(r#"{{"type":"ping","ts":{ts}}}"#),
            first: json!({"type": "pong"}),
        });
    }
    // Fields nobody reads, however large, do not matter.
    rows.push(AcceptRow {
        setup: &[],
        request: format!(
            r#"{{"type":"ping","ts":1,"n":[{}]}}"#,
            vec!["1".repeat(40); 20_000].join(",")
        ),
        first: json!({"type": "pong", "echo": 1}),
    });
    rows.push(AcceptRow {
        setup: &[],
        request: format!(r#"{{"type":"ping","ts":5,"junk":"{}"}}"#, big(1_000_000)),
        first: json!({"type": "pong", "echo": 5}),
    });
    rows
}

#[test]
fn requests_at_the_limits_are_carried_out() {
    for row in accept_rows() {
        let mut room = Room::new(limits());
        for request in row.setup {
            room.setup(sender(), request);
        }
        let what: String = row.request.chars().take(80).collect();
        let recorded = room.handle(sender(), &text(row.request.as_str()));
        let payload = match recorded.first() {
            Some(Recorded::Send { to, payload, .. }) if *to == sender() => payload,
            Some(Recorded::Broadcast { payload, .. }) => payload,
            other => panic!("{what}: want a reply or a delivery, got {other:?}"),
        };
        let got = json_of(payload);
        for (field, want) in row.first.as_object().expect("an object") {
            assert_eq!(&got[field], want, "{what}: field {field} of {got}");
        }
    }
}

/// What a member that sends `per_second` chats for `seconds` gets, on a clock that moves a
/// message's worth between requests: (rate_limited replies, closed with 1008 after how many).
fn flood(rate: f64, per_second: u32, seconds: u32) -> (usize, Option<usize>) {
    let mut room = Room::new(ChatLimits {
        max_messages_per_second: rate,
        ..limits()
    });
    let step = std::time::Duration::from_secs(1) / per_second;
    let chat = text(r#"{"type":"chat","content":"x"}"#);
    let mut limited = 0;
    for sent in 0..(per_second * seconds) as usize {
        room.now += step;
        for command in room.handle(sender(), &chat) {
            match command {
                Recorded::Close {
                    code, handshake, ..
                } => {
                    assert_eq!((code, handshake), (1008, false), "a flood is failed");
                    return (limited, Some(sent));
                }
                Recorded::Send { payload, .. } if json_of(&payload)["code"] == "rate_limited" => {
                    limited += 1;
                }
                _ => {}
            }
        }
    }
    (limited, None)
}

#[test]
fn a_flood_is_closed_with_1008_even_though_tokens_refill_between_its_messages() {
    // 1,000 a second against the default 50 (bursts of 100): a token comes back every 20
    // messages, which used to forgive every strike, so the flood was never closed. It must
    // be, within its first second: strikes fade at 50 a second and it earns 950.
    let (limited, closed_after) = flood(50.0, 1_000, 5);
    let closed_after = closed_after.expect("the flood was never closed");
    assert!(
        closed_after < 1_000,
        "closed only after {closed_after} messages"
    );
    assert!(
        limited <= 120,
        "{limited} rate_limited replies before the close"
    );
}

#[test]
fn a_client_a_little_over_the_rate_is_limited_not_closed() {
    // 12 a second against 10: refused now and then, for a minute, never closed.
    let (limited, closed_after) = flood(10.0, 12, 60);
    assert_eq!(closed_after, None);
    assert!(limited > 0, "some messages over the rate are refused");
}
