//! The server API (issue 15) with raw HTTP requests, as a backend's `curl` would send them:
//! on the simulation every endpoint, its answer and what the clients receive; then over a
//! real socket against the process.
#![cfg(feature = "auth")]

mod common;

use std::net::{IpAddr, Ipv4Addr};

use serde_json::{json, Value};
use wsloop::app::access::{Access, Tokens};
use wsloop::app::auth::keys::ApiKeys;
use wsloop::app::serve::{Serve, ServeConfig};
use wsloop::server::sim::{Sim, SimPeer};
use wsloop::server::{Config, Listener};

use common::raw::OutFrame;
use common::{http_exchange, upgrade_request, Server, TempFile};

const KEY: &str = "backend-key-0123456789";

fn server() -> Sim<Serve> {
    let access = Access {
        tokens: Some(Tokens::parse("t-ann ann\nt-bob bob\n").expect("tokens")),
        api_keys: Some(ApiKeys::parse(KEY).expect("key")),
        ..Access::default()
    };
    let config = ServeConfig {
        access,
        ..ServeConfig::default()
    };
    Sim::new(Config::default(), Serve::new(config))
}

/// Server frames in `bytes`: (opcode, payload); frames under 64 KiB only (a 7- or 16-bit
/// length, RFC 6455 §5.2).
fn frames(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while bytes.len() >= 2 {
        let (opcode, len) = (bytes[0] & 0x0f, (bytes[1] & 0x7f) as usize);
        assert!(len < 127, "a frame under 64 KiB");
        let (start, len) = match len {
            126 => (4, usize::from(u16::from_be_bytes([bytes[2], bytes[3]]))),
            len => (2, len),
        };
        out.push((opcode, bytes[start..start + len].to_vec()));
        bytes = &bytes[start + len..];
    }
    out
}

/// The JSON messages `peer` received since the last look, without their `ts`.
fn received(sim: &mut Sim<Serve>, peer: &SimPeer) -> Vec<Value> {
    frames(&sim.take(peer))
        .into_iter()
        .map(|(opcode, payload)| {
            assert_eq!(opcode, 1, "{payload:?}");
            let mut value: Value = serde_json::from_slice(&payload).expect("JSON");
            if let Some(object) = value.as_object_mut() {
                object.remove("ts");
            }
            value
        })
        .collect()
}

/// A client of `token`'s user, welcomed (the welcome is taken).
fn client(sim: &mut Sim<Serve>, token: &str) -> SimPeer {
    let peer = sim.connect();
    let upgrade = upgrade_request("/ws", &format!("Authorization: Bearer {token}\r\n"));
    sim.send(&peer, upgrade.as_bytes());
    let reply = sim.take(&peer);
    assert!(reply.starts_with(b"HTTP/1.1 101 "));
    peer
}

fn send(sim: &mut Sim<Serve>, peer: &SimPeer, message: &Value) {
    sim.send(peer, &OutFrame::text(message.to_string()).encode());
}

/// The API's answer: (status, JSON body).
fn api(
    sim: &mut Sim<Serve>,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: &str,
) -> (u16, Value) {
    api_on(sim, Listener::Listen, method, path, auth, body)
}

/// The answer of a request to an address of the kind `listener`: (status, JSON body).
fn api_on(
    sim: &mut Sim<Serve>,
    listener: Listener,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: &str,
) -> (u16, Value) {
    let auth = auth.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: sim\r\n{auth}Content-Type: application/json\r\n\
Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let peer = sim.connect_to(IpAddr::V4(Ipv4Addr::LOCALHOST), listener);
    sim.send(&peer, request.as_bytes());
    let reply = String::from_utf8(sim.take(&peer)).expect("UTF-8");
    let (head, body) = reply.split_once("\r\n\r\n").expect("a head");
    let status = head[9..12].parse().expect("status");
    (
        status,
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {reply}")),
    )
}

fn with_key(sim: &mut Sim<Serve>, method: &str, path: &str, body: &Value) -> (u16, Value) {
    api(
        sim,
        method,
        path,
        Some(&format!("apikey {KEY}")),
        &body.to_string(),
    )
}

