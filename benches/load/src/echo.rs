//! `wsloop-bench echo`: N connections each keeping K messages in flight against an echo
//! server. Each echo is compared byte for byte with what was sent: the payload is a
//! per-thread template (for JSON-like text, one of 64 taken in turn by sequence number) whose
//! first 16 bytes are overwritten with the connection's id and the message's sequence number
//! (in hex), so a lost, repeated, reordered or crossed echo is a mismatch, and checking costs
//! two comparisons.
//!
//! With `--rate R` a connection sends R messages per second instead of a new one per echo
//! (latency under a steady load rather than the throughput shape): the connections of a
//! thread take turns, evenly spaced, so that N of them make a steady N×R messages per second.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::driver::{Action, Event, Handler, Outbox};
use super::opener::Opener;
use super::report::{Report, Tally};
use super::run::{self, Scenario, Window};
use super::{share, text, EchoArgs};
use crate::driver::Driver;
use wsloop::proto::mask::MaskKeys;
use wsloop::proto::{Message, MessageKind};

/// Bytes of the id-and-sequence stamp at the start of each payload (16 hex digits).
const STAMP: usize = 16;
/// Bits of the stamp that hold the sequence number; the connection id sits above them.
const SEQ_BITS: u32 = 40;

/// JSON-like payloads come in this many variants, taken in turn, so that a compressor with
/// context takeover cannot simply refer back to the same message sent just before.
const JSON_VARIANTS: u64 = 64;

/// The payloads of one run: templates of one size, one per sequence number in turn,
/// stamped per message.
#[derive(Clone, Debug)]
struct Payload {
    kind: MessageKind,
    templates: Vec<Vec<u8>>,
}

impl Payload {
    /// Text payloads are printable ASCII (a repeating pattern, or JSON-like text in
    /// [`JSON_VARIANTS`] variants with `json`); binary ones cover every byte value (and so
    /// are not valid UTF-8).
    fn new(size: usize, binary: bool, json: bool) -> Self {
        let (kind, templates) = if binary {
            let mut keys = MaskKeys::from(0x5eed);
            let bytes = std::iter::repeat_with(|| keys.next_key()).flatten();
            (MessageKind::Binary, vec![bytes.take(size).collect()])
        } else if json {
            let variants = (0..JSON_VARIANTS).map(|v| text::json_like(size, v).into_bytes());
            (MessageKind::Text, variants.collect())
        } else {
            let text = (0..size).map(|i| b' ' + ((i * 7 + 3) % 95) as u8);
            (MessageKind::Text, vec![text.collect()])
        };
        Payload { kind, templates }
    }

    /// The template of message `seq`.
    fn template(&self, seq: u64) -> &[u8] {
        &self.templates[(seq % self.templates.len() as u64) as usize]
    }

    /// Bytes per message.
    fn len(&self) -> usize {
        self.templates[0].len()
    }

    /// The stamp: connection id and sequence number as 16 hex digits.
    fn stamp(id: u64, seq: u64) -> [u8; STAMP] {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let value = (id << SEQ_BITS) ^ seq;
        let mut out = [0u8; STAMP];
        for (i, digit) in out.iter_mut().enumerate() {
            *digit = HEX[((value >> (4 * (STAMP - 1 - i))) & 0xF) as usize];
        }
        out
    }

    /// How much of the stamp fits (its low digits, for payloads shorter than 16 bytes).
    fn stamped(&self) -> usize {
        self.len().min(STAMP)
    }

    fn write(&self, dst: &mut [u8], id: u64, seq: u64) {
        let n = self.stamped();
        dst.copy_from_slice(self.template(seq));
        dst[..n].copy_from_slice(&Self::stamp(id, seq)[STAMP - n..]);
    }

    fn matches(&self, message: &Message<'_>, id: u64, seq: u64) -> bool {
        let n = self.stamped();
        message.kind == self.kind
            && message.data.len() == self.len()
            && message.data[..n] == Self::stamp(id, seq)[STAMP - n..]
            && message.data[n..] == self.template(seq)[n..]
    }
}

