//! Channel history (PROTOCOL.md, Recovery): offsets and epochs on deliveries, `since` replay
//! with `recovered`, `history` requests, the per-channel size, the byte cap and the ttl on the
//! virtual clock.

use std::time::Duration;

use super::*;
use crate::app::history::HistoryLimits;

const TTL: Duration = Duration::from_secs(10);

/// The sender and the observer (subscribed to `news` and `three`) in a chat keeping `size`
/// events per channel and `max_bytes` in all.
fn room(size: usize, max_bytes: usize) -> Room {
    let history = HistoryLimits {
        size,
        ttl: TTL,
        max_bytes,
    };
    Room::with_chat(Chat::new(ChatLimits::default()).with_history(history))
}

/// Every payload recorded, as JSON without `ts` (see [`without_ts`]).
fn payloads(recorded: &[Recorded]) -> Vec<Value> {
    recorded
        .iter()
        .filter_map(|command| match command {
            Recorded::Send { payload, .. } | Recorded::Broadcast { payload, .. } => {
                Some(without_ts(json_of(payload)))
            }
            Recorded::Close { .. } | Recorded::Respond { .. } => None,
        })
        .collect()
}

/// `value` with each `ts` (the wall clock's, in it and in the events a `history` holds)
/// checked to be a number and removed.
fn without_ts(mut value: Value) -> Value {
    if let Some(object) = value.as_object_mut() {
        if let Some(ts) = object.remove("ts") {
            assert!(ts.is_u64(), "ts {ts}");
        }
        if let Some(Value::Array(events)) = object.get_mut("messages") {
            for event in events.iter_mut() {
                *event = without_ts(event.take());
            }
        }
    }
    value
}

impl Room {
    /// `request` from `from`; the payloads it recorded.
    fn exchange(&mut self, from: ConnId, request: Value) -> Vec<Value> {
        let recorded = self.handle(from, &text(request.to_string()));
        payloads(&recorded)
    }

    /// The sender publishes `content` on `channel`; the delivered `message`.
    fn publish(&mut self, channel: &str, content: &str) -> Value {
        let request = json!({"type": "publish", "channel": channel, "content": content});
        let out = self.exchange(sender(), request);
        assert_eq!(out[1]["type"], "published", "{out:?}");
        out[0].clone()
    }

    /// The event the sender's `publish` (or `chat`) delivers, as stamped.
    fn event(&self, channel: Option<&str>, content: &str, offset: u64, epoch: &str) -> Value {
        let id = self.chat.public_id(sender());
        let mut event = json!({"type": "message", "from": id, "id": id, "content": content,
                               "offset": offset, "epoch": epoch});
        match channel {
            Some(channel) => event["channel"] = channel.into(),
            None => event["type"] = "chat".into(),
        }
        event
    }

    /// A new connection subscribes to `channel` with `since`; everything it got.
    fn resubscribe(&mut self, channel: &str, since: Value) -> Vec<Value> {
        let id = ConnId::new(9, 9);
        self.leave(id);
        let mut ctx = Ctx::new(&mut self.commands, self.now);
        self.chat.join(&mut ctx, id, None);
        self.commands.clear();
        let request = json!({"type": "subscribe", "channel": channel, "since": since});
        self.exchange(id, request)
    }
}

#[test]
fn deliveries_carry_offsets_and_the_epoch() {
    let mut room = room(100, 1 << 20);
    let first = room.publish("news", "a");
    let epoch = first["epoch"].as_str().expect("an epoch").to_owned();
    assert_eq!(first, room.event(Some("news"), "a", 1, &epoch));
    assert_eq!(
        room.publish("news", "b"),
        room.event(Some("news"), "b", 2, &epoch)
    );
    // Each channel, and the chat, counts on its own, in an epoch of its own.
    let three = room.publish("three", "c");
    assert_eq!(three["offset"], 1);
    assert_ne!(three["epoch"], epoch.as_str());
    let chat = room.exchange(sender(), json!({"type": "chat", "content": "d"}));
    let chat_epoch = chat[0]["epoch"].as_str().expect("an epoch").to_owned();
    assert_eq!(chat, [room.event(None, "d", 1, &chat_epoch)]);
    // `subscribed` says where the channel stands.
    let subscribed = room.exchange(sender(), json!({"type": "subscribe", "channel": "news"}));
    assert_eq!(
        subscribed,
        [json!({"type": "subscribed", "channel": "news", "offset": 2, "epoch": epoch})]
    );
}

