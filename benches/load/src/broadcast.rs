//! `wsloop-bench broadcast`: publishers and subscribers on `wsloop serve` speaking the chat
//! protocol of PROTOCOL.md.
//!
//! A publisher's `content` is `P:SEQ:MICROS:` padded with words (`text::push_words`, so that
//! it compresses as chat does): its index, a sequence number and the send time in
//! microseconds since the run's epoch (one clock for all threads).
//! Each subscriber checks that, per publisher, the sequence numbers arrive once each and in
//! order, and takes the publish-to-receive latency from MICROS. At the end every subscriber
//! must have had every message: what a publisher sent and a subscriber never saw is
//! "missing". Replies are read with a substring scan of the server's compact JSON, not a
//! full parse, so that the client keeps up with the fan-out.
//!
//! With `--protocol raw` the server is not `wsloop serve` but one that sends every text
//! message to every client, the sender included: messages are the bare content, connections
//! are ready once open, and a publisher's own message coming back is its acknowledgement.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::driver::{Action, Driver, End, Event, Handler, Outbox};
use super::opener::Opener;
use super::report::{Report, Tally};
use super::run::{self, Scenario, Window};
use super::{share, text, BroadcastArgs, Protocol, Via};
use wsloop::proto::{Message, MessageKind};

/// The most a publisher catches up after falling behind its rate.
const MAX_CATCH_UP: Duration = Duration::from_secs(1);

/// What the threads share: how far each publisher got, and how many have finished.
#[derive(Debug)]
struct Shared {
    /// Messages each publisher has sent.
    sent: Vec<AtomicU64>,
    /// Publishers with nothing in flight after the window (or whose connection ended).
    finished: AtomicUsize,
}

impl Shared {
    fn total_sent(&self) -> u64 {
        self.sent.iter().map(|s| s.load(Ordering::Relaxed)).sum()
    }
}

/// The fixed parts of the messages sent.
#[derive(Debug)]
struct Wire {
    via: Via,
    /// Plain text (`--protocol raw`) rather than the chat protocol.
    raw: bool,
    subscribe: String,
    /// Everything before the content's characters.
    publish_prefix: String,
    /// Everything after them.
    publish_suffix: &'static str,
    /// Bytes of content.
    size: usize,
}

impl Wire {
    fn new(args: &BroadcastArgs) -> Self {
        let channel = serde_json::Value::from(args.channel.as_str()).to_string();
        let raw = args.protocol == Protocol::Raw;
        let publish_prefix = match (raw, args.via) {
            (true, _) => String::new(),
            (false, Via::Publish) => {
                format!(r#"{{"type":"publish","channel":{channel},"content":""#)
            }
            (false, Via::Chat) => r#"{"type":"chat","content":""#.to_owned(),
        };
        Wire {
            via: args.via,
            raw,
            subscribe: format!(r#"{{"type":"subscribe","channel":{channel}}}"#),
            publish_prefix,
            publish_suffix: if raw { "" } else { "\"}" },
            size: args.size,
        }
    }
}

/// The string value of a field in compact JSON (`"key":"value"`, as serde_json writes it),
/// when it holds no escapes. `pattern` is `"key":"`.
fn string_field<'t>(text: &'t str, pattern: &str) -> Option<&'t str> {
    let start = text.find(pattern)? + pattern.len();
    let rest = &text[start..];
    let value = &rest[..rest.find('"')?];
    (!value.contains('\\')).then_some(value)
}

const TYPE: &str = r#""type":""#;
const CONTENT: &str = r#""content":""#;
const CODE: &str = r#""code":""#;

/// `P:SEQ:MICROS:...` from a content string.
fn parse_content(content: &str) -> Option<(usize, u64, u64)> {
    let mut parts = content.splitn(4, ':');
    let publisher = parts.next()?.parse().ok()?;
    let seq = parts.next()?.parse().ok()?;
    let micros = parts.next()?.parse().ok()?;
    Some((publisher, seq, micros))
}

/// A publishing connection.
#[derive(Debug)]
pub struct Publisher {
    index: usize,
    next_seq: u64,
    in_flight: usize,
    /// With --rate: when the next publish is due.
    next_at: Option<Instant>,
    finished: bool,
}

/// A receiving connection: the next sequence number expected from each publisher.
#[derive(Debug)]
pub struct Subscriber {
    expected: Vec<u64>,
    ready: bool,
}

/// A connection's role.
#[derive(Debug)]
pub enum Role {
    /// Sends.
    Publisher(Publisher),
    /// Receives.
    Subscriber(Subscriber),
}

