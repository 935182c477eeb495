//! Channel history shared by the nodes of a cluster (`--redis`): Redis gives each event its
//! offset, so the loop's side cannot be a synchronous store. Events come back from Redis with
//! their position; reads of a topic's stream are asked for and answered later. This module is
//! the part without I/O: [`Sequencer`] delivers each topic's events once and in offset order,
//! and reads the stream for what a gap (a Redis outage, a lost Pub/Sub message) left out.

use std::collections::{HashMap, VecDeque};

use super::Position;
use crate::app::topics::Topic;

/// Live events held for one topic while its catch-up read is out; past it they are dropped
/// (and read from the stream afterwards).
pub const CATCH_UP_BUFFER: usize = 4_096;
/// Catch-up reads out at once; the others wait their turn (a reconnection needs one per
/// topic, and the bridge's read queue is bounded).
pub const CATCH_UPS_AT_ONCE: usize = 64;

/// An event as Redis recorded it: its position and its JSON text without them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recorded {
    /// The event's offset in its topic.
    pub offset: u64,
    /// The topic's epoch.
    pub epoch: String,
    /// The event's JSON text (without `offset` and `epoch`).
    pub event: String,
}

impl Recorded {
    /// Where the event stands.
    pub fn position(&self) -> Position {
        Position {
            offset: self.offset,
            epoch: self.epoch.clone(),
        }
    }
}

/// A read of a topic's stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadQuery {
    /// The events from offset `from` on, within the last `count` offsets (0: only where the
    /// topic stands), if the topic is still in `epoch`; when it is not, those of the new
    /// epoch from its start (`whole_on_new_epoch`) or none.
    After {
        /// The first offset wanted.
        from: u64,
        /// The epoch `from` belongs to.
        epoch: String,
        /// At most this many events.
        count: usize,
        /// Another epoch: read the new one from its start.
        whole_on_new_epoch: bool,
    },
    /// The last `count` events (a topic without history gets none made).
    Last {
        /// At most this many.
        count: usize,
    },
}

/// What a read found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadAnswer {
    /// Where the topic stands (an empty epoch: it has no history).
    pub tip: Position,
    /// (offset, event JSON text), oldest first, in the tip's epoch.
    pub events: Vec<(u64, String)>,
}

/// Counters of the shared history, for `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SharedStats {
    /// Stream reads asked for (recoveries, `history` requests, catch-ups).
    pub reads: u64,
    /// Reads that failed (Redis unreachable): answered without history.
    pub read_failures: u64,
    /// Events replayed to recovering clients.
    pub replayed: u64,
    /// Events this node delivered from the stream after a gap in what Pub/Sub brought.
    pub caught_up: u64,
    /// Events that came again (Pub/Sub after a catch-up had them): dropped.
    pub duplicates: u64,
    /// Events this node could not deliver: gone from the stream (trimmed, expired, lost)
    /// before its catch-up, or left out when a catch-up read failed.
    pub lost: u64,
}

/// What to do after an event or an answer: deliver these, in order, and read.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Flow {
    /// Events to deliver to the topic's local clients, in offset order.
    pub deliver: Vec<Recorded>,
    /// Catch-up reads to ask for (of this topic, or of others whose turn came).
    pub reads: Vec<(Topic, ReadQuery)>,
}

#[derive(Debug, Default)]
struct TopicState {
    /// The last event delivered (`None`: none yet).
    last: Option<Position>,
    /// A catch-up is under way (its read out, or waiting its turn): live events wait in
    /// `buffer`.
    catching_up: bool,
    /// Its read is out.
    asked: bool,
    buffer: Vec<Recorded>,
    /// Some live events did not fit in `buffer`.
    overflowed: bool,
}

/// Delivers each recorded topic's events once and in offset order.
#[derive(Debug)]
pub struct Sequencer {
    /// Events per topic's history (`--history-size`): what one read asks for.
    size: usize,
    topics: HashMap<Topic, TopicState>,
    /// Catch-up reads out.
    in_flight: usize,
    /// Topics whose catch-up waits for its turn.
    waiting: VecDeque<Topic>,
    /// Counters.
    pub stats: SharedStats,
}

