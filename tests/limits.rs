//! The limits of the hardening issue, each with its flag, its answer and its `/metrics`
//! counter: connections in all (503) and per client address (429, the address taken from the
//! proxy headers only with `--trust-proxy`), request heads per second per address (429), head
//! size and header count (431), the handshake deadline, frame and message size and fragments
//! per message (1009), outbound backpressure (slow consumers closed with 1008), pongs owed,
//! messages per second (`rate_limited`, then 1008), pings per second (1008) and the idle
//! timeout.
//!
//! Every test runs a second, well-behaved client on the same server that completes a round
//! trip while the limit is being hit or right after. Limits are set low with their flags so
//! that each test is quick; every wait is bounded; every test starts (and kills) its own
//! server on 127.0.0.1:0.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::raw::{encode_all, opcode, OutFrame, RawClient, ReadError};
use common::{
    closes, connect_from, fetch_metrics, header, http_exchange, read_until_close, rejections,
    rss_kib, sample, sample_with, status_line, upgrade_request, Bystander, FrameReader, Server,
    MANY_REQUESTS, SAMPLE_ACCEPT,
};
use serde_json::Value;
use wsloop::client::{Client, ClientOptions, Received};

/// Bound on an answer that must come "at once".
const PROMPT: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Sends an upgrade request for `path` with `extra` header lines; returns the answer head and
/// the connection (open when the answer is 101, whose accept key is checked).
fn upgrade(server: &Server, path: &str, extra: &str) -> (String, RawClient) {
    let mut raw = RawClient::connect_tcp(server.addr);
    raw.set_timeout(PROMPT);
    raw.send_raw(upgrade_request(path, extra).as_bytes())
        .expect("write upgrade request");
    let head = raw
        .read_http_head()
        .unwrap_or_else(|e| panic!("no answer to the upgrade with {extra:?}: {e}"));
    if status_line(&head).starts_with("HTTP/1.1 101 ") {
        assert_eq!(header(&head, "Sec-WebSocket-Accept"), Some(SAMPLE_ACCEPT));
    }
    (head, raw)
}

/// [`upgrade`] to serve's `/ws` that must succeed; reads the welcome.
fn open_chat(server: &Server, extra: &str) -> RawClient {
    let (head, mut raw) = upgrade(server, "/ws", extra);
    assert_eq!(
        status_line(&head),
        "HTTP/1.1 101 Switching Protocols",
        "upgrade with {extra:?}"
    );
    let welcome = raw.read_frame();
    assert!(
        String::from_utf8_lossy(&welcome.payload).contains("\"welcome\""),
        "{welcome:?}"
    );
    raw
}

/// Asserts that an upgrade to serve's `/ws` with `extra` headers is refused with `status`
/// (the full status line) and `Retry-After: 1`.
fn refused(server: &Server, extra: &str, status: &str) {
    let (head, _) = upgrade(server, "/ws", extra);
    assert_eq!(status_line(&head), status, "upgrade with {extra:?}: {head}");
    assert_eq!(
        header(&head, "Retry-After"),
        Some("1"),
        "refusal without Retry-After: {head}"
    );
}

/// Serve with `flags` (the request budget lifted) and a bystander, welcomed, that sends
/// `headers` with its upgrade.
fn serve_limited(flags: &[&str], headers: &[&str]) -> (Server, Bystander) {
    let mut args = flags.to_vec();
    args.extend(MANY_REQUESTS);
    let server = Server::serve(&args);
    let by = Bystander::chat(&server, headers);
    (server, by)
}

/// Polls `condition` every 20 ms for up to 5 s.
fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// Closes a raw client with 1000 and waits for the server's reply and end of stream.
fn close_normally(mut raw: RawClient) {
    raw.send(&OutFrame::close(1000, "")).unwrap();
    let (_, code, _) = read_until_close(&mut raw, 100);
    assert_eq!(code, Some(1000));
}

/// The `X-Real-IP` header line for `ip`.
fn real_ip(ip: &str) -> String {
    format!("X-Real-IP: {ip}\r\n")
}

// ---------------------------------------------------------------------------------------------
// Admission: connections in all and per address, request heads per second
// ---------------------------------------------------------------------------------------------

#[test]
fn max_connections_is_503_and_counted_as_server_full() {
    let (mut server, mut by) = serve_limited(&["--max-connections", "3"], &[]);
    let a = open_chat(&server, "");
    let _b = open_chat(&server, "");
    // Full: further upgrades get 503, plain HTTP is still served.
    for _ in 0..2 {
        refused(&server, "", "HTTP/1.1 503 Service Unavailable");
    }
    by.round_trip("while the server is full");
    let (head, _) = http_exchange(server.addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status_line(&head), "HTTP/1.1 200 OK", "/healthz when full");
    let metrics = fetch_metrics(server.addr, "");
    assert_eq!(
        metrics.get(&rejections("server_full")),
        Some(&2),
        "{metrics:?}"
    );
    assert_eq!(
        metrics.get("wsloop_open_connections"),
        Some(&3),
        "{metrics:?}"
    );
    // A place frees up: the next upgrade is accepted.
    close_normally(a);
    wait_for("the closed connection to be counted", || {
        fetch_metrics(server.addr, "").get("wsloop_open_connections") == Some(&2)
    });
    let _c = open_chat(&server, "");
    refused(&server, "", "HTTP/1.1 503 Service Unavailable");
    assert_eq!(sample(&server, &rejections("server_full")), 3);
    by.round_trip("after");
    assert!(server.is_running());
}

