//! Channel history over real sockets (PROTOCOL.md, Recovery): a subscriber that drops out and
//! resubscribes with `since` gets exactly what it missed, then the live events; `history`
//! answers the last events; `/metrics` counts what is held. The rules themselves are tables
//! in src/app/chat/tests/history.rs.

mod common;

use std::time::Duration;

use common::{sample, Server};
use serde_json::{json, Value};
use wsloop::client::{Client, ClientOptions, Received};

const WAIT: Duration = Duration::from_secs(5);

/// A connected client, past its `welcome`.
fn join(server: &Server) -> Client {
    let options = ClientOptions {
        timeout: Some(WAIT),
        ..ClientOptions::default()
    };
    let url = server.url("/ws");
    let mut client = Client::connect_with(&url, &options).expect("connect");
    assert_eq!(recv(&mut client)["type"], "welcome");
    client
}

fn send(client: &mut Client, value: Value) {
    client.send_text(&value.to_string()).expect("send");
}

/// The next JSON message, without its `ts` (the wall clock's).
fn recv(client: &mut Client) -> Value {
    loop {
        match client.recv().expect("a message") {
            Received::Text(text) => {
                let mut value: Value = serde_json::from_str(&text).expect("JSON");
                if let Some(object) = value.as_object_mut() {
                    object.remove("ts");
                }
                return value;
            }
            Received::Ping(_) | Received::Pong(_) => {}
            other => panic!("expected JSON text, got {other:?}"),
        }
    }
}

/// `bob` publishes `content` on news and gets `published`.
fn publish(bob: &mut Client, content: &str) {
    send(
        bob,
        json!({"type": "publish", "channel": "news", "content": content}),
    );
    assert_eq!(recv(bob)["type"], "published");
}

#[test]
fn a_resubscriber_gets_exactly_what_it_missed_then_live_events() {
    let server = Server::serve(&["--history-size", "3"]);
    let mut alice = join(&server);
    let mut bob = join(&server);
    send(&mut alice, json!({"type": "subscribe", "channel": "news"}));
    let subscribed = recv(&mut alice);
    let epoch = subscribed["epoch"].as_str().expect("an epoch").to_owned();
    assert_eq!(
        subscribed,
        json!({"type": "subscribed", "channel": "news", "offset": 0, "epoch": epoch})
    );
    publish(&mut bob, "m1");
    let m1 = recv(&mut alice);
    assert_eq!((&m1["content"], &m1["offset"]), (&json!("m1"), &json!(1)));
    assert_eq!(m1["epoch"], epoch.as_str());
    let message = |n: u64| {
        let mut m = m1.clone();
        m["content"] = format!("m{n}").into();
        m["offset"] = n.into();
        m
    };
    drop(alice);
    publish(&mut bob, "m2");
    publish(&mut bob, "m3");

    let mut alice = join(&server);
    let since = json!({"offset": 1, "epoch": epoch});
    send(
        &mut alice,
        json!({"type": "subscribe", "channel": "news", "since": since}),
    );
    assert_eq!(recv(&mut alice), message(2));
    assert_eq!(recv(&mut alice), message(3));
    assert_eq!(
        recv(&mut alice),
        json!({"type": "subscribed", "channel": "news", "offset": 3, "epoch": epoch,
               "recovered": true})
    );
    publish(&mut bob, "m4");
    assert_eq!(recv(&mut alice), message(4), "live after the replay");

    // Three are kept: after m5, m2 is gone, and offset 1 cannot be recovered from; what is
    // held is replayed.
    publish(&mut bob, "m5");
    let mut carol = join(&server);
    send(
        &mut carol,
        json!({"type": "subscribe", "channel": "news", "since": since}),
    );
    for n in 3..=5 {
        assert_eq!(recv(&mut carol), message(n));
    }
    let subscribed = recv(&mut carol);
    assert_eq!(subscribed["recovered"], false, "{subscribed}");

    send(
        &mut bob,
        json!({"type": "history", "channel": "news", "limit": 2}),
    );
    let history = recv(&mut bob);
    let stamped = |n: u64| {
        let mut m = message(n);
        m["ts"] = history["messages"][n as usize - 4]["ts"].clone();
        m
    };
    assert_eq!(
        history,
        json!({"type": "history", "channel": "news", "offset": 5, "epoch": epoch,
               "messages": [stamped(4), stamped(5)]})
    );
    assert_eq!(sample(&server, "wsloop_history_messages"), 3);
    assert!(sample(&server, "wsloop_history_bytes") > 0);
    assert_eq!(sample(&server, "wsloop_history_evictions_total"), 0);
}

#[test]
fn history_size_zero_keeps_none() {
    let server = Server::serve(&["--history-size", "0"]);
    let mut alice = join(&server);
    send(
        &mut alice,
        json!({"type": "subscribe", "channel": "news",
                            "since": {"offset": 1, "epoch": "e"}}),
    );
    assert_eq!(
        recv(&mut alice),
        json!({"type": "subscribed", "channel": "news", "recovered": false})
    );
    send(
        &mut alice,
        json!({"type": "publish", "channel": "news", "content": "x"}),
    );
    let message = recv(&mut alice);
    assert!(message.get("offset").is_none(), "{message}");
    assert_eq!(recv(&mut alice)["type"], "published");
    send(&mut alice, json!({"type": "history", "channel": "news"}));
    assert_eq!(recv(&mut alice)["code"], "history_off");
}
