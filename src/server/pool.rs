//! Storage lent to connections while they are busy and returned when they go idle.
//!
//! A connection needs a read buffer only while bytes are pending and outbound storage only
//! while replies are queued. Taking both from loop-wide free lists, and giving them back when
//! the connection goes quiet, means an idle connection holds no buffer at all (its memory is
//! its table entry), while a busy one allocates nothing per message in the steady state.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// A growable container a pool can keep.
pub(crate) trait Reusable {
    fn with_capacity(capacity: usize) -> Self;
    fn capacity(&self) -> usize;
    /// Makes room for at least `capacity` elements in all.
    fn reserve_total(&mut self, capacity: usize);
}

impl<T> Reusable for Vec<T> {
    fn with_capacity(capacity: usize) -> Self {
        Vec::with_capacity(capacity)
    }
    fn capacity(&self) -> usize {
        Vec::capacity(self)
    }
    fn reserve_total(&mut self, capacity: usize) {
        self.reserve(capacity.saturating_sub(self.len()));
    }
}

impl<T> Reusable for VecDeque<T> {
    fn with_capacity(capacity: usize) -> Self {
        VecDeque::with_capacity(capacity)
    }
    fn capacity(&self) -> usize {
        VecDeque::capacity(self)
    }
    fn reserve_total(&mut self, capacity: usize) {
        self.reserve(capacity.saturating_sub(self.len()));
    }
}

/// Containers kept for reuse, at most `keep` of them.
#[derive(Debug)]
pub(crate) struct Pool<T> {
    pub(super) free: Vec<T>,
    keep: usize,
    /// Containers larger than this are freed rather than kept (a 16 MiB message's buffer
    /// must not stay around).
    max_capacity: usize,
    /// For an elastic pool, the `keep` it returns to once demand has fallen.
    floor: Option<usize>,
    /// When an elastic pool last ran short.
    last_short: Option<Instant>,
}

/// An elastic pool that has not run short for this long gives its surplus back.
const SURPLUS_KEPT: Duration = Duration::from_secs(10);

/// Byte buffers (read buffers, outbound buffers).
pub(crate) type BufferPool = Pool<Vec<u8>>;

impl<T: Reusable> Pool<T> {
    pub(crate) fn new(keep: usize, max_capacity: usize) -> Self {
        Pool {
            free: Vec::new(),
            keep,
            max_capacity,
            floor: None,
            last_short: None,
        }
    }

    /// A pool that keeps at least `floor` containers and, while the loop needs more at once
    /// (a broadcast lends one to every receiver in the same turn), as many as it needed:
    /// each time it runs short it keeps one more. Ten seconds after it last ran short,
    /// [`settle`](Self::settle) gives the surplus back.
    pub(crate) fn elastic(floor: usize, max_capacity: usize) -> Self {
        Pool {
            floor: Some(floor),
            ..Pool::new(floor, max_capacity)
        }
    }

    /// A container with room for at least `capacity` elements (contents unspecified).
    pub(crate) fn take(&mut self, capacity: usize) -> T {
        match self.free.pop() {
            Some(mut v) => {
                v.reserve_total(capacity);
                v
            }
            None => {
                if self.floor.is_some() {
                    self.keep += 1;
                    // Stamped at the next `settle` (the pool does not read the clock).
                    self.last_short = None;
                }
                T::with_capacity(capacity)
            }
        }
    }

    /// Called once per loop turn: an elastic pool that has not run short for
    /// [`SURPLUS_KEPT`] goes back to its floor.
    pub(crate) fn settle(&mut self, now: Instant) {
        let Some(floor) = self.floor.filter(|floor| self.keep > *floor) else {
            return;
        };
        match self.last_short {
            None => self.last_short = Some(now),
            Some(at) if now.saturating_duration_since(at) >= SURPLUS_KEPT => {
                self.keep = floor;
                self.free.truncate(floor);
                self.free.shrink_to_fit();
            }
            Some(_) => {}
        }
    }

    /// Returns a container; it is kept if the pool has room and it is not oversized.
    pub(crate) fn give(&mut self, v: T) {
        if v.capacity() > 0 && v.capacity() <= self.max_capacity && self.free.len() < self.keep {
            self.free.push(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_and_bounds() {
        let mut pool = BufferPool::new(1, 1024);
        let a = pool.take(100);
        let ptr = a.as_ptr();
        pool.give(a);
        let again = pool.take(10);
        assert_eq!(again.as_ptr(), ptr, "the buffer came back");
        pool.give(Vec::with_capacity(10));
        pool.give(Vec::with_capacity(10));
        assert_eq!(pool.free.len(), 1, "keeps at most `keep`");
        let mut pool = BufferPool::new(4, 1024);
        pool.give(Vec::with_capacity(4096));
        assert!(pool.free.is_empty(), "oversized buffers are freed");
        pool.give(Vec::new());
        assert!(
            pool.free.is_empty(),
            "a container that owns no storage is not kept"
        );
    }

    #[test]
    fn an_elastic_pool_keeps_what_one_turn_needed_then_gives_the_surplus_back() {
        let start = Instant::now();
        let mut pool = BufferPool::elastic(2, 1024);
        // One turn lends five at once (a broadcast to five receivers), then all come back.
        let lent: Vec<Vec<u8>> = (0..5).map(|_| pool.take(8)).collect();
        for v in lent {
            pool.give(v);
        }
        pool.settle(start);
        assert_eq!(pool.free.len(), 5, "all kept for the next turn");
        // The next turns take from the pool without allocating.
        let ptrs: Vec<*const u8> = pool.free.iter().map(|v| v.as_ptr()).collect();
        let again: Vec<Vec<u8>> = (0..5).map(|_| pool.take(8)).collect();
        assert!(again.iter().all(|v| ptrs.contains(&v.as_ptr())));
        for v in again {
            pool.give(v);
        }
        pool.settle(start + Duration::from_secs(9));
        assert_eq!(pool.free.len(), 5);
        // Ten seconds without running short: back to the floor.
        pool.settle(start + SURPLUS_KEPT);
        assert_eq!(pool.free.len(), 2);
        pool.give(Vec::with_capacity(8));
        assert_eq!(pool.free.len(), 2, "keeps its floor again");
        // A plain pool never grows.
        let mut plain = BufferPool::new(2, 1024);
        let lent: Vec<Vec<u8>> = (0..5).map(|_| plain.take(8)).collect();
        for v in lent {
            plain.give(v);
        }
        assert_eq!(plain.free.len(), 2);
    }
}
