//! Channel history in this process's memory: bounded per channel (`size`), in all
//! (`max_bytes`, oldest first across channels) and in time (`ttl` of idle channels).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::Instant;

use serde_json::{Map, Value};

use super::{History, HistoryLimits, HistoryStats, Position, Replay};
use crate::app::topics::Topic;

/// One topic's history.
#[derive(Debug)]
struct Stream {
    /// `TAG-N`: the process's random tag and the stream's serial, so that a history that
    /// expired and started again gets a new epoch (its offsets start again at 1).
    epoch: String,
    serial: u64,
    /// The last offset given out.
    offset: u64,
    /// Held events, oldest first.
    entries: VecDeque<Entry>,
    /// The last append (or the creation): the ttl runs from here.
    touched: Instant,
}

#[derive(Debug)]
struct Entry {
    offset: u64,
    /// Order of appends across all streams, for evicting the oldest first.
    age: u64,
    text: String,
}

/// Channel histories in memory.
#[derive(Debug)]
pub struct MemoryHistory {
    limits: HistoryLimits,
    tag: String,
    streams: HashMap<Topic, Stream>,
    /// Streams created so far (the next serial).
    created: u64,
    /// Every held entry's age and topic: the first is the oldest of all.
    by_age: BTreeMap<u64, Topic>,
    appended: u64,
    /// (touched, serial) of every stream: the first is the next to expire.
    by_touch: BTreeSet<(Instant, u64)>,
    serials: HashMap<u64, Topic>,
    stats: HistoryStats,
}

impl MemoryHistory {
    /// An empty store; `tag` (random per process start) begins every epoch.
    pub fn new(limits: HistoryLimits, tag: String) -> Self {
        MemoryHistory {
            limits,
            tag,
            streams: HashMap::new(),
            created: 0,
            by_age: BTreeMap::new(),
            appended: 0,
            by_touch: BTreeSet::new(),
            serials: HashMap::new(),
            stats: HistoryStats::default(),
        }
    }

    /// The topic's stream, created (at offset 0, in a new epoch) when it has none.
    fn stream(&mut self, topic: &Topic, now: Instant) -> &mut Stream {
        if !self.streams.contains_key(topic) {
            self.created += 1;
            let serial = self.created;
            self.by_touch.insert((now, serial));
            self.serials.insert(serial, topic.clone());
            let stream = Stream {
                epoch: format!("{}-{serial}", self.tag),
                serial,
                offset: 0,
                entries: VecDeque::new(),
                touched: now,
            };
            self.streams.insert(topic.clone(), stream);
        }
        self.streams
            .get_mut(topic)
            .expect("the stream was just inserted")
    }

    /// Drops the oldest entry of `topic`'s stream.
    fn drop_oldest(&mut self, topic: &Topic) {
        let Some(entry) = self
            .streams
            .get_mut(topic)
            .and_then(|s| s.entries.pop_front())
        else {
            return;
        };
        self.by_age.remove(&entry.age);
        self.stats.bytes -= entry.text.len() as u64;
        self.stats.messages -= 1;
    }
}

impl History for MemoryHistory {
    fn append(&mut self, topic: &Topic, mut event: Map<String, Value>, now: Instant) -> String {
        self.appended += 1;
        let age = self.appended;
        let stream = self.stream(topic, now);
        stream.offset += 1;
        event.insert("offset".into(), stream.offset.into());
        event.insert("epoch".into(), stream.epoch.clone().into());
        let text = Value::Object(event).to_string();
        let entry = Entry {
            offset: stream.offset,
            age,
            text: text.clone(),
        };
        stream.entries.push_back(entry);
        let (serial, touched) = (stream.serial, std::mem::replace(&mut stream.touched, now));
        let over_size = stream.entries.len() > self.limits.size;
        self.by_touch.remove(&(touched, serial));
        self.by_touch.insert((now, serial));
        self.by_age.insert(age, topic.clone());
        self.stats.bytes += text.len() as u64;
        self.stats.messages += 1;
        if over_size {
            self.drop_oldest(topic);
        }
        while self.stats.bytes > self.limits.max_bytes as u64 {
            let Some((_, oldest)) = self.by_age.first_key_value() else {
                break;
            };
            let oldest = oldest.clone();
            self.drop_oldest(&oldest);
            self.stats.evictions += 1;
        }
        text
    }

    fn tip(&mut self, topic: &Topic, now: Instant) -> Position {
        let stream = self.stream(topic, now);
        Position {
            offset: stream.offset,
            epoch: stream.epoch.clone(),
        }
    }

    fn since(&mut self, topic: &Topic, since: &Position, now: Instant) -> Replay {
        let stream = self.stream(topic, now);
        let tip = Position {
            offset: stream.offset,
            epoch: stream.epoch.clone(),
        };
        if since.epoch != stream.epoch || since.offset > stream.offset {
            // Another run of offsets (or one this run never reached): they say nothing here.
            return Replay {
                recovered: false,
                events: Vec::new(),
                tip,
            };
        }
        let first_held = stream
            .entries
            .front()
            .map_or(stream.offset + 1, |e| e.offset);
        let events = stream
            .entries
            .iter()
            .filter(|e| e.offset > since.offset)
            .map(|e| e.text.clone())
            .collect();
        Replay {
            recovered: since.offset + 1 >= first_held,
            events,
            tip,
        }
    }

    fn last(&self, topic: &Topic, limit: usize) -> Option<(Position, Vec<String>)> {
        let stream = self.streams.get(topic)?;
        let skip = stream.entries.len().saturating_sub(limit);
        let events = stream.entries.iter().skip(skip).map(|e| e.text.clone());
        let tip = Position {
            offset: stream.offset,
            epoch: stream.epoch.clone(),
        };
        Some((tip, events.collect()))
    }

    fn release(&mut self, topic: &Topic) {
        if self.streams.get(topic).is_some_and(|s| s.offset == 0) {
            if let Some(stream) = self.streams.remove(topic) {
                self.by_touch.remove(&(stream.touched, stream.serial));
                self.serials.remove(&stream.serial);
            }
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&(touched, serial)) = self.by_touch.first() {
            if now < touched + self.limits.ttl {
                break;
            }
            self.by_touch.pop_first();
            let Some(topic) = self.serials.remove(&serial) else {
                continue;
            };
            if let Some(stream) = self.streams.remove(&topic) {
                for entry in stream.entries {
                    self.by_age.remove(&entry.age);
                    self.stats.bytes -= entry.text.len() as u64;
                    self.stats.messages -= 1;
                }
            }
        }
    }

    fn next_expiry(&self) -> Option<Instant> {
        self.by_touch
            .first()
            .map(|(touched, _)| *touched + self.limits.ttl)
    }

    fn stats(&self) -> HistoryStats {
        self.stats
    }
}
