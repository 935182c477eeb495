//! Churn soak: `wsloop serve` under thousands of connect / chat / disconnect cycles, some of
//! them abrupt, while long-lived clients chat and listen throughout.
//!
//! - Churner threads loop over cycle kinds: a clean chat session ending with a close
//!   handshake; a chat session that ends with RST or FIN and no close; a session cut in the
//!   middle of a frame or of a fragmented message; an upgrade request cut short; a plain
//!   HTTP request. Every chat content is unique (`t<thread>-c<cycle>-m<n>`), and a churner
//!   counts a message as sent only once its own copy came back, i.e. once the server has
//!   broadcast it to everyone.
//! - Long-lived clients (the crate's `Client`, answering the heartbeat) stay connected from
//!   start to end, chat now and then, and record every chat they receive.
//! - At the end each long-lived client sends a barrier chat and reads until it has every
//!   barrier: whatever was broadcast before is then in its hands (one connection's queue is
//!   FIFO). Each must have received exactly the confirmed messages of every churner and of
//!   every long-lived client, in order per sender.
//! - Then every client is gone and the process must return to its baseline: the same
//!   descriptors, an empty connection table (`wsloop_tcp_connections`), RSS within 16 MiB of
//!   the level after a warm-up.
//!
//! Duration: `WSLOOP_SOAK_SECS` (default 20).

mod common;
mod observe;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use common::raw::{opcode, OutFrame, RawClient, TcpEnd};
use common::{Server, NO_ADDRESS_LIMITS};
use observe::{
    assert_back_to, baseline, fd_count, held_connections, metrics, reset, rss_kib, series, vanish,
    welcomed, RSS_MARGIN_KIB,
};
use serde_json::{json, Value};
use wsloop::client::{Client, ClientError, ClientOptions, Received};

/// Default soak length under plain `cargo test`.
const DEFAULT_SECS: u64 = 20;
const CHURNERS: usize = 4;
const LISTENERS: usize = 4;
/// How often a long-lived client chats.
const LISTENER_CHAT_EVERY: Duration = Duration::from_millis(500);
/// Bound on the final barrier.
const BARRIER_WAIT: Duration = Duration::from_secs(30);

fn soak_duration() -> Duration {
    let secs = std::env::var("WSLOOP_SOAK_SECS")
        .ok()
        .map(|v| {
            v.trim()
                .parse::<u64>()
                .unwrap_or_else(|_| panic!("WSLOOP_SOAK_SECS={v:?} is not a number of seconds"))
        })
        .unwrap_or(DEFAULT_SECS);
    Duration::from_secs(secs)
}

fn upgrade_request() -> &'static [u8] {
    b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
      Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
}

fn chat_json(content: &str) -> String {
    json!({"type": "chat", "content": content}).to_string()
}

/// The content of a chat event, if `text` is one.
fn chat_content(text: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(text).ok()?;
    (v["type"] == "chat").then(|| v["content"].as_str().map(str::to_owned))?
}

// ---------------------------------------------------------------------------------------------
// Churners
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    /// Chat, then a close handshake.
    Clean,
    /// Chat, then RST or FIN without a close.
    ChatThenVanish,
    /// Chat, then half a frame, then gone.
    MidFrame,
    /// The first fragment of a message, then gone.
    MidFragment,
    /// Part of the upgrade request, then gone.
    MidHandshake,
    /// A plain HTTP request.
    Http,
}

/// Ten cycles' worth of kinds: mostly chat sessions.
const KINDS: [Kind; 10] = [
    Kind::Clean,
    Kind::ChatThenVanish,
    Kind::Clean,
    Kind::MidFrame,
    Kind::Clean,
    Kind::MidHandshake,
    Kind::ChatThenVanish,
    Kind::MidFragment,
    Kind::Clean,
    Kind::Http,
];

/// What one churner did.
#[derive(Default)]
struct ChurnReport {
    /// Chat contents the server broadcast, in the order sent.
    confirmed: Vec<String>,
    cycles: BTreeMap<Kind, u64>,
}

