//! permessage-deflate (RFC 7692) from the client's side: a client-role `Connection` inflating
//! RFC 7692 §7.2.3's frames as a server sends them, a client `MessageEncoder` producing them
//! (masked, RSV1 on the frame), and a client and a server core talking over in-memory bytes
//! for every parameter set, each end following the parameters that govern what it sends.
#![cfg(feature = "deflate")]

use std::time::Instant;

use wsloop_proto::client_handshake::{check_response, request, Response};
use wsloop_proto::extension::{negotiate, DeflateConfig, DeflateOffer, Negotiated};
use wsloop_proto::mask::apply_mask;
use wsloop_proto::{Connection, Event, Limits, MessageEncoder, MessageKind, Role};

/// RFC 7692 §7.2.3.1: "Hello" compressed.
const HELLO: [u8; 7] = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
/// RFC 7692 §7.2.3.2: the second "Hello" with the first one's window.
const HELLO_AGAIN: [u8; 5] = [0xf2, 0x00, 0x11, 0x00, 0x00];

/// The messages `conn` hands out for `bytes` (fed whole), and the error that failed it.
fn receive(conn: &mut Connection, mut bytes: Vec<u8>) -> (Vec<Vec<u8>>, Option<String>) {
    let mut got = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        match conn.poll_event(&mut bytes[pos..], Instant::now()) {
            Ok((used, event)) => {
                pos += used;
                match event {
                    Some(Event::Message(m)) => got.push(m.data.to_vec()),
                    Some(_) => {}
                    None if used == 0 => break,
                    None => {}
                }
            }
            Err(e) => return (got, Some(e.to_string())),
        }
    }
    (got, None)
}

/// What a client agrees to when the server answers `answer` to the default offer.
fn client_agreed(answer: &str) -> Negotiated {
    DeflateOffer::default()
        .accept([answer])
        .expect("a valid answer")
        .expect("accepted")
}

fn client(answer: &str) -> Connection {
    Connection::new_client(Limits::default(), 1).with_deflate(client_agreed(answer))
}

/// An unmasked server frame; `b0` carries FIN, RSV1 and the opcode.
fn server_frame(b0: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![b0, payload.len() as u8];
    frame.extend_from_slice(payload);
    frame
}

#[test]
fn rfc_7692_7_2_3_frames_from_a_server_inflate_in_a_client() {
    let hello = b"Hello".to_vec();
    // §7.2.3.1: whole, and fragmented "0x41 0x03 0xf2 0x48 0xcd" "0x80 0x04 0xc9 0xc9 0x07 0x00".
    let mut stream = server_frame(0xc1, &HELLO);
    stream.extend(server_frame(0x41, &HELLO[..3]));
    stream.extend(server_frame(0x80, &HELLO[3..]));
    // §7.2.3.2: a back-reference into the previous message's window.
    stream.extend(server_frame(0xc1, &HELLO_AGAIN));
    // §7.2.3.3: a stored block; §7.2.3.4: a block with BFINAL set.
    stream.extend(server_frame(
        0xc1,
        &[
            0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00,
        ],
    ));
    stream.extend(server_frame(
        0xc1,
        &[0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00],
    ));
    // §7.2.3.6: an empty message is a single 0x00.
    stream.extend(server_frame(0xc2, &[0x00]));
    let mut conn = client("permessage-deflate");
    assert_eq!(
        receive(&mut conn, stream),
        (
            vec![
                hello.clone(),
                hello.clone(),
                hello.clone(),
                hello.clone(),
                hello,
                vec![]
            ],
            None
        )
    );
}

#[test]
fn rsv1_on_a_client_without_the_extension_is_1002() {
    let mut plain = Connection::new_client(Limits::default(), 1);
    let (got, err) = receive(&mut plain, server_frame(0xc1, &HELLO));
    assert_eq!((got, err.is_some()), (vec![], true));
    let close = plain.poll_transmit().unwrap();
    assert_eq!(
        unmasked(close.as_bytes()),
        (
            0x88,
            b"\x03\xeareserved bits set without an extension".to_vec()
        )
    );
}

/// Unmasks one client frame; returns its first header byte and payload.
fn unmasked(frame: &[u8]) -> (u8, Vec<u8>) {
    assert_eq!(frame[1] & 0x80, 0x80, "a client frame is masked");
    let len = usize::from(frame[1] & 0x7f);
    assert!(len < 126);
    let key = [frame[2], frame[3], frame[4], frame[5]];
    let mut payload = frame[6..].to_vec();
    assert_eq!(payload.len(), len);
    apply_mask(&mut payload, key, 0);
    (frame[0], payload)
}

#[test]
fn rfc_7692_7_2_3_frames_from_a_client_encoder() {
    let conn = client("permessage-deflate");
    let mut encoder = conn.encoder(7);
    let hello = |encoder: &mut MessageEncoder| {
        let mut out = Vec::new();
        encoder.encode(MessageKind::Text, b"Hello", &mut out);
        unmasked(&out)
    };
    // The threshold of the default offer (64 bytes) would send "Hello" plain.
    assert_eq!(hello(&mut encoder), (0x81, b"Hello".to_vec()));
    let eager = DeflateOffer {
        threshold: 0,
        ..DeflateOffer::default()
    };
    let agreed = eager.accept(["permessage-deflate"]).unwrap().unwrap();
    let mut encoder = MessageEncoder::new(Role::Client, 7).with_deflate(agreed, Role::Client);
    // §7.2.3.1, then §7.2.3.2's back-reference (context takeover): FIN, RSV1, text.
    assert_eq!(hello(&mut encoder), (0xc1, HELLO.to_vec()));
    assert_eq!(hello(&mut encoder), (0xc1, HELLO_AGAIN.to_vec()));
    // client_no_context_takeover: each message on its own, the same bytes every time.
    let fresh = eager
        .accept(["permessage-deflate; client_no_context_takeover"])
        .unwrap()
        .unwrap();
    let mut encoder = MessageEncoder::new(Role::Client, 7).with_deflate(fresh, Role::Client);
    assert_eq!(hello(&mut encoder), (0xc1, HELLO.to_vec()));
    assert_eq!(hello(&mut encoder), (0xc1, HELLO.to_vec()));
    // The server's own no-context-takeover does not bind the client.
    let server_only = eager
        .accept(["permessage-deflate; server_no_context_takeover"])
        .unwrap()
        .unwrap();
    let mut encoder = MessageEncoder::new(Role::Client, 7).with_deflate(server_only, Role::Client);
    assert_eq!(hello(&mut encoder), (0xc1, HELLO.to_vec()));
    assert_eq!(hello(&mut encoder), (0xc1, HELLO_AGAIN.to_vec()));
}

