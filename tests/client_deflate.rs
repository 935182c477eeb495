//! The client side of permessage-deflate (RFC 7692) over real sockets: the library client
//! and `wsloop client --deflate` against `wsloop echo --deflate` and against the Python
//! `websockets` server (`tests/interop/server.py`) with each of its parameter sets. A relay
//! between client and server records the bytes both ways, so that each test also shows which
//! frames went out compressed (RSV1) and that each end kept to its agreed window.
#![cfg(feature = "deflate")]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use common::{wsloop_binary, Server};
use wsloop::client::{Client, ClientOptions, Received};
use wsloop::proto::extension::{DeflateOffer, Negotiated};
use wsloop::proto::frame::decode_header_ext;
use wsloop::proto::MessageKind;

/// What went through a [`Relay`], each way, as the bytes arrived.
#[derive(Default)]
struct Recorded {
    to_server: Vec<u8>,
    to_client: Vec<u8>,
}

/// A TCP relay on 127.0.0.1 for one connection to `upstream`, recording both directions.
/// Its threads end when either side closes.
struct Relay {
    addr: SocketAddr,
    recorded: Arc<Mutex<Recorded>>,
}

impl Relay {
    fn start(upstream: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the relay");
        let addr = listener.local_addr().expect("relay address");
        let recorded = Arc::new(Mutex::new(Recorded::default()));
        let shared = Arc::clone(&recorded);
        std::thread::spawn(move || {
            let Ok((client, _)) = listener.accept() else {
                return;
            };
            let Ok(server) = TcpStream::connect(upstream) else {
                return;
            };
            let (client2, server2) = (client.try_clone(), server.try_clone());
            let (Ok(client2), Ok(server2)) = (client2, server2) else {
                return;
            };
            let up = Arc::clone(&shared);
            std::thread::spawn(move || copy(client, server, &up, |r| &mut r.to_server));
            copy(server2, client2, &shared, |r| &mut r.to_client);
        });
        Relay { addr, recorded }
    }

    fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    /// The frames each way so far (after the handshake heads): (to the server, to the client).
    fn frames(&self) -> (Vec<Seen>, Vec<Seen>) {
        let recorded = self.recorded.lock().expect("relay record");
        (frames(&recorded.to_server), frames(&recorded.to_client))
    }
}

