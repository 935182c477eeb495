//! History in Redis, the chat's side without Redis: what a clustered chat records, how events
//! that come back with their offset are delivered, and how a recovering connection's replay,
//! its `subscribed` and the live events that came meanwhile are put in order.

use super::*;
use crate::app::chat::ClusterOp;
use crate::app::history::shared::{ReadAnswer, ReadQuery, Recorded as Event};
use crate::app::history::Position;
use crate::app::topics::Topic;

fn news() -> Topic {
    Topic::Channel("news".into())
}

/// An event of news as it comes back from Redis.
fn event(offset: u64) -> Event {
    Event {
        offset,
        epoch: "e1".into(),
        event: json!({"type": "message", "channel": "news", "content": format!("m{offset}")})
            .to_string(),
    }
}

/// The event as a client gets it.
fn delivered(offset: u64) -> Value {
    json!({"type": "message", "channel": "news", "content": format!("m{offset}"),
           "offset": offset, "epoch": "e1"})
}

/// A node with history in Redis, its Redis link up; the observer's subscriptions answered
/// (news stands at 0 in epoch e1).
fn node() -> Room {
    let chat = Chat::clustered(limits(), "n1".into()).with_shared_history(10);
    let mut room = Room::with_chat(chat);
    let mut ctx = Ctx::new(&mut room.commands, room.now);
    room.chat.set_subscriber_up(&mut ctx, true);
    for op in room.chat.take_cluster_ops() {
        if let ClusterOp::Read { id, .. } = op {
            let tip = Position {
                offset: 0,
                epoch: "e1".into(),
            };
            let answer = ReadAnswer {
                tip,
                events: Vec::new(),
            };
            room.chat.on_read(&mut ctx, id, Ok(answer));
        }
    }
    room.commands.clear();
    room
}

