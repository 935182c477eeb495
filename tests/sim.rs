//! The server's timed and flow-control behaviour on the deterministic simulation
//! (`wsloop::server::sim`): in-memory pipes and a virtual clock, no sockets, no sleeps.
//!
//! Each test drives the real loop (handshake, frames, handler, fan-out, deadlines) and checks
//! the exact bytes the server writes. Server frames are unmasked (RFC 6455 §5.1): `0x89` ping,
//! `0x88` close with the code in network order (1001 = 0x03e9, 1008 = 0x03f0).

use std::time::Duration;

use wsloop::app::chat::ChatLimits;
use wsloop::app::echo::Echo;
use wsloop::app::serve::{Serve, ServeConfig};
use wsloop::proto::{Message, Policy};
use wsloop::server::sim::{Sim, SimPeer};
use wsloop::server::{CloseReason, Config, ConnId, Ctx, Handler, OpenInfo};

const SECOND: Duration = Duration::from_secs(1);
/// RFC 6455 §1.3: the sample key and the accept value it must produce.
const UPGRADE: &[u8] = b"GET /ws HTTP/1.1\r\nHost: sim\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Version: 13\r\n\r\n";
const SWITCHING: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A masked client frame with FIN set (payload under 126 bytes).
fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x80 | opcode, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&KEY);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ KEY[i % 4]));
    frame
}

/// An unmasked server frame with FIN set (payload under 126 bytes).
fn server_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x80 | opcode, payload.len() as u8];
    frame.extend_from_slice(payload);
    frame
}

fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason.as_bytes());
    server_frame(0x8, &payload)
}

/// Connects a peer and completes the opening handshake.
fn open<H: Handler>(sim: &mut Sim<H>) -> SimPeer {
    let peer = sim.connect();
    sim.send(&peer, UPGRADE);
    assert_eq!(sim.take(&peer), SWITCHING);
    peer
}

fn heartbeat_config() -> Config {
    Config {
        ping_interval: Some(20 * SECOND),
        ping_timeout: 10 * SECOND,
        ..Config::default()
    }
}

#[test]
fn heartbeat_pings_each_interval_while_the_peer_answers() {
    let mut sim = Sim::new(heartbeat_config(), Echo);
    let peer = open(&mut sim);
    let ping = server_frame(0x9, b"wsloop-heartbeat");
    for round in 0..30 {
        sim.advance(20 * SECOND - Duration::from_millis(1));
        assert!(
            sim.take(&peer).is_empty(),
            "round {round}: no ping before the interval"
        );
        sim.advance(Duration::from_millis(1));
        assert_eq!(sim.take(&peer), ping, "round {round}");
        sim.send(&peer, &client_frame(0xA, b"wsloop-heartbeat"));
    }
    // Ten minutes of heartbeats; the peer is still served.
    sim.send(&peer, &client_frame(0x1, b"alive"));
    assert_eq!(sim.take(&peer), server_frame(0x1, b"alive"));
    assert_eq!(sim.server().stats().heartbeat_timeouts, 0);
}

#[test]
fn heartbeat_drops_a_peer_that_does_not_answer_and_counts_it() {
    let mut sim = Sim::new(heartbeat_config(), Echo);
    let silent = open(&mut sim);
    let answering = open(&mut sim);
    sim.advance(20 * SECOND);
    assert_eq!(sim.take(&silent), server_frame(0x9, b"wsloop-heartbeat"));
    assert_eq!(sim.take(&answering), server_frame(0x9, b"wsloop-heartbeat"));
    sim.send(&answering, &client_frame(0xA, b""));
    sim.advance(10 * SECOND - Duration::from_millis(1));
    assert!(sim.is_connected(&silent), "the pong is not due yet");
    sim.advance(Duration::from_millis(1));
    // Dead: dropped without a close frame (it would not be read), counted, freed.
    assert!(!sim.is_connected(&silent));
    assert!(sim.take(&silent).is_empty());
    assert!(sim.is_connected(&answering));
    let stats = sim.server().stats();
    assert_eq!(stats.heartbeat_timeouts, 1);
    assert_eq!(stats.open, 1);
    assert_eq!(stats.closes.get(&1006), Some(&1));
}

