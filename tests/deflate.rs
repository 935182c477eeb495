//! permessage-deflate (RFC 7692) through the real server on the simulated network: the
//! handshake answer, RFC 7692 §7.2.3's bytes, Autobahn-style sections 12 (compressed
//! messages of every size, fragmented) and 13 (each parameter set), broadcasts compressed
//! once, and hostile input.
#![cfg(feature = "deflate")]

mod common;

use wsloop::app::echo::Echo;
use wsloop::proto::deflate::{Deflater, Inflater};
use wsloop::proto::extension::DeflateConfig;
use wsloop::proto::frame::{decode_header_ext, encode_header, OpCode};
use wsloop::proto::Message;
use wsloop::server::sim::{Sim, SimPeer};
use wsloop::server::{Config, ConnId, Ctx, Handler, OpenInfo};

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
/// RFC 7692 §7.2.3.1: "Hello" compressed.
const HELLO: [u8; 7] = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];

fn upgrade(extensions: Option<&str>) -> Vec<u8> {
    let mut head = b"GET /ws HTTP/1.1\r\nHost: sim\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Version: 13\r\n"
        .to_vec();
    if let Some(e) = extensions {
        head.extend_from_slice(format!("Sec-WebSocket-Extensions: {e}\r\n").as_bytes());
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// The 101 with `extensions` accepted (none: no extension header at all).
fn switching(extensions: Option<&str>) -> Vec<u8> {
    let mut head = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
        .to_vec();
    if let Some(e) = extensions {
        head.extend_from_slice(format!("Sec-WebSocket-Extensions: {e}\r\n").as_bytes());
    }
    head.extend_from_slice(b"\r\n");
    head
}

fn config(deflate: DeflateConfig) -> Config {
    Config {
        deflate: Some(deflate),
        ..Config::default()
    }
}

/// Compress everything (no threshold), otherwise the defaults.
fn eager() -> DeflateConfig {
    DeflateConfig {
        threshold: 0,
        ..DeflateConfig::default()
    }
}

fn open<H: Handler>(sim: &mut Sim<H>, offer: &str, answer: &str) -> SimPeer {
    let peer = sim.connect();
    sim.send(&peer, &upgrade(Some(offer)));
    assert_eq!(
        String::from_utf8(sim.take(&peer)).unwrap(),
        String::from_utf8(switching(Some(answer))).unwrap()
    );
    peer
}

/// A masked client frame; `b0` carries FIN, RSV1 and the opcode.
fn client_frame(b0: u8, payload: &[u8]) -> Vec<u8> {
    let header = encode_header(
        b0 & 0x80 != 0,
        opcode(b0 & 0x0f),
        Some(KEY),
        payload.len() as u64,
    );
    let mut frame = header.as_bytes().to_vec();
    frame[0] |= b0 & 0x40;
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ KEY[i % 4]));
    frame
}

fn opcode(bits: u8) -> OpCode {
    OpCode::from_bits(bits).expect("a valid opcode")
}

/// A message compressed by the client and cut into frames of at most `fragment` bytes
/// (RSV1 on the first only, RFC 7692 §6.1).
fn compressed_message(
    deflater: &mut Deflater,
    fresh: bool,
    kind: u8,
    payload: &[u8],
    fragment: usize,
) -> Vec<u8> {
    let mut compressed = Vec::new();
    deflater.compress_message(payload, &mut compressed, fresh);
    let pieces: Vec<&[u8]> = compressed.chunks(fragment.max(1)).collect();
    let mut stream = Vec::new();
    for (i, piece) in pieces.iter().enumerate() {
        let fin = if i + 1 == pieces.len() { 0x80 } else { 0 };
        let first = if i == 0 { 0x40 | kind } else { 0 };
        stream.extend(client_frame(fin | first, piece));
    }
    stream
}

