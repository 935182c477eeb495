//! Hostile input as a table of attacks: each row is what a bad client sends and the exact
//! answer it must get (the HTTP status line, or the close code and how many echoes come
//! first). The scaffolding, written once in [`run_attacks`], checks for every row what holds
//! for all of them: the answer comes within the row's bound (so "at once" and "before the
//! body" are shown by sending only part of the input, "linear time" by a bound a quadratic
//! reader would miss), a failed connection ends with an orderly TCP close, a serve counter
//! names the rejection, and a well-behaved bystander on the same server completes a round
//! trip while the server deals with the attack; after the table, the server's memory has not
//! grown and it still runs.
//!
//! Each rule is tested once where it lives: the frame and handshake rules (every RSV
//! combination, every reserved opcode, every bad key...) are rows of the protocol tables in
//! `tests/proto_connection.rs` and `src/proto/handshake.rs`, and which JSON request gets which
//! error is the in-process table of `src/app/chat/tests.rs`. Here each row is one path through
//! the loop: a decision from a header alone, from a partial frame, from a close payload, after
//! an echo, after a close, from a partial or trickled request head. Floods, which are not a
//! fixed input, are tests of their own below the table. The limits themselves (flags,
//! defaults, counters) are in `tests/limits.rs`.

mod common;

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::raw::{encode_all, opcode, LengthForm, OutFrame, RawClient};
use common::{
    fetch_metrics, header, read_until_close, rejections, rss_kib, sample, status_line,
    upgrade_request, Bystander, FrameReader, Server, MANY_REQUESTS, SAMPLE_ACCEPT,
};
use serde_json::Value;

/// Bound on an answer that must come "at once": without the rest of the input.
const PROMPT: Duration = Duration::from_secs(2);
/// Generous bound on the server's memory growth during an attack that would otherwise grow it
/// without bound.
const RSS_GROWTH_KIB: u64 = 64 * 1024;
/// Bound on the memory growth over a whole table of attacks, none of which may make the
/// server reserve what a header declares.
const TABLE_RSS_GROWTH_KIB: u64 = 16 * 1024;

// ---------------------------------------------------------------------------------------------
// The table's scaffolding
// ---------------------------------------------------------------------------------------------

/// How an attack's bytes go on the wire.
enum Sent {
    /// In one write.
    Whole(Vec<u8>),
    /// One byte per write, with a 50 µs pause after every 8 bytes, so that the server reads
    /// the input in thousands of small pieces.
    Trickle(Vec<u8>),
}

/// The exact answer to an attack.
enum Answer {
    /// On an open WebSocket connection: `echoes` echoed frames, then the server's close with
    /// `code`; once the client answers it, the server closes TCP in order (FIN, no reset).
    Close { echoes: usize, code: u16 },
    /// On a fresh TCP connection: this HTTP status line.
    Status(&'static str),
    /// On a fresh TCP connection: 101 with the accept key of [`SAMPLE_ACCEPT`], no subprotocol
    /// or extension selected, and a working connection (a text is echoed).
    Upgraded,
}

/// One row: what is sent, what must come back, how soon, and the serve counter it raises.
struct Attack {
    name: String,
    sent: Sent,
    answer: Answer,
    within: Duration,
    counted: Option<String>,
}

/// Frames on an open connection, failed with `code` before anything is echoed.
fn fails(name: &str, frames: &[OutFrame], code: u16) -> Attack {
    fails_bytes(name, encode_all(frames), code)
}

/// Bytes (e.g. a header without its payload) on an open connection, failed with `code`.
fn fails_bytes(name: &str, bytes: Vec<u8>, code: u16) -> Attack {
    Attack {
        name: name.to_owned(),
        sent: Sent::Whole(bytes),
        answer: Answer::Close { echoes: 0, code },
        within: PROMPT,
        counted: None,
    }
}

/// A request on a fresh connection, refused with `status` and counted under `reason`.
fn refused(name: &str, request: impl Into<Vec<u8>>, status: &'static str, reason: &str) -> Attack {
    Attack {
        name: name.to_owned(),
        sent: Sent::Whole(request.into()),
        answer: Answer::Status(status),
        within: PROMPT,
        counted: Some(rejections(reason)),
    }
}

/// A request on a fresh connection that must be upgraded within `within`.
fn upgraded(name: &str, request: impl Into<Vec<u8>>, within: Duration) -> Attack {
    Attack {
        name: name.to_owned(),
        sent: Sent::Whole(request.into()),
        answer: Answer::Upgraded,
        within,
        counted: None,
    }
}

impl Attack {
    /// `echoes` frames are echoed before the close.
    fn after_echoes(mut self, echoes: usize) -> Attack {
        if let Answer::Close { code, .. } = self.answer {
            self.answer = Answer::Close { echoes, code };
        }
        self
    }