/// Copies `from` to `to`, recording each piece before it is passed on (so that what a peer
/// has received is always in the record).
fn copy(
    mut from: TcpStream,
    mut to: TcpStream,
    recorded: &Mutex<Recorded>,
    side: fn(&mut Recorded) -> &mut Vec<u8>,
) {
    let mut buf = [0u8; 16 * 1024];
    while let Ok(n @ 1..) = from.read(&mut buf) {
        if let Ok(mut r) = recorded.lock() {
            side(&mut r).extend_from_slice(&buf[..n]);
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

/// One frame as it crossed the relay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Seen {
    compressed: bool,
    payload_len: u64,
}

/// The whole frames after the HTTP head in `bytes`.
fn frames(bytes: &[u8]) -> Vec<Seen> {
    let Some(head) = bytes.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Vec::new();
    };
    let mut rest = &bytes[head + 4..];
    let mut seen = Vec::new();
    while let Ok(Some((header, len))) = decode_header_ext(rest, true) {
        let total = len + header.payload_len as usize;
        if rest.len() < total {
            break;
        }
        seen.push(Seen {
            compressed: header.compressed,
            payload_len: header.payload_len,
        });
        rest = &rest[total..];
    }
    seen
}

/// JSON-like text of `len` bytes (chat messages, as compression sees in practice).
fn json(len: usize) -> String {
    let mut s = String::new();
    let mut i = 0;
    while s.len() < len {
        s.push_str(&format!(
            "{{\"type\":\"chat\",\"from\":\"user{}\",\"content\":\"message number {i}\"}}\n",
            i % 13
        ));
        i += 1;
    }
    s.truncate(len);
    s
}

fn deflate_options() -> ClientOptions {
    ClientOptions {
        timeout: Some(std::time::Duration::from_secs(10)),
        deflate: Some(DeflateOffer::default()),
        ..ClientOptions::default()
    }
}

/// Echoes each of `sizes` (text, then the same as binary through a [`ClientWriter`]) and
/// checks every echo.
fn echo_each(client: &mut Client, sizes: &[usize]) {
    let mut writer = client.writer();
    for &len in sizes {
        let text = json(len);
        client.send_text(&text).expect("send text");
        assert_eq!(client.recv_message().expect("echo"), Received::Text(text));
        let data = json(len).into_bytes();
        writer
            .send(MessageKind::Binary, &data)
            .expect("send binary");
        assert_eq!(client.recv_message().expect("echo"), Received::Binary(data));
    }
}

/// Compressed or not, for each message of [`echo_each`] (two frames per size).
fn compressed_by_size(seen: &[Seen], sizes: &[usize]) -> Vec<(usize, bool)> {
    let want: Vec<usize> = sizes.iter().flat_map(|&s| [s, s]).collect();
    assert_eq!(seen.len(), want.len(), "frames {seen:?}");
    want.into_iter()
        .zip(seen)
        .map(|(len, frame)| {
            // A compressed kilobyte is smaller than itself (the text is redundant).
            assert!(
                !frame.compressed || len < 1024 || frame.payload_len < len as u64 / 2,
                "{len} B as {frame:?}"
            );
            (len, frame.compressed)
        })
        .collect()
}

fn agreed(
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: u8,
    client_max_window_bits: Option<u8>,
) -> Negotiated {
    Negotiated {
        server_no_context_takeover,
        client_no_context_takeover,
        server_max_window_bits,
        client_max_window_bits,
        threshold: 64,
        level: 6,
    }
}

#[test]
fn the_library_client_against_wsloop_echo_deflate() {
    let server = Server::echo(&["--deflate"]);
    let relay = Relay::start(server.addr);
    let mut client = Client::connect_with(&relay.url(), &deflate_options()).expect("connect");
    // The browser-style offer is answered with the client's window named (full size).
    assert_eq!(client.deflate(), Some(&agreed(false, false, 15, Some(15))));
    let sizes = [5, 63, 64, 4096, 65_536];
    echo_each(&mut client, &sizes);
    client.close(1000, "").expect("close");
    assert!(matches!(client.recv(), Ok(Received::Close(Some(1000), _))));
    // Both ends compress from their threshold of 64 bytes on.
    let (up, down) = relay.frames();
    let want: Vec<(usize, bool)> = sizes
        .iter()
        .flat_map(|&s| [(s, s >= 64), (s, s >= 64)])
        .collect();
    assert_eq!(compressed_by_size(&up[..up.len() - 1], &sizes), want);
    assert_eq!(compressed_by_size(&down[..down.len() - 1], &sizes), want);
}

#[test]
fn the_library_client_keeps_to_the_window_wsloop_answers() {
    let server = Server::echo(&[
        "--deflate",
        "--deflate-no-context-takeover",
        "--deflate-window-bits",
        "10",
        "--deflate-threshold",
        "0",
    ]);
    let relay = Relay::start(server.addr);
    let mut client = Client::connect_with(&relay.url(), &deflate_options()).expect("connect");
    assert_eq!(client.deflate(), Some(&agreed(true, false, 10, Some(10))));
    // 1 KiB windows both ways: longer messages go out plain (from the client's threshold of
    // 64 bytes on, and from the server's of 0).
    let sizes = [10, 1024, 1025, 4096];
    echo_each(&mut client, &sizes);
    let (up, down) = relay.frames();
    let compressed = |seen: &[Seen], small: fn(usize) -> bool| {
        assert_eq!(
            compressed_by_size(seen, &sizes),
            sizes
                .iter()
                .flat_map(|&s| [(s, small(s)), (s, small(s))])
                .collect::<Vec<_>>()
        )
    };
    compressed(&up, |s| (64..=1024).contains(&s));
    compressed(&down, |s| s <= 1024);
}

/// `python3` that can import `websockets.asyncio.server` (>= 13), or a skip.
fn python_with_websockets() -> Option<std::path::PathBuf> {
    let python = common::find_program("python3", "the Python websockets interop server")?;
    let probe = Command::new(&python)
        .args(["-c", "import websockets.asyncio.server"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        common::skip_or_fail("Python module websockets >= 13 (tests/interop/requirements.txt)");
        return None;
    }
    Some(python)
}

/// `tests/interop/server.py PARAMETERS`, once it listens.
fn python_server(python: &Path, parameters: &str) -> Server {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/server.py");
    let mut command = Command::new(python);
    command.arg(script).arg(parameters);
    Server::spawn(command, &format!("server.py {parameters}"), false)
}

#[test]
fn the_library_client_against_python_websockets_each_parameter_set() {
    let Some(python) = python_with_websockets() else {
        return;
    };
    let sizes = [16, 300, 512, 513, 4096, 4097, 65_536];
    // (parameters, what the client agrees to, the largest message the client compresses)
    let rows = [
        ("default", agreed(false, false, 12, Some(12)), 4096),
        (
            "no-context-takeover",
            agreed(true, true, 15, None),
            usize::MAX,
        ),
        ("small-windows", agreed(false, false, 9, Some(9)), 512),
    ];
    for (parameters, want, largest) in rows {
        let server = python_server(&python, parameters);
        let relay = Relay::start(server.addr);
        let mut client = Client::connect_with(&relay.url(), &deflate_options())
            .unwrap_or_else(|e| panic!("{parameters}: {e}"));
        assert_eq!(client.deflate(), Some(&want), "{parameters}");
        echo_each(&mut client, &sizes);
        let (up, down) = relay.frames();
        let from_client: Vec<(usize, bool)> = sizes
            .iter()
            .flat_map(|&s| {
                let compressed = (64..=largest).contains(&s);
                [(s, compressed), (s, compressed)]
            })
            .collect();
        assert_eq!(compressed_by_size(&up, &sizes), from_client, "{parameters}");
        // websockets compresses every message; the client inflated each (the echoes matched).
        assert!(down.iter().all(|f| f.compressed), "{parameters}: {down:?}");
    }
}

/// `wsloop client URL --deflate`, piped: sends `line`, returns its first line of output and
/// everything it wrote to standard error once its input ended.
fn cli_round_trip(url: &str, line: &str) -> (String, String) {
    let mut child = Command::new(wsloop_binary())
        .args(["client", url, "--deflate"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the client");
    let mut stdin = child.stdin.take().expect("stdin piped");
    writeln!(stdin, "{line}").expect("send a line");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout piped"));
    let mut echoed = String::new();
    stdout.read_line(&mut echoed).expect("the echo");
    drop(stdin);
    let output = child.wait_with_output().expect("the client exits");
    assert_eq!(output.status.code(), Some(0));
    (
        echoed.trim_end().to_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn wsloop_client_deflate_prints_what_was_agreed_and_compresses() {
    let line = json(2000).replace('\n', " ");
    let server = Server::echo(&["--deflate"]);
    let relay = Relay::start(server.addr);
    let (echoed, stderr) = cli_round_trip(&relay.url(), &line);
    assert_eq!(echoed, line);
    let connected = format!(
        "connected to {} with permessage-deflate; client_max_window_bits=15\n",
        relay.url()
    );
    assert!(stderr.starts_with(&connected), "{stderr}");
    let (up, down) = relay.frames();
    assert!(up[0].compressed && up[0].payload_len < 2000, "{up:?}");
    assert!(down[0].compressed && down[0].payload_len < 2000, "{down:?}");

    // A server without --deflate declines by not answering.
    let plain = Server::echo(&[]);
    let (echoed, stderr) = cli_round_trip(&plain.url("/"), "plain");
    assert_eq!(echoed, "plain");
    assert!(
        stderr.contains("(the server declined permessage-deflate)"),
        "{stderr}"
    );
}

#[test]
fn wsloop_client_deflate_against_python_websockets() {
    let Some(python) = python_with_websockets() else {
        return;
    };
    let server = python_server(&python, "no-context-takeover");
    let line = json(3000).replace('\n', " ");
    let (echoed, stderr) = cli_round_trip(&server.url("/"), &line);
    assert_eq!(echoed, line);
    assert!(
        stderr.contains(
            "with permessage-deflate; server_no_context_takeover; client_no_context_takeover\n"
        ),
        "{stderr}"
    );
}
