//! `wsloop serve` over real loopback sockets, against PROTOCOL.md: the JSON messages, the
//! wiring of error replies (which request gets which error code is the in-process table of
//! `src/app/chat/tests.rs`), channels, the broadcast pass, the HTTP routes, heartbeats, tokens,
//! origins, graceful shutdown, and the `wsloop client` command line.
//!
//! Every test starts its own server on 127.0.0.1:0 (killed when its handle drops) and bounds
//! every wait. "Nobody else received anything" is checked with a short quiet wait followed by
//! a ping/pong round trip: the server handled the offending request before the observer's
//! ping, so anything it had sent the observer would arrive before the pong.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::raw::{is_timeout, opcode, RawClient, ReadError};
use common::{assert_keys, assert_recent_ts, rejections, Server, TempFile};
use serde_json::{json, Value};
use wsloop::client::{Client, ClientError, ClientOptions, Received};

/// The bound on any single wait for something that should happen.
const WAIT: Duration = Duration::from_secs(5);
/// How long to listen for something that should not arrive (before the ping barrier).
const QUIET: Duration = Duration::from_millis(150);
/// How far a server timestamp may be from the test's clock.
const TS_SLACK_MS: u64 = 5_000;

const INDEX_HTML: &str = include_str!("../web/index.html");
const APP_JS: &str = include_str!("../web/app.js");
const RECOVERY_JS: &str = include_str!("../web/recovery.js");
const STYLE_CSS: &str = include_str!("../web/style.css");

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Whether `text` contains `word` as a whole word (split on anything not alphanumeric or `_`).
fn mentions_word(text: &str, word: &str) -> bool {
    text.split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .any(|w| w == word)
}

/// Polls `condition` every 20 ms for up to [`WAIT`].
fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// A chat client on the `Client` of the crate (which answers pings by itself), welcomed.
struct Peer {
    client: Client,
    id: String,
    name: String,
    barrier_ts: u64,
}

impl Peer {
    /// `N` clients on the same server, each welcomed.
    fn join_many<const N: usize>(server: &Server) -> [Peer; N] {
        std::array::from_fn(|_| Peer::join(server))
    }

    /// Connects to `/ws` and checks the welcome.
    fn join(server: &Server) -> Peer {
        Peer::join_url(&server.url("/ws"), &[])
    }

    /// Connects to `url` with extra request headers and checks the welcome: exactly `type`,
    /// `id` (a non-empty string), `name` (a string) and a current `ts`.
    fn join_url(url: &str, headers: &[&str]) -> Peer {
        let options = ClientOptions {
            headers: headers.iter().map(|h| (*h).to_owned()).collect(),
            timeout: Some(WAIT),
            ..ClientOptions::default()
        };
        let client = Client::connect_with(url, &options)
            .unwrap_or_else(|e| panic!("connect to {url} with {headers:?}: {e}"));
        let mut peer = Peer {
            client,
            id: String::new(),
            name: String::new(),
            barrier_ts: 1_000,
        };
        let welcome = peer.recv();
        assert_keys(&welcome, &["type", "id", "user", "name", "ts"]);
        assert_eq!(welcome["type"], "welcome", "first message: {welcome}");
        let id = welcome["id"].as_str().expect("welcome.id is a string");
        assert!(!id.is_empty(), "empty welcome.id: {welcome}");
        let name = welcome["name"].as_str().expect("welcome.name is a string");
        assert_recent_ts(&welcome["ts"], TS_SLACK_MS, "welcome");
        peer.id = id.to_owned();
        peer.name = name.to_owned();
        peer
    }

    fn send_text(&mut self, text: &str) {
        self.client
            .send_text(text)
            .unwrap_or_else(|e| panic!("send {text:?}: {e}"));
    }

    fn send(&mut self, value: &Value) {
        self.send_text(&value.to_string());
    }

    /// The next text message, parsed as JSON (pings and pongs are skipped).
    fn recv(&mut self) -> Value {
        loop {
            match self.client.recv() {
                Ok(Received::Text(text)) => {
                    return serde_json::from_str(&text)
                        .unwrap_or_else(|e| panic!("server sent invalid JSON {text:?}: {e}"))
                }
                Ok(Received::Ping(_) | Received::Pong(_)) => {}
                Ok(other) => panic!("expected a JSON text message, got {other:?}"),
                Err(e) => panic!("expected a JSON text message: {e}"),
            }
        }
    }

    /// The next message, which must be of `kind`.
    fn recv_type(&mut self, kind: &str) -> Value {
        let message = self.recv();
        assert_eq!(
            message["type"], kind,
            "expected a {kind:?} message: {message}"
        );
        message
    }

    /// Expects an `error` with this code (exactly `type`, `code`, `message`); returns the
    /// message text.
    fn expect_error(&mut self, code: &str) -> String {
        let reply = self.recv();
        assert_eq!(
            reply["type"], "error",
            "expected an error {code:?}: {reply}"
        );
        assert_keys(&reply, &["type", "code", "message"]);
        assert_eq!(reply["code"], code, "error code: {reply}");
        let message = reply["message"]
            .as_str()
            .unwrap_or_else(|| panic!("error.message is not a string: {reply}"));
        assert!(!message.is_empty(), "empty error message: {reply}");
        message.to_owned()
    }

    /// A ping/pong round trip: the very next message must be the pong that echoes it.
    fn barrier(&mut self) {
        self.barrier_ts += 1;
        let ts = self.barrier_ts;
        self.send(&json!({"type": "ping", "ts": ts}));
        let reply = self.recv();
        assert_eq!(
            reply["type"], "pong",
            "expected only the pong of the barrier ping, got {reply}"
        );
        assert_eq!(reply["echo"], ts, "barrier pong: {reply}");
    }

