//! Scale-out and deployment with the real programs: nodes joined through a `redis-server`
//! started by the test, two processes sharing a port with `--reuse-port`, `nginx` running
//! deploy/nginx.conf in front of two nodes, and the ExecStart line of deploy/wsloop.service.
//!
//! The nodes here relay through Redis Pub/Sub only (`--history-size 0`): local delivery at
//! once, at-most-once between nodes across an outage. History in Redis Streams, the default
//! with `--redis`, is tests/cluster_history.rs's.
//!
//! Every test starts its own `redis-server` / `nginx` on free 127.0.0.1 ports, with config,
//! pid and log files in a temporary directory (tests/common/cluster.rs); every process it
//! starts is ended by a guard, also when the test panics. Without `redis-server` or `nginx` the tests that need them print
//! `SKIPPED: ...` (they fail under `WSLOOP_REQUIRE_EXTERNAL=1`, as in .ci/run).
//!
//! "Exactly once" is checked by counting: after a round of chats and publications, every node
//! sends a fence chat; once a client has received every node's fence it has received everything
//! those nodes published before (Redis delivers one publisher's messages in order, and each node
//! hands them to its clients in order). Then a quiet period and a ping/pong barrier on every
//! client, and each client's messages must be exactly the expected multiset: one of each message
//! meant for it, nothing else.

mod common;
#[path = "common/cluster.rs"]
mod harness;
#[path = "common/nginx.rs"]
mod nginx;
#[path = "common/tls.rs"]
mod tls;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::raw::{is_timeout, opcode, OutFrame, RawClient, ReadError};
use common::{assert_keys, assert_recent_ts};
use harness::*;
use nginx::*;
use serde_json::{json, Value};
use wsloop::client::{Client, ClientError, ClientOptions, Received, TlsOptions};

/// The bound on a node's return after Redis comes back: its reconnection backoff grows
/// 100 ms x2 up to 5 s (±20%), so one more attempt of at most 6 s, plus slack.
const RECONNECT_WAIT: Duration = Duration::from_secs(25);
/// Listening for duplicates after everything expected has arrived.
const QUIET: Duration = Duration::from_millis(300);
/// How far a server timestamp may be from the test's clock.
const TS_SLACK_MS: u64 = 10_000;

/// `topic -> number of subscribed nodes`.
fn topics(entries: &[(&str, i64)]) -> BTreeMap<String, i64> {
    let mut topics: BTreeMap<String, i64> = entries
        .iter()
        .map(|(t, n)| (format!("{PREFIX}{t}"), *n))
        .collect();
    // Every node holds the users topic (the server API's) as it holds the chat's.
    if let Some(nodes) = topics.get(&format!("{PREFIX}chat")).copied() {
        topics.insert(format!("{PREFIX}users"), nodes);
    }
    topics
}

/// The flags of a node that relays through Redis Pub/Sub only: history in Redis Streams
/// (the default with `--redis`) has its own suite, tests/cluster_history.rs.
const RELAY: [&str; 2] = ["--history-size", "0"];

/// A clustered node (`Node::clustered`) that relays through Pub/Sub only ([`RELAY`]).
fn relay_node(name: &str, redis: &Redis, listen: &str, extra: &[&str]) -> Node {
    Node::clustered(name, redis, listen, &[&RELAY[..], extra].concat())
}

// ---------------------------------------------------------------------------------------------
// Chat clients and expected deliveries
// ---------------------------------------------------------------------------------------------

/// A chat client: its connection, the node it is on, its channels (the model), and the
/// messages received and not yet checked.
struct Peer {
    client: Client,
    node: String,
    id: String,
    channels: BTreeSet<String>,
    inbox: Vec<Value>,
    pings: usize,
    next_ts: u64,
}

impl Peer {
    /// Connects, checks the welcome (exactly `type`, `id`, `name` = `id`, a current `ts`).
    fn join(url: &str, headers: &[&str]) -> Peer {
        let options = ClientOptions {
            headers: headers.iter().map(|h| (*h).to_owned()).collect(),
            timeout: Some(WAIT),
            ..ClientOptions::default()
        };
        Peer::join_with(url, &options)
    }

    /// [`Peer::join`] with these options (`wss://` and the CA to trust, say).
    fn join_with(url: &str, options: &ClientOptions) -> Peer {
        let (peer, welcome) = Peer::welcomed(url, options);
        assert_eq!(welcome["name"], peer.id, "name without a token is the id");
        peer
    }

    /// Joins as the user of `token` (a line of `--token-file`): the welcome names `user`.
    fn join_as(url: &str, token: &str, user: &str) -> Peer {
        let options = ClientOptions {
            headers: vec![format!("Authorization: Bearer {token}")],
            timeout: Some(WAIT),
            ..ClientOptions::default()
        };
        let (peer, welcome) = Peer::welcomed(url, &options);
        assert_eq!(
            (&welcome["user"], &welcome["name"]),
            (&json!(user), &json!(user))
        );
        peer
    }

    /// Connects and checks the welcome (exactly `type`, `id`, `user`, `name`, a current `ts`).
    fn welcomed(url: &str, options: &ClientOptions) -> (Peer, Value) {
        let client =
            Client::connect_with(url, options).unwrap_or_else(|e| panic!("connect to {url}: {e}"));
        let mut peer = Peer {
            client,
            node: String::new(),
            id: String::new(),
            channels: BTreeSet::new(),
            inbox: Vec::new(),
            pings: 0,
            next_ts: 1_000,
        };
        let welcome = peer.recv();
        assert_keys(&welcome, &["type", "id", "user", "name", "ts"]);
        assert_eq!(welcome["type"], "welcome", "first message: {welcome}");
        assert_recent_ts(&welcome["ts"], TS_SLACK_MS, &welcome);
        let id = welcome["id"].as_str().expect("welcome.id is a string");
        peer.id = id.to_owned();
        // `<node>-<start tag>-<serial>`: the node id may hold dashes itself.
        peer.node = id.rsplitn(3, '-').nth(2).unwrap_or("").to_owned();
        (peer, welcome)
    }

    /// Joins `node` and checks the node-prefixed id: `<node>-<start tag>-<serial>`.
    fn join_node(node: &Node, serial: u32) -> Peer {
        let peer = Peer::join(&node.url(), &[]);
        let tag = peer
            .id
            .strip_prefix(&format!("{}-", node.name))
            .and_then(|rest| rest.strip_suffix(&format!("-{serial}")))
            .unwrap_or_else(|| panic!("welcome id {} of {}", peer.id, node.name));
        assert_eq!(tag.len(), 6, "the start tag of {}", peer.id);
        peer
    }

    fn send(&mut self, value: &Value) {
        let text = value.to_string();
        self.client
            .send_text(&text)
            .unwrap_or_else(|e| panic!("{}: send {text}: {e}", self.id));
    }

    /// The next JSON message before `deadline`, or `None`. Pings (answered by the client)
    /// are counted; a close or an error fails the test.
    fn next(&mut self, deadline: Instant) -> Option<Value> {
        loop {
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            self.client
                .set_timeout(Some(deadline - now))
                .expect("set timeout");
            match self.client.recv() {
                Ok(Received::Text(text)) => {
                    return Some(serde_json::from_str(&text).unwrap_or_else(|e| {
                        panic!("{}: server sent invalid JSON {text:?}: {e}", self.id)
                    }))
                }
                Ok(Received::Ping(_)) => self.pings += 1,
                Ok(Received::Pong(_)) => {}
                Ok(other) => panic!("{}: expected a JSON message, got {other:?}", self.id),
                Err(ClientError::Io(e)) if is_timeout(&e) => return None,
                Err(e) => panic!("{}: connection failed: {e}", self.id),
            }
        }
    }

    /// The next JSON message, within [`WAIT`].
    fn recv(&mut self) -> Value {
        let deadline = Instant::now() + WAIT;
        self.next(deadline)
            .unwrap_or_else(|| panic!("{}: no message within {WAIT:?}", self.id))
    }

    /// A ping/pong round trip. Everything the node sent this client before the pong is kept
    /// in the inbox.
    fn barrier(&mut self) {
        self.next_ts += 1;
        let ts = self.next_ts;
        self.send(&json!({"type": "ping", "ts": ts}));
        let deadline = Instant::now() + WAIT;
        loop {
            let message = self
                .next(deadline)
                .unwrap_or_else(|| panic!("{}: no pong for ping {ts} within {WAIT:?}", self.id));
            if message["type"] == "pong" && message["echo"] == ts {
                assert_keys(&message, &["type", "ts", "echo"]);
                return;
            }
            self.inbox.push(message);
        }
    }

    fn subscribe(&mut self, channel: &str) {
        self.send(&json!({"type": "subscribe", "channel": channel}));
        let mut reply = self.recv();
        without_position(&mut reply);
        assert_eq!(reply, json!({"type": "subscribed", "channel": channel}));
        self.channels.insert(channel.to_owned());
    }

    fn unsubscribe(&mut self, channel: &str) {
        self.send(&json!({"type": "unsubscribe", "channel": channel}));
        let reply = self.recv();
        assert_eq!(reply, json!({"type": "unsubscribed", "channel": channel}));
        self.channels.remove(channel);
    }

    /// Closes with 1000 and waits for the node's close reply.
    fn close(mut self) {
        self.client.close(1000, "bye").expect("send close");
        let deadline = Instant::now() + WAIT;
        loop {
            assert!(Instant::now() < deadline, "{}: no close reply", self.id);
            match self.client.recv() {
                Ok(Received::Close(code, _)) => {
                    assert_eq!(code, Some(1000), "{}: close reply", self.id);
                    return;
                }
                Ok(_) => {}
                Err(e) => panic!("{}: waiting for the close reply: {e}", self.id),
            }
        }
    }
}

/// What a client does in a round.
#[derive(Clone, Debug)]
enum Act {
    Chat {
        from: usize,
        content: String,
    },
    Publish {
        from: usize,
        channel: String,
        content: String,
    },
}

fn chat(from: usize, content: &str) -> Act {
    Act::Chat {
        from,
        content: content.to_owned(),
    }
}

fn publish(from: usize, channel: &str, content: &str) -> Act {
    Act::Publish {
        from,
        channel: channel.to_owned(),
        content: content.to_owned(),
    }
}

