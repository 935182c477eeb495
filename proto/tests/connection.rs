//! Unit-level tests of the protocol state machine [`wsloop_proto::Connection`] through its public
//! API only: literal bytes in, exact events and exact control frames out.
//!
//! Frames from a client are built by `client_frame`, a small encoder written here and independent
//! of the crate's: the first byte as given, the minimal length form (RFC 6455 §5.2), the payload
//! masked with the given key (§5.3). Close status codes on the wire (§7.4.1): 1000 = 0x03e8,
//! 1001 = 0x03e9, 1002 = 0x03ea, 1007 = 0x03ef, 1009 = 0x03f1. A connection that fails sends a
//! close frame with the code and a reason text: the expected bytes below are the literal header
//! (`0x88`, length, code) followed by that reason.

use std::time::Instant;

use wsloop_proto::{Connection, Event, Limits, MessageKind, OpCode, ProtocolError};

/// The time passed to the connection: these connections arm no timers, so any instant works.
fn now() -> Instant {
    Instant::now()
}

/// RFC 6455 §5.7: the masking key of the examples.
const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
/// A second key, so that tests also cover a key that is not the RFC's.
const KEY2: [u8; 4] = [0xa5, 0x01, 0xfe, 0x5a];
/// Seed of the client connections (the masking keys follow from it).
const SEED: u64 = 0x0123_4567_89ab_cdef;

/// An event copied out of the connection.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Ev {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<u16>, String),
}

fn own(event: Event<'_>) -> Ev {
    match event {
        Event::Message(m) => match m.kind {
            MessageKind::Text => {
                Ev::Text(String::from_utf8(m.data.to_vec()).expect("a Text message is valid UTF-8"))
            }
            MessageKind::Binary => Ev::Binary(m.data.to_vec()),
        },
        Event::Ping(p) => Ev::Ping(p.to_vec()),
        Event::Pong(p) => Ev::Pong(p.to_vec()),
        Event::Close(c) => Ev::Close(c.code, c.reason.to_owned()),
    }
}

fn text(s: &str) -> Ev {
    Ev::Text(s.to_owned())
}

/// `payload` XOR `key` (§5.3), byte by byte.
fn xor(payload: &[u8], key: [u8; 4]) -> Vec<u8> {
    payload
        .iter()
        .enumerate()
        .map(|(i, b)| b ^ key[i % 4])
        .collect()
}

/// A client-to-server frame: first byte `b0`, MASK set, minimal length form, masked payload.
fn client_frame(b0: u8, key: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![b0];
    let len = payload.len();
    if len < 126 {
        frame.push(0x80 | len as u8);
    } else if len <= 0xffff {
        frame.push(0x80 | 126);
        frame.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        frame.push(0x80 | 127);
        frame.extend_from_slice(&(len as u64).to_be_bytes());
    }
    frame.extend_from_slice(&key);
    frame.extend_from_slice(&xor(payload, key));
    frame
}

/// The expected bytes of a close frame: its literal header and code, then the reason.
fn close_frame(head: &[u8], reason: &str) -> Vec<u8> {
    let mut frame = head.to_vec();
    frame.extend_from_slice(reason.as_bytes());
    frame
}

fn no_events() -> Vec<Ev> {
    Vec::new()
}

fn no_frames() -> Vec<Vec<u8>> {
    Vec::new()
}

/// The masking keys a client connection seeded with `seed` hands out, in order.
fn client_keys(seed: u64, n: usize) -> Vec<[u8; 4]> {
    let mut twin = Connection::new_client(Limits::default(), seed);
    (0..n)
        .map(|_| twin.next_mask().expect("a client masks"))
        .collect()
}

/// A connection with the read buffer a caller would keep.
struct Peer {
    conn: Connection,
    buf: Vec<u8>,
}

impl Peer {
    fn server() -> Peer {
        Peer::server_with(Limits::default())
    }

    fn server_with(limits: Limits) -> Peer {
        Peer {
            conn: Connection::new_server(limits),
            buf: Vec::new(),
        }
    }

    fn client() -> Peer {
        Peer {
            conn: Connection::new_client(Limits::default(), SEED),
            buf: Vec::new(),
        }
    }

    /// Appends `bytes` to the read buffer and polls until no event comes out, dropping the bytes
    /// each call reports as used. Returns the events and how polling ended.
    fn feed(&mut self, bytes: &[u8]) -> (Vec<Ev>, Result<(), ProtocolError>) {
        self.buf.extend_from_slice(bytes);
        let mut events = Vec::new();
        loop {
            let polled = self.conn.poll_event(&mut self.buf, now());
            let (used, event) = match polled {
                Ok((used, event)) => (used, event.map(own)),
                Err(e) => return (events, Err(e)),
            };
            assert!(used <= self.buf.len(), "used {used} of {}", self.buf.len());
            self.buf.drain(..used);
            match event {
                Some(event) => events.push(event),
                None => return (events, Ok(())),
            }
        }
    }

    /// Every control frame the connection wants written, in order.
    fn transmit(&mut self) -> Vec<Vec<u8>> {
        let mut frames = Vec::new();
        while let Some(frame) = self.conn.poll_transmit() {
            let bytes = frame.as_bytes().to_vec();
            assert_eq!(bytes[0], 0x80 | frame.opcode().bits(), "{bytes:02x?}");
            frames.push(bytes);
        }
        frames
    }
}

/// `bytes` after the first fragment ("a") of a text message.
fn inside_a_message(bytes: &[u8]) -> Vec<u8> {
    let mut stream = client_frame(0x01, KEY, b"a");
    stream.extend_from_slice(bytes);
    stream
}

/// A server fed `stream` (in one piece, then byte by byte) fails with `error` after `events`,
/// queues exactly `close`, and reads nothing more.
fn assert_fails(stream: &[u8], events: &[Ev], error: ProtocolError, close: &[u8]) {
    let mut p = Peer::server();
    assert_eq!(p.feed(stream), (events.to_vec(), Err(error)));
    assert_eq!(p.transmit(), vec![close.to_vec()]);
    assert!(p.conn.is_closed());
    assert!(!p.conn.is_open());
    // §7.1.7: once failed, nothing more is processed.
    assert_eq!(
        p.feed(&client_frame(0x81, KEY, b"late")),
        (no_events(), Ok(()))
    );
    assert_eq!(p.transmit(), no_frames());

    let mut p = Peer::server();
    let mut seen = Vec::new();
    for byte in stream {
        let (evs, result) = p.feed(&[*byte]);
        seen.extend(evs);
        if let Err(e) = result {
            assert_eq!(e, error, "byte by byte");
            assert_eq!(seen, events, "byte by byte");
            assert_eq!(p.transmit(), vec![close.to_vec()]);
            return;
        }
    }
    panic!("byte by byte: no error after {} bytes", stream.len());
}

// ---------------------------------------------------------------------------------------------
// RFC 6455 §5.7 examples.

#[test]
fn rfc_5_7_single_frame_masked_text_to_server() {
    // RFC 6455 §5.7: "A single-frame masked text message" ("Hello").
    let frame = [
        0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ];
    let mut p = Peer::server();
    assert_eq!(p.feed(&frame), (vec![text("Hello")], Ok(())));
    assert!(p.buf.is_empty());
    assert_eq!(p.transmit(), no_frames());
    assert!(p.conn.is_open() && !p.conn.is_close_sent() && !p.conn.is_closed());
}

#[test]
fn rfc_5_7_single_frame_unmasked_text_to_client() {
    // RFC 6455 §5.7: "A single-frame unmasked text message" ("Hello").
    let mut p = Peer::client();
    let frame = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
    assert_eq!(p.feed(&frame), (vec![text("Hello")], Ok(())));
    assert_eq!(p.transmit(), no_frames());
}

#[test]
fn rfc_5_7_fragmented_unmasked_text_to_client() {
    // RFC 6455 §5.7: "A fragmented unmasked text message": "Hel" then "lo".
    let mut p = Peer::client();
    assert_eq!(
        p.feed(&[0x01, 0x03, 0x48, 0x65, 0x6c]),
        (no_events(), Ok(()))
    );
    assert_eq!(
        p.feed(&[0x80, 0x02, 0x6c, 0x6f]),
        (vec![text("Hello")], Ok(()))
    );
    // Both frames in one read give the same single message.
    let mut p = Peer::client();
    let both = [0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f];
    assert_eq!(p.feed(&both), (vec![text("Hello")], Ok(())));
}

