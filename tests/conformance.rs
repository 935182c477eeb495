//! Autobahn|Testsuite conformance of `wsloop echo`: one test per case of sections 1-7 and 10,
//! and section 9 with fewer repetitions, each run twice: `CASE::ws` over plain TCP and
//! `CASE::wss` over TLS (`--tls-cert`, a certificate made for the test, tests/common/tls.rs),
//! where the server's closing of TCP must come after its close_notify. Each test sends the bytes its Autobahn case sends and
//! asserts what a strict "OK" verdict needs: echoed payloads byte-exact, in order and
//! unfragmented, pongs in their place, the close code, and the server closing TCP afterwards.
//!
//! Case definitions: crossbario/autobahn-testsuite, `autobahntestsuite/autobahntestsuite/case/`.
//! Where a case waits a fixed time to see whether the server already reacted (5.19, 6.4.x),
//! these tests hold the rest of the input back until the reaction has arrived instead, which
//! proves the same ordering without sleeping. Cases whose verdict is only informational
//! (7.1.6, 7.13.x) assert the exact behaviour of this server.

mod common;
#[path = "common/tls.rs"]
mod tls;

use std::cell::Cell;
use std::io;
use std::time::Duration;

use common::raw::{fragments, hex, opcode, Frame, OutFrame, RawClient};
use common::Server;
use tls::TestPki;

/// How long the server must stay silent where a case expects it to wait for more input.
const QUIET: Duration = Duration::from_millis(200);
/// Pause after each frame sent "frame-wise" (Autobahn's `sync = True`), so that each frame
/// is likely to reach the server in its own read.
const SYNC_PAUSE: Duration = Duration::from_millis(5);
/// Wait for the multi-megabyte echoes of section 9 (debug builds are slow).
const BIG_TIMEOUT: Duration = Duration::from_secs(60);
/// One mebibyte, the unit of section 9's message sizes.
const MIB: usize = 1 << 20;
/// Messages per case in 9.7/9.8 (Autobahn sends 1000).
const ROUND_TRIPS: usize = 100;

/// "Hello, world!": the small message of sections 3-5.
const HELLO: &[u8] = b"Hello, world!";
/// "κόσμε" in UTF-8 (sections 6.2-6.6).
const KOSME: &[u8] = b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5";
/// "Hello-µ@ßöäüàá-UTF-8!!" (6.2.1-6.2.3).
const HELLO_UTF8: &str = "Hello-µ@ßöäüàá-UTF-8!!";
/// κόσμε, a UTF-16 surrogate (invalid from its second byte), "edited" (6.3.x, 7.5.1).
const KOSME_SURROGATE_EDITED: &[u8] =
    b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80\x65\x64\x69\x74\x65\x64";
/// κόσμε, U+110000 in the 4-byte scheme (invalid from its second byte), "edited" (6.4.x).
const KOSME_OUT_OF_RANGE_EDITED: &[u8] =
    b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4\x90\x80\x80\x65\x64\x69\x74\x65\x64";

fn text(payload: impl Into<Vec<u8>>) -> OutFrame {
    OutFrame::text(payload)
}

fn binary(payload: impl Into<Vec<u8>>) -> OutFrame {
    OutFrame::binary(payload)
}

fn cont(payload: impl Into<Vec<u8>>) -> OutFrame {
    OutFrame::continuation(payload)
}

fn ping(payload: impl Into<Vec<u8>>) -> OutFrame {
    OutFrame::ping(payload)
}

fn pong(payload: impl Into<Vec<u8>>) -> OutFrame {
    OutFrame::pong(payload)
}

fn close(code: u16) -> OutFrame {
    OutFrame::close(code, b"")
}

/// A frame with any (also reserved) opcode.
fn op(code: u8, payload: impl Into<Vec<u8>>) -> OutFrame {
    OutFrame::new(code, payload)
}

/// `n` asterisks, Autobahn's filler for text.
fn stars(n: usize) -> Vec<u8> {
    vec![b'*'; n]
}

/// `pattern` repeated and cut to `n` bytes, as Autobahn's `sendFrame(payload_len = n)` builds it.
fn repeat_to(pattern: &[u8], n: usize) -> Vec<u8> {
    pattern.iter().copied().cycle().take(n).collect()
}

/// How the frames of one step go on the wire.
#[derive(Clone, Copy, Debug)]
enum Wire {
    /// All frames in one write.
    Burst,
    /// One write per frame, with a pause after each (Autobahn's `sync = True`).
    Sync,
    /// Each frame written in chunks of this many bytes (Autobahn's `chopsize`).
    Chop(usize),
}

/// How a case reaches the server.
#[derive(Clone, Copy, Debug)]
enum Scheme {
    /// ws://: plain TCP.
    Ws,
    /// wss://: TLS, the test CA trusted.
    Wss,
}

thread_local! {
    /// The scheme of the case running on this thread (each test has its own thread).
    static SCHEME: Cell<Scheme> = const { Cell::new(Scheme::Ws) };
}

/// Runs a case with every connection it opens over `scheme`.
fn over(scheme: Scheme, case: impl FnOnce()) {
    SCHEME.with(|s| s.set(scheme));
    case();
}

/// One conformance case in progress: a fresh server, a raw client connected to it, and what
/// the client has sent so far.
struct Run {
    _server: Server,
    /// The certificates of a wss:// case (removed after the server is gone).
    _pki: Option<TestPki>,
    client: RawClient,
    /// The first failed write: fine once the server has failed the connection, a bug before.
    write_error: Option<io::Error>,
    /// The client has sent a close frame.
    sent_close: bool,
}