impl Sequencer {
    /// A sequencer for histories of `size` events.
    pub fn new(size: usize) -> Self {
        Sequencer {
            size,
            topics: HashMap::new(),
            in_flight: 0,
            waiting: VecDeque::new(),
            stats: SharedStats::default(),
        }
    }

    /// The last event delivered on `topic`.
    pub fn last(&self, topic: &Topic) -> Option<&Position> {
        self.topics.get(topic).and_then(|s| s.last.as_ref())
    }

    /// An event that came from Redis live.
    pub fn live(&mut self, topic: &Topic, event: Recorded) -> Flow {
        let mut flow = Flow::default();
        let state = self.topics.entry(topic.clone()).or_default();
        advance(state, event, &mut self.stats, &mut flow);
        self.schedule(topic, &mut flow);
        flow
    }

    /// Asks for `topic`'s catch-up read if it needs one and it is its turn; queues it
    /// otherwise.
    fn schedule(&mut self, topic: &Topic, flow: &mut Flow) {
        let Some(state) = self.topics.get_mut(topic) else {
            return;
        };
        if !state.catching_up || state.asked {
            return;
        }
        if self.in_flight >= CATCH_UPS_AT_ONCE {
            if !self.waiting.contains(topic) {
                self.waiting.push_back(topic.clone());
            }
            return;
        }
        let Some(last) = &state.last else {
            return;
        };
        state.asked = true;
        self.in_flight += 1;
        let query = ReadQuery::After {
            from: last.offset + 1,
            epoch: last.epoch.clone(),
            count: self.size.max(1),
            whole_on_new_epoch: true,
        };
        flow.reads.push((topic.clone(), query));
    }

    /// The answer to a catch-up read of `topic`.
    pub fn caught_up(&mut self, topic: &Topic, answer: Result<ReadAnswer, String>) -> Flow {
        let mut flow = Flow::default();
        self.in_flight = self.in_flight.saturating_sub(1);
        self.deliver_answer(topic, answer, &mut flow);
        self.schedule(topic, &mut flow);
        while self.in_flight < CATCH_UPS_AT_ONCE {
            let Some(next) = self.waiting.pop_front() else {
                break;
            };
            self.schedule(&next, &mut flow);
        }
        flow
    }

    fn deliver_answer(
        &mut self,
        topic: &Topic,
        answer: Result<ReadAnswer, String>,
        flow: &mut Flow,
    ) {
        let Some(state) = self.topics.get_mut(topic) else {
            return;
        };
        state.catching_up = false;
        state.asked = false;
        let buffered = std::mem::take(&mut state.buffer);
        let overflowed = std::mem::take(&mut state.overflowed);
        let stats = &mut self.stats;
        match answer {
            Ok(answer) if !answer.tip.epoch.is_empty() => {
                let tip = answer.tip;
                let same = state.last.as_ref().is_some_and(|l| l.epoch == tip.epoch);
                let mut next = match &state.last {
                    Some(last) if same => last.offset + 1,
                    _ => 1,
                };
                let read = answer.events.len();
                for (offset, event) in answer.events {
                    if offset < next {
                        continue;
                    }
                    stats.lost += offset - next;
                    stats.caught_up += 1;
                    next = offset + 1;
                    let event = Recorded {
                        offset,
                        epoch: tip.epoch.clone(),
                        event,
                    };
                    state.last = Some(event.position());
                    flow.deliver.push(event);
                }
                if next <= tip.offset {
                    if read == 0 {
                        // Nothing left to read up to the tip: gone for good.
                        stats.lost += tip.offset + 1 - next;
                        state.last = Some(tip);
                    } else {
                        start_catch_up(state);
                    }
                } else if overflowed {
                    start_catch_up(state);
                }
                for event in buffered {
                    advance(state, event, stats, flow);
                }
            }
            // The read failed (or found no history): what came live is delivered as it is,
            // and the gap stays (a reconnection catches up again).
            _ => {
                for event in buffered {
                    deliver_over_gap(state, event, stats, flow);
                }
            }
        }
    }

