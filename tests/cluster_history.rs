//! Channel history across nodes (issue 16, PROTOCOL.md "Recovery", README "Delivery
//! guarantees"): with `--redis` a channel's history lives in a Redis Stream and its offsets
//! come from Redis, so a client that comes back on any node, also through nginx, recovers
//! exactly what it missed; a node that lost its Redis link catches up from the stream.
//!
//! Real `redis-server` and `nginx` processes (tests/common/cluster.rs); without them the tests
//! print `SKIPPED: ...` (and fail under `WSLOOP_REQUIRE_EXTERNAL=1`).

mod common;
#[path = "common/cluster.rs"]
mod harness;
#[path = "common/member.rs"]
mod member;
#[path = "common/nginx.rs"]
mod nginx;
#[path = "common/tls.rs"]
mod tls;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use harness::{redis_program, Node, Redis, Resp, PREFIX, WAIT};
use member::Member;
use nginx::{serving_node, Nginx};
use serde_json::{json, Value};
use wsloop::client::Client;

/// The bound on a node's return after Redis comes back (its backoff reaches 5 s, ±20%).
const RECONNECT_WAIT: Duration = Duration::from_secs(25);

/// Publishers that go faster than the default rate limit.
const FAST: [&str; 2] = ["--max-messages-per-second", "1000"];

fn since(event: &Value) -> Value {
    json!({"offset": event["offset"], "epoch": event["epoch"]})
}

fn offsets(events: &[Value]) -> Vec<u64> {
    events
        .iter()
        .map(|e| e["offset"].as_u64().expect("offset"))
        .collect()
}

/// A Redis and one node per name, with `args`; every node's link to Redis up.
fn cluster(names: &[&str], args: &[&str]) -> Option<(Redis, Vec<Node>)> {
    let redis = Redis::start(redis_program()?);
    let nodes: Vec<Node> = names
        .iter()
        .map(|name| Node::clustered(name, &redis, "127.0.0.1:0", args))
        .collect();
    for node in &nodes {
        node.wait_health("ok", WAIT);
    }
    Some((redis, nodes))
}

/// Starts the stopped Redis again and waits until every node is back on it.
fn restart_and_rejoin(redis: &mut Redis, nodes: &[Node]) {
    redis.restart();
    for node in nodes {
        node.wait_health("ok", RECONNECT_WAIT);
    }
}

fn series(node: &Node, name: &str) -> u64 {
    harness::sample(&harness::metrics(node.addr), name)
}

#[test]
fn a_subscriber_back_on_another_node_gets_exactly_what_it_missed_then_live_events() {
    let Some((_redis, nodes)) = cluster(&["a", "b"], &["--history-size", "100"]) else {
        return;
    };
    let mut alice = Member::join(&nodes[0], WAIT);
    let mut carol = Member::join(&nodes[1], WAIT);
    let mut bob = Member::join(&nodes[1], WAIT);
    let (replayed, subscribed) = alice.subscribe("news", None);
    assert!(replayed.is_empty());
    let epoch = subscribed["epoch"].as_str().expect("an epoch").to_owned();
    assert_eq!(
        subscribed,
        json!({"type": "subscribed", "channel": "news", "offset": 0, "epoch": epoch})
    );
    let (_, at_carol) = carol.subscribe("news", None);
    assert_eq!(at_carol, subscribed, "both nodes see one position");
    assert!(bob.publish("news", "m1"));
    let m1 = alice.recv();
    assert_eq!(
        m1,
        carol.recv(),
        "every node delivers the same event and offset"
    );
    assert_eq!((&m1["content"], &m1["offset"]), (&json!("m1"), &json!(1)));
    assert_eq!(m1["epoch"], epoch.as_str());
    drop(alice);

    let n = 5;
    for i in 2..=n + 1 {
        assert!(bob.publish("news", &format!("m{i}")));
    }
    let missed: Vec<Value> = (0..n).map(|_| carol.recv()).collect();
    assert_eq!(offsets(&missed), [2, 3, 4, 5, 6]);

    let mut alice = Member::join(&nodes[1], WAIT);
    let (replayed, subscribed) = alice.subscribe("news", Some(since(&m1)));
    assert_eq!(replayed, missed, "exactly the missed events, as delivered");
    assert_eq!(
        subscribed,
        json!({"type": "subscribed", "channel": "news", "offset": 6, "epoch": epoch,
               "recovered": true})
    );
    assert!(bob.publish("news", "live"));
    let live = alice.recv();
    assert_eq!(
        (&live["content"], &live["offset"]),
        (&json!("live"), &json!(7))
    );
    assert_eq!(live, carol.recv());
    assert_eq!(alice.barrier(), [] as [Value; 0], "nothing twice");

    // `history` on the node where it was never delivered reads the same stream.
    let mut dave = Member::join(&nodes[0], WAIT);
    dave.send(json!({"type": "history", "channel": "news", "limit": 3}));
    let mut last = missed[3..].to_vec();
    last.push(live);
    assert_eq!(
        dave.recv(),
        json!({"type": "history", "channel": "news", "messages": last, "offset": 7,
               "epoch": epoch})
    );
    assert_eq!(series(&nodes[1], "wsloop_history_replayed_total"), 5);
}