#[test]
fn max_connections_per_address_applies_per_proxy_address_with_trust_proxy() {
    let (mut server, mut by) = serve_limited(
        &["--trust-proxy", "--max-connections-per-address", "2"],
        &["X-Real-IP: 10.0.0.2"],
    );
    let a1 = open_chat(&server, &real_ip("10.0.0.1"));
    let _a2 = open_chat(&server, &real_ip("10.0.0.1"));
    // 10.0.0.1 is at its limit, by the one header the proxy sets (X-Real-IP by default).
    refused(
        &server,
        &real_ip("10.0.0.1"),
        "HTTP/1.1 429 Too Many Requests",
    );
    by.round_trip("while 10.0.0.1 is at its limit");
    // X-Forwarded-For is not that header: it cannot name 10.0.0.1 (nor dodge the limit);
    // without X-Real-IP the client is the TCP peer, 127.0.0.1.
    let _xff = open_chat(&server, "X-Forwarded-For: 10.0.0.2, 10.0.0.1\r\n");
    let _b2 = open_chat(&server, &real_ip("10.0.0.2"));
    let metrics_ip = real_ip("10.255.0.1");
    assert_eq!(
        sample_with(&server, &metrics_ip, &rejections("address_connections")),
        1
    );
    // 10.0.0.1 closes one: it may open one again.
    close_normally(a1);
    wait_for("10.0.0.1 to have a free place", || {
        let (head, _) = upgrade(&server, "/ws", &real_ip("10.0.0.1"));
        status_line(&head) == "HTTP/1.1 101 Switching Protocols"
    });
    by.round_trip("after");
    assert!(server.is_running());
}

#[test]
fn trust_proxy_header_x_forwarded_for_takes_the_entry_the_proxy_appended() {
    let (mut server, mut by) = serve_limited(
        &[
            "--trust-proxy",
            "--trust-proxy-header",
            "x-forwarded-for",
            "--max-connections-per-address",
            "2",
        ],
        &["X-Forwarded-For: 10.0.0.2"],
    );
    // The last entry is the proxy's; the earlier ones are the client's and do not count.
    let _a1 = open_chat(&server, "X-Forwarded-For: 10.0.0.1\r\n");
    let _a2 = open_chat(&server, "X-Forwarded-For: 6.6.6.6, 10.0.0.1\r\n");
    refused(
        &server,
        "X-Forwarded-For: 7.7.7.7, 10.0.0.1\r\n",
        "HTTP/1.1 429 Too Many Requests",
    );
    // A client's own X-Real-IP is passed through by such a proxy: it must not count.
    refused(
        &server,
        "X-Real-IP: 10.0.0.9\r\nX-Forwarded-For: 10.0.0.1\r\n",
        "HTTP/1.1 429 Too Many Requests",
    );
    by.round_trip("while 10.0.0.1 is at its limit");
    assert!(server.is_running());
}

#[test]
fn max_connections_per_address_ignores_proxy_headers_without_trust_proxy() {
    let (mut server, mut by) = serve_limited(
        &["--max-connections-per-address", "2"],
        &["X-Real-IP: 10.0.0.1"],
    );
    let _b = open_chat(&server, &real_ip("10.0.0.2"));
    // Both count for 127.0.0.1, the TCP peer: the claimed addresses change nothing.
    refused(
        &server,
        &real_ip("10.0.0.3"),
        "HTTP/1.1 429 Too Many Requests",
    );
    refused(
        &server,
        "X-Forwarded-For: 10.0.0.4\r\n",
        "HTTP/1.1 429 Too Many Requests",
    );
    refused(&server, "", "HTTP/1.1 429 Too Many Requests");
    by.round_trip("while 127.0.0.1 is at its limit");
    assert_eq!(sample(&server, &rejections("address_connections")), 3);
    assert!(server.is_running());
}

#[test]
fn handshakes_per_second_applies_per_proxy_address_with_trust_proxy() {
    // 1 a second sustained, bursts of 2.
    let mut server = Server::serve(&["--trust-proxy", "--handshakes-per-second", "1"]);
    let mut by = Bystander::chat(&server, &["X-Real-IP: 10.0.0.2"]);
    let healthz = |ip: &str| {
        let request = format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{}\r\n", real_ip(ip));
        http_exchange(server.addr, request.as_bytes()).0
    };
    let start = Instant::now();
    assert_eq!(status_line(&healthz("10.0.0.1")), "HTTP/1.1 200 OK");
    assert_eq!(status_line(&healthz("10.0.0.1")), "HTTP/1.1 200 OK");
    // The burst is spent: plain requests and upgrades from 10.0.0.1 get 429.
    let head = healthz("10.0.0.1");
    assert_eq!(
        status_line(&head),
        "HTTP/1.1 429 Too Many Requests",
        "{head}"
    );
    assert_eq!(header(&head, "Retry-After"), Some("1"));
    refused(
        &server,
        &real_ip("10.0.0.1"),
        "HTTP/1.1 429 Too Many Requests",
    );
    assert!(
        start.elapsed() < Duration::from_millis(900),
        "too slow to test a rate of 1 a second: {:?}",
        start.elapsed()
    );
    // Other addresses have their own budget.
    let _other = open_chat(&server, &real_ip("10.0.0.3"));
    by.round_trip("while 10.0.0.1 is over its rate");
    assert_eq!(
        sample_with(&server, &real_ip("10.255.0.1"), &rejections("request_rate")),
        2
    );
    // The budget refills at the rate.
    thread::sleep(Duration::from_millis(1_100));
    assert_eq!(status_line(&healthz("10.0.0.1")), "HTTP/1.1 200 OK");
    assert!(server.is_running());
}