/// Starts `wsloop echo` with default limits and opens a WebSocket connection to it, over the
/// scheme of the running case.
fn run() -> Run {
    let (server, pki, mut client) = match SCHEME.with(Cell::get) {
        Scheme::Ws => {
            let server = Server::echo(&[]);
            let client = RawClient::connect_tcp(server.addr);
            (server, None, client)
        }
        Scheme::Wss => {
            let pki = TestPki::new("conformance");
            let leaf = pki.localhost();
            let (cert, key) = (leaf.cert.to_string_lossy(), leaf.key.to_string_lossy());
            let server = Server::echo(&["--tls-cert", &cert, "--tls-key", &key]);
            let config = tls::client_config(&pki.ca_cert);
            let client = RawClient::connect_wrapped(server.addr, |tcp| {
                Box::new(tls::wrap(tcp, &config, "127.0.0.1"))
            });
            (server, Some(pki), client)
        }
    };
    client.handshake("/");
    Run {
        _server: server,
        _pki: pki,
        client,
        write_error: None,
        sent_close: false,
    }
}

impl Run {
    /// Sets the wait for reads and writes.
    fn timeout(mut self, timeout: Duration) -> Run {
        self.client.set_timeout(timeout);
        self
    }

    /// Performs a write unless an earlier one failed; records a failure.
    fn write(&mut self, f: impl FnOnce(&mut RawClient) -> io::Result<()>) {
        if self.write_error.is_none() {
            if let Err(e) = f(&mut self.client) {
                self.write_error = Some(e);
            }
        }
    }

    fn note_sent(&mut self, frames: &[OutFrame]) {
        self.sent_close |= frames.iter().any(|f| f.opcode == opcode::CLOSE);
    }

    /// Sends frames the way `wire` says.
    fn send_by(mut self, wire: Wire, frames: &[OutFrame]) -> Run {
        match wire {
            Wire::Burst => self.write(|c| c.send_all(frames)),
            Wire::Sync => {
                for frame in frames {
                    self.write(|c| c.send(frame));
                    std::thread::sleep(SYNC_PAUSE);
                }
            }
            Wire::Chop(size) => {
                for frame in frames {
                    self.write(|c| c.send_chopped(&frame.encode(), size, Duration::ZERO));
                }
            }
        }
        self.note_sent(frames);
        self
    }

    /// Sends frames in one write.
    fn send(self, frames: &[OutFrame]) -> Run {
        self.send_by(Wire::Burst, frames)
    }

    /// Sends raw bytes (pieces of a frame).
    fn send_bytes(mut self, bytes: &[u8]) -> Run {
        self.write(|c| c.send_raw(bytes));
        self
    }

    /// Asserts the server sends nothing and keeps the connection open for a while.
    fn quiet(mut self) -> Run {
        self.client.expect_silence(QUIET);
        self
    }

    /// Asserts the next frame is a final, RSV-free frame of this opcode and payload.
    fn expect(mut self, opcode: u8, payload: impl AsRef<[u8]>) -> Run {
        let frame = self.client.read_frame();
        assert_frame(&frame, opcode, payload.as_ref());
        self
    }

    fn expect_text(self, payload: impl AsRef<[u8]>) -> Run {
        self.expect(opcode::TEXT, payload)
    }

    fn expect_pong(self, payload: impl AsRef<[u8]>) -> Run {
        self.expect(opcode::PONG, payload)
    }

    /// Asserts the next frame is the server's close with `code` (`None`: empty close), answers
    /// it like a client would if the client had not closed yet (§5.5.1), and asserts the server
    /// then closes TCP in order (FIN, read returns 0).
    fn expect_close(mut self, code: Option<u16>) {
        let got = self.client.read_close();
        assert_eq!(got, code, "close code from the server");
        if !self.sent_close {
            self.client.reply_close(got);
        }
        self.client.expect_eof();
    }

    /// Ends a case that expects a normal life: no write failed, the client closes with 1000,
    /// the server answers 1000 and closes TCP.
    fn close_normal(mut self) {
        if let Some(e) = &self.write_error {
            panic!("a write failed although the server should have kept the connection: {e}");
        }
        self = self.send(&[close(1000)]);
        self.expect_close(Some(1000));
    }
}

/// Asserts `frame` is a single, final, RSV-free frame with this opcode and exactly this payload.
fn assert_frame(frame: &Frame, opcode: u8, payload: &[u8]) {
    assert_eq!(
        (frame.fin, frame.rsv, frame.opcode),
        (true, 0, opcode),
        "expected an unfragmented frame with opcode {opcode:#x} carrying {}, got {frame:?}",
        hex(payload)
    );
    if frame.payload != payload {
        let first_difference = frame
            .payload
            .iter()
            .zip(payload)
            .position(|(a, b)| a != b)
            .unwrap_or(frame.payload.len().min(payload.len()));
        panic!(
            "payload differs at byte {first_difference}: got {} bytes {}, expected {} bytes {}",
            frame.payload.len(),
            hex(&frame.payload),
            payload.len(),
            hex(payload)
        );
    }
}

/// Sends one frame and expects it echoed (same opcode, same payload), then closes normally.
fn echo(wire: Wire, frame: OutFrame) {
    let (kind, payload) = (frame.opcode, frame.payload.clone());
    run()
        .send_by(wire, &[frame])
        .expect(kind, payload)
        .close_normal();
}

/// Sends frames and expects the connection to be failed with `code` before anything is echoed.
fn fails(wire: Wire, frames: &[OutFrame], code: u16) {
    run().send_by(wire, frames).expect_close(Some(code));
}

/// Sections 3 and 4: "Hello, world!", a bad frame, a ping: the first message is echoed, then
/// the connection is failed with 1002 and no pong is sent.
fn echo_then_bad_frame(wire: Wire, bad: OutFrame) {
    run()
        .send_by(wire, &[text(HELLO), bad, ping("")])
        .expect_text(HELLO)
        .expect_close(Some(1002));
}

