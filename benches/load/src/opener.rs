//! Opening a scenario's connections: a fixed set, each with its number in the run (which
//! picks its server, see `net::target_of`), at most `concurrency` opening at once, counting
//! those the scenario declares ready.

use std::time::Instant;

use crate::driver::Driver;
use crate::report::Errors;

/// Opens a fixed set of connections with at most `concurrency` opening at once, and counts
/// those the scenario declares ready (open, or subscribed, ...).
#[derive(Debug)]
pub struct Opener<C> {
    /// States still to open, with their connection numbers, last first.
    waiting: Vec<(usize, C)>,
    total: usize,
    opened: usize,
    ready: usize,
    concurrency: usize,
    keys: Vec<usize>,
}

impl<C> Opener<C> {
    /// Will open one connection per state, in order; each comes with its connection number.
    pub fn new(states: impl IntoIterator<Item = (usize, C)>, concurrency: usize) -> Self {
        let mut states: Vec<(usize, C)> = states.into_iter().collect();
        states.reverse();
        Opener {
            total: states.len(),
            waiting: states,
            opened: 0,
            ready: 0,
            concurrency: concurrency.max(1),
            keys: Vec::new(),
        }
    }

    /// One more connection is ready.
    pub fn ready(&mut self) {
        self.ready += 1;
    }

    /// How many are ready.
    pub fn ready_count(&self) -> usize {
        self.ready
    }

    /// The driver keys of the opened connections, in the order of the states.
    pub fn keys(&self) -> &[usize] {
        &self.keys
    }

    /// Opens more while fewer than `concurrency` are opening; true once all are ready.
    /// Setup stops at the first error: `errors` are those the scenario has seen.
    pub fn pump(
        &mut self,
        driver: &mut Driver<C>,
        now: Instant,
        errors: &Errors,
    ) -> Result<bool, String> {
        if let Some(e) = errors.first() {
            return Err(e);
        }
        while self.opened - self.ready.min(self.opened) < self.concurrency {
            let Some((number, state)) = self.waiting.pop() else {
                break;
            };
            let key = driver.open(state, number, now).map_err(|e| e.to_string())?;
            self.keys.push(key);
            self.opened += 1;
        }
        Ok(self.ready >= self.total)
    }
}