#[test]
fn handshakes_per_second_ignores_proxy_headers_without_trust_proxy() {
    let mut server = Server::serve(&["--handshakes-per-second", "1"]);
    // The bystander's upgrade takes the first of 127.0.0.1's two.
    let mut by = Bystander::chat(&server, &["X-Real-IP: 10.0.0.1"]);
    let start = Instant::now();
    let _b = open_chat(&server, &real_ip("10.0.0.2"));
    refused(
        &server,
        &real_ip("10.0.0.3"),
        "HTTP/1.1 429 Too Many Requests",
    );
    let (head, _) = http_exchange(
        server.addr,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Real-IP: 10.0.0.4\r\n\r\n",
    );
    assert_eq!(status_line(&head), "HTTP/1.1 429 Too Many Requests");
    assert!(start.elapsed() < Duration::from_millis(900));
    // Open connections are not affected.
    by.round_trip("while 127.0.0.1 is over its rate");
    thread::sleep(Duration::from_millis(1_100));
    assert_eq!(sample(&server, &rejections("request_rate")), 2);
    assert!(server.is_running());
}

// ---------------------------------------------------------------------------------------------
// Handshake: head size, header count, deadline
// ---------------------------------------------------------------------------------------------

/// An upgrade request to `/ws` of exactly `size` bytes (one padding header).
fn upgrade_of_size(size: usize) -> String {
    let base = upgrade_request("/ws", "X-Pad: \r\n").len();
    let request = upgrade_request("/ws", &format!("X-Pad: {}\r\n", "p".repeat(size - base)));
    assert_eq!(request.len(), size);
    request
}

#[test]
fn max_head_bytes_is_431_and_counted() {
    let (mut server, mut by) = serve_limited(&["--max-head-bytes", "1024"], &[]);
    // Exactly at the limit: accepted.
    let mut raw = RawClient::connect_tcp(server.addr);
    raw.send_raw(upgrade_of_size(1024).as_bytes()).unwrap();
    let head = raw.read_http_head().unwrap();
    assert_eq!(status_line(&head), "HTTP/1.1 101 Switching Protocols");
    // One byte more: 431.
    let (head, _) = http_exchange(server.addr, upgrade_of_size(1025).as_bytes());
    assert_eq!(
        status_line(&head),
        "HTTP/1.1 431 Request Header Fields Too Large"
    );
    // A head that has not ended yet: 431 as soon as it passes the limit.
    let mut slow = RawClient::connect_tcp(server.addr);
    slow.set_timeout(PROMPT);
    let partial = format!(
        "GET /ws HTTP/1.1\r\nHost: x\r\nX-Long: {}",
        "l".repeat(1100)
    );
    slow.send_raw(partial.as_bytes()).unwrap();
    let head = slow
        .read_http_head()
        .unwrap_or_else(|e| panic!("no 431 before the head ends: {e}"));
    assert_eq!(
        status_line(&head),
        "HTTP/1.1 431 Request Header Fields Too Large"
    );
    by.round_trip("after");
    assert_eq!(sample(&server, &rejections("head_too_large")), 2);
    assert!(server.is_running());
}

#[test]
fn max_headers_is_431_and_counted() {
    let (mut server, mut by) = serve_limited(&["--max-headers", "8"], &[]);
    // The upgrade request has 5 headers: 3 more make 8, the limit.
    let (head, _raw) = upgrade(&server, "/ws", "X-A: 1\r\nX-B: 2\r\nX-C: 3\r\n");
    assert_eq!(status_line(&head), "HTTP/1.1 101 Switching Protocols");
    let (head, _) = upgrade(&server, "/ws", "X-A: 1\r\nX-B: 2\r\nX-C: 3\r\nX-D: 4\r\n");
    assert_eq!(
        status_line(&head),
        "HTTP/1.1 431 Request Header Fields Too Large"
    );
    // Plain requests too.
    let request = format!("GET /healthz HTTP/1.1\r\n{}\r\n", "X-H: h\r\n".repeat(9));
    let (head, _) = http_exchange(server.addr, request.as_bytes());
    assert_eq!(
        status_line(&head),
        "HTTP/1.1 431 Request Header Fields Too Large"
    );
    by.round_trip("after");
    assert_eq!(sample(&server, &rejections("too_many_headers")), 2);
    assert!(server.is_running());
}

