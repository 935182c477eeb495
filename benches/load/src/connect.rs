//! `wsloop-bench connect` and `wsloop-bench idle`: the cost of connections rather than of
//! messages.
//!
//! - **connect**: a storm of short connections, `--concurrency` at a time per thread: TCP
//!   connect, opening handshake, closing handshake, and again. The server closes TCP first
//!   (RFC 6455 §7.1.1), so TIME_WAIT stays on its side and client ports come back at once.
//! - **idle**: N connections opened and held; the server's resident memory before the first
//!   and after the last (plus the warm-up to settle), divided by N.

use std::time::{Duration, Instant};

use super::driver::{Action, Driver, Event, Handler, Outbox};
use super::opener::Opener;
use super::report::{Report, Tally};
use super::run::{self, Scenario, Window};
use super::{share, text, ConnectArgs, IdleArgs};
use wsloop::proto::MessageKind;

/// After a failed connect (e.g. no free port), wait this long before trying again.
const RETRY: Duration = Duration::from_millis(10);

/// One connection of the storm: when it started.
#[derive(Debug)]
pub struct Attempt {
    started: Instant,
}

/// One thread of the storm.
#[derive(Debug)]
pub struct StormThread {
    concurrency: usize,
    /// The number of this thread's next connection: thread t of T numbers its connections
    /// t, t + T, t + 2T, ... (as `share` would), which spreads them over the `--url`s.
    next_number: usize,
    threads: usize,
    window: Option<Window>,
    running: bool,
    /// Handshakes completed in the window.
    handshakes: u64,
    /// Closing handshakes completed (all the run).
    closed: u64,
    tally: Tally,
}

impl StormThread {
    /// Opens connections up to the concurrency; a failure waits a little.
    fn fill(&mut self, driver: &mut Driver<Attempt>, now: Instant) -> Option<Instant> {
        while self.running && driver.len() < self.concurrency {
            if let Err(e) = driver.open(Attempt { started: now }, self.next_number, now) {
                self.tally.errors.add(e.to_string());
                return Some(now + RETRY);
            }
            self.next_number = self.next_number.wrapping_add(self.threads);
        }
        None
    }
}

impl Handler for StormThread {
    type Conn = Attempt;

    fn on_event(
        &mut self,
        attempt: &mut Attempt,
        event: Event<'_>,
        _out: &mut Outbox,
        now: Instant,
    ) -> Action {
        match event {
            Event::Opened => {
                if self.window.is_some_and(|w| w.measures(now)) {
                    self.handshakes += 1;
                    self.tally.latency.record(now - attempt.started);
                }
                Action::Close
            }
            Event::Message(_) => Action::Keep,
            Event::Ended(end) => {
                match end.error() {
                    Some(e) => self.tally.errors.add(e),
                    None => self.closed += 1,
                }
                Action::Keep
            }
        }
    }
}

impl Scenario for StormThread {
    fn setup(&mut self, _driver: &mut Driver<Attempt>, _now: Instant) -> Result<bool, String> {
        Ok(true)
    }

    fn start(&mut self, driver: &mut Driver<Attempt>, window: Window, now: Instant) {
        self.window = Some(window);
        self.running = true;
        self.fill(driver, now);
    }

    fn tick(&mut self, driver: &mut Driver<Attempt>, now: Instant) -> Option<Instant> {
        self.fill(driver, now)
    }

    fn stop(&mut self, _driver: &mut Driver<Attempt>, _now: Instant) {
        self.running = false;
    }

    fn drained(&self, driver: &Driver<Attempt>) -> bool {
        driver.is_empty()
    }
}