/// The server's frames decoded into messages (inflating compressed ones with `inflater`),
/// and the first byte of each frame.
fn server_messages(bytes: &[u8], inflater: &mut Inflater) -> (Vec<Vec<u8>>, Vec<u8>) {
    let (mut messages, mut firsts, mut pos) = (Vec::new(), Vec::new(), 0);
    let mut current: Option<(bool, Vec<u8>)> = None;
    while pos < bytes.len() {
        let (h, n) = decode_header_ext(&bytes[pos..], true)
            .unwrap()
            .expect("whole frame");
        firsts.push(bytes[pos]);
        let payload = &bytes[pos + n..pos + n + h.payload_len as usize];
        pos += n + h.payload_len as usize;
        let (compressed, data) = current.get_or_insert((h.compressed, Vec::new()));
        if *compressed {
            inflater.inflate(payload, data, usize::MAX).unwrap();
        } else {
            data.extend_from_slice(payload);
        }
        if h.fin {
            let (compressed, mut data) = current.take().unwrap();
            if compressed {
                inflater.finish_message(&mut data, usize::MAX).unwrap();
            }
            messages.push(data);
        }
    }
    (messages, firsts)
}

#[test]
fn without_deflate_configured_an_offer_gets_no_answer() {
    let mut sim = Sim::new(Config::default(), Echo);
    let peer = sim.connect();
    sim.send(
        &peer,
        &upgrade(Some("permessage-deflate; client_max_window_bits")),
    );
    assert_eq!(sim.take(&peer), switching(None));
    // RSV1 without the extension: 1002 (RFC 6455 §5.2).
    sim.send(&peer, &client_frame(0xc1, &HELLO));
    let close = sim.take(&peer);
    assert_eq!(&close[..4], &[0x88, 0x28, 0x03, 0xea]);
}

#[test]
fn the_first_acceptable_offer_is_answered_and_malformed_ones_declined() {
    let mut sim = Sim::new(config(DeflateConfig::default()), Echo);
    open(
        &mut sim,
        "permessage-deflate; server_max_window_bits=5, permessage-deflate; foo, \
         permessage-deflate; client_max_window_bits",
        "permessage-deflate; client_max_window_bits=15",
    );
    // Nothing acceptable: a plain 101, never a failed handshake.
    let peer = sim.connect();
    sim.send(
        &peer,
        &upgrade(Some("permessage-deflate; server_no_context_takeover=x")),
    );
    assert_eq!(sim.take(&peer), switching(None));
}

#[test]
fn rfc_7692_7_2_3_hello_echoed_with_and_without_context_takeover() {
    let mut sim = Sim::new(config(eager()), Echo);
    let peer = open(&mut sim, "permessage-deflate", "permessage-deflate");
    for _ in 0..2 {
        sim.send(&peer, &client_frame(0xc1, &HELLO));
    }
    // §7.2.3.1, then §7.2.3.2's second message, which refers back to the first.
    let mut want = vec![0xc1, 0x07];
    want.extend_from_slice(&HELLO);
    want.extend_from_slice(&[0xc1, 0x05, 0xf2, 0x00, 0x11, 0x00, 0x00]);
    assert_eq!(sim.take(&peer), want);

    let mut sim = Sim::new(config(eager()), Echo);
    let answer = "permessage-deflate; server_no_context_takeover";
    let peer = open(&mut sim, answer, answer);
    for _ in 0..2 {
        sim.send(&peer, &client_frame(0xc1, &HELLO));
    }
    let mut want = vec![0xc1, 0x07];
    want.extend_from_slice(&HELLO);
    assert_eq!(sim.take(&peer), [&want[..], &want[..]].concat());
}

#[test]
fn below_the_threshold_messages_go_out_plain() {
    let mut sim = Sim::new(config(DeflateConfig::default()), Echo);
    let peer = open(&mut sim, "permessage-deflate", "permessage-deflate");
    sim.send(&peer, &client_frame(0xc1, &HELLO));
    assert_eq!(sim.take(&peer), b"\x81\x05Hello");
}

/// Autobahn's default offer (`PerMessageDeflateOffer()`: accepts client_no_context_takeover
/// and client_max_window_bits), the offer of section 12 and the base of section 13's.
const SUITE_OFFER: &str = "permessage-deflate; client_no_context_takeover; client_max_window_bits";

