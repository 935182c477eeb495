//! The timed side of authentication: connections that opened without a token and owe the
//! server an `auth` message by a deadline, and connections whose token runs out. Time comes
//! from the loop (`Ctx::now`), so the simulation's virtual clock drives it in tests.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use crate::server::ConnId;

/// What a connection's deadline is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lapse {
    /// It opened without a token and sent no valid `auth` message in time.
    AuthTimeout,
    /// Its token expired (and no `auth` message with a newer one came).
    TokenExpired,
}

/// Per-connection deadlines, earliest first.
#[derive(Debug, Default)]
pub struct Gate {
    due: BTreeSet<(Instant, ConnId)>,
    pending: HashMap<ConnId, (Instant, Lapse)>,
}

impl Gate {
    /// Sets `id`'s one deadline (replacing any earlier one).
    pub fn set(&mut self, id: ConnId, when: Instant, lapse: Lapse) {
        self.forget(id);
        self.due.insert((when, id));
        self.pending.insert(id, (when, lapse));
    }

    /// `id` has no deadline any more (it closed, or its credential does not expire).
    pub fn forget(&mut self, id: ConnId) {
        if let Some((when, _)) = self.pending.remove(&id) {
            self.due.remove(&(when, id));
        }
    }

    /// Whether `id` opened without a token and has not authenticated yet.
    pub fn awaits_auth(&self, id: ConnId) -> bool {
        matches!(self.pending.get(&id), Some((_, Lapse::AuthTimeout)))
    }

    /// The earliest deadline.
    pub fn next(&self) -> Option<Instant> {
        self.due.first().map(|(when, _)| *when)
    }

    /// Removes and returns a deadline that is due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<(ConnId, Lapse)> {
        let &(when, id) = self.due.first().filter(|(when, _)| *when <= now)?;
        self.due.remove(&(when, id));
        self.pending.remove(&id).map(|(_, lapse)| (id, lapse))
    }

    /// The loop was paused: every deadline moves by as much, as the loop's own do.
    pub fn pause(&mut self, paused: Duration) {
        let moved: Vec<_> = self
            .pending
            .iter()
            .map(|(id, (when, lapse))| (*id, *when + paused, *lapse))
            .collect();
        for (id, when, lapse) in moved {
            self.set(id, when, lapse);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_come_due_in_order_and_can_be_replaced() {
        let (a, b) = (ConnId::new(0, 1), ConnId::new(1, 2));
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut gate = Gate::default();
        gate.set(a, t0 + s(10), Lapse::AuthTimeout);
        gate.set(b, t0 + s(5), Lapse::TokenExpired);
        assert!(gate.awaits_auth(a) && !gate.awaits_auth(b));
        assert_eq!(gate.next(), Some(t0 + s(5)));
        assert_eq!(gate.pop_due(t0 + s(4)), None);
        assert_eq!(gate.pop_due(t0 + s(5)), Some((b, Lapse::TokenExpired)));
        gate.set(a, t0 + s(20), Lapse::TokenExpired);
        assert!(
            !gate.awaits_auth(a),
            "authenticated: now it is the token's expiry"
        );
        assert_eq!(gate.pop_due(t0 + s(19)), None);
        gate.pause(s(5));
        assert_eq!(gate.next(), Some(t0 + s(25)));
        gate.forget(a);
        assert_eq!(gate.next(), None);
    }
}