#[test]
fn through_nginx_a_reconnection_to_the_other_node_recovers_exactly() {
    let Some(nginx_program) = harness::nginx_program() else {
        return;
    };
    let Some((_redis, nodes)) = cluster(&["a", "b"], &["--trust-proxy", "--log-level", "debug"])
    else {
        return;
    };
    let nodes: [Node; 2] = nodes.try_into().unwrap_or_else(|_| panic!("two nodes"));
    let pki = tls::TestPki::new("nginx-history");
    let nginx = Nginx::start(
        &nginx_program,
        [nodes[0].addr, nodes[1].addr],
        &pki.localhost(),
    );
    let url = format!("ws://{}/ws", nginx.addr);
    // nginx hashes the client address: find one address it sends to each node.
    let mut by_node: [Option<String>; 2] = [None, None];
    for last in 2..60 {
        let source = format!("127.0.0.{last}");
        let socket = common::connect_from(&source, nginx.addr);
        let member = Member::welcome(
            Client::handshake_on(socket, &url, &member::options(WAIT)).expect("ws"),
            WAIT,
        );
        let node = serving_node(&nodes, &member.id, &source);
        by_node[node].get_or_insert(source);
        if by_node.iter().all(Option::is_some) {
            break;
        }
    }
    let [Some(first), Some(second)] = by_node else {
        panic!("nginx sent 58 addresses to one node: {by_node:?}");
    };
    let through = |source: &str| {
        let socket = common::connect_from(source, nginx.addr);
        Member::welcome(
            Client::handshake_on(socket, &url, &member::options(WAIT)).expect("ws"),
            WAIT,
        )
    };
    let mut reader = through(&first);
    let mut writer = Member::join(&nodes[0], WAIT);
    reader.subscribe("news", None);
    assert!(writer.publish("news", "before"));
    let seen = reader.recv();
    drop(reader);
    for i in 0..4 {
        assert!(writer.publish("news", &format!("away {i}")));
    }
    let mut reader = through(&second);
    let (replayed, subscribed) = reader.subscribe("news", Some(since(&seen)));
    let contents: Vec<&Value> = replayed.iter().map(|e| &e["content"]).collect();
    assert_eq!(contents, ["away 0", "away 1", "away 2", "away 3"]);
    assert_eq!(offsets(&replayed), [2, 3, 4, 5]);
    assert_eq!(
        (&subscribed["recovered"], &subscribed["offset"]),
        (&json!(true), &json!(5))
    );
    assert!(writer.publish("news", "live"));
    assert_eq!(reader.recv()["offset"], 6);
    assert_eq!(reader.barrier(), [] as [Value; 0]);
    drop(nginx);
}

#[test]
fn a_redis_restart_without_its_data_starts_a_new_epoch_and_recovers_nothing() {
    let Some((mut redis, nodes)) = cluster(&["a", "b"], &[]) else {
        return;
    };
    let mut alice = Member::join(&nodes[0], WAIT);
    let mut bob = Member::join(&nodes[1], WAIT);
    alice.subscribe("news", None);
    assert!(bob.publish("news", "old"));
    let old = alice.recv();
    redis.kill();
    restart_and_rejoin(&mut redis, &nodes);
    let mut carol = Member::join(&nodes[1], WAIT);
    let (replayed, subscribed) = carol.subscribe("news", Some(since(&old)));
    assert!(replayed.is_empty(), "{replayed:?}");
    let epoch = subscribed["epoch"].as_str().expect("an epoch").to_owned();
    assert_ne!(
        epoch,
        old["epoch"].as_str().expect("an epoch"),
        "a new epoch"
    );
    assert_eq!(
        subscribed,
        json!({"type": "subscribed", "channel": "news", "offset": 0, "epoch": epoch,
               "recovered": false})
    );
    assert!(bob.publish("news", "new"));
    for member in [&mut alice, &mut carol] {
        let new = member.recv();
        assert_eq!(
            (&new["content"], &new["offset"]),
            (&json!("new"), &json!(1))
        );
        assert_eq!(new["epoch"], epoch.as_str());
        assert_eq!(member.barrier(), [] as [Value; 0]);
    }
}