#[test]
fn handshake_timeout_closes_slowloris_connections_and_counts_them() {
    let mut server = Server::serve(&[
        "--handshake-timeout",
        "500ms",
        MANY_REQUESTS[0],
        MANY_REQUESTS[1],
    ]);
    let mut by = Bystander::chat(&server, &[]);
    let rss_before = rss_kib(server.pid());
    // 20 clients trickle a valid head one byte every 100 ms (it would take 18 s); one sends
    // nothing at all.
    let request = upgrade_request("/ws", "");
    let start = Instant::now();
    let mut sockets: Vec<(TcpStream, Option<Duration>)> = (0..21)
        .map(|_| {
            let s = TcpStream::connect(server.addr).unwrap();
            s.set_nodelay(true).unwrap();
            s.set_nonblocking(true).unwrap();
            (s, None)
        })
        .collect();
    let mut received = 0;
    let mut sent = 0;
    while sockets.iter().any(|(_, closed)| closed.is_none()) {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "slowloris connections still open after 5 s with a 500 ms deadline"
        );
        for (i, (socket, closed)) in sockets.iter_mut().enumerate() {
            if closed.is_some() {
                continue;
            }
            if i > 0 {
                let _ = socket.write(&request.as_bytes()[sent..sent + 1]);
            }
            let mut buf = [0u8; 1024];
            match socket.read(&mut buf) {
                Ok(0) => *closed = Some(start.elapsed()),
                Ok(n) => received += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => *closed = Some(start.elapsed()),
            }
        }
        sent += 1;
        if sent == 3 {
            by.round_trip("during the slowloris");
        }
        thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(received, 0, "the server answered an incomplete head");
    for (i, (_, closed)) in sockets.iter().enumerate() {
        let at = closed.unwrap();
        assert!(
            at < Duration::from_millis(2_500),
            "connection {i} closed after {at:?} with a 500 ms deadline"
        );
    }
    by.round_trip("after the slowloris");
    assert_eq!(sample(&server, &rejections("handshake_timeout")), 21);
    assert!(rss_kib(server.pid()) < rss_before + 16 * 1024);
    assert!(server.is_running());
}

// ---------------------------------------------------------------------------------------------
// Frames and messages
// ---------------------------------------------------------------------------------------------