/// 5.3-5.5: "fragment1" + "fragment2" as one text message.
fn two_fragments(wire: Wire) {
    run()
        .send_by(wire, &[text("fragment1").fin(false), cont("fragment2")])
        .expect_text("fragment1fragment2")
        .close_normal();
}

/// 5.6-5.8: a ping between two fragments is answered before the message is echoed.
fn ping_between_fragments(wire: Wire) {
    let frames = [
        text("fragment1").fin(false),
        ping("ping payload"),
        cont("fragment2"),
    ];
    run()
        .send_by(wire, &frames)
        .expect_pong("ping payload")
        .expect_text("fragment1fragment2")
        .close_normal();
}

/// 5.9-5.14: a continuation with nothing to continue, then a text message: failed with 1002.
fn continuation_first(wire: Wire, fin: bool) {
    let frames = [cont("non-continuation payload").fin(fin), text(HELLO)];
    fails(wire, &frames, 1002);
}

/// 5.16-5.17: twice (a continuation with nothing to continue, then a 2-fragment text message).
fn stray_continuation_twice(fin: bool) {
    let once = [
        cont("fragment1").fin(fin),
        text("fragment2").fin(false),
        cont("fragment3"),
    ];
    fails(Wire::Burst, &[once.clone(), once].concat(), 1002);
}

/// 5.19-5.20: five fragments with two pings among them; the first pong must arrive before
/// the rest of the message is sent.
fn pings_inside_long_message(wire: Wire) {
    let f = |i: u8| format!("fragment{i}");
    run()
        .send_by(
            wire,
            &[
                text(f(1)).fin(false),
                cont(f(2)).fin(false),
                ping("pongme 1!"),
            ],
        )
        .expect_pong("pongme 1!")
        .send_by(
            wire,
            &[
                cont(f(3)).fin(false),
                cont(f(4)).fin(false),
                ping("pongme 2!"),
                cont(f(5)),
            ],
        )
        .expect_pong("pongme 2!")
        .expect_text("fragment1fragment2fragment3fragment4fragment5")
        .close_normal();
}

/// 2.10-2.11: ten pings, ten pongs with the same payloads in the same order.
fn ten_pings(wire: Wire) {
    let payload = |i: usize| format!("payload-{i}");
    let pings: Vec<OutFrame> = (0..10).map(|i| ping(payload(i))).collect();
    (0..10)
        .fold(run().send_by(wire, &pings), |r, i| {
            r.expect_pong(payload(i))
        })
        .close_normal();
}

/// 6.4.1-6.4.2: a valid first fragment is accepted (the server waits), the fragment that makes
/// the text invalid is answered with 1007 although the message's last fragment is never sent.
fn fail_fast_fragments(first: &[u8], bad: &[u8]) {
    run()
        .send(&[text(first).fin(false)])
        .quiet()
        .send(&[cont(bad).fin(false)])
        .expect_close(Some(1007));
}

/// 6.4.3-6.4.4: the same with one frame whose payload arrives in pieces: the bytes up to `a`,
/// then up to `b`; the rest of the frame is never sent.
fn fail_fast_chops(a: usize, b: usize) {
    let frame = text(KOSME_OUT_OF_RANGE_EDITED);
    let bytes = frame.encode();
    let h = frame.header_len();
    run()
        .send_bytes(&bytes[..h + a])
        .quiet()
        .send_bytes(&bytes[h + a..h + b])
        .expect_close(Some(1007));
}

/// 6.5-6.23: one text frame; valid UTF-8 is echoed, invalid UTF-8 fails the connection with
/// 1007. The table's verdict is checked against the standard library first.
fn utf8_case(payload: impl AsRef<[u8]>, valid: bool) {
    let payload = payload.as_ref();
    assert_eq!(
        std::str::from_utf8(payload).is_ok(),
        valid,
        "case table error for {}",
        hex(payload)
    );
    let r = run().send(&[text(payload)]);
    if valid {
        r.expect_text(payload).close_normal();
    } else {
        r.expect_close(Some(1007));
    }
}

/// Autobahn's filler byte for messages of this kind: `*` for text, 0xfe for binary.
fn filler(kind: u8) -> u8 {
    if kind == opcode::TEXT {
        b'*'
    } else {
        0xfe
    }
}

/// Autobahn's repeated pattern for the large messages of 9.1/9.2 and 9.5/9.6.
fn pattern(kind: u8) -> &'static [u8] {
    if kind == opcode::TEXT {
        b"BAsd7&jh23"
    } else {
        b"\x00\xfe\x23\xfa\xf0"
    }
}

/// Section 1: one message of `len` filler bytes, echoed.
fn framing(kind: u8, len: usize, wire: Wire) {
    echo(wire, op(kind, vec![filler(kind); len]));
}

/// Section 9: one large message (or its fragments) echoed byte-exact.
fn big_echo(wire: Wire, frames: &[OutFrame]) {
    let kind = frames[0].opcode;
    let payload: Vec<u8> = frames
        .iter()
        .flat_map(|f| f.payload.iter().copied())
        .collect();
    run()
        .timeout(BIG_TIMEOUT)
        .send_by(wire, frames)
        .expect(kind, payload)
        .close_normal();
}

/// 9.1/9.2: one frame of `len` pattern bytes.
fn single_frame(kind: u8, len: usize) {
    big_echo(Wire::Burst, &[op(kind, repeat_to(pattern(kind), len))]);
}

/// 9.3/9.4: 4 MiB of filler in fragments of `size`.
fn fragmented(kind: u8, size: usize) {
    big_echo(
        Wire::Burst,
        &fragments(kind, &vec![filler(kind); 4 * MIB], size),
    );
}