/// One thread's connections and tallies.
#[derive(Debug)]
pub struct BroadcastThread<'a> {
    shared: &'a Shared,
    wire: &'a Wire,
    per_publisher: usize,
    interval: Option<Duration>,
    opener: Opener<Role>,
    local_publishers: usize,
    local_subscribers: u64,
    window: Option<Window>,
    sending: bool,
    text: String,
    /// Publishes acknowledged in the window.
    published: u64,
    /// Frames received by subscribers in the window.
    delivered: u64,
    /// Deliveries in sequence, all the run.
    in_order: u64,
    gaps: u64,
    duplicates: u64,
    malformed: u64,
    missing: u64,
    tally: Tally,
}

impl BroadcastThread<'_> {
    /// Sends what the publisher may: up to its in-flight limit and, with a rate, what is due.
    fn publish(&mut self, p: &mut Publisher, out: &mut Outbox, now: Instant) {
        let epoch = self.window.map_or(now, |w| w.epoch);
        while self.sending && p.in_flight < self.per_publisher {
            if let Some(interval) = self.interval {
                let due = p.next_at.unwrap_or(now);
                if due > now {
                    break;
                }
                let floor = now.checked_sub(MAX_CATCH_UP).unwrap_or(now);
                p.next_at = Some(due.max(floor) + interval);
            }
            let micros = now.saturating_duration_since(epoch).as_micros();
            self.text.clear();
            self.text.push_str(&self.wire.publish_prefix);
            let content_start = self.text.len();
            let _ = write!(self.text, "{}:{}:{micros}:", p.index, p.next_seq);
            let padding = self
                .wire
                .size
                .saturating_sub(self.text.len() - content_start);
            text::push_words(&mut self.text, padding, p.next_seq);
            self.text.push_str(self.wire.publish_suffix);
            out.send(MessageKind::Text, self.text.as_bytes());
            p.next_seq += 1;
            p.in_flight += 1;
            self.shared.sent[p.index].store(p.next_seq, Ordering::Relaxed);
        }
    }

    fn on_ack(&mut self, p: &mut Publisher, out: &mut Outbox, now: Instant) {
        p.in_flight = p.in_flight.saturating_sub(1);
        if self.window.is_some_and(|w| w.measures(now)) {
            self.published += 1;
        }
        self.publish(p, out, now);
        self.finish_if_idle(p);
    }

    fn finish_if_idle(&mut self, p: &mut Publisher) {
        if !self.sending && p.in_flight == 0 {
            self.finish(p);
        }
    }

    /// The publisher will send nothing more: subscribers may stop waiting for it.
    fn finish(&mut self, p: &mut Publisher) {
        if !p.finished {
            p.finished = true;
            self.shared.finished.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A delivery whose content is `content`.
    fn on_delivery(&mut self, role: &mut Role, content: &str, out: &mut Outbox, now: Instant) {
        let Some((publisher, seq, micros)) = parse_content(content) else {
            self.malformed += 1;
            return;
        };
        let s = match role {
            Role::Subscriber(s) => s,
            // In chat mode (and raw) a publisher hears every message; its own is its
            // acknowledgement.
            Role::Publisher(p) => {
                if (self.wire.raw || self.wire.via == Via::Chat) && publisher == p.index {
                    self.on_ack(p, out, now);
                }
                return;
            }
        };
        let Some(expected) = s.expected.get_mut(publisher) else {
            self.malformed += 1;
            return;
        };
        match seq.cmp(expected) {
            std::cmp::Ordering::Equal => {
                *expected += 1;
                self.in_order += 1;
            }
            std::cmp::Ordering::Greater => {
                self.gaps = self.gaps.saturating_add(seq - *expected);
                *expected = seq.saturating_add(1);
            }
            std::cmp::Ordering::Less => self.duplicates += 1,
        }
        if let Some(w) = self.window.filter(|w| w.measures(now)) {
            self.delivered += 1;
            // The timestamp comes back from the server: no arithmetic on it may panic.
            match w.epoch.checked_add(Duration::from_micros(micros)) {
                Some(sent) => self
                    .tally
                    .latency
                    .record(now.saturating_duration_since(sent)),
                None => self.malformed += 1,
            }
        }
    }

    fn on_message(
        &mut self,
        role: &mut Role,
        message: Message<'_>,
        out: &mut Outbox,
        now: Instant,
    ) {
        let Some(text) = message.as_text() else {
            self.tally.errors.add("binary message from the server");
            return;
        };
        if self.wire.raw {
            self.on_delivery(role, text, out, now);
            return;
        }
        match string_field(text, TYPE) {
            Some("message" | "chat") => match string_field(text, CONTENT) {
                Some(content) => self.on_delivery(role, content, out, now),
                None => self.malformed += 1,
            },
            Some("published") => {
                if let Role::Publisher(p) = role {
                    self.on_ack(p, out, now);
                }
            }
            Some("subscribed") => {
                if let Role::Subscriber(s) = role {
                    if !s.ready {
                        s.ready = true;
                        self.opener.ready();
                    }
                }
            }
            Some("welcome") => {
                // Subscribers of a channel are ready once subscribed.
                if matches!(role, Role::Publisher(_)) || self.wire.via == Via::Chat {
                    self.opener.ready();
                }
            }
            Some("pong") => {}
            Some("error") => {
                let code = string_field(text, CODE).unwrap_or("?");
                self.tally.errors.add(format!("server error {code}"));
                // A refused publish is not in flight any more.
                if let Role::Publisher(p) = role {
                    p.in_flight = p.in_flight.saturating_sub(1);
                    self.finish_if_idle(p);
                }
            }
            Some(other) => self
                .tally
                .errors
                .add(format!("unexpected message type {other:?}")),
            None => self.tally.errors.add("message without a type"),
        }
    }

    fn on_end(&mut self, role: &mut Role, end: End) {
        if let Some(e) = end.error() {
            self.tally.errors.add(e);
        }
        match role {
            Role::Publisher(p) => self.finish(p),
            Role::Subscriber(s) => {
                for (sent, expected) in self.shared.sent.iter().zip(&s.expected) {
                    self.missing += sent.load(Ordering::Relaxed).saturating_sub(*expected);
                }
            }
        }
    }

    /// Lets every publisher of this thread send what it may; returns the next due time.
    fn publish_all(&mut self, driver: &mut Driver<Role>, now: Instant) -> Option<Instant> {
        let mut wake: Option<Instant> = None;
        for i in 0..self.local_publishers {
            let key = self.opener.keys()[i];
            driver.visit(key, self, now, |s, role, out| {
                if let Role::Publisher(p) = role {
                    s.publish(p, out, now);
                    s.finish_if_idle(p);
                    if let Some(at) = p.next_at {
                        wake = Some(wake.map_or(at, |w| w.min(at)));
                    }
                }
                Action::Keep
            });
        }
        wake
    }
}

impl Handler for BroadcastThread<'_> {
    type Conn = Role;

    fn on_event(
        &mut self,
        role: &mut Role,
        event: Event<'_>,
        out: &mut Outbox,
        now: Instant,
    ) -> Action {
        match event {
            Event::Opened => {
                if self.wire.raw {
                    // No welcome, no subscription: open is ready.
                    self.opener.ready();
                } else if let (Role::Subscriber(_), Via::Publish) = (&role, self.wire.via) {
                    out.send(MessageKind::Text, self.wire.subscribe.as_bytes());
                }
            }
            Event::Message(message) => self.on_message(role, message, out, now),
            Event::Ended(end) => self.on_end(role, end),
        }
        Action::Keep
    }
}

