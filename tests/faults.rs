//! Faults, seen from outside the server process: descriptor exhaustion, peers that go silent
//! (the half-open connection), peers that never answer or never finish a close, and clients
//! that vanish in the middle of a handshake, a frame, a fragmented message or a large write.
//!
//! Every test runs its own `wsloop` process, so its descriptors (`/proc/PID/fd`), its RSS and,
//! for `serve`, its connection table (`wsloop_tcp_connections` on `/metrics`) belong to that
//! test alone. After each fault the test asserts that the process returns to its baseline:
//! the same descriptors, an empty table, RSS within 16 MiB (allocator caches), and that it
//! still serves.
//!
//! Half-open TCP proper (the peer's host vanishes, no FIN, no RST) cannot be produced on
//! loopback without privileges; a peer that completes the handshake and then neither reads nor
//! writes, with its socket open, looks the same to the server, and is what these tests use.

mod common;
mod observe;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::raw::{opcode, OutFrame, RawClient, ReadError, TcpEnd};
use common::{Server, NO_ADDRESS_LIMITS};
use observe::{
    assert_back_to, baseline, cpu_ticks, held_connections, metrics, reset, series, vanish,
    wait_until, welcomed, ShellServer, CLEANUP, RSS_MARGIN_KIB,
};
use serde_json::Value;
use wsloop::client::{Client, ClientOptions, Received};

fn serve(extra: &[&str]) -> Server {
    let mut args = NO_ADDRESS_LIMITS.to_vec();
    args.extend_from_slice(&["--log-level", "warn"]);
    args.extend_from_slice(extra);
    Server::serve(&args)
}

fn upgrade(path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

fn options(timeout: Duration) -> ClientOptions {
    ClientOptions {
        timeout: Some(timeout),
        ..ClientOptions::default()
    }
}

/// A chat client on `/ws` whose welcome has been read.
fn chat_client(addr: SocketAddr, timeout: Duration) -> Result<Client, String> {
    let mut c = Client::connect_with(&format!("ws://{addr}/ws"), &options(timeout))
        .map_err(|e| e.to_string())?;
    match c.recv_message().map_err(|e| e.to_string())? {
        Received::Text(t) if t.contains("\"welcome\"") => Ok(c),
        other => Err(format!("expected welcome, got {other:?}")),
    }
}

/// Reads until a chat event with this content arrives (other traffic skipped).
fn expect_chat(c: &mut Client, content: &str) {
    loop {
        match c.recv_message() {
            Ok(Received::Text(t)) => {
                let v: Value = serde_json::from_str(&t).expect("JSON");
                if v["type"] == "chat" && v["content"] == content {
                    return;
                }
            }
            other => panic!("waiting for chat {content:?}: {other:?}"),
        }
    }
}

fn send_chat(c: &mut Client, content: &str) {
    let text = serde_json::json!({"type": "chat", "content": content}).to_string();
    c.send_text(&text).expect("send chat");
}

/// The server still works: a fresh client chats and gets its own message.
fn still_serves(addr: SocketAddr) {
    let mut c = chat_client(addr, Duration::from_secs(5)).expect("a fresh client connects");
    send_chat(&mut c, "still serving");
    expect_chat(&mut c, "still serving");
}

// ---------------------------------------------------------------------------------------------
// Descriptor exhaustion (the echo variant is in server_loop.rs)
// ---------------------------------------------------------------------------------------------

#[test]
fn serve_out_of_descriptors_keeps_chatting_without_spinning_and_accepts_again() {
    let Some(sh) = common::find_program("sh", "to lower RLIMIT_NOFILE for the server") else {
        return;
    };
    let server = ShellServer::start(&sh, "ulimit -n 32 &&", "serve");
    let (addr, pid) = (server.addr, server.pid());
    let mut open = Vec::new();
    let mut refused = false;
    for _ in 0..40 {
        match chat_client(addr, Duration::from_secs(2)) {
            Ok(c) => open.push(c),
            Err(_) => {
                refused = true;
                break;
            }
        }
    }
    assert!(refused, "the descriptor limit was never reached");
    assert!(
        open.len() >= 10,
        "only {} clients before EMFILE",
        open.len()
    );
    // Out of descriptors with connections waiting in the backlog: no busy loop.
    let waiting: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(addr).expect("backlog connect"))
        .collect();
    let before = cpu_ticks(pid);
    thread::sleep(Duration::from_secs(1));
    let ticks = cpu_ticks(pid) - before;
    assert!(
        ticks <= 20,
        "serve used {ticks} clock ticks in 1 s while out of descriptors"
    );
    // Existing clients keep chatting: one speaks, every one hears it.
    send_chat(&mut open[0], "still here while full");
    for c in open.iter_mut() {
        expect_chat(c, "still here while full");
    }
    // Free descriptors: accepting resumes.
    open.truncate(open.len() - 5);
    drop(waiting);
    let mut late = None;
    wait_until(
        "a new client to be accepted after descriptors were freed",
        Duration::from_secs(10),
        || {
            if late.is_none() {
                late = chat_client(addr, Duration::from_secs(2)).ok();
            }
            late.is_some()
        },
        |ok| *ok,
    );
    let mut late = late.unwrap();
    send_chat(&mut late, "late");
    expect_chat(&mut late, "late");
    expect_chat(&mut open[0], "late");
}