    /// The Redis subscriber connection is back: a catch-up for every topic with a position,
    /// since what was published meanwhile never came through Pub/Sub. Returns the reads to
    /// ask for now (the others follow as answers come).
    pub fn reconnected(&mut self) -> Vec<(Topic, ReadQuery)> {
        let mut due = Vec::new();
        for (topic, state) in &mut self.topics {
            if state.last.is_some() && !state.catching_up {
                start_catch_up(state);
                due.push(topic.clone());
            }
        }
        let mut flow = Flow::default();
        for topic in due {
            self.schedule(&topic, &mut flow);
        }
        flow.reads
    }

    /// This node no longer receives `topic`: a later subscription starts afresh.
    pub fn forget(&mut self, topic: &Topic) {
        self.topics.remove(topic);
    }
}

/// A catch-up fills the gap after `state.last` (its read is asked for by
/// [`Sequencer::schedule`]); live events wait meanwhile.
fn start_catch_up(state: &mut TopicState) {
    if state.last.is_some() {
        state.catching_up = true;
        state.asked = false;
    }
}

/// One live event: delivered when it is the next one, dropped when it came before, held
/// (and a catch-up read asked for) when events are missing before it.
fn advance(state: &mut TopicState, event: Recorded, stats: &mut SharedStats, flow: &mut Flow) {
    if state.catching_up {
        if state.buffer.len() < CATCH_UP_BUFFER {
            state.buffer.push(event);
        } else {
            state.overflowed = true;
        }
        return;
    }
    let gap = match &state.last {
        None => false,
        Some(last) if last.epoch == event.epoch => {
            if event.offset <= last.offset {
                stats.duplicates += 1;
                return;
            }
            event.offset > last.offset + 1
        }
        // History was lost and began again: events of the new epoch before this one
        // never came.
        Some(_) => event.offset > 1,
    };
    if gap {
        start_catch_up(state);
        state.buffer.push(event);
        return;
    }
    state.last = Some(event.position());
    flow.deliver.push(event);
}