/// Whether deliveries cross nodes (Redis up) or stay on the sender's node (Redis down).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reach {
    Cluster,
    OwnNode,
}

/// A received message in comparable form: exact fields checked, `ts` checked and removed.
fn canonical(message: &Value) -> String {
    let mut message = message.clone();
    let keys: &[&str] = match message["type"].as_str() {
        Some("chat") => &["type", "from", "id", "content", "ts"],
        Some("message") => &["type", "channel", "from", "id", "content", "ts"],
        Some("published") => &["type", "channel", "receivers"],
        _ => return message.to_string(),
    };
    assert_keys(&message, keys);
    if let Some(object) = message.as_object_mut() {
        if let Some(ts) = object.remove("ts") {
            assert_recent_ts(&ts, TS_SLACK_MS, Value::Object(object.clone()));
        }
    }
    message.to_string()
}

/// Every client's expected messages (canonical form -> count) for `acts`.
fn expectations(peers: &[Peer], acts: &[Act], reach: Reach) -> Vec<BTreeMap<String, usize>> {
    let mut out = vec![BTreeMap::new(); peers.len()];
    let reaches =
        |sender: &Peer, receiver: &Peer| reach == Reach::Cluster || receiver.node == sender.node;
    for act in acts {
        match act {
            Act::Chat { from, content } => {
                let sender = &peers[*from];
                let event = json!({"type": "chat", "from": sender.id, "id": sender.id,
                                   "content": content})
                .to_string();
                for (i, peer) in peers.iter().enumerate() {
                    if reaches(sender, peer) {
                        *out[i].entry(event.clone()).or_default() += 1;
                    }
                }
            }
            Act::Publish {
                from,
                channel,
                content,
            } => {
                let sender = &peers[*from];
                let event = json!({"type": "message", "channel": channel, "from": sender.id,
                                   "id": sender.id, "content": content})
                .to_string();
                let mut local = 0;
                for (i, peer) in peers.iter().enumerate() {
                    if !peer.channels.contains(channel) {
                        continue;
                    }
                    if peer.node == sender.node {
                        local += 1;
                    }
                    if reaches(sender, peer) {
                        *out[i].entry(event.clone()).or_default() += 1;
                    }
                }
                let published =
                    json!({"type": "published", "channel": channel, "receivers": local});
                *out[*from].entry(published.to_string()).or_default() += 1;
            }
        }
    }
    out
}

fn request(act: &Act) -> (usize, Value) {
    match act {
        Act::Chat { from, content } => (*from, json!({"type": "chat", "content": content})),
        Act::Publish {
            from,
            channel,
            content,
        } => (
            *from,
            json!({"type": "publish", "channel": channel, "content": content}),
        ),
    }
}

