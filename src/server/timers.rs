//! Connection deadlines: a min-heap of (when, connection) with lazy deletion.
//!
//! Each connection has at most one deadline at a time, kept in the connection (the handshake
//! deadline, the protocol core's next timeout, or the end of the linger). The heap may hold
//! stale entries for deadlines that moved; they are skipped when they come up. Every push
//! happens when a deadline moves, so the heap stays proportional to the number of moves
//! since their times passed (the core moves its idle check only when it passes, not per
//! message).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use super::handler::ConnId;

/// Pending deadlines.
#[derive(Debug, Default)]
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<(Instant, ConnId)>>,
}

impl Timers {
    /// Remembers that `id` has a deadline at `when`.
    pub(crate) fn schedule(&mut self, when: Instant, id: ConnId) {
        self.heap.push(Reverse((when, id)));
    }

    /// The earliest entry's time (it may be stale; a stale wake-up costs one loop turn).
    pub(crate) fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((when, _))| *when)
    }

    /// Removes and returns an entry that is due at `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(Instant, ConnId)> {
        match self.heap.peek() {
            Some(Reverse((when, _))) if *when <= now => self.heap.pop().map(|Reverse(e)| e),
            _ => None,
        }
    }
}