    /// Asserts that nothing arrives: a bounded quiet wait, then a ping/pong barrier.
    fn expect_nothing(&mut self) {
        let deadline = Instant::now() + QUIET;
        loop {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            self.client.set_timeout(Some(deadline - now)).unwrap();
            match self.client.recv() {
                Err(ClientError::Io(e)) if is_timeout(&e) => break,
                Ok(Received::Ping(_) | Received::Pong(_)) => {}
                Ok(other) => panic!("{} expected nothing, got {other:?}", self.id),
                Err(e) => panic!("{} expected nothing, got error {e}", self.id),
            }
        }
        self.client.set_timeout(Some(WAIT)).unwrap();
        self.barrier();
    }

    /// Closes with 1000 and waits for the server's close reply.
    fn close(mut self) {
        self.client.close(1000, "bye").expect("send close");
        loop {
            match self.client.recv() {
                Ok(Received::Close(code, _)) => {
                    assert_eq!(code, Some(1000), "server's close reply");
                    return;
                }
                Ok(_) => {}
                Err(e) => panic!("waiting for the close reply: {e}"),
            }
        }
    }
}

/// Sends `request` from `sender` and checks: an error with `code` whose message mentions each
/// of `words`, the connection still answers a ping, and no observer received anything.
fn rejects(
    sender: &mut Peer,
    observers: &mut [&mut Peer],
    request: &str,
    code: &str,
    words: &[&str],
) {
    sender.send_text(request);
    let message = sender.expect_error(code);
    for word in words {
        assert!(
            mentions_word(&message, word),
            "error for {request:?} should mention {word:?}: {message:?}"
        );
    }
    sender.barrier();
    for observer in observers.iter_mut() {
        observer.expect_nothing();
    }
}

/// A plain HTTP answer.
struct HttpReply {
    head: String,
    body: Vec<u8>,
}

impl HttpReply {
    /// The status line.
    fn status(&self) -> &str {
        common::status_line(&self.head)
    }

    /// The first value of header `name` (case-insensitive).
    fn header(&self, name: &str) -> Option<&str> {
        common::header(&self.head, name)
    }

    /// The media type of `Content-Type`, without parameters.
    fn media_type(&self) -> &str {
        let value = self.header("Content-Type").unwrap_or_default();
        value.split(';').next().unwrap_or_default().trim()
    }

    fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("UTF-8 body")
    }
}

/// Writes `request` over a fresh connection and reads the answer to EOF (the server closes
/// after each plain response).
fn http(addr: SocketAddr, request: &str) -> HttpReply {
    let mut stream = TcpStream::connect_timeout(&addr, WAIT).expect("connect");
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.set_write_timeout(Some(WAIT)).unwrap();
    stream.write_all(request.as_bytes()).expect("write request");
    let mut bytes = Vec::new();
    if let Err(e) = stream.read_to_end(&mut bytes) {
        panic!(
            "reading the answer to {request:?}: {e}; got so far {:?}",
            String::from_utf8_lossy(&bytes)
        );
    }
    let end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete head: {:?}", String::from_utf8_lossy(&bytes)));
    let reply = HttpReply {
        head: String::from_utf8_lossy(&bytes[..end]).into_owned(),
        body: bytes[end + 4..].to_vec(),
    };
    let length: usize = reply
        .header("Content-Length")
        .unwrap_or_else(|| panic!("no Content-Length: {}", reply.head))
        .parse()
        .expect("numeric Content-Length");
    assert_eq!(
        length,
        reply.body.len(),
        "Content-Length vs body: {}",
        reply.head
    );
    reply
}

fn get(addr: SocketAddr, path: &str) -> HttpReply {
    http(addr, &format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"))
}

/// A complete upgrade request for `path` with extra header lines (each ending in CRLF).
fn upgrade_request(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

/// The `/healthz` JSON, checked for status 200 and exact fields.
fn health(server: &Server) -> Value {
    let reply = get(server.addr, "/healthz");
    assert_eq!(reply.status(), "HTTP/1.1 200 OK", "{}", reply.head);
    assert_eq!(reply.media_type(), "application/json", "{}", reply.head);
    let value: Value = serde_json::from_slice(&reply.body).expect("/healthz is JSON");
    assert_keys(&value, &["status", "connections", "uptime_s"]);
    assert_eq!(value["status"], "ok");
    let uptime = value["uptime_s"].as_u64().expect("uptime_s is an integer");
    assert!(uptime < 600, "uptime_s {uptime} for a server just started");
    value
}

fn health_connections(server: &Server) -> u64 {
    health(server)["connections"]
        .as_u64()
        .expect("connections is an integer")
}

/// `/metrics` as `series -> value` (series with labels, e.g. `wsloop_closes_total{code="1000"}`),
/// checked for status 200 and the Prometheus text content type.
fn metrics(server: &Server) -> BTreeMap<String, u64> {
    let reply = get(server.addr, "/metrics");
    assert_eq!(reply.status(), "HTTP/1.1 200 OK", "{}", reply.head);
    assert_eq!(
        reply.header("Content-Type"),
        Some("text/plain; version=0.0.4; charset=utf-8"),
        "{}",
        reply.head
    );
    common::parse_metrics(reply.text())
}

/// A series that must be present.
fn sample(metrics: &BTreeMap<String, u64>, series: &str) -> u64 {
    *metrics
        .get(series)
        .unwrap_or_else(|| panic!("no series {series} in {metrics:?}"))
}

/// A raw client that completed the handshake on `path` (it answers nothing by itself).
fn raw_open(server: &Server, path: &str) -> RawClient {
    let mut raw = RawClient::connect_tcp(server.addr);
    raw.handshake(path);
    raw
}

/// Reads a raw client's frames until a close frame; returns its code. Text frames (the
/// welcome) are skipped; a ping is recorded but not answered.
fn raw_read_until_close(raw: &mut RawClient) -> Option<u16> {
    loop {
        let frame = raw.read_frame();
        match frame.opcode {
            opcode::TEXT | opcode::PING => {}
            opcode::CLOSE => return frame.close_code().0,
            other => panic!("unexpected opcode {other:#x}: {frame:?}"),
        }
    }
}

/// Runs `wsloop <args>` with `stdin` as standard input; returns the exit code, stdout and
/// stderr. Killed (and the test failed) if it runs longer than `timeout`.
fn run_wsloop(
    args: &[&str],
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> (Option<i32>, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wsloop"))
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn wsloop");
    let reader = |mut pipe: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = reader(Box::new(child.stdout.take().expect("stdout")));
    let stderr = reader(Box::new(child.stderr.take().expect("stderr")));
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin");
        pipe.write_all(input).expect("write stdin");
        // Dropping the pipe closes standard input.
    }
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let out = stdout.join().unwrap_or_default();
            let err = stderr.join().unwrap_or_default();
            panic!(
                "wsloop {args:?} still running after {timeout:?}; stdout {out:?}, stderr {err:?}"
            );
        }
        thread::sleep(Duration::from_millis(20));
    };
    let out = stdout.join().expect("stdout reader");
    let err = stderr.join().expect("stderr reader");
    (status.code(), out, err)
}

