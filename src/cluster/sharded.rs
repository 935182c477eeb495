//! The subscriber's session on a Redis Cluster: sharded Pub/Sub (`SSUBSCRIBE`, Redis 7), each
//! topic on a connection to the master that owns its slot (publications arrive there as
//! `smessage`), one connection per such master, polled in turn.
//!
//! These connections speak RESP3, where what the server pushes (`smessage`, `ssubscribe`,
//! `sunsubscribe`) is told apart from replies: the client library, after a read that timed
//! out, discards the next *reply* as the late answer to an earlier command, never a push. For
//! the same reason a master's liveness is probed with a repeated `SSUBSCRIBE` of a topic it
//! already has (answered by a push) rather than a `PING` (answered by a reply).
//!
//! Whatever goes wrong on any of them (a closed connection, an error reply such as `MOVED`, a
//! PING unanswered, or a `sunsubscribe` the server pushed because the topic's slot moved to
//! another master) ends the session: the bridge reports the subscriber down, asks for the slot
//! map again and subscribes everything anew, as after a Redis outage; the loop's catch-up
//! from the streams then reads what was published meanwhile.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::redis_bridge::{absorb, Interest, Relay, Session, PING_INTERVAL, REPLY_TIMEOUT};
use super::route::Router;
use crate::log::Level;

/// How long one connection is read before the next one's turn: short, since a publication
/// on another master waits for it.
const SLICE: Duration = Duration::from_millis(10);

/// One master's subscription connection.
struct Shard {
    connection: redis::Connection,
    /// When a probe went out that has not been answered yet.
    pinged: Option<Instant>,
}

/// What one reply from a master was.
enum Heard {
    /// A publication, handed to the loop (`false`: the loop's side is gone).
    Message(bool),
    Subscribed(String),
    Unsubscribed(String),
    /// A reply, or a push of no interest.
    Other,
}

/// The session's state: connections per master, and where each topic is subscribed.
struct Shards {
    links: BTreeMap<usize, Shard>,
    /// Each subscribed topic's master.
    homes: BTreeMap<String, usize>,
    /// `SUNSUBSCRIBE`s sent and not yet confirmed, per topic: a confirmation beyond them is
    /// the server's own (the slot moved).
    leaving: BTreeMap<String, usize>,
}

/// Subscribes every wanted topic on its master, then relays publications until something
/// fails (`Err`) or the loop's side is gone (`Ok`).
pub(super) fn serve(router: &mut Router, session: &mut Session<'_>) -> Result<(), String> {
    if absorb(session.interest, session.wanted).is_err() {
        return Ok(());
    }
    let mut shards = Shards {
        links: BTreeMap::new(),
        homes: BTreeMap::new(),
        leaving: BTreeMap::new(),
    };
    for topic in session.wanted.iter() {
        shards.subscribe(router, &session.relay, topic.clone())?;
    }
    log!(
        Level::Info,
        "redis cluster subscriber up ({} topics on {} masters)",
        session.wanted.len(),
        shards.links.len()
    );
    session.backoff.reset();
    (session.report)(true);
    let mut pinged = Instant::now();
    loop {
        let Ok(changes) = absorb(session.interest, session.wanted) else {
            return Ok(());
        };
        for change in changes {
            match change {
                Interest::Subscribe(t) => shards.subscribe(router, &session.relay, t)?,
                Interest::Unsubscribe(t) => shards.unsubscribe(&t)?,
            }
        }
        if pinged.elapsed() >= PING_INTERVAL {
            // Silence may be a hung master: a node whose clients only listen would otherwise
            // never notice.
            shards.probe()?;
            pinged = Instant::now();
        }
        if shards.links.is_empty() {
            std::thread::sleep(SLICE);
        }
        let nodes: Vec<usize> = shards.links.keys().copied().collect();
        for node in nodes {
            while let Some(heard) = shards.receive(node, &session.relay)? {
                match heard {
                    Heard::Message(false) => return Ok(()),
                    Heard::Unsubscribed(t) => shards.unsubscribed(t)?,
                    Heard::Message(true) | Heard::Subscribed(_) | Heard::Other => {}
                }
            }
        }
    }
}