// ---------------------------------------------------------------------------------------------
// Peers that go silent
// ---------------------------------------------------------------------------------------------

#[test]
fn heartbeat_finds_peers_that_went_silent_and_frees_them() {
    let server = serve(&[
        "--ping-interval",
        "300ms",
        "--ping-timeout",
        "300ms",
        "--handshake-timeout",
        "500ms",
    ]);
    let (addr, pid) = (server.addr, server.pid());
    let base = baseline(pid, Some(addr));
    let timeouts_before = series(&metrics(addr), "wsloop_heartbeat_timeouts_total");

    // A live client that answers pings (its reader thread answers them as they come).
    let mut live = chat_client(addr, Duration::from_secs(5)).unwrap();
    live.set_timeout(Some(Duration::from_millis(100))).unwrap();
    let mut live_writer = live.writer();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let live_reader = thread::spawn(move || {
        let mut pings = 0;
        let mut chats = Vec::new();
        loop {
            match live.recv() {
                Ok(Received::Ping(_)) => pings += 1,
                Ok(Received::Text(t)) => chats.push(t),
                Ok(other) => panic!("live client got {other:?}"),
                Err(wsloop::client::ClientError::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    if stop_rx.try_recv().is_ok() {
                        return (pings, chats);
                    }
                }
                Err(e) => panic!("live client lost its connection: {e}"),
            }
        }
    });

    // Silent peers: open WebSocket connections that never read nor write again, and
    // connections stopped in the middle of their upgrade request.
    let silent: Vec<RawClient> = (0..20).map(|_| welcomed(addr)).collect();
    let half_heads: Vec<TcpStream> = (0..10)
        .map(|i| {
            let mut s = TcpStream::connect(addr).unwrap();
            let head = upgrade("/ws");
            s.write_all(&head.as_bytes()[..10 + i * 7]).unwrap();
            s
        })
        .collect();
    let start = Instant::now();
    let took = wait_until(
        "the heartbeat and the handshake timeout to drop every silent peer",
        Duration::from_secs(10),
        || held_connections(addr),
        |n| *n == 1,
    );
    eprintln!("silent peers dropped within {took:?}");
    let m = metrics(addr);
    assert_eq!(
        series(&m, "wsloop_heartbeat_timeouts_total") - timeouts_before,
        20,
        "{m:?}"
    );
    assert_eq!(
        series(
            &m,
            "wsloop_handshake_rejections_total{reason=\"handshake_timeout\"}"
        ),
        10,
        "{m:?}"
    );
    // The silent peers' sockets are closed by the server: each sees the end of the stream.
    for mut s in silent {
        s.set_timeout(Duration::from_secs(2));
        loop {
            match s.try_read_frame() {
                Ok(f) if f.opcode == opcode::PING => continue,
                Ok(f) => panic!("silent peer got {f:?}"),
                Err(_) => break,
            }
        }
    }
    drop(half_heads);
    eprintln!(
        "silent peers dropped {:?} after they went quiet",
        start.elapsed()
    );

    // The live client survived several heartbeats and still chats.
    live_writer
        .send_text(&serde_json::json!({"type": "chat", "content": "alive"}).to_string())
        .unwrap();
    thread::sleep(Duration::from_millis(300));
    stop_tx.send(()).unwrap();
    let (pings, chats) = live_reader.join().expect("live reader");
    assert!(pings >= 2, "live client answered only {pings} pings");
    assert!(
        chats.iter().any(|t| t.contains("\"alive\"")),
        "live client did not get its chat: {chats:?}"
    );
    drop(live_writer);
    assert_back_to(
        pid,
        Some(addr),
        base,
        RSS_MARGIN_KIB,
        "after the silent peers",
    );
    still_serves(addr);
}

// ---------------------------------------------------------------------------------------------
// Closes that never complete
// ---------------------------------------------------------------------------------------------