// ---------------------------------------------------------------------------------------------
// welcome, ping
// ---------------------------------------------------------------------------------------------

#[test]
fn welcome_on_open_has_id_name_and_ts() {
    let server = Server::serve(&[]);
    let peer = Peer::join(&server);
    // Without tokens the name is the id.
    assert_eq!(peer.name, peer.id);
}

#[test]
fn connection_ids_are_unique() {
    let server = Server::serve(&[]);
    let mut peers: Vec<Peer> = (0..5).map(|_| Peer::join(&server)).collect();
    let mut ids: BTreeSet<String> = peers.iter().map(|p| p.id.clone()).collect();
    assert_eq!(ids.len(), 5, "ids of 5 connections: {ids:?}");
    // A connection opened after another closed (its slot free again) gets a new id too.
    peers.remove(2).close();
    let late = Peer::join(&server);
    assert!(
        ids.insert(late.id.clone()),
        "id {} reused (earlier ids {ids:?})",
        late.id
    );
}

#[test]
fn ping_gets_pong_echoing_an_integer_ts() {
    let server = Server::serve(&[]);
    let mut peer = Peer::join(&server);
    for ts in [1_795_000_000_200_u64, 0, 42] {
        peer.send(&json!({"type": "ping", "ts": ts}));
        let pong = peer.recv_type("pong");
        assert_keys(&pong, &["type", "ts", "echo"]);
        assert_eq!(pong["echo"], json!(ts), "{pong}");
        assert!(pong["echo"].is_u64(), "echo kept as an integer: {pong}");
        assert_recent_ts(&pong["ts"], TS_SLACK_MS, "pong");
    }
}

#[test]
fn ping_gets_pong_echoing_a_float_ts() {
    let server = Server::serve(&[]);
    let mut peer = Peer::join(&server);
    for ts in [12.5_f64, 1_795_000_000_200.25, 0.125] {
        peer.send(&json!({"type": "ping", "ts": ts}));
        let pong = peer.recv_type("pong");
        assert_keys(&pong, &["type", "ts", "echo"]);
        assert_eq!(pong["echo"].as_f64(), Some(ts), "{pong}");
        assert_recent_ts(&pong["ts"], TS_SLACK_MS, "pong");
    }
}

// ---------------------------------------------------------------------------------------------
// chat
// ---------------------------------------------------------------------------------------------

#[test]
fn chat_reaches_every_client_including_the_sender() {
    let server = Server::serve(&[]);
    let mut peers: Vec<Peer> = (0..3).map(|_| Peer::join(&server)).collect();
    for (sender, content) in [(0, "hello, everyone"), (2, "quotes \" \\ and ünïcödé ✓")] {
        let (from, id) = (peers[sender].name.clone(), peers[sender].id.clone());
        peers[sender].send(&json!({"type": "chat", "content": content}));
        for peer in &mut peers {
            let chat = peer.recv_type("chat");
            assert_keys(
                &chat,
                &["type", "from", "id", "content", "ts", "offset", "epoch"],
            );
            assert_eq!(chat["from"], from.as_str(), "{chat}");
            assert_eq!(chat["id"], id.as_str(), "{chat}");
            assert_eq!(chat["content"], content, "{chat}");
            assert_recent_ts(&chat["ts"], TS_SLACK_MS, "chat");
        }
    }
    // Each got each chat exactly once.
    for peer in &mut peers {
        peer.expect_nothing();
    }
}

// ---------------------------------------------------------------------------------------------
// channels
// ---------------------------------------------------------------------------------------------

fn subscribe(peer: &mut Peer, channel: &str) {
    peer.send(&json!({"type": "subscribe", "channel": channel}));
    let reply = peer.recv_type("subscribed");
    assert_keys(&reply, &["type", "channel", "offset", "epoch"]);
    assert_eq!(reply["channel"], channel, "{reply}");
}

fn publish(peer: &mut Peer, channel: &str, content: &str) {
    peer.send(&json!({"type": "publish", "channel": channel, "content": content}));
}

/// Expects the `published` answer; returns `receivers`.
fn expect_published(peer: &mut Peer, channel: &str) -> u64 {
    let reply = peer.recv_type("published");
    assert_keys(&reply, &["type", "channel", "receivers"]);
    assert_eq!(reply["channel"], channel, "{reply}");
    reply["receivers"]
        .as_u64()
        .unwrap_or_else(|| panic!("receivers is not an integer: {reply}"))
}