/// A JSON ping of exactly `size` bytes (padded with an ignored field).
fn json_ping_of_size(ts: u64, size: usize) -> String {
    let base = format!(r#"{{"type":"ping","ts":{ts},"pad":""}}"#).len();
    let text = format!(
        r#"{{"type":"ping","ts":{ts},"pad":"{}"}}"#,
        "p".repeat(size - base)
    );
    assert_eq!(text.len(), size);
    text
}

/// Reads the JSON reply of a raw chat client; must be a pong echoing `ts`.
fn expect_pong(raw: &mut RawClient, ts: u64, what: &str) {
    let frame = raw.read_frame();
    let reply: Value = serde_json::from_slice(&frame.payload)
        .unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {frame:?}"));
    assert_eq!(
        (reply["type"].as_str(), reply["echo"].as_u64()),
        (Some("pong"), Some(ts)),
        "{what}: {reply}"
    );
}

/// Reads until the close; asserts its code and that nothing came before; answers it.
fn expect_failed(raw: &mut RawClient, code: u16, what: &str) {
    let (before, got, reason) = read_until_close(raw, 0);
    assert!(before.is_empty());
    assert_eq!(got, Some(code), "{what}: {reason}");
    raw.reply_close(got);
    raw.expect_eof();
}

#[test]
fn max_message_is_1009_per_frame_and_per_message_before_the_body() {
    let (mut server, mut by) = serve_limited(&["--max-message", "4096"], &[]);
    // At the limit, in one frame and in two: accepted.
    let mut raw = open_chat(&server, "");
    raw.send(&OutFrame::text(json_ping_of_size(1, 4096)))
        .unwrap();
    expect_pong(&mut raw, 1, "a 4096-byte message");
    let text = json_ping_of_size(2, 4096);
    raw.send_all(&[
        OutFrame::text(&text.as_bytes()[..2048]).fin(false),
        OutFrame::continuation(&text.as_bytes()[2048..]),
    ])
    .unwrap();
    expect_pong(&mut raw, 2, "a 4096-byte message in two fragments");
    // A frame declaring one byte more: 1009 from its header alone.
    raw.set_timeout(PROMPT);
    raw.send_raw(&OutFrame::text(Vec::new()).declared_len(4097).header())
        .unwrap();
    by.round_trip("after an oversized frame header");
    expect_failed(&mut raw, 1009, "a frame declaring 4097 bytes");
    // Fragments under the frame limit whose sum passes the message limit: 1009 from the
    // header of the fragment that would pass it.
    let mut raw = open_chat(&server, "");
    raw.set_timeout(PROMPT);
    let mut bytes = OutFrame::text(vec![b' '; 3000]).fin(false).encode();
    bytes.extend(
        OutFrame::continuation(Vec::new())
            .declared_len(1097)
            .header(),
    );
    raw.send_raw(&bytes).unwrap();
    by.round_trip("after a message passing the limit");
    expect_failed(&mut raw, 1009, "fragments summing to 4097 bytes");
    let metrics = fetch_metrics(server.addr, "");
    assert_eq!(metrics.get(&closes(1009)), Some(&2), "{metrics:?}");
    assert_eq!(
        metrics.get("wsloop_protocol_errors_total"),
        Some(&2),
        "{metrics:?}"
    );
    assert!(server.is_running());
}

#[test]
fn max_fragments_is_1009_and_counted() {
    let (mut server, mut by) = serve_limited(&["--max-fragments", "100"], &[]);
    let fragmented = |text: &str, count: usize| -> Vec<OutFrame> {
        let bytes = text.as_bytes();
        let size = bytes.len().div_ceil(count);
        let pieces: Vec<&[u8]> = bytes.chunks(size).collect();
        assert_eq!(pieces.len(), count);
        pieces
            .iter()
            .enumerate()
            .map(|(i, piece)| {
                let frame = if i == 0 {
                    OutFrame::text(piece.to_vec())
                } else {
                    OutFrame::continuation(piece.to_vec())
                };
                frame.fin(i == count - 1)
            })
            .collect()
    };
    let mut raw = open_chat(&server, "");
    raw.send_all(&fragmented(&json_ping_of_size(7, 1000), 100))
        .unwrap();
    expect_pong(&mut raw, 7, "a message of 100 fragments");
    raw.send_all(&fragmented(&json_ping_of_size(8, 1010), 101))
        .unwrap();
    by.round_trip("after 101 fragments");
    expect_failed(&mut raw, 1009, "a message of 101 fragments");
    assert_eq!(sample(&server, &closes(1009)), 1);
    assert!(server.is_running());
}

// ---------------------------------------------------------------------------------------------
// Outbound backpressure and pongs owed
// ---------------------------------------------------------------------------------------------

/// How many chats the publisher of [`slow_consumer_scenario`] sends (16 MiB in all: several
/// times what the kernel buffers of the non-reader can hold).
const SLOW_CONSUMER_MESSAGES: usize = 2_000;

#[test]
fn max_backpressure_closes_a_slow_consumer_with_1008_while_a_publisher_broadcasts_at_full_speed() {
    slow_consumer_scenario(false);
}

/// Reads the next message of a chat client of [`slow_consumer_scenario`]: it must be chat
/// number `next`.
fn expect_chat(c: &mut Client, next: usize, who: &str) {
    loop {
        match c.recv() {
            Ok(Received::Text(t)) => {
                let chat: Value = serde_json::from_str(&t).unwrap();
                assert_eq!(chat["type"], "chat", "{who}: {}", &t[..100.min(t.len())]);
                assert_eq!(index_of(&chat), next, "{who}: messages out of order");
                return;
            }
            Ok(Received::Ping(_) | Received::Pong(_)) => {}
            Ok(Received::Close(code, reason)) => panic!(
                "{who} reads everything, yet was closed with {code:?} ({reason}) after \
                 {next} of {SLOW_CONSUMER_MESSAGES} messages"
            ),
            other => panic!("{who}: message {next} of {SLOW_CONSUMER_MESSAGES}: {other:?}"),
        }
    }
}

/// The index at the start of a chat content `"000123 ..."`.
fn index_of(chat: &Value) -> usize {
    chat["content"].as_str().expect("content")[..6]
        .parse()
        .expect("index")
}

/// One client that never reads, two that read everything and a publisher broadcasting
/// [`SLOW_CONSUMER_MESSAGES`] chats of 8 KiB to all of them, with `--max-backpressure 262144`;
/// `paced`: the publisher has at most 8 messages in flight, else it writes as fast
/// as it can. The non-reader must be closed with 1008 (it sees the close after reading what
/// was queued before it) and counted; the readers must get every message, in order.
fn slow_consumer_scenario(paced: bool) {
    const COUNT: usize = SLOW_CONSUMER_MESSAGES;
    let mut server = Server::serve(&[
        "--max-backpressure",
        "262144",
        "--max-messages-per-second",
        "1000000",
        MANY_REQUESTS[0],
        MANY_REQUESTS[1],
    ]);
    let rss_before = rss_kib(server.pid());
    let filler = "f".repeat(8 * 1024);
    let options = ClientOptions {
        timeout: Some(Duration::from_secs(20)),
        ..Default::default()
    };
    let join = || {
        let mut c = Client::connect_with(&server.url("/ws"), &options).unwrap();
        match c.recv_message().unwrap() {
            Received::Text(t) => assert!(t.contains("\"welcome\""), "{t}"),
            other => panic!("welcome: {other:?}"),
        }
        c
    };
    // The slow consumer: joins and reads nothing.
    let slow = open_chat(&server, "");
    // Two readers, and the publisher, which reads its own copies too.
    let reader = |mut c: Client, who: &'static str| {
        thread::spawn(move || {
            let start = Instant::now();
            let mut next = 0;
            while next < COUNT {
                expect_chat(&mut c, next, who);
                next += 1;
            }
            start.elapsed()
        })
    };
    let mut publisher = join();
    let mut writer = publisher.writer();
    let mut readers = vec![reader(join(), "reader 1"), reader(join(), "reader 2")];
    // Watches /metrics for the slow consumer to be counted, then reads its queue to the close
    // (the server keeps a closing connection for the close timeout, 5 s).
    let addr = server.addr;
    let watcher = thread::spawn(move || {
        let mut slow = slow;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let m = fetch_metrics(addr, "");
            if m.get("wsloop_slow_consumer_disconnects_total") == Some(&1) {
                break;
            }
            assert!(Instant::now() < deadline, "no slow consumer counted: {m:?}");
            thread::sleep(Duration::from_millis(50));
        }
        slow.set_timeout(Duration::from_secs(10));
        read_until_close(&mut slow, COUNT + 1)
    });
    let start = Instant::now();
    let chat = |i: usize| format!(r#"{{"type":"chat","content":"{i:06} {filler}"}}"#);
    if paced {
        // At most 8 messages (64 KiB) in flight: the publisher waits for its own copies.
        for window in (0..COUNT).collect::<Vec<_>>().chunks(8) {
            for &i in window {
                writer.send_text(&chat(i)).unwrap();
            }
            for &i in window {
                expect_chat(&mut publisher, i, "publisher");
            }
        }
    } else {
        readers.push(reader(publisher, "publisher"));
        for i in 0..COUNT {
            writer.send_text(&chat(i)).unwrap();
        }
    }
    let sent_in = start.elapsed();
    for (i, r) in readers.into_iter().enumerate() {
        let took = r.join().unwrap_or_else(|_| panic!("reader {i} failed"));
        assert!(
            took < Duration::from_secs(60),
            "reader {i} took {took:?} for {COUNT} messages"
        );
    }
    let (frames, code, reason) = watcher.join().expect("the slow consumer's close");
    assert_eq!(code, Some(1008), "slow consumer: {reason}");
    // What reached the slow consumer is a prefix of the stream, in order.
    for (i, frame) in frames.iter().enumerate() {
        assert_eq!(frame.opcode, opcode::TEXT, "{frame:?}");
        let chat: Value = serde_json::from_slice(&frame.payload).unwrap();
        assert_eq!(index_of(&chat), i, "the slow consumer's message {i}");
    }
    assert!(
        frames.len() < COUNT,
        "the slow consumer got all {COUNT} messages: it was not slow"
    );
    let metrics = fetch_metrics(server.addr, "");
    assert_eq!(
        metrics.get("wsloop_slow_consumer_disconnects_total"),
        Some(&1),
        "{metrics:?}"
    );
    assert_eq!(metrics.get(&closes(1008)), Some(&1), "{metrics:?}");
    assert!(
        rss_kib(server.pid()) < rss_before + 64 * 1024,
        "server memory grew past 64 MiB"
    );
    eprintln!("published {COUNT} messages in {sent_in:?}");
    assert!(server.is_running());
}