/// Section 13's cases 13.1-13.7: the client's offers (the default offer plus
/// `server_no_context_takeover` / `server_max_window_bits` as the suite adds them) and the
/// answer each one gets. The last row is not the suite's: what browsers offer, so that
/// context takeover is exercised in both directions.
const SECTION_13: &[(&str, &str)] = &[
    (
        SUITE_OFFER,
        "permessage-deflate; client_no_context_takeover; client_max_window_bits=15",
    ),
    (
        "permessage-deflate; client_no_context_takeover; client_max_window_bits; \
         server_no_context_takeover",
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
         client_max_window_bits=15",
    ),
    (
        "permessage-deflate; client_no_context_takeover; client_max_window_bits; \
         server_max_window_bits=8",
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
         server_max_window_bits=8; client_max_window_bits=15",
    ),
    (
        "permessage-deflate; client_no_context_takeover; client_max_window_bits; \
         server_max_window_bits=15",
        "permessage-deflate; client_no_context_takeover; client_max_window_bits=15",
    ),
    (
        "permessage-deflate; client_no_context_takeover; client_max_window_bits; \
         server_no_context_takeover; server_max_window_bits=8",
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
         server_max_window_bits=8; client_max_window_bits=15",
    ),
    (
        "permessage-deflate; client_no_context_takeover; client_max_window_bits; \
         server_no_context_takeover; server_max_window_bits=15",
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
         client_max_window_bits=15",
    ),
    (
        "permessage-deflate; client_no_context_takeover; client_max_window_bits; \
         server_no_context_takeover; server_max_window_bits=8, \
         permessage-deflate; client_no_context_takeover; client_max_window_bits; \
         server_no_context_takeover, \
         permessage-deflate; client_no_context_takeover; client_max_window_bits",
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
         server_max_window_bits=8; client_max_window_bits=15",
    ),
    (
        "permessage-deflate; client_max_window_bits",
        "permessage-deflate; client_max_window_bits=15",
    ),
];

/// The suite's `MSG_SIZES`: (payload length, the client's auto-fragment size, 0 for none),
/// cases x.y.1 to x.y.18.
const MSG_SIZES: &[(usize, usize)] = &[
    (16, 0),
    (64, 0),
    (256, 0),
    (1024, 0),
    (4096, 0),
    (8192, 0),
    (16384, 0),
    (32768, 0),
    (65536, 0),
    (131072, 0),
    (8192, 256),
    (16384, 256),
    (32768, 256),
    (65536, 256),
    (131072, 256),
    (131072, 1024),
    (131072, 4096),
    (131072, 32768),
];

/// Messages per case: the suite sends 1,000; two are enough for context takeover to carry
/// from one message to the next, and keep the debug-build run short.
const MESSAGES_PER_CASE: usize = 2;

/// JSON-like text of `len` bytes that compresses as real traffic does.
fn text_of(len: usize, seed: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 64);
    let mut i = seed;
    while out.len() < len {
        out.extend_from_slice(
            format!("{{\"id\":{i},\"name\":\"user{}\",\"ok\":true}},", i % 97).as_bytes(),
        );
        i = i.wrapping_mul(2_654_435_761) % 1_000_003;
    }
    out.truncate(len);
    out
}

/// Stand-ins for the suite's data sets (whose files are not shipped here), 256 KiB each, with
/// the suite's text/binary flag: 12.1 Faust (prose, sent as binary), 12.2 a bitmap (runs),
/// 12.3 a PDF (incompressible: the compressed form is larger), 12.4 JSON (text), 12.5 HTML
/// (text). Section 13 uses the JSON one.
fn data_sets() -> Vec<(u8, Vec<u8>)> {
    const LEN: usize = 256 * 1024;
    let words = [
        "Habe",
        "nun,",
        "ach!",
        "Philosophie,",
        "Juristerei",
        "und",
        "Medizin,",
    ];
    let prose: Vec<u8> = (0..LEN)
        .map(|i| i * 7 % words.len())
        .flat_map(|w| format!("{} ", words[w]).into_bytes())
        .take(LEN)
        .collect();
    let bitmap: Vec<u8> = (0..LEN).map(|i| ((i / 64) % 7 * 36) as u8).collect();
    let mut x = 0x2545_f491_4f6c_dd1d_u64;
    let random: Vec<u8> = (0..LEN)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let html: Vec<u8> = (0..LEN / 32)
        .flat_map(|i| format!("<li class=\"item\">row {i}</li>\n").into_bytes())
        .take(LEN)
        .collect();
    vec![
        (0x2, prose),
        (0x2, bitmap),
        (0x2, random),
        (0x1, text_of(LEN, 1)),
        (0x1, html),
    ]
}