#[test]
fn a_wrong_or_missing_key_gets_401_and_no_key_file_404() {
    let mut sim = server();
    let body = json!({"content": "x"}).to_string();
    for auth in [
        None,
        Some("apikey wrong-key-0123456789"),
        Some(&format!("Bearer {KEY}") as &str),
    ] {
        let (status, answer) = api(&mut sim, "POST", "/api/broadcast", auth, &body);
        assert_eq!(status, 401, "{auth:?}");
        assert_eq!(
            answer,
            json!({"error": "a valid API key is required (Authorization: apikey KEY)"})
        );
    }
    let (status, _) = api(&mut sim, "GET", "/api/channels", None, "");
    assert_eq!(status, 401);
    let mut off = Sim::new(Config::default(), Serve::new(ServeConfig::default()));
    let (status, answer) = api(
        &mut off,
        "POST",
        "/api/broadcast",
        Some(&format!("apikey {KEY}")),
        &body,
    );
    assert_eq!(
        (status, answer),
        (
            404,
            json!({"error": "the server API is off (start with --api-key-file)"})
        )
    );
}

/// `--api-listen`: the API on the internal address only, which serves nothing else but the
/// operator's endpoints, and limits no request rate (the backend calls often).
#[test]
fn api_listen_keeps_the_api_off_the_public_addresses() {
    let mut config = Config::default();
    config.per_address.requests_per_second = 1.0;
    // Two requests: the client's upgrade and the public API call below.
    config.per_address.burst = 2.0;
    let serve = ServeConfig {
        access: Access {
            tokens: Some(Tokens::parse("t-ann ann\n").expect("tokens")),
            api_keys: Some(ApiKeys::parse(KEY).expect("key")),
            ..Access::default()
        },
        api_internal: true,
        ..ServeConfig::default()
    };
    let mut sim = Sim::new(config, Serve::new(serve));
    let ann = client(&mut sim, "t-ann");
    let key = format!("apikey {KEY}");
    let body = json!({"content": "hello"}).to_string();
    let (status, answer) = api(&mut sim, "POST", "/api/broadcast", Some(&key), &body);
    assert_eq!(
        (status, answer),
        (
            404,
            json!({"error": "the server API is not served on this address (see --api-listen)"})
        )
    );
    // Five requests in a row from one address at one instant, over a limit of one a second
    // with the burst spent.
    for _ in 0..5 {
        let (status, answer) = api_on(
            &mut sim,
            Listener::Internal,
            "POST",
            "/api/broadcast",
            Some(&key),
            &body,
        );
        assert_eq!((status, answer), (200, json!({"delivered": 1})));
    }
    let chats = received(&mut sim, &ann);
    assert_eq!(chats.len(), 5, "{chats:?}");
    assert!(chats
        .iter()
        .all(|c| c["content"] == "hello" && c["from"] == "server"));
    let (status, answer) = api_on(&mut sim, Listener::Internal, "GET", "/", None, "");
    assert_eq!(
        (status, answer),
        (
            404,
            json!({"error": "this address serves only /api/, /healthz, /readyz and /metrics"})
        )
    );
    let (status, answer) = api_on(&mut sim, Listener::Internal, "GET", "/healthz", None, "");
    assert_eq!((status, &answer["status"]), (200, &json!("ok")));
    // No WebSocket on the internal address.
    let peer = sim.connect_to(IpAddr::V4(Ipv4Addr::LOCALHOST), Listener::Internal);
    sim.send(
        &peer,
        upgrade_request("/ws", "Authorization: Bearer t-ann\r\n").as_bytes(),
    );
    let reply = String::from_utf8(sim.take(&peer)).expect("UTF-8");
    assert!(reply.starts_with("HTTP/1.1 404 "), "{reply}");
    // The public address still limits the rate: the second request in the instant is refused.
    let peer = sim.connect();
    sim.send(&peer, b"GET /healthz HTTP/1.1\r\nHost: sim\r\n\r\n");
    let reply = String::from_utf8(sim.take(&peer)).expect("UTF-8");
    assert!(reply.starts_with("HTTP/1.1 429 "), "{reply}");
}

