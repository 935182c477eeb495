//! Presence: who is in a channel (`presence`), and `join` / `leave` with `--presence-events`.

use super::*;
use crate::app::chat::{ClusterOp, PresenceChange, PresenceTable};
use crate::app::identity::Identity;

/// Ann on two connections, Bob on one, in a chat with or without presence events.
struct Users {
    room: Room,
    ann: [ConnId; 2],
    bob: ConnId,
}

impl Users {
    fn new(events: bool, node: Option<&str>) -> Users {
        let chat = match node {
            Some(node) => Chat::clustered(ChatLimits::default(), node.into()),
            None => Chat::new(ChatLimits::default()),
        };
        let mut room = Room {
            chat: chat.announce_presence(events),
            commands: Commands::default(),
            now: Instant::now(),
        };
        let (ann, bob) = ([ConnId::new(1, 1), ConnId::new(2, 2)], ConnId::new(3, 3));
        for (id, user, name) in [
            (ann[0], "u-ann", "Ann"),
            (ann[1], "u-ann", "Ann"),
            (bob, "u-bob", "Bob"),
        ] {
            let mut ctx = Ctx::new(&mut room.commands, room.now);
            room.chat
                .join(&mut ctx, id, Some(Identity::named(user, name)));
        }
        room.commands.clear();
        Users { room, ann, bob }
    }

    /// `id` asks who is in `channel`: the one reply.
    fn ask(&mut self, id: ConnId, channel: &str) -> Value {
        let request = json!({"type": "presence", "channel": channel}).to_string();
        let recorded = self.room.handle(id, &text(request));
        match recorded.as_slice() {
            [Recorded::Send { to, payload, .. }] if *to == id => json_of(payload),
            other => panic!("one reply expected: {other:?}"),
        }
    }
}

const SUB: &str = r#"{"type":"subscribe","channel":"news"}"#;
const UNSUB: &str = r#"{"type":"unsubscribe","channel":"news"}"#;

fn users(list: &[(&str, &str)]) -> Value {
    let list: Vec<Value> = list
        .iter()
        .map(|(user, name)| json!({"user": user, "name": name}))
        .collect();
    json!({"type": "presence", "channel": "news", "users": list})
}

#[test]
fn presence_lists_each_subscribed_user_once_with_its_name() {
    let mut u = Users::new(false, None);
    assert_eq!(u.ask(u.bob, "news"), users(&[]), "nobody yet");
    u.room.setup(u.ann[0], SUB);
    u.room.setup(u.ann[1], SUB);
    assert_eq!(
        u.ask(u.bob, "news"),
        users(&[("u-ann", "Ann")]),
        "two connections, one user"
    );
    u.room.setup(u.bob, SUB);
    let both = users(&[("u-ann", "Ann"), ("u-bob", "Bob")]);
    assert_eq!(u.ask(u.bob, "news"), both);
    u.room.setup(u.ann[0], UNSUB);
    assert_eq!(
        u.ask(u.bob, "news"),
        both,
        "Ann's other connection is still in"
    );
    u.room.leave(u.ann[1]);
    assert_eq!(
        u.ask(u.bob, "news"),
        users(&[("u-bob", "Bob")]),
        "Ann's last one left"
    );
}

#[test]
fn presence_merges_the_other_nodes_users() {
    let mut u = Users::new(false, Some("a"));
    u.room.setup(u.bob, SUB);
    let mut remote = PresenceTable::new();
    remote
        .entry("news".into())
        .or_default()
        .insert("u-cid".into(), "Cid".into());
    remote
        .entry("news".into())
        .or_default()
        .insert("u-bob".into(), "Bob".into());
    remote
        .entry("other".into())
        .or_default()
        .insert("u-dee".into(), "Dee".into());
    u.room.chat.set_remote_presence(remote);
    assert_eq!(
        u.ask(u.ann[0], "news"),
        users(&[("u-bob", "Bob"), ("u-cid", "Cid")])
    );
    u.room.chat.set_remote_presence(PresenceTable::new());
    assert_eq!(
        u.ask(u.ann[0], "news"),
        users(&[("u-bob", "Bob")]),
        "the other node died"
    );
}

