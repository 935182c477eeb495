//! One run: worker threads, each with its own [`Driver`] and scenario state, taken through
//! the same timeline (setup, warm-up, measured window, drain, close), and /proc samples of
//! the server and of this process around the window.
//!
//! ```text
//! setup ──ready──▶ go ─warm-up─▶ start ═══ measured ═══▶ end ─drain─▶ close
//!                  │             sample                  sample
//! ```
//! The main thread waits until every worker is ready (all connections open), fixes the
//! window for all of them at once, samples CPU time at its edges, then joins the workers.

use std::net::Ipv4Addr;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use super::driver::{ConnectionOptions, Driver, Endpoint, Handler, Timeouts};
use super::report::{sample, ProcSample, ProcWindow, Wire};
use wsloop::proto::extension::DeflateOffer;
use wsloop::proto::Limits;

/// Turns wait at most this long, so that phase changes are noticed promptly.
const MAX_TURN: Duration = Duration::from_millis(100);
/// While draining, how often `drained` is asked again.
const DRAIN_TURN: Duration = Duration::from_millis(10);
/// Closing handshakes started between two turns at the end of a run.
const CLOSE_BATCH: usize = 256;

/// The shared timeline, fixed when every worker is ready.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    /// When the load started (the warm-up began); a common clock origin for all threads.
    pub epoch: Instant,
    /// Start of the measured window.
    pub start: Instant,
    /// End of the measured window.
    pub end: Instant,
}

impl Window {
    /// Whether `t` falls in the measured window.
    pub fn measures(&self, t: Instant) -> bool {
        t >= self.start && t < self.end
    }

    /// The window's length in seconds.
    pub fn seconds(&self) -> f64 {
        (self.end - self.start).as_secs_f64()
    }
}

/// A scenario's per-thread logic on top of its [`Handler`].
pub trait Scenario: Handler + Sized {
    /// Called after every setup turn (and once before the first): open connections and do
    /// whatever else they need; true once all are ready. An error aborts the run.
    fn setup(&mut self, driver: &mut Driver<Self::Conn>, now: Instant) -> Result<bool, String>;

    /// The window is fixed: start the load (the warm-up begins now).
    fn start(&mut self, driver: &mut Driver<Self::Conn>, window: Window, now: Instant);

    /// Called after every turn until the window ends; returns when it wants to be called at
    /// the latest (for pacing).
    fn tick(&mut self, _driver: &mut Driver<Self::Conn>, _now: Instant) -> Option<Instant> {
        None
    }

    /// The window is over: start nothing new.
    fn stop(&mut self, driver: &mut Driver<Self::Conn>, now: Instant);

    /// Everything started has finished (echoes back, deliveries in, handshakes done).
    fn drained(&self, driver: &Driver<Self::Conn>) -> bool;
}

/// How a run is shaped.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The servers under test (`--url`), at least one: all `ws://` or all `wss://`.
    pub endpoints: Vec<Endpoint>,
    /// Source addresses (empty: the kernel's choice).
    pub sources: Vec<Ipv4Addr>,
    /// The server's pid, for /proc.
    pub server_pid: Vec<u32>,
    /// Worker threads.
    pub threads: usize,
    /// Before the window.
    pub warmup: Duration,
    /// The window starts at this wall-clock time instead (`--window-start`).
    pub window_start: Option<SystemTime>,
    /// The window.
    pub duration: Duration,
    /// Longest time for every worker to be ready.
    pub setup_timeout: Duration,
    /// After the window: longest wait for work in flight.
    pub drain_timeout: Duration,
    /// Per-connection connect and close timeouts.
    pub timeouts: Timeouts,
    /// Largest message the client accepts.
    pub max_message: u64,
    /// The server reflects the client's masked frames (`--accept-masked`).
    pub accept_masked: bool,
    /// Offer permessage-deflate (`--deflate`).
    pub deflate: Option<DeflateOffer>,
}

impl Plan {
    /// Over TLS (`wss://`).
    pub fn secure(&self) -> bool {
        self.endpoints.iter().any(|e| e.tls.is_some())
    }
}