/// The idle timeout starts a closing handshake (1001) that the peers never answer: the server
/// closes TCP after the close timeout and frees everything, in `serve` and in `echo`. When,
/// exactly, is the simulation's to check (tests/sim.rs); here: that it happens, and is freed.
#[test]
fn peers_that_never_answer_the_idle_close_are_dropped_and_freed() {
    let flags = ["--idle-timeout", "300ms", "--close-timeout", "400ms"];
    for serve_app in [true, false] {
        let server = if serve_app {
            serve(&flags)
        } else {
            Server::echo(&flags)
        };
        let (addr, pid) = (server.addr, server.pid());
        let metrics_addr = serve_app.then_some(addr);
        let base = baseline(pid, metrics_addr);
        let open = |_| {
            if serve_app {
                welcomed(addr)
            } else {
                RawClient::open(addr)
            }
        };
        let mut peers: Vec<RawClient> = (0..5).map(open).collect();
        for raw in &mut peers {
            assert_eq!(raw.read_close(), Some(1001), "idle close");
        }
        let start = Instant::now();
        // No close reply: the server waits the close timeout, then closes TCP.
        for raw in &mut peers {
            assert_eq!(raw.expect_tcp_close(), TcpEnd::Eof);
        }
        let waited = start.elapsed();
        assert!(
            waited < Duration::from_secs(3),
            "dropped {waited:?} after the close"
        );
        if serve_app {
            let m = metrics(addr);
            assert_eq!(series(&m, "wsloop_closes_total{code=\"1006\"}"), 5, "{m:?}");
            assert_eq!(series(&m, "wsloop_idle_timeouts_total"), 5, "{m:?}");
        }
        drop(peers);
        assert_back_to(
            pid,
            metrics_addr,
            base,
            RSS_MARGIN_KIB,
            "after the unanswered closes",
        );
    }
}

#[test]
fn a_peer_that_never_closes_tcp_after_the_closing_handshake_is_dropped() {
    let server = serve(&["--close-timeout", "500ms"]);
    let (addr, pid) = (server.addr, server.pid());
    let base = baseline(pid, Some(addr));
    let mut peers: Vec<RawClient> = (0..10).map(|_| welcomed(addr)).collect();
    for raw in &mut peers {
        raw.send(&OutFrame::close(1000, "bye")).unwrap();
    }
    for raw in &mut peers {
        // The echo of our close, then the server's FIN (it closes TCP first, §7.1.1).
        assert_eq!(raw.expect_close(false), Some(1000));
    }
    // Our sockets stay open: the server lingers for our FIN, then gives up.
    let took = wait_until(
        "lingering connections to be dropped",
        Duration::from_secs(5),
        || held_connections(addr),
        |n| *n == 0,
    );
    eprintln!("lingering peers dropped within {took:?}");
    assert_back_to(
        pid,
        Some(addr),
        base,
        RSS_MARGIN_KIB,
        "after the lingering peers",
    );
    drop(peers);
    still_serves(addr);
}

// ---------------------------------------------------------------------------------------------
// Abrupt disconnects
// ---------------------------------------------------------------------------------------------

/// Runs `cycle(i)` for `warmup` rounds, takes the baseline, runs `rounds` more, and asserts
/// the server returns to the baseline and still serves.
fn leak_check(
    server: &Server,
    is_serve: bool,
    what: &str,
    rss_margin_kib: u64,
    warmup: usize,
    rounds: usize,
    mut cycle: impl FnMut(usize),
) {
    let (addr, pid) = (server.addr, server.pid());
    let metrics_addr = is_serve.then_some(addr);
    for i in 0..warmup {
        cycle(i);
    }
    let base = baseline(pid, metrics_addr);
    let start = Instant::now();
    for i in warmup..warmup + rounds {
        cycle(i);
    }
    let peak = observe::rss_kib(pid);
    let rss = assert_back_to(pid, metrics_addr, base, rss_margin_kib, what);
    eprintln!(
        "{what}: {rounds} cycles in {:?}; fds {} -> back; RSS {} KiB base, {} KiB peak, {} KiB after",
        start.elapsed(),
        base.fds,
        base.rss_kib,
        peak,
        rss
    );
    if is_serve {
        // The cycles end the way they were meant to: abruptly, not on a protocol error.
        let m = metrics(addr);
        assert_eq!(
            series(&m, "wsloop_protocol_errors_total"),
            0,
            "{what}: {m:?}"
        );
        still_serves(addr);
    } else {
        let mut c = Client::connect_with(&format!("ws://{addr}/"), &options(CLEANUP)).unwrap();
        c.send_text("still serving").unwrap();
        assert_eq!(c.recv().unwrap(), Received::Text("still serving".into()));
    }
}