#[test]
fn rfc_5_7_unmasked_ping_to_client_gets_a_masked_pong() {
    // RFC 6455 §5.7: "Unmasked Ping request": 0x89 0x05 "Hello"; a client answers with a masked
    // pong carrying the same payload (§5.5.3), masked with its next key (§5.3).
    let mut p = Peer::client();
    let ping = [0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
    assert_eq!(p.feed(&ping), (vec![Ev::Ping(b"Hello".to_vec())], Ok(())));
    let key = client_keys(SEED, 1)[0];
    let mut pong = vec![0x8a, 0x85];
    pong.extend_from_slice(&key);
    pong.extend_from_slice(&xor(b"Hello", key));
    assert_eq!(p.transmit(), vec![pong]);
}

#[test]
fn rfc_5_7_masked_ping_to_server_gets_an_unmasked_pong() {
    // RFC 6455 §5.7 ping "Hello", masked with the §5.7 key as a client must send it; the
    // server's pong is the unmasked 0x8a 0x05 "Hello" (§5.1: a server MUST NOT mask).
    let ping = [
        0x89, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ];
    let mut p = Peer::server();
    assert_eq!(p.feed(&ping), (vec![Ev::Ping(b"Hello".to_vec())], Ok(())));
    assert_eq!(
        p.transmit(),
        vec![vec![0x8a, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]]
    );
    assert_eq!(p.transmit(), no_frames());
}

#[test]
fn rfc_5_7_masked_pong_to_server() {
    // RFC 6455 §5.7: "masked Ping response" (a pong) "Hello". A pong is reported, never answered.
    let pong = [
        0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ];
    let mut p = Peer::server();
    assert_eq!(p.feed(&pong), (vec![Ev::Pong(b"Hello".to_vec())], Ok(())));
    assert_eq!(p.transmit(), no_frames());
}

#[test]
fn rfc_5_7_256_bytes_binary_in_a_single_unmasked_frame() {
    // RFC 6455 §5.7: "256 bytes binary message in a single unmasked frame": 0x82 0x7E 0x0100.
    let data: Vec<u8> = (0..=255).collect();
    let mut frame = vec![0x82, 0x7e, 0x01, 0x00];
    frame.extend_from_slice(&data);
    let mut p = Peer::client();
    assert_eq!(p.feed(&frame), (vec![Ev::Binary(data.clone())], Ok(())));
    // The same message masked, to a server.
    let mut p = Peer::server();
    let masked = client_frame(0x82, KEY2, &data);
    assert_eq!(masked[..4], [0x82, 0xfe, 0x01, 0x00]);
    assert_eq!(p.feed(&masked), (vec![Ev::Binary(data)], Ok(())));
}

#[test]
fn rfc_5_7_64kib_binary_in_a_single_unmasked_frame() {
    // RFC 6455 §5.7: "64KiB binary message in a single unmasked frame":
    // 0x82 0x7F 0x0000000000010000.
    let data: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8).collect();
    let mut frame = vec![0x82, 0x7f, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00];
    frame.extend_from_slice(&data);
    let mut p = Peer::client();
    assert_eq!(p.feed(&frame), (vec![Ev::Binary(data.clone())], Ok(())));
    let mut p = Peer::server();
    let masked = client_frame(0x82, KEY, &data);
    assert_eq!(masked[..10], [0x82, 0xff, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00]);
    assert_eq!(p.feed(&masked), (vec![Ev::Binary(data)], Ok(())));
}

// ---------------------------------------------------------------------------------------------
// Masking per role (§5.1).

#[test]
fn server_fails_on_an_unmasked_frame_with_1002() {
    // §5.1: "The server MUST close the connection upon receiving a frame that is not masked."
    // The frame is the RFC 6455 §5.7 unmasked "Hello".
    let frame = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
    let close = close_frame(&[0x88, 0x1c, 0x03, 0xea], "client frame is not masked");
    assert_fails(&frame, &[], ProtocolError::UnmaskedFrame, &close);
    // Control frames too: an unmasked empty ping, judged from its 2-byte header.
    assert_fails(&[0x89, 0x00], &[], ProtocolError::UnmaskedFrame, &close);
    // Every other kind: empty text, binary, close, and a continuation after a masked start.
    let mut continuation = client_frame(0x01, KEY, b"one");
    continuation.extend_from_slice(&[0x80, 0x03, b't', b'w', b'o']);
    for stream in [
        vec![0x81, 0x00],
        vec![0x82, 0x03, 1, 2, 3],
        vec![0x88, 0x02, 0x03, 0xe8],
        continuation,
    ] {
        assert_fails(&stream, &[], ProtocolError::UnmaskedFrame, &close);
    }
}

#[test]
fn client_fails_on_a_masked_frame_with_a_masked_1002() {
    // §5.1: "A client MUST close a connection if it detects a masked frame." The frame is the
    // RFC 6455 §5.7 masked "Hello". The client's close is itself masked, with its next key.
    let frame = [
        0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ];
    let mut p = Peer::client();
    assert_eq!(
        p.feed(&frame),
        (no_events(), Err(ProtocolError::MaskedFrame))
    );
    let key = client_keys(SEED, 1)[0];
    let mut close = vec![0x88, 0x98];
    close.extend_from_slice(&key);
    let mut payload = vec![0x03, 0xea];
    payload.extend_from_slice(b"server frame is masked");
    close.extend_from_slice(&xor(&payload, key));
    assert_eq!(p.transmit(), vec![close]);
    assert!(p.conn.is_closed());
}

// ---------------------------------------------------------------------------------------------
// Header-level violations (§5.2, §5.5).

#[test]
fn reserved_bits_fail_with_1002() {
    // §5.2: RSV1-3 "MUST be 0 unless an extension is negotiated"; none ever is.
    let close = close_frame(
        &[0x88, 0x28, 0x03, 0xea],
        "reserved bits set without an extension",
    );
    // Each of the seven combinations on a text, RSV1 on a ping and on a continuation.
    for b0 in [0x91, 0xa1, 0xb1, 0xc1, 0xd1, 0xe1, 0xf1, 0xc9, 0xc0] {
        let frame = client_frame(b0, KEY, b"x");
        assert_fails(&frame, &[], ProtocolError::ReservedBits, &close);
    }
    // RSV2 on a continuation of a fragmented message.
    let stream = inside_a_message(&client_frame(0xa0, KEY2, b"b"));
    assert_fails(&stream, &[], ProtocolError::ReservedBits, &close);
}

#[test]
fn reserved_opcodes_fail_with_1002() {
    // §5.2: 0x3-0x7 and 0xB-0xF "are reserved"; the receiving endpoint MUST _Fail_.
    assert_fails(
        &[0x83, 0x80, 0x37, 0xfa, 0x21, 0x3d],
        &[],
        ProtocolError::ReservedOpcode(0x3),
        // The wire reason is static; the log line (Display) names the opcode.
        &close_frame(&[0x88, 0x11, 0x03, 0xea], "reserved opcode"),
    );
    assert_fails(
        &[0x8b, 0x80, 0x37, 0xfa, 0x21, 0x3d],
        &[],
        ProtocolError::ReservedOpcode(0xb),
        &close_frame(&[0x88, 0x11, 0x03, 0xea], "reserved opcode"),
    );
    for op in (0x3..=0x7).chain(0xb..=0xf) {
        // With and without FIN, and after a valid message.
        for b0 in [0x80 | op, op] {
            let mut stream = client_frame(0x81, KEY, b"ok");
            stream.extend_from_slice(&client_frame(b0, KEY2, b"payload"));
            assert_fails(
                &stream,
                &[text("ok")],
                ProtocolError::ReservedOpcode(op),
                &close_frame(&[0x88, 0x11, 0x03, 0xea], "reserved opcode"),
            );
        }
    }
    // Inside a fragmented message.
    let stream = inside_a_message(&client_frame(0x83, KEY2, b"b"));
    assert_fails(
        &stream,
        &[],
        ProtocolError::ReservedOpcode(0x3),
        &close_frame(&[0x88, 0x11, 0x03, 0xea], "reserved opcode"),
    );
}

