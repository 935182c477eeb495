//! The connection table: a slab of connections, their ids, and the lists of connections
//! that need the loop's attention at the end of a turn (output to flush) or in the next
//! one (input left unread).

use slab::Slab;

use super::conn::Conn;
use super::handler::ConnId;

/// Connections by slot, with their work lists.
#[derive(Debug)]
pub(crate) struct ConnTable<S> {
    slab: Slab<Conn<S>>,
    next_serial: u32,
    /// Connections with output queued since the last flush.
    dirty: Vec<usize>,
    /// Connections with input left in their socket after their share of a turn.
    read_ready: Vec<usize>,
}

impl<S> Default for ConnTable<S> {
    fn default() -> Self {
        ConnTable {
            slab: Slab::new(),
            next_serial: 0,
            dirty: Vec::new(),
            read_ready: Vec::new(),
        }
    }
}

impl<S> ConnTable<S> {
    /// The slot the next inserted connection will get, and its id.
    pub(crate) fn next_id(&mut self) -> ConnId {
        self.next_serial = self.next_serial.wrapping_add(1);
        ConnId::new(self.slab.vacant_key(), self.next_serial)
    }

    /// Inserts a connection made with the id from [`next_id`](Self::next_id).
    pub(crate) fn insert(&mut self, conn: Conn<S>) {
        let slot = self.slab.insert(conn);
        debug_assert_eq!(slot, self.slab[slot].id.slot());
    }

    pub(crate) fn remove(&mut self, slot: usize) -> Option<Conn<S>> {
        self.slab.try_remove(slot)
    }

    pub(crate) fn get(&self, slot: usize) -> Option<&Conn<S>> {
        self.slab.get(slot)
    }

    pub(crate) fn get_mut(&mut self, slot: usize) -> Option<&mut Conn<S>> {
        self.slab.get_mut(slot)
    }

    /// The connection `id` names, if it still exists (its slot may hold a later one).
    pub(crate) fn by_id(&mut self, id: ConnId) -> Option<(usize, &mut Conn<S>)> {
        let slot = id.slot();
        self.slab
            .get_mut(slot)
            .filter(|c| c.id == id)
            .map(|c| (slot, c))
    }

    pub(crate) fn len(&self) -> usize {
        self.slab.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.slab.is_empty()
    }

    /// Every occupied slot.
    pub(crate) fn slots(&self) -> Vec<usize> {
        self.slab.iter().map(|(slot, _)| slot).collect()
    }

    /// Queues a connection for the flush at the end of the turn (once).
    pub(crate) fn mark_dirty(&mut self, slot: usize) {
        if let Some(conn) = self.slab.get_mut(slot) {
            if !conn.dirty {
                conn.dirty = true;
                self.dirty.push(slot);
            }
        }
    }

    /// The next connection to flush, taken off the list.
    pub(crate) fn pop_dirty(&mut self) -> Option<usize> {
        while let Some(slot) = self.dirty.pop() {
            if let Some(conn) = self.slab.get_mut(slot) {
                conn.dirty = false;
                return Some(slot);
            }
        }
        None
    }

    /// Remembers that a connection has input waiting with no readiness edge to come.
    pub(crate) fn mark_read_ready(&mut self, slot: usize) {
        if let Some(conn) = self.slab.get_mut(slot) {
            if !conn.read_ready {
                conn.read_ready = true;
                self.read_ready.push(slot);
            }
        }
    }

    pub(crate) fn has_read_ready(&self) -> bool {
        !self.read_ready.is_empty()
    }

    /// Takes the connections waiting to read, clearing their marks.
    pub(crate) fn take_read_ready(&mut self) -> Vec<usize> {
        let slots = std::mem::take(&mut self.read_ready);
        for &slot in &slots {
            if let Some(conn) = self.slab.get_mut(slot) {
                conn.read_ready = false;
            }
        }
        slots
    }
}