/// 9.5/9.6: one frame of 1 MiB of pattern bytes, written in pieces of `chop` bytes.
fn chopped(kind: u8, chop: usize) {
    big_echo(Wire::Chop(chop), &[op(kind, repeat_to(pattern(kind), MIB))]);
}

/// 9.7/9.8: [`ROUND_TRIPS`] messages of `len` filler bytes, each sent after the previous echo
/// came back.
fn round_trips(kind: u8, len: usize) {
    let frame = op(kind, vec![filler(kind); len]);
    (0..ROUND_TRIPS)
        .fold(run(), |r, _| {
            r.send(std::slice::from_ref(&frame))
                .expect(kind, &frame.payload)
        })
        .close_normal();
}

/// 6.13: every byte of `from..to` (a lonely start byte) followed by a space.
fn lonely_starts(from: u8, to: u8) -> Vec<u8> {
    (from..to).flat_map(|b| [b, b' ']).collect()
}

/// 6.14: sequences whose last continuation byte is missing.
const TRUNCATED: [&[u8]; 10] = [
    b"\xc0",
    b"\xe0\x80",
    b"\xf0\x80\x80",
    b"\xf8\x80\x80\x80",
    b"\xfc\x80\x80\x80\x80",
    b"\xdf",
    b"\xef\xbf",
    b"\xf7\xbf\xbf",
    b"\xfb\xbf\xbf\xbf",
    b"\xfd\xbf\xbf\xbf\xbf",
];