/// One `since` row: after `published` events on `news` (kept: 3), a client resubscribes
/// from `since`: it must get the events of these offsets, then `subscribed` with
/// `recovered`.
struct SinceRow {
    name: &'static str,
    published: u64,
    since: u64,
    same_epoch: bool,
    replayed: &'static [u64],
    recovered: bool,
}

#[test]
fn since_replays_exactly_what_was_missed() {
    let rows = [
        SinceRow {
            name: "missed two",
            published: 3,
            since: 1,
            same_epoch: true,
            replayed: &[2, 3],
            recovered: true,
        },
        SinceRow {
            name: "missed none",
            published: 3,
            since: 3,
            same_epoch: true,
            replayed: &[],
            recovered: true,
        },
        SinceRow {
            name: "saw nothing yet",
            published: 3,
            since: 0,
            same_epoch: true,
            replayed: &[1, 2, 3],
            recovered: true,
        },
        SinceRow {
            name: "the oldest missed one is the oldest held",
            published: 5,
            since: 2,
            same_epoch: true,
            replayed: &[3, 4, 5],
            recovered: true,
        },
        SinceRow {
            name: "history too short: what is held, not recovered",
            published: 5,
            since: 1,
            same_epoch: true,
            replayed: &[3, 4, 5],
            recovered: false,
        },
        SinceRow {
            name: "another epoch: nothing",
            published: 3,
            since: 1,
            same_epoch: false,
            replayed: &[],
            recovered: false,
        },
        SinceRow {
            name: "an offset never given out",
            published: 3,
            since: 9,
            same_epoch: true,
            replayed: &[],
            recovered: false,
        },
    ];
    for row in rows {
        let mut room = room(3, 1 << 20);
        let mut epoch = String::new();
        for n in 1..=row.published {
            epoch = room.publish("news", &format!("m{n}"))["epoch"]
                .as_str()
                .expect("an epoch")
                .to_owned();
        }
        let claimed = if row.same_epoch {
            epoch.clone()
        } else {
            format!("{epoch}x")
        };
        let got = room.resubscribe("news", json!({"offset": row.since, "epoch": claimed}));
        let mut want: Vec<Value> = row
            .replayed
            .iter()
            .map(|&n| room.event(Some("news"), &format!("m{n}"), n, &epoch))
            .collect();
        want.push(
            json!({"type": "subscribed", "channel": "news", "offset": row.published,
                         "epoch": epoch, "recovered": row.recovered}),
        );
        assert_eq!(got, want, "{}", row.name);
    }
}

#[test]
fn history_requests_answer_the_last_events() {
    let mut room = room(3, 1 << 20);
    for content in ["a", "b", "c", "d"] {
        room.publish("news", content);
    }
    let epoch = room.publish("news", "e")["epoch"]
        .as_str()
        .unwrap()
        .to_owned();
    let ask = |limit: Option<u64>| {
        let mut request = json!({"type": "history", "channel": "news"});
        if let Some(limit) = limit {
            request["limit"] = limit.into();
        }
        request
    };
    let held = |room: &Room, from: u64| -> Vec<Value> {
        (from..=5)
            .map(|n| {
                room.event(
                    Some("news"),
                    ["a", "b", "c", "d", "e"][n as usize - 1],
                    n,
                    &epoch,
                )
            })
            .collect()
    };
    for (limit, from) in [(Some(2), 4), (Some(3), 3), (Some(50), 3), (None, 3)] {
        let want = json!({"type": "history", "channel": "news", "offset": 5, "epoch": epoch,
                          "messages": held(&room, from)});
        assert_eq!(
            room.exchange(observer(), ask(limit)),
            [want],
            "limit {limit:?}"
        );
    }
    // A channel without history: no events, and none is created by asking.
    let empty = room.exchange(observer(), json!({"type": "history", "channel": "quiet"}));
    assert_eq!(
        empty,
        [json!({"type": "history", "channel": "quiet", "messages": []})]
    );
    // The chat's own history: no channel.
    room.exchange(sender(), json!({"type": "chat", "content": "hi"}));
    let chat = room.exchange(observer(), json!({"type": "history", "limit": 1}));
    let chat_epoch = chat[0]["epoch"].as_str().unwrap().to_owned();
    let want = json!({"type": "history", "offset": 1, "epoch": chat_epoch,
                      "messages": [room.event(None, "hi", 1, &chat_epoch)]});
    assert_eq!(chat, [want]);
}