#[test]
fn abrupt_disconnects_mid_handshake_leak_nothing() {
    let server = serve(&[]);
    let head = upgrade("/ws");
    let head = head.as_bytes();
    leak_check(
        &server,
        true,
        "mid-handshake",
        RSS_MARGIN_KIB,
        30,
        300,
        |i| {
            let mut s = TcpStream::connect(server.addr).unwrap();
            s.set_nodelay(true).unwrap();
            // Every cut of the head, from a bare connect to one byte short of complete.
            let cut = (i * 13) % head.len();
            s.write_all(&head[..cut]).unwrap();
            if i.is_multiple_of(2) {
                reset(s);
            } else {
                drop(s);
            }
        },
    );
}

#[test]
fn abrupt_disconnects_mid_frame_leak_nothing() {
    let server = serve(&[]);
    let big = OutFrame::text(vec![b'x'; 900 * 1024]).encode();
    leak_check(&server, true, "mid-frame", RSS_MARGIN_KIB, 20, 200, |i| {
        let mut raw = welcomed(server.addr);
        let frame = match i % 4 {
            // A header cut short.
            0 => OutFrame::text(vec![b'a'; 300]).encode()[..3].to_vec(),
            // A 900 KiB text frame cut after 256 KiB.
            1 => big[..256 * 1024].to_vec(),
            // A whole chat, then half of the next one.
            2 => {
                let chat = OutFrame::text(r#"{"type":"chat","content":"cut"}"#).encode();
                let mut f = chat.clone();
                f.extend_from_slice(&chat[..chat.len() / 2]);
                f
            }
            // A ping cut inside its payload.
            _ => OutFrame::ping(vec![7; 100]).encode()[..50].to_vec(),
        };
        raw.send_raw(&frame).unwrap();
        vanish(raw, i % 3 != 0);
    });
    let closes = series(&metrics(server.addr), "wsloop_closes_total{code=\"1006\"}");
    assert!(
        closes >= 220,
        "{closes} connections ended without a close, of 220"
    );
}

#[test]
fn abrupt_disconnects_mid_fragmented_message_leak_nothing() {
    let server = serve(&[]);
    let piece = vec![b'y'; 200 * 1024];
    leak_check(
        &server,
        true,
        "mid-fragmented-message",
        RSS_MARGIN_KIB,
        10,
        100,
        |i| {
            let mut raw = welcomed(server.addr);
            let mut frames = vec![
                OutFrame::text(piece.clone()).fin(false),
                OutFrame::ping(b"between".to_vec()),
                OutFrame::continuation(piece.clone()).fin(false),
            ];
            if i.is_multiple_of(2) {
                frames.push(OutFrame::continuation(piece.clone()).fin(false));
            }
            let mut bytes = common::raw::encode_all(&frames);
            if i.is_multiple_of(3) {
                // And a continuation cut in its payload.
                let next = OutFrame::continuation(piece.clone()).encode();
                bytes.extend_from_slice(&next[..next.len() / 3]);
            }
            raw.send_raw(&bytes).unwrap();
            vanish(raw, !i.is_multiple_of(2));
        },
    );
    let closes = series(&metrics(server.addr), "wsloop_closes_total{code=\"1006\"}");
    assert!(
        closes >= 110,
        "{closes} connections ended without a close, of 110"
    );
}

/// A WebSocket connection on `path` whose receive buffer is set to a few KiB before it
/// connects, so that what the server sends it stays mostly in the server's own queue. The
/// 101 head is read; bytes after it are left unread.
fn small_window_upgrade(addr: SocketAddr, path: &str) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.set_tcp_nodelay(true).unwrap();
    socket
        .connect_timeout(&addr.into(), Duration::from_secs(5))
        .unwrap();
    let mut stream: TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(upgrade(path).as_bytes()).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        std::io::Read::read_exact(&mut stream, &mut byte).expect("101 head");
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101 "),
        "{}",
        String::from_utf8_lossy(&head)
    );
    stream
}

/// Reads `n` bytes of what the server sends, then vanishes (RST or FIN).
fn read_some_then_vanish(mut stream: TcpStream, n: usize, rst: bool) {
    let mut some = vec![0u8; n];
    std::io::Read::read_exact(&mut stream, &mut some).expect("the start of a large write");
    if rst {
        reset(stream);
    }
}

