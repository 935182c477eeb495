//! Buffers lent to connections while they are busy and returned when they go idle.
//!
//! A connection needs a read buffer only while bytes are pending and an outbound buffer only
//! while replies are queued. Taking both from a loop-wide free list, and giving them back when
//! the connection goes quiet, means an idle connection holds no buffer at all (its memory is
//! its table entry), while a busy one allocates nothing per message in the steady state.

/// Buffers kept for reuse, at most `keep` of them.
#[derive(Debug)]
pub(crate) struct BufferPool {
    free: Vec<Vec<u8>>,
    keep: usize,
    /// Buffers larger than this are freed rather than kept (a 16 MiB message's buffer must
    /// not stay around).
    max_capacity: usize,
}

impl BufferPool {
    pub(crate) fn new(keep: usize, max_capacity: usize) -> Self {
        BufferPool {
            free: Vec::new(),
            keep,
            max_capacity,
        }
    }

    /// A buffer with at least `capacity` bytes of capacity (length unspecified).
    pub(crate) fn take(&mut self, capacity: usize) -> Vec<u8> {
        match self.free.pop() {
            Some(mut v) => {
                v.reserve(capacity.saturating_sub(v.len()));
                v
            }
            None => Vec::with_capacity(capacity),
        }
    }

    /// Returns a buffer; it is kept if the pool has room and it is not oversized.
    pub(crate) fn give(&mut self, v: Vec<u8>) {
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
    }
}
