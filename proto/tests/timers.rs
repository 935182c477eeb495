//! The timed rules of the protocol core on a virtual clock: heartbeat, dead-peer detection,
//! close-reply deadline, idle timeout and the ping rate. Time is an argument, so these tests
//! cover minutes in microseconds and never sleep.
//!
//! Frames from the client are masked with the RFC 6455 §5.7 key; server frames are literal
//! bytes: `0x89` ping, `0x88` close, with the code in network order (1001 = 0x03e9,
//! 1008 = 0x03f0).

use std::sync::Arc;
use std::time::{Duration, Instant};

use wsloop_proto::timers::HEARTBEAT_PAYLOAD;
use wsloop_proto::{Connection, Expired, Limits, ProtocolError, Timeouts};

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
const SECOND: Duration = Duration::from_secs(1);

/// A masked client frame with FIN set and a payload under 126 bytes.
fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x80 | opcode, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&KEY);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ KEY[i % 4]));
    frame
}

/// Everything the connection owes the peer, as bytes.
fn transmitted(conn: &mut Connection) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(frame) = conn.poll_transmit() {
        out.extend_from_slice(frame.as_bytes());
    }
    out
}

/// Feeds whole frames; returns the error that failed the connection, if any.
fn feed(conn: &mut Connection, bytes: &[u8], now: Instant) -> Option<ProtocolError> {
    let mut buf = bytes.to_vec();
    let mut pos = 0;
    while pos < buf.len() {
        match conn.poll_event(&mut buf[pos..], now) {
            Ok((0, None)) => break,
            Ok((used, _)) => pos += used,
            Err(e) => return Some(e),
        }
    }
    None
}

fn server(timeouts: Timeouts, now: Instant) -> Connection {
    Connection::new_server(Limits::default()).with_timeouts(Arc::new(timeouts), now)
}

fn heartbeat(interval: u32, timeout: u32) -> Timeouts {
    Timeouts {
        ping_interval: Some(interval * SECOND),
        ping_timeout: timeout * SECOND,
        ..Timeouts::default()
    }
}

fn ping_frame() -> Vec<u8> {
    let mut frame = vec![0x89, HEARTBEAT_PAYLOAD.len() as u8];
    frame.extend_from_slice(HEARTBEAT_PAYLOAD);
    frame
}

#[test]
fn without_timeouts_nothing_is_ever_due() {
    let t0 = Instant::now();
    let mut conn = Connection::new_server(Limits::default());
    assert_eq!(conn.poll_timeout(), None);
    assert_eq!(conn.handle_timeout(t0 + 3600 * SECOND), None);
    // And pings are not rate-limited.
    let pings: Vec<u8> = (0..1000).flat_map(|_| client_frame(0x9, b"")).collect();
    assert_eq!(feed(&mut conn, &pings, t0), None);
}

#[test]
fn heartbeat_pings_at_the_interval_and_a_pong_rearms_it() {
    let t0 = Instant::now();
    let mut conn = server(heartbeat(20, 10), t0);
    assert_eq!(conn.poll_timeout(), Some(t0 + 20 * SECOND));
    // Early: nothing happens.
    assert_eq!(conn.handle_timeout(t0 + 19 * SECOND), None);
    assert!(transmitted(&mut conn).is_empty());
    // Due: one ping with the heartbeat payload; the pong is due 10 s later.
    assert_eq!(
        conn.handle_timeout(t0 + 20 * SECOND),
        Some(Expired::PingSent)
    );
    assert_eq!(conn.handle_timeout(t0 + 20 * SECOND), None);
    assert_eq!(transmitted(&mut conn), ping_frame());
    assert_eq!(conn.poll_timeout(), Some(t0 + 30 * SECOND));
    // Any pong answers it (§5.5.3); the next ping is an interval after the pong.
    assert_eq!(
        feed(&mut conn, &client_frame(0xA, b"x"), t0 + 25 * SECOND),
        None
    );
    assert_eq!(conn.poll_timeout(), Some(t0 + 45 * SECOND));
    assert_eq!(
        conn.handle_timeout(t0 + 30 * SECOND),
        None,
        "the pong cleared the deadline"
    );
    assert!(conn.is_open());
}

#[test]
fn an_unanswered_heartbeat_abandons_the_peer_without_a_close_frame() {
    let t0 = Instant::now();
    let mut conn = server(heartbeat(20, 10), t0);
    assert_eq!(
        conn.handle_timeout(t0 + 20 * SECOND),
        Some(Expired::PingSent)
    );
    transmitted(&mut conn);
    // Data from the peer is not a pong: it does not keep the heartbeat alive.
    assert_eq!(
        feed(&mut conn, &client_frame(0x1, b"hi"), t0 + 25 * SECOND),
        None
    );
    assert_eq!(
        conn.handle_timeout(t0 + 30 * SECOND - Duration::from_nanos(1)),
        None
    );
    assert_eq!(
        conn.handle_timeout(t0 + 30 * SECOND),
        Some(Expired::PongMissing)
    );
    assert!(conn.is_closed());
    assert!(
        transmitted(&mut conn).is_empty(),
        "a dead peer is not sent a close"
    );
    assert_eq!(conn.poll_timeout(), None);
}