impl Room {
    fn recorded_from(&mut self, deliver: impl FnOnce(&mut Chat, &mut Ctx<'_>)) -> Vec<Recorded> {
        let mut ctx = Ctx::new(&mut self.commands, self.now);
        deliver(&mut self.chat, &mut ctx);
        let recorded = self.commands.recorded();
        self.commands.clear();
        recorded
    }
}

#[test]
fn a_publication_is_recorded_not_delivered_and_comes_back_to_every_subscriber() {
    let mut room = node();
    let recorded = room.handle(
        sender(),
        &text(r#"{"type":"publish","channel":"news","content":"hi"}"#),
    );
    assert_eq!(
        sent_to(&recorded, sender()),
        [json!({"type": "published", "channel": "news", "receivers": 1})]
    );
    assert!(
        sent_to(&recorded, observer()).is_empty(),
        "not delivered before Redis has it"
    );
    let ops = room.chat.take_cluster_ops();
    let [ClusterOp::Record(topic, text)] = &ops[..] else {
        panic!("{ops:?}");
    };
    assert_eq!(topic, &news());
    let fields = json_of(text.as_bytes());
    assert_eq!(
        (&fields["content"], fields.get("offset")),
        (&json!("hi"), None)
    );
    let recorded = room.recorded_from(|chat, ctx| chat.on_recorded(ctx, &news(), event(1)));
    assert_eq!(sent_to(&recorded, observer()), [delivered(1)]);
    let again = room.recorded_from(|chat, ctx| chat.on_recorded(ctx, &news(), event(1)));
    assert!(again.is_empty(), "once");
}

#[test]
fn a_recovery_sends_the_replay_then_subscribed_then_what_waited() {
    let mut room = node();
    room.recorded_from(|chat, ctx| chat.on_recorded(ctx, &news(), event(1)));
    let request = r#"{"type":"subscribe","channel":"news","since":{"offset":1,"epoch":"e1"}}"#;
    let recorded = room.handle(sender(), &text(request));
    assert!(
        sent_to(&recorded, sender()).is_empty(),
        "nothing before the replay is read"
    );
    let ops = room.chat.take_cluster_ops();
    let read = ops.iter().find_map(|op| match op {
        ClusterOp::Read { id, topic, query } => Some((*id, topic.clone(), query.clone())),
        _ => None,
    });
    let (id, topic, query) = read.expect("a read");
    assert_eq!(topic, news());
    let want = ReadQuery::After {
        from: 2,
        epoch: "e1".into(),
        count: 10,
        whole_on_new_epoch: false,
    };
    assert_eq!(query, want);
    // Live events while the read is out: 2 and 3 (the read will have 2), held back.
    let mut live = room.recorded_from(|chat, ctx| chat.on_recorded(ctx, &news(), event(2)));
    live.extend(room.recorded_from(|chat, ctx| chat.on_recorded(ctx, &news(), event(3))));
    assert!(sent_to(&live, sender()).is_empty());
    assert_eq!(sent_to(&live, observer()), [delivered(2), delivered(3)]);
    let answer = ReadAnswer {
        tip: Position {
            offset: 2,
            epoch: "e1".into(),
        },
        events: vec![(2, event(2).event)],
    };
    let recorded = room.recorded_from(|chat, ctx| chat.on_read(ctx, id, Ok(answer)));
    assert_eq!(
        sent_to(&recorded, sender()),
        [
            delivered(2),
            json!({"type": "subscribed", "channel": "news", "offset": 2, "epoch": "e1",
                   "recovered": true}),
            delivered(3),
        ]
    );
    let recorded = room.recorded_from(|chat, ctx| chat.on_recorded(ctx, &news(), event(4)));
    assert_eq!(sent_to(&recorded, sender()), [delivered(4)], "then live");
}

#[test]
fn a_reconnection_reads_what_was_missed_and_a_failed_read_answers_without_a_position() {
    let mut room = node();
    room.recorded_from(|chat, ctx| chat.on_recorded(ctx, &news(), event(1)));
    room.recorded_from(|chat, ctx| chat.set_subscriber_up(ctx, false));
    room.recorded_from(|chat, ctx| chat.set_subscriber_up(ctx, true));
    let ops = room.chat.take_cluster_ops();
    let [ClusterOp::Read { id, .. }] = ops[..] else {
        panic!("one catch-up read: {ops:?}");
    };
    let answer = ReadAnswer {
        tip: Position {
            offset: 3,
            epoch: "e1".into(),
        },
        events: vec![(2, event(2).event), (3, event(3).event)],
    };
    let recorded = room.recorded_from(|chat, ctx| chat.on_read(ctx, id, Ok(answer)));
    assert_eq!(sent_to(&recorded, observer()), [delivered(2), delivered(3)]);
    assert_eq!(room.chat.counters().shared.map(|s| s.caught_up), Some(2));

    room.handle(sender(), &text(r#"{"type":"subscribe","channel":"news"}"#));
    let ops = room.chat.take_cluster_ops();
    let id = ops
        .iter()
        .find_map(|op| match op {
            ClusterOp::Read { id, .. } => Some(*id),
            _ => None,
        })
        .expect("a read");
    let recorded = room.recorded_from(|chat, ctx| chat.on_read(ctx, id, Err("down".into())));
    assert_eq!(
        sent_to(&recorded, sender()),
        [json!({"type": "subscribed", "channel": "news"})]
    );
}

#[test]
fn a_subscriber_waiting_for_the_nodes_redis_subscription_gets_no_live_event_before_its_replay() {
    let mut room = node();
    let request = r#"{"type":"subscribe","channel":"fresh","since":{"offset":0,"epoch":"e1"}}"#;
    room.handle(sender(), &text(request));
    let ops = room.chat.take_cluster_ops();
    assert!(
        ops.contains(&ClusterOp::Subscribe("fresh".into())),
        "{ops:?}"
    );
    assert!(
        !ops.iter().any(|op| matches!(op, ClusterOp::Read { .. })),
        "no read before Redis confirms the subscription: {ops:?}"
    );
    let fresh = Topic::Channel("fresh".into());
    let early = room.recorded_from(|chat, ctx| chat.on_recorded(ctx, &fresh, event(1)));
    assert!(sent_to(&early, sender()).is_empty(), "{early:?}");
    room.recorded_from(|chat, ctx| chat.confirm_subscription(ctx, "fresh"));
    let ops = room.chat.take_cluster_ops();
    let [ClusterOp::Read { id, .. }] = ops[..] else {
        panic!("{ops:?}");
    };
    let answer = ReadAnswer {
        tip: Position {
            offset: 1,
            epoch: "e1".into(),
        },
        events: vec![(1, event(1).event)],
    };
    let recorded = room.recorded_from(|chat, ctx| chat.on_read(ctx, id, Ok(answer)));
    assert_eq!(
        sent_to(&recorded, sender()),
        [
            delivered(1),
            json!({"type": "subscribed", "channel": "fresh", "offset": 1, "epoch": "e1",
                   "recovered": true}),
        ],
        "the event once, from the replay"
    );
}

#[test]
fn a_recovering_subscribers_own_join_comes_after_its_subscribed() {
    let chat = Chat::clustered(limits(), "n1".into())
        .announce_presence(true)
        .with_shared_history(10);
    let mut room = Room::with_chat(chat);
    let recorded = room.handle(sender(), &text(r#"{"type":"subscribe","channel":"fresh"}"#));
    assert!(sent_to(&recorded, sender()).is_empty(), "{recorded:?}");
    let ops = room.chat.take_cluster_ops();
    let id = ops
        .iter()
        .find_map(|op| match op {
            ClusterOp::Read { id, topic, .. } if *topic == Topic::Channel("fresh".into()) => {
                Some(*id)
            }
            _ => None,
        })
        .expect("a read");
    let answer = ReadAnswer {
        tip: Position {
            offset: 0,
            epoch: "e1".into(),
        },
        events: Vec::new(),
    };
    let recorded = room.recorded_from(|chat, ctx| chat.on_read(ctx, id, Ok(answer)));
    let got = sent_to(&recorded, sender());
    let types: Vec<&str> = got
        .iter()
        .map(|v| v["type"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(types, ["subscribed", "join"], "{got:?}");
}