#[test]
fn a_peer_that_never_answers_our_close_is_dropped_after_the_close_timeout() {
    let config = Config {
        close_timeout: 5 * SECOND,
        ..Config::default()
    };
    let mut sim = Sim::new(config, CloseOnMessage::default());
    let peer = open(&mut sim);
    sim.send(&peer, &client_frame(0x1, b"close me"));
    assert_eq!(sim.take(&peer), close_frame(4000, "asked to"));
    sim.advance(5 * SECOND - Duration::from_millis(1));
    assert!(sim.is_connected(&peer));
    assert!(
        !sim.is_closed_by_server(&peer),
        "TCP stays open for the reply"
    );
    sim.advance(Duration::from_millis(1));
    assert!(!sim.is_connected(&peer));
    assert_eq!(sim.server().handler().closed, vec![CloseReason::Abnormal]);
}

#[test]
fn a_close_reply_in_time_completes_the_handshake_and_the_server_closes_tcp_first() {
    let mut sim = Sim::new(Config::default(), CloseOnMessage::default());
    let peer = open(&mut sim);
    sim.send(&peer, &client_frame(0x1, b"close me"));
    assert_eq!(sim.take(&peer), close_frame(4000, "asked to"));
    sim.send(&peer, &client_frame(0x8, &4000u16.to_be_bytes()));
    // §7.1.1: the server closes TCP first; it lingers for the peer's FIN.
    assert!(sim.is_closed_by_server(&peer));
    assert!(sim.is_connected(&peer));
    sim.hang_up(&peer);
    assert!(!sim.is_connected(&peer));
    let handler = sim.server().handler();
    assert_eq!(handler.closed, vec![CloseReason::Handshake(Some(4000))]);
}

#[test]
fn idle_timeout_closes_a_silent_peer_with_1001_and_input_postpones_it() {
    let config = Config {
        idle_timeout: Some(30 * SECOND),
        close_timeout: 5 * SECOND,
        ..Config::default()
    };
    let mut sim = Sim::new(config, Echo);
    let peer = open(&mut sim);
    sim.advance(25 * SECOND);
    sim.send(&peer, &client_frame(0x1, b"still here"));
    assert_eq!(sim.take(&peer), server_frame(0x1, b"still here"));
    sim.advance(30 * SECOND - Duration::from_millis(1));
    assert!(
        sim.take(&peer).is_empty(),
        "30 s counted from the last input"
    );
    sim.advance(Duration::from_millis(1));
    assert_eq!(sim.take(&peer), close_frame(1001, "idle timeout"));
    assert_eq!(sim.server().stats().idle_timeouts, 1);
    // A peer that does not answer that close either is dropped after the close timeout.
    sim.advance(5 * SECOND);
    assert!(!sim.is_connected(&peer));
}

#[test]
fn a_ping_flood_is_answered_up_to_the_rate_then_failed_with_1008() {
    let config = Config {
        max_pings_per_second: 5,
        ..Config::default()
    };
    let mut sim = Sim::new(config, Echo);
    let peer = open(&mut sim);
    let bystander = open(&mut sim);
    // Five a second, for ten seconds: each answered.
    for second in 0..10 {
        for i in 0..5 {
            sim.send(&peer, &client_frame(0x9, &[i]));
            assert_eq!(sim.take(&peer), server_frame(0xA, &[i]), "second {second}");
        }
        sim.advance(SECOND);
    }
    // Six within one second: the sixth fails the connection.
    let six: Vec<u8> = (0..6).flat_map(|i| client_frame(0x9, &[i])).collect();
    sim.send(&peer, &six);
    let mut want: Vec<u8> = (0..5).flat_map(|i| server_frame(0xA, &[i])).collect();
    want.extend(close_frame(1008, "ping rate exceeded"));
    assert_eq!(sim.take(&peer), want, "five pongs in the rate, then 1008");
    assert!(sim.is_closed_by_server(&peer));
    let stats = sim.server().stats();
    assert_eq!((stats.ping_floods, stats.protocol_errors), (1, 0));
    // Everyone else is served.
    sim.send(&bystander, &client_frame(0x1, b"ok"));
    assert_eq!(sim.take(&bystander), server_frame(0x1, b"ok"));
}