/// A Redis that restarts with its data (as one with RDB or AOF persistence does) keeps the
/// history and the epoch: a subscriber that was away across the restart gets exactly what
/// it missed, published before and after the restart, then live events.
#[test]
fn a_redis_restart_with_its_data_keeps_the_epoch_and_recovers_exactly() {
    let Some((mut redis, nodes)) = cluster(&["a", "b"], &[]) else {
        return;
    };
    let mut alice = Member::join(&nodes[0], WAIT);
    let mut bob = Member::join(&nodes[1], WAIT);
    let mut carol = Member::join(&nodes[0], WAIT);
    alice.subscribe("news", None);
    carol.subscribe("news", None);
    assert!(bob.publish("news", "seen"));
    let seen = alice.recv();
    assert_eq!(carol.recv()["content"], "seen");
    drop(alice);
    assert!(bob.publish("news", "before the restart"));
    // `published` means handed to Redis, not yet appended (PROTOCOL.md): the event is in the
    // stream once Redis has sent it back to a subscriber, and only then can SAVE hold it.
    assert_eq!(carol.recv()["content"], "before the restart");
    assert_eq!(redis.command(&["SAVE"]), Resp::Simple("OK".into()));
    redis.kill();
    restart_and_rejoin(&mut redis, &nodes);
    assert!(bob.publish("news", "after the restart"));

    let mut alice = Member::join(&nodes[1], WAIT);
    let (replayed, subscribed) = alice.subscribe("news", Some(since(&seen)));
    let contents: Vec<&Value> = replayed.iter().map(|e| &e["content"]).collect();
    assert_eq!(
        contents,
        [&json!("before the restart"), &json!("after the restart")]
    );
    assert_eq!(offsets(&replayed), [2, 3]);
    assert!(replayed.iter().all(|e| e["epoch"] == seen["epoch"]));
    assert_eq!(
        subscribed,
        json!({"type": "subscribed", "channel": "news", "offset": 3, "epoch": seen["epoch"],
               "recovered": true})
    );
    assert!(bob.publish("news", "live"));
    let live = alice.recv();
    assert_eq!(
        (&live["content"], &live["offset"]),
        (&json!("live"), &json!(4))
    );
    assert_eq!(alice.barrier(), [] as [Value; 0], "nothing twice");
}

#[test]
fn while_redis_is_down_a_publication_is_refused_and_never_delivered() {
    let Some((mut redis, nodes)) = cluster(&["a", "b"], &[]) else {
        return;
    };
    let mut alice = Member::join(&nodes[0], WAIT);
    let mut bob = Member::join(&nodes[1], WAIT);
    alice.subscribe("news", None);
    redis.kill();
    nodes[1].wait_health("degraded", WAIT);
    let refused = json!({"type": "error", "code": "redis_unavailable",
        "message": "history is kept in Redis, which this server cannot reach now; nothing was published"});
    bob.send(json!({"type": "publish", "channel": "news", "content": "while down"}));
    assert_eq!(bob.recv(), refused);
    bob.send(json!({"type": "chat", "content": "while down"}));
    assert_eq!(bob.recv(), refused);
    restart_and_rejoin(&mut redis, &nodes);
    assert!(bob.publish("news", "after"));
    let after = alice.recv();
    assert_eq!(
        (&after["content"], &after["offset"]),
        (&json!("after"), &json!(1))
    );
    assert_eq!(alice.barrier(), [] as [Value; 0], "nothing from the outage");
}

