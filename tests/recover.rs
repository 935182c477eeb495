//! Recovery in the clients (PROTOCOL.md, "Recovery"): `history` with `since` gives back the
//! chat a client missed; `wsloop client --reconnect`, run through a TCP relay that the test
//! cuts (the server keeps running, and its history), subscribes again with `since` and asks
//! for the missed chats with `history`, prints exactly the missed messages once, and marks a
//! gap it could not fill; `--no-recover` and
//! echo servers are left alone.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::Server;
use serde_json::{json, Value};
use wsloop::client::{Client, ClientOptions, Received};

const WAIT: Duration = Duration::from_secs(10);

/// A connected client, past its `welcome`.
fn join(addr: SocketAddr) -> Client {
    let options = ClientOptions {
        timeout: Some(WAIT),
        ..ClientOptions::default()
    };
    let mut client = Client::connect_with(&format!("ws://{addr}/ws"), &options).expect("connect");
    assert_eq!(recv(&mut client)["type"], "welcome");
    client
}

fn send(client: &mut Client, value: Value) {
    client.send_text(&value.to_string()).expect("send");
}

/// The next JSON message, without its `ts` and sender `id` (the clock's, and random).
fn recv(client: &mut Client) -> Value {
    loop {
        match client.recv().expect("a message") {
            Received::Text(text) => return without_ts(&text),
            Received::Ping(_) | Received::Pong(_) => {}
            other => panic!("expected JSON text, got {other:?}"),
        }
    }
}

fn without_ts(text: &str) -> Value {
    let mut value: Value =
        serde_json::from_str(text).unwrap_or_else(|e| panic!("{text:?} is not JSON: {e}"));
    if let Some(object) = value.as_object_mut() {
        object.remove("ts");
        object.remove("id");
    }
    value
}

#[test]
fn history_since_gives_back_the_chat_a_client_missed() {
    let server = Server::serve(&["--history-size", "3"]);
    let mut bob = join(server.addr);
    let mut carol = join(server.addr);
    send(&mut bob, json!({"type": "chat", "content": "c1"}));
    let seen = recv(&mut carol);
    assert_eq!(recv(&mut bob)["offset"], 1);
    let epoch = seen["epoch"].clone();
    drop(carol);
    for content in ["c2", "c3"] {
        send(&mut bob, json!({"type": "chat", "content": content}));
        recv(&mut bob);
    }
    let mut carol = join(server.addr);
    send(
        &mut carol,
        json!({"type": "history", "since": {"offset": 1, "epoch": epoch}}),
    );
    let answer = recv(&mut carol);
    assert_eq!(answer["type"], "history");
    assert_eq!(answer["recovered"], true);
    assert_eq!(
        (answer["offset"].clone(), answer["epoch"].clone()),
        (json!(3), epoch.clone())
    );
    assert_eq!(
        contents(&answer),
        [(2, "c2".to_owned()), (3, "c3".to_owned())]
    );
    // `limit` keeps the last ones; what it leaves out is not recovered.
    send(
        &mut carol,
        json!({"type": "history", "since": {"offset": 1, "epoch": epoch}, "limit": 1}),
    );
    let answer = recv(&mut carol);
    assert_eq!(
        (answer["recovered"].clone(), contents(&answer)),
        (json!(false), vec![(3, "c3".to_owned())])
    );
    // Two more: the history (3 events) no longer reaches back to offset 1.
    for content in ["c4", "c5"] {
        send(&mut bob, json!({"type": "chat", "content": content}));
        recv(&mut bob);
        recv(&mut carol);
    }
    send(
        &mut carol,
        json!({"type": "history", "since": {"offset": 1, "epoch": epoch}}),
    );
    let answer = recv(&mut carol);
    assert_eq!(answer["recovered"], false);
    assert_eq!(
        contents(&answer),
        [
            (3, "c3".to_owned()),
            (4, "c4".to_owned()),
            (5, "c5".to_owned())
        ]
    );
    // Another epoch: nothing to replay, and where the chat stands now.
    send(
        &mut carol,
        json!({"type": "history", "since": {"offset": 1, "epoch": "elsewhere"}}),
    );
    assert_eq!(
        recv(&mut carol),
        json!({"type": "history", "messages": [], "recovered": false, "offset": 5, "epoch": epoch})
    );
    // A channel without history: not recovered, and no position (nothing is created).
    send(
        &mut carol,
        json!({"type": "history", "channel": "quiet", "since": {"offset": 0, "epoch": epoch}}),
    );
    assert_eq!(
        recv(&mut carol),
        json!({"type": "history", "channel": "quiet", "messages": [], "recovered": false})
    );
}