/// A client and a server core agreed through the real offer and answer.
struct Pair {
    client: Connection,
    client_out: MessageEncoder,
    server: Connection,
    server_out: MessageEncoder,
}

impl Pair {
    fn new(offer: &DeflateOffer, config: &DeflateConfig) -> Pair {
        let req = request("h", "/", [9; 16], &[], &[]).with_deflate(offer.clone());
        let head = String::from_utf8(req.bytes.clone()).unwrap();
        let offered = head
            .lines()
            .find_map(|l| l.strip_prefix("Sec-WebSocket-Extensions: "))
            .unwrap();
        let agreed = negotiate(config, [offered]).expect("the server accepts");
        let answer = format!(
            "HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: {}\r\n\
             Sec-WebSocket-Extensions: {}\r\n\r\n",
            req.accept,
            agreed.response_header()
        );
        let Response::Accepted {
            deflate: Some(client_agreed),
            ..
        } = check_response(answer.as_bytes(), &req)
        else {
            panic!("the client refused {answer:?}");
        };
        let limits = Limits::with_max_message(1 << 20);
        let client = Connection::new_client(limits.clone(), 3).with_deflate(client_agreed);
        let server = Connection::new_server(limits).with_deflate(agreed);
        Pair {
            client_out: client.encoder(5),
            server_out: server.encoder(0),
            client,
            server,
        }
    }
}

/// JSON-like text of `len` bytes.
fn json(len: usize, seed: usize) -> Vec<u8> {
    let mut s = String::new();
    let mut i = seed;
    while s.len() < len {
        s.push_str(&format!(
            "{{\"type\":\"chat\",\"from\":\"user{}\",\"content\":\"message {i}\"}},",
            i % 7
        ));
        i += 1;
    }
    s.truncate(len);
    s.into_bytes()
}

#[test]
fn client_and_server_cores_round_trip_every_parameter_set() {
    let offers = [
        DeflateOffer::default(),
        DeflateOffer {
            client_max_window_bits: None,
            ..DeflateOffer::default()
        },
        DeflateOffer {
            client_no_context_takeover: true,
            ..DeflateOffer::default()
        },
        DeflateOffer {
            server_no_context_takeover: true,
            ..DeflateOffer::default()
        },
        DeflateOffer {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            ..DeflateOffer::default()
        },
        DeflateOffer {
            server_max_window_bits: Some(9),
            client_max_window_bits: Some(9),
            ..DeflateOffer::default()
        },
        DeflateOffer {
            server_max_window_bits: Some(8),
            client_max_window_bits: Some(8),
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            ..DeflateOffer::default()
        },
    ];
    let configs = [
        DeflateConfig::default(),
        DeflateConfig {
            window_bits: 10,
            ..DeflateConfig::default()
        },
        DeflateConfig {
            no_context_takeover: true,
            ..DeflateConfig::default()
        },
    ];
    let sizes = [0, 5, 100, 256, 257, 600, 4096, 70_000];
    for offer in offers.iter().map(|o| DeflateOffer {
        threshold: 0,
        ..o.clone()
    }) {
        for config in configs.iter().map(|c| DeflateConfig {
            threshold: 0,
            ..c.clone()
        }) {
            let mut pair = Pair::new(&offer, &config);
            let case = format!("{offer:?} / {config:?}");
            // The windows each end must keep to: the server's as it answered; the client's
            // as the server answered or, failing that, as the client offered.
            let answered = *pair.server.deflate().unwrap();
            let server_bits = answered.server_max_window_bits;
            let client_bits = [
                answered.client_max_window_bits,
                offer.client_max_window_bits.filter(|&bits| bits < 15),
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(15);
            let fits = |len: usize, bits: u8| bits == 15 || len <= 1 << bits;
            // Twice each: the second message can refer back with context takeover.
            for (i, &len) in sizes.iter().chain(&sizes).enumerate() {
                let message = json(len, i);
                let mut wire = Vec::new();
                pair.client_out
                    .encode(MessageKind::Text, &message, &mut wire);
                assert_eq!(
                    wire[0] & 0x40 != 0,
                    fits(len, client_bits),
                    "{len} B {case}"
                );
                assert_eq!(
                    receive(&mut pair.server, wire),
                    (vec![message.clone()], None),
                    "client to server, {len} B, {case}"
                );
                let mut wire = Vec::new();
                pair.server_out
                    .encode(MessageKind::Binary, &message, &mut wire);
                assert_eq!(
                    wire[0] & 0x40 != 0,
                    fits(len, server_bits),
                    "{len} B {case}"
                );
                assert_eq!(
                    receive(&mut pair.client, wire),
                    (vec![message], None),
                    "server to client, {len} B, {case}"
                );
            }
        }
    }
}