#[test]
fn a_slow_consumer_of_broadcasts_is_failed_with_1008_and_the_others_get_everything() {
    let config = Config {
        max_backpressure: 64 * 1024,
        ..Config::default()
    };
    let mut sim = Sim::new(config, Broadcast::default());
    let publisher = open(&mut sim);
    let reader = open(&mut sim);
    let slow = open(&mut sim);
    // The slow peer's socket takes 4 KiB and it never reads.
    sim.set_window(&slow, 4096);
    let message = [b'x'; 100];
    let frame = server_frame(0x2, &message);
    let mut received = 0;
    let mut slow_closed_after = None;
    for i in 0..2000 {
        sim.send(&publisher, &client_frame(0x2, &message));
        let got = sim.take(&reader);
        assert_eq!(got, frame, "message {i}");
        received += 1;
        sim.take(&publisher);
        if slow_closed_after.is_none() && sim.is_closed_by_server(&slow) {
            slow_closed_after = Some(i);
        }
        if sim.server().stats().slow_consumers > 0 && slow_closed_after.is_none() {
            slow_closed_after = Some(i);
        }
    }
    assert_eq!(received, 2000);
    let after = slow_closed_after.expect("the slow consumer was failed");
    // Failed once its queue passed 64 KiB: about 690 frames of 102 bytes, not before.
    assert!((600..800).contains(&after), "failed after {after} messages");
    assert_eq!(sim.server().stats().slow_consumers, 1);
    // What it finally reads: the frames its window held, then (queue cut) the close.
    sim.set_window(&slow, usize::MAX);
    let bytes = sim.take(&slow);
    let bytes = [bytes, sim.take(&slow)].concat();
    let close = close_frame(1008, Policy::SlowConsumer.wire_reason());
    assert!(bytes.ends_with(&close), "ends with the 1008 close");
    let frames_before = (bytes.len() - close.len()) / frame.len();
    assert!(
        frames_before <= 4096 / frame.len() + 1,
        "{frames_before} frames"
    );
    assert!(
        !sim.is_watching_writable(&reader),
        "writable interest only while queued"
    );
}

#[test]
fn slow_consumers_found_by_several_broadcasts_of_one_callback_are_failed_and_counted_once() {
    let config = Config {
        max_backpressure: 16 * 1024,
        ..Config::default()
    };
    let mut sim = Sim::new(
        config,
        Broadcast {
            repeat: 8,
            ..Broadcast::default()
        },
    );
    let publisher = open(&mut sim);
    let stalled = [open(&mut sim), open(&mut sim)];
    for peer in &stalled {
        sim.set_window(peer, 0);
    }
    // Each message is broadcast 8 times by one callback: once both are over the cap, every
    // later broadcast of the same callback finds both slow again.
    for _ in 0..50 {
        sim.send(&publisher, &client_frame(0x2, &[1; 100]));
    }
    let stats = sim.server().stats();
    assert_eq!(stats.slow_consumers, 2);
    assert_eq!(stats.closes.get(&1008), Some(&2));
    // They take nothing, not even the close: dropped when the linger ends.
    sim.advance(Config::default().close_timeout);
    assert!(stalled.iter().all(|p| !sim.is_connected(p)));
    assert!(sim.is_connected(&publisher));
}

#[test]
fn a_reader_whose_replies_pile_up_is_paused_not_failed() {
    let config = Config {
        max_backpressure: 16 * 1024,
        ..Config::default()
    };
    let mut sim = Sim::new(config, Echo);
    let peer = open(&mut sim);
    sim.set_window(&peer, 1024);
    let burst: Vec<u8> = (0..500)
        .flat_map(|_| client_frame(0x2, &[7; 100]))
        .collect();
    sim.send(&peer, &burst);
    assert!(sim.is_watching_writable(&peer));
    // It asked for these replies: reading pauses, nothing is dropped, no close.
    sim.set_window(&peer, usize::MAX);
    let mut echoed = Vec::new();
    for _ in 0..100 {
        let got = sim.take(&peer);
        if got.is_empty() {
            break;
        }
        echoed.extend(got);
    }
    assert_eq!(echoed, server_frame(0x2, &[7; 100]).repeat(500));
    assert_eq!(sim.server().stats().slow_consumers, 0);
}