/// The id and name a peer's messages carry.
struct Sender {
    id: String,
    name: String,
}

fn sender_of(peer: &Peer) -> Sender {
    Sender {
        id: peer.id.clone(),
        name: peer.name.clone(),
    }
}

/// Expects a `message` on `channel` from `from` with `content` (exact fields).
fn expect_message_from(peer: &mut Peer, channel: &str, from: &Sender, content: &str) {
    let message = peer.recv_type("message");
    assert_keys(
        &message,
        &[
            "type", "channel", "from", "id", "content", "ts", "offset", "epoch",
        ],
    );
    assert_eq!(message["channel"], channel, "{message}");
    assert_eq!(message["from"], from.name.as_str(), "{message}");
    assert_eq!(message["id"], from.id.as_str(), "{message}");
    assert_eq!(message["content"], content, "{message}");
    assert_recent_ts(&message["ts"], TS_SLACK_MS, "message");
}

#[test]
fn publish_reaches_only_subscribers() {
    let server = Server::serve(&[]);
    let [mut a, mut b, mut c] = Peer::join_many(&server);
    subscribe(&mut a, "news");
    subscribe(&mut b, "news");
    subscribe(&mut c, "sports");
    publish(&mut a, "news", "hello");
    // The subscribed publisher gets the message, then `published`.
    let sender = sender_of(&a);
    expect_message_from(&mut a, "news", &sender, "hello");
    assert_eq!(expect_published(&mut a, "news"), 2);
    expect_message_from(&mut b, "news", &sender, "hello");
    c.expect_nothing();
    a.expect_nothing();
    b.expect_nothing();
}

#[test]
fn subscriptions_end_with_the_connection() {
    let server = Server::serve(&[]);
    let [mut a, mut b, mut c] = Peer::join_many(&server);
    subscribe(&mut a, "room");
    subscribe(&mut b, "room");
    publish(&mut c, "room", "one");
    assert_eq!(expect_published(&mut c, "room"), 2);
    let sender = sender_of(&c);
    expect_message_from(&mut a, "room", &sender, "one");
    expect_message_from(&mut b, "room", &sender, "one");

    // A closing handshake: b's subscription goes.
    b.close();
    publish(&mut c, "room", "two");
    assert_eq!(expect_published(&mut c, "room"), 1);
    expect_message_from(&mut a, "room", &sender, "two");

    // The TCP connection dropped without a close frame: a's subscription goes too.
    drop(a);
    wait_for("the server to notice the dropped connection", || {
        health_connections(&server) == 1
    });
    publish(&mut c, "room", "three");
    assert_eq!(expect_published(&mut c, "room"), 0);

    // A new connection does not inherit anything.
    let mut d = Peer::join(&server);
    publish(&mut c, "room", "four");
    assert_eq!(expect_published(&mut c, "room"), 0);
    d.expect_nothing();
}

// ---------------------------------------------------------------------------------------------
// errors
// ---------------------------------------------------------------------------------------------

/// A sender and an observer subscribed to `channels` (so a wrongly carried-out publish would
/// reach it).
fn error_pair(server: &Server, channels: &[&str]) -> (Peer, Peer) {
    let sender = Peer::join(server);
    let mut observer = Peer::join(server);
    for channel in channels {
        subscribe(&mut observer, channel);
    }
    (sender, observer)
}