/// Sends `count` chats and reads until the server has sent each one back (other traffic is
/// skipped). The chats are then confirmed: broadcast to everyone connected.
fn chat_and_confirm(raw: &mut RawClient, tag: &str, count: usize, confirmed: &mut Vec<String>) {
    let contents: Vec<String> = (0..count).map(|m| format!("{tag}-m{m}")).collect();
    let frames: Vec<OutFrame> = contents
        .iter()
        .map(|c| OutFrame::text(chat_json(c)))
        .collect();
    raw.send_all(&frames).expect("send chats");
    let mut pending = contents.iter().peekable();
    while let Some(want) = pending.peek() {
        let frame = raw.read_frame();
        match frame.opcode {
            opcode::TEXT => {
                if chat_content(&frame.payload).as_deref() == Some(want.as_str()) {
                    pending.next();
                }
            }
            opcode::PING => raw.send(&OutFrame::pong(frame.payload)).unwrap(),
            _ => panic!("{tag}: unexpected {frame:?}"),
        }
    }
    confirmed.extend(contents);
}

fn churn_cycle(addr: SocketAddr, thread: usize, cycle: u64, report: &mut ChurnReport) {
    let kind = KINDS[(cycle as usize + thread) % KINDS.len()];
    let tag = format!("t{thread}-c{cycle}");
    let rst = cycle.is_multiple_of(2);
    match kind {
        Kind::Clean => {
            let mut raw = welcomed(addr);
            chat_and_confirm(
                &mut raw,
                &tag,
                1 + (cycle % 3) as usize,
                &mut report.confirmed,
            );
            raw.send(&OutFrame::close(1000, "")).unwrap();
            // Read past chats still queued for us, up to the close echo; then the server's
            // FIN (it closes TCP first).
            loop {
                let frame = raw.read_frame();
                match frame.opcode {
                    opcode::CLOSE => break,
                    opcode::TEXT | opcode::PING => {}
                    _ => panic!("{tag}: unexpected {frame:?}"),
                }
            }
            assert_eq!(raw.expect_tcp_close(), TcpEnd::Eof, "{tag}");
        }
        Kind::ChatThenVanish => {
            let mut raw = welcomed(addr);
            chat_and_confirm(
                &mut raw,
                &tag,
                1 + (cycle % 2) as usize,
                &mut report.confirmed,
            );
            vanish(raw, rst);
        }
        Kind::MidFrame => {
            let mut raw = welcomed(addr);
            chat_and_confirm(&mut raw, &tag, 1, &mut report.confirmed);
            let frame = OutFrame::text(chat_json(&format!("{tag}-never"))).encode();
            let cut = 1 + (cycle as usize % (frame.len() - 1));
            raw.send_raw(&frame[..cut]).unwrap();
            vanish(raw, rst);
        }
        Kind::MidFragment => {
            let mut raw = welcomed(addr);
            let first = OutFrame::text(br#"{"type":"chat","content":"never-"#.to_vec()).fin(false);
            let mut frames = vec![first];
            if cycle.is_multiple_of(3) {
                frames.push(OutFrame::continuation(vec![b'z'; 4000]).fin(false));
            }
            raw.send_all(&frames).unwrap();
            vanish(raw, rst);
        }
        Kind::MidHandshake => {
            let mut s = TcpStream::connect(addr).expect("connect");
            let head = upgrade_request();
            let cut = cycle as usize % head.len();
            s.write_all(&head[..cut]).unwrap();
            if rst {
                reset(s);
            }
        }
        Kind::Http => {
            let mut s = TcpStream::connect(addr).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
                .unwrap();
            let mut reply = Vec::new();
            s.read_to_end(&mut reply).expect("healthz answer");
            assert!(
                reply.starts_with(b"HTTP/1.1 200 "),
                "{tag}: {:?}",
                String::from_utf8_lossy(&reply)
            );
        }
    }
    *report.cycles.entry(kind).or_default() += 1;
}

// ---------------------------------------------------------------------------------------------
// Long-lived clients
// ---------------------------------------------------------------------------------------------

/// What one long-lived client sent and received.
struct ListenerReport {
    /// Its own chats, in the order sent.
    sent: Vec<String>,
    /// Every chat content received, in arrival order.
    received: Vec<String>,
    pings: u64,
}

fn is_timeout(e: &ClientError) -> bool {
    matches!(e, ClientError::Io(e) if matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    ))
}

