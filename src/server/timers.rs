//! Connection deadlines: a min-heap of (when, connection) with lazy deletion.
//!
//! Each connection has at most one live protocol deadline (handshake, heartbeat, close) and one
//! idle check, stored in the connection; the heap may hold stale entries for deadlines that
//! were moved or cleared, and those are skipped when they come up. Every push happens when a deadline is set, so the heap stays proportional to the number
//! of deadline changes since their times passed.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use super::conn::Timer;
use super::handler::ConnId;

/// Pending deadlines.
#[derive(Debug, Default)]
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<(Instant, ConnId, Timer)>>,
}

impl Timers {
    /// Remembers that `id` has a `timer` due at `when`.
    pub(crate) fn schedule(&mut self, when: Instant, id: ConnId, timer: Timer) {
        self.heap.push(Reverse((when, id, timer)));
    }

    /// The earliest entry's time (it may be stale; a stale wake-up costs one loop turn).
    pub(crate) fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((when, _, _))| *when)
    }

    /// Removes and returns an entry that is due at `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(Instant, ConnId, Timer)> {
        match self.heap.peek() {
            Some(Reverse((when, _, _))) if *when <= now => self.heap.pop().map(|Reverse(e)| e),
            _ => None,
        }
    }
}