/// The wiring of chat errors over a socket: the limit flags reach the chat (each reply names
/// the flag's value), a refused text or binary request gets its error, the connection stays
/// open and nobody else receives anything. Which request gets which error, and the limits'
/// edges, are the in-process tables of `src/app/chat/tests.rs`.
#[test]
fn error_replies_reach_only_the_sender_with_the_limits_set_by_flags() {
    let server = Server::serve(&[
        "--max-content",
        "10",
        "--max-channel-name",
        "8",
        "--max-channels",
        "2",
    ]);
    let (mut a, mut b) = error_pair(&server, &["news"]);
    subscribe(&mut a, "one");
    subscribe(&mut a, "two");
    for (request, code, word) in [
        (
            json!({"type": "publish", "channel": "news", "content": "0123456789a"}),
            "content_too_long",
            "10",
        ),
        (
            json!({"type": "publish", "channel": "123456789", "content": "x"}),
            "invalid_channel",
            "8",
        ),
        (
            json!({"type": "subscribe", "channel": "news"}),
            "too_many_channels",
            "2",
        ),
    ] {
        rejects(&mut a, &mut [&mut b], &request.to_string(), code, &[word]);
    }
    a.client
        .send_binary(br#"{"type":"publish","channel":"news","content":"x"}"#)
        .expect("send binary");
    a.expect_error("binary_not_supported");
    a.barrier();
    b.expect_nothing();
}

// ---------------------------------------------------------------------------------------------
// broadcast pass
// ---------------------------------------------------------------------------------------------

#[test]
fn broadcast_is_encoded_once_for_all_receivers() {
    let server = Server::serve(&[]);
    let mut peers: Vec<Peer> = (0..5).map(|_| Peer::join(&server)).collect();
    let before = metrics(&server);
    peers[0].send(&json!({"type": "chat", "content": "to all five"}));
    for peer in &mut peers {
        let chat = peer.recv_type("chat");
        assert_eq!(chat["content"], "to all five", "{chat}");
    }
    let after = metrics(&server);
    let delta = |series: &str| sample(&after, series) - sample(&before, series);
    assert_eq!(delta("wsloop_broadcast_encodes_total"), 1);
    assert_eq!(delta("wsloop_messages_sent_total"), 5);
    assert_eq!(delta("wsloop_messages_received_total"), 1);
}

// ---------------------------------------------------------------------------------------------
// HTTP routes
// ---------------------------------------------------------------------------------------------

#[test]
fn http_root_serves_the_page() {
    let server = Server::serve(&[]);
    let reply = get(server.addr, "/");
    assert_eq!(reply.status(), "HTTP/1.1 200 OK", "{}", reply.head);
    assert_eq!(reply.media_type(), "text/html", "{}", reply.head);
    assert!(
        reply
            .header("Content-Type")
            .is_some_and(|v| v.to_ascii_lowercase().contains("charset=utf-8")),
        "{}",
        reply.head
    );
    assert_eq!(reply.text(), INDEX_HTML);
}

#[test]
fn http_assets_have_their_content_types() {
    let server = Server::serve(&[]);
    for (path, media_type, body) in [
        ("/app.js", "text/javascript", APP_JS),
        ("/recovery.js", "text/javascript", RECOVERY_JS),
        ("/style.css", "text/css", STYLE_CSS),
    ] {
        let reply = get(server.addr, path);
        assert_eq!(reply.status(), "HTTP/1.1 200 OK", "{path}: {}", reply.head);
        assert_eq!(reply.media_type(), media_type, "{path}: {}", reply.head);
        assert_eq!(reply.text(), body, "{path}");
    }
}

#[test]
fn http_healthz_counts_open_connections() {
    let server = Server::serve(&[]);
    assert_eq!(health_connections(&server), 0);
    let a = Peer::join(&server);
    let b = Peer::join(&server);
    assert_eq!(health_connections(&server), 2);
    // A connection still handshaking is not a WebSocket connection.
    let mut half = TcpStream::connect(server.addr).expect("connect");
    half.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n")
        .expect("partial head");
    assert_eq!(health_connections(&server), 2);
    a.close();
    assert_eq!(health_connections(&server), 1);
    drop(b);
    wait_for("/healthz to count 0 connections", || {
        health_connections(&server) == 0
    });
}

#[test]
fn http_metrics_exposes_the_counters() {
    let server = Server::serve(&[]);
    let reply = get(server.addr, "/metrics");
    for (name, kind) in [
        ("wsloop_open_connections", "gauge"),
        ("wsloop_tcp_connections", "gauge"),
        ("wsloop_connections_total", "counter"),
        ("wsloop_accepted_total", "counter"),
        ("wsloop_messages_received_total", "counter"),
        ("wsloop_messages_sent_total", "counter"),
        ("wsloop_bytes_received_total", "counter"),
        ("wsloop_bytes_sent_total", "counter"),
        ("wsloop_broadcast_encodes_total", "counter"),
        ("wsloop_deflate_negotiated_total", "counter"),
        ("wsloop_deflate_connections", "gauge"),
        ("wsloop_handshake_rejections_total", "counter"),
        ("wsloop_closes_total", "counter"),
        ("wsloop_protocol_errors_total", "counter"),
        ("wsloop_slow_consumer_disconnects_total", "counter"),
        ("wsloop_heartbeat_timeouts_total", "counter"),
        ("wsloop_uptime_seconds", "gauge"),
    ] {
        let type_line = format!("# TYPE {name} {kind}");
        assert!(
            reply.text().lines().any(|l| l == type_line),
            "no {type_line:?} in:\n{}",
            reply.text()
        );
        assert!(
            reply
                .text()
                .lines()
                .any(|l| l.starts_with(&format!("# HELP {name} "))),
            "no HELP for {name}"
        );
    }

    let fresh = metrics(&server);
    assert_eq!(sample(&fresh, "wsloop_open_connections"), 0);
    assert_eq!(sample(&fresh, "wsloop_connections_total"), 0);

    let a = Peer::join(&server);
    let _b = Peer::join(&server);
    let two = metrics(&server);
    assert_eq!(sample(&two, "wsloop_open_connections"), 2);
    assert_eq!(sample(&two, "wsloop_connections_total"), 2);
    // The /metrics request itself is a TCP connection held by the server.
    assert!(sample(&two, "wsloop_tcp_connections") >= 3, "{two:?}");
    // Three /metrics requests so far (this one included) and two WebSocket connections.
    assert_eq!(sample(&two, "wsloop_accepted_total"), 5);
    assert!(sample(&two, "wsloop_bytes_sent_total") > 0, "{two:?}");
    assert!(sample(&two, "wsloop_bytes_received_total") > 0, "{two:?}");
    // Every standard close code is on the page from the start, at 0.
    assert_eq!(two.get("wsloop_closes_total{code=\"1000\"}"), Some(&0));

    a.close();
    let closed = metrics(&server);
    assert_eq!(sample(&closed, "wsloop_open_connections"), 1);
    assert_eq!(sample(&closed, "wsloop_closes_total{code=\"1000\"}"), 1);

    let reply = http(server.addr, &upgrade_request("/other", ""));
    assert_eq!(reply.status(), "HTTP/1.1 404 Not Found", "{}", reply.head);
    let rejected = metrics(&server);
    assert_eq!(sample(&rejected, &rejections("not_found")), 1);
    assert_eq!(sample(&rejected, "wsloop_connections_total"), 2);
    assert_eq!(sample(&rejected, "wsloop_protocol_errors_total"), 0);
    assert_eq!(sample(&rejected, "wsloop_heartbeat_timeouts_total"), 0);
    assert_eq!(
        sample(&rejected, "wsloop_slow_consumer_disconnects_total"),
        0
    );
    assert!(sample(&rejected, "wsloop_uptime_seconds") < 600);
}

#[test]
fn http_unknown_path_is_404() {
    let server = Server::serve(&[]);
    for path in ["/nope", "/favicon.ico", "/healthz/extra", "/app.js.map"] {
        let reply = get(server.addr, path);
        assert_eq!(
            reply.status(),
            "HTTP/1.1 404 Not Found",
            "{path}: {}",
            reply.head
        );
    }
}

#[test]
fn http_post_is_405_with_allow_get_and_head() {
    let server = Server::serve(&[]);
    for path in ["/", "/healthz", "/ws"] {
        let reply = http(
            server.addr,
            &format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"),
        );
        assert_eq!(
            reply.status(),
            "HTTP/1.1 405 Method Not Allowed",
            "{path}: {}",
            reply.head
        );
        assert_eq!(
            reply.header("Allow"),
            Some("GET, HEAD"),
            "{path}: {}",
            reply.head
        );
    }
}

#[test]
fn http_get_ws_without_upgrade_is_426() {
    let server = Server::serve(&[]);
    let reply = get(server.addr, "/ws");
    assert_eq!(
        reply.status(),
        "HTTP/1.1 426 Upgrade Required",
        "{}",
        reply.head
    );
    assert!(
        reply
            .header("Upgrade")
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket")),
        "426 without `Upgrade: websocket`: {}",
        reply.head
    );
}

#[test]
fn upgrade_on_another_path_is_404() {
    let server = Server::serve(&[]);
    for path in ["/other", "/", "/ws/x", "/healthz"] {
        let reply = http(server.addr, &upgrade_request(path, ""));
        assert_eq!(
            reply.status(),
            "HTTP/1.1 404 Not Found",
            "{path}: {}",
            reply.head
        );
    }
    // A query string does not change the path.
    let _peer = Peer::join_url(&server.url("/ws?room=1"), &[]);
}

#[test]
fn ws_path_flag_moves_the_endpoint() {
    let server = Server::serve(&["--ws-path", "/chat"]);
    let mut peer = Peer::join_url(&server.url("/chat"), &[]);
    peer.barrier();
    let reply = http(server.addr, &upgrade_request("/ws", ""));
    assert_eq!(reply.status(), "HTTP/1.1 404 Not Found", "{}", reply.head);
    let reply = get(server.addr, "/chat");
    assert_eq!(
        reply.status(),
        "HTTP/1.1 426 Upgrade Required",
        "{}",
        reply.head
    );
    let reply = get(server.addr, "/ws");
    assert_eq!(reply.status(), "HTTP/1.1 404 Not Found", "{}", reply.head);
    // The page learns the endpoint from its meta tag.
    let page = get(server.addr, "/").text().to_owned();
    assert!(
        page.contains(r#"<meta name="wsloop-ws-path" content="/chat">"#),
        "{page}"
    );
    assert!(!page.contains(r#"content="/ws""#));
}

// ---------------------------------------------------------------------------------------------
// heartbeat and protocol pings
// ---------------------------------------------------------------------------------------------

const HEARTBEAT: [&str; 4] = ["--ping-interval", "300ms", "--ping-timeout", "300ms"];

#[test]
fn heartbeat_closes_a_client_that_does_not_answer() {
    let server = Server::serve(&HEARTBEAT);
    let mut raw = raw_open(&server, "/ws");
    let start = Instant::now();
    // Interval + timeout = 600 ms; allow 1.5 s more for a loaded machine.
    let limit = Duration::from_millis(600 + 1_500);
    let mut pings = 0;
    raw.set_timeout(Duration::from_millis(100));
    let closed_after = loop {
        assert!(
            start.elapsed() < limit,
            "still connected {:?} after the handshake ({pings} pings seen, none answered)",
            start.elapsed()
        );
        match raw.try_read_frame() {
            Ok(frame) if frame.opcode == opcode::PING => pings += 1,
            Ok(frame) if frame.opcode == opcode::TEXT => {}
            Ok(frame) if frame.opcode == opcode::CLOSE => {
                let at = start.elapsed();
                raw.set_timeout(WAIT);
                raw.expect_tcp_close();
                break at;
            }
            Ok(frame) => panic!("unexpected frame {frame:?}"),
            Err(ReadError::Timeout { .. }) => {}
            Err(ReadError::Eof { .. } | ReadError::Reset(_)) => break start.elapsed(),
        }
    };
    assert!(pings >= 1, "closed without a heartbeat ping being seen");
    eprintln!("closed as dead after {closed_after:?}");
    let m = metrics(&server);
    assert_eq!(sample(&m, "wsloop_heartbeat_timeouts_total"), 1);
    assert_eq!(sample(&m, "wsloop_open_connections"), 0);
}

#[test]
fn the_client_refuses_a_ping_longer_than_a_control_frame_and_stays_usable() {
    let server = Server::serve(&[]);
    let mut peer = Peer::join(&server);
    // §5.5: 125 bytes at most; nothing goes on the wire, the connection stays open.
    assert!(peer.client.ping(&[1; 126]).is_err());
    peer.client.ping(&[2; 125]).expect("send ping");
    match peer.client.recv() {
        Ok(Received::Pong(got)) => assert_eq!(got, vec![2; 125]),
        other => panic!("expected the 125-byte pong, got {other:?}"),
    }
}

#[test]
fn client_protocol_ping_gets_pong_with_same_payload() {
    let server = Server::serve(&[]);
    let mut peer = Peer::join(&server);
    for payload in [&b"are you there?"[..], &b""[..], &[0u8, 0xff, 0x10][..]] {
        peer.client.ping(payload).expect("send ping");
        match peer.client.recv() {
            Ok(Received::Pong(got)) => assert_eq!(got, payload),
            other => panic!("expected a pong with {payload:?}, got {other:?}"),
        }
    }
    peer.barrier();
}

// ---------------------------------------------------------------------------------------------
// tokens and origins
// ---------------------------------------------------------------------------------------------

fn token_server(tag: &str) -> (Server, TempFile) {
    let file = TempFile::new(tag, "# users\nabc alice\ndef bob\n");
    let server = Server::serve(&["--token-file", file.path()]);
    (server, file)
}

#[test]
fn token_missing_or_wrong_gets_401() {
    let (server, _file) = token_server("401");
    for extra in [
        "Authorization: Bearer nope\r\n",
        "Authorization: Bearer alice\r\n",
        "Cookie: token=nope\r\n",
    ] {
        let reply = http(server.addr, &upgrade_request("/ws", extra));
        assert_eq!(
            reply.status(),
            "HTTP/1.1 401 Unauthorized",
            "{extra:?}: {}",
            reply.head
        );
        assert_eq!(
            reply.header("WWW-Authenticate"),
            Some(r#"Bearer error="invalid_token""#),
            "{extra:?}: {}",
            reply.head
        );
    }
    for target in ["/ws?token=nope", "/ws?token="] {
        let reply = http(server.addr, &upgrade_request(target, ""));
        assert_eq!(
            reply.status(),
            "HTTP/1.1 401 Unauthorized",
            "{target}: {}",
            reply.head
        );
    }
    let m = metrics(&server);
    assert_eq!(sample(&m, &rejections("unauthorized")), 5);
    assert_eq!(sample(&m, "wsloop_connections_total"), 0);
}

/// An upgrade that carries no token opens, and its first message must bring one
/// (tests/auth.rs has the deadline and the refusals on the simulation).
#[test]
fn token_file_tokens_may_come_in_the_first_message() {
    let (server, _file) = token_server("in-band");
    for header in [
        None,
        Some("Authorization: Basic abc"),
        Some("Cookie: other=abc"),
    ] {
        let options = ClientOptions {
            headers: header.into_iter().map(str::to_owned).collect(),
            timeout: Some(WAIT),
            ..ClientOptions::default()
        };
        let mut client = Client::connect_with(&server.url("/ws"), &options)
            .unwrap_or_else(|e| panic!("{header:?}: {e}"));
        client
            .send_text(&json!({"type": "auth", "token": "def"}).to_string())
            .expect("send auth");
        let welcome = match client.recv() {
            Ok(Received::Text(text)) => serde_json::from_str::<Value>(&text).expect("JSON"),
            other => panic!("{header:?}: {other:?}"),
        };
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        assert_eq!(welcome["name"], "bob", "{welcome}");
    }
}

#[test]
fn token_bearer_header_names_the_user() {
    let (server, _file) = token_server("bearer");
    let mut alice = Peer::join_url(&server.url("/ws"), &["Authorization: Bearer abc"]);
    assert_eq!(alice.name, "alice");
    assert_ne!(alice.id, "alice", "the id stays the connection's");
    let mut bob = Peer::join_url(&server.url("/ws"), &["Authorization: Bearer def"]);
    assert_eq!(bob.name, "bob");
    alice.send(&json!({"type": "chat", "content": "hi bob"}));
    for peer in [&mut alice, &mut bob] {
        let chat = peer.recv_type("chat");
        assert_eq!(chat["from"], "alice", "{chat}");
        assert_eq!(chat["content"], "hi bob", "{chat}");
    }
    subscribe(&mut alice, "room");
    publish(&mut bob, "room", "hi alice");
    assert_eq!(expect_published(&mut bob, "room"), 1);
    let message = alice.recv_type("message");
    assert_eq!(message["from"], "bob", "{message}");
    assert_eq!(message["id"], bob.id.as_str(), "{message}");
}

#[test]
fn token_query_and_cookie_name_the_user() {
    let (server, _file) = token_server("query-cookie");
    let mut bob = Peer::join_url(&server.url("/ws?token=def"), &[]);
    assert_eq!(bob.name, "bob");
    let mut alice = Peer::join_url(&server.url("/ws"), &["Cookie: theme=dark; token=abc"]);
    assert_eq!(alice.name, "alice");
    bob.send(&json!({"type": "chat", "content": "query"}));
    for peer in [&mut bob, &mut alice] {
        let chat = peer.recv_type("chat");
        assert_eq!(chat["from"], "bob", "{chat}");
    }
    alice.send(&json!({"type": "chat", "content": "cookie"}));
    for peer in [&mut bob, &mut alice] {
        let chat = peer.recv_type("chat");
        assert_eq!(chat["from"], "alice", "{chat}");
    }
}

#[test]
fn allow_origin_refuses_other_origins() {
    let server = Server::serve(&["--allow-origin", "http://good.example"]);
    let mut good = Peer::join_url(&server.url("/ws"), &["Origin: http://good.example"]);
    good.barrier();
    let mut no_origin = Peer::join_url(&server.url("/ws"), &[]);
    no_origin.barrier();
    for origin in [
        "http://evil.example",
        "https://good.example",
        "http://good.example.evil",
    ] {
        let reply = http(
            server.addr,
            &upgrade_request("/ws", &format!("Origin: {origin}\r\n")),
        );
        assert_eq!(
            reply.status(),
            "HTTP/1.1 403 Forbidden",
            "{origin}: {}",
            reply.head
        );
    }
    let m = metrics(&server);
    assert_eq!(sample(&m, &rejections("origin_not_allowed")), 3);
    assert_eq!(sample(&m, "wsloop_open_connections"), 2);
}

// ---------------------------------------------------------------------------------------------
// graceful shutdown
// ---------------------------------------------------------------------------------------------

#[test]
fn shutdown_closes_every_client_with_1001_and_exits_0() {
    let mut server = Server::serve(&["--drain-timeout", "10s"]);
    let peers: Vec<Peer> = (0..3).map(|_| Peer::join(&server)).collect();
    let (tx, rx) = mpsc::channel();
    for mut peer in peers {
        let tx = tx.clone();
        thread::spawn(move || {
            // recv answers the close frame by itself.
            let result = loop {
                match peer.client.recv() {
                    Ok(Received::Close(code, _)) => break Ok(code),
                    Ok(Received::Ping(_) | Received::Pong(_)) => {}
                    Ok(other) => break Err(format!("before the close: {other:?}")),
                    Err(e) => break Err(format!("before the close: {e}")),
                }
            };
            let _ = tx.send(result);
        });
    }
    drop(tx);
    let start = Instant::now();
    let code = server.signal_and_wait("TERM", WAIT);
    let elapsed = start.elapsed();
    let closes: Vec<_> = (0..3)
        .map(|_| rx.recv_timeout(WAIT).expect("a client thread reported"))
        .collect();
    for close in &closes {
        assert_eq!(close, &Ok(Some(1001)), "close codes: {closes:?}");
    }
    assert_eq!(code, Some(0), "exit code after SIGTERM");
    assert!(
        elapsed < Duration::from_secs(4),
        "exit took {elapsed:?} although every client answered the close"
    );
}

#[test]
fn shutdown_exits_after_drain_timeout_when_a_client_never_answers() {
    let mut server = Server::serve(&["--drain-timeout", "1s"]);
    let mut raw = raw_open(&server, "/ws");
    let (tx, rx) = mpsc::channel();
    let reader = thread::spawn(move || {
        let code = raw_read_until_close(&mut raw);
        let _ = tx.send(code);
        // Never answer; keep the socket until the server drops it.
        raw.expect_tcp_close();
    });
    let start = Instant::now();
    let code = server.signal_and_wait("TERM", Duration::from_millis(1_000 + 2_000));
    let elapsed = start.elapsed();
    assert_eq!(
        rx.recv_timeout(WAIT).expect("the close frame was read"),
        Some(1001)
    );
    assert_eq!(
        code,
        Some(0),
        "exit code after the drain timeout ({elapsed:?})"
    );
    assert!(
        elapsed >= Duration::from_millis(900),
        "exited after {elapsed:?}, without waiting for the drain timeout (1 s)"
    );
    reader.join().expect("reader thread");
}

// ---------------------------------------------------------------------------------------------
// `wsloop client`
// ---------------------------------------------------------------------------------------------

#[test]
fn cli_client_sends_stdin_lines_and_prints_replies() {
    let server = Server::serve(&[]);
    let url = server.url("/ws");
    let input =
        b"{\"type\":\"chat\",\"content\":\"hello from the cli\"}\n{\"type\":\"ping\",\"ts\":42}\n";
    let (code, stdout, stderr) =
        run_wsloop(&["client", &url], Some(input), Duration::from_secs(10));
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("stdout line {l:?} is not JSON: {e}\nstdout: {stdout}"))
        })
        .collect();
    let context = format!("stdout: {stdout:?}\nstderr: {stderr:?}");
    assert!(
        lines.first().is_some_and(|v| v["type"] == "welcome"),
        "first line is the welcome; {context}"
    );
    let id = lines[0]["id"].clone();
    assert!(
        lines
            .iter()
            .any(|v| v["type"] == "chat" && v["content"] == "hello from the cli" && v["id"] == id),
        "the chat echo was printed; {context}"
    );
    assert!(
        lines.iter().any(|v| v["type"] == "pong" && v["echo"] == 42),
        "the pong was printed; {context}"
    );
    assert_eq!(code, Some(0), "exit code; {context}");
}

#[test]
fn cli_client_exits_1_when_nothing_listens() {
    let addr = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr")
    };
    let url = format!("ws://{addr}/ws");
    let (code, stdout, stderr) = run_wsloop(&["client", &url], None, Duration::from_secs(10));
    assert_eq!(code, Some(1), "stdout {stdout:?}, stderr {stderr:?}");
    assert!(
        stderr.contains("cannot connect") && stderr.contains(&addr.to_string()),
        "stderr should say it cannot connect to {addr}: {stderr:?}"
    );
    assert!(stdout.is_empty(), "nothing on stdout: {stdout:?}");
}

#[test]
fn cli_client_reconnects_after_a_server_restart() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    use std::sync::mpsc;

    let server = Server::serve(&[]);
    let (addr, url) = (server.addr.to_string(), server.url("/ws"));
    /// Kills the client if the test fails half-way.
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_wsloop"))
            .args(["client", "--reconnect", &url])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn wsloop client"),
    );
    let mut stdin = child.0.stdin.take().expect("stdin");
    let stdout = child.0.stdout.take().expect("stdout");
    let (lines_tx, lines) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let welcome = |lines: &mpsc::Receiver<String>, within: Duration| -> Value {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = lines.recv_timeout(left).expect("a welcome line in time");
            let value: Value = serde_json::from_str(&line).expect("JSON line");
            if value["type"] == "welcome" {
                return value;
            }
        }
    };
    let first = welcome(&lines, Duration::from_secs(10));
    // The server goes away and comes back on the same port: the first retry waits about
    // 1 s (the backoff's first delay, ±20%).
    drop(server);
    std::thread::sleep(Duration::from_millis(300));
    let _again = Server::start_on("serve", &addr, &[]);
    let second = welcome(&lines, Duration::from_secs(10));
    assert!(first["id"].is_string() && second["id"].is_string());
    // Lines typed after the reconnect go to the new connection.
    stdin
        .write_all(b"{\"type\":\"chat\",\"content\":\"back again\"}\n")
        .expect("write");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines.recv_timeout(left).expect("the chat echo in time");
        let value: Value = serde_json::from_str(&line).expect("JSON line");
        if value["type"] == "chat" {
            assert_eq!(value["content"], "back again");
            assert_eq!(value["id"], second["id"]);
            break;
        }
    }
    drop(stdin);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the client did not exit after its input ended"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
}