/// Writes `count` pings of 125 bytes (the first 8: the big-endian index) from a thread, in
/// batches of 500; returns the thread and the count of pings written so far.
fn ping_flood(raw: &RawClient, count: usize) -> (thread::JoinHandle<()>, Arc<AtomicUsize>) {
    let mut writer = raw.stream().try_clone().unwrap();
    let sent = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&sent);
    let flood = thread::spawn(move || {
        for batch in 0..count / 500 {
            let frames: Vec<OutFrame> = (0..500)
                .map(|i| {
                    let mut payload = ((batch * 500 + i) as u64).to_be_bytes().to_vec();
                    payload.resize(125, b'p');
                    OutFrame::ping(payload)
                })
                .collect();
            writer.write_all(&encode_all(&frames)).unwrap();
            counter.fetch_add(500, Ordering::Relaxed);
        }
    });
    (flood, sent)
}

/// Waits until `sent` reaches `count` or stops growing for `quiet`; returns its value.
fn until_done_or_stalled(sent: &AtomicUsize, count: usize, quiet: Duration) -> usize {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = usize::MAX;
    loop {
        let now = sent.load(Ordering::Relaxed);
        if now == count || now == last {
            return now;
        }
        assert!(Instant::now() < deadline, "writes neither stall nor finish");
        last = now;
        thread::sleep(quiet);
    }
}

/// Reads pongs of [`ping_flood`] pings until the one for ping `last`; checks they come in
/// order. Returns how many came.
fn read_pongs_until(raw: &RawClient, last: u64) -> usize {
    let mut reader = FrameReader::new(raw.stream(), Duration::from_secs(10));
    let mut pongs = 0usize;
    let mut previous: Option<u64> = None;
    loop {
        let frame = reader.next_frame();
        assert_eq!(frame.opcode, opcode::PONG, "{frame:?}");
        assert_eq!(frame.payload.len(), 125);
        let n = u64::from_be_bytes(frame.payload[..8].try_into().unwrap());
        assert!(
            previous.is_none_or(|p| n > p),
            "pong {n} after pong {previous:?}"
        );
        previous = Some(n);
        pongs += 1;
        if n == last {
            return pongs;
        }
    }
}

