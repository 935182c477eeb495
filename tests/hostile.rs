//! Hostile input, one test per attack listed in the hardening issue: each bad client gets the
//! stated answer (the exact HTTP status or close code), the server stays up, a second,
//! well-behaved client on the same server completes a round trip during or right after the
//! attack, and the server's memory stays bounded where an attack would otherwise grow it.
//!
//! Frame-level attacks run against `wsloop echo`; handshake attacks and hostile JSON against
//! `wsloop serve`, whose `/metrics` counts rejections and closes. "At once" and "before
//! reading the body" are shown by sending only part of the input and getting the answer within
//! [`PROMPT`]; "linear time" by a bound on the answer time for input that a quadratic reader
//! would choke on. Every test starts (and kills) its own server on 127.0.0.1:0 and bounds
//! every wait. The limits themselves (flags, defaults, counters) are in `tests/limits.rs`.

mod common;

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::raw::{encode_all, opcode, LengthForm, OutFrame, RawClient, TcpEnd};
use common::{
    fetch_metrics, read_until_close, rss_kib, upgrade_request, Bystander, FrameReader, Server,
    SAMPLE_ACCEPT,
};
use serde_json::Value;

/// Bound on an answer that must come "at once": without the rest of the input.
const PROMPT: Duration = Duration::from_secs(2);
/// Generous bound on the server's memory growth during an attack that would otherwise grow it
/// without bound.
const RSS_GROWTH_KIB: u64 = 64 * 1024;
/// Lifts serve's per-address request budget (50 a second) so that tests opening many
/// connections from 127.0.0.1 test what they mean to.
const MANY_REQUESTS: [&str; 2] = ["--handshakes-per-second", "100000"];

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Opens a raw connection to `wsloop echo`, writes `bytes` in one go, has the bystander
/// complete a round trip while the server deals with them, and reads until the server's close
/// (within `wait`). Answers the close and checks that the server then ends TCP in order.
/// Returns how many frames came before the close, and the close code.
fn attack(
    server: &Server,
    by: &mut Bystander,
    bytes: &[u8],
    wait: Duration,
    what: &str,
) -> (usize, Option<u16>) {
    let mut raw = RawClient::open(server.addr);
    raw.set_timeout(wait);
    raw.send_raw(bytes)
        .unwrap_or_else(|e| panic!("{what}: write: {e}"));
    by.round_trip(what);
    let (before, code, _) = read_until_close(&mut raw, 16);
    raw.reply_close(code);
    raw.set_timeout(PROMPT);
    raw.expect_eof();
    (before.len(), code)
}

/// [`attack`] with frames; asserts the close `code` comes first (no echo before it).
fn fails(server: &Server, by: &mut Bystander, frames: &[OutFrame], code: u16, what: &str) {
    let got = attack(server, by, &encode_all(frames), PROMPT, what);
    assert_eq!(
        got,
        (0, Some(code)),
        "{what}: want close {code} and nothing before it; got (frames before, code) = {got:?}"
    );
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

/// The next frame of a raw chat client as JSON (must be a text frame).
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

/// Asserts that a JSON reply is an `error` with `code`.
fn assert_error(reply: &Value, code: &str, what: &str) {
    assert_eq!(
        (reply["type"].as_str(), reply["code"].as_str()),
        (Some("error"), Some(code)),
        "{what}: {}",
        truncate(&reply.to_string())
    );
}

/// The first 200 characters of `text`, for failure messages about huge replies.
fn truncate(text: &str) -> String {
    text.chars().take(200).collect()
}

/// The status line of an HTTP head.
fn status_line(head: &str) -> &str {
    head.split("\r\n").next().unwrap_or_default()
}

/// The first value of header `name` in an HTTP head.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.split("\r\n")
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
}

/// Sends `request` on a fresh connection and returns the response head within [`PROMPT`].
fn answer_head(server: &Server, request: &[u8], what: &str) -> String {
    let mut raw = RawClient::connect_tcp(server.addr);
    raw.set_timeout(PROMPT);
    // The server may stop reading once it has decided; what it answers is what matters.
    let _ = raw.send_raw(request);
    raw.read_http_head()
        .unwrap_or_else(|e| panic!("{what}: no answer within {PROMPT:?}: {e}"))
}

