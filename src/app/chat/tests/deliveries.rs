//! Chat and channel deliveries reach exactly their members.

use super::*;

/// What one request must record, in order.
enum Out {
    /// A broadcast of an event of this type and content from the requester, to exactly
    /// these members (indices into [`Deliveries::members`]).
    Deliver(&'static [usize], &'static str, &'static str),
    /// A reply to the requester, exactly this JSON.
    Reply(Value),
}

/// One exchange of the channel rules: what members do first (`None` as the request: the
/// member leaves), then one request from one member, and everything it must record.
struct DeliveryRow {
    name: &'static str,
    setup: &'static [(usize, Option<&'static str>)],
    from: usize,
    request: &'static str,
    out: Vec<Out>,
}

/// Three members in a chat with the default limits.
struct Deliveries {
    room: Room,
    members: [ConnId; 3],
}

impl Deliveries {
    fn new() -> Deliveries {
        let mut room = Room::new(ChatLimits::default());
        room.leave(sender());
        room.leave(observer());
        let members = [ConnId::new(3, 3), ConnId::new(4, 4), ConnId::new(5, 5)];
        for id in members {
            let mut ctx = Ctx::new(&mut room.commands, room.now);
            room.chat.join(&mut ctx, id, None);
        }
        room.commands.clear();
        Deliveries { room, members }
    }
}

const SUB_NEWS: Option<&str> = Some(r#"{"type":"subscribe","channel":"news"}"#);
const LEAVES: Option<&str> = None;

fn delivery_rows() -> Vec<DeliveryRow> {
    let published = |receivers: u64| {
        Out::Reply(json!({"type": "published", "channel": "news", "receivers": receivers}))
    };
    let publish = r#"{"type":"publish","channel":"news","content":"hi"}"#;
    vec![
        DeliveryRow {
            name: "chat reaches every member, the sender included",
            setup: &[],
            from: 0,
            request: r#"{"type":"chat","content":"hi"}"#,
            out: vec![Out::Deliver(&[0, 1, 2], "chat", "hi")],
        },
        DeliveryRow {
            name: "publish reaches only subscribers, the subscribed publisher first",
            setup: &[
                (0, SUB_NEWS),
                (1, SUB_NEWS),
                (2, Some(r#"{"type":"subscribe","channel":"sports"}"#)),
            ],
            from: 0,
            request: publish,
            out: vec![Out::Deliver(&[0, 1], "message", "hi"), published(2)],
        },
        DeliveryRow {
            name: "a publisher not subscribed gets only published",
            setup: &[(0, SUB_NEWS), (1, SUB_NEWS)],
            from: 2,
            request: publish,
            out: vec![Out::Deliver(&[0, 1], "message", "hi"), published(2)],
        },
        DeliveryRow {
            name: "a channel without subscribers: zero receivers, nothing delivered",
            setup: &[(1, Some(r#"{"type":"subscribe","channel":"other"}"#))],
            from: 0,
            request: publish,
            out: vec![published(0)],
        },
        DeliveryRow {
            name: "unsubscribe answers unsubscribed",
            setup: &[(0, SUB_NEWS)],
            from: 0,
            request: r#"{"type":"unsubscribe","channel":"news"}"#,
            out: vec![Out::Reply(
                json!({"type": "unsubscribed", "channel": "news"}),
            )],
        },
        DeliveryRow {
            name: "unsubscribe stops deliveries",
            setup: &[
                (0, SUB_NEWS),
                (1, SUB_NEWS),
                (0, Some(r#"{"type":"unsubscribe","channel":"news"}"#)),
            ],
            from: 2,
            request: publish,
            out: vec![Out::Deliver(&[1], "message", "hi"), published(1)],
        },
        DeliveryRow {
            name: "subscribing twice is not an error and delivers once",
            setup: &[(0, SUB_NEWS), (0, SUB_NEWS)],
            from: 1,
            request: publish,
            out: vec![Out::Deliver(&[0], "message", "hi"), published(1)],
        },
        DeliveryRow {
            name: "one unsubscribe undoes two subscribes",
            setup: &[
                (0, SUB_NEWS),
                (0, SUB_NEWS),
                (0, Some(r#"{"type":"unsubscribe","channel":"news"}"#)),
            ],
            from: 1,
            request: publish,
            out: vec![published(0)],
        },
        DeliveryRow {
            name: "a member that left has no subscriptions",
            setup: &[(0, SUB_NEWS), (1, SUB_NEWS), (1, LEAVES)],
            from: 2,
            request: publish,
            out: vec![Out::Deliver(&[0], "message", "hi"), published(1)],
        },
    ]
}

#[test]
fn chat_and_channel_deliveries_reach_exactly_their_members() {
    for row in delivery_rows() {
        let mut d = Deliveries::new();
        for (member, request) in row.setup {
            let id = d.members[*member];
            match request {
                Some(request) => d.room.setup(id, request),
                None => {
                    d.room.leave(id);
                }
            }
        }
        let from = d.members[row.from];
        let recorded = d.room.handle(from, &text(row.request));
        let name = row.name;
        assert_eq!(recorded.len(), row.out.len(), "{name}: {recorded:?}");
        for (got, want) in recorded.iter().zip(&row.out) {
            match (got, want) {
                (
                    Recorded::Broadcast {
                        targets, payload, ..
                    },
                    Out::Deliver(members, kind, content),
                ) => {
                    let mut targets = targets.clone();
                    targets.sort();
                    let want: Vec<ConnId> = members.iter().map(|m| d.members[*m]).collect();
                    assert_eq!(targets, want, "{name}: receivers");
                    let event = json_of(payload);
                    let sender = d.room.chat.public_id(from);
                    assert_eq!(
                        (
                            &event["type"],
                            &event["content"],
                            &event["from"],
                            &event["id"]
                        ),
                        (
                            &json!(kind),
                            &json!(content),
                            &json!(sender),
                            &json!(sender)
                        ),
                        "{name}: {event}"
                    );
                }
                (Recorded::Send { to, payload, .. }, Out::Reply(reply)) => {
                    assert_eq!(*to, from, "{name}: a reply goes to the requester");
                    assert_eq!(&json_of(payload), reply, "{name}");
                }
                (got, _) => panic!("{name}: unexpected {got:?}"),
            }
        }
    }
}