impl Scenario for BroadcastThread<'_> {
    fn setup(&mut self, driver: &mut Driver<Role>, now: Instant) -> Result<bool, String> {
        self.opener.pump(driver, now, &self.tally.errors)
    }

    fn start(&mut self, driver: &mut Driver<Role>, window: Window, now: Instant) {
        self.window = Some(window);
        self.sending = true;
        if let Some(interval) = self.interval {
            // With a rate, publishers start spread over one interval, not all at once.
            let publishers = self.shared.sent.len() as f64;
            for i in 0..self.local_publishers {
                let key = self.opener.keys()[i];
                driver.visit(key, self, now, |_, role, _| {
                    if let Role::Publisher(p) = role {
                        p.next_at = Some(now + interval.mul_f64(p.index as f64 / publishers));
                    }
                    Action::Keep
                });
            }
        }
        self.publish_all(driver, now);
    }

    fn tick(&mut self, driver: &mut Driver<Role>, now: Instant) -> Option<Instant> {
        // Without a rate, publishers send from their acknowledgements alone.
        self.interval?;
        self.publish_all(driver, now)
    }

    fn stop(&mut self, driver: &mut Driver<Role>, now: Instant) {
        self.sending = false;
        self.publish_all(driver, now);
    }

    fn drained(&self, _driver: &Driver<Role>) -> bool {
        self.shared.finished.load(Ordering::Relaxed) == self.shared.sent.len()
            && self.in_order >= self.local_subscribers * self.shared.total_sent()
    }
}