/// Chats every [`LISTENER_CHAT_EVERY`] until `barrier` is set, then sends its barrier chat
/// and reads until it has all [`LISTENERS`] barriers.
fn listen(
    addr: SocketAddr,
    me: usize,
    ready: Arc<Barrier>,
    barrier: Arc<AtomicBool>,
) -> ListenerReport {
    let options = ClientOptions {
        timeout: Some(Duration::from_secs(5)),
        ..ClientOptions::default()
    };
    let mut c = Client::connect_with(&format!("ws://{addr}/ws"), &options).expect("connect");
    match c.recv_message().expect("welcome") {
        Received::Text(t) if t.contains("\"welcome\"") => {}
        other => panic!("listener {me}: expected welcome, got {other:?}"),
    }
    c.set_timeout(Some(Duration::from_millis(50))).unwrap();
    ready.wait();
    let mut report = ListenerReport {
        sent: Vec::new(),
        received: Vec::new(),
        pings: 0,
    };
    let mut last_chat = Instant::now();
    let mut barrier_sent: Option<Instant> = None;
    let mut barriers_seen = 0;
    loop {
        if barrier_sent.is_none() && barrier.load(Ordering::Relaxed) {
            c.send_text(&chat_json(&format!("barrier-{me}"))).unwrap();
            barrier_sent = Some(Instant::now());
        } else if barrier_sent.is_none() && last_chat.elapsed() >= LISTENER_CHAT_EVERY {
            let content = format!("L{me}-n{}", report.sent.len());
            c.send_text(&chat_json(&content)).unwrap();
            report.sent.push(content);
            last_chat = Instant::now();
        }
        if let Some(at) = barrier_sent {
            assert!(
                at.elapsed() < BARRIER_WAIT,
                "listener {me}: only {barriers_seen} of {LISTENERS} barriers after {BARRIER_WAIT:?}"
            );
        }
        match c.recv() {
            Ok(Received::Text(t)) => match chat_content(t.as_bytes()) {
                Some(content) if content.starts_with("barrier-") => {
                    barriers_seen += 1;
                    if barriers_seen == LISTENERS {
                        break;
                    }
                }
                Some(content) => report.received.push(content),
                None => panic!("listener {me}: unexpected message {t}"),
            },
            Ok(Received::Ping(_)) => report.pings += 1,
            Ok(other) => panic!("listener {me}: unexpected {other:?}"),
            Err(e) if is_timeout(&e) => {}
            Err(e) => panic!("listener {me} lost its connection: {e}"),
        }
    }
    c.set_timeout(Some(Duration::from_secs(5))).unwrap();
    c.close(1000, "done").unwrap();
    loop {
        match c.recv() {
            Ok(Received::Close(..)) | Err(ClientError::Closed) => break,
            Ok(_) => {}
            Err(e) => panic!("listener {me}: closing: {e}"),
        }
    }
    report
}

// ---------------------------------------------------------------------------------------------
// The soak
// ---------------------------------------------------------------------------------------------