#[test]
fn abrupt_disconnects_mid_large_echo_leak_nothing() {
    let server = Server::echo(&[]);
    // 8 MiB echoed to a client with a 4 KiB receive buffer: the kernel holds at most a few MiB
    // (the server's send buffer), the rest waits in the server's queue when the client goes.
    const SIZE: usize = 8 * 1024 * 1024;
    let frame = OutFrame::binary(vec![0x5a; SIZE]).encode();
    // One cycle's working set (read assembly, the handler's copy, the outbound queue) may stay
    // in the allocator's cache: allow it on top of the usual margin. A leak of the 16 measured
    // cycles would be 128 MiB or more.
    let margin = RSS_MARGIN_KIB + 3 * SIZE as u64 / 1024;
    leak_check(&server, false, "mid-large-echo", margin, 4, 16, |i| {
        let mut stream = small_window_upgrade(server.addr, "/");
        stream
            .set_write_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        stream.write_all(&frame).unwrap();
        read_some_then_vanish(stream, 64 * 1024, i.is_multiple_of(2));
    });
}

#[test]
fn abrupt_disconnects_mid_large_broadcast_leak_nothing() {
    let server = serve(&["--max-content", "7000000", "--max-message", "8000000"]);
    const SIZE: usize = 6 * 1024 * 1024;
    let content = "z".repeat(SIZE);
    let chat = serde_json::json!({"type": "chat", "content": content}).to_string();
    let receivers = 5;
    let (warmup, rounds) = (2, 6);
    let sent_before = series(&metrics(server.addr), "wsloop_bytes_sent_total");
    // The working set of one broadcast (the request read and parsed, the event encoded, the
    // shared frame) may stay in the allocator's cache.
    let margin = RSS_MARGIN_KIB + 6 * SIZE as u64 / 1024;
    leak_check(
        &server,
        true,
        "mid-large-broadcast",
        margin,
        warmup,
        rounds,
        |i| {
            let streams: Vec<TcpStream> = (0..receivers)
                .map(|_| small_window_upgrade(server.addr, "/ws"))
                .collect();
            let mut sender = chat_client(server.addr, Duration::from_secs(20)).unwrap();
            sender.send_text(&chat).unwrap();
            // The sender reads its own copy whole: the broadcast was queued for everyone.
            match sender.recv_message().unwrap() {
                Received::Text(t) => assert!(t.len() > SIZE, "{}", t.len()),
                other => panic!("{other:?}"),
            }
            for (k, stream) in streams.into_iter().enumerate() {
                read_some_then_vanish(stream, 16 * 1024, (i + k).is_multiple_of(2));
            }
            if i.is_multiple_of(2) {
                sender.close(1000, "").unwrap();
                while !matches!(sender.recv(), Ok(Received::Close(..)) | Err(_)) {}
            }
        },
    );
    // The receivers went while most of the broadcast was still unwritten.
    let sent = series(&metrics(server.addr), "wsloop_bytes_sent_total") - sent_before;
    let cycles = (warmup + rounds) as u64;
    let full = cycles * (receivers as u64 + 1) * SIZE as u64;
    eprintln!("mid-large-broadcast: {sent} bytes written of {full} queued");
    assert!(
        sent < full - cycles * receivers as u64 * (SIZE as u64 / 4),
        "{sent} of {full} bytes written: the receivers did not vanish mid-write"
    );
}

/// The loop sees that its process was stopped (a poll that came back seconds late) and moves
/// every deadline by the pause: a client is not closed as idle for the time the server was
/// not running. When exactly is the simulation's to check (tests/sim.rs); here: the wiring.
#[test]
fn a_stopped_server_does_not_charge_its_pause_to_the_clients() {
    let mut server = Server::echo(&["--idle-timeout", "2s"]);
    let mut raw = RawClient::open(server.addr);
    thread::sleep(Duration::from_millis(500));
    let signal = |name: &str| {
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &server.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name}");
    };
    signal("STOP");
    thread::sleep(Duration::from_secs(3));
    signal("CONT");
    // 3.5 s after the upgrade, past the 2 s idle timeout: without the pause counted as the
    // server's own, the close would come at once.
    raw.set_timeout(Duration::from_millis(400));
    match raw.try_read_frame() {
        Ok(frame) => panic!("closed right after the pause: {frame:?}"),
        Err(e) => assert!(matches!(e, ReadError::Timeout { .. }), "{e:?}"),
    }
    // The idle timeout still holds, counted in the server's own time.
    raw.set_timeout(Duration::from_secs(5));
    assert_eq!(raw.read_close(), Some(1001));
    assert!(server.is_running());
}