#[test]
fn a_history_trimmed_past_the_position_is_not_recovered() {
    let Some((_redis, nodes)) = cluster(&["a", "b"], &["--history-size", "3"]) else {
        return;
    };
    let mut alice = Member::join(&nodes[0], WAIT);
    let mut bob = Member::join(&nodes[1], WAIT);
    alice.subscribe("news", None);
    assert!(bob.publish("news", "m1"));
    let m1 = alice.recv();
    drop(alice);
    for i in 2..=6 {
        assert!(bob.publish("news", &format!("m{i}")));
    }
    let mut alice = Member::join(&nodes[1], WAIT);
    let (replayed, subscribed) = alice.subscribe("news", Some(since(&m1)));
    assert_eq!(offsets(&replayed), [4, 5, 6], "what is held is replayed");
    assert_eq!(
        subscribed,
        json!({"type": "subscribed", "channel": "news", "offset": 6, "epoch": m1["epoch"],
               "recovered": false})
    );
}

/// `history` with `since` (how a page recovers the all-clients chat, which has no
/// `subscribe`) reads the stream on any node: what came after the position, `recovered` only
/// when all of it is there.
#[test]
fn history_since_a_position_reads_the_stream_on_another_node() {
    let Some((_redis, nodes)) = cluster(&["a", "b"], &FAST) else {
        return;
    };
    let mut alice = Member::join(&nodes[0], WAIT);
    let mut bob = Member::join(&nodes[1], WAIT);
    alice.send(json!({"type": "chat", "content": "c1"}));
    let first = alice.recv();
    assert_eq!(
        (&first["type"], &first["content"]),
        (&json!("chat"), &json!("c1"))
    );
    assert_eq!(bob.recv()["content"], "c1");
    for i in 2..=4 {
        bob.send(json!({"type": "chat", "content": format!("c{i}")}));
        assert_eq!(bob.recv()["content"], format!("c{i}"));
    }
    // Node a has delivered them too before carol joins there: else c4, still on its way
    // from Redis, could reach her live ahead of the answer to her `history`.
    for i in 2..=4 {
        assert_eq!(alice.recv()["content"], format!("c{i}"));
    }
    let mut carol = Member::join(&nodes[0], WAIT);
    let ask = |limit: Option<u64>| {
        let mut request = json!({"type": "history", "since": since(&first)});
        if let Some(limit) = limit {
            request["limit"] = limit.into();
        }
        request
    };
    carol.send(ask(None));
    let all = carol.recv();
    assert_eq!(all["type"], "history", "{all}");
    let messages = all["messages"].as_array().expect("messages");
    assert_eq!(
        messages
            .iter()
            .map(|m| m["content"].clone())
            .collect::<Vec<_>>(),
        [json!("c2"), json!("c3"), json!("c4")]
    );
    assert_eq!(offsets(messages), [2, 3, 4]);
    assert_eq!(
        (&all["recovered"], &all["offset"], &all["epoch"]),
        (&json!(true), &json!(4), &first["epoch"])
    );
    // A limit that leaves some out: the newest it allows, and not recovered.
    carol.send(ask(Some(1)));
    let cut = carol.recv();
    assert_eq!(offsets(cut["messages"].as_array().expect("messages")), [4]);
    assert_eq!(cut["recovered"], false, "{cut}");
    // A position no server gave out (the largest offset there is) recovers nothing, and the
    // node goes on (it once overflowed adding one to it).
    let beyond = json!({"offset": u64::MAX, "epoch": first["epoch"]});
    carol.send(json!({"type": "history", "since": beyond}));
    let far = carol.recv();
    assert_eq!(
        (&far["recovered"], &far["messages"]),
        (&json!(false), &json!([]))
    );
    let (replayed, subscribed) = carol.subscribe("news", Some(beyond));
    assert!(replayed.is_empty(), "{replayed:?}");
    assert_eq!(subscribed["recovered"], false, "{subscribed}");
    assert_eq!(carol.barrier(), Vec::<Value>::new());
}