#[test]
fn control_frames_over_125_bytes_fail_with_1002_from_the_header() {
    // §5.5: "All control frames MUST have a payload length of 125 bytes or less". The 16-bit
    // length form declaring 126 is enough to fail: no payload byte is needed.
    let close = close_frame(&[0x88, 0x1e, 0x03, 0xea], "control frame over 125 bytes");
    for op in [0x88, 0x89, 0x8a] {
        let header = [op, 0xfe, 0x00, 0x7e, 0x37, 0xfa, 0x21, 0x3d];
        assert_fails(&header, &[], ProtocolError::ControlFrameTooLong, &close);
    }
    // The 64-bit form too.
    let header = [
        0x89, 0xff, 0, 0, 0, 0, 0, 0, 0x01, 0x00, 0x37, 0xfa, 0x21, 0x3d,
    ];
    assert_fails(&header, &[], ProtocolError::ControlFrameTooLong, &close);
}

#[test]
fn control_frame_of_exactly_125_bytes_is_fine() {
    let payload = [0x5a; 125];
    let mut p = Peer::server();
    let ping = client_frame(0x89, KEY, &payload);
    assert_eq!(p.feed(&ping), (vec![Ev::Ping(payload.to_vec())], Ok(())));
    let mut pong = vec![0x8a, 0x7d];
    pong.extend_from_slice(&payload);
    assert_eq!(p.transmit(), vec![pong]);
}

#[test]
fn fragmented_control_frames_fail_with_1002() {
    // §5.5: "All control frames ... MUST NOT be fragmented." (FIN clear on 0x8, 0x9, 0xA.)
    let close = close_frame(&[0x88, 0x1a, 0x03, 0xea], "fragmented control frame");
    for b0 in [0x08, 0x09, 0x0a] {
        assert_fails(
            &client_frame(b0, KEY, b""),
            &[],
            ProtocolError::FragmentedControlFrame,
            &close,
        );
    }
    // A fragmented ping inside a fragmented message.
    let stream = inside_a_message(&client_frame(0x09, KEY2, b"p"));
    assert_fails(&stream, &[], ProtocolError::FragmentedControlFrame, &close);
}

#[test]
fn continuation_without_a_message_in_progress_fails_with_1002() {
    // §5.4: a continuation frame must follow a non-final text or binary frame.
    let close = close_frame(
        &[0x88, 0x32, 0x03, 0xea],
        "continuation frame without a message in progress",
    );
    for b0 in [0x80, 0x00] {
        assert_fails(
            &client_frame(b0, KEY, b"x"),
            &[],
            ProtocolError::UnexpectedContinuation,
            &close,
        );
    }
    // Right after a complete message.
    let mut stream = client_frame(0x01, KEY, b"He");
    stream.extend_from_slice(&client_frame(0x80, KEY2, b"llo"));
    stream.extend_from_slice(&client_frame(0x80, KEY, b"!"));
    assert_fails(
        &stream,
        &[text("Hello")],
        ProtocolError::UnexpectedContinuation,
        &close,
    );
}

#[test]
fn new_data_frame_inside_a_fragmented_message_fails_with_1002() {
    // §5.4: the fragments of one message must not be interleaved with another message.
    let close = close_frame(
        &[0x88, 0x2c, 0x03, 0xea],
        "new data frame inside a fragmented message",
    );
    for (start, b0) in [
        (0x01, 0x81),
        (0x01, 0x01),
        (0x01, 0x82),
        (0x01, 0x02),
        (0x02, 0x01),
    ] {
        let mut stream = client_frame(start, KEY, b"He");
        stream.extend_from_slice(&client_frame(b0, KEY2, b"llo"));
        assert_fails(&stream, &[], ProtocolError::ExpectedContinuation, &close);
    }
}

#[test]
fn control_frames_between_fragments_are_handled_and_the_message_still_assembles() {
    // §5.4: "Control frames MAY be injected in the middle of a fragmented message."
    let mut stream = client_frame(0x01, KEY, b"Hel");
    stream.extend_from_slice(&client_frame(0x89, KEY2, b"!"));
    stream.extend_from_slice(&client_frame(0x8a, KEY, b"p"));
    stream.extend_from_slice(&client_frame(0x00, KEY2, b""));
    stream.extend_from_slice(&client_frame(0x80, KEY, b"lo"));
    let mut p = Peer::server();
    assert_eq!(
        p.feed(&stream),
        (
            vec![
                Ev::Ping(b"!".to_vec()),
                Ev::Pong(b"p".to_vec()),
                text("Hello")
            ],
            Ok(())
        )
    );
    // §5.5.2: the ping is answered with a pong with the same payload.
    assert_eq!(p.transmit(), vec![vec![0x8a, 0x01, 0x21]]);

    // The pong is available as soon as the ping is read, before the message completes.
    let mut p = Peer::server();
    let ping_end = client_frame(0x01, KEY, b"Hel").len() + client_frame(0x89, KEY2, b"!").len();
    assert_eq!(
        p.feed(&stream[..ping_end]),
        (vec![Ev::Ping(b"!".to_vec())], Ok(()))
    );
    assert_eq!(p.transmit(), vec![vec![0x8a, 0x01, 0x21]]);
    assert_eq!(
        p.feed(&stream[ping_end..]),
        (vec![Ev::Pong(b"p".to_vec()), text("Hello")], Ok(()))
    );
}

#[test]
fn close_between_fragments_ends_the_connection_and_drops_the_partial_message() {
    let mut stream = client_frame(0x01, KEY, b"Hel");
    stream.extend_from_slice(&client_frame(0x88, KEY2, &[0x03, 0xe8]));
    stream.extend_from_slice(&client_frame(0x80, KEY, b"lo"));
    let mut p = Peer::server();
    assert_eq!(
        p.feed(&stream),
        (vec![Ev::Close(Some(1000), String::new())], Ok(()))
    );
    assert!(p.buf.is_empty());
    assert_eq!(p.transmit(), vec![vec![0x88, 0x02, 0x03, 0xe8]]);
}