impl Shards {
    /// `SSUBSCRIBE`s `topic` on its master and waits for the confirmation.
    fn subscribe(
        &mut self,
        router: &mut Router,
        relay: &Relay<'_>,
        topic: String,
    ) -> Result<(), String> {
        let node = router.node_of(topic.as_bytes())?;
        if let std::collections::btree_map::Entry::Vacant(slot) = self.links.entry(node) {
            let connection = router.open(node, redis::ProtocolVersion::RESP3)?;
            connection
                .set_read_timeout(Some(SLICE))
                .map_err(|e| e.to_string())?;
            slot.insert(Shard {
                connection,
                pinged: None,
            });
        }
        self.send(node, redis::cmd("SSUBSCRIBE").arg(&topic))?;
        let deadline = Instant::now() + REPLY_TIMEOUT;
        loop {
            match self.receive(node, relay)? {
                Some(Heard::Subscribed(t)) if t == topic => break,
                Some(Heard::Unsubscribed(t)) => self.unsubscribed(t)?,
                Some(Heard::Message(false)) => return Ok(()),
                Some(_) => {}
                None if Instant::now() >= deadline => {
                    return Err(format!("redis cluster: no answer to SSUBSCRIBE {topic}"))
                }
                None => {}
            }
        }
        self.homes.insert(topic.clone(), node);
        relay.subscribed(topic);
        Ok(())
    }

    /// `SUNSUBSCRIBE`s `topic` (confirmed later, in [`receive`](Self::receive)).
    fn unsubscribe(&mut self, topic: &str) -> Result<(), String> {
        let Some(node) = self.homes.remove(topic) else {
            return Ok(());
        };
        *self.leaving.entry(topic.to_owned()).or_default() += 1;
        self.send(node, redis::cmd("SUNSUBSCRIBE").arg(topic))
    }

    /// A `sunsubscribe` arrived: the confirmation of ours, or the server dropped a topic we
    /// still want (its slot moved), which ends the session.
    fn unsubscribed(&mut self, topic: String) -> Result<(), String> {
        if let Some(pending) = self.leaving.get_mut(&topic) {
            *pending -= 1;
            if *pending == 0 {
                self.leaving.remove(&topic);
            }
            return Ok(());
        }
        if self.homes.contains_key(&topic) {
            return Err(format!("redis cluster: {topic} moved to another master"));
        }
        Ok(())
    }

    /// Probes every master by subscribing one of its topics again; one whose previous probe
    /// is unanswered for [`REPLY_TIMEOUT`] fails. A master left without topics is let go.
    fn probe(&mut self) -> Result<(), String> {
        let mut probes = BTreeMap::new();
        for (topic, node) in &self.homes {
            probes.entry(*node).or_insert_with(|| topic.clone());
        }
        self.links.retain(|node, _| probes.contains_key(node));
        for (node, topic) in probes {
            let since = self.links.get(&node).and_then(|s| s.pinged);
            match since {
                Some(at) if at.elapsed() >= REPLY_TIMEOUT => {
                    return Err("redis cluster: a master does not answer".into())
                }
                Some(_) => {}
                None => {
                    self.send(node, redis::cmd("SSUBSCRIBE").arg(&topic))?;
                    if let Some(shard) = self.links.get_mut(&node) {
                        shard.pinged = Some(Instant::now());
                    }
                }
            }
        }
        Ok(())
    }

    fn send(&mut self, node: usize, command: &redis::Cmd) -> Result<(), String> {
        let shard = self.links.get_mut(&node).ok_or("redis cluster: no link")?;
        shard
            .connection
            .send_packed_command(&command.get_packed_command())
            .map_err(|e| e.to_string())
    }

    /// One reply from `node`, waiting at most [`SLICE`] (`None`: nothing came).
    fn receive(&mut self, node: usize, relay: &Relay<'_>) -> Result<Option<Heard>, String> {
        let shard = self.links.get_mut(&node).ok_or("redis cluster: no link")?;
        let value = match shard.connection.recv_response() {
            Ok(value) => value,
            Err(e) if e.is_timeout() => return Ok(None),
            Err(e) => return Err(e.to_string()),
        };
        let heard = parse(value, relay)?;
        if matches!(heard, Heard::Subscribed(_)) {
            shard.pinged = None;
        }
        Ok(Some(heard))
    }
}

/// What a subscribed RESP3 connection received: `smessage` / `ssubscribe` / `sunsubscribe`
/// pushes carry `[channel, payload-or-count]`.
fn parse(value: redis::Value, relay: &Relay<'_>) -> Result<Heard, String> {
    use redis::{PushKind, Value};
    let (kind, data) = match value {
        Value::Push { kind, data } => (kind, data),
        Value::ServerError(e) => return Err(format!("redis cluster: {e:?}")),
        _ => return Ok(Heard::Other),
    };
    let channel = match data.first() {
        Some(Value::BulkString(bytes)) => String::from_utf8_lossy(bytes).into_owned(),
        _ => return Ok(Heard::Other),
    };
    Ok(match (kind, data.get(1)) {
        (PushKind::SMessage, Some(Value::BulkString(payload))) => {
            Heard::Message(relay.message(&channel, payload))
        }
        (PushKind::SSubscribe, _) => Heard::Subscribed(channel),
        (PushKind::SUnsubscribe, _) => Heard::Unsubscribed(channel),
        _ => Heard::Other,
    })
}