/// Runs the connection storm.
pub fn run_connect(args: &ConnectArgs) -> Result<Report, String> {
    let common = &args.common;
    let plan = common.plan(common.concurrency.saturating_mul(common.threads))?;
    let outcome = run::run(&plan, |t| StormThread {
        concurrency: common.concurrency,
        next_number: t,
        threads: plan.threads,
        window: None,
        running: false,
        handshakes: 0,
        closed: 0,
        tally: Tally::default(),
    })?;
    let tally = Tally::sum(outcome.threads.iter().map(|t| &t.tally));
    let handshakes = outcome.sum(|t| t.handshakes);
    let what = format!("{} at a time per thread", common.concurrency);
    let mut report = common.report(&plan, "connect", &what);
    report.set("concurrency", common.concurrency);
    report.count(
        "handshakes",
        "handshakes",
        handshakes,
        outcome.window.seconds(),
    );
    report.latency("latency", "connect+upgrade", &tally.latency);
    report.cpu(
        outcome.server.as_ref(),
        &outcome.client,
        "handshake",
        handshakes,
    );
    report.figure("closed", "clean closes", outcome.sum(|t| t.closed));
    report.errors(&tally.errors);
    report.require(handshakes > 0, "no handshake completed in the window");
    Ok(report)
}

/// One thread of the idle scenario.
#[derive(Debug)]
pub struct IdleThread {
    opener: Opener<()>,
    /// Sent by each connection once open (`--first-message`); the echo makes it ready.
    first: Option<String>,
    tally: Tally,
}

impl Handler for IdleThread {
    type Conn = ();

    fn on_event(&mut self, _: &mut (), event: Event<'_>, out: &mut Outbox, _: Instant) -> Action {
        match (event, &self.first) {
            (Event::Opened, None) | (Event::Message(_), Some(_)) => self.opener.ready(),
            (Event::Opened, Some(first)) => out.send(MessageKind::Text, first.as_bytes()),
            (Event::Message(_), None) => {}
            (Event::Ended(end), _) => {
                if let Some(e) = end.error() {
                    self.tally.errors.add(e);
                }
            }
        }
        Action::Keep
    }
}

impl Scenario for IdleThread {
    fn setup(&mut self, driver: &mut Driver<()>, now: Instant) -> Result<bool, String> {
        self.opener.pump(driver, now, &self.tally.errors)
    }

    fn start(&mut self, _driver: &mut Driver<()>, _window: Window, _now: Instant) {}

    fn stop(&mut self, _driver: &mut Driver<()>, _now: Instant) {}

    fn drained(&self, _driver: &Driver<()>) -> bool {
        true
    }
}

/// Runs the idle scenario.
pub fn run_idle(args: &IdleArgs) -> Result<Report, String> {
    let common = &args.common;
    if common.server_pid.is_empty() {
        return Err("idle measures the server's memory: pass --server-pid".into());
    }
    if args.connections == 0 {
        return Err("--connections must be at least 1".into());
    }
    let plan = common.plan(args.connections)?;
    let threads = plan.threads;
    let outcome = run::run(&plan, |t| IdleThread {
        opener: Opener::new(
            share(args.connections, threads, t).map(|g| (g, ())),
            common.concurrency,
        ),
        first: args.first_message.map(|len| text::json_like(len, 7)),
        tally: Tally::default(),
    })?;
    let tally = Tally::sum(outcome.threads.iter().map(|t| &t.tally));
    let server = outcome
        .server
        .ok_or("the server's /proc entries could not be read")?;
    let grown_kb = server.start.rss_kb.saturating_sub(server.before.rss_kb);
    let per_connection = grown_kb as f64 * 1024.0 / args.connections as f64;
    let what = match args.first_message {
        Some(len) => format!(
            "{} connections held, each after one {len}-byte echo",
            args.connections
        ),
        None => format!("{} connections held", args.connections),
    };
    let mut report = common.report(&plan, "idle", &what);
    report.set("connections", args.connections);
    report.set("first_message", args.first_message);
    report.set("rss_before_kb", server.before.rss_kb);
    report.set("rss_after_kb", server.start.rss_kb);
    report.set("rss_end_kb", server.end.rss_kb);
    let per_connection = (per_connection * 10.0).round() / 10.0;
    report.set("rss_per_connection_bytes", per_connection);
    report.line("RSS/connection", format!("{per_connection} bytes"));
    report.line(
        "server RSS",
        format!(
            "{} kB before, {} kB with all open, {} kB at the end",
            server.before.rss_kb, server.start.rss_kb, server.end.rss_kb
        ),
    );
    report.cpu(
        Some(&server),
        &outcome.client,
        "connection",
        args.connections as u64,
    );
    report.errors(&tally.errors);
    report.require(per_connection > 0.0, "the server's RSS did not grow");
    Ok(report)
}