/// The most a paced run catches up after the client fell behind (a stalled thread does not
/// fire its missed sends in one burst).
const MAX_CATCH_UP: Duration = Duration::from_secs(1);

/// With --rate: whose turn it is to send. The connections of a thread take turns in order,
/// one every `spacing`, so each sends at the rate and together they make a steady load.
#[derive(Debug)]
struct Pacer {
    spacing: Duration,
    next: Instant,
    turn: usize,
    count: usize,
}

impl Pacer {
    /// `count` connections at `rate` messages per second each, the first due at `start`.
    fn new(rate: f64, count: usize, start: Instant) -> Option<Self> {
        (rate > 0.0 && count > 0).then(|| Pacer {
            spacing: Duration::from_secs_f64(1.0 / (rate * count as f64)),
            next: start,
            turn: 0,
            count,
        })
    }

    /// The connection (its index) whose send is due at `now`, if one is; moves to the next.
    fn due(&mut self, now: Instant) -> Option<usize> {
        if self.next > now {
            return None;
        }
        self.next = self.next.max(now.checked_sub(MAX_CATCH_UP).unwrap_or(now));
        let turn = self.turn;
        self.turn = (self.turn + 1) % self.count;
        self.next += self.spacing;
        Some(turn)
    }
}

/// One connection: what it sent and what came back.
#[derive(Debug)]
pub struct EchoConn {
    id: u64,
    sent: u64,
    received: u64,
    /// Send times of the messages in flight, oldest first (echoes come back in order).
    in_flight: VecDeque<Instant>,
}

/// One thread's connections and tallies.
#[derive(Debug)]
pub struct EchoThread {
    payload: Payload,
    per_connection: usize,
    /// Messages per second per connection (0: a new one per echo).
    rate: f64,
    /// With a rate, from the window's start.
    pacer: Option<Pacer>,
    opener: Opener<EchoConn>,
    window: Option<Window>,
    sending: bool,
    /// Sent and not echoed yet, over all connections.
    outstanding: u64,
    /// Echoes that arrived in the window.
    messages: u64,
    /// All echoes checked (warm-up and drain included).
    checked: u64,
    mismatches: u64,
    /// In flight on a connection that ended.
    lost: u64,
    /// Paced sends not made because the connection had --in-flight echoes outstanding.
    skipped: u64,
    tally: Tally,
}

impl EchoThread {
    fn send(&mut self, conn: &mut EchoConn, out: &mut Outbox, now: Instant) {
        let (id, seq) = (conn.id, conn.sent);
        let payload = &self.payload;
        out.send_with(payload.kind, payload.len(), |dst| {
            payload.write(dst, id, seq);
        });
        conn.sent += 1;
        conn.in_flight.push_back(now);
        self.outstanding += 1;
    }

    fn on_echo(
        &mut self,
        conn: &mut EchoConn,
        message: Message<'_>,
        out: &mut Outbox,
        now: Instant,
    ) {
        let Some(sent_at) = conn.in_flight.pop_front() else {
            self.mismatches += 1;
            return;
        };
        self.outstanding -= 1;
        self.checked += 1;
        if !self.payload.matches(&message, conn.id, conn.received) {
            self.mismatches += 1;
        }
        conn.received += 1;
        if self.window.is_some_and(|w| w.measures(now)) {
            self.messages += 1;
            self.tally.latency.record(now - sent_at);
        }
        if self.sending && self.rate == 0.0 {
            self.send(conn, out, now);
        }
    }
}

impl Handler for EchoThread {
    type Conn = EchoConn;

