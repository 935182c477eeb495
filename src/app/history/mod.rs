//! Channel history: the recent events of every channel (and of the all-clients chat), each at
//! an `offset` that grows by one per event, within an `epoch` that names one unbroken run of
//! offsets. A client that remembers the last (offset, epoch) it saw gets exactly what it missed
//! (PROTOCOL.md, "Recovery").
//!
//! [`History`] is what the chat needs of a store in this process: [`MemoryHistory`] (lost on
//! restart, hence a new epoch per start). A store shared by the nodes of a cluster (Redis
//! Streams, with `--redis`) cannot answer at once: the offset of an event is known when it
//! comes back from Redis, and a read is answered later. Its loop-side part is [`shared`]:
//! the chat sends events and reads through the cluster and takes what comes back.

use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use super::topics::Topic;

mod memory;
pub mod shared;

pub use memory::MemoryHistory;

/// How much history is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryLimits {
    /// Events kept per channel (0: no history at all).
    pub size: usize,
    /// A channel without a new event for this long loses its history (and its epoch).
    pub ttl: Duration,
    /// Bytes of stored events in all channels together; past it the oldest go first.
    pub max_bytes: usize,
}

impl Default for HistoryLimits {
    fn default() -> Self {
        HistoryLimits {
            size: 100,
            ttl: Duration::from_secs(3600),
            max_bytes: 64 * 1024 * 1024,
        }
    }
}

/// A place in a channel's history: the offset of its last event (0 before any) in an epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Position {
    /// The last event's offset.
    pub offset: u64,
    /// The run of offsets it belongs to: offsets of different epochs are unrelated.
    pub epoch: String,
}

/// The answer to "what came after this position".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replay {
    /// The events are exactly those after the position: nothing was lost.
    pub recovered: bool,
    /// The events after the position that are still held, oldest first (when not recovered:
    /// those of the same epoch that are left, or none when the epoch changed).
    pub events: Vec<String>,
    /// Where the channel stands now.
    pub tip: Position,
}

/// What the store holds, for `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HistoryStats {
    /// Bytes of stored event text.
    pub bytes: u64,
    /// Stored events.
    pub messages: u64,
    /// Events dropped to stay within the byte cap.
    pub evictions: u64,
}

/// A store of channel histories. `topic` is [`Topic::All`] for the chat or a channel.
pub trait History: std::fmt::Debug {
    /// Stores `event` as the topic's next event, with its `offset` and `epoch` added; returns
    /// the event's JSON text, as it is to be delivered.
    fn append(&mut self, topic: &Topic, event: Map<String, Value>, now: Instant) -> String;

    /// Where the topic stands (its history starts here when it has none yet).
    fn tip(&mut self, topic: &Topic, now: Instant) -> Position;

    /// The events after `since`.
    fn since(&mut self, topic: &Topic, since: &Position, now: Instant) -> Replay;

    /// The last `limit` events, oldest first, and where the topic stands (`None`: it has no
    /// history; reading creates none, so that requests for made-up names cost nothing).
    fn last(&self, topic: &Topic, limit: usize) -> Option<(Position, Vec<String>)>;

    /// The topic's last subscriber left: a history without any event is dropped (made-up
    /// names subscribed and left must not pile up until their ttl).
    fn release(&mut self, topic: &Topic);

    /// Forgets the histories idle past the ttl.
    fn expire(&mut self, now: Instant);

    /// When [`expire`](Self::expire) next has something to do.
    fn next_expiry(&self) -> Option<Instant>;

    /// What is held.
    fn stats(&self) -> HistoryStats;
}
