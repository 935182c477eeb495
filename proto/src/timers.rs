//! The timed rules of a connection: heartbeat, close-handshake deadline, idle timeout and the
//! ping rate, kept as state and driven by the time the caller passes in.
//!
//! Nothing here reads a clock. The caller hands the current time to every input
//! ([`crate::Connection::poll_event`], [`crate::Connection::handle_timeout`], ...) and asks
//! [`crate::Connection::poll_timeout`] when it next needs to be woken, the way quinn-proto and
//! smoltcp do: so a test drives a connection through minutes of heartbeats on a virtual clock.

use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a connection waits for what (all optional parts off by default).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Send a heartbeat ping after this long without one (`None`: no heartbeat).
    pub ping_interval: Option<Duration>,
    /// A heartbeat ping unanswered for this long means the peer is gone.
    pub ping_timeout: Duration,
    /// After this end sends a close, the peer has this long to answer it (§7.1.2, §7.1.3).
    pub close_timeout: Duration,
    /// A peer that sends nothing at all (not even a pong) for this long is closed with 1001
    /// (`None`: no idle timeout).
    pub idle_timeout: Option<Duration>,
    /// Pings the peer may send per second; the next one fails the connection with 1008
    /// (`None`: no limit).
    pub max_pings_per_second: Option<u32>,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            ping_interval: None,
            ping_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(5),
            idle_timeout: None,
            max_pings_per_second: None,
        }
    }
}

/// What [`crate::Connection::handle_timeout`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expired {
    /// A heartbeat ping is queued for [`crate::Connection::poll_transmit`].
    PingSent,
    /// The heartbeat ping was not answered in time: the peer is gone. The connection is
    /// closed without a close frame (it would not be read); drop the transport.
    PongMissing,
    /// The peer did not answer this end's close in time: drop the transport (§7.1.1 lets
    /// the server close TCP once it has waited long enough).
    CloseReplyMissing,
    /// The peer was silent for the idle timeout: a close with 1001 is queued and the close
    /// deadline runs.
    Idle,
}

/// The one deadline of the heartbeat or the closing handshake: while data flows the heartbeat
/// runs; once this end sent its close only the close reply is awaited (§7.1.1), so one slot
/// holds either.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Timer {
    Off,
    /// The next heartbeat ping goes out then.
    NextPing(Instant),
    /// A heartbeat ping is out; it must be answered by then.
    PongDue(Instant),
    /// This end sent its close; the peer must answer by then.
    CloseReply(Instant),
}

/// The payload of heartbeat pings, recognisable in a packet capture.
pub const HEARTBEAT_PAYLOAD: &[u8] = b"wsloop-heartbeat";

/// A connection's timers. The settings are shared (`Arc`) by all the connections of a server:
/// an idle connection carries only its own deadlines.
#[derive(Clone, Debug)]
pub(crate) struct Clock {
    timeouts: Arc<Timeouts>,
    timer: Timer,
    /// When to look next whether the peer has been silent for the idle timeout. Moved only
    /// when it passes, not on every input, so the caller's timer queue does not churn.
    idle_check: Option<Instant>,
    /// When input last arrived.
    last_input: Instant,
    /// The current one-second window of received pings.
    ping_window: PingWindow,
}

/// Pings received in a one-second window.
#[derive(Clone, Copy, Debug)]
struct PingWindow {
    start: Instant,
    count: u32,
    /// Pings allowed in this window beyond the rate: those the peer sent while this end was
    /// paused, which arrive together after it.
    extra: u32,
}

impl PingWindow {
    fn new(start: Instant, extra: u32) -> Self {
        PingWindow {
            start,
            count: 0,
            extra,
        }
    }
}

impl Clock {
    pub(crate) fn new(timeouts: Arc<Timeouts>, now: Instant) -> Self {
        Clock {
            timer: match timeouts.ping_interval {
                Some(interval) => Timer::NextPing(now + interval),
                None => Timer::Off,
            },
            idle_check: timeouts.idle_timeout.map(|idle| now + idle),
            last_input: now,
            ping_window: PingWindow::new(now, 0),
            timeouts,
        }
    }