#[test]
fn the_close_deadline_replaces_the_heartbeat_once_a_close_is_sent() {
    let t0 = Instant::now();
    let timeouts = Timeouts {
        close_timeout: 5 * SECOND,
        ..heartbeat(20, 10)
    };
    let mut conn = server(timeouts, t0);
    assert!(conn.close(1000, "bye", t0 + 18 * SECOND));
    assert_eq!(conn.poll_timeout(), Some(t0 + 23 * SECOND));
    assert_eq!(
        conn.handle_timeout(t0 + 20 * SECOND),
        None,
        "no ping after our close"
    );
    assert_eq!(
        transmitted(&mut conn),
        [0x88, 0x05, 0x03, 0xe8, b'b', b'y', b'e']
    );
    assert_eq!(
        conn.handle_timeout(t0 + 23 * SECOND),
        Some(Expired::CloseReplyMissing)
    );
    assert!(conn.is_closed());
}

#[test]
fn a_close_reply_in_time_ends_the_deadline() {
    let t0 = Instant::now();
    let mut conn = server(Timeouts::default(), t0);
    assert!(conn.close(1000, "", t0));
    assert_eq!(conn.poll_timeout(), Some(t0 + 5 * SECOND));
    assert_eq!(
        feed(&mut conn, &client_frame(0x8, &[0x03, 0xe8]), t0 + SECOND),
        None
    );
    assert!(conn.is_closed());
    assert_eq!(conn.poll_timeout(), None);
    assert_eq!(conn.handle_timeout(t0 + 10 * SECOND), None);
}

#[test]
fn idle_timeout_counts_from_the_last_input_and_closes_with_1001() {
    let t0 = Instant::now();
    let timeouts = Timeouts {
        idle_timeout: Some(30 * SECOND),
        ..Timeouts::default()
    };
    let mut conn = server(timeouts, t0);
    assert_eq!(conn.poll_timeout(), Some(t0 + 30 * SECOND));
    // Input at 20 s: the check at 30 s finds 10 s of silence and looks again at 50 s,
    // without the deadline moving on every input.
    assert_eq!(
        feed(&mut conn, &client_frame(0x1, b"hi"), t0 + 20 * SECOND),
        None
    );
    assert_eq!(conn.poll_timeout(), Some(t0 + 30 * SECOND));
    assert_eq!(conn.handle_timeout(t0 + 30 * SECOND), None);
    assert_eq!(conn.poll_timeout(), Some(t0 + 50 * SECOND));
    assert_eq!(conn.handle_timeout(t0 + 50 * SECOND), Some(Expired::Idle));
    let mut close = vec![0x88, 14, 0x03, 0xe9];
    close.extend_from_slice(b"idle timeout");
    assert_eq!(transmitted(&mut conn), close);
    // The close handshake now has its own deadline.
    assert!(conn.is_close_sent());
    assert_eq!(conn.poll_timeout(), Some(t0 + 55 * SECOND));
}

#[test]
fn a_pong_counts_as_input_for_the_idle_timeout() {
    let t0 = Instant::now();
    let timeouts = Timeouts {
        idle_timeout: Some(30 * SECOND),
        ..Timeouts::default()
    };
    let mut conn = server(timeouts, t0);
    assert_eq!(
        feed(&mut conn, &client_frame(0xA, b""), t0 + 29 * SECOND),
        None
    );
    assert_eq!(conn.handle_timeout(t0 + 30 * SECOND), None);
    assert!(conn.is_open());
}

#[test]
fn pings_past_the_rate_fail_with_1008_and_the_window_resets_each_second() {
    let t0 = Instant::now();
    let timeouts = Timeouts {
        max_pings_per_second: Some(3),
        ..Timeouts::default()
    };
    let mut conn = server(timeouts, t0);
    let three: Vec<u8> = (0..3).flat_map(|_| client_frame(0x9, b"p")).collect();
    assert_eq!(feed(&mut conn, &three, t0), None);
    // A new window a second later.
    assert_eq!(feed(&mut conn, &three, t0 + SECOND), None);
    assert_eq!(
        transmitted(&mut conn),
        [0x8a, 0x01, b'p'],
        "one pong for the latest ping"
    );
    // The fourth within one second fails the connection (§10.4 resource limits).
    assert_eq!(
        feed(
            &mut conn,
            &client_frame(0x9, b"p"),
            t0 + SECOND + SECOND / 2
        ),
        Some(ProtocolError::PingFlood)
    );
    assert!(conn.is_closed());
    let mut close = vec![0x88, 20, 0x03, 0xf0];
    close.extend_from_slice(b"ping rate exceeded");
    assert_eq!(transmitted(&mut conn), close);
}

#[test]
fn pings_sent_at_the_rate_during_a_pause_of_this_end_are_not_a_flood() {
    let t0 = Instant::now();
    let timeouts = Timeouts {
        max_pings_per_second: Some(3),
        ..Timeouts::default()
    };
    let mut conn = server(timeouts, t0);
    // This end was paused for 5 s; the peer kept pinging at 3 a second. After the pause the
    // pings of those 5 s and of the current second arrive together: 18, all allowed.
    let after = t0 + 5 * SECOND;
    conn.handle_pause(5 * SECOND, after);
    let eighteen: Vec<u8> = (0..18).flat_map(|_| client_frame(0x9, b"p")).collect();
    assert_eq!(feed(&mut conn, &eighteen, after), None);
    // One more within that second is a flood.
    assert_eq!(
        feed(&mut conn, &client_frame(0x9, b"p"), after),
        Some(ProtocolError::PingFlood)
    );
    // The allowance is for the pings of the pause only: a second later the rate is 3 again.
    let mut conn = server(timeouts, t0);
    conn.handle_pause(5 * SECOND, after);
    let four: Vec<u8> = (0..4).flat_map(|_| client_frame(0x9, b"p")).collect();
    assert_eq!(
        feed(&mut conn, &four, after + SECOND),
        Some(ProtocolError::PingFlood)
    );
}