/// What a run produced.
#[derive(Debug)]
pub struct Outcome<S> {
    /// Each worker's scenario state.
    pub threads: Vec<S>,
    /// The window.
    pub window: Window,
    /// The server process around the window, with `--server-pid`.
    pub server: Option<ProcWindow>,
    /// This process around the window.
    pub client: ProcWindow,
    /// Bytes on the wire in the window, all threads.
    pub wire: Wire,
}

impl<S> Outcome<S> {
    /// A counter summed over the threads.
    pub fn sum(&self, count: impl Fn(&S) -> u64) -> u64 {
        self.threads.iter().map(count).sum()
    }
}

/// Runs the scenario made by `make(thread)` on `plan.threads` threads.
pub fn run<S: Scenario + Send>(
    plan: &Plan,
    make: impl Fn(usize) -> S + Sync,
) -> Result<Outcome<S>, String> {
    // The server's processes, summed (none: no server figures).
    let server_sample = || -> Result<Option<ProcSample>, String> {
        if plan.server_pid.is_empty() {
            return Ok(None);
        }
        let mut sum = ProcSample::default();
        for &pid in &plan.server_pid {
            let one = sample(Some(pid)).map_err(|e| format!("server pid {pid}: {e}"))?;
            sum.cpu_ticks += one.cpu_ticks;
            sum.rss_kb += one.rss_kb;
        }
        Ok(Some(sum))
    };
    let client_sample = || sample(None).map_err(|e| format!("/proc/self: {e}"));
    let server_before = server_sample()?;
    let client_before = client_sample()?;
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
    std::thread::scope(|scope| {
        let mut workers = Vec::with_capacity(plan.threads);
        for t in 0..plan.threads {
            let (go_tx, go_rx) = mpsc::channel::<Option<Window>>();
            let ready_tx = ready_tx.clone();
            let make = &make;
            let handle = scope.spawn(move || worker(plan, t, make(t), &ready_tx, &go_rx));
            workers.push((handle, go_tx));
        }
        drop(ready_tx);
        let mut failure = None;
        for _ in 0..plan.threads {
            match ready_rx.recv_timeout(plan.setup_timeout + Duration::from_secs(5)) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    failure.get_or_insert(e);
                }
                Err(_) => {
                    failure.get_or_insert("a worker did not report in time".into());
                    break;
                }
            }
        }
        let epoch = Instant::now();
        let warmup = match plan.window_start {
            None => plan.warmup,
            Some(at) => at.duration_since(SystemTime::now()).unwrap_or_else(|_| {
                failure.get_or_insert("the set-up ended after --window-start".into());
                Duration::ZERO
            }),
        };
        let window = Window {
            epoch,
            start: epoch + warmup,
            end: epoch + warmup + plan.duration,
        };
        let go = failure.is_none().then_some(window);
        for (_, go_tx) in &workers {
            let _ = go_tx.send(go);
        }
        let samples = match failure {
            Some(e) => Err(e),
            None => sample_window(window, &server_sample, &client_sample),
        };
        let mut threads = Vec::with_capacity(plan.threads);
        let mut wire = Wire::default();
        let mut failure = samples.as_ref().err().cloned();
        for (handle, _) in workers {
            match handle.join() {
                Ok(Ok((state, thread_wire))) => {
                    threads.push(state);
                    wire += thread_wire;
                }
                Ok(Err(e)) => {
                    failure.get_or_insert(e);
                }
                Err(_) => {
                    failure.get_or_insert("a worker thread panicked".into());
                }
            }
        }
        if let Some(e) = failure {
            return Err(e);
        }
        let ((server_start, client_start), (server_end, client_end)) = samples?;
        let server = match (server_before, server_start, server_end) {
            (Some(before), Some(start), Some(end)) => Some(ProcWindow { before, start, end }),
            _ => None,
        };
        Ok(Outcome {
            threads,
            window,
            server,
            client: ProcWindow {
                before: client_before,
                start: client_start,
                end: client_end,
            },
            wire,
        })
    })
}