/// Declares a case as a module with two tests, `ws` and `wss`, each running `$body` over its
/// scheme.
macro_rules! both_schemes {
    ($(#[$attr:meta])* $name:ident => $body:block) => {
        $(#[$attr])*
        mod $name {
            use super::*;
            #[test]
            fn ws() {
                over(Scheme::Ws, || $body);
            }
            #[test]
            fn wss() {
                over(Scheme::Wss, || $body);
            }
        }
    };
}

/// Declares one case per entry, each running its expression.
macro_rules! cases {
    ($($(#[$attr:meta])* $name:ident => $body:expr;)*) => {
        $( both_schemes! { $(#[$attr])* $name => { $body; } } )*
    };
}

/// Declares a text case and its binary twin from one row (`text_case, binary_case: args`):
/// each calls `$run(kind, args)`.
macro_rules! paired_cases {
    ($run:ident; $($text:ident, $binary:ident: $($arg:expr),+;)*) => {
        $(
            both_schemes! { $text => { $run(opcode::TEXT, $($arg),+); } }
            both_schemes! { $binary => { $run(opcode::BINARY, $($arg),+); } }
        )*
    };
}

/// Declares the UTF-8 table cases of 6.5-6.23.
macro_rules! utf8_cases {
    ($($name:ident: $valid:ident $payload:expr;)*) => {
        $( both_schemes! { $name => { utf8_case($payload, $valid); } } )*
    };
}

/// Declares close code cases: the client closes with the code, the server answers with another.
macro_rules! close_code_cases {
    ($($name:ident: $sent:expr => $answer:expr;)*) => {
        $( both_schemes! { $name => { run().send(&[close($sent)]).expect_close(Some($answer)); } } )*
    };
}

const VALID: bool = true;
const INVALID: bool = false;

// Section 1: framing. Text (asterisks) and binary (0xfe) messages of the boundary lengths of
// the three length forms; the last ones also written in 997-byte pieces.
paired_cases! { framing;
    case_1_1_1, case_1_2_1: 0, Wire::Burst;
    case_1_1_2, case_1_2_2: 125, Wire::Burst;
    case_1_1_3, case_1_2_3: 126, Wire::Burst;
    case_1_1_4, case_1_2_4: 127, Wire::Burst;
    case_1_1_5, case_1_2_5: 128, Wire::Burst;
    case_1_1_6, case_1_2_6: 65535, Wire::Burst;
    case_1_1_7, case_1_2_7: 65536, Wire::Burst;
    case_1_1_8, case_1_2_8: 65536, Wire::Chop(997);
}

// Section 2: pings and pongs.
cases! {
    case_2_1 => run().send(&[ping("")]).expect_pong("").close_normal();
    case_2_2 => run().send(&[ping(HELLO)]).expect_pong(HELLO).close_normal();
    case_2_3 => {
        let payload = b"\x00\xff\xfe\xfd\xfc\xfb\x00\xff";
        run().send(&[ping(*payload)]).expect_pong(payload).close_normal()
    };
    case_2_4 => run().send(&[ping(vec![0xfe; 125])]).expect_pong([0xfe; 125]).close_normal();
    /// A 126-byte ping is too long for a control frame (§5.5).
    case_2_5 => fails(Wire::Burst, &[ping(vec![0xfe; 126])], 1002);
    case_2_6 => run()
        .send_by(Wire::Chop(1), &[ping(vec![0xfe; 125])])
        .expect_pong([0xfe; 125])
        .close_normal();
    /// Unsolicited pongs are ignored: the next frame is the answer to the close.
    case_2_7 => run().send(&[pong(""), close(1000)]).expect_close(Some(1000));
    case_2_8 => run()
        .send(&[pong("unsolicited pong payload"), close(1000)])
        .expect_close(Some(1000));
    case_2_9 => run()
        .send(&[pong("unsolicited pong payload"), ping("ping payload")])
        .expect_pong("ping payload")
        .close_normal();
    case_2_10 => ten_pings(Wire::Burst);
    case_2_11 => ten_pings(Wire::Chop(1));
}

// Section 3: reserved bits set without an extension fail the connection (§5.2).
cases! {
    case_3_1 => fails(Wire::Burst, &[text(HELLO).rsv(1)], 1002);
    case_3_2 => echo_then_bad_frame(Wire::Burst, text(HELLO).rsv(2));
    case_3_3 => echo_then_bad_frame(Wire::Sync, text(HELLO).rsv(3));
    case_3_4 => echo_then_bad_frame(Wire::Chop(1), text(HELLO).rsv(4));
    case_3_5 => fails(Wire::Burst, &[binary(*b"\x00\xff\xfe\xfd\xfc\xfb\x00\xff").rsv(5)], 1002);
    /// Autobahn's description says "Ping" but the case sends a binary frame; so do we.
    case_3_6 => fails(Wire::Burst, &[binary(HELLO).rsv(6)], 1002);
    case_3_7 => fails(Wire::Burst, &[OutFrame::close_empty().rsv(7)], 1002);
}

// Section 4: reserved opcodes fail the connection (§5.2).
cases! {
    case_4_1_1 => fails(Wire::Burst, &[op(3, "")], 1002);
    case_4_1_2 => fails(Wire::Burst, &[op(4, "reserved opcode payload")], 1002);
    case_4_1_3 => echo_then_bad_frame(Wire::Burst, op(5, ""));
    case_4_1_4 => echo_then_bad_frame(Wire::Burst, op(6, HELLO));
    case_4_1_5 => echo_then_bad_frame(Wire::Chop(1), op(7, HELLO));
    case_4_2_1 => fails(Wire::Burst, &[op(11, "")], 1002);
    case_4_2_2 => fails(Wire::Burst, &[op(12, "reserved opcode payload")], 1002);
    case_4_2_3 => echo_then_bad_frame(Wire::Burst, op(13, ""));
    case_4_2_4 => echo_then_bad_frame(Wire::Burst, op(14, HELLO));
    case_4_2_5 => echo_then_bad_frame(Wire::Chop(1), op(15, HELLO));
}

// Section 5: fragmentation (§5.4).
cases! {
    /// Control frames must not be fragmented.
    case_5_1 => fails(Wire::Burst, &[ping("fragment1").fin(false), cont("fragment2")], 1002);
    case_5_2 => fails(Wire::Burst, &[pong("fragment1").fin(false), cont("fragment2")], 1002);
    case_5_3 => two_fragments(Wire::Burst);
    case_5_4 => two_fragments(Wire::Sync);
    case_5_5 => two_fragments(Wire::Chop(1));
    case_5_6 => ping_between_fragments(Wire::Burst);
    case_5_7 => ping_between_fragments(Wire::Sync);
    case_5_8 => ping_between_fragments(Wire::Chop(1));
    case_5_9 => continuation_first(Wire::Burst, true);
    case_5_10 => continuation_first(Wire::Sync, true);
    case_5_11 => continuation_first(Wire::Chop(1), true);
    case_5_12 => continuation_first(Wire::Burst, false);
    case_5_13 => continuation_first(Wire::Sync, false);
    case_5_14 => continuation_first(Wire::Chop(1), false);
    /// The first message completes and is echoed; the stray continuation after it fails.
    case_5_15 => run()
        .send(&[
            text("fragment1").fin(false),
            cont("fragment2"),
            cont("fragment3").fin(false),
            text("fragment4"),
        ])
        .expect_text("fragment1fragment2")
        .expect_close(Some(1002));
    case_5_16 => stray_continuation_twice(false);
    case_5_17 => stray_continuation_twice(true);
    /// A second fragment with opcode text instead of continuation.
    case_5_18 => fails(Wire::Burst, &[text("fragment1").fin(false), text("fragment2")], 1002);
    case_5_19 => pings_inside_long_message(Wire::Burst);
    case_5_20 => pings_inside_long_message(Wire::Sync);
}

// Section 6.1-6.4: UTF-8 in fragments and fail-fast.
cases! {
    case_6_1_1 => echo(Wire::Burst, text(""));
    case_6_1_2 => run()
        .send(&[text("").fin(false), cont("").fin(false), cont("")])
        .expect_text("")
        .close_normal();
    case_6_1_3 => run()
        .send(&[text("").fin(false), cont("middle frame payload").fin(false), cont("")])
        .expect_text("middle frame payload")
        .close_normal();
    case_6_2_1 => echo(Wire::Burst, text(HELLO_UTF8));
    /// Split on a code point boundary.
    case_6_2_2 => {
        let (a, b) = HELLO_UTF8.split_at(HELLO_UTF8.find('\u{fc}').expect("ü"));
        run().send(&[text(a).fin(false), cont(b)]).expect_text(HELLO_UTF8).close_normal()
    };
    /// One byte per frame, so most frames end inside a code point.
    case_6_2_3 => run()
        .send(&fragments(opcode::TEXT, HELLO_UTF8.as_bytes(), 1))
        .expect_text(HELLO_UTF8)
        .close_normal();
    case_6_2_4 => run()
        .send(&fragments(opcode::TEXT, KOSME, 1))
        .expect_text(KOSME)
        .close_normal();
    case_6_3_1 => fails(Wire::Burst, &[text(KOSME_SURROGATE_EDITED)], 1007);
    case_6_3_2 => fails(Wire::Burst, &fragments(opcode::TEXT, KOSME_SURROGATE_EDITED, 1), 1007);
    /// Fragments: κόσμε | f4 90 80 80 | "edited" (never sent).
    case_6_4_1 => fail_fast_fragments(KOSME, b"\xf4\x90\x80\x80");
    /// Fragments: κόσμε f4 | 90 | the rest (never sent).
    case_6_4_2 => fail_fast_fragments(b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4", b"\x90");
    /// One frame in pieces: header + κόσμε | f4 90 80 80 | "edited" (never sent).
    case_6_4_3 => fail_fast_chops(11, 15);
    /// One frame in pieces: header + κόσμε f4 | 90 | the rest (never sent).
    case_6_4_4 => fail_fast_chops(12, 13);
}

// Sections 6.5-6.23: Markus Kuhn's UTF-8 decoder stress test, one text frame per case.
utf8_cases! {
    // 6.5: some valid sequences.
    case_6_5_1: VALID b"hello\x24world";
    case_6_5_2: VALID b"hello\xc2\xa2world";
    case_6_5_3: VALID b"hello\xe2\x82\xacworld";
    case_6_5_4: VALID b"hello\xf0\xa4\xad\xa2world";
    case_6_5_5: VALID KOSME;
    // 6.6: every prefix of κόσμε; valid only when it ends on a code point boundary.
    case_6_6_1: INVALID &KOSME[..1];
    case_6_6_2: VALID &KOSME[..2];
    case_6_6_3: INVALID &KOSME[..3];
    case_6_6_4: INVALID &KOSME[..4];
    case_6_6_5: VALID &KOSME[..5];
    case_6_6_6: INVALID &KOSME[..6];
    case_6_6_7: VALID &KOSME[..7];
    case_6_6_8: INVALID &KOSME[..8];
    case_6_6_9: VALID &KOSME[..9];
    case_6_6_10: INVALID &KOSME[..10];
    case_6_6_11: VALID &KOSME[..11];
    // 6.7: first sequence of each length.
    case_6_7_1: VALID b"\x00";
    case_6_7_2: VALID b"\xc2\x80";
    case_6_7_3: VALID b"\xe0\xa0\x80";
    case_6_7_4: VALID b"\xf0\x90\x80\x80";
    // 6.8: first 5- and 6-byte sequences (beyond U+10FFFF).
    case_6_8_1: INVALID b"\xf8\x88\x80\x80\x80";
    case_6_8_2: INVALID b"\xfc\x84\x80\x80\x80\x80";
    // 6.9: last sequence of each length.
    case_6_9_1: VALID b"\x7f";
    case_6_9_2: VALID b"\xdf\xbf";
    case_6_9_3: VALID b"\xef\xbf\xbf";
    case_6_9_4: VALID b"\xf4\x8f\xbf\xbf";
    // 6.10: last 4-, 5- and 6-byte sequences (beyond U+10FFFF).
    case_6_10_1: INVALID b"\xf7\xbf\xbf\xbf";
    case_6_10_2: INVALID b"\xfb\xbf\xbf\xbf\xbf";
    case_6_10_3: INVALID b"\xfd\xbf\xbf\xbf\xbf\xbf";
    // 6.11: other boundaries.
    case_6_11_1: VALID b"\xed\x9f\xbf";
    case_6_11_2: VALID b"\xee\x80\x80";
    case_6_11_3: VALID b"\xef\xbf\xbd";
    case_6_11_4: VALID b"\xf4\x8f\xbf\xbf";
    case_6_11_5: INVALID b"\xf4\x90\x80\x80";
    // 6.12: unexpected continuation bytes.
    case_6_12_1: INVALID b"\x80";
    case_6_12_2: INVALID b"\xbf";
    case_6_12_3: INVALID b"\x80\xbf";
    case_6_12_4: INVALID b"\x80\xbf\x80";
    case_6_12_5: INVALID b"\x80\xbf\x80\xbf";
    case_6_12_6: INVALID b"\x80\xbf\x80\xbf\x80";
    case_6_12_7: INVALID b"\x80\xbf\x80\xbf\x80\xbf";
    case_6_12_8: INVALID (0x80..0xbf).collect::<Vec<u8>>();
    // 6.13: lonely start bytes, each followed by a space.
    case_6_13_1: INVALID lonely_starts(0xc0, 0xdf);
    case_6_13_2: INVALID lonely_starts(0xe0, 0xef);
    case_6_13_3: INVALID lonely_starts(0xf0, 0xf7);
    case_6_13_4: INVALID lonely_starts(0xf8, 0xfb);
    case_6_13_5: INVALID lonely_starts(0xfc, 0xfd);
    // 6.14: last continuation byte missing.
    case_6_14_1: INVALID TRUNCATED[0];
    case_6_14_2: INVALID TRUNCATED[1];
    case_6_14_3: INVALID TRUNCATED[2];
    case_6_14_4: INVALID TRUNCATED[3];
    case_6_14_5: INVALID TRUNCATED[4];
    case_6_14_6: INVALID TRUNCATED[5];
    case_6_14_7: INVALID TRUNCATED[6];
    case_6_14_8: INVALID TRUNCATED[7];
    case_6_14_9: INVALID TRUNCATED[8];
    case_6_14_10: INVALID TRUNCATED[9];
    // 6.15: all of 6.14 concatenated.
    case_6_15_1: INVALID TRUNCATED.concat();
    // 6.16: bytes that never occur in UTF-8.
    case_6_16_1: INVALID b"\xfe";
    case_6_16_2: INVALID b"\xff";
    case_6_16_3: INVALID b"\xfe\xfe\xff\xff";
    // 6.17: overlong "/".
    case_6_17_1: INVALID b"\xc0\xaf";
    case_6_17_2: INVALID b"\xe0\x80\xaf";
    case_6_17_3: INVALID b"\xf0\x80\x80\xaf";
    case_6_17_4: INVALID b"\xf8\x80\x80\x80\xaf";
    case_6_17_5: INVALID b"\xfc\x80\x80\x80\x80\xaf";
    // 6.18: largest overlong sequences.
    case_6_18_1: INVALID b"\xc1\xbf";
    case_6_18_2: INVALID b"\xe0\x9f\xbf";
    case_6_18_3: INVALID b"\xf0\x8f\xbf\xbf";
    case_6_18_4: INVALID b"\xf8\x87\xbf\xbf\xbf";
    case_6_18_5: INVALID b"\xfc\x83\xbf\xbf\xbf\xbf";
    // 6.19: overlong NUL.
    case_6_19_1: INVALID b"\xc0\x80";
    case_6_19_2: INVALID b"\xe0\x80\x80";
    case_6_19_3: INVALID b"\xf0\x80\x80\x80";
    case_6_19_4: INVALID b"\xf8\x80\x80\x80\x80";
    case_6_19_5: INVALID b"\xfc\x80\x80\x80\x80\x80";
    // 6.20: single UTF-16 surrogates.
    case_6_20_1: INVALID b"\xed\xa0\x80";
    case_6_20_2: INVALID b"\xed\xad\xbf";
    case_6_20_3: INVALID b"\xed\xae\x80";
    case_6_20_4: INVALID b"\xed\xaf\xbf";
    case_6_20_5: INVALID b"\xed\xb0\x80";
    case_6_20_6: INVALID b"\xed\xbe\x80";
    case_6_20_7: INVALID b"\xed\xbf\xbf";
    // 6.21: paired UTF-16 surrogates.
    case_6_21_1: INVALID b"\xed\xa0\x80\xed\xb0\x80";
    case_6_21_2: INVALID b"\xed\xa0\x80\xed\xbf\xbf";
    case_6_21_3: INVALID b"\xed\xad\xbf\xed\xb0\x80";
    case_6_21_4: INVALID b"\xed\xad\xbf\xed\xbf\xbf";
    case_6_21_5: INVALID b"\xed\xae\x80\xed\xb0\x80";
    case_6_21_6: INVALID b"\xed\xae\x80\xed\xbf\xbf";
    case_6_21_7: INVALID b"\xed\xaf\xbf\xed\xb0\x80";
    case_6_21_8: INVALID b"\xed\xaf\xbf\xed\xbf\xbf";
    // 6.22: non-characters (valid UTF-8).
    case_6_22_1: VALID b"\xef\xbf\xbe";
    case_6_22_2: VALID b"\xef\xbf\xbf";
    case_6_22_3: VALID b"\xf0\x9f\xbf\xbe";
    case_6_22_4: VALID b"\xf0\x9f\xbf\xbf";
    case_6_22_5: VALID b"\xf0\xaf\xbf\xbe";
    case_6_22_6: VALID b"\xf0\xaf\xbf\xbf";
    case_6_22_7: VALID b"\xf0\xbf\xbf\xbe";
    case_6_22_8: VALID b"\xf0\xbf\xbf\xbf";
    case_6_22_9: VALID b"\xf1\x8f\xbf\xbe";
    case_6_22_10: VALID b"\xf1\x8f\xbf\xbf";
    case_6_22_11: VALID b"\xf1\x9f\xbf\xbe";
    case_6_22_12: VALID b"\xf1\x9f\xbf\xbf";
    case_6_22_13: VALID b"\xf1\xaf\xbf\xbe";
    case_6_22_14: VALID b"\xf1\xaf\xbf\xbf";
    case_6_22_15: VALID b"\xf1\xbf\xbf\xbe";
    case_6_22_16: VALID b"\xf1\xbf\xbf\xbf";
    case_6_22_17: VALID b"\xf2\x8f\xbf\xbe";
    case_6_22_18: VALID b"\xf2\x8f\xbf\xbf";
    case_6_22_19: VALID b"\xf2\x9f\xbf\xbe";
    case_6_22_20: VALID b"\xf2\x9f\xbf\xbf";
    case_6_22_21: VALID b"\xf2\xaf\xbf\xbe";
    case_6_22_22: VALID b"\xf2\xaf\xbf\xbf";
    case_6_22_23: VALID b"\xf2\xbf\xbf\xbe";
    case_6_22_24: VALID b"\xf2\xbf\xbf\xbf";
    case_6_22_25: VALID b"\xf3\x8f\xbf\xbe";
    case_6_22_26: VALID b"\xf3\x8f\xbf\xbf";
    case_6_22_27: VALID b"\xf3\x9f\xbf\xbe";
    case_6_22_28: VALID b"\xf3\x9f\xbf\xbf";
    case_6_22_29: VALID b"\xf3\xaf\xbf\xbe";
    case_6_22_30: VALID b"\xf3\xaf\xbf\xbf";
    case_6_22_31: VALID b"\xf3\xbf\xbf\xbe";
    case_6_22_32: VALID b"\xf3\xbf\xbf\xbf";
    case_6_22_33: VALID b"\xf4\x8f\xbf\xbe";
    case_6_22_34: VALID b"\xf4\x8f\xbf\xbf";
    // 6.23: Unicode specials (U+FFF9-U+FFFF).
    case_6_23_1: VALID b"\xef\xbf\xb9";
    case_6_23_2: VALID b"\xef\xbf\xba";
    case_6_23_3: VALID b"\xef\xbf\xbb";
    case_6_23_4: VALID b"\xef\xbf\xbc";
    case_6_23_5: VALID b"\xef\xbf\xbd";
    case_6_23_6: VALID b"\xef\xbf\xbe";
    case_6_23_7: VALID b"\xef\xbf\xbf";
}

// Section 7.1-7.5: the closing handshake (§5.5.1, §7).
cases! {
    case_7_1_1 => run()
        .send(&[text("Hello World!")])
        .expect_text("Hello World!")
        .close_normal();
    /// A second close is ignored.
    case_7_1_2 => run()
        .send(&[close(1000), OutFrame::close_empty()])
        .expect_close(Some(1000));
    /// No pong after the close.
    case_7_1_3 => run().send(&[close(1000), ping("")]).expect_close(Some(1000));
    /// No echo after the close.
    case_7_1_4 => run()
        .send(&[close(1000), text("Hello World!")])
        .expect_close(Some(1000));
    /// A message left unfinished by the close is dropped.
    case_7_1_5 => run()
        .send(&[text("fragment1").fin(false), close(1000), cont("fragment2")])
        .expect_close(Some(1000));
    /// Informational in Autobahn. This server handles frames in order: both messages are
    /// echoed before the close is answered, and the ping after the close gets no pong.
    case_7_1_6 => {
        let big = repeat_to(b"BAsd7&jh23", 256 * 1024);
        run()
            .send(&[text(big.clone()), text("Hello World!"), close(1000), ping("")])
            .expect_text(big)
            .expect_text("Hello World!")
            .expect_close(Some(1000))
    };
    /// An empty close is answered with an empty close.
    case_7_3_1 => run().send(&[OutFrame::close_empty()]).expect_close(None);
    /// A 1-byte close payload cannot hold a code.
    case_7_3_2 => run().send(&[op(opcode::CLOSE, "a")]).expect_close(Some(1002));
    case_7_3_3 => run().send(&[close(1000)]).expect_close(Some(1000));
    case_7_3_4 => run()
        .send(&[OutFrame::close(1000, "Hello World!")])
        .expect_close(Some(1000));
    /// The longest reason that fits in a control frame: 123 bytes.
    case_7_3_5 => run()
        .send(&[OutFrame::close(1000, stars(123))])
        .expect_close(Some(1000));
    /// A 124-byte reason makes a 126-byte control frame.
    case_7_3_6 => run()
        .send(&[OutFrame::close(1000, stars(124))])
        .expect_close(Some(1002));
    /// A close reason that is not UTF-8.
    case_7_5_1 => run()
        .send(&[OutFrame::close(1000, KOSME_SURROGATE_EDITED)])
        .expect_close(Some(1007));
}

// Sections 7.7, 7.9, 7.13: close codes. Valid codes are echoed; invalid ones fail with 1002.
// 7.9 follows the released testsuite's list (0, 999, 1004-1006, 1016, 1100, 2000, 2999).
// 7.13 (5000, 65535) is informational in Autobahn; this server treats both as invalid.
close_code_cases! {
    case_7_7_1: 1000 => 1000;
    case_7_7_2: 1001 => 1001;
    case_7_7_3: 1002 => 1002;
    case_7_7_4: 1003 => 1003;
    case_7_7_5: 1007 => 1007;
    case_7_7_6: 1008 => 1008;
    case_7_7_7: 1009 => 1009;
    case_7_7_8: 1010 => 1010;
    case_7_7_9: 1011 => 1011;
    case_7_7_10: 3000 => 3000;
    case_7_7_11: 3999 => 3999;
    case_7_7_12: 4000 => 4000;
    case_7_7_13: 4999 => 4999;
    case_7_9_1: 0 => 1002;
    case_7_9_2: 999 => 1002;
    case_7_9_3: 1004 => 1002;
    case_7_9_4: 1005 => 1002;
    case_7_9_5: 1006 => 1002;
    case_7_9_6: 1016 => 1002;
    case_7_9_7: 1100 => 1002;
    case_7_9_8: 2000 => 1002;
    case_7_9_9: 2999 => 1002;
    case_7_13_1: 5000 => 1002;
    case_7_13_2: 65535 => 1002;
}

// Section 9, scaled down: every message size and piece size Autobahn uses, each message sent
// once, as Autobahn does, except 9.7/9.8, which send 100 messages instead of 1000.
paired_cases! { single_frame;
    case_9_1_1, case_9_2_1: 64 << 10;
    case_9_1_2, case_9_2_2: 256 << 10;
    case_9_1_3, case_9_2_3: MIB;
    case_9_1_4, case_9_2_4: 4 * MIB;
    case_9_1_5, case_9_2_5: 8 * MIB;
    case_9_1_6, case_9_2_6: 16 * MIB;
}

paired_cases! { fragmented;
    case_9_3_1, case_9_4_1: 64;
    case_9_3_2, case_9_4_2: 256;
    case_9_3_3, case_9_4_3: 1 << 10;
    case_9_3_4, case_9_4_4: 4 << 10;
    case_9_3_5, case_9_4_5: 16 << 10;
    case_9_3_6, case_9_4_6: 64 << 10;
    case_9_3_7, case_9_4_7: 256 << 10;
    case_9_3_8, case_9_4_8: MIB;
    case_9_3_9, case_9_4_9: 4 * MIB;
}

paired_cases! { chopped;
    case_9_5_1, case_9_6_1: 64;
    case_9_5_2, case_9_6_2: 128;
    case_9_5_3, case_9_6_3: 256;
    case_9_5_4, case_9_6_4: 512;
    case_9_5_5, case_9_6_5: 1024;
    case_9_5_6, case_9_6_6: 2048;
}

paired_cases! { round_trips;
    case_9_7_1, case_9_8_1: 0;
    case_9_7_2, case_9_8_2: 16;
    case_9_7_3, case_9_8_3: 64;
    case_9_7_4, case_9_8_4: 256;
    case_9_7_5, case_9_8_5: 1024;
    case_9_7_6, case_9_8_6: 4096;
}

// Section 10: a 64 KiB text message in 1300-byte fragments is echoed as one message.
cases! {
    case_10_1_1 => run()
        .send(&fragments(opcode::TEXT, &stars(65536), 1300))
        .expect_text(stars(65536))
        .close_normal();
}
