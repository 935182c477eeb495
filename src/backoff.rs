//! Reconnection delays: exponential backoff with jitter, the same policy as the browser client.
//!
//! The first retry waits `initial`; each further one `factor` times longer, up to `max`; after
//! `max_attempts` retries the caller gives up. A successful connection resets the count. Each
//! delay is spread by ±`jitter` so that many clients dropped at once do not return in lockstep.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// A reconnection schedule.
#[derive(Clone, Debug)]
pub struct Backoff {
    /// The first delay.
    pub initial: Duration,
    /// Growth per attempt.
    pub factor: f64,
    /// The largest delay.
    pub max: Duration,
    /// Attempts before giving up.
    pub max_attempts: u32,
    /// Relative spread of each delay (0.2: ±20%).
    pub jitter: f64,
    attempt: u32,
}

impl Default for Backoff {
    /// 1 s growing by 1.5x, capped at 30 s, at most 50 attempts, ±20% jitter.
    fn default() -> Self {
        Backoff::new(Duration::from_secs(1), 1.5, Duration::from_secs(30), 50)
    }
}

impl Backoff {
    /// A schedule with ±20% jitter.
    pub fn new(initial: Duration, factor: f64, max: Duration, max_attempts: u32) -> Self {
        Backoff {
            initial,
            factor,
            max,
            max_attempts,
            jitter: 0.2,
            attempt: 0,
        }
    }

    /// Attempts made since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// Forgets past attempts (after a successful connection).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// The delay before the next attempt without jitter, or `None` when attempts are used up.
    pub fn base_delay(&self) -> Option<Duration> {
        if self.attempt >= self.max_attempts {
            return None;
        }
        let grown = self.initial.as_secs_f64() * self.factor.powi(self.attempt as i32);
        Some(Duration::from_secs_f64(grown.min(self.max.as_secs_f64())))
    }

    /// The delay before the next attempt, jittered with `unit` (a number in [0, 1)), and
    /// counts the attempt. `None` when attempts are used up.
    pub fn next_delay_with(&mut self, unit: f64) -> Option<Duration> {
        let base = self.base_delay()?;
        self.attempt += 1;
        let spread = 1.0 + self.jitter * (2.0 * unit.clamp(0.0, 1.0) - 1.0);
        Some(Duration::from_secs_f64(base.as_secs_f64() * spread))
    }

    /// [`next_delay_with`](Self::next_delay_with) with a random jitter.
    pub fn next_delay(&mut self) -> Option<Duration> {
        let unit = (RandomState::new().build_hasher().finish() >> 11) as f64 / (1u64 << 53) as f64;
        self.next_delay_with(unit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_by_half_caps_at_thirty_seconds_and_gives_up_after_fifty() {
        let mut b = Backoff::default();
        let delays: Vec<f64> = std::iter::from_fn(|| b.next_delay_with(0.5))
            .map(|d| d.as_secs_f64())
            .collect();
        assert_eq!(delays.len(), 50);
        assert!((delays[0] - 1.0).abs() < 1e-9);
        assert!((delays[1] - 1.5).abs() < 1e-9);
        assert!((delays[2] - 2.25).abs() < 1e-9);
        assert!(delays.iter().all(|d| *d <= 30.0 + 1e-9));
        assert!((delays[49] - 30.0).abs() < 1e-9);
        assert_eq!(b.next_delay_with(0.5), None);
        b.reset();
        assert_eq!(b.next_delay_with(0.5), Some(Duration::from_secs(1)));
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        let mut low = Backoff::default();
        let mut high = Backoff::default();
        assert_eq!(low.next_delay_with(0.0), Some(Duration::from_millis(800)));
        assert_eq!(high.next_delay_with(1.0), Some(Duration::from_millis(1200)));
    }
}