    /// The bytes go one at a time.
    fn trickled(mut self) -> Attack {
        let (Sent::Whole(bytes) | Sent::Trickle(bytes)) = self.sent;
        self.sent = Sent::Trickle(bytes);
        self
    }
}

/// Which server a table runs against.
#[derive(Clone, Copy, PartialEq)]
enum Target {
    /// `wsloop echo`: frames come back, no `/metrics`.
    Echo,
    /// `wsloop serve`: chat on `/ws`, rejections counted in `/metrics`.
    Serve,
}

/// Runs each attack on its own connection to one server started with `args`, with a
/// bystander connected throughout; see the module docs for what is checked.
fn run_attacks(target: Target, args: &[&str], attacks: Vec<Attack>) {
    let mut server = match target {
        Target::Echo => Server::echo(args),
        Target::Serve => Server::serve(args),
    };
    let mut by = match target {
        Target::Echo => Bystander::echo(&server),
        Target::Serve => Bystander::chat(&server, &[]),
    };
    let rss_before = rss_kib(server.pid());
    for attack in attacks {
        let name = attack.name.as_str();
        let counted = |server: &Server, series: &str| -> u64 {
            let metrics = fetch_metrics(server.addr, "");
            metrics.get(series).copied().unwrap_or(0)
        };
        let count_before = attack.counted.as_ref().map(|s| counted(&server, s));
        let start = Instant::now();
        let mut raw = match (&attack.answer, target) {
            (Answer::Close { .. }, Target::Echo) => RawClient::open(server.addr),
            (Answer::Close { .. }, Target::Serve) => open_chat(&server),
            _ => RawClient::connect_tcp(server.addr),
        };
        raw.set_timeout(attack.within);
        // The server may stop reading once it has decided; what it answers is what matters.
        let _ = match &attack.sent {
            Sent::Whole(bytes) => raw.send_raw(bytes),
            Sent::Trickle(bytes) => bytes.chunks(8).try_for_each(|chunk| {
                raw.send_chopped(chunk, 1, Duration::ZERO)?;
                thread::sleep(Duration::from_micros(50));
                Ok(())
            }),
        };
        by.round_trip(name);
        match attack.answer {
            Answer::Close { echoes, code } => {
                let (before, got, _) = read_until_close(&mut raw, echoes);
                assert_eq!(
                    (before.len(), got),
                    (echoes, Some(code)),
                    "{name}: (frames before the close, close code)"
                );
                raw.reply_close(got);
                raw.set_timeout(PROMPT);
                raw.expect_eof();
            }
            Answer::Status(line) => {
                let head = raw.read_http_head().unwrap_or_else(|e| {
                    panic!("{name}: no answer within {:?}: {e}", raw.timeout())
                });
                assert_eq!(status_line(&head), line, "{name}: {head}");
            }
            Answer::Upgraded => {
                let head = raw.read_http_head().unwrap_or_else(|e| {
                    panic!("{name}: no answer within {:?}: {e}", raw.timeout())
                });
                assert_eq!(
                    status_line(&head),
                    "HTTP/1.1 101 Switching Protocols",
                    "{name}: {head}"
                );
                assert_eq!(header(&head, "Sec-WebSocket-Accept"), Some(SAMPLE_ACCEPT));
                for name in ["Sec-WebSocket-Protocol", "Sec-WebSocket-Extensions"] {
                    assert_eq!(header(&head, name), None, "nothing negotiated: {head}");
                }
                raw.send(&OutFrame::text("still fine")).unwrap();
                assert_eq!(&raw.read_frame().payload[..], b"still fine", "{name}");
            }
        }
        let took = start.elapsed();
        eprintln!("{name}: answered in {took:?}");
        assert!(took < attack.within, "{name}: answered after {took:?}");
        if let (Some(series), Some(before)) = (&attack.counted, count_before) {
            assert_eq!(counted(&server, series), before + 1, "{name}: {series}");
        }
    }
    by.round_trip("after the attacks");
    assert_rss_bounded(&server, rss_before, TABLE_RSS_GROWTH_KIB, "the attacks");
    assert!(server.is_running());
}

/// A raw client that completed the handshake on serve's `/ws` and read its welcome.
fn open_chat(server: &Server) -> RawClient {
    let mut raw = RawClient::connect_tcp(server.addr);
    raw.handshake("/ws");
    let welcome = raw.read_frame();
    assert_eq!(welcome.opcode, opcode::TEXT, "welcome: {welcome:?}");
    assert!(
        String::from_utf8_lossy(&welcome.payload).contains("\"welcome\""),
        "{welcome:?}"
    );
    raw
}

/// The next frame of a raw chat client as JSON (must be a text frame), within [`PROMPT`].
fn json_reply(raw: &mut RawClient, what: &str) -> Value {
    let start = Instant::now();
    let frame = raw
        .try_read_frame()
        .unwrap_or_else(|e| panic!("{what}: no reply within {:?}: {e}", raw.timeout()));
    assert_eq!(frame.opcode, opcode::TEXT, "{what}: {frame:?}");
    let value: Value = serde_json::from_slice(&frame.payload)
        .unwrap_or_else(|e| panic!("{what}: reply is not JSON ({e}): {frame:?}"));
    assert!(
        start.elapsed() < PROMPT,
        "{what}: reply took {:?}",
        start.elapsed()
    );
    value
}

/// Asserts the server's RSS grew by less than `bound_kib` since `before_kib`.
fn assert_rss_bounded(server: &Server, before_kib: u64, bound_kib: u64, what: &str) {
    let after = rss_kib(server.pid());
    assert!(
        after < before_kib + bound_kib,
        "{what}: server RSS grew from {before_kib} KiB to {after} KiB (bound {bound_kib} KiB)"
    );
}

// ---------------------------------------------------------------------------------------------
// The tables
// ---------------------------------------------------------------------------------------------

/// An upgrade request of at most `size` bytes and more than `size - 50`: 40 padding headers
/// (within the default header count).
fn padded_upgrade(size: usize) -> String {
    let base = upgrade_request("/", "").len();
    let line = (size - base) / 40;
    let extra: String = (0..40)
        .map(|i| format!("X-Pad-{i:02}: {}\r\n", "p".repeat(line - 12)))
        .collect();
    let request = upgrade_request("/", &extra);
    assert!(request.len() > size - 50 && request.len() <= size);
    request
}

/// `upgrade_request("/ws", "")` with the line starting with `name:` replaced by `line` (or
/// removed when `line` is empty).
fn with_header(name: &str, line: &str) -> String {
    upgrade_request("/ws", "")
        .split("\r\n")
        .filter_map(|l| {
            if l.starts_with(name) {
                (!line.is_empty()).then_some(line)
            } else {
                Some(l)
            }
        })
        .collect::<Vec<_>>()
        .join("\r\n")
}

#[test]
fn frame_attacks_on_echo_get_their_close_codes() {
    // Default limits: 64 MiB per frame and per message. Heads up to 256 KiB, for the rows
    // that send large ones.
    let limit = 64u64 << 20;
    let header_only = |op: u8, len: u64| OutFrame::new(op, Vec::new()).declared_len(len).header();
    let mut message_past_limit = OutFrame::binary(vec![7; 1000]).fin(false).encode();
    message_past_limit.extend(
        OutFrame::continuation(Vec::new())
            .declared_len(limit - 999)
            .header(),
    );
    // 1000 bytes declared, 20 sent, byte 10 invalid: the rest never comes.
    let mut bad_utf8 = b"0123456789".to_vec();
    bad_utf8.push(0xFF);
    bad_utf8.extend_from_slice(b"abcdefghi");
    let mut after_close = OutFrame::close(1000, "").encode();
    after_close.extend_from_slice(&[0xFF; 64]);
    let surrogate_reason = OutFrame::close(1000, b"\xce\xba\xed\xa0\x80").encode();
    let pathological = [
        (
            "50,000 commas in Sec-WebSocket-Protocol",
            format!("Sec-WebSocket-Protocol: {}\r\n", ",".repeat(50_000)),
        ),
        (
            "100 KB of ', ' in Sec-WebSocket-Protocol",
            format!("Sec-WebSocket-Protocol: {}\r\n", ", ".repeat(50_000)),
        ),
        (
            "50,000 one-letter subprotocols",
            format!("Sec-WebSocket-Protocol: {}a\r\n", "a,".repeat(50_000)),
        ),
        (
            "100 KB of extension offers",
            format!(
                "Sec-WebSocket-Extensions: {}\r\n",
                "permessage-deflate; client_max_window_bits; server_no_context_takeover, "
                    .repeat(1_400)
            ),
        ),
        (
            "50,000 semicolons in Sec-WebSocket-Extensions",
            format!("Sec-WebSocket-Extensions: {}\r\n", ";".repeat(50_000)),
        ),
        (
            "50,000 unbalanced quotes in Sec-WebSocket-Extensions",
            format!(
                "Sec-WebSocket-Extensions: x; a=\"{}\r\n",
                "\"\\".repeat(25_000)
            ),
        ),
    ];
    let mut attacks = vec![
        // §5.1, §5.2, §5.5: rules decided from the header.
        fails("unmasked text", &[OutFrame::text("hello").unmasked()], 1002),
        fails("text with RSV1", &[OutFrame::text("x").rsv(4)], 1002),
        fails("reserved opcode 0x3", &[OutFrame::new(0x3, "x")], 1002),
        fails("fragmented ping", &[OutFrame::ping("p").fin(false)], 1002),
        fails_bytes(
            "a ping header declaring 126 bytes",
            header_only(opcode::PING, 126),
            1002,
        ),
        fails_bytes(
            "a 64-bit length of 2^63, header only",
            OutFrame::binary(Vec::new())
                .declared_len(1 << 63)
                .length_form(LengthForm::Extended64)
                .header(),
            1002,
        ),
        // §5.4: fragmentation, including after a message was echoed.
        fails(
            "continuation with no message",
            &[OutFrame::continuation("x")],
            1002,
        ),
        fails(
            "text inside a fragmented text",
            &[OutFrame::text("a").fin(false), OutFrame::text("b")],
            1002,
        ),
        fails(
            "a continuation after the end of a message",
            &[
                OutFrame::text("a").fin(false),
                OutFrame::continuation("b"),
                OutFrame::continuation("c"),
            ],
            1002,
        )
        .after_echoes(1),
        // §10.4: sizes decided from the header before the body, at the default limit.
        fails_bytes(
            "a text declaring 2^40 bytes",
            header_only(opcode::TEXT, 1 << 40),
            1009,
        ),
        fails_bytes(
            "a binary declaring the limit + 1",
            header_only(opcode::BINARY, limit + 1),
            1009,
        ),
        fails_bytes("a message passing the limit", message_past_limit, 1009),
        // §8.1: UTF-8 checked as it streams in, before the frame or the message ends.
        fails_bytes(
            "a bad byte in a partial frame",
            OutFrame::text(bad_utf8).declared_len(1000).encode(),
            1007,
        ),
        fails(
            "a bad byte in a message that never ends",
            &[
                OutFrame::text(b"ok\xf4".to_vec()).fin(false),
                OutFrame::continuation(b"\x90".to_vec()).fin(false),
            ],
            1007,
        ),
        // §5.5.1, §7.4: close payloads, whole and one byte per write.
        fails(
            "a close reason with a surrogate",
            &[OutFrame::close(1000, b"\xce\xba\xed\xa0\x80")],
            1007,
        ),
        fails_bytes(
            "a close reason with a surrogate, trickled",
            surrogate_reason,
            1007,
        )
        .trickled(),
        fails(
            "a close payload of 1 byte",
            &[OutFrame::new(opcode::CLOSE, vec![0x03])],
            1002,
        ),
        fails(
            "close code 1005 on the wire",
            &[OutFrame::close(1005, "")],
            1002,
        ),
        // §5.5.1: after a close nothing is processed; the close is echoed and TCP ends in
        // order, without a reset for the unread input.
        fails(
            "data after a close",
            &[
                OutFrame::close(1000, "bye"),
                OutFrame::text("after the close"),
                OutFrame::ping("after"),
                OutFrame::binary(vec![0; 10_000]),
            ],
            1000,
        ),
        fails_bytes("garbage after a close", after_close, 1000),
        // Request heads read in linear time: byte by byte, and values that a backtracking
        // parser would choke on (nothing is selected: no subprotocols or extensions here).
        upgraded(
            "a 4 KiB head, one byte at a time",
            padded_upgrade(4 * 1024),
            Duration::from_secs(3),
        )
        .trickled(),
        upgraded(
            "a 60 KiB head, one byte at a time",
            padded_upgrade(60 * 1024),
            Duration::from_secs(8),
        )
        .trickled(),
    ];
    for (name, extra) in &pathological {
        attacks.push(upgraded(
            name,
            upgrade_request("/", extra),
            Duration::from_secs(1),
        ));
    }
    run_attacks(Target::Echo, &["--max-head-bytes", "262144"], attacks);
}

#[test]
fn handshake_attacks_on_serve_get_their_status_and_are_counted() {
    // Default limits: 8 KiB heads, 64 headers.
    let mut line = b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Huge: ".to_vec();
    line.resize(1 << 20, b'a');
    let many_headers: String = (0..10_000)
        .map(|i| format!("X-Header-{i}: v\r\n"))
        .collect();
    let good = upgrade_request("/ws", "");
    let attacks = vec![
        // Answered without the other 960 KiB (or an end of line).
        refused(
            "the first 64 KiB of a 1 MB header line",
            &line[..64 * 1024],
            "HTTP/1.1 431 Request Header Fields Too Large",
            "head_too_large",
        ),
        refused(
            "a 1 MB header line",
            line.clone(),
            "HTTP/1.1 431 Request Header Fields Too Large",
            "head_too_large",
        ),
        refused(
            "10,000 headers",
            upgrade_request("/ws", &many_headers),
            "HTTP/1.1 431 Request Header Fields Too Large",
            "head_too_large",
        ),
        // §4.2.1, one row per answer; the variants are rows of src/proto/handshake.rs.
        refused(
            "no Sec-WebSocket-Key",
            with_header("Sec-WebSocket-Key", ""),
            "HTTP/1.1 400 Bad Request",
            "bad_key",
        ),
        refused(
            "Sec-WebSocket-Version: 8",
            with_header("Sec-WebSocket-Version", "Sec-WebSocket-Version: 8"),
            "HTTP/1.1 426 Upgrade Required",
            "unsupported_version",
        ),
        refused(
            "a POST upgrade",
            good.replacen("GET", "POST", 1),
            "HTTP/1.1 400 Bad Request",
            "not_get",
        ),
        refused(
            "an HTTP/1.0 upgrade",
            good.replacen("HTTP/1.1", "HTTP/1.0", 1),
            "HTTP/1.1 400 Bad Request",
            "http_version",
        ),
    ];
    run_attacks(Target::Serve, &MANY_REQUESTS, attacks);
    // With room for the head, the header count decides.
    let attacks = vec![refused(
        "10,000 headers with 1 MiB heads",
        upgrade_request("/ws", &many_headers),
        "HTTP/1.1 431 Request Header Fields Too Large",
        "too_many_headers",
    )];
    run_attacks(
        Target::Serve,
        &[
            "--max-head-bytes",
            "1048576",
            MANY_REQUESTS[0],
            MANY_REQUESTS[1],
        ],
        attacks,
    );
}

// ---------------------------------------------------------------------------------------------
// Floods and mixed input: not a fixed input, so tests of their own
// ---------------------------------------------------------------------------------------------

#[test]
fn endless_one_byte_continuations_are_1009() {
    // Default limits: a message may have 2^20 frames; the next one fails it.
    let mut server = Server::echo(&[]);
    let mut by = Bystander::echo(&server);
    let rss_before = rss_kib(server.pid());
    let mut raw = RawClient::open(server.addr);
    raw.set_timeout(Duration::from_secs(60));
    raw.send(&OutFrame::text("a").fin(false)).unwrap();
    let mut writer = raw.stream().try_clone().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(1));
    let flood = {
        let (stop, sent) = (Arc::clone(&stop), Arc::clone(&sent));
        thread::spawn(move || {
            let batch = encode_all(&vec![OutFrame::continuation("b").fin(false); 1000]);
            // Bounded: four times what the limit lets through.
            while !stop.load(Ordering::Relaxed) && sent.load(Ordering::Relaxed) < 4 << 20 {
                if writer.write_all(&batch).is_err() {
                    break;
                }
                sent.fetch_add(1000, Ordering::Relaxed);
            }
        })
    };
    by.round_trip("during the flood of continuations");
    let (before, code, _) = read_until_close(&mut raw, 0);
    stop.store(true, Ordering::Relaxed);
    let frames_sent = sent.load(Ordering::Relaxed);
    assert!(before.is_empty());
    assert_eq!(code, Some(1009), "endless one-byte continuations");
    // The counter lags the writes by at most one batch.
    assert!(
        frames_sent + 1000 > 1 << 20,
        "closed after only {frames_sent} frames, before the fragment limit"
    );
    raw.reply_close(code);
    raw.set_timeout(Duration::from_secs(10));
    raw.expect_eof();
    flood.join().unwrap();
    assert_rss_bounded(&server, rss_before, RSS_GROWTH_KIB, "continuation flood");
    by.round_trip("after the flood");
    assert!(server.is_running());
}