/// The (offset, content) of each message of a `history` answer.
fn contents(answer: &Value) -> Vec<(u64, String)> {
    let messages = answer["messages"].as_array().expect("messages");
    messages
        .iter()
        .map(|m| {
            let offset = m["offset"].as_u64().expect("offset");
            (offset, m["content"].as_str().expect("content").to_owned())
        })
        .collect()
}

/// A TCP relay between the client and a server, which the test cuts (both ways, as a network
/// would) and holds shut (connections are accepted and dropped) until it reopens, maybe
/// towards another server.
struct Relay {
    addr: SocketAddr,
    state: Arc<Mutex<RelayState>>,
}

struct RelayState {
    target: SocketAddr,
    open: bool,
    /// Both sockets of every relayed connection, to cut them.
    sockets: Vec<TcpStream>,
}

impl Relay {
    fn to(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the relay");
        let addr = listener.local_addr().expect("relay address");
        let state = Arc::new(Mutex::new(RelayState {
            target,
            open: true,
            sockets: Vec::new(),
        }));
        let shared = Arc::clone(&state);
        // The thread ends with the test process (it waits in accept).
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let mut state = shared.lock().expect("relay state");
                if !state.open {
                    continue; // dropped: the client's handshake fails
                }
                let Ok(server) = TcpStream::connect(state.target) else {
                    continue;
                };
                for (from, to) in [(&client, &server), (&server, &client)] {
                    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
                        continue;
                    };
                    thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(Shutdown::Write);
                    });
                }
                state.sockets.extend([client, server]);
            }
        });
        Relay { addr, state }
    }

    /// Cuts every relayed connection and refuses new ones.
    fn cut(&self) {
        let mut state = self.state.lock().expect("relay state");
        state.open = false;
        for socket in state.sockets.drain(..) {
            let _ = socket.shutdown(Shutdown::Both);
        }
    }

    /// Relays again, to `target`.
    fn reopen(&self, target: SocketAddr) {
        let mut state = self.state.lock().expect("relay state");
        state.target = target;
        state.open = true;
    }
}

/// `wsloop client --reconnect ARGS ws://RELAY/ws`, its output line by line; killed when dropped.
struct CliClient {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Receiver<String>,
    stderr: Receiver<String>,
    /// Every stdout line read so far, for the transcript.
    transcript: Vec<String>,
}

fn lines(pipe: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

impl CliClient {
    fn start(relay: &Relay, args: &[&str]) -> CliClient {
        let url = format!("ws://{}/ws", relay.addr);
        let mut child = Command::new(env!("CARGO_BIN_EXE_wsloop"))
            .args(["client", "--reconnect"])
            .args(args)
            .arg(&url)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn wsloop client");
        CliClient {
            stdin: child.stdin.take(),
            stdout: lines(child.stdout.take().expect("stdout")),
            stderr: lines(child.stderr.take().expect("stderr")),
            child,
            transcript: Vec::new(),
        }
    }

    fn type_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .expect("write to the client");
    }

    /// Reads stdout up to and including the first line for which `done` holds.
    fn read_until(&mut self, what: &str, done: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.stdout.recv_timeout(left).unwrap_or_else(|_| {
                panic!(
                    "no {what} within {WAIT:?}; stdout so far: {:#?}",
                    self.transcript
                )
            });
            self.transcript.push(line.clone());
            if done(&line) {
                return;
            }
        }
    }

    /// Reads stdout up to the next `welcome` (a new connection).
    fn welcomed(&mut self) {
        self.read_until("welcome", |l| without_ts(l)["type"] == "welcome");
    }

    /// Ends standard input, waits for exit 0, and returns everything on standard error.
    fn finish(mut self) -> Vec<String> {
        drop(self.stdin.take());
        let deadline = Instant::now() + WAIT;
        while self.child.try_wait().expect("wait").is_none() {
            assert!(
                Instant::now() < deadline,
                "the client did not exit after its input ended"
            );
            thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(self.child.wait().expect("status").code(), Some(0));
        self.stderr.try_iter().collect()
    }
}