/// Runs `acts` and checks that every client received exactly its expected messages: each
/// message meant for it once, nothing else. With `Reach::Cluster` every node then sends a fence
/// chat and every client waits for all fences (so everything published before has arrived);
/// then a quiet period and a barrier on every client.
fn round(label: &str, peers: &mut [Peer], acts: &[Act], reach: Reach) {
    let mut acts = acts.to_vec();
    let mut senders = BTreeSet::new();
    for act in &acts {
        let (from, message) = request(act);
        peers[from].send(&message);
        senders.insert(from);
    }
    // Each sender's requests have been handled (and handed to the bridge) before its pong.
    for &from in &senders {
        peers[from].barrier();
    }
    let mut fences = BTreeSet::new();
    if reach == Reach::Cluster {
        // The first client of each node sends its node's fence.
        let mut nodes = BTreeSet::new();
        let firsts: Vec<usize> = (0..peers.len())
            .filter(|&i| nodes.insert(peers[i].node.clone()))
            .collect();
        for i in firsts {
            let content = format!("fence {label} {}", peers[i].node);
            peers[i].send(&json!({"type": "chat", "content": content}));
            acts.push(chat(i, &content));
            fences.insert(content);
        }
        for peer in peers.iter_mut() {
            let deadline = Instant::now() + WAIT;
            loop {
                let seen: BTreeSet<String> = peer
                    .inbox
                    .iter()
                    .filter(|m| m["type"] == "chat")
                    .filter_map(|m| m["content"].as_str())
                    .filter(|c| fences.contains(*c))
                    .map(str::to_owned)
                    .collect();
                if seen.len() == fences.len() {
                    break;
                }
                let message = peer.next(deadline).unwrap_or_else(|| {
                    panic!(
                        "{label}: {} got fences {seen:?} of {fences:?} within {WAIT:?}; \
                         inbox: {:?}",
                        peer.id, peer.inbox
                    )
                });
                peer.inbox.push(message);
            }
        }
    }
    thread::sleep(QUIET);
    for peer in peers.iter_mut() {
        peer.barrier();
    }
    let expected = expectations(peers, &acts, reach);
    let mut problems = Vec::new();
    for (peer, want) in peers.iter_mut().zip(&expected) {
        let mut got: BTreeMap<String, usize> = BTreeMap::new();
        for message in peer.inbox.drain(..) {
            *got.entry(canonical(&message)).or_default() += 1;
        }
        // Contents are unique per round, so every chat and message is expected once; only
        // `published` replies (same channel, same receivers) may repeat.
        assert!(
            want.iter()
                .all(|(k, &n)| n == 1 || k.contains(r#""type":"published""#)),
            "{label}: the round repeats a message content: {want:?}"
        );
        if &got != want {
            let keys: BTreeSet<&String> = got.keys().chain(want.keys()).collect();
            for key in keys {
                let (g, w) = (
                    got.get(key).copied().unwrap_or(0),
                    want.get(key).copied().unwrap_or(0),
                );
                if g != w {
                    problems.push(format!("{} received {g}x (expected {w}x) {key}", peer.id));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{label}: deliveries are not exactly once to the intended clients:\n  {}",
        problems.join("\n  ")
    );
}

/// Subscribers per Redis topic that the nodes should have: the chat topic on every node, a
/// channel's topic on every node with a local subscriber.
fn wanted_topics(node_count: i64, peers: &[Peer]) -> BTreeMap<String, i64> {
    let mut nodes_per_channel: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for peer in peers {
        for channel in &peer.channels {
            nodes_per_channel
                .entry(channel)
                .or_default()
                .insert(&peer.node);
        }
    }
    let mut want = topics(&[("chat", node_count)]);
    for (channel, nodes) in nodes_per_channel {
        want.insert(format!("{PREFIX}channel:{channel}"), nodes.len() as i64);
    }
    want
}

// ---------------------------------------------------------------------------------------------
// Redis: three nodes
// ---------------------------------------------------------------------------------------------

/// Starts Redis and nodes `names`, each with `per_node` clients (ids `<node>-1`, ...), and
/// waits until every node has subscribed the chat topic.
fn cluster(names: &[&str], per_node: u32) -> Option<(Redis, Vec<Node>, Vec<Peer>)> {
    let redis = Redis::start(redis_program()?);
    let nodes: Vec<Node> = names
        .iter()
        .map(|n| relay_node(n, &redis, "127.0.0.1:0", &[]))
        .collect();
    redis.wait_topics(&topics(&[("chat", names.len() as i64)]), WAIT);
    let mut peers = Vec::new();
    for node in &nodes {
        for serial in 1..=per_node {
            peers.push(Peer::join_node(node, serial));
        }
    }
    Some((redis, nodes, peers))
}

/// The peers of the three-node tests: a-1 a-2 b-1 b-2 c-1 c-2.
const A1: usize = 0;
const A2: usize = 1;
const B1: usize = 2;
const B2: usize = 3;
const C1: usize = 4;
const C2: usize = 5;

/// news: a-1, b-1, c-2; sport: b-1, c-1; a-2 and b-2 in no channel.
fn subscribe_three_nodes(redis: &Redis, peers: &mut [Peer]) {
    peers[A1].subscribe("news");
    peers[B1].subscribe("news");
    peers[B1].subscribe("sport");
    peers[C1].subscribe("sport");
    peers[C2].subscribe("news");
    redis.wait_topics(
        &topics(&[("chat", 3), ("channel:news", 3), ("channel:sport", 2)]),
        WAIT,
    );
}

/// A chat and a publication from every client, on both channels, from subscribers and
/// non-subscribers.
fn busy_round(tag: &str) -> Vec<Act> {
    vec![
        chat(A1, &format!("{tag}: chat from a-1")),
        chat(B2, &format!("{tag}: chat from b-2")),
        chat(C1, &format!("{tag}: chat from c-1")),
        publish(A1, "news", &format!("{tag}: news from a-1 (subscribed)")),
        publish(
            A2,
            "news",
            &format!("{tag}: news from a-2 (not subscribed)"),
        ),
        publish(B1, "sport", &format!("{tag}: sport from b-1")),
        publish(B2, "news", &format!("{tag}: news from b-2")),
        publish(C1, "news", &format!("{tag}: news from c-1 (not in news)")),
        publish(
            C2,
            "sport",
            &format!("{tag}: sport from c-2 (not in sport)"),
        ),
        chat(A2, &format!("{tag}: chat from a-2")),
        chat(B1, &format!("{tag}: chat from b-1")),
        chat(C2, &format!("{tag}: chat from c-2")),
        publish(A2, "empty", &format!("{tag}: to a channel nobody is in")),
    ]
}

#[test]
fn redis_three_nodes_deliver_each_message_exactly_once() {
    let Some((redis, _nodes, mut peers)) = cluster(&["a", "b", "c"], 2) else {
        return;
    };
    subscribe_three_nodes(&redis, &mut peers);
    round("first", &mut peers, &busy_round("first"), Reach::Cluster);
    round("second", &mut peers, &busy_round("second"), Reach::Cluster);
    // One message in each direction, alone, so that a loss cannot hide among many.
    for (i, from) in [A1, B1, C1].into_iter().enumerate() {
        let acts = [chat(from, &format!("solo {i}"))];
        round(&format!("solo {i}"), &mut peers, &acts, Reach::Cluster);
    }
}

#[test]
fn redis_publications_larger_than_any_event_are_not_relayed() {
    let Some((redis, _nodes, mut peers)) = cluster(&["a"], 1) else {
        return;
    };
    // Somebody else on the topics: a 200 kB publication, more than any event a node makes
    // with the default 16 KiB content limit (escaped at most six times over), then a small one.
    let event = |content: &str| {
        format!(
            r#"other{}{{"type":"chat","from":"x","id":"other-1","content":"{content}","ts":1}}"#,
            '\n'
        )
    };
    let big = event(&"x".repeat(200_000));
    let small = event("small");
    let topic = format!("{PREFIX}chat");
    assert_eq!(redis.command(&["PUBLISH", &topic, &big]), Resp::Int(1));
    assert_eq!(redis.command(&["PUBLISH", &topic, &small]), Resp::Int(1));
    let next = peers[0]
        .next(Instant::now() + WAIT)
        .expect("the small publication arrives");
    let content = next["content"].as_str().unwrap_or_default();
    assert_eq!(
        content.len(),
        5,
        "the big one is dropped: got {} bytes",
        content.len()
    );
    assert_eq!(content, "small");
}

#[test]
fn redis_subscriptions_follow_local_interest() {
    let Some((redis, _nodes, mut peers)) = cluster(&["a", "b"], 2) else {
        return;
    };
    let (a1, a2, b1) = (0, 1, 2);
    assert_eq!(redis.topics(), topics(&[("chat", 2)]));
    // The first local subscriber subscribes the node.
    peers[a1].subscribe("news");
    redis.wait_topics(&topics(&[("chat", 2), ("channel:news", 1)]), WAIT);
    peers[a2].subscribe("news");
    peers[b1].subscribe("news");
    redis.wait_topics(&topics(&[("chat", 2), ("channel:news", 2)]), WAIT);
    // a-1 leaves but a-2 is still in news: node a stays subscribed. Changes reach Redis in
    // order, so once the later "marker" subscription is there, an unsubscribe would be too.
    peers[a1].unsubscribe("news");
    peers[a1].subscribe("marker");
    redis.wait_topics(
        &topics(&[("chat", 2), ("channel:news", 2), ("channel:marker", 1)]),
        WAIT,
    );
    round(
        "a-2 still gets news",
        &mut peers,
        &[publish(b1, "news", "after a-1 left")],
        Reach::Cluster,
    );
    // The last local subscriber goes away by disconnecting: node a unsubscribes news.
    let a2_peer = peers.remove(a2);
    a2_peer.close();
    redis.wait_topics(
        &topics(&[("chat", 2), ("channel:news", 1), ("channel:marker", 1)]),
        WAIT,
    );
    // b-1 (now index 1) leaves news: nobody needs it.
    peers[1].unsubscribe("news");
    peers[0].unsubscribe("marker");
    redis.wait_topics(&topics(&[("chat", 2)]), WAIT);
    round(
        "nobody in news",
        &mut peers,
        &[publish(0, "news", "to nobody"), chat(1, "still chatting")],
        Reach::Cluster,
    );
}

#[test]
fn redis_outage_keeps_local_delivery_and_resumes_without_duplicates() {
    let Some((mut redis, nodes, mut peers)) = cluster(&["a", "b", "c"], 2) else {
        return;
    };
    subscribe_three_nodes(&redis, &mut peers);
    round("before", &mut peers, &busy_round("before"), Reach::Cluster);
    for node in &nodes {
        node.wait_health("ok", WAIT);
        let m = metrics(node.addr);
        assert_eq!(sample(&m, "wsloop_redis_up"), 1, "node {}", node.name);
        assert_eq!(
            sample(&m, "wsloop_redis_publish_failures_total"),
            0,
            "node {}",
            node.name
        );
    }
    let published_before: Vec<u64> = nodes
        .iter()
        .map(|n| sample(&metrics(n.addr), "wsloop_redis_published_total"))
        .collect();

    redis.kill();
    for node in &nodes {
        node.wait_health("degraded", WAIT);
        assert_eq!(sample(&metrics(node.addr), "wsloop_redis_up"), 0);
    }
    // Interest changes while Redis is down: a-2 joins a channel new to node a, c-1 was node
    // c's only sport subscriber. Replies are local and immediate.
    peers[A2].subscribe("late");
    peers[C1].unsubscribe("sport");
    // Local delivery goes on; nothing crosses nodes.
    let outage = busy_round("outage");
    round("outage", &mut peers, &outage, Reach::OwnNode);
    // Every chat and publication made during the outage is counted as not sent to Redis.
    for (n, node) in nodes.iter().enumerate() {
        let made = outage
            .iter()
            .filter(|act| {
                let (from, _) = request(act);
                peers[from].node == node.name
            })
            .count() as u64;
        wait_until(
            &format!("node {} to count {made} publications not sent", node.name),
            WAIT,
            || {
                let m = metrics(node.addr);
                let failures = sample(&m, "wsloop_redis_publish_failures_total");
                let published = sample(&m, "wsloop_redis_published_total");
                if failures == made && published == published_before[n] {
                    Ok(())
                } else {
                    Err(format!("failures {failures}, published {published}"))
                }
            },
        );
        assert_eq!(node.health_status(), "degraded");
    }

    redis.restart();
    for node in &nodes {
        node.wait_health("ok", RECONNECT_WAIT);
        assert_eq!(sample(&metrics(node.addr), "wsloop_redis_up"), 1);
    }
    // Every node re-subscribed what it needs now: news (a, b, c), sport (b only), late (a).
    redis.wait_topics(&wanted_topics(3, &peers), WAIT);
    assert_eq!(
        redis.topics(),
        topics(&[
            ("chat", 3),
            ("channel:news", 3),
            ("channel:sport", 1),
            ("channel:late", 1)
        ])
    );
    // Cross-node delivery is back, exactly once, and nothing from the outage shows up.
    let mut after = busy_round("after");
    after.push(publish(B2, "late", "after: late from b-2"));
    after.push(publish(C1, "sport", "after: sport from c-1 (left sport)"));
    round("after", &mut peers, &after, Reach::Cluster);
    round(
        "after again",
        &mut peers,
        &busy_round("again"),
        Reach::Cluster,
    );
}

#[test]
fn redis_restart_with_nothing_published_meanwhile_loses_nothing_after() {
    // Redis goes away and comes back while nobody chats. Once the nodes report "ok" again,
    // a chat must cross nodes: the publishing connection that died with Redis must not eat
    // the first publication after the restart.
    let Some((mut redis, nodes, mut peers)) = cluster(&["a", "b"], 1) else {
        return;
    };
    round(
        "before",
        &mut peers,
        &[chat(0, "before from a-1"), chat(1, "before from b-1")],
        Reach::Cluster,
    );
    redis.kill();
    for node in &nodes {
        node.wait_health("degraded", WAIT);
    }
    redis.restart();
    for node in &nodes {
        node.wait_health("ok", RECONNECT_WAIT);
    }
    redis.wait_topics(&topics(&[("chat", 2)]), WAIT);
    // One chat from a-1; b-1 must get it.
    let first = json!({"type": "chat", "from": peers[0].id, "id": peers[0].id,
                       "content": "first after the restart"})
    .to_string();
    peers[0].send(&json!({"type": "chat", "content": "first after the restart"}));
    assert_eq!(canonical(&peers[0].recv()), first);
    let deadline = Instant::now() + WAIT;
    match peers[1].next(deadline) {
        Some(message) => assert_eq!(canonical(&message), first),
        None => {
            let m = metrics(nodes[0].addr);
            panic!(
                "b-1 never received a-1's first chat after Redis came back, although node a's \
                 /healthz said \"{}\"; node a's /metrics: wsloop_redis_up {}, \
                 wsloop_redis_published_total {}, wsloop_redis_publish_failures_total {}",
                nodes[0].health_status(),
                sample(&m, "wsloop_redis_up"),
                sample(&m, "wsloop_redis_published_total"),
                sample(&m, "wsloop_redis_publish_failures_total"),
            );
        }
    }
    round(
        "after",
        &mut peers,
        &[chat(0, "after from a-1"), chat(1, "after from b-1")],
        Reach::Cluster,
    );
    for node in &nodes {
        let m = metrics(node.addr);
        assert_eq!(
            sample(&m, "wsloop_redis_publish_failures_total"),
            0,
            "node {}: nothing was published while Redis was down",
            node.name
        );
    }
}

#[test]
fn redis_publication_after_subscribed_reaches_a_subscriber_on_another_node() {
    // `subscribed` tells the client it is in the channel. A publication made on another node
    // after that reply must reach it (the reply must not run ahead of the node's Redis
    // subscription).
    let Some((_redis, _nodes, mut peers)) = cluster(&["a", "b"], 1) else {
        return;
    };
    let (a1, b1) = (0, 1);
    let mut lost = Vec::new();
    for i in 0..5 {
        let channel = format!("fresh-{i}");
        peers[b1].subscribe(&channel);
        let content = format!("right after subscribed {i}");
        let expected = json!({"type": "message", "channel": channel, "from": peers[a1].id,
                              "id": peers[a1].id, "content": content})
        .to_string();
        peers[a1].send(&json!({"type": "publish", "channel": channel, "content": content}));
        let reply = peers[a1].recv();
        assert_eq!(
            reply,
            json!({"type": "published", "channel": channel, "receivers": 0})
        );
        // A fence chat from a-1 arrives after the publication, if that arrives at all.
        peers[a1].send(&json!({"type": "chat", "content": format!("fence {i}")}));
        let fence = peers[a1].recv();
        assert_eq!(fence["content"], format!("fence {i}"), "{fence}");
        let mut got_message = 0;
        loop {
            let message = peers[b1].recv();
            if message["type"] == "chat" && message["content"] == format!("fence {i}") {
                break;
            }
            assert_eq!(canonical(&message), expected);
            got_message += 1;
        }
        assert!(got_message <= 1, "duplicate delivery of {content:?}");
        if got_message == 0 {
            lost.push(content);
        }
    }
    assert!(
        lost.is_empty(),
        "b-1 received `subscribed` before a-1 published, yet {} of 5 publications never \
         reached it: {lost:?}",
        lost.len()
    );
}

// ---------------------------------------------------------------------------------------------
// Delivery guarantees under faults (README "Delivery guarantees")
// ---------------------------------------------------------------------------------------------

/// A node's series, by name.
fn series(node: &Node, name: &str) -> u64 {
    sample(&metrics(node.addr), name)
}

/// Waits for a node's series to reach exactly `want`.
fn wait_series(node: &Node, name: &str, want: u64, limit: Duration) {
    wait_until(
        &format!("node {} {name} = {want}", node.name),
        limit,
        || {
            let got = series(node, name);
            if got == want {
                Ok(())
            } else {
                Err(got.to_string())
            }
        },
    );
}

/// Nodes a and b with a client each, after a round of chats has crossed both ways.
fn two_nodes_chatting() -> Option<(Redis, Vec<Node>, Vec<Peer>)> {
    let (redis, nodes, mut peers) = cluster(&["a", "b"], 1)?;
    round(
        "before",
        &mut peers,
        &[chat(0, "before a"), chat(1, "before b")],
        Reach::Cluster,
    );
    Some((redis, nodes, peers))
}

/// Reads messages until a chat with `content` arrives; returns the ones before it.
fn until_chat(peer: &mut Peer, content: &str, limit: Duration) -> Vec<Value> {
    let deadline = Instant::now() + limit;
    let mut before = Vec::new();
    loop {
        let message = peer.next(deadline).unwrap_or_else(|| {
            panic!(
                "{}: no chat {content:?} within {limit:?}; got {} messages before: {:?}",
                peer.id,
                before.len(),
                before.iter().rev().take(3).collect::<Vec<_>>()
            )
        });
        if message["type"] == "chat" && message["content"] == content {
            return before;
        }
        before.push(message);
    }
}

#[test]
fn redis_graceful_shutdown_hands_every_acknowledged_publication_to_redis() {
    // Defect 1: 8,000 publications answered `published`, SIGTERM 50 ms later: the drain must
    // hand every one to Redis before the node exits.
    const BURST: usize = 8_000;
    let Some(program) = redis_program() else {
        return;
    };
    let redis = Redis::start(program);
    let fast = ["--max-messages-per-second", "1000000"];
    let mut a = relay_node("a", &redis, "127.0.0.1:0", &fast);
    let b = relay_node("b", &redis, "127.0.0.1:0", &fast);
    redis.wait_topics(&topics(&[("chat", 2)]), WAIT);
    let mut b1 = Peer::join_node(&b, 1);
    b1.subscribe("burst");
    redis.wait_topics(&topics(&[("chat", 2), ("channel:burst", 1)]), WAIT);
    let mut a1 = RawClient::connect_tcp(a.addr);
    a1.handshake("/ws");
    let welcome = a1.read_frame();
    assert!(String::from_utf8_lossy(&welcome.payload).contains("welcome"));
    let frames: Vec<OutFrame> = (0..BURST)
        .map(|i| {
            OutFrame::text(
                json!({"type": "publish", "channel": "burst", "content": format!("m{i}")})
                    .to_string(),
            )
        })
        .collect();
    // Redis stalls for a moment: the publications queue up in the node, as they would
    // behind a slow Redis. It resumes while the node drains.
    redis.signal("STOP");
    a1.send_all(&frames)
        .expect("one write of 8,000 publications");
    for i in 0..BURST {
        let reply: Value = serde_json::from_slice(&a1.read_frame().payload).expect("JSON");
        assert_eq!(
            reply,
            json!({"type": "published", "channel": "burst", "receivers": 0}),
            "reply {i}"
        );
    }
    thread::sleep(Duration::from_millis(50));
    send_signal("TERM", &a.child.id().to_string());
    assert_eq!(a1.read_frame().opcode, opcode::CLOSE);
    a1.reply_close(Some(1000));
    drop(a1);
    thread::sleep(Duration::from_millis(300));
    redis.signal("CONT");
    assert_eq!(
        wait_exit(&mut a.child, WAIT).and_then(|s| s.code()),
        Some(0)
    );
    let acknowledged = BURST;
    let mut got = 0;
    while let Some(message) = b1.next(Instant::now() + Duration::from_secs(2)) {
        assert_eq!(message["content"], format!("m{got}"), "in order, once each");
        got += 1;
    }
    assert!(
        got >= acknowledged,
        "b-1 received {got} of {acknowledged} acknowledged publications; node a said:\n{}",
        a.log.text()
    );
    assert_eq!(series(&b, "wsloop_redis_missed_total"), 0);
}

#[test]
fn redis_drain_gives_up_on_a_hung_redis_at_the_drain_timeout_and_says_what_it_lost() {
    // The wait for Redis at shutdown is bounded: with Redis stopped throughout, the node exits
    // 0 within --drain-timeout of SIGTERM and logs how many publications it could not hand
    // over (the first one went out before the hang was known: its outcome is unknown).
    let Some(program) = redis_program() else {
        return;
    };
    let redis = Redis::start(program);
    let mut a = relay_node("a", &redis, "127.0.0.1:0", &["--drain-timeout", "500ms"]);
    redis.wait_topics(&topics(&[("chat", 1)]), WAIT);
    let mut a1 = Peer::join_node(&a, 1);
    redis.signal("STOP");
    for i in 0..3 {
        a1.send(&json!({"type": "chat", "content": format!("into the hang {i}")}));
        assert_eq!(a1.recv()["content"], format!("into the hang {i}"));
        thread::sleep(Duration::from_millis(50));
    }
    drop(a1);
    let signalled = Instant::now();
    assert_eq!(a.terminate(WAIT), Some(0));
    let took = signalled.elapsed();
    redis.signal("CONT");
    assert!(took < Duration::from_millis(1500), "exit took {took:?}");
    a.log
        .wait_for("the count of what was not handed over", |l| {
            l.contains("drain timeout: 2 publications not handed to Redis")
        });
}

#[test]
fn redis_stall_of_a_second_keeps_subscriptions_and_loses_nothing() {
    // Defect 2: `DEBUG SLEEP 1` while a client subscribes to a new channel: the SUBSCRIBE
    // answer comes a second late, which is no failure; chats sent meanwhile all arrive.
    let Some((redis, nodes, mut peers)) = two_nodes_chatting() else {
        return;
    };
    let port = redis.port;
    let stall = thread::spawn(move || redis_command(port, &["DEBUG", "SLEEP", "1"]));
    thread::sleep(Duration::from_millis(100));
    peers[1].send(&json!({"type": "subscribe", "channel": "during-stall"}));
    for i in 0..5 {
        peers[0].send(&json!({"type": "chat", "content": format!("stall {i}")}));
        thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        stall.join().expect("stall thread").expect("DEBUG SLEEP"),
        Resp::Simple("OK".into())
    );
    peers[0].send(&json!({"type": "chat", "content": "after the stall"}));
    let before = until_chat(&mut peers[1], "after the stall", WAIT);
    let contents: Vec<String> = before
        .iter()
        .map(|m| format!("{} {}", m["type"], m["content"].as_str().unwrap_or("")))
        .collect();
    let mut want = vec![r#""subscribed" "#.to_owned()];
    want.extend((0..5).map(|i| format!(r#""chat" stall {i}"#)));
    let mut sorted = contents.clone();
    sorted.sort();
    want.sort();
    assert_eq!(sorted, want, "b-1 got, in this order: {contents:?}");
    for node in &nodes {
        assert!(
            !node.log.text().contains("redis subscriber down"),
            "node {}: a one-second stall tore the subscription down:\n{}",
            node.name,
            node.log.text()
        );
        assert_eq!(node.health_status(), "ok");
        assert_eq!(series(node, "wsloop_redis_missed_total"), 0);
    }
}

#[test]
fn redis_hung_shows_as_degraded_on_every_node_including_listeners() {
    // Defect 3: Redis stopped (SIGSTOP); neither node publishes anything, yet both must say
    // "degraded" within the bound (PING after 1 s of silence, 2 s for its answer), and "ok"
    // again once Redis resumes.
    let Some((redis, nodes, _peers)) = cluster(&["a", "b"], 1) else {
        return;
    };
    for node in &nodes {
        node.wait_health("ok", WAIT);
    }
    redis.signal("STOP");
    let stopped = Instant::now();
    for node in &nodes {
        node.wait_health("degraded", Duration::from_secs(5));
        assert_eq!(series(node, "wsloop_redis_up"), 0);
    }
    assert!(stopped.elapsed() < Duration::from_secs(5));
    redis.signal("CONT");
    for node in &nodes {
        node.wait_health("ok", RECONNECT_WAIT);
    }
}

#[test]
fn redis_hang_timed_out_publication_is_counted_unknown_and_a_dropped_one_never_arrives() {
    // Defect 4: a PUBLISH sent to a hung Redis has an unknown outcome (Redis runs it when it
    // resumes); one made once the node knows Redis is gone is never sent. The metrics tell
    // them apart, and the dropped one is never delivered.
    let Some((redis, nodes, mut peers)) = two_nodes_chatting() else {
        return;
    };
    redis.signal("STOP");
    peers[0].send(&json!({"type": "chat", "content": "sent into the hang"}));
    assert_eq!(peers[0].recv()["content"], "sent into the hang");
    wait_series(&nodes[0], "wsloop_redis_publish_unknown_total", 1, WAIT);
    nodes[0].wait_health("degraded", WAIT);
    peers[0].send(&json!({"type": "chat", "content": "sent while known down"}));
    assert_eq!(peers[0].recv()["content"], "sent while known down");
    wait_series(&nodes[0], "wsloop_redis_publish_failures_total", 1, WAIT);
    assert_eq!(series(&nodes[0], "wsloop_redis_publish_unknown_total"), 1);
    redis.signal("CONT");
    for node in &nodes {
        node.wait_health("ok", RECONNECT_WAIT);
    }
    redis.wait_topics(&topics(&[("chat", 2)]), WAIT);
    peers[0].send(&json!({"type": "chat", "content": "after the hang"}));
    let before = until_chat(&mut peers[1], "after the hang", WAIT);
    for message in &before {
        assert_eq!(
            message["content"], "sent into the hang",
            "only the publication of unknown outcome may arrive late: {before:?}"
        );
    }
}

#[test]
fn redis_restart_loss_before_resubscription_is_counted_by_the_receiver() {
    // Defect 5: after a Redis restart node a is back and publishes while node b has not
    // re-subscribed yet (held stopped): those chats are lost for b, and b counts them.
    let Some((mut redis, nodes, mut peers)) = two_nodes_chatting() else {
        return;
    };
    let b_pid = nodes[1].child.id().to_string();
    send_signal("STOP", &b_pid);
    redis.kill();
    redis.restart();
    nodes[0].wait_health("ok", RECONNECT_WAIT);
    redis.wait_topics(&topics(&[("chat", 1)]), WAIT);
    for i in 0..5 {
        peers[0].send(&json!({"type": "chat", "content": format!("gap {i}")}));
        assert_eq!(peers[0].recv()["content"], format!("gap {i}"));
    }
    wait_series(&nodes[0], "wsloop_redis_published_total", 2 + 5, WAIT);
    send_signal("CONT", &b_pid);
    nodes[1].wait_health("ok", RECONNECT_WAIT);
    redis.wait_topics(&topics(&[("chat", 2)]), WAIT);
    peers[0].send(&json!({"type": "chat", "content": "after the restart"}));
    let before = until_chat(&mut peers[1], "after the restart", WAIT);
    assert!(before.is_empty(), "{before:?}");
    assert_eq!(series(&nodes[1], "wsloop_redis_missed_total"), 5);
    assert_eq!(series(&nodes[0], "wsloop_redis_missed_total"), 0);
}

#[test]
fn redis_node_at_its_descriptor_limit_rejoins_after_a_restart() {
    // Defect 6: node a runs under `nofile` 64 with clients queueing to get in; Redis
    // restarts. The accept loop must leave the bridge descriptors to reconnect with.
    let Some(program) = redis_program() else {
        return;
    };
    let Some(prlimit) = common::find_program("prlimit", "sets a low nofile limit (util-linux)")
    else {
        return;
    };
    let mut redis = Redis::start(program);
    let url = redis.url();
    let argv: Vec<String> = [
        "--nofile=64:64",
        env!("CARGO_BIN_EXE_wsloop"),
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--redis",
        &url,
        "--node-id",
        "a",
        "--redis-prefix",
        PREFIX,
        "--history-size",
        "0",
        "--max-connections-per-address",
        "100000",
        common::MANY_REQUESTS[0],
        common::MANY_REQUESTS[1],
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let a = Node::start_program("a", &prlimit, &argv);
    let b = relay_node("b", &redis, "127.0.0.1:0", &[]);
    redis.wait_topics(&topics(&[("chat", 2)]), WAIT);
    let mut peers = vec![Peer::join_node(&a, 1), Peer::join_node(&b, 1)];
    round(
        "before",
        &mut peers,
        &[chat(0, "before a"), chat(1, "before b")],
        Reach::Cluster,
    );
    // More clients than descriptors: the node takes what it can, the rest wait.
    let request = common::upgrade_request("/ws", "");
    let _fillers: Vec<TcpStream> = (0..100)
        .map(|_| {
            let mut s = TcpStream::connect(a.addr).expect("connect (backlog)");
            let _ = s.write_all(request.as_bytes());
            s
        })
        .collect();
    thread::sleep(Duration::from_millis(500));
    redis.kill();
    redis.restart();
    redis.wait_topics(&topics(&[("chat", 2)]), RECONNECT_WAIT);
    wait_until("cross-node chat after the restart", RECONNECT_WAIT, || {
        peers[1].send(&json!({"type": "chat", "content": "probe"}));
        let deadline = Instant::now() + Duration::from_millis(500);
        let mut reached = false;
        while let Some(m) = peers[0].next(deadline) {
            reached |= m["content"] == "probe";
        }
        while peers[1]
            .next(Instant::now() + Duration::from_millis(50))
            .is_some()
        {}
        if reached {
            Ok(())
        } else {
            Err(format!("node a's log:\n{}", a.log.text()))
        }
    });
}

#[test]
fn redis_node_crash_leaves_the_others_chatting_and_its_restart_is_no_twin() {
    // A node killed with SIGKILL: the other nodes go on exactly once; restarted under the same
    // id it joins again, is not taken for a duplicate, and nobody counts a gap or gets a
    // message twice.
    let Some((redis, mut nodes, mut peers)) = cluster(&["a", "b", "c"], 1) else {
        return;
    };
    round(
        "before",
        &mut peers,
        &[chat(0, "a"), chat(1, "b"), chat(2, "c")],
        Reach::Cluster,
    );
    let _ = nodes[1].child.kill();
    let _ = nodes[1].child.wait();
    let _gone = peers.remove(1);
    redis.wait_topics(&topics(&[("chat", 2)]), WAIT);
    round(
        "crashed",
        &mut peers,
        &[chat(0, "a crashed"), chat(1, "c crashed")],
        Reach::Cluster,
    );
    nodes[1] = relay_node("b", &redis, "127.0.0.1:0", &[]);
    redis.wait_topics(&topics(&[("chat", 3)]), WAIT);
    peers.insert(1, Peer::join_node(&nodes[1], 1));
    round(
        "back",
        &mut peers,
        &[chat(0, "a back"), chat(1, "b back"), chat(2, "c back")],
        Reach::Cluster,
    );
    thread::sleep(Duration::from_secs(3));
    for node in &nodes {
        assert_eq!(node.health_status(), "ok", "node {}", node.name);
        assert_eq!(series(node, "wsloop_redis_duplicate_node_id"), 0);
        assert_eq!(series(node, "wsloop_redis_missed_total"), 0);
    }
}

/// The `presence` reply of `peer` for `channel`, within [`WAIT`].
fn presence_of(peer: &mut Peer, channel: &str) -> Value {
    peer.send(&json!({"type": "presence", "channel": channel}));
    let reply = peer.recv();
    assert_eq!(reply["type"], "presence", "{reply}");
    reply
}

/// The `presence` reply listing exactly these anonymous peers (user id = name = their id).
fn presence_listing(channel: &str, peers: &[&Peer]) -> Value {
    let mut ids: Vec<&str> = peers.iter().map(|p| p.id.as_str()).collect();
    ids.sort();
    let users: Vec<Value> = ids
        .iter()
        .map(|id| json!({"user": id, "name": id}))
        .collect();
    json!({"type": "presence", "channel": channel, "users": users})
}

#[test]
fn redis_presence_sees_every_nodes_users_and_forgets_a_killed_node_within_its_ttl() {
    // Presence lives in Redis hashes with a TTL renewed every third of it: a node killed with
    // SIGKILL renews nothing, and its users leave the other nodes' answers within 4/3 TTL.
    let Some(program) = redis_program() else {
        return;
    };
    let redis = Redis::start(program);
    const TTL: Duration = Duration::from_millis(900);
    let ttl = ["--presence-ttl", "900ms"];
    let a = relay_node("a", &redis, "127.0.0.1:0", &ttl);
    let mut b = relay_node("b", &redis, "127.0.0.1:0", &ttl);
    redis.wait_topics(&topics(&[("chat", 2)]), WAIT);
    let (mut a1, mut b1, mut b2) = (
        Peer::join_node(&a, 1),
        Peer::join_node(&b, 1),
        Peer::join_node(&b, 2),
    );
    for peer in [&mut a1, &mut b1, &mut b2] {
        peer.subscribe("room");
    }
    let everyone = presence_listing("room", &[&a1, &b1, &b2]);
    for peer in [&mut a1, &mut b1] {
        wait_until("the users of both nodes", WAIT, || {
            let seen = presence_of(peer, "room");
            (seen == everyone).then_some(()).ok_or(seen.to_string())
        });
    }
    assert_eq!(
        presence_of(&mut a1, "elsewhere"),
        presence_listing("elsewhere", &[]),
        "nobody in another channel"
    );
    b2.unsubscribe("room");
    let without_b2 = presence_listing("room", &[&a1, &b1]);
    wait_until("a-1 sees b-2 leave", WAIT, || {
        let seen = presence_of(&mut a1, "room");
        (seen == without_b2).then_some(()).ok_or(seen.to_string())
    });

    let _ = b.child.kill();
    let killed = Instant::now();
    let _ = b.child.wait();
    let alone = presence_listing("room", &[&a1]);
    wait_until("b's users gone from a's answers", TTL * 3, || {
        let seen = presence_of(&mut a1, "room");
        (seen == alone).then_some(()).ok_or(seen.to_string())
    });
    // 4/3 TTL, and time for a heartbeat's round trip on a busy machine.
    let bound = TTL * 4 / 3 + Duration::from_millis(500);
    assert!(
        killed.elapsed() <= bound,
        "gone after {:?}",
        killed.elapsed()
    );
}

/// The server API key the API tests give their nodes (`--api-key-file`).
const API_KEY: &str = "backend-key-0123456789";

/// `POST path` with `body` and the API key to `addr`: (status, JSON answer).
fn api_post(addr: SocketAddr, path: &str, body: &Value) -> (u16, Value) {
    let body = body.to_string();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: wsloop\r\nAuthorization: apikey {API_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let (head, answer) = common::http_exchange(addr, request.as_bytes());
    let status = head
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("status line: {head}"));
    let answer = serde_json::from_slice(&answer)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&answer)));
    (status, answer)
}

/// The next message of `peer` without its `ts`.
fn recv_untimed(peer: &mut Peer) -> Value {
    let mut message = peer.recv();
    message.as_object_mut().map(|o| o.remove("ts"));
    message
}

#[test]
fn redis_api_send_reaches_every_connection_of_a_user_on_two_nodes() {
    let Some(program) = redis_program() else {
        return;
    };
    let redis = Redis::start(program);
    let tokens = common::TempFile::new("cluster-tokens", "t-ann ann\nt-bob bob\n");
    let keys = common::TempFile::new("cluster-api-keys", &format!("{API_KEY}\n"));
    let args = ["--token-file", tokens.path(), "--api-key-file", keys.path()];
    let a = relay_node("a", &redis, "127.0.0.1:0", &args);
    let b = relay_node("b", &redis, "127.0.0.1:0", &args);
    redis.wait_topics(&topics(&[("chat", 2)]), WAIT);
    let mut ann_a = Peer::join_as(&a.url(), "t-ann", "ann");
    let mut ann_b = Peer::join_as(&b.url(), "t-ann", "ann");
    let mut bob_b = Peer::join_as(&b.url(), "t-bob", "bob");
    let send = json!({"user": "ann", "content": "your invoice", "from": "billing"});
    assert_eq!(
        api_post(a.addr, "/api/send", &send),
        (200, json!({"delivered": 1})),
        "a counts its own connection of ann"
    );
    let direct =
        json!({"type": "direct", "to": "ann", "from": "billing", "content": "your invoice"});
    assert_eq!(recv_untimed(&mut ann_a), direct);
    assert_eq!(
        recv_untimed(&mut ann_b),
        direct,
        "ann's connection on the other node"
    );
    bob_b.barrier();
    assert!(bob_b.inbox.is_empty(), "bob got {:?}", bob_b.inbox);
    ann_b.barrier();
    assert!(ann_b.inbox.is_empty(), "exactly once: {:?}", ann_b.inbox);
}

#[test]
fn redis_user_allowed_only_pubsub_still_chats_without_the_id_check() {
    // A Redis user limited to Pub/Sub cannot SET the node's claim: the node warns that
    // duplicate ids go unnoticed and works on (the refusal is no connection failure).
    let Some(program) = redis_program() else {
        return;
    };
    let redis = Redis::start(program);
    let acl = [
        "ACL", "SETUSER", "chat", "on", ">pw", "&*", "+@pubsub", "+ping", "+client", "+hello",
    ];
    assert_eq!(redis.command(&acl), Resp::Simple("OK".into()));
    let url = format!("redis://chat:pw@127.0.0.1:{}", redis.port);
    let nodes: Vec<Node> = ["a", "b"]
        .iter()
        .map(|name| {
            let args = ["--redis", &url, "--node-id", name, "--redis-prefix", PREFIX];
            let args = [&args[..], &RELAY].concat();
            Node::start(name, "127.0.0.1:0", &args)
        })
        .collect();
    redis.wait_topics(&topics(&[("chat", 2)]), WAIT);
    let mut peers = vec![Peer::join_node(&nodes[0], 1), Peer::join_node(&nodes[1], 1)];
    round(
        "chat",
        &mut peers,
        &[chat(0, "from a"), chat(1, "from b")],
        Reach::Cluster,
    );
    for node in &nodes {
        node.log
            .wait_for("the warning", |l| l.contains("cannot claim this node's id"));
        assert!(
            !node.log.text().contains("publisher down"),
            "{}",
            node.log.text()
        );
        node.wait_health("ok", WAIT);
    }
}

/// Redis over TLS: nodes given `rediss://` and the CA with `--redis-ca` join through the TLS
/// port only, and deliver exactly once; a node without the CA file refuses Redis's
/// certificate and says so; `--redis-ca` with a `redis://` URL is refused at start.
#[test]
fn redis_over_tls_with_rediss_and_a_ca_file() {
    let Some(program) = redis_program() else {
        return;
    };
    let pki = tls::TestPki::new("redis");
    let redis = Redis::start_tls(program, &pki.localhost(), &pki.ca_cert);
    let url = redis.url();
    assert!(url.starts_with("rediss://127.0.0.1:"), "{url}");
    let ca = pki.ca_cert.to_str().expect("UTF-8 path");
    let nodes: Vec<Node> = ["a", "b"]
        .iter()
        .map(|name| relay_node(name, &redis, "127.0.0.1:0", &["--redis-ca", ca]))
        .collect();
    redis.wait_topics(&topics(&[("chat", 2)]), WAIT);
    let mut peers = vec![Peer::join_node(&nodes[0], 1), Peer::join_node(&nodes[1], 1)];
    peers[0].subscribe("secret");
    round(
        "rediss",
        &mut peers,
        &[
            chat(0, "a over rediss"),
            chat(1, "b over rediss"),
            publish(1, "secret", "to a over rediss"),
        ],
        Reach::Cluster,
    );
    // Each node's subscriber and publisher are connected to the TLS port; the plain port
    // has only the test's own connection, which asks.
    let Resp::Bulk(Some(list)) = redis.command(&["CLIENT", "LIST"]) else {
        panic!("CLIENT LIST: unexpected reply");
    };
    let on_port = |port: u16| {
        list.lines()
            .filter(|l| l.contains(&format!(" laddr=127.0.0.1:{port} ")))
            .count()
    };
    let tls_port = redis.tls.as_ref().expect("TLS port").port;
    // Every node connection is on the TLS port: per node the subscriber and the publisher,
    // and the presence thread once it has connected; the plain port has only this CLIENT LIST.
    let (tls, plain) = (on_port(tls_port), on_port(redis.port));
    assert!((4..=6).contains(&tls) && plain == 1, "{list}");

    // Without --redis-ca the system's CAs are asked, which do not know the test CA.
    let args = ["--redis", &url, "--node-id", "c", "--redis-prefix", PREFIX];
    let stranger = Node::start("c", "127.0.0.1:0", &args);
    stranger.log.wait_for("the certificate refused", |l| {
        l.contains("invalid peer certificate: UnknownIssuer")
    });
    stranger.wait_health("degraded", WAIT);

    // A CA file for a plain redis:// URL is a mistake, said at start.
    let plain = format!("redis://127.0.0.1:{}/0", redis.port);
    let (mut child, _stdout, log) = spawn_collecting(
        Path::new(env!("CARGO_BIN_EXE_wsloop")),
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--redis",
            &plain,
            "--redis-ca",
            ca,
        ]
        .map(String::from),
        "node d",
    );
    let status = wait_exit(&mut child, WAIT).expect("exits at start");
    assert_eq!(status.code(), Some(2), "{}", log.text());
    log.wait_for("the refusal", |l| {
        l.ends_with("--redis-ca: the --redis URL is not rediss://")
    });
}

#[test]
fn redis_two_nodes_with_one_id_are_reported_and_hear_each_other() {
    // Defect 7: two processes started with the same --node-id: both say so (/healthz
    // degraded, a gauge, an error in the log) and no longer drop each other's traffic.
    let Some(program) = redis_program() else {
        return;
    };
    let redis = Redis::start(program);
    let first = relay_node("twin", &redis, "127.0.0.1:0", &[]);
    first.wait_health("ok", WAIT);
    let second = relay_node("twin", &redis, "127.0.0.1:0", &[]);
    for node in [&first, &second] {
        node.wait_health("degraded", WAIT);
        assert_eq!(series(node, "wsloop_redis_duplicate_node_id"), 1);
        assert_eq!(series(node, "wsloop_redis_up"), 1);
    }
    wait_until("the error in both logs", WAIT, || {
        match [&first, &second]
            .iter()
            .all(|n| n.log.text().contains("same node id"))
        {
            true => Ok(()),
            false => Err(format!("{}\n{}", first.log.text(), second.log.text())),
        }
    });
    redis.wait_topics(&topics(&[("chat", 2)]), WAIT);
    let mut one = Peer::join(&first.url(), &[]);
    let mut two = Peer::join(&second.url(), &[]);
    two.send(&json!({"type": "chat", "content": "from the second twin"}));
    until_chat(&mut one, "from the second twin", WAIT);
    drop(second);
    first.wait_health("ok", Duration::from_secs(15));
}

// ---------------------------------------------------------------------------------------------
// --reuse-port
// ---------------------------------------------------------------------------------------------

#[test]
fn reuse_port_two_processes_share_a_port_and_chat_through_redis() {
    let Some(program) = redis_program() else {
        return;
    };
    let redis = Redis::start(program);
    let a = relay_node("a", &redis, "127.0.0.1:0", &["--reuse-port"]);
    let shared = a.addr.to_string();
    let b = relay_node("b", &redis, &shared, &["--reuse-port"]);
    assert_eq!(b.addr, a.addr, "both listen on one address");
    // Without the flag, the port is taken.
    let wsloop = Path::new(env!("CARGO_BIN_EXE_wsloop"));
    let argv: Vec<String> = ["serve", "--listen", &shared]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    let (mut child, _stdout, log) = spawn_collecting(wsloop, &argv, "no reuse-port");
    let status = wait_exit(&mut child, WAIT);
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        matches!(status, Some(s) if !s.success()),
        "a third process without --reuse-port should fail to listen on {shared}: {status:?}"
    );
    log.wait_for("cannot listen", |l| l.contains("cannot listen"));
    redis.wait_topics(&topics(&[("chat", 2)]), WAIT);

    // The kernel spreads connections over the two processes; connect until both have some.
    let mut peers: Vec<Peer> = Vec::new();
    let mut serials: BTreeMap<String, u32> = BTreeMap::new();
    while peers.len() < 4 || serials.len() < 2 {
        assert!(
            peers.len() < 40,
            "40 connections to {shared} all went to {serials:?}"
        );
        let peer = Peer::join(&format!("ws://{shared}/ws"), &[]);
        let serial = serials.entry(peer.node.clone()).or_default();
        *serial += 1;
        assert_eq!(
            peer.id.rsplit('-').next(),
            Some(serial.to_string().as_str()),
            "ids are node-prefixed and consecutive per process"
        );
        assert!(peer.node == "a" || peer.node == "b", "id {}", peer.id);
        peers.push(peer);
    }
    let first = |node: &str| {
        peers
            .iter()
            .position(|p| p.node == node)
            .expect("a peer on the node")
    };
    let (on_a, on_b) = (first("a"), first("b"));
    peers[on_a].subscribe("room");
    peers[on_b].subscribe("room");
    redis.wait_topics(&topics(&[("chat", 2), ("channel:room", 2)]), WAIT);
    let acts = [
        chat(on_a, "hello from a process"),
        chat(on_b, "hello from b process"),
        publish(on_a, "room", "room from a"),
        publish(on_b, "room", "room from b"),
    ];
    round("reuse-port", &mut peers, &acts, Reach::Cluster);
}

#[test]
fn nginx_proxies_websocket_heartbeat_close_and_real_ip() {
    let Some(program) = nginx_program() else {
        return;
    };
    let args = [
        "--trust-proxy",
        "--log-level",
        "debug",
        "--ping-interval",
        "200ms",
        "--ping-timeout",
        "2s",
        "--drain-timeout",
        "2s",
    ];
    let mut nodes = [
        Node::start("a", "127.0.0.1:0", &args),
        Node::start("b", "127.0.0.1:0", &args),
    ];
    let pki = tls::TestPki::new("nginx");
    let nginx = Nginx::start(&program, [nodes[0].addr, nodes[1].addr], &pki.localhost());
    let url = format!("ws://{}/ws", nginx.addr);

    // Plain HTTP passes too (the health page of whichever node); metrics are not published.
    let reply = http_get(nginx.addr, "/healthz");
    assert_eq!(reply.status, 200, "{}", reply.head);
    let reply = http_get(nginx.addr, "/metrics");
    assert_eq!(reply.status, 403, "/metrics through nginx: {}", reply.head);

    // A client that forges both headers: nginx replaces X-Real-IP with the address it saw and
    // appends that address to X-Forwarded-For, so the node (which trusts the proxy) logs
    // 127.0.0.1, not 203.0.113.9 (forged X-Real-IP) nor 198.51.100.7 (forged first XFF).
    let mut p1 = Peer::join(
        &url,
        &["X-Real-IP: 203.0.113.9", "X-Forwarded-For: 198.51.100.7"],
    );
    let serving = serving_node(&nodes, &p1.id, "127.0.0.1");
    let other = 1 - serving;
    for node in &nodes {
        assert!(
            !node
                .log
                .any(|l| l.contains("joined from 203.0.113.9")
                    || l.contains("joined from 198.51.100.7")),
            "node {} believed a forged header:\n{}",
            node.name,
            node.log.text()
        );
    }
    // hash $remote_addr: the same client address goes to the same node.
    let mut p2 = Peer::join(&url, &[]);
    assert_eq!(serving_node(&nodes, &p2.id, "127.0.0.1"), serving);

    // A client on another loopback address: nginx's TCP peer on the node is still 127.0.0.1,
    // so the node can only know 127.0.0.2 from X-Real-IP (it trusts the proxy).
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    let from: std::net::SocketAddr = "127.0.0.2:0".parse().expect("address");
    socket.bind(&from.into()).expect("bind 127.0.0.2");
    socket
        .connect(&nginx.addr.into())
        .expect("connect to nginx");
    let options = ClientOptions {
        timeout: Some(WAIT),
        ..ClientOptions::default()
    };
    let mut far = Client::handshake_on(socket.into(), &url, &options).expect("handshake");
    let welcome = match far.recv().expect("welcome") {
        Received::Text(text) => serde_json::from_str::<serde_json::Value>(&text).expect("JSON"),
        other => panic!("expected the welcome, got {other:?}"),
    };
    let far_id = welcome["id"].as_str().expect("id").to_owned();
    serving_node(&nodes, &far_id, "127.0.0.2");
    drop(far);

    // WebSocket traffic both ways, a message larger than nginx's proxy buffers included.
    p1.subscribe("news");
    let big = "x".repeat(16 * 1024);
    chat_both_ways(&mut p1, &mut p2, &["hello through nginx", &big]);
    p2.send(&json!({"type": "publish", "channel": "news", "content": "n1"}));
    let mut message = p1.recv();
    without_position(&mut message);
    assert_eq!(
        message,
        json!({"type": "message", "channel": "news", "from": p2.id, "id": p2.id, "content": "n1"})
    );
    assert_eq!(
        p2.recv(),
        json!({"type": "published", "channel": "news", "receivers": 1})
    );
    // Protocol-level ping from the client, pong from the server.
    p1.client.ping(b"through nginx").expect("ping");
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(Instant::now() < deadline, "no pong through nginx");
        p1.client
            .set_timeout(Some(deadline - Instant::now()))
            .unwrap();
        match p1.client.recv() {
            Ok(Received::Pong(payload)) => {
                assert_eq!(payload, b"through nginx");
                break;
            }
            Ok(Received::Ping(_)) => {}
            other => panic!("waiting for the pong: {other:?}"),
        }
    }

    // Heartbeat: the node pings every 200 ms and closes what does not answer within 2 s.
    // Both clients answer (through nginx) for 3 s, longer than interval + timeout, and stay
    // connected: the pongs got through.
    let (pings_before, start) = (p1.pings, Instant::now());
    let mut raw = RawClient::connect_tcp(nginx.addr);
    raw.handshake("/ws");
    while start.elapsed() < Duration::from_millis(3_000) {
        for peer in [&mut p1, &mut p2] {
            if let Some(m) = peer.next(Instant::now() + Duration::from_millis(50)) {
                panic!("{}: unexpected {m}", peer.id);
            }
        }
    }
    assert!(
        p1.pings - pings_before >= 3,
        "only {} heartbeat pings through nginx in 3 s at 200 ms",
        p1.pings - pings_before
    );
    p1.barrier();
    p2.barrier();
    // The raw client never answered: the node dropped it, and nginx closed its side.
    raw.set_timeout(WAIT);
    let mut raw_pings = 0;
    loop {
        match raw.try_read_frame() {
            Ok(frame) if frame.opcode == opcode::PING => raw_pings += 1,
            Ok(frame) if frame.opcode == opcode::TEXT => {}
            Ok(frame) => panic!("raw client: unexpected frame {frame:?}"),
            Err(ReadError::Timeout { .. }) => panic!(
                "the client that does not answer pings is still connected through nginx \
                 {:?} after it joined",
                start.elapsed()
            ),
            Err(_) => break,
        }
    }
    assert!(raw_pings >= 1, "the silent client saw no heartbeat ping");
    let m = metrics(nodes[serving].addr);
    assert_eq!(sample(&m, "wsloop_heartbeat_timeouts_total"), 1, "{m:?}");
    assert_eq!(sample(&m, "wsloop_open_connections"), 2, "{m:?}");

    // Close from the client: 1000 goes through and comes back.
    p2.close();
    wait_until("the node to count the 1000 close", WAIT, || {
        let m = metrics(nodes[serving].addr);
        match m.get("wsloop_closes_total{code=\"1000\"}") {
            Some(1) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });

    // Close from the server: SIGTERM drains with 1001, which reaches the client through nginx.
    send_signal("TERM", &nodes[serving].child.id().to_string());
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(Instant::now() < deadline, "no 1001 close through nginx");
        p1.client
            .set_timeout(Some(deadline - Instant::now()))
            .unwrap();
        match p1.client.recv() {
            Ok(Received::Close(code, _)) => {
                assert_eq!(code, Some(1001), "close code on shutdown");
                break;
            }
            Ok(Received::Ping(_) | Received::Pong(_)) => {}
            other => panic!("waiting for the shutdown close: {other:?}"),
        }
    }
    let code = wait_exit(&mut nodes[serving].child, WAIT).and_then(|s| s.code());
    assert_eq!(code, Some(0), "node exit after the drain");

    // The same client address now reaches the other node: nginx tries the next upstream.
    let mut p3 = Peer::join(&url, &[]);
    nodes[other]
        .log
        .wait_for("p3 joined on the other node", |l| {
            joined(l, &p3.id, "127.0.0.1")
        });
    p3.send(&json!({"type": "chat", "content": "on the other node"}));
    let mut message = p3.recv();
    without_position(&mut message);
    assert_eq!(
        message,
        json!({"type": "chat", "from": p3.id, "id": p3.id, "content": "on the other node"})
    );
    p3.close();

    // The node does take the address from X-Real-IP under --trust-proxy (here straight from
    // the test, since nginx and the test share 127.0.0.1).
    let direct = Peer::join(&nodes[other].url(), &["X-Real-IP: 203.0.113.9"]);
    nodes[other].log.wait_for("joined from 203.0.113.9", |l| {
        joined(l, &direct.id, "203.0.113.9")
    });
    direct.close();
    drop(nginx);
}

/// Each of `contents` chatted by `a` and `b` in turn reaches both, exactly as sent.
fn chat_both_ways(a: &mut Peer, b: &mut Peer, contents: &[&str]) {
    for (i, content) in contents.iter().enumerate() {
        let sender = if i % 2 == 0 { &mut *a } else { &mut *b };
        let sender_id = sender.id.clone();
        sender.send(&json!({"type": "chat", "content": content}));
        for peer in [&mut *a, &mut *b] {
            let mut message = peer.recv();
            assert_recent_ts(&message["ts"], TS_SLACK_MS, &message);
            without_position(&mut message);
            assert_eq!(
                message,
                json!({"type": "chat", "from": sender_id, "id": sender_id, "content": content})
            );
        }
    }
}

/// Python `websockets` over wss: joins, chats `content`, waits for it to come back and closes
/// with 1000; prints the welcome's id and the server's close code.
const PYTHON_WSS_CHAT: &str = r#"
import asyncio, json, ssl, sys
from websockets.asyncio.client import connect

async def main(url, ca, content):
    context = ssl.create_default_context(cafile=ca)
    async with connect(url, ssl=context, open_timeout=10, close_timeout=10) as ws:
        welcome = json.loads(await asyncio.wait_for(ws.recv(), 10))
        await ws.send(json.dumps({"type": "chat", "content": content}))
        while True:
            message = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if message.get("type") == "chat" and message.get("content") == content:
                break
        await ws.close(1000, "done")
    print(welcome["id"], ws.close_code)

asyncio.run(main(*sys.argv[1:4]))
"#;

/// nginx terminating TLS (deploy/nginx.conf's `listen 443 ssl`, with a certificate made by the
/// test) in front of two nodes: `wsloop client wss://`, the library client and Python
/// `websockets` over wss chat with a client on plain ws through the same nginx, and the node
/// knows each one's address from X-Real-IP.
#[test]
fn nginx_terminates_tls_for_wss_clients_of_two_nodes() {
    let Some(program) = nginx_program() else {
        return;
    };
    let args = ["--trust-proxy", "--log-level", "debug"];
    let nodes = [
        Node::start("a", "127.0.0.1:0", &args),
        Node::start("b", "127.0.0.1:0", &args),
    ];
    let pki = tls::TestPki::new("nginx-tls");
    let nginx = Nginx::start(&program, [nodes[0].addr, nodes[1].addr], &pki.localhost());
    let wss = format!("wss://localhost:{}/ws", nginx.tls_addr.port());
    let options = ClientOptions {
        timeout: Some(WAIT),
        tls: TlsOptions {
            ca_file: Some(pki.ca_cert.clone()),
            insecure: false,
        },
        ..ClientOptions::default()
    };
    let mut secure = Peer::join_with(&wss, &options);
    let mut plain = Peer::join(&format!("ws://{}/ws", nginx.addr), &[]);
    // One client address, so one node (hash $remote_addr), whichever the scheme.
    let serving = serving_node(&nodes, &secure.id, "127.0.0.1");
    assert_eq!(serving_node(&nodes, &plain.id, "127.0.0.1"), serving);
    // 16 KiB (the content limit): more than one TLS record.
    let big = "y".repeat(16 * 1024);
    chat_both_ways(&mut secure, &mut plain, &["over wss", "over ws", &big]);

    // The terminal client, piped.
    let ca = pki.ca_cert.to_str().expect("UTF-8 path");
    let argv: Vec<String> = ["client", &wss, "--ca", ca].map(String::from).to_vec();
    let (mut cli, stdout, log) =
        spawn_collecting(Path::new(env!("CARGO_BIN_EXE_wsloop")), &argv, "client");
    let line = r#"{"type":"chat","content":"from wsloop client"}"#;
    writeln!(cli.stdin.as_mut().expect("stdin piped"), "{line}").expect("type a line");
    let welcome = stdout.recv_timeout(WAIT).expect("the welcome over wss");
    assert!(welcome.contains(r#""type":"welcome""#), "{welcome}");
    let chat = stdout.recv_timeout(WAIT).expect("the chat back");
    assert!(chat.contains(r#""content":"from wsloop client""#), "{chat}");
    assert_eq!(secure.recv()["content"], "from wsloop client");
    assert_eq!(plain.recv()["content"], "from wsloop client");
    drop(cli.stdin.take());
    let status = wait_exit(&mut cli, WAIT).expect("the client exits at the end of input");
    assert_eq!(status.code(), Some(0), "{}", log.text());
    assert!(
        log.any(|l| l == format!("connected to {wss}")),
        "{}",
        log.text()
    );

    // Python websockets, trusting the test CA through its own ssl module.
    if let Some(python) = common::find_program("python3", "Python websockets over wss") {
        let output = Command::new(python)
            .args(["-c", PYTHON_WSS_CHAT, &wss, ca, "from python"])
            .stdin(Stdio::null())
            .output()
            .expect("run python3");
        let (stdout, stderr) = (
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
        );
        if stderr.contains("No module named 'websockets'") {
            common::skip_or_fail("Python module websockets (pip install websockets)");
        } else {
            assert!(output.status.success(), "{stdout}\n{stderr}");
            let (id, code) = stdout.trim().split_once(' ').expect("id and close code");
            assert_eq!(code, "1000", "the node's close reply through nginx");
            assert_eq!(serving_node(&nodes, id, "127.0.0.1"), serving);
            assert_eq!(secure.recv()["content"], "from python");
            assert_eq!(plain.recv()["content"], "from python");
        }
    }
    secure.close();
    plain.close();
}

/// The application's backend publishes through nginx (deploy/nginx.conf in front of two
/// clustered nodes): whichever node nginx picks, the subscriber on the other node gets the
/// message, through Redis.
#[test]
fn nginx_backend_publish_reaches_a_subscriber_on_the_other_node() {
    let Some(program) = nginx_program() else {
        return;
    };
    let Some(redis_program) = redis_program() else {
        return;
    };
    let redis = Redis::start(redis_program);
    let keys = common::TempFile::new("nginx-api-keys", &format!("{API_KEY}\n"));
    let args = ["--api-key-file", keys.path(), "--log-level", "debug"];
    let nodes = [
        relay_node("a", &redis, "127.0.0.1:0", &args),
        relay_node("b", &redis, "127.0.0.1:0", &args),
    ];
    let pki = tls::TestPki::new("nginx-api");
    let nginx = Nginx::start(&program, [nodes[0].addr, nodes[1].addr], &pki.localhost());
    // Straight to each node (nginx's own start-up checks took serials already).
    let mut subscribers = nodes.each_ref().map(|node| Peer::join(&node.url(), &[]));
    assert_eq!((&*subscribers[0].node, &*subscribers[1].node), ("a", "b"));
    for peer in &mut subscribers {
        peer.subscribe("news");
    }
    redis.wait_topics(&topics(&[("chat", 2), ("channel:news", 2)]), WAIT);
    let publish = json!({"channel": "news", "content": "deploy done", "from": "ci"});
    assert_eq!(
        api_post(nginx.addr, "/api/publish", &publish),
        (200, json!({"delivered": 1})),
        "the node nginx picked counts its own subscriber"
    );
    let picked = |node: &Node| node.log.any(|l| l.contains("POST /api/publish"));
    let served: Vec<bool> = nodes.iter().map(picked).collect();
    assert!(
        served == [true, false] || served == [false, true],
        "served by {served:?}"
    );
    let message = json!({"type": "message", "channel": "news", "from": "ci", "id": "server",
                         "content": "deploy done"});
    for peer in &mut subscribers {
        assert_eq!(
            recv_untimed(peer),
            message,
            "{} on node {}",
            peer.id,
            peer.node
        );
        peer.barrier();
        assert!(peer.inbox.is_empty(), "exactly once: {:?}", peer.inbox);
    }
    drop(nginx);
}

/// Settings of deploy/nginx.conf that a live test cannot wait for: the read timeout must
/// outlast wsloop's default heartbeat (a ping every 30 s, 10 s for the pong).
#[test]
fn nginx_conf_outlasts_the_heartbeat() {
    let conf = repo_file("deploy/nginx.conf");
    let directives: Vec<&str> = conf
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .collect();
    let has = |d: &str| {
        directives
            .iter()
            .any(|l| l.split_whitespace().eq(d.split_whitespace()))
    };
    for d in [
        "map $http_upgrade $connection_upgrade {",
        "hash $remote_addr consistent;",
        "proxy_http_version 1.1;",
        "proxy_set_header Upgrade $http_upgrade;",
        "proxy_set_header Connection $connection_upgrade;",
        "proxy_set_header X-Real-IP $remote_addr;",
        "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        "listen 443 ssl;",
        "ssl_protocols TLSv1.2 TLSv1.3;",
    ] {
        assert!(has(d), "deploy/nginx.conf lacks `{d}`");
    }
    let servers = directives
        .iter()
        .filter(|l| l.starts_with("server 127.0.0.1:"))
        .count();
    assert_eq!(servers, 2, "two upstream nodes");
    let seconds = |name: &str| -> u64 {
        let line = directives
            .iter()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("deploy/nginx.conf lacks {name}"));
        let value = line[name.len()..].trim().trim_end_matches(';');
        value
            .strip_suffix('s')
            .unwrap_or(value)
            .parse()
            .unwrap_or_else(|_| panic!("{name}: {value:?} is not in seconds"))
    };
    let heartbeat = 30 + 10;
    assert!(seconds("proxy_read_timeout") > heartbeat);
    assert!(seconds("proxy_send_timeout") > heartbeat);
}

// ---------------------------------------------------------------------------------------------
// deploy/wsloop.service
// ---------------------------------------------------------------------------------------------

/// Expands `${NAME}` (one argument) and `$NAME` (split on whitespace) as systemd does.
fn systemd_expand(command: &str, env: &BTreeMap<String, String>) -> Vec<String> {
    let lookup = |name: &str| {
        env.get(name)
            .unwrap_or_else(|| panic!("ExecStart uses ${name}, which has no Environment="))
            .clone()
    };
    let mut args = Vec::new();
    for word in command.split_whitespace() {
        if let Some(name) = word.strip_prefix("${").and_then(|w| w.strip_suffix('}')) {
            args.push(lookup(name));
        } else if let Some(name) = word.strip_prefix('$') {
            args.extend(lookup(name).split_whitespace().map(str::to_owned));
        } else {
            assert!(!word.contains('$'), "unsupported expansion in {word:?}");
            args.push(word.to_owned());
        }
    }
    args
}

#[test]
fn systemd_unit_exec_start_runs_and_stops_on_sigterm() {
    let unit = repo_file("deploy/wsloop.service");
    let mut env = BTreeMap::new();
    let mut exec = None;
    let mut settings = BTreeMap::new();
    for line in unit.lines().map(str::trim) {
        if line.starts_with('#') || line.starts_with('[') || line.is_empty() {
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not a setting: {line:?}"));
        match key {
            "Environment" => {
                let (name, value) = value.split_once('=').expect("Environment=NAME=value");
                env.insert(name.to_owned(), value.to_owned());
            }
            "ExecStart" => exec = Some(value.to_owned()),
            _ => {
                settings.insert(key.to_owned(), value.to_owned());
            }
        }
    }
    let stop: u64 = settings["TimeoutStopSec"]
        .trim_end_matches('s')
        .parse()
        .expect("TimeoutStopSec in seconds");
    assert!(stop > 5, "TimeoutStopSec must outlast the 5 s drain");
    assert_eq!(
        settings.get("KillSignal").map(String::as_str),
        Some("SIGTERM")
    );
    let argv = systemd_expand(&exec.expect("ExecStart="), &env);
    assert_eq!(argv[0], "/usr/local/bin/wsloop");
    assert!(argv.iter().any(|a| a == "--trust-proxy"));

    // Run it as systemd would, with what /etc/default/wsloop might set: a free port, and a
    // Redis that is not there (the node starts anyway and reports degraded).
    env.insert("WSLOOP_LISTEN".into(), "127.0.0.1:0".into());
    let nothing_there = free_port();
    env.insert(
        "WSLOOP_REDIS".into(),
        format!("redis://127.0.0.1:{nothing_there}/0"),
    );
    let argv = systemd_expand(&exec_line(&unit), &env);
    let mut node = Node::start_argv(&env["WSLOOP_NODE_ID"], &argv[1..]);
    assert_eq!(node.health_status(), "degraded");
    let peer = Peer::join(&node.url(), &[]);
    let node_id = &env["WSLOOP_NODE_ID"];
    assert!(
        peer.id.starts_with(&format!("{node_id}-")) && peer.id.ends_with("-2"),
        "{}",
        peer.id
    );
    peer.close();
    assert_eq!(node.terminate(Duration::from_secs(stop)), Some(0));
}

fn exec_line(unit: &str) -> String {
    unit.lines()
        .find_map(|l| l.trim().strip_prefix("ExecStart="))
        .expect("ExecStart=")
        .to_owned()
}

/// Drops the fields these tests do not check: the timestamp (checked where it matters with
/// `assert_recent_ts`) and the channel's history position (tests/history.rs).
fn without_position(event: &mut Value) {
    if let Some(fields) = event.as_object_mut() {
        for key in ["ts", "offset", "epoch"] {
            fields.remove(key);
        }
    }
}