/// Delivers `event` without reading what is missing before it (counted as lost).
fn deliver_over_gap(
    state: &mut TopicState,
    event: Recorded,
    stats: &mut SharedStats,
    flow: &mut Flow,
) {
    let next = match &state.last {
        Some(last) if last.epoch == event.epoch => last.offset + 1,
        _ => 1,
    };
    if event.offset < next {
        stats.duplicates += 1;
        return;
    }
    stats.lost += event.offset - next;
    state.last = Some(event.position());
    flow.deliver.push(event);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(offset: u64, epoch: &str) -> Recorded {
        Recorded {
            offset,
            epoch: epoch.into(),
            event: format!("e{offset}"),
        }
    }

    fn offsets(flow: &Flow) -> Vec<u64> {
        flow.deliver.iter().map(|e| e.offset).collect()
    }

    fn answer(epoch: &str, tip: u64, events: &[u64]) -> Result<ReadAnswer, String> {
        Ok(ReadAnswer {
            tip: Position {
                offset: tip,
                epoch: epoch.into(),
            },
            events: events.iter().map(|&o| (o, format!("e{o}"))).collect(),
        })
    }

    #[test]
    fn in_order_events_pass_and_repeats_are_dropped() {
        let mut s = Sequencer::new(10);
        let t = Topic::All;
        assert_eq!(
            offsets(&s.live(&t, ev(5, "a"))),
            [5],
            "the first one sets the place"
        );
        assert_eq!(offsets(&s.live(&t, ev(6, "a"))), [6]);
        assert_eq!(offsets(&s.live(&t, ev(6, "a"))), [] as [u64; 0]);
        assert_eq!(s.stats.duplicates, 1);
    }

    #[test]
    fn a_gap_is_read_from_the_stream_and_live_events_wait_for_it() {
        let mut s = Sequencer::new(10);
        let t = Topic::Channel("c".into());
        s.live(&t, ev(1, "a"));
        let flow = s.live(&t, ev(4, "a"));
        assert_eq!(offsets(&flow), [] as [u64; 0]);
        let want = ReadQuery::After {
            from: 2,
            epoch: "a".into(),
            count: 10,
            whole_on_new_epoch: true,
        };
        assert_eq!(flow.reads, [(t.clone(), want)]);
        assert!(s.live(&t, ev(5, "a")).deliver.is_empty(), "held meanwhile");
        let flow = s.caught_up(&t, answer("a", 5, &[2, 3, 4, 5]));
        assert_eq!(offsets(&flow), [2, 3, 4, 5], "the live 4 and 5 come once");
        assert_eq!(flow.reads, []);
        assert_eq!((s.stats.caught_up, s.stats.duplicates), (4, 2));
        assert_eq!(offsets(&s.live(&t, ev(6, "a"))), [6]);
    }

    #[test]
    fn a_reconnection_catches_up_every_topic_and_trimmed_events_count_as_lost() {
        let mut s = Sequencer::new(3);
        let t = Topic::All;
        s.live(&t, ev(2, "a"));
        let reads = s.reconnected();
        assert_eq!(reads.len(), 1);
        let flow = s.caught_up(&t, answer("a", 9, &[7, 8, 9]));
        assert_eq!(offsets(&flow), [7, 8, 9]);
        assert_eq!(s.stats.lost, 4, "3 to 6 were trimmed");
    }

    #[test]
    fn a_new_epoch_is_read_from_its_start() {
        let mut s = Sequencer::new(10);
        let t = Topic::All;
        s.live(&t, ev(8, "a"));
        let flow = s.live(&t, ev(3, "b"));
        assert_eq!(flow.reads.len(), 1, "1 and 2 of the new epoch are missing");
        let flow = s.caught_up(&t, answer("b", 3, &[1, 2, 3]));
        assert_eq!(offsets(&flow), [1, 2, 3]);
        assert_eq!(s.last(&t).map(|p| p.epoch.as_str()), Some("b"));
        assert_eq!(offsets(&s.live(&t, ev(1, "c"))), [1], "a clean new start");
    }

    #[test]
    fn a_capped_read_reads_on_and_a_failed_one_delivers_what_came() {
        let mut s = Sequencer::new(2);
        let t = Topic::All;
        s.live(&t, ev(1, "a"));
        s.live(&t, ev(6, "a"));
        let flow = s.caught_up(&t, answer("a", 6, &[2, 3]));
        assert_eq!(offsets(&flow), [2, 3]);
        assert_eq!(flow.reads.len(), 1, "4 and 5 are still to read");
        let flow = s.caught_up(&t, Err("down".into()));
        assert_eq!(offsets(&flow), [6]);
        assert_eq!(s.stats.lost, 2);
    }

    #[test]
    fn a_reconnection_reads_a_bounded_number_of_topics_at_once() {
        let mut s = Sequencer::new(10);
        let topics: Vec<Topic> = (0..CATCH_UPS_AT_ONCE + 2)
            .map(|i| Topic::Channel(format!("c{i}")))
            .collect();
        for topic in &topics {
            s.live(topic, ev(1, "a"));
        }
        let first = s.reconnected();
        assert_eq!(first.len(), CATCH_UPS_AT_ONCE, "the others wait their turn");
        assert!(s.reconnected().is_empty(), "nothing asked twice");
        let (done, _) = &first[0];
        let flow = s.caught_up(done, answer("a", 1, &[]));
        assert_eq!(flow.reads.len(), 1, "one answer, one more read");
        assert!(!first.iter().any(|(t, _)| *t == flow.reads[0].0));
        let flow = s.caught_up(&first[1].0, Err("down".into()));
        assert_eq!(flow.reads.len(), 1, "a failed read frees its turn too");
    }
}