#[test]
fn churn_soak() {
    let duration = soak_duration();
    let mut args = NO_ADDRESS_LIMITS.to_vec();
    args.extend([
        "--ping-interval",
        "2s",
        "--ping-timeout",
        "5s",
        "--log-level",
        "warn",
    ]);
    let server = Server::serve(&args);
    let (addr, pid) = (server.addr, server.pid());

    // Warm-up: a few of every cycle kind, so that allocator pools and tables exist.
    let mut warmup = ChurnReport::default();
    for cycle in 0..3 * KINDS.len() as u64 {
        churn_cycle(addr, 99, cycle, &mut warmup);
    }
    let base = baseline(pid, Some(addr));
    eprintln!(
        "soak: {duration:?}, baseline {} fds, {} KiB RSS",
        base.fds, base.rss_kib
    );

    // Long-lived clients first, so that they are there for every churner's chat.
    let ready = Arc::new(Barrier::new(LISTENERS + 1));
    let barrier = Arc::new(AtomicBool::new(false));
    let listeners: Vec<_> = (0..LISTENERS)
        .map(|me| {
            let (ready, barrier) = (Arc::clone(&ready), Arc::clone(&barrier));
            thread::spawn(move || listen(addr, me, ready, barrier))
        })
        .collect();
    ready.wait();

    let started = Instant::now();
    let deadline = started + duration;
    let total_cycles = Arc::new(AtomicU64::new(0));
    let churners: Vec<_> = (0..CHURNERS)
        .map(|t| {
            let total = Arc::clone(&total_cycles);
            thread::spawn(move || {
                let mut report = ChurnReport::default();
                let mut cycle = 0;
                while Instant::now() < deadline {
                    churn_cycle(addr, t, cycle, &mut report);
                    cycle += 1;
                    total.fetch_add(1, Ordering::Relaxed);
                }
                report
            })
        })
        .collect();

    // Watch the process while it churns.
    let mut peak_rss = 0;
    let mut peak_fds = 0;
    let mut printed = 0;
    while Instant::now() < deadline {
        thread::sleep(
            Duration::from_millis(500).min(deadline.saturating_duration_since(Instant::now())),
        );
        let (fds, rss) = (fd_count(pid), rss_kib(pid));
        peak_rss = peak_rss.max(rss);
        peak_fds = peak_fds.max(fds);
        let secs = started.elapsed().as_secs();
        if secs >= printed + 5 || Instant::now() >= deadline {
            printed = secs;
            eprintln!(
                "soak: {secs:>4} s: {} cycles, {fds} fds, {rss} KiB RSS",
                total_cycles.load(Ordering::Relaxed)
            );
        }
    }
    let churned: Vec<ChurnReport> = churners
        .into_iter()
        .map(|h| h.join().expect("churner panicked"))
        .collect();
    barrier.store(true, Ordering::Relaxed);
    let heard: Vec<ListenerReport> = listeners
        .into_iter()
        .map(|h| h.join().expect("long-lived client panicked"))
        .collect();

    // Every long-lived client received every confirmed chat, in order per sender.
    let mut kinds: BTreeMap<Kind, u64> = BTreeMap::new();
    for r in &churned {
        for (k, n) in &r.cycles {
            *kinds.entry(*k).or_default() += n;
        }
    }
    let confirmed: usize = churned.iter().map(|r| r.confirmed.len()).sum();
    let cycles: u64 = kinds.values().sum();
    eprintln!(
        "soak: {cycles} cycles {kinds:?}; {confirmed} churner chats; long-lived sent {:?}, pings {:?}",
        heard.iter().map(|l| l.sent.len()).collect::<Vec<_>>(),
        heard.iter().map(|l| l.pings).collect::<Vec<_>>()
    );
    for (me, listener) in heard.iter().enumerate() {
        let mut by_sender: BTreeMap<String, Vec<&str>> = BTreeMap::new();
        for content in &listener.received {
            let sender = content.split('-').next().unwrap_or_default().to_owned();
            by_sender.entry(sender).or_default().push(content);
        }
        for (t, report) in churned.iter().enumerate() {
            let got = by_sender.remove(&format!("t{t}")).unwrap_or_default();
            assert_eq!(
                got.len(),
                report.confirmed.len(),
                "long-lived {me} got {} of churner {t}'s {} chats",
                got.len(),
                report.confirmed.len()
            );
            assert!(
                got.iter().zip(&report.confirmed).all(|(a, b)| a == b),
                "long-lived {me}: churner {t}'s chats out of order or altered"
            );
        }
        for (other, sent) in heard.iter().enumerate() {
            let got = by_sender.remove(&format!("L{other}")).unwrap_or_default();
            assert_eq!(
                got, sent.sent,
                "long-lived {me}: chats of long-lived {other}"
            );
        }
        assert!(
            by_sender.is_empty(),
            "long-lived {me} got chats nobody confirmed: {:?}",
            by_sender.keys().collect::<Vec<_>>()
        );
    }
    assert!(
        heard.iter().all(|l| l.pings >= 1) || duration < Duration::from_secs(5),
        "the heartbeat never reached the long-lived clients"
    );

    // Nothing failed that should not have, nobody was too slow, nobody was found dead.
    let m = metrics(addr);
    for name in [
        "wsloop_protocol_errors_total",
        "wsloop_slow_consumer_disconnects_total",
        "wsloop_heartbeat_timeouts_total",
    ] {
        assert_eq!(series(&m, name), 0, "{name}: {m:?}");
    }

    // Back to the baseline.
    let rss = assert_back_to(pid, Some(addr), base, RSS_MARGIN_KIB, "after the soak");
    assert_eq!(held_connections(addr), 0);
    eprintln!(
        "soak: back to {} fds; RSS {} KiB base, {peak_rss} KiB peak, {rss} KiB after; peak {peak_fds} fds",
        base.fds, base.rss_kib
    );
}