/// Runs one Autobahn-style case group: every size of `MSG_SIZES` on one connection per case,
/// messages taken one after another from `data` (wrapping around, as the suite does), sent
/// compressed and cut into the case's fragments, each echo checked byte for byte.
fn run_cases(offer: &str, answer: &str, kind: u8, data: &[u8]) {
    let server_fresh = answer.contains("server_no_context_takeover");
    let client_fresh = answer.contains("client_no_context_takeover");
    let small_window = answer.contains("server_max_window_bits=8");
    let mut pointer = 0;
    for (case, &(size, fragment)) in MSG_SIZES.iter().enumerate() {
        let mut sim = Sim::new(config(eager()), Echo);
        let peer = open(&mut sim, offer, answer);
        let (mut deflater, mut inflater) = (Deflater::new(6), Inflater::new());
        for n in 0..MESSAGES_PER_CASE {
            let payload: Vec<u8> = data
                .iter()
                .cycle()
                .skip(pointer)
                .take(size)
                .copied()
                .collect();
            pointer = (pointer + size) % data.len();
            let fragment = if fragment == 0 { usize::MAX } else { fragment };
            let stream = compressed_message(&mut deflater, client_fresh, kind, &payload, fragment);
            sim.send(&peer, &stream);
            let mut got = Vec::new();
            while !decode_complete(&got) {
                let more = sim.take(&peer);
                assert!(!more.is_empty(), "{offer}: case {}: no echo", case + 1);
                got.extend(more);
            }
            if server_fresh {
                inflater.reset();
            }
            let (messages, firsts) = server_messages(&got, &mut inflater);
            let what = format!("{offer}: case {} message {n}", case + 1);
            assert!(messages == vec![payload], "{what}: echo differs");
            // Compressed, unless it does not fit a smaller agreed window (§7.1.2.1).
            assert_eq!(
                firsts[0] & 0x40 != 0,
                !small_window || size <= 256,
                "{what}"
            );
            assert_eq!((firsts.len(), firsts[0] & 0x0f), (1, kind), "{what}");
        }
    }
}

#[test]
fn autobahn_section_12_every_data_set_size_and_fragmentation() {
    for (kind, data) in data_sets() {
        run_cases(SUITE_OFFER, SECTION_13[0].1, kind, &data);
    }
}

#[test]
fn autobahn_section_13_every_parameter_set() {
    let json = text_of(256 * 1024, 1);
    for (offer, answer) in SECTION_13 {
        run_cases(offer, answer, 0x1, &json);
    }
}

/// `bytes` end at a frame boundary with FIN.
fn decode_complete(bytes: &[u8]) -> bool {
    let (mut pos, mut fin) = (0, false);
    while pos < bytes.len() {
        let Ok(Some((h, n))) = decode_header_ext(&bytes[pos..], true) else {
            return false;
        };
        pos += n + h.payload_len as usize;
        fin = h.fin;
    }
    pos == bytes.len() && fin
}

/// Relays every message to every open connection.
#[derive(Default)]
struct Everyone(Vec<ConnId>);

impl Handler for Everyone {
    fn on_open(&mut self, _: &mut Ctx, id: ConnId, _: &OpenInfo) {
        self.0.push(id);
    }

    fn on_message(&mut self, ctx: &mut Ctx, _: ConnId, message: Message) {
        ctx.broadcast(self.0.iter().copied(), message.kind, message.data);
    }
}

#[test]
fn a_broadcast_is_compressed_once_for_receivers_without_context_takeover() {
    let mut sim = Sim::new(config(eager()), Everyone::default());
    let fresh = "permessage-deflate; server_no_context_takeover";
    let receivers: Vec<SimPeer> = (0..50).map(|_| open(&mut sim, fresh, fresh)).collect();
    let plain = sim.connect();
    sim.send(&plain, &upgrade(None));
    assert_eq!(sim.take(&plain), switching(None));
    let stream = open(&mut sim, "permessage-deflate", "permessage-deflate");
    // 51 negotiated (the plain one offered nothing), all open.
    let stats = sim.server().stats();
    assert_eq!((stats.deflate_negotiated, stats.deflate_open), (51, 51));
    let payload = text_of(4096, 7);
    let before = sim.server().stats().broadcast_encodes;
    let frame = [&[0x81, 0xfe, 0x10, 0x00][..], &KEY, &masked(&payload)].concat();
    sim.send(&plain, &frame);
    // One shared compressed frame, one plain frame, one compression with context takeover.
    assert_eq!(sim.server().stats().broadcast_encodes - before, 3);
    let first = sim.take(&receivers[0]);
    assert_eq!(first[0], 0xc1);
    assert!(
        first.len() < payload.len() / 2,
        "compressed: {} bytes",
        first.len()
    );
    for r in &receivers[1..] {
        assert_eq!(sim.take(r), first);
    }
    let (messages, _) = server_messages(&first, &mut Inflater::new());
    assert_eq!(messages, vec![payload.clone()]);
    assert_eq!(sim.take(&plain)[..4], [0x81, 0x7e, 0x10, 0x00]);
    let (messages, _) = server_messages(&sim.take(&stream), &mut Inflater::new());
    assert_eq!(messages, vec![payload]);
}