/// A metric of a serve that must be present.
fn sample(server: &Server, series: &str) -> u64 {
    let metrics = fetch_metrics(server.addr, "");
    *metrics
        .get(series)
        .unwrap_or_else(|| panic!("no series {series} in /metrics: {metrics:?}"))
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
// Frames (wsloop echo)
// ---------------------------------------------------------------------------------------------

#[test]
fn unmasked_client_frames_are_1002() {
    let mut server = Server::echo(&[]);
    let mut by = Bystander::echo(&server);
    for (what, frame) in [
        ("unmasked text", OutFrame::text("hello").unmasked()),
        ("unmasked empty text", OutFrame::text("").unmasked()),
        (
            "unmasked binary",
            OutFrame::binary(vec![1, 2, 3]).unmasked(),
        ),
        ("unmasked ping", OutFrame::ping("p").unmasked()),
        ("unmasked close", OutFrame::close(1000, "").unmasked()),
    ] {
        fails(&server, &mut by, &[frame], 1002, what);
    }
    // Unmasked in the middle of a fragmented message.
    fails(
        &server,
        &mut by,
        &[
            OutFrame::text("one").fin(false),
            OutFrame::continuation("two").unmasked(),
        ],
        1002,
        "unmasked continuation",
    );
    by.round_trip("after the attacks");
    assert!(server.is_running());
}

#[test]
fn reserved_bits_are_1002() {
    let mut server = Server::echo(&[]);
    let mut by = Bystander::echo(&server);
    for rsv in 1..=7 {
        fails(
            &server,
            &mut by,
            &[OutFrame::text("x").rsv(rsv)],
            1002,
            &format!("text with RSV {rsv:03b}"),
        );
    }
    fails(
        &server,
        &mut by,
        &[OutFrame::ping("p").rsv(4)],
        1002,
        "ping with RSV1",
    );
    fails(
        &server,
        &mut by,
        &[
            OutFrame::text("a").fin(false),
            OutFrame::continuation("b").rsv(2),
        ],
        1002,
        "continuation with RSV2",
    );
    by.round_trip("after the attacks");
    assert!(server.is_running());
}

#[test]
fn reserved_opcodes_are_1002() {
    let mut server = Server::echo(&[]);
    let mut by = Bystander::echo(&server);
    for op in (0x3..=0x7).chain(0xB..=0xF) {
        fails(
            &server,
            &mut by,
            &[OutFrame::new(op, "x")],
            1002,
            &format!("opcode {op:#x}"),
        );
    }
    fails(
        &server,
        &mut by,
        &[OutFrame::text("a").fin(false), OutFrame::new(0x3, "b")],
        1002,
        "reserved opcode inside a fragmented message",
    );
    by.round_trip("after the attacks");
    assert!(server.is_running());
}

#[test]
fn control_frames_over_125_bytes_or_fragmented_are_1002() {
    let mut server = Server::echo(&[]);
    let mut by = Bystander::echo(&server);
    let mut long_close = 1000u16.to_be_bytes().to_vec();
    long_close.extend(vec![b'r'; 124]);
    for (what, frames) in [
        ("ping of 126 bytes", vec![OutFrame::ping(vec![b'p'; 126])]),
        ("pong of 126 bytes", vec![OutFrame::pong(vec![b'p'; 126])]),
        (
            "close of 126 bytes",
            vec![OutFrame::new(opcode::CLOSE, long_close)],
        ),
        (
            "ping declaring 64 KiB in the 64-bit form",
            vec![OutFrame::ping(vec![b'p'; 4])
                .declared_len(65_536)
                .length_form(LengthForm::Extended64)],
        ),
        ("fragmented ping", vec![OutFrame::ping("p").fin(false)]),
        ("fragmented pong", vec![OutFrame::pong("p").fin(false)]),
        (
            "fragmented close",
            vec![OutFrame::close(1000, "").fin(false)],
        ),
        (
            "fragmented ping inside a fragmented message",
            vec![
                OutFrame::text("a").fin(false),
                OutFrame::ping("p").fin(false),
            ],
        ),
    ] {
        fails(&server, &mut by, &frames, 1002, what);
    }
    // Decided from the header alone: a ping declaring 126 bytes and sending none.
    let header = OutFrame::ping(Vec::new()).declared_len(126).header();
    let got = attack(&server, &mut by, &header, PROMPT, "ping header of 126");
    assert_eq!(got, (0, Some(1002)), "a ping header declaring 126 bytes");
    by.round_trip("after the attacks");
    assert!(server.is_running());
}

#[test]
fn continuation_without_a_start_and_data_inside_a_fragmented_message_are_1002() {
    let mut server = Server::echo(&[]);
    let mut by = Bystander::echo(&server);
    for (what, frames) in [
        (
            "final continuation with no message",
            vec![OutFrame::continuation("x")],
        ),
        (
            "non-final continuation with no message",
            vec![OutFrame::continuation("x").fin(false)],
        ),
        (
            "text inside a fragmented text",
            vec![OutFrame::text("a").fin(false), OutFrame::text("b")],
        ),
        (
            "binary inside a fragmented text",
            vec![OutFrame::text("a").fin(false), OutFrame::binary("b")],
        ),
        (
            "non-final text inside a fragmented binary",
            vec![
                OutFrame::binary("a").fin(false),
                OutFrame::text("b").fin(false),
            ],
        ),
    ] {
        fails(&server, &mut by, &frames, 1002, what);
    }
    // After a complete message, a continuation has nothing to continue.
    let bytes = encode_all(&[
        OutFrame::text("a").fin(false),
        OutFrame::continuation("b"),
        OutFrame::continuation("c"),
    ]);
    assert_eq!(
        attack(
            &server,
            &mut by,
            &bytes,
            PROMPT,
            "continuation after the end"
        ),
        (1, Some(1002)),
        "the message \"ab\" is echoed, then the stray continuation fails the connection"
    );
    by.round_trip("after the attacks");
    assert!(server.is_running());
}

#[test]
fn a_64_bit_length_with_the_top_bit_set_is_1002() {
    let mut server = Server::echo(&[]);
    let mut by = Bystander::echo(&server);
    for (what, len) in [("2^63", 1u64 << 63), ("2^64 - 1", u64::MAX)] {
        // The header alone, no body: the length is refused as soon as it is read.
        let header = OutFrame::binary(Vec::new())
            .declared_len(len)
            .length_form(LengthForm::Extended64)
            .header();
        let got = attack(&server, &mut by, &header, PROMPT, what);
        assert_eq!(got, (0, Some(1002)), "a length of {what}");
    }
    let mut bytes = OutFrame::text("a").fin(false).encode();
    bytes.extend(
        OutFrame::continuation(Vec::new())
            .declared_len(1 << 63)
            .length_form(LengthForm::Extended64)
            .header(),
    );
    let got = attack(&server, &mut by, &bytes, PROMPT, "continuation 2^63");
    assert_eq!(got, (0, Some(1002)), "a continuation with a length of 2^63");
    by.round_trip("after the attacks");
    assert!(server.is_running());
}

#[test]
fn a_declared_length_far_beyond_the_limit_is_1009_before_the_body() {
    // Default echo limit: 64 MiB per frame and message.
    let mut server = Server::echo(&[]);
    let mut by = Bystander::echo(&server);
    let rss_before = rss_kib(server.pid());
    let limit = 64u64 << 20;
    let cases = [
        ("text declaring 2^40 bytes", opcode::TEXT, 1u64 << 40),
        (
            "binary declaring 2^63 - 1 bytes",
            opcode::BINARY,
            (1u64 << 63) - 1,
        ),
        ("binary declaring the limit + 1", opcode::BINARY, limit + 1),
    ];
    for (what, op, len) in cases {
        // Only the header: the server must not wait for (or reserve room for) the body.
        let header = OutFrame::new(op, Vec::new()).declared_len(len).header();
        let start = Instant::now();
        let got = attack(&server, &mut by, &header, PROMPT, what);
        assert_eq!(got, (0, Some(1009)), "{what}");
        assert!(start.elapsed() < PROMPT, "{what}: {:?}", start.elapsed());
    }
    // A continuation that would take the message past the limit.
    let mut bytes = OutFrame::binary(vec![7; 1000]).fin(false).encode();
    bytes.extend(
        OutFrame::continuation(Vec::new())
            .declared_len(limit - 999)
            .header(),
    );
    let got = attack(&server, &mut by, &bytes, PROMPT, "message past the limit");
    assert_eq!(
        got,
        (0, Some(1009)),
        "a continuation taking the message past 64 MiB"
    );
    // Nothing was allocated for the declared sizes.
    assert_rss_bounded(&server, rss_before, 16 * 1024, "declared sizes");
    by.round_trip("after the attacks");
    assert!(server.is_running());
}

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
fn invalid_utf8_split_across_fragments_is_1007_at_the_first_bad_byte() {
    let mut server = Server::echo(&[]);
    let mut by = Bystander::echo(&server);
    // A code point split across fragments is fine.
    let mut ok = RawClient::open(server.addr);
    ok.send_all(&[
        OutFrame::text(b"\xce".to_vec()).fin(false),
        OutFrame::continuation(b"\xba".to_vec()),
    ])
    .unwrap();
    let echo = ok.read_frame();
    assert_eq!(
        (echo.opcode, &echo.payload[..]),
        (opcode::TEXT, "κ".as_bytes())
    );
    // The message never ends: each failure must come from the bad byte alone.
    for (what, frames) in [
        (
            "lead byte, then an ASCII byte",
            vec![
                OutFrame::text(b"hello\xce".to_vec()).fin(false),
                OutFrame::continuation(b"A and more".to_vec()).fin(false),
            ],
        ),
        (
            "a code point past U+10FFFF across fragments",
            vec![
                OutFrame::text(b"ok\xf4".to_vec()).fin(false),
                OutFrame::continuation(b"\x90".to_vec()).fin(false),
            ],
        ),
        (
            "a surrogate split over three fragments",
            vec![
                OutFrame::text("κόσμε".as_bytes().to_vec()).fin(false),
                OutFrame::continuation(b"\xed".to_vec()).fin(false),
                OutFrame::continuation(b"\xa0".to_vec()).fin(false),
            ],
        ),
        (
            "an overlong encoding in the second fragment",
            vec![
                OutFrame::text("valid".as_bytes().to_vec()).fin(false),
                OutFrame::continuation(b"\xc0\xaf".to_vec()).fin(false),
            ],
        ),
        (
            "0xFF in the first fragment",
            vec![OutFrame::text(b"ab\xffcd".to_vec()).fin(false)],
        ),
    ] {
        fails(&server, &mut by, &frames, 1007, what);
    }
    // Inside one frame whose rest never arrives: 1000 bytes declared, 20 sent, byte 10 bad.
    let mut payload = b"0123456789".to_vec();
    payload.push(0xFF);
    payload.extend_from_slice(b"abcdefghi");
    let frame = OutFrame::text(payload).declared_len(1000);
    let bytes = frame.encode();
    let got = attack(
        &server,
        &mut by,
        &bytes,
        PROMPT,
        "bad byte in a partial frame",
    );
    assert_eq!(
        got,
        (0, Some(1007)),
        "a bad byte before the rest of the frame"
    );
    by.round_trip("after the attacks");
    assert!(server.is_running());
}

#[test]
fn invalid_utf8_in_a_close_reason_is_1007() {
    let mut server = Server::echo(&[]);
    let mut by = Bystander::echo(&server);
    for (what, reason) in [
        ("surrogate", &b"\xce\xba\xed\xa0\x80"[..]),
        ("0xFF", &b"ok\xff"[..]),
        ("truncated code point", &b"\xe2\x82"[..]),
    ] {
        fails(
            &server,
            &mut by,
            &[OutFrame::close(1000, reason)],
            1007,
            &format!("close reason with a {what}"),
        );
        // The same close frame, one byte per write.
        let mut raw = RawClient::open(server.addr);
        raw.send_chopped(
            &OutFrame::close(1000, reason).encode(),
            1,
            Duration::from_millis(5),
        )
        .unwrap();
        by.round_trip(what);
        assert_eq!(
            raw.expect_close(true),
            Some(1007),
            "chopped close reason with a {what}"
        );
    }
    by.round_trip("after the attacks");
    assert!(server.is_running());
}

#[test]
fn a_close_payload_of_one_byte_and_invalid_close_codes_are_1002() {
    let mut server = Server::echo(&[]);
    let mut by = Bystander::echo(&server);
    fails(
        &server,
        &mut by,
        &[OutFrame::new(opcode::CLOSE, vec![0x03])],
        1002,
        "close payload of 1 byte",
    );
    for code in [
        0,
        999,
        1004,
        1005,
        1006,
        1012 + 4,
        1100,
        2000,
        2999,
        5000,
        65535,
    ] {
        fails(
            &server,
            &mut by,
            &[OutFrame::close(code, "")],
            1002,
            &format!("close code {code}"),
        );
    }
    // Valid codes are echoed.
    for code in [1000, 1001, 3000, 4999] {
        let mut raw = RawClient::open(server.addr);
        raw.send(&OutFrame::close(code, "")).unwrap();
        assert_eq!(raw.expect_close(false), Some(code), "valid code {code}");
    }
    by.round_trip("after the attacks");
    assert!(server.is_running());
}

#[test]
fn data_after_a_close_is_ignored() {
    let mut server = Server::echo(&[]);
    let mut by = Bystander::echo(&server);
    // In the same write as the close.
    let mut raw = RawClient::open(server.addr);
    raw.send_all(&[
        OutFrame::close(1000, "bye"),
        OutFrame::text("after the close"),
        OutFrame::ping("after"),
        OutFrame::binary(vec![0; 10_000]),
    ])
    .unwrap();
    by.round_trip("after close + data");
    assert_eq!(raw.read_close(), Some(1000));
    // And more after the server's reply: still nothing comes back, and no reset.
    let _ = raw.send(&OutFrame::text("still talking"));
    assert_eq!(raw.expect_tcp_close(), TcpEnd::Eof, "data after a close");
    // Garbage after a close is not even parsed.
    let mut raw = RawClient::open(server.addr);
    let mut bytes = OutFrame::close(1000, "").encode();
    bytes.extend_from_slice(&[0xFF; 64]);
    raw.send_raw(&bytes).unwrap();
    assert_eq!(raw.read_close(), Some(1000), "garbage after a close");
    assert_eq!(raw.expect_tcp_close(), TcpEnd::Eof, "garbage after a close");
    by.round_trip("after the attacks");
    assert!(server.is_running());
}

// ---------------------------------------------------------------------------------------------
// Handshakes (wsloop serve, with /metrics; wsloop echo where only the answer matters)
// ---------------------------------------------------------------------------------------------

#[test]
fn a_one_megabyte_header_line_is_431_at_once() {
    let mut server = Server::serve(&MANY_REQUESTS);
    let mut by = Bystander::chat(&server, &[]);
    let rss_before = rss_kib(server.pid());
    let mut line = b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Huge: ".to_vec();
    line.resize(1 << 20, b'a');
    let mut raw = RawClient::connect_tcp(server.addr);
    raw.set_timeout(PROMPT);
    // The first 64 KiB: the server must answer without the other 960 KiB (or an end of line).
    raw.send_raw(&line[..64 * 1024]).unwrap();
    let head = raw
        .read_http_head()
        .unwrap_or_else(|e| panic!("no 431 while the line goes on: {e}"));
    assert_eq!(
        status_line(&head),
        "HTTP/1.1 431 Request Header Fields Too Large"
    );
    by.round_trip("during the header line");
    // The client can still send the rest; the server drops it.
    let _ = raw.send_raw(&line[64 * 1024..]);
    drop(raw);
    // The whole line in one write gets the same answer.
    let (head, _) = common::http_exchange(server.addr, &line);
    assert_eq!(
        status_line(&head),
        "HTTP/1.1 431 Request Header Fields Too Large"
    );
    assert_eq!(
        sample(
            &server,
            "wsloop_handshake_rejections_total{reason=\"head_too_large\"}"
        ),
        2
    );
    assert_rss_bounded(&server, rss_before, RSS_GROWTH_KIB, "1 MB header lines");
    by.round_trip("after the attack");
    assert!(server.is_running());
}

/// An upgrade request of at most `size` bytes and more than `size - 50`: 40 padding headers
/// (within the default header count).
fn padded_upgrade(size: usize) -> String {
    let base = upgrade_request("/", "").len();
    let line = (size - base) / 40;
    let extra: String = (0..40)
        .map(|i| format!("X-Pad-{i:02}: {}\r\n", "p".repeat(line - 12)))
        .collect();
    upgrade_request("/", &extra)
}

/// Sends `request` one byte per write, pausing 50 µs after every 8 bytes so that the server
/// reads it in thousands of small pieces; returns the answer head and how long the whole
/// exchange took.
fn one_byte_at_a_time(server: &Server, request: &str) -> (String, RawClient, Duration) {
    let mut raw = RawClient::connect_tcp(server.addr);
    let start = Instant::now();
    for chunk in request.as_bytes().chunks(8) {
        raw.send_chopped(chunk, 1, Duration::ZERO).unwrap();
        thread::sleep(Duration::from_micros(50));
    }
    let head = raw
        .read_http_head()
        .unwrap_or_else(|e| panic!("no answer to a head sent byte by byte: {e}"));
    (head, raw, start.elapsed())
}

#[test]
fn a_valid_head_sent_one_byte_at_a_time_is_101_in_linear_time() {
    let mut server = Server::echo(&["--max-head-bytes", "65536"]);
    let mut by = Bystander::echo(&server);
    for (size, bound) in [
        (4 * 1024, Duration::from_secs(3)),
        (60 * 1024, Duration::from_secs(8)),
    ] {
        let request = padded_upgrade(size);
        assert!(request.len() > size - 50 && request.len() <= size);
        let (head, mut raw, took) = one_byte_at_a_time(&server, &request);
        eprintln!("a {size}-byte head sent one byte at a time: answered in {took:?}");
        assert_eq!(
            status_line(&head),
            "HTTP/1.1 101 Switching Protocols",
            "{size} bytes"
        );
        assert_eq!(header(&head, "Sec-WebSocket-Accept"), Some(SAMPLE_ACCEPT));
        assert!(
            took < bound,
            "a {size}-byte head sent one byte at a time took {took:?} (bound {bound:?})"
        );
        by.round_trip(&format!("after a {size}-byte head"));
        raw.send(&OutFrame::text("after the slow head")).unwrap();
        let echo = raw.read_frame();
        assert_eq!(&echo.payload[..], b"after the slow head");
    }
    assert!(server.is_running());
}

/// `count` header lines `X-Header-N: v`.
fn many_headers(count: usize) -> String {
    (0..count).map(|i| format!("X-Header-{i}: v\r\n")).collect()
}

#[test]
fn ten_thousand_headers_are_431() {
    // Default limits (8 KiB, 64 headers): the head is too large long before it ends.
    let mut server = Server::serve(&MANY_REQUESTS);
    let mut by = Bystander::chat(&server, &[]);
    let request = upgrade_request("/ws", &many_headers(10_000));
    let start = Instant::now();
    let head = answer_head(&server, request.as_bytes(), "10,000 headers");
    assert_eq!(
        status_line(&head),
        "HTTP/1.1 431 Request Header Fields Too Large"
    );
    assert!(start.elapsed() < PROMPT);
    by.round_trip("after 10,000 headers");
    assert_eq!(
        sample(
            &server,
            "wsloop_handshake_rejections_total{reason=\"head_too_large\"}"
        ),
        1
    );
    assert!(server.is_running());

    // With room for the head, the header count decides.
    let mut server = Server::serve(&[
        "--max-head-bytes",
        "1048576",
        "--handshakes-per-second",
        "100000",
    ]);
    let mut by = Bystander::chat(&server, &[]);
    let rss_before = rss_kib(server.pid());
    let start = Instant::now();
    let head = answer_head(&server, request.as_bytes(), "10,000 headers, 1 MiB heads");
    assert_eq!(
        status_line(&head),
        "HTTP/1.1 431 Request Header Fields Too Large"
    );
    assert!(start.elapsed() < PROMPT);
    by.round_trip("after 10,000 headers");
    assert_eq!(
        sample(
            &server,
            "wsloop_handshake_rejections_total{reason=\"too_many_headers\"}"
        ),
        1
    );
    assert_rss_bounded(&server, rss_before, RSS_GROWTH_KIB, "10,000 headers");
    assert!(server.is_running());
}

#[test]
fn pathological_protocol_and_extension_values_take_linear_time() {
    let mut server = Server::echo(&["--max-head-bytes", "262144"]);
    let mut by = Bystander::echo(&server);
    let cases = [
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
    for (what, extra) in cases {
        let request = upgrade_request("/", &extra);
        let mut raw = RawClient::connect_tcp(server.addr);
        raw.set_timeout(Duration::from_secs(1));
        let start = Instant::now();
        raw.send_raw(request.as_bytes()).unwrap();
        let head = raw
            .read_http_head()
            .unwrap_or_else(|e| panic!("{what}: no answer within 1 s: {e}"));
        let took = start.elapsed();
        eprintln!("{what}: answered in {took:?}");
        assert!(
            took < Duration::from_secs(1),
            "{what}: answered after {took:?}"
        );
        match status_line(&head) {
            "HTTP/1.1 101 Switching Protocols" => {
                // Ignored: nothing is selected or negotiated.
                assert_eq!(
                    header(&head, "Sec-WebSocket-Protocol"),
                    None,
                    "{what}: {head}"
                );
                assert_eq!(
                    header(&head, "Sec-WebSocket-Extensions"),
                    None,
                    "{what}: {head}"
                );
                raw.set_timeout(PROMPT);
                raw.send(&OutFrame::text("still fine")).unwrap();
                assert_eq!(&raw.read_frame().payload[..], b"still fine", "{what}");
            }
            "HTTP/1.1 400 Bad Request" => {}
            other => panic!("{what}: want 101 (ignored) or 400, got {other:?}"),
        }
        by.round_trip(what);
    }
    assert!(server.is_running());
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
fn a_bad_sec_websocket_key_is_400() {
    let mut server = Server::serve(&MANY_REQUESTS);
    let mut by = Bystander::chat(&server, &[]);
    let long = format!("Sec-WebSocket-Key: {}", "QUFB".repeat(1_000));
    let cases = [
        ("no key", String::new()),
        ("empty key", "Sec-WebSocket-Key: ".to_owned()),
        ("5 bytes", "Sec-WebSocket-Key: c2hvcnQ=".to_owned()),
        (
            "15 bytes",
            "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAA".to_owned(),
        ),
        (
            "17 bytes",
            "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAAA=".to_owned(),
        ),
        (
            "not base64",
            "Sec-WebSocket-Key: !!!!!!!!!!!!!!!!!!!!!!==".to_owned(),
        ),
        ("3000 bytes", long),
    ];
    for (what, line) in &cases {
        let request = with_header("Sec-WebSocket-Key", line);
        assert_ne!(request, upgrade_request("/ws", ""), "{what}");
        let head = answer_head(&server, request.as_bytes(), what);
        assert_eq!(status_line(&head), "HTTP/1.1 400 Bad Request", "{what}");
        by.round_trip(what);
    }
    assert_eq!(
        sample(
            &server,
            "wsloop_handshake_rejections_total{reason=\"bad_key\"}"
        ),
        cases.len() as u64
    );
    assert!(server.is_running());
}

#[test]
fn a_wrong_version_is_426() {
    let mut server = Server::serve(&MANY_REQUESTS);
    let mut by = Bystander::chat(&server, &[]);
    let cases = ["8", "12", "14", "1300", "13, 8", "", "-"];
    for version in cases {
        let line = if version == "-" {
            String::new()
        } else {
            format!("Sec-WebSocket-Version: {version}")
        };
        let request = with_header("Sec-WebSocket-Version", &line);
        let head = answer_head(&server, request.as_bytes(), version);
        assert_eq!(
            status_line(&head),
            "HTTP/1.1 426 Upgrade Required",
            "version {version:?}"
        );
        assert_eq!(
            header(&head, "Sec-WebSocket-Version"),
            Some("13"),
            "426 must name the version spoken (§4.2.2): {head}"
        );
        by.round_trip(version);
    }
    assert_eq!(
        sample(
            &server,
            "wsloop_handshake_rejections_total{reason=\"unsupported_version\"}"
        ),
        cases.len() as u64
    );
    assert!(server.is_running());
}

#[test]
fn a_post_or_http_1_0_upgrade_is_400() {
    let mut server = Server::serve(&MANY_REQUESTS);
    let mut by = Bystander::chat(&server, &[]);
    let good = upgrade_request("/ws", "");
    let cases = [
        ("POST", good.replacen("GET", "POST", 1), "not_get"),
        ("PUT", good.replacen("GET", "PUT", 1), "not_get"),
        (
            "HTTP/1.0",
            good.replacen("HTTP/1.1", "HTTP/1.0", 1),
            "http_version",
        ),
        (
            "HTTP/2.0",
            good.replacen("HTTP/1.1", "HTTP/2.0", 1),
            "http_version",
        ),
    ];
    for (what, request, _) in &cases {
        let head = answer_head(&server, request.as_bytes(), what);
        assert_eq!(status_line(&head), "HTTP/1.1 400 Bad Request", "{what}");
        by.round_trip(what);
    }
    let metrics = fetch_metrics(server.addr, "");
    for reason in ["not_get", "http_version"] {
        let series = format!("wsloop_handshake_rejections_total{{reason=\"{reason}\"}}");
        assert_eq!(metrics.get(&series), Some(&2), "{series} in {metrics:?}");
    }
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

// ---------------------------------------------------------------------------------------------
// Floods and hostile JSON (wsloop serve)
// ---------------------------------------------------------------------------------------------

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

#[test]
fn hostile_json_deep_nesting_gets_an_error_reply() {
    let mut server = Server::serve(&MANY_REQUESTS);
    let mut by = Bystander::chat(&server, &[]);
    let mut raw = open_chat(&server);
    raw.set_timeout(PROMPT);
    let cases = [
        (
            "500,000 nested arrays in a field",
            format!(
                r#"{{"type":"chat","content":"x","deep":{}{}}}"#,
                "[".repeat(500_000),
                "]".repeat(500_000)
            ),
        ),
        (
            "100,000 nested objects",
            format!("{}1{}", r#"{"a":"#.repeat(100_000), "}".repeat(100_000)),
        ),
        ("1,000,000 unclosed brackets", "[".repeat(1_000_000)),
        (
            "nested arrays as the type",
            format!(
                r#"{{"type":{}"ping"{}}}"#,
                "[".repeat(300_000),
                "]".repeat(300_000)
            ),
        ),
    ];
    for (what, text) in &cases {
        assert!(
            text.len() < 1 << 20,
            "{what} fits serve's 1 MiB message limit"
        );
        raw.send(&OutFrame::text(text.as_bytes().to_vec())).unwrap();
        by.round_trip(what);
        let reply = json_reply(&mut raw, what);
        assert_error(&reply, "invalid_json", what);
    }
    by.round_trip("after the attacks");
    assert!(server.is_running());
}

#[test]
fn hostile_json_huge_numbers_get_a_reply_without_stalling() {
    let mut server = Server::serve(&MANY_REQUESTS);
    let mut by = Bystander::chat(&server, &[]);
    let mut raw = open_chat(&server);
    raw.set_timeout(PROMPT);
    // Out of f64's range: refused by the parser.
    for (what, text) in [
        ("1e999999", r#"{"type":"ping","ts":1e999999}"#.to_owned()),
        ("-1e400", r#"{"type":"ping","ts":-1e400}"#.to_owned()),
    ] {
        raw.send(&OutFrame::text(text)).unwrap();
        by.round_trip(what);
        assert_error(&json_reply(&mut raw, what), "invalid_json", what);
    }
    // Huge spellings: a pong or an error, promptly.
    for (what, text) in [
        (
            "an integer of 500,000 digits",
            format!(r#"{{"type":"ping","ts":{}}}"#, "9".repeat(500_000)),
        ),
        (
            "a fraction of 500,000 digits",
            format!(r#"{{"type":"ping","ts":0.{}1}}"#, "0".repeat(500_000)),
        ),
        (
            "an exponent of 500,000 digits",
            format!(r#"{{"type":"ping","ts":1e-{}}}"#, "9".repeat(500_000)),
        ),
        (
            "20,000 huge numbers in an array",
            format!(
                r#"{{"type":"ping","ts":1,"n":[{}]}}"#,
                vec!["1".repeat(40); 20_000].join(",")
            ),
        ),
    ] {
        raw.send(&OutFrame::text(text)).unwrap();
        by.round_trip(what);
        let reply = json_reply(&mut raw, what);
        let kind = reply["type"].as_str();
        assert!(
            kind == Some("pong") || reply["code"] == "invalid_json",
            "{what}: want a pong or invalid_json, got {}",
            truncate(&reply.to_string())
        );
    }
    by.round_trip("after the attacks");
    assert!(server.is_running());
}

#[test]
fn hostile_json_megabyte_strings_get_an_error_reply_or_1009() {
    let mut server = Server::serve(&MANY_REQUESTS);
    let mut by = Bystander::chat(&server, &[]);
    let rss_before = rss_kib(server.pid());
    let mut raw = open_chat(&server);
    raw.set_timeout(PROMPT);
    let mb = "a".repeat(1_000_000);
    let cases = [
        (
            "1 MB chat content",
            format!(r#"{{"type":"chat","content":"{mb}"}}"#),
            "content_too_long",
        ),
        (
            "1 MB of escapes in chat content",
            format!(
                r#"{{"type":"chat","content":"{}"}}"#,
                r"\u00e9".repeat(170_000)
            ),
            "content_too_long",
        ),
        (
            "1 MB channel name",
            format!(r#"{{"type":"subscribe","channel":"{mb}"}}"#),
            "invalid_channel",
        ),
        (
            "1 MB publish content",
            format!(r#"{{"type":"publish","channel":"c","content":"{mb}"}}"#),
            "content_too_long",
        ),
        (
            "1 MB key",
            format!(r#"{{"type":"chat","{mb}":1}}"#),
            "missing_field",
        ),
    ];
    for (what, text, code) in &cases {
        assert!(
            text.len() <= 1 << 20,
            "{what} fits serve's 1 MiB message limit"
        );
        raw.send(&OutFrame::text(text.as_bytes().to_vec())).unwrap();
        by.round_trip(what);
        assert_error(&json_reply(&mut raw, what), code, what);
    }
    // A 1 MB string nobody looks at: the ping is answered.
    raw.send(&OutFrame::text(format!(
        r#"{{"type":"ping","ts":5,"junk":"{mb}"}}"#
    )))
    .unwrap();
    let reply = json_reply(&mut raw, "ping with junk");
    assert_eq!(
        (reply["type"].as_str(), reply["echo"].as_u64()),
        (Some("pong"), Some(5))
    );
    // Past the message limit (1 MiB): 1009.
    let text = format!(r#"{{"type":"chat","content":"{}"}}"#, "a".repeat(1 << 20));
    raw.send(&OutFrame::text(text)).unwrap();
    by.round_trip("a string past the message limit");
    let (_, code, _) = read_until_close(&mut raw, 0);
    assert_eq!(code, Some(1009), "a message over 1 MiB");
    raw.reply_close(code);
    raw.expect_eof();
    assert_eq!(sample(&server, "wsloop_closes_total{code=\"1009\"}"), 1);
    assert_rss_bounded(&server, rss_before, RSS_GROWTH_KIB, "1 MB strings");
    by.round_trip("after the attacks");
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
fn hostile_json_thousands_of_subscriptions_get_errors_then_1008() {
    // Default rate: 50 messages a second, bursts of 100; 32 channels per connection.
    let mut server = Server::serve(&MANY_REQUESTS);
    let mut by = Bystander::chat(&server, &[]);
    let mut raw = open_chat(&server);
    raw.send_raw(&subscriptions(5_000)).unwrap();
    by.round_trip("during 5,000 subscriptions");
    let (before, code, reason) = read_until_close(&mut raw, 5_000);
    assert_eq!(code, Some(1008), "5,000 subscriptions at once: {reason}");
    let replies: Vec<Value> = before
        .iter()
        .map(|f| serde_json::from_slice(&f.payload).expect("JSON reply"))
        .collect();
    let subscribed = replies.iter().filter(|r| r["type"] == "subscribed").count();
    let too_many = replies
        .iter()
        .filter(|r| r["code"] == "too_many_channels")
        .count();
    let limited = replies
        .iter()
        .filter(|r| r["code"] == "rate_limited")
        .count();
    assert_eq!(subscribed, 32, "subscriptions granted");
    assert_eq!(
        subscribed + too_many + limited,
        replies.len(),
        "only subscribed, too_many_channels and rate_limited replies"
    );
    assert!(
        too_many >= 1 && limited >= 1,
        "{too_many} too_many_channels, {limited} rate_limited"
    );
    assert!(
        replies.len() < 1_000,
        "{} replies before the close",
        replies.len()
    );
    raw.reply_close(code);
    raw.expect_eof();
    assert_eq!(sample(&server, "wsloop_closes_total{code=\"1008\"}"), 1);
    by.round_trip("after 5,000 subscriptions");
    assert!(server.is_running());

    // Without a message rate, the channel cap alone bounds the subscriptions.
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
            assert_error(&reply, "too_many_channels", &format!("reply {i}"));
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