#[test]
fn at_most_one_pong_is_owed_to_a_peer_that_does_not_read() {
    // 200,000 pings (26 MB) to a server with the default 4 MiB outbound cap, never reading
    // while writing. Owing at most one pong, the server never has more than one queued for
    // this client beyond what the socket takes, so it never needs to stop reading it.
    const PINGS: usize = 200_000;
    let mut server = Server::echo(&["--max-pings-per-second", "100000000"]);
    let mut by = Bystander::echo(&server);
    let rss_before = rss_kib(server.pid());
    let mut raw = RawClient::open(server.addr);
    raw.set_timeout(Duration::from_secs(60));
    let (flood, sent) = ping_flood(&raw, PINGS);
    let written = until_done_or_stalled(&sent, PINGS, Duration::from_secs(1));
    by.round_trip("while the pinger does not read");
    let rss = rss_kib(server.pid());
    // Unblock the writer whatever happened, then judge.
    let pongs = read_pongs_until(&raw, PINGS as u64 - 1);
    flood.join().unwrap();
    assert_eq!(
        written, PINGS,
        "the pinger's writes stalled after {written} of {PINGS} pings: the server stopped \
         reading it because the pongs it owes piled up in its outbound queue (server RSS \
         {rss} KiB, was {rss_before} KiB); {pongs} pongs came in all"
    );
    assert!(
        pongs < PINGS,
        "every one of {PINGS} pings was answered: nothing was coalesced"
    );
    by.round_trip("after");
    assert!(server.is_running());
}

#[test]
fn pongs_owed_to_a_peer_that_does_not_read_stay_within_the_outbound_cap() {
    // With a 64 KiB cap, 200,000 pings (26 MB) from a client that does not read: the server
    // stops reading it once what it owes passes the cap, so its memory stays flat; when the
    // client reads, the pongs come in order and the last ping is answered.
    const PINGS: usize = 200_000;
    let mut server = Server::echo(&[
        "--max-pings-per-second",
        "100000000",
        "--max-backpressure",
        "65536",
    ]);
    let mut by = Bystander::echo(&server);
    let rss_before = rss_kib(server.pid());
    let mut raw = RawClient::open(server.addr);
    // Writes block while the server waits for this client to read: allow for it.
    raw.set_timeout(Duration::from_secs(60));
    let (flood, sent) = ping_flood(&raw, PINGS);
    let stalled_at = until_done_or_stalled(&sent, PINGS, Duration::from_millis(300));
    by.round_trip("while the pinger does not read");
    let rss = rss_kib(server.pid());
    assert!(
        rss < rss_before + 16 * 1024,
        "pongs pile up: server RSS {rss} KiB, was {rss_before} KiB, after {stalled_at} pings"
    );
    let pongs = read_pongs_until(&raw, PINGS as u64 - 1);
    flood.join().unwrap();
    assert!(pongs <= PINGS);
    by.round_trip("after");
    assert!(server.is_running());
}

// ---------------------------------------------------------------------------------------------
// Rates: messages and pings per second; idle timeout
// ---------------------------------------------------------------------------------------------