type Pair = (Option<ProcSample>, ProcSample);

/// Sleeps to the window's start and end and samples both processes there.
fn sample_window(
    window: Window,
    server: &impl Fn() -> Result<Option<ProcSample>, String>,
    client: &impl Fn() -> Result<ProcSample, String>,
) -> Result<(Pair, Pair), String> {
    let at = |t: Instant| -> Result<Pair, String> {
        std::thread::sleep(t.saturating_duration_since(Instant::now()));
        Ok((server()?, client()?))
    };
    Ok((at(window.start)?, at(window.end)?))
}

/// One worker thread: setup, report ready, wait for the window, run, drain, close. Returns
/// the scenario's state and the bytes on the wire in the window.
fn worker<S: Scenario>(
    plan: &Plan,
    thread: usize,
    mut scenario: S,
    ready: &mpsc::Sender<Result<(), String>>,
    go: &mpsc::Receiver<Option<Window>>,
) -> Result<(S, Wire), String> {
    let limits = Limits::with_max_message(plan.max_message);
    let options = ConnectionOptions {
        timeouts: plan.timeouts,
        limits,
        accept_masked: plan.accept_masked,
        deflate: plan.deflate.clone(),
    };
    let driver = Driver::new(
        plan.endpoints.clone(),
        plan.sources.clone(),
        thread,
        options,
    )
    .map_err(|e| format!("poll: {e}"));
    let setup = driver.and_then(|mut d| setup(plan, &mut scenario, &mut d).map(|()| d));
    let _ = ready.send(setup.as_ref().map(|_| ()).map_err(Clone::clone));
    let mut driver = setup?;
    let Ok(Some(window)) = go.recv() else {
        return Err("run aborted".into());
    };
    let io = |e: std::io::Error| format!("poll: {e}");

    let mut now = Instant::now();
    scenario.start(&mut driver, window, now);
    let mut wake = None;
    let mut wire_at_start = None;
    while now < window.end {
        let until = wake.map_or(window.end, |w: Instant| w.min(window.end));
        driver
            .turn(
                &mut scenario,
                until.saturating_duration_since(now).min(MAX_TURN),
            )
            .map_err(io)?;
        now = Instant::now();
        if wire_at_start.is_none() && window.measures(now) {
            wire_at_start = Some(driver.wire());
        }
        wake = scenario.tick(&mut driver, now);
    }
    let wire = driver.wire() - wire_at_start.unwrap_or(driver.wire());

    scenario.stop(&mut driver, now);
    let drain_end = window.end + plan.drain_timeout;
    while !scenario.drained(&driver) && now < drain_end {
        driver.turn(&mut scenario, DRAIN_TURN).map_err(io)?;
        now = Instant::now();
    }

    // Each connection has its own close deadline; this only bounds the loop.
    let mut close_end = now;
    let mut waiting = usize::MAX;
    loop {
        let left = driver.close_next(&mut scenario, now, CLOSE_BATCH);
        if left < waiting {
            close_end = now + plan.timeouts.close + Duration::from_secs(1);
            waiting = left;
        }
        if driver.is_empty() || now >= close_end {
            break;
        }
        let wait = if waiting > 0 {
            Duration::ZERO
        } else {
            MAX_TURN
        };
        driver.turn(&mut scenario, wait).map_err(io)?;
        now = Instant::now();
    }
    Ok((scenario, wire))
}

fn setup<S: Scenario>(
    plan: &Plan,
    scenario: &mut S,
    driver: &mut Driver<S::Conn>,
) -> Result<(), String> {
    let deadline = Instant::now() + plan.setup_timeout;
    loop {
        let now = Instant::now();
        if scenario.setup(driver, now)? {
            return Ok(());
        }
        if now >= deadline {
            return Err(format!(
                "connections not ready within the setup timeout ({:?})",
                plan.setup_timeout
            ));
        }
        driver
            .turn(scenario, (deadline - now).min(MAX_TURN))
            .map_err(|e| format!("poll: {e}"))?;
    }
}