#[test]
fn publish_broadcast_and_channels() {
    let mut sim = server();
    let ann = client(&mut sim, "t-ann");
    let bob = client(&mut sim, "t-bob");
    send(
        &mut sim,
        &ann,
        &json!({"type": "subscribe", "channel": "news"}),
    );
    sim.take(&ann);
    let (status, answer) = with_key(
        &mut sim,
        "POST",
        "/api/publish",
        &json!({"channel": "news", "content": "hi"}),
    );
    assert_eq!((status, answer), (200, json!({"delivered": 1})));
    // The backend's events are in the history like any other: the first of each topic.
    let got = received(&mut sim, &ann);
    let epoch = got[0]["epoch"].clone();
    assert!(epoch.is_string(), "{got:?}");
    assert_eq!(
        got,
        [
            json!({"type": "message", "channel": "news", "from": "server", "id": "server",
                "content": "hi", "offset": 1, "epoch": epoch})
        ]
    );
    assert!(received(&mut sim, &bob).is_empty(), "not subscribed");
    let (status, answer) = with_key(
        &mut sim,
        "POST",
        "/api/broadcast",
        &json!({"content": "all", "from": "billing"}),
    );
    assert_eq!((status, answer), (200, json!({"delivered": 2})));
    for peer in [&ann, &bob] {
        let got = received(&mut sim, peer);
        let epoch = got[0]["epoch"].clone();
        assert!(epoch.is_string(), "{got:?}");
        assert_eq!(
            got,
            [
                json!({"type": "chat", "from": "billing", "id": "server", "content": "all",
                    "offset": 1, "epoch": epoch})
            ]
        );
    }
    let (status, answer) = with_key(&mut sim, "GET", "/api/channels", &json!({}));
    assert_eq!(
        (status, answer),
        (
            200,
            json!({"channels": [{"name": "news", "subscribers": 1}]})
        )
    );
}

#[test]
fn presence_lists_the_users_of_a_channel() {
    let mut sim = server();
    let ann1 = client(&mut sim, "t-ann");
    let ann2 = client(&mut sim, "t-ann");
    let bob = client(&mut sim, "t-bob");
    for peer in [&ann1, &ann2, &bob] {
        send(
            &mut sim,
            peer,
            &json!({"type": "subscribe", "channel": "news room"}),
        );
    }
    let ann_only = json!({"channel": "news room", "users": [{"user": "ann", "name": "ann"}]});
    send(
        &mut sim,
        &bob,
        &json!({"type": "unsubscribe", "channel": "news room"}),
    );
    assert_eq!(
        with_key(
            &mut sim,
            "GET",
            "/api/presence?channel=news%20room",
            &json!({})
        ),
        (200, ann_only),
        "two connections, one user; bob left"
    );
    assert_eq!(
        with_key(&mut sim, "GET", "/api/presence?channel=empty", &json!({})),
        (200, json!({"channel": "empty", "users": []}))
    );
    let channel_required = json!({"error": "the query parameter channel is required"});
    assert_eq!(
        with_key(&mut sim, "GET", "/api/presence", &json!({})),
        (400, channel_required)
    );
    let (status, answer) = with_key(&mut sim, "GET", "/api/presence?channel=", &json!({}));
    assert_eq!((status, &answer["code"]), (400, &json!("invalid_channel")));
    let (status, _) = api(&mut sim, "GET", "/api/presence?channel=news", None, "");
    assert_eq!(status, 401, "the key is required");
    assert_eq!(
        with_key(&mut sim, "POST", "/api/presence?channel=news", &json!({})),
        (405, json!({"error": "use GET"}))
    );
}

#[test]
fn send_reaches_every_connection_of_the_user_and_disconnect_closes_them() {
    let mut sim = server();
    let ann1 = client(&mut sim, "t-ann");
    let ann2 = client(&mut sim, "t-ann");
    let bob = client(&mut sim, "t-bob");
    let (status, answer) = with_key(
        &mut sim,
        "POST",
        "/api/send",
        &json!({"user": "ann", "content": "your invoice"}),
    );
    assert_eq!((status, answer), (200, json!({"delivered": 2})));
    for peer in [&ann1, &ann2] {
        assert_eq!(
            received(&mut sim, peer),
            [json!({"type": "direct", "to": "ann", "from": "server", "content": "your invoice"})]
        );
    }
    assert!(received(&mut sim, &bob).is_empty());
    let (status, answer) = with_key(&mut sim, "POST", "/api/disconnect", &json!({"user": "ann"}));
    assert_eq!((status, answer), (200, json!({"disconnected": 2})));
    for peer in [&ann1, &ann2] {
        let close = frames(&sim.take(peer));
        assert_eq!(close.len(), 1);
        assert_eq!(close[0].0, 8);
        assert_eq!(&close[0].1[..2], &4003u16.to_be_bytes());
        assert_eq!(&close[0].1[2..], b"disconnected by the server");
    }
    assert!(sim.take(&bob).is_empty());
    let (_, answer) = with_key(
        &mut sim,
        "POST",
        "/api/send",
        &json!({"user": "nobody", "content": "x"}),
    );
    assert_eq!(answer, json!({"delivered": 0}));
}