#[test]
fn frames_in_the_same_packet_as_the_upgrade_are_processed_by_serve() {
    let mut server = Server::serve(&MANY_REQUESTS);
    let mut by = Bystander::chat(&server, &[]);
    let mut bytes = upgrade_request("/ws", "").into_bytes();
    bytes.extend(OutFrame::text(r#"{"type":"chat","content":"in the upgrade packet"}"#).encode());
    bytes.extend(OutFrame::ping("early").encode());
    bytes.extend(OutFrame::text(r#"{"type":"ping","ts":42}"#).encode());
    let mut raw = RawClient::connect_tcp(server.addr);
    raw.send_raw(&bytes).unwrap();
    let head = raw.read_http_head().unwrap();
    assert_eq!(status_line(&head), "HTTP/1.1 101 Switching Protocols");
    assert_eq!(header(&head, "Sec-WebSocket-Accept"), Some(SAMPLE_ACCEPT));
    let welcome = json_reply(&mut raw, "welcome");
    assert_eq!(welcome["type"], "welcome");
    let chat = json_reply(&mut raw, "own chat");
    assert_eq!(
        (chat["type"].as_str(), chat["content"].as_str()),
        (Some("chat"), Some("in the upgrade packet"))
    );
    let pong = raw.read_frame();
    assert_eq!(
        (pong.opcode, &pong.payload[..]),
        (opcode::PONG, &b"early"[..])
    );
    let reply = json_reply(&mut raw, "JSON pong");
    assert_eq!(
        (reply["type"].as_str(), reply["echo"].as_u64()),
        (Some("pong"), Some(42))
    );
    let seen = by.next_text("the chat sent with the upgrade");
    assert!(seen.contains("in the upgrade packet"), "{seen}");
    by.round_trip("after");
    assert!(server.is_running());
}

#[test]
fn a_ping_flood_is_answered_then_closed_with_1008_past_the_rate() {
    // Default: 50 pings a second.
    let mut server = Server::serve(&MANY_REQUESTS);
    let mut by = Bystander::chat(&server, &[]);
    let rss_before = rss_kib(server.pid());
    let mut raw = open_chat(&server);
    // Answered: each ping gets a pong with its payload.
    for i in 0..10 {
        let payload = format!("p{i}");
        raw.send(&OutFrame::ping(payload.clone())).unwrap();
        let pong = raw.read_frame();
        assert_eq!(
            (pong.opcode, &pong.payload[..]),
            (opcode::PONG, payload.as_bytes()),
            "ping {i}"
        );
    }
    // Flooded: 2000 pings in one write, far past 50 in a second.
    let flood: Vec<OutFrame> = (0..2000).map(|i| OutFrame::ping(format!("f{i}"))).collect();
    raw.send_all(&flood).unwrap();
    by.round_trip("during the ping flood");
    let (before, code, reason) = read_until_close(&mut raw, 2000);
    assert_eq!(code, Some(1008), "ping flood: {reason}");
    // Bounded: only pings within the rate were answered, in order.
    assert!(
        before.len() <= 51,
        "{} pongs before the close",
        before.len()
    );
    for (i, frame) in before.iter().enumerate() {
        assert_eq!(
            (frame.opcode, &frame.payload[..]),
            (opcode::PONG, format!("f{i}").as_bytes()),
            "pong {i}"
        );
    }
    raw.reply_close(code);
    raw.expect_eof();
    assert_eq!(sample(&server, "wsloop_closes_total{code=\"1008\"}"), 1);
    assert_eq!(sample(&server, "wsloop_protocol_errors_total"), 0);
    assert_rss_bounded(&server, rss_before, RSS_GROWTH_KIB, "ping flood");
    by.round_trip("after the ping flood");
    assert!(server.is_running());
}

/// `count` subscribe requests to channels `c-0`, `c-1`, ... as one write.
fn subscriptions(count: usize) -> Vec<u8> {
    let frames: Vec<OutFrame> = (0..count)
        .map(|i| OutFrame::text(format!(r#"{{"type":"subscribe","channel":"c-{i}"}}"#)))
        .collect();
    encode_all(&frames)
}

#[test]
fn twenty_thousand_subscriptions_are_bounded_by_the_channel_cap() {
    // Without a message rate (which `tests/limits.rs` tests), the channel cap alone bounds the
    // subscriptions: 32 granted, every other one refused, memory flat.
    let mut server = Server::serve(&[
        "--max-messages-per-second",
        "1000000",
        "--handshakes-per-second",
        "100000",
    ]);
    let mut by = Bystander::chat(&server, &[]);
    let rss_before = rss_kib(server.pid());
    let mut raw = open_chat(&server);
    let mut reader = FrameReader::new(raw.stream(), Duration::from_secs(10));
    raw.send_raw(&subscriptions(20_000)).unwrap();
    by.round_trip("during 20,000 subscriptions");
    let mut subscribed = 0;
    for i in 0..20_000 {
        let frame = reader.next_frame();
        let reply: Value = serde_json::from_slice(&frame.payload).expect("JSON reply");
        if i < 32 {
            assert_eq!(reply["type"], "subscribed", "reply {i}");
            subscribed += 1;
        } else {
            assert_eq!(
                (reply["type"].as_str(), reply["code"].as_str()),
                (Some("error"), Some("too_many_channels")),
                "reply {i}: {reply}"
            );
        }
    }
    assert_eq!(subscribed, 32);
    // Channel c-40 has no subscriber; c-31 has the attacker.
    by.publish_receivers("c-40", 0);
    by.publish_receivers("c-31", 1);
    assert_rss_bounded(&server, rss_before, RSS_GROWTH_KIB, "20,000 subscriptions");
    by.round_trip("after 20,000 subscriptions");
    assert!(server.is_running());
}

/// Bystander checks specific to the chat.
trait ChatBystander {
    /// Publishes on `channel` and checks the `published` reply's receiver count.
    fn publish_receivers(&mut self, channel: &str, receivers: u64);
}

impl ChatBystander for Bystander {
    fn publish_receivers(&mut self, channel: &str, receivers: u64) {
        self.send_text(&format!(
            r#"{{"type":"publish","channel":"{channel}","content":"hi"}}"#
        ));
        let text = self.next_text("published");
        let reply: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(reply["type"], "published", "{reply}");
        assert_eq!(
            reply["receivers"], receivers,
            "receivers of {channel}: {reply}"
        );
    }
}

#[test]
fn a_client_flooding_valid_messages_does_not_starve_the_others() {
    // Echo has no message rate: a client that writes as fast as it can and reads its echoes
    // must still share the loop with everyone else.
    let mut server = Server::echo(&[]);
    let mut by = Bystander::echo(&server);
    let raw = RawClient::open(server.addr);
    let mut writer = raw.stream().try_clone().unwrap();
    let mut reader = raw.stream().try_clone().unwrap();
    reader
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let flood = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            let batch = encode_all(&vec![OutFrame::binary(vec![1u8; 16]); 1000]);
            let end = Instant::now() + Duration::from_secs(20);
            while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                if writer.write_all(&batch).is_err() {
                    break;
                }
            }
        })
    };
    let drain = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            let mut buf = vec![0u8; 256 * 1024];
            while !stop.load(Ordering::Relaxed) {
                match reader.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
    };
    thread::sleep(Duration::from_millis(300));
    let mut slowest = Duration::ZERO;
    for i in 0..10 {
        let start = Instant::now();
        by.round_trip(&format!("round trip {i} during the flood"));
        slowest = slowest.max(start.elapsed());
    }
    stop.store(true, Ordering::Relaxed);
    flood.join().unwrap();
    drop(raw);
    drain.join().unwrap();
    assert!(
        slowest < Duration::from_secs(1),
        "a bystander round trip took {slowest:?} while another client flooded"
    );
    assert!(server.is_running());
}