#[test]
fn the_byte_cap_drops_the_oldest_event_of_all() {
    // Events here differ in size only by their channel's name: measure one, cap at two.
    let mut measure = room(100, 1 << 20);
    measure.publish("news", "a");
    let one = measure.chat.counters().history.bytes;
    let mut room = room(100, 2 * one as usize + 5);
    room.publish("news", "a");
    let b = room.publish("three", "b");
    let c = room.publish("news", "c");
    let stats = room.chat.counters().history;
    assert_eq!(
        (stats.messages, stats.evictions, stats.bytes),
        (2, 1, 2 * one + 1)
    );
    let news = room.exchange(observer(), json!({"type": "history", "channel": "news"}));
    assert_eq!(news[0]["messages"], json!([c]));
    let three = room.exchange(observer(), json!({"type": "history", "channel": "three"}));
    assert_eq!(three[0]["messages"], json!([b]));
    // `a` is gone: recovering from before it fails, from after it succeeds.
    let epoch = c["epoch"].clone();
    let lost = room.resubscribe("news", json!({"offset": 0, "epoch": epoch}));
    assert_eq!(lost.last().unwrap()["recovered"], false, "{lost:?}");
    let kept = room.resubscribe("news", json!({"offset": 1, "epoch": epoch}));
    assert_eq!(
        kept,
        [
            c,
            json!({"type": "subscribed", "channel": "news", "offset": 2,
                               "epoch": epoch, "recovered": true})
        ]
    );
}

#[test]
fn idle_history_expires_on_the_virtual_clock() {
    let mut room = room(100, 1 << 20);
    let first = room.publish("news", "a");
    let epoch = first["epoch"].clone();
    room.now += TTL - Duration::from_millis(1);
    room.publish("three", "b");
    let news_expires = room.now + Duration::from_millis(1);
    assert_eq!(room.chat.next_history_expiry(), Some(news_expires));
    room.chat.expire_history(room.now);
    assert_eq!(
        room.chat.counters().history.messages,
        2,
        "not idle long enough yet"
    );
    room.now += Duration::from_millis(1);
    room.chat.expire_history(room.now);
    assert_eq!(
        room.chat.counters().history.messages,
        1,
        "news expired, three not"
    );
    // A client that saw `a` cannot be told it missed nothing: a new epoch starts at 1.
    let got = room.resubscribe("news", json!({"offset": 1, "epoch": epoch}));
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["recovered"], false);
    assert_eq!(got[0]["offset"], 0);
    assert_ne!(got[0]["epoch"], epoch);
    let again = room.publish("news", "c");
    assert_eq!(again["offset"], 1);
    assert_eq!(again["epoch"], got[0]["epoch"]);
}

#[test]
fn channels_subscribed_and_left_without_events_leave_nothing() {
    let mut room = room(100, 1 << 20);
    let created = room.now;
    room.now += Duration::from_secs(1);
    for n in 0..3 {
        let channel = format!("ghost{n}");
        room.exchange(sender(), json!({"type": "subscribe", "channel": channel}));
        room.exchange(sender(), json!({"type": "unsubscribe", "channel": channel}));
    }
    let news_and_three_only = Some(created + TTL);
    assert_eq!(room.chat.next_history_expiry(), news_and_three_only);
    room.leave(observer());
    assert_eq!(room.chat.next_history_expiry(), None);
}