/// Runs the broadcast scenario.
pub fn run(args: &BroadcastArgs) -> Result<Report, String> {
    if args.publishers == 0 || args.subscribers == 0 || args.in_flight == 0 {
        return Err("--publishers, --subscribers and --in-flight must be at least 1".into());
    }
    if !(args.rate >= 0.0 && args.rate.is_finite()) {
        return Err("--rate must be a number of messages per second, 0 for no limit".into());
    }
    let total = args.publishers + args.subscribers;
    let plan = args.common.plan(total)?;
    let shared = Shared {
        sent: (0..args.publishers).map(|_| AtomicU64::new(0)).collect(),
        finished: AtomicUsize::new(0),
    };
    let wire = Wire::new(args);
    let interval = (args.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / args.rate));
    let threads = plan.threads;
    let outcome = run::run(&plan, |t| {
        // Global numbers below `publishers` are publishers; a thread's share is in
        // ascending order, so its publishers come first (and `opener.keys()` starts with
        // theirs).
        let roles: Vec<(usize, Role)> = share(total, threads, t)
            .map(|g| {
                let role = if g < args.publishers {
                    Role::Publisher(Publisher {
                        index: g,
                        next_seq: 0,
                        in_flight: 0,
                        next_at: None,
                        finished: false,
                    })
                } else {
                    Role::Subscriber(Subscriber {
                        expected: vec![0; args.publishers],
                        ready: false,
                    })
                };
                (g, role)
            })
            .collect();
        let local_publishers = roles
            .iter()
            .filter(|(_, r)| matches!(r, Role::Publisher(_)))
            .count();
        BroadcastThread {
            shared: &shared,
            wire: &wire,
            per_publisher: args.in_flight,
            interval,
            local_subscribers: (roles.len() - local_publishers) as u64,
            local_publishers,
            opener: Opener::new(roles, args.common.concurrency),
            window: None,
            sending: false,
            text: String::new(),
            published: 0,
            delivered: 0,
            in_order: 0,
            gaps: 0,
            duplicates: 0,
            malformed: 0,
            missing: 0,
            tally: Tally::default(),
        }
    })?;

    let tally = Tally::sum(outcome.threads.iter().map(|t| &t.tally));
    let delivered = outcome.sum(|t| t.delivered);
    let in_order = outcome.sum(|t| t.in_order);
    let sent = shared.total_sent();
    let expected = sent * args.subscribers as u64;
    let via = match (args.protocol, args.via) {
        (Protocol::Raw, _) => "raw",
        (Protocol::Chat, Via::Publish) => "publish",
        (Protocol::Chat, Via::Chat) => "chat",
    };
    let rate = if args.rate > 0.0 {
        format!("{} msg/s each", args.rate)
    } else {
        "unpaced".into()
    };
    let what = format!(
        "{} publishers ({via}, {} in flight, {rate}) -> {} subscribers, {}-byte content",
        args.publishers, args.in_flight, args.subscribers, args.size
    );
    let mut report = args.common.report(&plan, "broadcast", &what);
    report.set("publishers", args.publishers);
    report.set("subscribers", args.subscribers);
    report.set("in_flight", args.in_flight);
    report.set("rate", args.rate);
    report.set("size", args.size);
    report.set("via", via);
    report.set(
        "protocol",
        match args.protocol {
            Protocol::Chat => "chat",
            Protocol::Raw => "raw",
        },
    );
    report.set("channel", args.channel.as_str());
    let seconds = outcome.window.seconds();
    report.count("delivered", "delivered", delivered, seconds);
    report.count(
        "published",
        "published",
        outcome.sum(|t| t.published),
        seconds,
    );
    report.latency("latency", "publish->receive", &tally.latency);
    report.cpu(outcome.server.as_ref(), &outcome.client, "frame", delivered);
    report.wire(outcome.wire, "frame", delivered);
    report.figure("sent", "sent in all", sent);
    report.figure("expected", "expected", expected);
    report.figure("received_in_order", "received", in_order);
    report.problems("missing", "missing", outcome.sum(|t| t.missing));
    report.problems("gaps", "gaps", outcome.sum(|t| t.gaps));
    report.problems("duplicates", "duplicates", outcome.sum(|t| t.duplicates));
    report.problems("malformed", "malformed", outcome.sum(|t| t.malformed));
    report.errors(&tally.errors);
    report.require(
        in_order == expected,
        "not every subscriber got every message",
    );
    report.require(delivered > 0, "nothing was delivered in the window");
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_of_compact_json() {
        let text = r#"{"channel":"bench","content":"2:17:12345:xxxx","from":"3","id":"3","ts":1,"type":"message"}"#;
        assert_eq!(string_field(text, TYPE), Some("message"));
        let content = string_field(text, CONTENT).unwrap();
        assert_eq!(parse_content(content), Some((2, 17, 12345)));
        assert_eq!(string_field(r#"{"type":"a\"b"}"#, TYPE), None);
        assert_eq!(string_field(r#"{"x":1}"#, TYPE), None);
        assert_eq!(parse_content("1:2"), None);
        assert_eq!(parse_content("a:2:3:"), None);
    }
}