#[test]
fn bad_requests_get_json_errors() {
    let mut sim = server();
    let long = "x".repeat(16 * 1024 + 1);
    for (method, path, body, status, error) in [
        (
            "POST",
            "/api/publish",
            json!({"content": "x"}),
            400,
            json!({"error": "field \"channel\" is required"}),
        ),
        (
            "POST",
            "/api/publish",
            json!({"channel": "", "content": "x"}),
            400,
            json!({"error": "a channel name must be 1 to 64 bytes long", "code": "invalid_channel"}),
        ),
        (
            "POST",
            "/api/broadcast",
            json!({"content": long}),
            400,
            json!({"error": "content is 16385 bytes; the limit is 16384", "code": "content_too_long"}),
        ),
        (
            "POST",
            "/api/send",
            json!({"user": "ann", "content": 1}),
            400,
            json!({"error": "field \"content\" must be a string"}),
        ),
        (
            "POST",
            "/api/send",
            json!({"user": "ann", "content": "x", "cc": "bob"}),
            400,
            json!({"error": "unknown field \"cc\""}),
        ),
        (
            "GET",
            "/api/publish",
            json!({}),
            405,
            json!({"error": "use POST"}),
        ),
        (
            "POST",
            "/api/channels",
            json!({}),
            405,
            json!({"error": "use GET"}),
        ),
        (
            "GET",
            "/api/nothing",
            json!({}),
            404,
            json!({"error": "no such API endpoint"}),
        ),
    ] {
        assert_eq!(
            with_key(&mut sim, method, path, &body),
            (status, error),
            "{method} {path} {body}"
        );
    }
}

/// Over a real socket: the request a backend's `curl` sends, `Expect: 100-continue` and all.
#[test]
fn the_process_answers_the_api_over_http() {
    let keys = TempFile::new("api-keys", &format!("# backend\n{KEY}\n"));
    let server = Server::serve(&["--api-key-file", keys.path()]);
    let body = json!({"content": "from the backend"}).to_string();
    let request = format!(
        "POST /api/broadcast HTTP/1.1\r\nHost: x\r\nAuthorization: apikey {KEY}\r\n\
Content-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    // The interim 100 first, then the answer (which `http_exchange` sees as the body).
    let (head, rest) = http_exchange(server.addr, request.as_bytes());
    assert_eq!(head, "HTTP/1.1 100 Continue");
    let rest = String::from_utf8(rest).expect("UTF-8");
    assert!(rest.starts_with("HTTP/1.1 200 OK\r\n"), "{rest}");
    assert!(rest.ends_with("\r\n\r\n{\"delivered\":0}"), "{rest}");
    let (head, _) = http_exchange(
        server.addr,
        b"GET /api/channels HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert!(head.starts_with("HTTP/1.1 401 "), "{head}");
    assert!(head.contains("\r\nWWW-Authenticate: apikey"), "{head}");
}

#[test]
fn api_listen_serves_the_api_on_its_own_port() {
    let keys = TempFile::new("api-listen-keys", &format!("{KEY}\n"));
    let server = Server::start_listening(
        "serve",
        &[
            "--listen",
            "127.0.0.1:0",
            "--api-key-file",
            keys.path(),
            "--api-listen",
            "127.0.0.1:0",
        ],
        2,
    );
    let (public, internal) = (server.addrs[0], server.addrs[1]);
    assert_ne!(public, internal);
    let request =
        format!("GET /api/channels HTTP/1.1\r\nHost: x\r\nAuthorization: apikey {KEY}\r\n\r\n");
    let (head, body) = http_exchange(internal, request.as_bytes());
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert_eq!(body, br#"{"channels":[]}"#);
    let (head, _) = http_exchange(public, request.as_bytes());
    assert!(head.starts_with("HTTP/1.1 404 "), "{head}");
}
