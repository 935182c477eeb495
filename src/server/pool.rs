//! Storage lent to connections while they are busy and returned when they go idle.
//!
//! A connection needs a read buffer only while bytes are pending and outbound storage only
//! while replies are queued. Taking both from loop-wide free lists, and giving them back when
//! the connection goes quiet, means an idle connection holds no buffer at all (its memory is
//! its table entry), while a busy one allocates nothing per message in the steady state.

use std::collections::VecDeque;

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
}

/// Byte buffers (read buffers, outbound buffers).
pub(crate) type BufferPool = Pool<Vec<u8>>;

impl<T: Reusable> Pool<T> {
    pub(crate) fn new(keep: usize, max_capacity: usize) -> Self {
        Pool {
            free: Vec::new(),
            keep,
            max_capacity,
        }
    }

    /// A container with room for at least `capacity` elements (contents unspecified).
    pub(crate) fn take(&mut self, capacity: usize) -> T {
        match self.free.pop() {
            Some(mut v) => {
                v.reserve_total(capacity);
                v
            }
            None => T::with_capacity(capacity),
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
}