#[test]
fn shutdown_sends_1001_to_every_client_and_drains() {
    let config = Config {
        close_timeout: 5 * SECOND,
        ..Config::default()
    };
    let mut sim = Sim::new(config, Echo);
    let polite = open(&mut sim);
    let deaf = open(&mut sim);
    let handshaking = sim.connect();
    sim.shutdown();
    let going_away = close_frame(1001, "server shutting down");
    assert_eq!(sim.take(&polite), going_away);
    assert_eq!(sim.take(&deaf), going_away);
    assert!(
        !sim.is_connected(&handshaking),
        "a head not yet sent is dropped"
    );
    sim.send(&polite, &client_frame(0x8, &1001u16.to_be_bytes()));
    sim.hang_up(&polite);
    assert!(!sim.is_connected(&polite));
    assert_eq!(sim.connections(), 1);
    sim.advance(5 * SECOND);
    assert_eq!(
        sim.connections(),
        0,
        "the deaf one is dropped at the close timeout"
    );
    // The 1001 is the one code for a shutdown: it comes from the policy table.
    assert_eq!(Policy::Shutdown.code(), 1001);
}

#[test]
fn the_handshake_deadline_drops_a_head_that_never_completes() {
    let config = Config {
        handshake_timeout: 10 * SECOND,
        ..Config::default()
    };
    let mut sim = Sim::new(config, Echo);
    let slowloris = sim.connect();
    for _ in 0..9 {
        sim.send(&slowloris, b"X-Slow: 1\r\n");
        sim.advance(SECOND);
    }
    assert!(sim.is_connected(&slowloris));
    sim.advance(SECOND);
    assert!(!sim.is_connected(&slowloris));
    let rejected = sim.server().stats().rejections.values().sum::<u64>();
    assert_eq!(rejected, 1);
}

#[test]
fn a_pause_of_the_server_is_not_counted_as_the_clients_silence() {
    let config = Config {
        idle_timeout: Some(30 * SECOND),
        ..Config::default()
    };
    let mut sim = Sim::new(config, Echo);
    let silent = open(&mut sim);
    let talking = open(&mut sim);
    sim.advance(20 * SECOND);
    // The server is stopped for 15 s; one client sends during it, the other does not.
    sim.send_later(&talking, &client_frame(0x1, b"while you were away"));
    sim.pause(15 * SECOND);
    assert_eq!(
        sim.take(&talking),
        server_frame(0x1, b"while you were away")
    );
    // Silent for 30 s of the server's time: 20 before the pause, 10 after it.
    sim.advance(10 * SECOND - Duration::from_millis(1));
    assert!(
        sim.take(&silent).is_empty(),
        "the pause is not the client's silence"
    );
    sim.advance(Duration::from_millis(1));
    assert_eq!(sim.take(&silent), close_frame(1001, "idle timeout"));
    assert!(sim.take(&talking).is_empty());
    assert_eq!(sim.server().stats().pauses, 1);
}

#[test]
fn a_pong_sent_while_the_server_was_paused_answers_the_heartbeat() {
    let mut sim = Sim::new(heartbeat_config(), Echo);
    let peer = open(&mut sim);
    sim.advance(20 * SECOND);
    assert_eq!(sim.take(&peer), server_frame(0x9, b"wsloop-heartbeat"));
    // Paused past the pong's deadline; the pong was sent in time and waits in the socket.
    sim.send_later(&peer, &client_frame(0xA, b"wsloop-heartbeat"));
    sim.pause(30 * SECOND);
    assert!(sim.is_connected(&peer));
    assert_eq!(sim.server().stats().heartbeat_timeouts, 0);
}

/// A loop that cannot keep up (a starved core, a storm of new connections) may not have read
/// a pong that came in time when the pong's deadline passes: it reads the socket before it
/// judges the peer dead. So does the idle check.
#[test]
fn a_pong_that_came_in_time_but_was_not_read_yet_answers_the_heartbeat() {
    let mut sim = Sim::new(heartbeat_config(), Echo);
    let peer = open(&mut sim);
    let silent = open(&mut sim);
    sim.advance(20 * SECOND);
    assert_eq!(sim.take(&peer), server_frame(0x9, b"wsloop-heartbeat"));
    // In the socket, no readiness event handled yet; the loop is not paused, only behind.
    sim.send_later(&peer, &client_frame(0xA, b"wsloop-heartbeat"));
    sim.advance(10 * SECOND);
    assert!(sim.is_connected(&peer));
    assert!(
        !sim.is_connected(&silent),
        "the one that did not answer is dead"
    );
    assert_eq!(sim.server().stats().heartbeat_timeouts, 1);
    // The heartbeat goes on for the one that answered.
    sim.advance(20 * SECOND);
    assert_eq!(sim.take(&peer), server_frame(0x9, b"wsloop-heartbeat"));

    let config = Config {
        idle_timeout: Some(30 * SECOND),
        ..Config::default()
    };
    let mut sim = Sim::new(config, Echo);
    let peer = open(&mut sim);
    sim.advance(29 * SECOND);
    sim.send_later(&peer, &client_frame(0x1, b"unread"));
    sim.advance(SECOND);
    assert_eq!(sim.take(&peer), server_frame(0x1, b"unread"));
    assert_eq!(sim.server().stats().idle_timeouts, 0);
}