    fn on_event(
        &mut self,
        conn: &mut EchoConn,
        event: Event<'_>,
        out: &mut Outbox,
        now: Instant,
    ) -> Action {
        match event {
            Event::Opened => self.opener.ready(),
            Event::Message(message) => self.on_echo(conn, message, out, now),
            Event::Ended(end) => {
                if let Some(e) = end.error() {
                    self.tally.errors.add(e);
                }
                let lost = conn.in_flight.len() as u64;
                self.lost += lost;
                self.outstanding -= lost;
            }
        }
        Action::Keep
    }
}

impl Scenario for EchoThread {
    fn setup(&mut self, driver: &mut Driver<EchoConn>, now: Instant) -> Result<bool, String> {
        self.opener.pump(driver, now, &self.tally.errors)
    }

    fn start(&mut self, driver: &mut Driver<EchoConn>, window: Window, now: Instant) {
        self.window = Some(window);
        self.sending = true;
        self.pacer = Pacer::new(self.rate, self.opener.keys().len(), now);
        if self.pacer.is_some() {
            self.tick(driver, now);
            return;
        }
        driver.visit_all(self, now, |s, conn, out| {
            for _ in 0..s.per_connection {
                s.send(conn, out, now);
            }
            Action::Keep
        });
    }

    fn tick(&mut self, driver: &mut Driver<EchoConn>, now: Instant) -> Option<Instant> {
        while let Some(turn) = self.pacer.as_mut().and_then(|p| p.due(now)) {
            let key = self.opener.keys()[turn];
            driver.visit(key, self, now, |s, conn, out| {
                if conn.in_flight.len() < s.per_connection {
                    s.send(conn, out, now);
                } else {
                    s.skipped += 1;
                }
                Action::Keep
            });
        }
        self.pacer.as_ref().map(|p| p.next)
    }

    fn stop(&mut self, _driver: &mut Driver<EchoConn>, _now: Instant) {
        self.sending = false;
    }

    fn drained(&self, _driver: &Driver<EchoConn>) -> bool {
        self.outstanding == 0
    }
}