#[test]
fn length_with_the_top_bit_set_fails_with_1002_from_the_length_alone() {
    // §5.2: in the 64-bit form "the most significant bit MUST be 0". The 10 bytes up to the end
    // of the length are enough: the mask key need not arrive.
    let close = close_frame(
        &[0x88, 0x24, 0x03, 0xea],
        "64-bit length with the top bit set",
    );
    let header = [0x82, 0xff, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00];
    assert_fails(&header, &[], ProtocolError::LengthTopBitSet, &close);
    let header = [0x82, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
    assert_fails(&header, &[], ProtocolError::LengthTopBitSet, &close);
    // A continuation's length too.
    let stream = inside_a_message(&[0x80, 0xff, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00]);
    assert_fails(&stream, &[], ProtocolError::LengthTopBitSet, &close);
}

// ---------------------------------------------------------------------------------------------
// Size limits (§10.4), decided from the header before any payload arrives.

#[test]
fn a_header_declaring_2_pow_40_bytes_fails_with_1009_at_once() {
    // 64-bit length 0x0000_0100_0000_0000 = 2^40, masked, and no payload at all.
    let header = [
        0x82, 0xff, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x37, 0xfa, 0x21, 0x3d,
    ];
    let close = close_frame(&[0x88, 0x1d, 0x03, 0xf1], "frame larger than the limit");
    assert_fails(&header, &[], ProtocolError::FrameTooLarge, &close);
    // As the first fragment of a text message, and as a continuation.
    let mut first = header;
    first[0] = 0x01;
    assert_fails(&first, &[], ProtocolError::FrameTooLarge, &close);
    let mut stream = client_frame(0x01, KEY, b"a");
    let mut cont = header;
    cont[0] = 0x80;
    stream.extend_from_slice(&cont);
    assert_fails(&stream, &[], ProtocolError::FrameTooLarge, &close);
    // The largest length the 64-bit form allows, 2^63 - 1.
    let header = [
        0x82, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x37, 0xfa, 0x21, 0x3d,
    ];
    assert_fails(&header, &[], ProtocolError::FrameTooLarge, &close);
}

#[test]
fn frame_limit_is_inclusive_and_checked_from_the_header() {
    let limits = Limits {
        max_frame_payload: 10,
        max_message: 1000,
        ..Limits::default()
    };
    let mut p = Peer::server_with(limits.clone());
    let ten = client_frame(0x82, KEY, &[7; 10]);
    assert_eq!(p.feed(&ten), (vec![Ev::Binary(vec![7; 10])], Ok(())));
    // A header declaring 11 bytes, without its payload.
    let mut p = Peer::server_with(limits);
    assert_eq!(
        p.feed(&[0x82, 0x8b, 0x37, 0xfa, 0x21, 0x3d]),
        (no_events(), Err(ProtocolError::FrameTooLarge))
    );
    assert_eq!(
        p.transmit(),
        vec![close_frame(
            &[0x88, 0x1d, 0x03, 0xf1],
            "frame larger than the limit"
        )]
    );
}

#[test]
fn message_limit_counts_all_fragments_and_is_checked_from_the_header() {
    let limits = Limits {
        max_frame_payload: 10,
        max_message: 12,
        ..Limits::default()
    };
    let close = close_frame(&[0x88, 0x1f, 0x03, 0xf1], "message larger than the limit");
    // 6 + 6 = 12 bytes: at the limit.
    let mut stream = client_frame(0x02, KEY, &[1; 6]);
    stream.extend_from_slice(&client_frame(0x80, KEY2, &[2; 6]));
    let mut p = Peer::server_with(limits.clone());
    let mut want = vec![1; 6];
    want.extend_from_slice(&[2; 6]);
    assert_eq!(p.feed(&stream), (vec![Ev::Binary(want)], Ok(())));
    // 6 + 6 + a header declaring 1 more: fails at that header, no payload needed.
    let mut stream = client_frame(0x02, KEY, &[1; 6]);
    stream.extend_from_slice(&client_frame(0x00, KEY2, &[2; 6]));
    stream.extend_from_slice(&[0x80, 0x81, 0x37, 0xfa, 0x21, 0x3d]);
    let mut p = Peer::server_with(limits.clone());
    assert_eq!(
        p.feed(&stream),
        (no_events(), Err(ProtocolError::MessageTooLarge))
    );
    assert_eq!(p.transmit(), vec![close.clone()]);
    // A single frame under the frame limit but over the message limit.
    let limits = Limits {
        max_frame_payload: 100,
        max_message: 12,
        ..Limits::default()
    };
    let mut p = Peer::server_with(limits);
    assert_eq!(
        p.feed(&[0x81, 0x8d, 0x37, 0xfa, 0x21, 0x3d]),
        (no_events(), Err(ProtocolError::MessageTooLarge))
    );
    assert_eq!(p.transmit(), vec![close]);
}

#[test]
fn fragment_count_is_limited() {
    let limits = Limits {
        max_fragments: 3,
        ..Limits::default()
    };
    // Three frames: allowed.
    let mut stream = client_frame(0x02, KEY, b"a");
    stream.extend_from_slice(&client_frame(0x00, KEY2, b"b"));
    stream.extend_from_slice(&client_frame(0x80, KEY, b"c"));
    let mut p = Peer::server_with(limits.clone());
    assert_eq!(p.feed(&stream), (vec![Ev::Binary(b"abc".to_vec())], Ok(())));
    // A fourth frame fails at its header, even an empty continuation.
    let mut stream = inside_a_message(&client_frame(0x00, KEY2, b""));
    stream.extend_from_slice(&client_frame(0x00, KEY, b""));
    stream.extend_from_slice(&[0x80, 0x80, 0x37, 0xfa, 0x21, 0x3d]);
    let mut p = Peer::server_with(limits.clone());
    assert_eq!(
        p.feed(&stream),
        (no_events(), Err(ProtocolError::TooManyFragments))
    );
    assert_eq!(
        p.transmit(),
        vec![close_frame(
            &[0x88, 0x20, 0x03, 0xf1],
            "message has too many fragments"
        )]
    );
    // The count restarts with each message.
    let mut p = Peer::server_with(limits);
    for _ in 0..3 {
        let mut message = client_frame(0x02, KEY, b"x");
        message.extend_from_slice(&client_frame(0x00, KEY2, b"y"));
        message.extend_from_slice(&client_frame(0x80, KEY, b"z"));
        assert_eq!(
            p.feed(&message),
            (vec![Ev::Binary(b"xyz".to_vec())], Ok(()))
        );
    }
}

// ---------------------------------------------------------------------------------------------
// UTF-8 (§8.1): 1007, failing at the first byte that makes the text invalid.

/// "κόσμε" (Autobahn 6.x test text, with U+1F79 for the accented omicron), 11 bytes.
const KOSME: &[u8] = &[
    0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xcf, 0x83, 0xce, 0xbc, 0xce, 0xb5,
];

fn kosme() -> Ev {
    Ev::Text(String::from_utf8(KOSME.to_vec()).unwrap())
}

fn utf8_close() -> Vec<u8> {
    close_frame(&[0x88, 0x21, 0x03, 0xef], "text message is not valid UTF-8")
}

#[test]
fn invalid_utf8_in_one_frame_fails_at_the_piece_holding_the_bad_byte() {
    // Autobahn 6.4.1: "κόσμε" f4 90 80 80 "edited": U+110000 is out of range, and f4 90 can
    // start no valid sequence. The frame arrives in three reads; 0x90 is the first byte of the
    // second read, so the error comes with it and the third read is never needed.
    let mut payload = KOSME.to_vec();
    payload.extend_from_slice(&[0xf4, 0x90, 0x80, 0x80]);
    payload.extend_from_slice(b"edited");
    let frame = client_frame(0x81, KEY, &payload);
    let bad = 6 + KOSME.len() + 1; // header, text, f4
    let mut p = Peer::server();
    assert_eq!(p.feed(&frame[..bad]), (no_events(), Ok(())));
    assert!(
        p.buf.is_empty(),
        "the valid bytes are taken into the message"
    );
    assert_eq!(
        p.feed(&frame[bad..bad + 2]),
        (no_events(), Err(ProtocolError::InvalidUtf8))
    );
    assert_eq!(p.transmit(), vec![utf8_close()]);
    assert_eq!(p.feed(&frame[bad + 2..]), (no_events(), Ok(())));
    assert_eq!(p.transmit(), no_frames());
}

#[test]
fn invalid_utf8_across_fragments_fails_before_the_message_ends() {
    // The same text in three fragments: "κόσμε" f4 | 90 80 80 | "edited". The second fragment
    // fails; the final one has not been sent.
    let mut first = KOSME.to_vec();
    first.push(0xf4);
    let mut stream = client_frame(0x01, KEY, &first);
    stream.extend_from_slice(&client_frame(0x00, KEY2, &[0x90, 0x80, 0x80]));
    assert_fails(&stream, &[], ProtocolError::InvalidUtf8, &utf8_close());

    // "κόσμε" | "A" f4 90 80: the second fragment arrives in pieces (header, "A" and f4, then
    // 90 ...) and fails with the piece holding 0x90.
    let second = client_frame(0x00, KEY2, &[0x41, 0xf4, 0x90, 0x80]);
    let mut p = Peer::server();
    assert_eq!(
        p.feed(&client_frame(0x01, KEY, KOSME)),
        (no_events(), Ok(()))
    );
    assert_eq!(p.feed(&second[..8]), (no_events(), Ok(())));
    assert_eq!(
        p.feed(&second[8..9]),
        (no_events(), Err(ProtocolError::InvalidUtf8))
    );
    assert_eq!(p.transmit(), vec![utf8_close()]);

    // Messages that never end, so each failure comes from the bad byte alone: a lead byte
    // then ASCII, past U+10FFFF across fragments, a surrogate over three fragments, an
    // overlong encoding in the second fragment, 0xFF in the first.
    let kosme_text: &[u8] = KOSME;
    let cases: [&[&[u8]]; 5] = [
        &[b"hello\xce", b"A and more"],
        &[b"ok\xf4", b"\x90"],
        &[kosme_text, b"\xed", b"\xa0"],
        &[b"valid", b"\xc0\xaf"],
        &[b"ab\xffcd"],
    ];
    for fragments in cases {
        let mut stream = Vec::new();
        for (i, fragment) in fragments.iter().enumerate() {
            let (b0, key) = if i == 0 { (0x01, KEY) } else { (0x00, KEY2) };
            stream.extend_from_slice(&client_frame(b0, key, fragment));
        }
        assert_fails(&stream, &[], ProtocolError::InvalidUtf8, &utf8_close());
    }
}

#[test]
fn invalid_utf8_fails_with_the_read_holding_the_first_bad_byte_for_every_split() {
    // "κόσμε" e2 82 41 "xyz": e2 82 is a valid prefix of "€", 0x41 ends it too early. The
    // text is sent as one frame and as two fragments; for every split of the stream into two
    // reads, the first read fails if and only if it holds the 0x41.
    let mut payload = KOSME.to_vec();
    payload.extend_from_slice(&[0xe2, 0x82, 0x41, b'x', b'y', b'z']);
    let bad_in_payload = KOSME.len() + 2;
    let one_frame = client_frame(0x81, KEY, &payload);
    let first = client_frame(0x01, KEY, &payload[..KOSME.len() + 1]);
    let two_fragments = [
        first.clone(),
        client_frame(0x80, KEY2, &payload[KOSME.len() + 1..]),
    ]
    .concat();
    // (stream, index of the 0x41 in it, its frame's key, where that frame's payload starts)
    let cases = [
        (one_frame, 6 + bad_in_payload, KEY, 6),
        (two_fragments, first.len() + 6 + 1, KEY2, first.len() + 6),
    ];
    for (stream, bad, key, payload_start) in cases {
        assert_eq!(stream[bad] ^ key[(bad - payload_start) % 4], 0x41);
        for cut in 0..=stream.len() {
            let mut p = Peer::server();
            let (events, first_read) = p.feed(&stream[..cut]);
            assert_eq!(events, no_events(), "cut {cut}");
            if cut > bad {
                assert_eq!(first_read, Err(ProtocolError::InvalidUtf8), "cut {cut}");
            } else {
                assert_eq!(first_read, Ok(()), "cut {cut}");
                assert_eq!(
                    p.feed(&stream[cut..]),
                    (no_events(), Err(ProtocolError::InvalidUtf8)),
                    "cut {cut}"
                );
            }
            assert_eq!(p.transmit(), vec![utf8_close()], "cut {cut}");
        }
    }
}

#[test]
fn invalid_utf8_in_a_whole_frame_fails_with_1007() {
    for payload in [
        &[0xff][..],
        &[0xc0, 0xaf],             // overlong '/'
        &[0xed, 0xa0, 0x80],       // UTF-16 surrogate U+D800
        &[0x41, 0xe2, 0x82],       // ends inside a code point
        &[0xce, 0xba, 0x80, 0x41], // stray continuation byte
    ] {
        assert_fails(
            &client_frame(0x81, KEY, payload),
            &[],
            ProtocolError::InvalidUtf8,
            &utf8_close(),
        );
    }
}

#[test]
fn text_ending_inside_a_code_point_fails_at_the_final_fragment() {
    // e2 82 is a valid prefix of "€" (e2 82 ac); an empty final fragment leaves it unfinished.
    let mut stream = client_frame(0x01, KEY, &[0xe2, 0x82]);
    stream.extend_from_slice(&client_frame(0x80, KEY2, b""));
    assert_fails(&stream, &[], ProtocolError::InvalidUtf8, &utf8_close());
}

#[test]
fn code_points_split_across_fragments_are_valid() {
    // "€" = e2 82 ac, one byte per fragment, and "κόσμε" split inside its 3-byte "ό".
    let mut stream = client_frame(0x01, KEY, &[0xe2]);
    stream.extend_from_slice(&client_frame(0x00, KEY2, &[0x82]));
    stream.extend_from_slice(&client_frame(0x80, KEY, &[0xac]));
    stream.extend_from_slice(&client_frame(0x01, KEY, &KOSME[..3]));
    stream.extend_from_slice(&client_frame(0x80, KEY2, &KOSME[3..]));
    let mut p = Peer::server();
    assert_eq!(p.feed(&stream), (vec![text("€"), kosme()], Ok(())));
    // Binary data is never checked.
    let mut p = Peer::server();
    assert_eq!(
        p.feed(&client_frame(0x82, KEY, &[0xff, 0xfe])),
        (vec![Ev::Binary(vec![0xff, 0xfe])], Ok(()))
    );
}

// ---------------------------------------------------------------------------------------------
// Close frames (§5.5.1, §7.4).

#[test]
fn close_payload_of_one_byte_fails_with_1002() {
    // §5.5.1: a body, if present, starts with a 2-byte status code.
    assert_fails(
        &client_frame(0x88, KEY, &[0x03]),
        &[],
        ProtocolError::ClosePayloadTooShort,
        &close_frame(&[0x88, 0x19, 0x03, 0xea], "close payload of 1 byte"),
    );
}

#[test]
fn invalid_close_codes_fail_with_1002() {
    // §7.4.1/§7.4.2: 1004 reserved; 1005, 1006, 1015 MUST NOT be sent; 0-999 unused; 1016-2999
    // unassigned; 5000+ undefined (Autobahn 7.9.x).
    let cases: [(u16, [u8; 2]); 12] = [
        (0, [0x00, 0x00]),
        (999, [0x03, 0xe7]),
        (1004, [0x03, 0xec]),
        (1005, [0x03, 0xed]),
        (1006, [0x03, 0xee]),
        (1015, [0x03, 0xf7]),
        (1016, [0x03, 0xf8]),
        (1100, [0x04, 0x4c]),
        (2000, [0x07, 0xd0]),
        (2999, [0x0b, 0xb7]),
        (5000, [0x13, 0x88]),
        (65535, [0xff, 0xff]),
    ];
    for (code, bytes) in cases {
        let mut payload = bytes.to_vec();
        payload.extend_from_slice(b"why");
        assert_fails(
            &client_frame(0x88, KEY, &payload),
            &[],
            ProtocolError::InvalidCloseCode(code),
            // The wire reason is static; the log line (Display) names the code.
            &close_frame(&[0x88, 0x14, 0x03, 0xea], "invalid close code"),
        );
    }
}

#[test]
fn close_reason_that_is_not_utf8_fails_with_1007() {
    // Autobahn 7.5.1: code 1000, reason ce ba ed a0 80 (a surrogate); then 0xFF, and a
    // reason ending inside a code point.
    for reason in [&[0xce, 0xba, 0xed, 0xa0, 0x80][..], b"ok\xff", b"\xe2\x82"] {
        let mut payload = vec![0x03, 0xe8];
        payload.extend_from_slice(reason);
        assert_fails(
            &client_frame(0x88, KEY, &payload),
            &[],
            ProtocolError::InvalidCloseReason,
            &close_frame(&[0x88, 0x21, 0x03, 0xef], "close reason is not valid UTF-8"),
        );
    }
}

#[test]
fn valid_close_is_echoed_with_the_same_code() {
    // §5.5.1: the endpoint answers a close with a close, and "SHOULD use the status code it
    // received".
    let cases: [([u8; 2], u16, &str); 5] = [
        ([0x03, 0xe8], 1000, "bye"),
        ([0x03, 0xe9], 1001, ""),
        ([0x03, 0xf3], 1011, "κόσμε"),
        ([0x0b, 0xb8], 3000, "app"),
        ([0x13, 0x87], 4999, "last"),
    ];
    for (code_bytes, code, reason) in cases {
        let mut payload = code_bytes.to_vec();
        payload.extend_from_slice(reason.as_bytes());
        let mut p = Peer::server();
        assert_eq!(
            p.feed(&client_frame(0x88, KEY, &payload)),
            (vec![Ev::Close(Some(code), reason.to_owned())], Ok(()))
        );
        assert!(p.conn.is_closed());
        assert_eq!(
            p.transmit(),
            vec![vec![0x88, 0x02, code_bytes[0], code_bytes[1]]]
        );
        assert_eq!(p.transmit(), no_frames());
    }
}

#[test]
fn empty_close_is_echoed_empty() {
    // §7.1.5: an empty close has no status code; it is answered with an empty close.
    let mut p = Peer::server();
    assert_eq!(
        p.feed(&[0x88, 0x80, 0x37, 0xfa, 0x21, 0x3d]),
        (vec![Ev::Close(None, String::new())], Ok(()))
    );
    assert_eq!(p.transmit(), vec![vec![0x88, 0x00]]);
    assert!(p.conn.is_closed());
}

#[test]
fn data_after_a_close_is_discarded() {
    // §5.5.1: after the close, "the endpoint ... MUST NOT" process further data.
    let close = client_frame(0x88, KEY, &[0x03, 0xe8]);
    let mut buf = close.clone();
    buf.extend_from_slice(&client_frame(0x81, KEY2, b"ignored"));
    buf.extend_from_slice(&client_frame(0x89, KEY, b"ping"));
    let total = buf.len();
    let mut conn = Connection::new_server(Limits::default());
    let (used, event) = conn.poll_event(&mut buf, now()).unwrap();
    assert_eq!(
        (used, event.map(own)),
        (close.len(), Some(Ev::Close(Some(1000), String::new())))
    );
    let (used, event) = conn.poll_event(&mut buf[close.len()..], now()).unwrap();
    assert_eq!((used, event), (total - close.len(), None));
    // And anything that arrives later, even garbage.
    let mut garbage = [0xff; 9];
    let (used, event) = conn.poll_event(&mut garbage, now()).unwrap();
    assert_eq!((used, event), (9, None));
    let echo = conn.poll_transmit().expect("the echo");
    assert_eq!(echo.as_bytes(), [0x88, 0x02, 0x03, 0xe8]);
    assert_eq!(echo.opcode(), OpCode::Close);
    assert!(
        conn.poll_transmit().is_none(),
        "no pong for the discarded ping"
    );
}

#[test]
fn server_initiated_close_completes_with_the_peers_reply() {
    // §7.1.2: this end sends a close; data the peer sent before seeing it is still delivered
    // (only the sender of a close must stop sending data, §5.5.1); the peer's close completes
    // the handshake and is not echoed.
    let mut p = Peer::server();
    assert!(p.conn.close(1001, "going away", now()));
    assert!(p.conn.is_close_sent() && !p.conn.is_open() && !p.conn.is_closed());
    assert!(
        !p.conn.close(1000, "again", now()),
        "only one close is sent"
    );
    assert_eq!(
        p.transmit(),
        vec![close_frame(&[0x88, 0x0c, 0x03, 0xe9], "going away")]
    );
    // Data in flight: a whole frame (fast path) and a fragmented one in pieces.
    assert_eq!(
        p.feed(&client_frame(0x81, KEY, b"in flight")),
        (vec![Ev::Text("in flight".into())], Ok(()))
    );
    let fragmented = [
        client_frame(0x02, KEY2, &[1, 2, 3]),
        client_frame(0x80, KEY, &[4, 5]),
    ]
    .concat();
    assert_eq!(p.feed(&fragmented[..5]), (no_events(), Ok(())));
    assert_eq!(
        p.feed(&fragmented[5..]),
        (vec![Ev::Binary(vec![1, 2, 3, 4, 5])], Ok(()))
    );
    assert!(p.buf.is_empty());
    assert!(p.conn.is_close_sent());
    // The peer's reply, code 1001 (RFC 6455 §5.5.1 echo), masked.
    assert_eq!(
        p.feed(&client_frame(0x88, KEY, &[0x03, 0xe9])),
        (vec![Ev::Close(Some(1001), String::new())], Ok(()))
    );
    assert!(p.conn.is_closed() && !p.conn.is_close_sent());
    assert_eq!(p.transmit(), no_frames());
    assert!(!p.conn.close(1000, "", now()));
}

#[test]
fn a_ping_after_this_ends_close_is_still_answered() {
    // §5.5.2: "Upon receipt of a Ping frame, an endpoint MUST send a Pong frame in response,
    // unless it already received a Close frame." Having *sent* a close is no exception; only
    // data frames are forbidden after it (§5.5.1).
    let mut p = Peer::server();
    assert!(p.conn.close(1000, "", now()));
    assert_eq!(p.transmit(), vec![vec![0x88, 0x02, 0x03, 0xe8]]);
    // RFC 6455 §5.7 ping "Hello", masked with the §5.7 key.
    let ping = [
        0x89, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ];
    assert_eq!(p.feed(&ping), (vec![Ev::Ping(b"Hello".to_vec())], Ok(())));
    assert_eq!(
        p.transmit(),
        vec![vec![0x8a, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]]
    );
    // Once the peer's close has arrived, a ping that follows is not even read.
    let mut stream = client_frame(0x88, KEY2, &[0x03, 0xe8]);
    stream.extend_from_slice(&ping);
    assert_eq!(
        p.feed(&stream),
        (vec![Ev::Close(Some(1000), String::new())], Ok(()))
    );
    assert_eq!(p.transmit(), no_frames());
}

#[test]
fn close_reason_is_cut_at_a_character_boundary_to_fit_125_bytes() {
    // §5.5: a control payload is at most 125 bytes: code (2) + at most 123 bytes of reason.
    // 70 "é" are 140 bytes; 61 of them (122 bytes) fit.
    let mut p = Peer::server();
    assert!(p.conn.close(1000, &"é".repeat(70), now()));
    assert_eq!(
        p.transmit(),
        vec![close_frame(&[0x88, 0x7c, 0x03, 0xe8], &"é".repeat(61))]
    );
}

#[test]
fn client_close_is_masked_and_the_servers_echo_completes_it() {
    let keys = client_keys(SEED, 2);
    let mut p = Peer::client();
    assert!(p.conn.close(1000, "bye", now()));
    let mut close = vec![0x88, 0x85];
    close.extend_from_slice(&keys[0]);
    close.extend_from_slice(&xor(&[0x03, 0xe8, b'b', b'y', b'e'], keys[0]));
    assert_eq!(p.transmit(), vec![close]);
    // The server's echo: unmasked 0x88 0x02 0x03 0xe8.
    assert_eq!(
        p.feed(&[0x88, 0x02, 0x03, 0xe8]),
        (vec![Ev::Close(Some(1000), String::new())], Ok(()))
    );
    assert!(p.conn.is_closed());
    assert_eq!(p.transmit(), no_frames());
}

// ---------------------------------------------------------------------------------------------
// Pings and pongs (§5.5.2, §5.5.3).

#[test]
fn two_pings_before_transmit_get_one_pong_with_the_latest_payload() {
    // §5.5.3: "an endpoint MAY elect to send a Pong frame for only the most recently processed
    // Ping frame".
    let mut stream = client_frame(0x89, KEY, b"first");
    stream.extend_from_slice(&client_frame(0x89, KEY2, b"second"));
    let mut p = Peer::server();
    assert_eq!(
        p.feed(&stream),
        (
            vec![Ev::Ping(b"first".to_vec()), Ev::Ping(b"second".to_vec())],
            Ok(())
        )
    );
    assert_eq!(
        p.transmit(),
        vec![vec![0x8a, 0x06, b's', b'e', b'c', b'o', b'n', b'd']]
    );
    // An empty ping gets an empty pong.
    assert_eq!(
        p.feed(&[0x89, 0x80, 0x37, 0xfa, 0x21, 0x3d]),
        (vec![Ev::Ping(Vec::new())], Ok(()))
    );
    assert_eq!(p.transmit(), vec![vec![0x8a, 0x00]]);
}

#[test]
fn pong_then_ping_then_close_are_transmitted_in_that_order() {
    let mut p = Peer::server();
    assert!(p.conn.ping(b"old"));
    assert!(p.conn.ping(b"hb"));
    assert_eq!(
        p.feed(&client_frame(0x89, KEY, b"x")),
        (vec![Ev::Ping(b"x".to_vec())], Ok(()))
    );
    assert!(p.conn.close(1000, "", now()));
    assert!(!p.conn.ping(b"ignored after close"));
    assert_eq!(
        p.transmit(),
        vec![
            vec![0x8a, 0x01, b'x'],
            vec![0x89, 0x02, b'h', b'b'],
            vec![0x88, 0x02, 0x03, 0xe8],
        ]
    );
}

#[test]
fn a_ping_longer_than_a_control_frame_is_refused_not_cut() {
    // §5.5: control frame payloads are at most 125 bytes.
    let mut p = Peer::server();
    assert!(!p.conn.ping(&[7; 126]));
    assert!(!p.conn.wants_transmit());
    assert!(p.conn.ping(&[7; 125]));
    let mut want = vec![0x89, 125];
    want.extend_from_slice(&[7; 125]);
    assert_eq!(p.transmit(), vec![want]);
}

#[test]
fn client_ping_is_masked_with_a_fresh_key_per_frame() {
    let keys = client_keys(SEED, 2);
    assert_ne!(keys[0], keys[1]);
    let mut p = Peer::client();
    p.conn.ping(b"a");
    let mut ping = vec![0x89, 0x81];
    ping.extend_from_slice(&keys[0]);
    ping.push(b'a' ^ keys[0][0]);
    assert_eq!(p.transmit(), vec![ping]);
    p.conn.ping(b"b");
    let mut ping = vec![0x89, 0x81];
    ping.extend_from_slice(&keys[1]);
    ping.push(b'b' ^ keys[1][0]);
    assert_eq!(p.transmit(), vec![ping]);
}

#[test]
fn next_mask_is_none_for_a_server_and_fresh_for_a_client() {
    // §5.1: "A server MUST NOT mask any frames"; §5.3: a client picks a new key per frame.
    let mut server = Connection::new_server(Limits::default());
    assert_eq!(server.next_mask(), None);
    assert_eq!(server.next_mask(), None);
    let mut client = Connection::new_client(Limits::default(), SEED);
    let keys: Vec<_> = (0..64).map(|_| client.next_mask().unwrap()).collect();
    assert_eq!(keys, client_keys(SEED, 64), "the seed decides the sequence");
    for (i, a) in keys.iter().enumerate() {
        assert!(!keys[i + 1..].contains(a), "key {i} repeats");
    }
    // Seed zero is usable too.
    let mut zero = Connection::new_client(Limits::default(), 0);
    let (a, b) = (zero.next_mask().unwrap(), zero.next_mask().unwrap());
    assert_ne!(a, b);
}

// ---------------------------------------------------------------------------------------------
// The byte count of poll_event.

#[test]
fn poll_event_uses_only_the_bytes_of_the_frame_it_reports() {
    // Two RFC 6455 §5.7 masked "Hello" frames and the first byte of a third.
    let hello = [
        0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ];
    let mut buf = [&hello[..], &hello[..], &[0x81]].concat();
    let mut conn = Connection::new_server(Limits::default());
    let (used, event) = conn.poll_event(&mut buf, now()).unwrap();
    assert_eq!((used, event.map(own)), (11, Some(text("Hello"))));
    let (used, event) = conn.poll_event(&mut buf[11..], now()).unwrap();
    assert_eq!((used, event.map(own)), (11, Some(text("Hello"))));
    // One byte of a header: nothing used, the byte stays with the caller.
    let (used, event) = conn.poll_event(&mut buf[22..], now()).unwrap();
    assert_eq!((used, event), (0, None));
}

#[test]
fn incomplete_headers_and_control_frames_use_nothing() {
    let ping = client_frame(0x89, KEY, b"Hello");
    let mut conn = Connection::new_server(Limits::default());
    // Every cut of a header (2 bytes + 4 bytes of key), and of a ping's payload: 0 used.
    for cut in 0..ping.len() {
        let mut part = ping[..cut].to_vec();
        assert_eq!(
            conn.poll_event(&mut part, now()).unwrap(),
            (0, None),
            "cut {cut}"
        );
    }
    let mut whole = ping.clone();
    let (used, event) = conn.poll_event(&mut whole, now()).unwrap();
    assert_eq!(
        (used, event.map(own)),
        (11, Some(Ev::Ping(b"Hello".to_vec())))
    );
    // A 64-bit length header cut before its mask key.
    let mut cut = [0x82, 0xff, 0, 0, 0, 0, 0, 0, 0x01, 0x00, 0x37, 0xfa];
    assert_eq!(conn.poll_event(&mut cut, now()).unwrap(), (0, None));
}

#[test]
fn a_data_frame_arriving_in_pieces_uses_each_piece() {
    // RFC 6455 §5.7 masked "Hello": header and key (6), then 2, then 3 payload bytes.
    let frame = [
        0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ];
    let mut conn = Connection::new_server(Limits::default());
    let mut first = frame[..8].to_vec();
    assert_eq!(conn.poll_event(&mut first, now()).unwrap(), (8, None));
    let mut rest = frame[8..].to_vec();
    rest.extend_from_slice(&[0x89, 0x80]); // the start of a ping: left for later
    let (used, event) = conn.poll_event(&mut rest, now()).unwrap();
    assert_eq!((used, event.map(own)), (3, Some(text("Hello"))));
}

#[test]
fn a_whole_frame_is_handed_out_in_place_and_a_piecewise_one_from_the_connection() {
    // The module promises that a whole unfragmented frame is unmasked in place (no copy).
    let frame = client_frame(0x82, KEY, &[9; 40]);
    let mut buf = frame.clone();
    let range = buf.as_ptr_range();
    let mut conn = Connection::new_server(Limits::default());
    let (used, event) = conn.poll_event(&mut buf, now()).unwrap();
    let Some(Event::Message(m)) = event else {
        panic!("expected a message, got {event:?}");
    };
    assert_eq!(
        (used, m.kind, m.data),
        (frame.len(), MessageKind::Binary, &[9; 40][..])
    );
    assert!(
        range.contains(&m.data.as_ptr()),
        "a slice of the caller's buffer"
    );
    // The caller's buffer now holds the unmasked payload.
    assert_eq!(buf[6..], [9; 40]);
}

// ---------------------------------------------------------------------------------------------
// The whole stream at once and the same stream in pieces give the same events.

/// Several frames covering every path: RFC 6455 §5.7 masked "Hello"; a binary message in two
/// fragments with a ping between them; UTF-8 text; an empty text; a 16-bit-length binary; a
/// 3-byte code point split across fragments; an empty pong; a close 1000 "done".
fn mixed_stream() -> (Vec<u8>, Vec<Ev>) {
    let long: Vec<u8> = (0..130u8).collect();
    let frames = [
        vec![
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ],
        client_frame(0x02, KEY2, &[1, 2, 3]),
        client_frame(0x89, KEY, b"p"),
        client_frame(0x80, [0, 0, 0, 0], &[4, 5]),
        client_frame(0x81, KEY2, KOSME),
        client_frame(0x81, KEY, b""),
        client_frame(0x82, KEY2, &long),
        client_frame(0x01, KEY, &[0xe2]),
        client_frame(0x80, KEY2, &[0x82, 0xac]),
        client_frame(0x8a, KEY, b""),
        client_frame(0x88, KEY2, &[0x03, 0xe8, b'd', b'o', b'n', b'e']),
    ];
    let events = vec![
        text("Hello"),
        Ev::Ping(b"p".to_vec()),
        Ev::Binary(vec![1, 2, 3, 4, 5]),
        kosme(),
        text(""),
        Ev::Binary(long),
        text("€"),
        Ev::Pong(Vec::new()),
        Ev::Close(Some(1000), "done".to_owned()),
    ];
    (frames.concat(), events)
}

/// Pong for "p", then the echo of the close.
const MIXED_TRANSMIT: [&[u8]; 2] = [&[0x8a, 0x01, b'p'], &[0x88, 0x02, 0x03, 0xe8]];

fn feed_pieces(stream: &[u8], cuts: &[usize]) -> (Vec<Ev>, Vec<Vec<u8>>) {
    let mut p = Peer::server();
    let mut events = Vec::new();
    let mut start = 0;
    for &end in cuts.iter().chain([stream.len()].iter()) {
        let (evs, result) = p.feed(&stream[start..end]);
        assert_eq!(result, Ok(()), "cuts {cuts:?}");
        events.extend(evs);
        start = end;
    }
    (events, p.transmit())
}

#[test]
fn whole_stream_gives_the_expected_events() {
    let (stream, events) = mixed_stream();
    let (got, sent) = feed_pieces(&stream, &[]);
    assert_eq!(got, events);
    assert_eq!(sent, MIXED_TRANSMIT.map(<[u8]>::to_vec));
}

#[test]
fn every_split_point_gives_the_same_events() {
    let (stream, events) = mixed_stream();
    for i in 0..=stream.len() {
        let (got, sent) = feed_pieces(&stream, &[i]);
        assert_eq!(got, events, "split at {i}");
        assert_eq!(sent, MIXED_TRANSMIT.map(<[u8]>::to_vec), "split at {i}");
    }
}

#[test]
fn every_pair_of_split_points_gives_the_same_events() {
    let (stream, events) = mixed_stream();
    for i in 0..=stream.len() {
        for j in i..=stream.len() {
            let (got, _) = feed_pieces(&stream, &[i, j]);
            assert_eq!(got, events, "split at {i} and {j}");
        }
    }
}

#[test]
fn byte_by_byte_gives_the_same_events() {
    let (stream, events) = mixed_stream();
    let cuts: Vec<usize> = (1..stream.len()).collect();
    let (got, sent) = feed_pieces(&stream, &cuts);
    assert_eq!(got, events);
    assert_eq!(sent, MIXED_TRANSMIT.map(<[u8]>::to_vec));
}

#[test]
fn an_error_after_good_frames_is_the_same_whatever_the_split() {
    // Good frames, then an unmasked frame: the events before it and the 1002 do not depend on
    // where the reads split the stream.
    let (mut stream, mut events) = mixed_stream();
    // Drop the final close so that the stream goes on.
    let close_len = client_frame(0x88, KEY2, &[0x03, 0xe8, b'd', b'o', b'n', b'e']).len();
    stream.truncate(stream.len() - close_len);
    events.pop();
    stream.extend_from_slice(&[0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
    for i in 0..=stream.len() {
        let mut p = Peer::server();
        let (mut got, first) = p.feed(&stream[..i]);
        let result = match first {
            Err(e) => Err(e),
            Ok(()) => {
                let (more, second) = p.feed(&stream[i..]);
                got.extend(more);
                second
            }
        };
        assert_eq!(
            (&got, result),
            (&events, Err(ProtocolError::UnmaskedFrame)),
            "split {i}"
        );
        assert_eq!(
            p.transmit(),
            vec![
                vec![0x8a, 0x01, b'p'],
                close_frame(&[0x88, 0x1c, 0x03, 0xea], "client frame is not masked"),
            ],
            "split {i}"
        );
    }
}

#[test]
fn a_close_code_forbidden_on_the_wire_becomes_1011() {
    // §7.4.1: 1005 "MUST NOT be set as a status code in a Close control frame by an endpoint".
    let mut p = Peer::server();
    assert!(p.conn.close(1005, "", now()));
    assert_eq!(
        p.transmit(),
        vec![close_frame(&[0x88, 0x02, 0x03, 0xf3], "")]
    );
}

// ---------------------------------------------------------------------------------------------
// permessage-deflate (RFC 7692): compressed frames in, limits and RSV1 rules.

#[cfg(feature = "deflate")]
mod permessage_deflate {
    use super::*;
    use wsloop_proto::deflate::{Deflater, Outgoing};
    use wsloop_proto::extension::{negotiate, DeflateConfig};

    /// RFC 7692 §7.2.3.1: "Hello" compressed.
    const HELLO: [u8; 7] = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];

    fn server_offered(offer: &str, limits: Limits) -> Peer {
        let agreed = negotiate(&DeflateConfig::default(), [offer]).expect("accepted");
        Peer {
            conn: Connection::new_server(limits).with_deflate(agreed),
            buf: Vec::new(),
        }
    }

    fn deflating() -> Peer {
        server_offered("permessage-deflate", Limits::default())
    }

    /// A server with permessage-deflate fed `stream` fails with `error` and queues `close`.
    fn fails(p: &mut Peer, stream: &[u8], error: ProtocolError, close: &[u8]) {
        assert_eq!(p.feed(stream), (no_events(), Err(error)));
        assert_eq!(p.transmit(), vec![close.to_vec()]);
    }

    #[test]
    fn rfc_7692_7_2_3_1_compressed_hello_whole_and_fragmented() {
        let mut p = deflating();
        // 0xc1: FIN, RSV1, text.
        assert_eq!(
            p.feed(&client_frame(0xc1, KEY, &HELLO)),
            (vec![text("Hello")], Ok(()))
        );
        // §7.2.3.1: "0x41 0x03 0xf2 0x48 0xcd" then "0x80 0x04 0xc9 0xc9 0x07 0x00".
        let mut stream = client_frame(0x41, KEY, &HELLO[..3]);
        stream.extend(client_frame(0x80, KEY2, &HELLO[3..]));
        for cut in 0..stream.len() {
            let mut p = deflating();
            let (mut evs, r) = p.feed(&stream[..cut]);
            assert_eq!(r, Ok(()));
            let (more, r) = p.feed(&stream[cut..]);
            evs.extend(more);
            assert_eq!((evs, r), (vec![text("Hello")], Ok(())), "cut {cut}");
        }
    }

    #[test]
    fn rfc_7692_7_2_3_2_context_takeover_and_without() {
        // The second message refers back into the first one's window.
        let mut stream = client_frame(0xc1, KEY, &HELLO);
        stream.extend(client_frame(0xc1, KEY2, &[0xf2, 0x00, 0x11, 0x00, 0x00]));
        let mut p = deflating();
        assert_eq!(
            p.feed(&stream),
            (vec![text("Hello"), text("Hello")], Ok(()))
        );
        assert!(p.conn.compression_memory() > 0, "the window is kept");
        // With client_no_context_takeover the window is forgotten after each message, and
        // its memory given back; a reference before the start of the next message's stream
        // is then invalid data (zlib: "invalid distance too far back"): 1007.
        let mut p = server_offered(
            "permessage-deflate; client_no_context_takeover",
            Limits::default(),
        );
        assert_eq!(
            p.feed(&client_frame(0xc1, KEY, &HELLO)),
            (vec![text("Hello")], Ok(()))
        );
        assert!(p.conn.compression_memory() < wsloop_proto::deflate::INFLATER_BYTES);
        assert_eq!(
            p.feed(&client_frame(0xc1, KEY2, &[0xf2, 0x00, 0x11, 0x00, 0x00])),
            (no_events(), Err(ProtocolError::InvalidCompressedData))
        );
    }

    #[test]
    fn uncompressed_messages_still_flow() {
        let mut p = deflating();
        assert_eq!(
            p.feed(&client_frame(0x81, KEY, b"plain")),
            (vec![text("plain")], Ok(()))
        );
    }

    #[test]
    fn rsv1_without_negotiation_on_control_and_on_continuation_is_1002() {
        assert_fails(
            &client_frame(0xc1, KEY, &HELLO),
            &[],
            ProtocolError::ReservedBits,
            &close_frame(
                &[0x88, 0x28, 0x03, 0xea],
                "reserved bits set without an extension",
            ),
        );
        fails(
            &mut deflating(),
            &client_frame(0xc9, KEY, b""),
            ProtocolError::CompressedControlFrame,
            &close_frame(&[0x88, 0x1a, 0x03, 0xea], "compressed control frame"),
        );
        let mut stream = client_frame(0x41, KEY, &HELLO[..3]);
        stream.extend(client_frame(0xc0, KEY, &HELLO[3..]));
        fails(
            &mut deflating(),
            &stream,
            ProtocolError::CompressedContinuation,
            &close_frame(&[0x88, 0x1e, 0x03, 0xea], "RSV1 on a continuation frame"),
        );
    }

    #[test]
    fn garbage_deflate_data_is_1007() {
        fails(
            &mut deflating(),
            &client_frame(0xc2, KEY, &[0xff, 0xff, 0xff, 0xff]),
            ProtocolError::InvalidCompressedData,
            &close_frame(&[0x88, 0x19, 0x03, 0xef], "invalid compressed data"),
        );
    }

    #[test]
    fn a_bomb_is_1009_before_it_inflates() {
        // 16 MiB of zeros compress to about 16 KiB; the limit is 1 MiB.
        let mut bomb = Vec::new();
        Deflater::new(9).compress_message(&vec![0u8; 16 << 20], &mut bomb, true);
        let mut p = server_offered("permessage-deflate", Limits::with_max_message(1 << 20));
        fails(
            &mut p,
            &client_frame(0xc2, KEY, &bomb),
            ProtocolError::MessageTooLarge,
            &close_frame(&[0x88, 0x1f, 0x03, 0xf1], "message larger than the limit"),
        );
        assert!(p.conn.buffered() <= (1 << 20) + 1, "{}", p.conn.buffered());
    }

    #[test]
    fn invalid_utf8_fails_fast_after_inflation() {
        // A stored block holding 0xff: the first byte is already invalid, and the error comes
        // before the rest of the frame (the declared 100 bytes) has arrived.
        let mut payload = vec![0x00, 0x01, 0x00, 0xfe, 0xff, 0xff];
        payload.resize(100, 0);
        let frame = client_frame(0xc1, KEY, &payload);
        let mut p = deflating();
        // Header, mask key and the six bytes of the stored block.
        assert_eq!(
            p.feed(&frame[..12]),
            (no_events(), Err(ProtocolError::InvalidUtf8))
        );
    }

    #[test]
    fn outgoing_follows_the_agreement() {
        let p = deflating();
        assert_eq!(p.conn.outgoing(10), Outgoing::Plain); // below the 64-byte threshold
        assert_eq!(p.conn.outgoing(1000), Outgoing::Stream);
        let p = server_offered(
            "permessage-deflate; server_no_context_takeover",
            Limits::default(),
        );
        assert_eq!(p.conn.outgoing(1000), Outgoing::Fresh);
        let p = server_offered(
            "permessage-deflate; server_max_window_bits=8",
            Limits::default(),
        );
        assert_eq!(
            (p.conn.outgoing(256), p.conn.outgoing(257)),
            (Outgoing::Fresh, Outgoing::Plain)
        );
        assert_eq!(Peer::server().conn.outgoing(1000), Outgoing::Plain);
    }
}