/// A client closing while a ping is out: its close frame, unread when the pong's deadline
/// passes, starts the closing handshake. The reply goes out before TCP is closed; the client
/// is not counted dead. (At a million connections a close storm found this: the read before
/// judging moved the connection to closing, and the judgement then dropped it unanswered.)
#[test]
fn a_close_that_came_before_the_pong_deadline_gets_its_reply() {
    let mut sim = Sim::new(heartbeat_config(), Echo);
    let peer = open(&mut sim);
    sim.advance(20 * SECOND);
    assert_eq!(sim.take(&peer), server_frame(0x9, b"wsloop-heartbeat"));
    sim.send_later(&peer, &client_frame(0x8, &1000u16.to_be_bytes()));
    sim.advance(10 * SECOND);
    assert_eq!(sim.take(&peer), close_frame(1000, ""));
    assert!(sim.is_closed_by_server(&peer), "TCP closed after the reply");
    let stats = sim.server().stats();
    assert_eq!(stats.heartbeat_timeouts, 0);
    assert_eq!(stats.closes.get(&1000), Some(&1));
    assert_eq!(stats.closes.get(&1006), None);
}

/// The same for a request head that came before the handshake deadline but was not read yet:
/// it is served, not timed out; one still incomplete at the deadline is dropped.
#[test]
fn a_head_that_came_in_time_but_was_not_read_yet_is_served_at_the_deadline() {
    let config = Config::default();
    let deadline = config.handshake_timeout;
    let mut sim = Sim::new(config, Echo);
    let complete = sim.connect();
    let partial = sim.connect();
    sim.send_later(&complete, UPGRADE);
    sim.send_later(&partial, &UPGRADE[..UPGRADE.len() - 2]);
    sim.advance(deadline);
    assert_eq!(sim.take(&complete), SWITCHING);
    assert!(sim.is_connected(&complete));
    assert!(!sim.is_connected(&partial));
}