#[test]
fn presence_of_a_bad_channel_is_an_error() {
    let mut u = Users::new(false, None);
    let reply = u.ask(u.bob, "");
    assert_eq!(reply["code"], "invalid_channel", "{reply}");
    let recorded = u.room.handle(u.bob, &text(r#"{"type":"presence"}"#));
    let [Recorded::Send { payload, .. }] = recorded.as_slice() else {
        panic!("{recorded:?}");
    };
    assert_eq!(json_of(payload)["code"], "missing_field");
}

/// Every broadcast recorded: its targets and its event without `ts`.
fn broadcasts(recorded: &[Recorded]) -> Vec<(Vec<ConnId>, Value)> {
    recorded
        .iter()
        .filter_map(|r| match r {
            Recorded::Broadcast {
                targets, payload, ..
            } => {
                let mut event = json_of(payload);
                event.as_object_mut().map(|o| o.remove("ts"));
                let mut targets = targets.clone();
                targets.sort();
                Some((targets, event))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn presence_events_announce_joins_and_leaves_to_the_channel() {
    let mut u = Users::new(true, None);
    let (ann, bob) = (u.ann[0], u.bob);
    let event = |kind: &str, id: ConnId, user: &str, name: &str, chat: &Chat| {
        json!({"type": kind, "channel": "news", "user": user, "name": name,
               "id": chat.public_id(id)})
    };
    let subscribed = u.room.handle(ann, &text(SUB));
    let join_ann = event("join", ann, "u-ann", "Ann", &u.room.chat);
    assert_eq!(broadcasts(&subscribed), vec![(vec![ann], join_ann)]);
    let Recorded::Send { payload, .. } = &subscribed[0] else {
        panic!("`subscribed` first: {subscribed:?}");
    };
    assert_eq!(json_of(payload)["type"], "subscribed");

    let joined = u.room.handle(bob, &text(SUB));
    let join_bob = event("join", bob, "u-bob", "Bob", &u.room.chat);
    assert_eq!(broadcasts(&joined), vec![(vec![ann, bob], join_bob)]);
    assert!(
        broadcasts(&u.room.handle(bob, &text(SUB))).is_empty(),
        "already in: no join"
    );

    let left = u.room.handle(bob, &text(UNSUB));
    let leave_bob = event("leave", bob, "u-bob", "Bob", &u.room.chat);
    assert_eq!(broadcasts(&left), vec![(vec![ann], leave_bob)]);

    u.room.setup(bob, SUB);
    let leave_ann = event("leave", ann, "u-ann", "Ann", &u.room.chat);
    assert_eq!(
        broadcasts(&u.room.leave(ann)),
        vec![(vec![bob], leave_ann)],
        "disconnect"
    );
}

#[test]
fn without_presence_events_nothing_is_announced() {
    let mut u = Users::new(false, None);
    u.room.setup(u.ann[0], SUB);
    assert!(broadcasts(&u.room.handle(u.bob, &text(SUB))).is_empty());
    assert!(broadcasts(&u.room.leave(u.ann[0])).is_empty());
}

#[test]
fn a_cluster_node_records_presence_changes_for_redis() {
    let mut u = Users::new(false, Some("a"));
    u.room.setup(u.ann[0], SUB);
    u.room.setup(u.ann[1], SUB);
    u.room.leave(u.ann[0]);
    let presence: Vec<ClusterOp> = u
        .room
        .chat
        .take_cluster_ops()
        .into_iter()
        .filter(|op| matches!(op, ClusterOp::Presence(_)))
        .collect();
    let joined = ClusterOp::Presence(PresenceChange::Joined {
        channel: "news".into(),
        user: "u-ann".into(),
        name: "Ann".into(),
    });
    let left = ClusterOp::Presence(PresenceChange::Left {
        channel: "news".into(),
        user: "u-ann".into(),
    });
    assert_eq!(
        presence,
        vec![joined.clone(), joined, left],
        "one per connection"
    );
}
