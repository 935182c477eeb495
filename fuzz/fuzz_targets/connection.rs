//! A `Connection` fed an arbitrary byte stream, once whole and once cut at arbitrary points:
//! - never panics, and never reports an event without using bytes;
//! - the events (messages with their payloads, pings, pongs, close), the final error, the
//!   control frames it then wants to send, its state and the bytes it left unused are identical
//!   for the two ways of feeding;
//! - every Text message is valid UTF-8 (`std::str::from_utf8`), no message exceeds the message
//!   limit, no ping or pong payload exceeds 125 bytes (RFC 6455 §5.5);
//! - after an error the connection is closed and, unless a close was already sent or received,
//!   its last frame is a close carrying the error's code (§7.1.7);
//! - a queued pong carries the payload of the last ping reported (§5.5.3).
//!
//! Input: byte 0 holds flags (bit 0: client role instead of server; bit 1: call `close(1000)`
//! before reading; bit 2: small limits, taken from the next 3 bytes: frame payload, message / 2,
//! fragments % 16). Then the number of cuts (mod 17), 2 bytes per cut (big endian, modulo the
//! stream length + 1), then the stream.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsloop_proto::frame::decode_header;
use wsloop_proto::mask::apply_mask_scalar;
use wsloop_proto::{Connection, Event, Limits, MessageKind, OpCode, ProtocolError};

#[derive(Clone, Debug)]
struct Setup {
    client: bool,
    close_first: bool,
    limits: Limits,
}

#[derive(Debug, PartialEq, Eq)]
enum Ev {
    Text(Vec<u8>),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<u16>, String),
}

#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    events: Vec<Ev>,
    error: Option<ProtocolError>,
    /// Bytes the connection left in the buffer (only compared when no error stopped reading).
    left: Option<Vec<u8>>,
    sent: Vec<Vec<u8>>,
    state: (bool, bool, bool),
}

fn own(event: Event<'_>, limits: &Limits) -> Ev {
    match event {
        Event::Message(m) => {
            assert!(
                m.data.len() as u64 <= limits.max_message,
                "message over the limit"
            );
            match m.kind {
                MessageKind::Text => {
                    assert!(
                        std::str::from_utf8(m.data).is_ok(),
                        "Text is not UTF-8: {:02x?}",
                        m.data
                    );
                    assert_eq!(m.as_text().map(str::as_bytes), Some(m.data));
                    Ev::Text(m.data.to_vec())
                }
                MessageKind::Binary => Ev::Binary(m.data.to_vec()),
            }
        }
        Event::Ping(p) => {
            assert!(p.len() <= 125);
            Ev::Ping(p.to_vec())
        }
        Event::Pong(p) => {
            assert!(p.len() <= 125);
            Ev::Pong(p.to_vec())
        }
        Event::Close(c) => Ev::Close(c.code, c.reason.to_owned()),
    }
}

/// The opcode and unmasked payload of a frame the connection sent.
fn parse_sent(frame: &[u8], client: bool) -> (OpCode, Vec<u8>) {
    let (header, len) = decode_header(frame)
        .expect("a sent frame decodes")
        .expect("a sent frame is whole");
    assert!(header.fin);
    assert_eq!(header.mask.is_some(), client, "§5.1: only a client masks");
    assert_eq!(len as u64 + header.payload_len, frame.len() as u64);
    let mut payload = frame[len..].to_vec();
    if let Some(key) = header.mask {
        apply_mask_scalar(&mut payload, key, 0);
    }
    (header.opcode, payload)
}

fn run(setup: &Setup, stream: &[u8], cuts: &[usize]) -> Outcome {
    // No timers are armed: the time passed in only has to be some instant.
    let now = std::time::Instant::now();
    let mut conn = if setup.client {
        Connection::new_client(setup.limits.clone(), 0x5eed)
    } else {
        Connection::new_server(setup.limits.clone())
    };
    if setup.close_first {
        assert!(conn.close(1000, "bye", now));
    }
    let mut buf = Vec::new();
    let mut events = Vec::new();
    let mut error = None;
    let mut start = 0;
    'chunks: for &end in cuts.iter().chain([stream.len()].iter()) {
        buf.extend_from_slice(&stream[start..end]);
        start = end;
        loop {
            let available = buf.len();
            let polled = conn
                .poll_event(&mut buf, now)
                .map(|(used, event)| (used, event.map(|e| own(e, &setup.limits))));
            match polled {
                Err(e) => {
                    error = Some(e);
                    break 'chunks;
                }
                Ok((used, event)) => {
                    assert!(used <= available, "used {used} of {available}");
                    buf.drain(..used);
                    match event {
                        Some(event) => {
                            assert!(used > 0, "an event without using bytes");
                            events.push(event);
                        }
                        None => break,
                    }
                }
            }
        }
    }
    let state = (conn.is_open(), conn.is_close_sent(), conn.is_closed());
    let mut sent = Vec::new();
    while let Some(frame) = conn.poll_transmit() {
        sent.push(frame.as_bytes().to_vec());
    }

    let parsed: Vec<(OpCode, Vec<u8>)> = sent.iter().map(|f| parse_sent(f, setup.client)).collect();
    if let Some(e) = error {
        assert!(conn.is_closed(), "failed but not closed");
        let peer_closed = events.iter().any(|e| matches!(e, Ev::Close(..)));
        if !setup.close_first && !peer_closed {
            let (opcode, payload) = parsed.last().expect("a close after the error");
            assert_eq!(*opcode, OpCode::Close);
            assert_eq!(payload[..2], e.close_code().to_be_bytes());
        }
    }
    if let Some((_, pong)) = parsed.iter().find(|(op, _)| *op == OpCode::Pong) {
        let last_ping = events.iter().rev().find_map(|e| match e {
            Ev::Ping(p) => Some(p),
            _ => None,
        });
        assert_eq!(Some(pong), last_ping, "the pong answers the last ping");
    }

    Outcome {
        events,
        left: error.is_none().then_some(buf),
        error,
        sent,
        state,
    }
}

fn parse_input(input: &[u8]) -> Option<(Setup, Vec<usize>, &[u8])> {
    let (&flags, mut rest) = input.split_first()?;
    let mut limits = Limits::default();
    if flags & 4 != 0 {
        let [frame, message, fragments, tail @ ..] = rest else {
            return None;
        };
        limits.max_frame_payload = u64::from(*frame);
        limits.max_message = 2 * u64::from(*message);
        limits.max_fragments = u32::from(fragments % 16);
        rest = tail;
    }
    let setup = Setup {
        client: flags & 1 != 0,
        close_first: flags & 2 != 0,
        limits,
    };
    let (&n, rest) = rest.split_first()?;
    let take = (2 * usize::from(n % 17)).min(rest.len() & !1);
    let (raw, stream) = rest.split_at(take);
    let mut cuts: Vec<usize> = raw
        .chunks_exact(2)
        .map(|c| usize::from(u16::from_be_bytes([c[0], c[1]])) % (stream.len() + 1))
        .collect();
    cuts.sort_unstable();
    Some((setup, cuts, stream))
}

fuzz_target!(|input: &[u8]| {
    let Some((setup, cuts, stream)) = parse_input(input) else {
        return;
    };
    let whole = run(&setup, stream, &[]);
    let chunked = run(&setup, stream, &cuts);
    assert_eq!(whole, chunked, "cuts {cuts:?}");
});