/// Cuts every Redis connection of node `a` (its user's) a few times while node `b` publishes:
/// what Pub/Sub could not bring `a` meanwhile, `a` reads from the stream when it is back.
#[test]
fn a_node_whose_redis_link_was_cut_catches_up_exactly_once_in_order() {
    let Some(program) = redis_program() else {
        return;
    };
    let redis = Redis::start(program);
    let acl = ["ACL", "SETUSER", "a", "on", ">pw", "~*", "&*", "+@all"];
    assert_eq!(redis.command(&acl), Resp::Simple("OK".into()));
    let url_a = format!("redis://a:pw@127.0.0.1:{}/0", redis.port);
    let mut args_a = vec![
        "--redis",
        &url_a,
        "--node-id",
        "a",
        "--redis-prefix",
        PREFIX,
    ];
    args_a.extend(FAST);
    let a = Node::start("a", "127.0.0.1:0", &args_a);
    let b = Node::clustered("b", &redis, "127.0.0.1:0", &FAST);
    for node in [&a, &b] {
        node.wait_health("ok", WAIT);
    }
    let mut alice = Member::join(&a, WAIT);
    alice.subscribe("news", None);
    let mut bob = Member::join(&b, WAIT);
    let running = Arc::new(AtomicBool::new(true));
    let cutter = {
        let (running, port) = (Arc::clone(&running), redis.port);
        thread::spawn(move || {
            for _ in 0..3 {
                thread::sleep(Duration::from_millis(400));
                let kill = ["CLIENT", "KILL", "USER", "a"];
                harness::redis_command(port, &kill).expect("CLIENT KILL");
            }
            thread::sleep(Duration::from_millis(400));
            running.store(false, Ordering::Relaxed);
        })
    };
    let mut accepted = Vec::new();
    let mut i = 0;
    while running.load(Ordering::Relaxed) {
        let content = format!("m{i}");
        if bob.publish("news", &content) {
            accepted.push(content);
        }
        i += 1;
        thread::sleep(Duration::from_millis(5));
    }
    cutter.join().expect("cutter");
    let mut got = Vec::new();
    while got.len() < accepted.len() {
        got.push(alice.recv());
    }
    got.extend(alice.barrier());
    let want: Vec<u64> = (1..=accepted.len() as u64).collect();
    assert_eq!(offsets(&got), want, "every offset once, in order");
    let contents: Vec<&str> = got
        .iter()
        .map(|e| e["content"].as_str().expect("content"))
        .collect();
    assert_eq!(contents, accepted);
    assert!(
        series(&a, "wsloop_history_catchup_total") > 0,
        "the cuts left gaps that the stream filled"
    );
    assert_eq!(series(&a, "wsloop_history_lost_total"), 0);
    assert_eq!(
        series(&a, "wsloop_redis_missed_total"),
        0,
        "the stream had them"
    );
}

/// Two nodes publish concurrently while a client keeps reconnecting, to one node then the
/// other, with `since`: across all its connections it sees every offset once, in order.
#[test]
fn concurrent_publishers_and_a_reconnecting_subscriber_see_no_gap_duplicate_or_reorder() {
    let Some((_redis, nodes)) = cluster(&["a", "b"], &["--history-size", "1000", FAST[0], FAST[1]])
    else {
        return;
    };
    // Where the channel starts: the first subscription, before anything is published.
    let (_, start) = Member::join(&nodes[0], WAIT).subscribe("news", None);
    assert_eq!(start["offset"], 0, "{start}");
    let per_publisher = 150;
    let publishers: Vec<_> = nodes
        .iter()
        .map(|node| {
            let mut member = Member::join(node, WAIT);
            thread::spawn(move || {
                for i in 0..per_publisher {
                    assert!(member.publish("news", &format!("{} {i}", member.id)));
                    thread::sleep(Duration::from_millis(2));
                }
            })
        })
        .collect();
    let mut seen: Vec<Value> = Vec::new();
    let total = 2 * per_publisher;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut round = 0;
    while seen.len() < total {
        assert!(Instant::now() < deadline, "only {} of {total}", seen.len());
        let mut member = Member::join(&nodes[round % 2], WAIT);
        let position = since(seen.last().unwrap_or(&start));
        let (replayed, subscribed) = member.subscribe("news", Some(position));
        assert_eq!(subscribed["recovered"], true, "{subscribed}");
        seen.extend(replayed);
        // A few live events, then away again.
        for _ in 0..7 {
            if seen.len() >= total {
                break;
            }
            seen.push(member.recv());
        }
        round += 1;
    }
    for publisher in publishers {
        publisher.join().expect("publisher");
    }
    let want: Vec<u64> = (1..=total as u64).collect();
    assert_eq!(offsets(&seen), want);
    let contents: BTreeSet<&str> = seen
        .iter()
        .map(|e| e["content"].as_str().expect("content"))
        .collect();
    assert_eq!(contents.len(), total, "each publication once");
    assert!(round > 5, "reconnected {round} times");
}