fn masked(payload: &[u8]) -> Vec<u8> {
    payload
        .iter()
        .enumerate()
        .map(|(i, b)| b ^ KEY[i % 4])
        .collect()
}

#[test]
fn hostile_bomb_control_rsv1_and_garbage_get_their_close_codes() {
    let limited = Config {
        limits: wsloop::proto::Limits::with_max_message(1 << 20),
        ..config(eager())
    };
    let mut bomb = Vec::new();
    Deflater::new(9).compress_message(&vec![0u8; 64 << 20], &mut bomb, true);
    assert!(bomb.len() < 128 * 1024);
    let cases: &[(Vec<u8>, u16)] = &[
        // A few tens of KB inflating to 64 MiB, over the 1 MiB limit: 1009.
        (compressed_frame(&bomb), 1009),
        // RSV1 on a ping (RFC 7692 §6.1): 1002.
        (client_frame(0xc9, b""), 1002),
        // RSV1 on a continuation: 1002.
        (
            [
                client_frame(0x41, &HELLO[..3]),
                client_frame(0xc0, &HELLO[3..]),
            ]
            .concat(),
            1002,
        ),
        // Not DEFLATE (reserved block type): 1007.
        (client_frame(0xc2, &[0xff, 0xff, 0xff]), 1007),
        // Inflates to invalid UTF-8 in a text message: 1007.
        (
            client_frame(0xc1, &[0x00, 0x01, 0x00, 0xfe, 0xff, 0xff]),
            1007,
        ),
    ];
    for (input, code) in cases {
        let mut sim = Sim::new(limited.clone(), Echo);
        let peer = open(&mut sim, "permessage-deflate", "permessage-deflate");
        sim.send(&peer, input);
        let out = sim.take(&peer);
        assert_eq!(out[0], 0x88, "close for {code}: {out:02x?}");
        assert_eq!(u16::from_be_bytes([out[2], out[3]]), *code);
        assert!(sim.is_closed_by_server(&peer), "closed for {code}");
        assert_eq!(
            sim.server().stats().deflate_open,
            0,
            "the gauge follows the close"
        );
    }
}

fn compressed_frame(compressed: &[u8]) -> Vec<u8> {
    client_frame(0xc2, compressed)
}

/// The command line's knobs reach the handshake and the frames: `wsloop echo --deflate
/// --deflate-window-bits 9 --deflate-level 1 --deflate-threshold 0` over a real socket.
#[test]
fn the_deflate_flags_of_wsloop_echo() {
    let server = common::Server::echo(&[
        "--deflate",
        "--deflate-window-bits",
        "9",
        "--deflate-level",
        "1",
        "--deflate-threshold",
        "0",
    ]);
    let mut request = common::upgrade_request(
        "/",
        "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n",
    )
    .into_bytes();
    request.extend(client_frame(0xc1, &HELLO));
    request.extend(client_frame(0x88, &[0x03, 0xe8]));
    let (head, body) = common::http_exchange(server.addr, &request);
    assert_eq!(
        common::header(&head, "Sec-WebSocket-Extensions"),
        Some(
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=9; \
             client_max_window_bits=9"
        )
    );
    let (messages, firsts) = server_messages(&body[..body.len() - 4], &mut Inflater::new());
    assert_eq!((messages, firsts), (vec![b"Hello".to_vec()], vec![0xc1]));
    assert_eq!(&body[body.len() - 4..], &[0x88, 0x02, 0x03, 0xe8]);
}