#[test]
fn chats_sent_at_the_rate_during_a_server_pause_are_not_refused() {
    let serve = ServeConfig {
        chat: ChatLimits {
            max_messages_per_second: 50.0,
            ..ChatLimits::default()
        },
        ..ServeConfig::default()
    };
    let mut sim = Sim::new(Config::default(), Serve::new(serve));
    let peer = sim.connect();
    sim.send(&peer, UPGRADE);
    assert!(
        sim.take(&peer).starts_with(SWITCHING),
        "upgraded and welcomed"
    );
    // 40 a second, under the 50 allowed, for the 8 s the server is stopped: 320 arrive at
    // once, far past the burst of 100.
    for i in 0..320 {
        let chat = format!(r#"{{"type":"chat","content":"{i}"}}"#);
        sim.send_later(&peer, &client_frame(0x1, chat.as_bytes()));
    }
    sim.pause(8 * SECOND);
    let received = String::from_utf8_lossy(&sim.take(&peer)).into_owned();
    assert_eq!(received.matches(r#""type":"chat""#).count(), 320);
    assert!(
        !received.contains("rate_limited"),
        "charged for the server's pause"
    );
}

/// Closes the connection of any message with 4000 "asked to", and remembers how each ended.
#[derive(Default)]
struct CloseOnMessage {
    closed: Vec<CloseReason>,
}

impl Handler for CloseOnMessage {
    fn on_message(&mut self, ctx: &mut Ctx<'_>, id: ConnId, _message: Message<'_>) {
        ctx.close(id, 4000, "asked to");
    }

    fn on_close(&mut self, _ctx: &mut Ctx<'_>, _id: ConnId, reason: CloseReason) {
        self.closed.push(reason);
    }
}

/// Sends every message to every other open connection (`repeat` times, at least once).
#[derive(Default)]
struct Broadcast {
    members: Vec<ConnId>,
    repeat: usize,
}

impl Handler for Broadcast {
    fn on_open(&mut self, _ctx: &mut Ctx<'_>, id: ConnId, _info: &OpenInfo<'_>) {
        self.members.push(id);
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_>, id: ConnId, message: Message<'_>) {
        for _ in 0..self.repeat.max(1) {
            let others = self.members.iter().copied().filter(|m| *m != id);
            ctx.broadcast(others, message.kind, message.data);
        }
    }

    fn on_close(&mut self, _ctx: &mut Ctx<'_>, id: ConnId, _reason: CloseReason) {
        self.members.retain(|m| *m != id);
    }
}

#[test]
fn broadcast_reaches_every_client_with_one_write_per_turn() {
    // `wsloop broadcast`'s application, not this file's `Broadcast` test handler.
    let app = wsloop::app::broadcast::Broadcast::default();
    let mut sim = Sim::new(Config::default(), app);
    let peers: Vec<SimPeer> = (0..3).map(|_| open(&mut sim)).collect();
    let before: Vec<u64> = peers.iter().map(|p| sim.writes(p)).collect();
    // Three messages from the first client in one read: every client, the sender included,
    // gets all three as they came, in order...
    let mut burst = client_frame(0x1, b"one");
    burst.extend(client_frame(0x2, &[0, 1, 2]));
    burst.extend(client_frame(0x1, b"three"));
    sim.send(&peers[0], &burst);
    let mut want = server_frame(0x1, b"one");
    want.extend(server_frame(0x2, &[0, 1, 2]));
    want.extend(server_frame(0x1, b"three"));
    for (i, peer) in peers.iter().enumerate() {
        assert_eq!(sim.take(peer), want, "client {i}");
        // ...in one vectored write: the frames of one turn go out together.
        assert_eq!(sim.writes(peer) - before[i], 1, "client {i}: writes");
    }
    // A client that leaves is sent nothing more; the others still hear each other.
    sim.send(&peers[1], &client_frame(0x8, &1000u16.to_be_bytes()));
    assert_eq!(sim.take(&peers[1]), close_frame(1000, ""));
    sim.send(&peers[2], &client_frame(0x2, b"after"));
    for i in [0, 2] {
        assert_eq!(
            sim.take(&peers[i]),
            server_frame(0x2, b"after"),
            "client {i}"
        );
    }
    assert!(sim.take(&peers[1]).is_empty());
}

#[test]
fn broadcast_frames_a_socket_did_not_take_outlive_their_turn() {
    let app = wsloop::app::broadcast::Broadcast::default();
    let mut sim = Sim::new(Config::default(), app);
    let peers: Vec<SimPeer> = (0..3).map(|_| open(&mut sim)).collect();
    // The second client reads 4 bytes, then nothing until the end.
    sim.set_window(&peers[1], 4);
    let mut burst = client_frame(0x1, b"first");
    burst.extend(client_frame(0x2, b"second"));
    sim.send(&peers[0], &burst);
    let mut turn1 = server_frame(0x1, b"first");
    turn1.extend(server_frame(0x2, b"second"));
    for i in [0, 2] {
        assert_eq!(sim.take(&peers[i]), turn1, "client {i}");
    }
    // Later turns encode other frames (into a new turn buffer, or the old one reused)...
    for text in ["third", "fourth, longer than the first two together"] {
        sim.send(&peers[2], &client_frame(0x1, text.as_bytes()));
        for i in [0, 2] {
            assert_eq!(
                sim.take(&peers[i]),
                server_frame(0x1, text.as_bytes()),
                "client {i}"
            );
        }
    }
    // ...while the slow reader still gets exactly what it was sent.
    sim.set_window(&peers[1], 1 << 20);
    let mut got = Vec::new();
    for _ in 0..10 {
        got.extend(sim.take(&peers[1]));
    }
    let mut want = turn1;
    want.extend(server_frame(0x1, b"third"));
    want.extend(server_frame(
        0x1,
        b"fourth, longer than the first two together",
    ));
    assert_eq!(got, want);
}
