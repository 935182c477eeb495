//! A chat client of the cluster tests (tests/cluster_history.rs, tests/redis_cluster.rs):
//! past its `welcome`, with the requests those tests make and a bound on every wait.
//! Included with `#[path = "common/member.rs"] mod member;` beside `mod harness;`.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wsloop::client::{Client, ClientOptions, Received};

use crate::harness::Node;

/// A chat client past its `welcome`.
pub struct Member {
    pub client: Client,
    /// Its connection id (from the `welcome`; not every test file reads it).
    #[allow(dead_code)]
    pub id: String,
    /// How long it waits for any one message.
    wait: Duration,
}

impl Member {
    /// Connects to `node`; every wait is bounded by `wait`.
    pub fn join(node: &Node, wait: Duration) -> Member {
        let client = Client::connect_with(&node.url(), &options(wait)).expect("connect");
        Member::welcome(client, wait)
    }

    /// A connected client, once its `welcome` came.
    pub fn welcome(mut client: Client, wait: Duration) -> Member {
        let welcome = next(&mut client, wait);
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        let id = welcome["id"].as_str().expect("an id").to_owned();
        Member { client, id, wait }
    }

    pub fn send(&mut self, value: Value) {
        self.client.send_text(&value.to_string()).expect("send");
    }

    pub fn recv(&mut self) -> Value {
        next(&mut self.client, self.wait)
    }

    /// Subscribes to `channel` (with `since`); returns the replayed events and `subscribed`.
    pub fn subscribe(&mut self, channel: &str, since: Option<Value>) -> (Vec<Value>, Value) {
        let mut request = json!({"type": "subscribe", "channel": channel});
        if let Some(since) = since {
            request["since"] = since;
        }
        self.send(request);
        let mut replayed = Vec::new();
        loop {
            let event = self.recv();
            if event["type"] == "subscribed" {
                return (replayed, event);
            }
            replayed.push(event);
        }
    }

    /// Publishes on `channel`; `true` when it was `published`, `false` on a
    /// `redis_unavailable` error.
    pub fn publish(&mut self, channel: &str, content: &str) -> bool {
        self.send(json!({"type": "publish", "channel": channel, "content": content}));
        let reply = self.recv();
        match reply["type"].as_str() {
            Some("published") => true,
            Some("error") => {
                assert_eq!(reply["code"], "redis_unavailable", "{reply}");
                false
            }
            _ => panic!("publish answered with {reply}"),
        }
    }

    /// A round trip: every event sent to this client before the `pong` has arrived; returns
    /// those that came meanwhile.
    pub fn barrier(&mut self) -> Vec<Value> {
        self.send(json!({"type": "ping", "ts": 7}));
        let mut extra = Vec::new();
        loop {
            let event = self.recv();
            if event["type"] == "pong" {
                return extra;
            }
            extra.push(event);
        }
    }
}

/// Client options whose reads give up after `wait`.
pub fn options(wait: Duration) -> ClientOptions {
    ClientOptions {
        timeout: Some(wait),
        ..ClientOptions::default()
    }
}

/// The next JSON text message (protocol pings and pongs skipped), within `wait`.
fn next(client: &mut Client, wait: Duration) -> Value {
    let deadline = Instant::now() + wait;
    loop {
        assert!(Instant::now() < deadline, "no message within {wait:?}");
        match client.recv().expect("a message") {
            Received::Text(text) => return serde_json::from_str(&text).expect("JSON"),
            Received::Ping(_) | Received::Pong(_) => {}
            other => panic!("expected JSON text, got {other:?}"),
        }
    }
}