    /// The earliest deadline: the heartbeat and the idle check while data may flow, the close
    /// reply once this end sent its close.
    pub(crate) fn next(&self) -> Option<Instant> {
        match self.timer {
            Timer::CloseReply(due) => Some(due),
            Timer::Off => self.idle_check,
            Timer::NextPing(t) | Timer::PongDue(t) => {
                Some(self.idle_check.map_or(t, |idle| idle.min(t)))
            }
        }
    }

    pub(crate) fn input(&mut self, now: Instant) {
        self.last_input = now;
    }

    /// Any pong answers the heartbeat (§5.5.3: the peer is alive); the next ping is due an
    /// interval later.
    pub(crate) fn pong(&mut self, now: Instant) {
        if let (Timer::PongDue(_), Some(interval)) = (self.timer, self.timeouts.ping_interval) {
            self.timer = Timer::NextPing(now + interval);
        }
    }

    /// Counts a received ping; false once the peer is over its rate in this second.
    pub(crate) fn ping_allowed(&mut self, now: Instant) -> bool {
        let Some(max) = self.timeouts.max_pings_per_second else {
            return true;
        };
        let window = &mut self.ping_window;
        if now.saturating_duration_since(window.start) >= Duration::from_secs(1) {
            *window = PingWindow::new(now, 0);
        }
        window.count = window.count.saturating_add(1);
        window.count <= max.saturating_add(window.extra)
    }

    /// This end sent its close: only the close deadline counts from now on.
    pub(crate) fn close_sent(&mut self, now: Instant) {
        self.timer = Timer::CloseReply(now + self.timeouts.close_timeout);
        self.idle_check = None;
    }

    /// The caller was paused (stopped, descheduled) for `paused` until `now`: every deadline
    /// moves by as much, so time the peer could not be served is not counted against it, and
    /// the pings it sent meanwhile at its allowed rate, which arrive together now, are allowed.
    pub(crate) fn pause(&mut self, paused: Duration, now: Instant) {
        self.timer = match self.timer {
            Timer::Off => Timer::Off,
            Timer::NextPing(t) => Timer::NextPing(t + paused),
            Timer::PongDue(t) => Timer::PongDue(t + paused),
            Timer::CloseReply(t) => Timer::CloseReply(t + paused),
        };
        self.idle_check = self.idle_check.map(|t| t + paused);
        self.last_input += paused;
        let max = self.timeouts.max_pings_per_second.unwrap_or(0);
        // The pause's whole seconds, rounded up: each could hold a full window of pings.
        let seconds = paused.as_secs() + u64::from(paused.subsec_nanos() > 0);
        let seconds = u32::try_from(seconds).unwrap_or(u32::MAX);
        self.ping_window = PingWindow::new(now, max.saturating_mul(seconds));
    }

    /// The deadline that has passed at `now`, with what to do. Called until it returns
    /// `None`; each answer moves or clears the deadline it reports.
    /// Whether a deadline due at `now` judges the peer by input it has not sent: a missing
    /// pong, a missing close reply, or silence past the idle timeout.
    pub(crate) fn judges_silence(&self, now: Instant) -> bool {
        match self.timer {
            Timer::PongDue(t) | Timer::CloseReply(t) if t <= now => true,
            _ => {
                let silent = |idle| self.last_input + idle <= now;
                self.idle_check.is_some_and(|check| check <= now)
                    && self.timeouts.idle_timeout.is_some_and(silent)
            }
        }
    }

    pub(crate) fn expire(&mut self, now: Instant) -> Option<Due> {
        match self.timer {
            Timer::CloseReply(t) if t <= now => {
                self.timer = Timer::Off;
                return Some(Due::CloseReply);
            }
            Timer::CloseReply(_) => return None,
            Timer::PongDue(t) if t <= now => {
                self.timer = Timer::Off;
                return Some(Due::PongMissing);
            }
            Timer::NextPing(t) if t <= now => {
                self.timer = Timer::PongDue(now + self.timeouts.ping_timeout);
                return Some(Due::Ping);
            }
            _ => {}
        }
        let (Some(check), Some(idle)) = (self.idle_check, self.timeouts.idle_timeout) else {
            return None;
        };
        if check > now {
            return None;
        }
        let silent_until = self.last_input + idle;
        if silent_until > now {
            self.idle_check = Some(silent_until);
            return None;
        }
        self.idle_check = None;
        Some(Due::Idle)
    }
}

/// A deadline that passed, before the connection acts on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Due {
    Ping,
    PongMissing,
    Idle,
    CloseReply,
}