#[test]
fn max_messages_per_second_gets_rate_limited_errors_then_1008() {
    // 10 a second, bursts of 20; a client that goes on through another 20 refusals is closed.
    let (mut server, mut by) = serve_limited(&["--max-messages-per-second", "10"], &[]);
    let mut raw = open_chat(&server, "");
    let frames: Vec<OutFrame> = (0..100)
        .map(|i| OutFrame::text(format!(r#"{{"type":"ping","ts":{i}}}"#)))
        .collect();
    raw.send_all(&frames).unwrap();
    by.round_trip("during the message flood");
    let (before, code, reason) = read_until_close(&mut raw, 100);
    assert_eq!(code, Some(1008), "message flood: {reason}");
    let replies: Vec<Value> = before
        .iter()
        .map(|f| serde_json::from_slice(&f.payload).unwrap())
        .collect();
    for (i, reply) in replies.iter().take(20).enumerate() {
        assert_eq!(
            (reply["type"].as_str(), reply["echo"].as_u64()),
            (Some("pong"), Some(i as u64)),
            "reply {i} (within the burst)"
        );
    }
    let limited = replies
        .iter()
        .filter(|r| r["type"] == "error" && r["code"] == "rate_limited")
        .count();
    let pongs = replies.iter().filter(|r| r["type"] == "pong").count();
    assert_eq!(
        pongs + limited,
        replies.len(),
        "only pongs and rate_limited"
    );
    assert!(
        limited >= 20,
        "{limited} rate_limited errors before the close"
    );
    // The client answers the close as clients do.
    raw.reply_close(code);
    raw.expect_eof();
    by.round_trip("after the message flood");
    // Counted under its close code only: there is no rate-limit counter (see the report).
    assert_eq!(sample(&server, &closes(1008)), 1);
    assert!(server.is_running());
}

#[test]
fn max_pings_per_second_is_1008_and_counted() {
    let mut server = Server::serve(&[
        "--max-pings-per-second",
        "10",
        MANY_REQUESTS[0],
        MANY_REQUESTS[1],
    ]);
    let mut by = Bystander::chat(&server, &[]);
    let mut raw = open_chat(&server, "");
    // At the rate: 10 pings in a second, each answered.
    let pings = |tag: &str, n: usize| -> Vec<OutFrame> {
        (0..n)
            .map(|i| OutFrame::ping(format!("{tag}{i}")))
            .collect()
    };
    raw.send_all(&pings("a", 10)).unwrap();
    for i in 0..10 {
        let pong = raw.read_frame();
        assert_eq!(
            (pong.opcode, pong.payload),
            (opcode::PONG, format!("a{i}").into_bytes())
        );
    }
    // Past it: 1008.
    raw.send_all(&pings("b", 5)).unwrap();
    by.round_trip("during the ping flood");
    let (before, code, reason) = read_until_close(&mut raw, 5);
    assert_eq!(code, Some(1008), "{reason}");
    assert!(before.len() <= 1, "{before:?}");
    raw.reply_close(code);
    raw.expect_eof();
    // Counted under its close code only: there is no ping-flood counter (see the report).
    assert_eq!(sample(&server, &closes(1008)), 1);
    by.round_trip("after");
    assert!(server.is_running());
}

/// Reads a raw client's frames until a close, answering pings; fails if none comes within
/// `within` of `start`. Returns the close code and when it came.
fn wait_for_close(
    raw: &mut RawClient,
    start: Instant,
    within: Duration,
    what: &str,
) -> (Option<u16>, Duration) {
    raw.set_timeout(Duration::from_millis(100));
    loop {
        assert!(
            start.elapsed() < within,
            "{what}: no close within {within:?}"
        );
        match raw.try_read_frame() {
            Ok(frame) if frame.opcode == opcode::CLOSE => {
                return (frame.close_code().0, start.elapsed());
            }
            Ok(frame) if frame.opcode == opcode::PING => {
                raw.send(&OutFrame::pong(frame.payload)).unwrap();
            }
            Ok(_) => {}
            Err(ReadError::Timeout { .. }) => {}
            Err(e) => panic!("{what}: {e}"),
        }
    }
}

#[test]
fn idle_timeout_closes_a_silent_connection_on_serve_and_is_counted() {
    let mut server = Server::serve(&[
        "--idle-timeout",
        "500ms",
        MANY_REQUESTS[0],
        MANY_REQUESTS[1],
    ]);
    let mut by = Bystander::chat(&server, &[]);
    let start = Instant::now();
    let mut silent = open_chat(&server, "");
    for _ in 0..3 {
        by.round_trip("while the silent client idles");
        thread::sleep(Duration::from_millis(200));
    }
    let (code, at) = wait_for_close(
        &mut silent,
        start,
        Duration::from_secs(3),
        "serve --idle-timeout 500ms (default --ping-interval 30s): silent client",
    );
    assert_eq!(code, Some(1001), "idle timeout close code");
    assert!(at < Duration::from_secs(3), "closed after {at:?}");
    silent.reply_close(code);
    silent.expect_eof();
    assert_eq!(sample(&server, "wsloop_idle_timeouts_total"), 1);
    by.round_trip("after");
    assert!(server.is_running());
}

// ---------------------------------------------------------------------------------------------
// Documentation
// ---------------------------------------------------------------------------------------------

#[test]
fn every_limit_flag_documents_its_default_in_help() {
    for (command, flags) in [
        (
            "serve",
            &[
                "--max-connections",
                "--max-connections-per-address",
                "--handshakes-per-second",
                "--max-head-bytes",
                "--max-headers",
                "--handshake-timeout",
                "--max-message",
                "--max-fragments",
                "--max-backpressure",
                "--max-messages-per-second",
                "--max-pings-per-second",
                "--idle-timeout",
                "--trust-proxy",
                "--trust-proxy-header",
            ][..],
        ),
        (
            "echo",
            &[
                "--max-connections",
                "--max-connections-per-address",
                "--handshakes-per-second",
                "--max-head-bytes",
                "--max-headers",
                "--handshake-timeout",
                "--max-message",
                "--max-fragments",
                "--max-backpressure",
                "--max-pings-per-second",
                "--idle-timeout",
            ][..],
        ),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_wsloop"))
            .args([command, "--help"])
            .output()
            .expect("run wsloop --help");
        let help = String::from_utf8(out.stdout).unwrap();
        // Each option's text runs from its line to the next option's.
        let sections = help.split("\n      --").skip(1);
        for flag in flags {
            let name = flag.trim_start_matches("--");
            let text = sections
                .clone()
                .find(|s| s.starts_with(&format!("{name} ")) || s.starts_with(&format!("{name}\n")))
                .unwrap_or_else(|| panic!("wsloop {command} --help has no {flag}:\n{help}"));
            let documented = text.contains("[default: ")
                || text.contains("Default:")
                || text.contains("off by default")
                || *flag == "--trust-proxy";
            assert!(
                documented,
                "wsloop {command} {flag} does not say its default: {text}"
            );
        }
    }
}

#[test]
fn pending_handshakes_per_address_are_capped_at_accept() {
    let server = Server::serve(&["--max-pending-handshakes-per-address", "3"]);
    // Slowloris from one address: three connections that never send a request head.
    let silent: Vec<TcpStream> = (0..3)
        .map(|_| connect_from("127.0.0.1", server.addr))
        .collect();
    thread::sleep(Duration::from_millis(200));
    // The fourth from that address is closed at accept, before sending anything.
    let mut fourth = connect_from("127.0.0.1", server.addr);
    let started = Instant::now();
    let mut byte = [0u8; 1];
    match fourth.read(&mut byte) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("the fourth pending connection was not refused: {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(2));
    // Another address is not affected: it gets its page at once.
    let mut other = connect_from("127.0.0.2", server.addr);
    other
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .expect("write");
    let mut reply = String::new();
    other.read_to_string(&mut reply).expect("read");
    assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
    // Once the silent ones go, the address is served again, and the refusal was counted.
    drop(silent);
    thread::sleep(Duration::from_millis(200));
    assert_eq!(sample(&server, &rejections("pending_handshakes")), 1);
}