/// Runs the echo scenario.
pub fn run(args: &EchoArgs) -> Result<Report, String> {
    if args.in_flight == 0 {
        return Err("--in-flight must be at least 1".into());
    }
    if !(args.rate >= 0.0 && args.rate.is_finite()) {
        return Err("--rate must be a number of messages per second, 0 for no limit".into());
    }
    let mut plan = args.common.plan(args.connections)?;
    plan.max_message = plan.max_message.max(args.size as u64);
    let payload = Payload::new(args.size, args.binary, args.json_text);
    let threads = plan.threads;
    let outcome = run::run(&plan, |t| {
        let conns = share(args.connections, threads, t).map(|id| {
            let conn = EchoConn {
                id: id as u64,
                sent: 0,
                received: 0,
                in_flight: VecDeque::with_capacity(args.in_flight),
            };
            (id, conn)
        });
        EchoThread {
            payload: payload.clone(),
            per_connection: args.in_flight,
            rate: args.rate,
            pacer: None,
            opener: Opener::new(conns, args.common.concurrency),
            window: None,
            sending: false,
            outstanding: 0,
            messages: 0,
            checked: 0,
            mismatches: 0,
            lost: 0,
            skipped: 0,
            tally: Tally::default(),
        }
    })?;

    let tally = Tally::sum(outcome.threads.iter().map(|t| &t.tally));
    let messages = outcome.sum(|t| t.messages);
    let kind = match (args.binary, args.json_text) {
        (true, _) => "binary",
        (false, true) => "JSON-like text",
        (false, false) => "text",
    };
    let pace = if args.rate > 0.0 {
        format!(" at most, {} msg/s each", args.rate)
    } else {
        String::new()
    };
    let what = format!(
        "{} connections x {} in flight{pace}, {}-byte {kind}",
        args.connections, args.in_flight, args.size
    );
    let mut report = args.common.report(&plan, "echo", &what);
    report.set("connections", args.connections);
    report.set("in_flight", args.in_flight);
    report.set("rate", args.rate);
    report.set("size", args.size);
    report.set("kind", kind);
    let seconds = outcome.window.seconds();
    report.count("messages", "messages", messages, seconds);
    report.latency("latency", "round trip", &tally.latency);
    report.cpu(outcome.server.as_ref(), &outcome.client, "msg", messages);
    report.wire(outcome.wire, "msg", messages);
    report.figure("checked", "echoes checked", outcome.sum(|t| t.checked));
    report.problems("mismatches", "mismatches", outcome.sum(|t| t.mismatches));
    report.problems("lost", "lost in flight", outcome.sum(|t| t.lost));
    // Not a failure: the server answered more slowly than the rate asked for; the
    // latency percentiles show by how much.
    report.figure(
        "skipped",
        "paced sends skipped (echoes outstanding)",
        outcome.sum(|t| t.skipped),
    );
    report.errors(&tally.errors);
    report.require(messages > 0, "no message came back in the window");
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_identify_connection_and_sequence() {
        assert_eq!(&Payload::stamp(0, 0x1f), b"000000000000001f");
        assert_eq!(&Payload::stamp(3, 1), b"0000030000000001");
        for binary in [false, true] {
            let p = Payload::new(40, binary, false);
            let mut buf = vec![0; 40];
            p.write(&mut buf, 7, 9);
            let message = Message {
                kind: p.kind,
                data: &buf,
            };
            assert!(p.matches(&message, 7, 9));
            assert!(!p.matches(&message, 7, 10));
            assert!(!p.matches(&message, 8, 9));
            buf[39] ^= 1;
            let message = Message {
                kind: p.kind,
                data: &buf,
            };
            assert!(!p.matches(&message, 7, 9));
        }
        assert!(std::str::from_utf8(Payload::new(1000, false, false).template(0)).is_ok());
        assert!(std::str::from_utf8(Payload::new(1000, true, false).template(0)).is_err());
        // JSON-like text in variants taken in turn, each checked against its own.
        let json = Payload::new(1000, false, true);
        assert!(std::str::from_utf8(json.template(3)).is_ok());
        assert_ne!(json.template(3), json.template(4));
        assert_eq!(json.template(3), json.template(3 + JSON_VARIANTS));
        let mut buf = vec![0; 1000];
        json.write(&mut buf, 1, 4);
        let message = Message {
            kind: MessageKind::Text,
            data: &buf,
        };
        assert!(json.matches(&message, 1, 4));
    }

    #[test]
    fn paced_connections_take_evenly_spaced_turns() {
        let start = Instant::now();
        let mut pacer = Pacer::new(10.0, 4, start).unwrap();
        // 4 connections at 10/s: one send every 25 ms, in turn.
        assert_eq!(pacer.due(start), Some(0));
        assert_eq!(pacer.due(start), None);
        let ms = Duration::from_millis;
        assert_eq!(pacer.due(start + ms(24)), None);
        assert_eq!(pacer.due(start + ms(25)), Some(1));
        assert_eq!(pacer.due(start + ms(75)), Some(2));
        // Late: the turns due at 50 and 75 ms both go, then the next waits for 100 ms.
        assert_eq!(pacer.due(start + ms(75)), Some(3));
        assert_eq!(pacer.due(start + ms(75)), None);
        assert_eq!(pacer.due(start + ms(100)), Some(0));
        // Far behind: at most a second is caught up.
        let late = start + Duration::from_secs(10);
        let caught_up = std::iter::from_fn(|| pacer.due(late)).count();
        assert_eq!(caught_up, 41);
        assert!(Pacer::new(0.0, 4, start).is_none());
    }

    #[test]
    fn short_payloads_keep_the_low_digits() {
        let p = Payload::new(3, false, false);
        let mut buf = [0u8; 3];
        p.write(&mut buf, 1, 0xabc);
        assert_eq!(&buf, b"abc");
        let empty = Payload::new(0, true, false);
        let message = Message {
            kind: MessageKind::Binary,
            data: &[],
        };
        assert!(empty.matches(&message, 0, 5));
    }
}