impl Drop for CliClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One transcript line in short: `type channel offset content recovered`, where present.
fn short(line: &str) -> String {
    let value = without_ts(line);
    let fields = ["type", "channel", "offset", "content", "recovered"];
    let parts = fields.iter().filter_map(|f| match &value[f] {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    });
    parts.collect::<Vec<_>>().join(" ")
}

/// Where the missed messages go: the channel news (the client subscribed to it), or the chat
/// to everyone.
#[derive(Clone, Copy)]
enum Stream {
    News,
    Chat,
}

impl Stream {
    /// `bob` sends each of `contents` on it, each recorded before the next (his `published`,
    /// or his chat's echo, came back; others' chats before it are passed over).
    fn say(self, bob: &mut Client, contents: &[&str]) {
        for content in contents {
            match self {
                Stream::News => {
                    send(
                        bob,
                        json!({"type": "publish", "channel": "news", "content": content}),
                    );
                    assert_eq!(recv(bob)["type"], "published");
                }
                Stream::Chat => {
                    send(bob, json!({"type": "chat", "content": content}));
                    while recv(bob)["content"] != *content {}
                }
            }
        }
    }
}

/// The client (subscribed to news for `Stream::News`) sees bob's "m1" on `stream`; the relay
/// is cut, bob sends `missed`, the relay reopens (to `after`, or the same server): the
/// client's transcript from its new connection on (its own chat "back", then bob's "live"),
/// and its standard error.
fn drop_and_return(
    server: &Server,
    after: Option<&Server>,
    stream: Stream,
    missed: &[&str],
) -> (Vec<String>, Vec<String>) {
    let relay = Relay::to(server.addr);
    let mut client = CliClient::start(&relay, &[]);
    client.welcomed();
    if let Stream::News = stream {
        client.type_line(r#"{"type":"subscribe","channel":"news"}"#);
        client.read_until("subscribed", |l| without_ts(l)["type"] == "subscribed");
    }
    let mut bob = join(server.addr);
    stream.say(&mut bob, &["m1"]);
    client.read_until("m1", |l| without_ts(l)["content"] == "m1");

    relay.cut();
    stream.say(&mut bob, missed);
    let server_after = after.unwrap_or(server);
    relay.reopen(server_after.addr);
    client.welcomed();
    let start = client.transcript.len();
    // A live message after the return: everything before it has been printed. It must
    // follow the client's `subscribed`: the client's chat is answered after the subscription
    // it sent first.
    client.type_line(r#"{"type":"chat","content":"back"}"#);
    client.read_until("the chat echo", |l| without_ts(l)["content"] == "back");
    let mut bob = join(server_after.addr);
    stream.say(&mut bob, &["live"]);
    client.read_until("the live message", |l| without_ts(l)["content"] == "live");
    let transcript = client.transcript[start..]
        .iter()
        .map(|l| short(l))
        .collect();
    (transcript, client.finish())
}

/// The gap markers among the standard error lines.
fn gaps(stderr: &[String]) -> Vec<&str> {
    stderr
        .iter()
        .map(String::as_str)
        .filter(|l| l.contains("may be missing"))
        .collect()
}

/// How many standard error lines are exactly `line`.
fn said(stderr: &[String], line: &str) -> usize {
    stderr.iter().filter(|l| l.as_str() == line).count()
}

#[test]
fn cli_client_resubscribes_and_prints_exactly_the_missed_messages_once() {
    let server = Server::serve(&[]);
    let (transcript, stderr) = drop_and_return(&server, None, Stream::News, &["m2", "m3"]);
    assert_eq!(
        transcript,
        [
            "message news 2 m2",
            "message news 3 m3",
            "subscribed news 3 true",
            "chat 1 back",
            "message news 4 live",
        ],
        "stderr: {stderr:#?}"
    );
    let resubscribed = said(&stderr, "resubscribing to #news since offset 1");
    assert_eq!(resubscribed, 1, "{stderr:#?}");
    assert_eq!(gaps(&stderr), [] as [&str; 0], "{stderr:#?}");
}

#[test]
fn cli_client_marks_what_the_history_no_longer_holds() {
    let server = Server::serve(&["--history-size", "2"]);
    let missed = ["m2", "m3", "m4", "m5"];
    let (transcript, stderr) = drop_and_return(&server, None, Stream::News, &missed);
    assert_eq!(
        transcript,
        [
            "message news 4 m4",
            "message news 5 m5",
            "subscribed news 5 false",
            "chat 1 back",
            "message news 6 live",
        ],
        "stderr: {stderr:#?}"
    );
    assert_eq!(gaps(&stderr), ["#news: 2 messages may be missing"]);
}

#[test]
fn cli_client_marks_a_gap_of_unknown_size_on_another_epoch() {
    let (server, other) = (Server::serve(&[]), Server::serve(&[]));
    let (transcript, stderr) = drop_and_return(&server, Some(&other), Stream::News, &["m2"]);
    assert_eq!(
        transcript,
        [
            "subscribed news 0 false",
            "chat 1 back",
            "message news 1 live"
        ],
        "stderr: {stderr:#?}"
    );
    assert_eq!(gaps(&stderr), ["#news: messages may be missing"]);
}

#[test]
fn cli_client_recovers_the_chat_it_missed_in_order_and_once() {
    let server = Server::serve(&[]);
    let (transcript, stderr) = drop_and_return(&server, None, Stream::Chat, &["m2", "m3"]);
    assert_eq!(
        transcript,
        ["chat 2 m2", "chat 3 m3", "chat 4 back", "chat 5 live"],
        "stderr: {stderr:#?}"
    );
    let recovering = said(&stderr, "recovering the chat since offset 1");
    assert_eq!(recovering, 1, "{stderr:#?}");
    assert_eq!(gaps(&stderr), [] as [&str; 0], "{stderr:#?}");
}

#[test]
fn cli_client_marks_the_chats_the_history_no_longer_holds() {
    let server = Server::serve(&["--history-size", "2"]);
    let missed = ["m2", "m3", "m4", "m5"];
    let (transcript, stderr) = drop_and_return(&server, None, Stream::Chat, &missed);
    assert_eq!(
        transcript,
        ["chat 4 m4", "chat 5 m5", "chat 6 back", "chat 7 live"],
        "stderr: {stderr:#?}"
    );
    assert_eq!(gaps(&stderr), ["chat: 2 messages may be missing"]);
}

#[test]
fn cli_client_with_no_recover_only_reconnects() {
    let server = Server::serve(&[]);
    let relay = Relay::to(server.addr);
    let mut client = CliClient::start(&relay, &["--no-recover"]);
    client.welcomed();
    client.type_line(r#"{"type":"subscribe","channel":"news"}"#);
    client.read_until("subscribed", |l| without_ts(l)["type"] == "subscribed");
    relay.cut();
    relay.reopen(server.addr);
    client.welcomed();
    let start = client.transcript.len();
    client.type_line(r#"{"type":"chat","content":"back"}"#);
    client.read_until("the chat echo", |l| without_ts(l)["content"] == "back");
    let after: Vec<String> = client.transcript[start..]
        .iter()
        .map(|l| short(l))
        .collect();
    assert_eq!(after, ["chat 1 back"]);
    let stderr = client.finish();
    assert!(
        !stderr.iter().any(|l| l.contains("resubscribing")),
        "{stderr:#?}"
    );
}

#[test]
fn cli_client_sends_nothing_of_its_own_to_an_echo_server() {
    let server = Server::echo(&[]);
    let relay = Relay::to(server.addr);
    let mut client = CliClient::start(&relay, &[]);
    let subscribe = r#"{"type":"subscribe","channel":"news"}"#;
    client.type_line(subscribe);
    client.read_until("the echo", |l| l == subscribe);
    relay.cut();
    relay.reopen(server.addr);
    // The connected line on stderr tells the new connection is there; then a line of ours.
    let deadline = Instant::now() + WAIT;
    let mut connected = 0;
    while connected < 2 {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = client
            .stderr
            .recv_timeout(left)
            .expect("connected again in time");
        connected += usize::from(line.starts_with("connected to "));
    }
    client.type_line("after");
    client.read_until("the echo of after", |l| l == "after");
    assert_eq!(client.transcript, [subscribe, "after"]);
    client.finish();
}
