//! Presence across nodes in Redis: who is subscribed to which channel, kept in keys that
//! expire by themselves when a node stops renewing them (it died), read back by every node.
//!
//! Each node writes one hash, `{<prefix>presence}:<node>`, field = channel, value = the JSON
//! object `{user: name}` of its users in that channel, with a TTL renewed every third of it;
//! and adds its id to the sorted set `{<prefix>presence}:nodes` (scored by the time of its last
//! heartbeat, an index so that readers need not scan the keyspace). Every heartbeat a node
//! also reads the other nodes' hashes and hands the merged table to the loop. A killed node's
//! users are therefore gone from every other node's answers at most `ttl` after its last
//! heartbeat plus one heartbeat (a third of `ttl`), with no protocol of our own: Redis expires
//! the hash. All of it runs on a thread of its own; the loop only sends changes and takes the
//! table, never waiting for Redis.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mio::Waker;

use super::redis_bridge::redis_backoff;
use super::route::Router;
use super::RedisConfig;
// The chat's vocabulary: what it asks (`PresenceChange`) and what it is told (`PresenceTable`).
pub use crate::app::chat::{PresenceChange, PresenceTable};
use crate::log::Level;

/// Where this node's presence goes and how long it lives.
#[derive(Clone, Debug)]
pub struct PresenceConfig {
    /// This node's id.
    pub node: String,
    /// Prefix of the Redis keys.
    pub prefix: String,
    /// How long a node's entries outlive its last heartbeat (a heartbeat every third).
    pub ttl: Duration,
}

/// The loop's handle on the presence thread.
pub struct Presence {
    changes: Sender<PresenceChange>,
    /// The other nodes' table, when it changed since the loop last took it.
    remote: Arc<Mutex<Option<PresenceTable>>>,
}

impl Presence {
    /// Starts the thread; `waker` wakes the loop when the other nodes' table changed.
    pub fn start(
        redis: &RedisConfig,
        config: PresenceConfig,
        waker: Arc<Waker>,
    ) -> Result<Presence, String> {
        let router = Router::new(redis, |_| Ok(()));
        let (changes, receiver) = mpsc::channel();
        let remote = Arc::new(Mutex::new(None));
        let keeper = Keeper {
            key: node_key(&config.prefix, &config.node),
            index: format!("{{{}presence}}:nodes", config.prefix),
            prefix: config.prefix,
            node: config.node,
            ttl: config.ttl,
            local: HashMap::new(),
            dirty: BTreeSet::new(),
            seen: PresenceTable::new(),
            remote: Arc::clone(&remote),
            waker,
        };
        thread::Builder::new()
            .name("redis-presence".into())
            .spawn(move || keeper.run(router, receiver))
            .map_err(|e| e.to_string())?;
        Ok(Presence { changes, remote })
    }

    /// Hands a change of this node's presence to the thread.
    pub fn change(&self, change: PresenceChange) {
        let _ = self.changes.send(change);
    }

    /// The other nodes' presence, if it changed since the last call.
    pub fn take_remote(&self) -> Option<PresenceTable> {
        self.remote.lock().ok()?.take()
    }
}

/// The presence thread's state.
struct Keeper {
    node: String,
    prefix: String,
    /// This node's hash.
    key: String,
    /// The sorted set of nodes.
    index: String,
    ttl: Duration,
    /// This node's presence: per channel, per user, its name and how many connections.
    local: HashMap<String, BTreeMap<String, (String, usize)>>,
    /// Channels whose field must be written again.
    dirty: BTreeSet<String>,
    /// The other nodes' table as last handed to the loop.
    seen: PresenceTable,
    remote: Arc<Mutex<Option<PresenceTable>>>,
    waker: Arc<Waker>,
}

/// A node's presence hash. The keys share one hash tag, so that in a Redis Cluster they all
/// live on one master and a heartbeat stays one pipeline.
fn node_key(prefix: &str, node: &str) -> String {
    format!("{{{prefix}presence}}:{node}")
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Keeper {
    fn apply(&mut self, change: PresenceChange) {
        match change {
            PresenceChange::Joined {
                channel,
                user,
                name,
            } => {
                let entry = self.local.entry(channel.clone()).or_default();
                let (held, count) = entry.entry(user).or_insert((String::new(), 0));
                *held = name;
                *count += 1;
                self.dirty.insert(channel);
            }
            PresenceChange::Left { channel, user } => {
                if let Some(users) = self.local.get_mut(&channel) {
                    if let Some((_, count)) = users.get_mut(&user) {
                        *count -= 1;
                        if *count == 0 {
                            users.remove(&user);
                        }
                    }
                    if users.is_empty() {
                        self.local.remove(&channel);
                    }
                }
                self.dirty.insert(channel);
            }
        }
    }

    fn run(mut self, mut router: Router, changes: Receiver<PresenceChange>) {
        let beat = (self.ttl / 3).max(Duration::from_millis(50));
        let mut connected = false;
        let mut backoff = redis_backoff();
        let mut next_beat = Instant::now();
        loop {
            match changes.recv_timeout(next_beat.saturating_duration_since(Instant::now())) {
                Ok(change) => self.apply(change),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            while let Ok(change) = changes.try_recv() {
                self.apply(change);
            }
            let beating = Instant::now() >= next_beat;
            if !beating && self.dirty.is_empty() {
                continue;
            }
            if beating {
                next_beat = Instant::now() + beat;
            }
            if !connected {
                if !beating {
                    continue;
                }
                match router.connection_for(self.key.as_bytes()) {
                    Ok(_) => {
                        backoff.reset();
                        // Redis may have lost everything (restarted): write it all again.
                        self.dirty.extend(self.local.keys().cloned());
                        connected = true;
                    }
                    Err(e) => {
                        if backoff.attempts() == 0 {
                            log!(Level::Warn, "redis presence cannot connect: {e}");
                        }
                        next_beat = Instant::now() + backoff.next_delay().unwrap_or(beat);
                        self.hand_over(PresenceTable::new());
                        continue;
                    }
                }
            }
            let result = router.connection_for(self.key.as_bytes()).and_then(|c| {
                self.write(c)
                    .and_then(|()| if beating { self.read(c) } else { Ok(()) })
                    .map_err(|e| e.to_string())
            });
            if let Err(e) = result {
                log!(Level::Warn, "redis presence down: {e}");
                connected = false;
                router.invalidate();
                // What the other nodes hold cannot be known until Redis answers again.
                self.hand_over(PresenceTable::new());
            }
        }
        // A graceful exit takes this node's users out at once instead of after the TTL.
        if let (true, Ok(c)) = (connected, router.connection_for(self.key.as_bytes())) {
            let _ = redis::pipe()
                .del(&self.key)
                .zrem(&self.index, &self.node)
                .query::<()>(c);
        }
    }

    /// Writes the changed channels and renews the TTL (renewing a key that expired, because
    /// Redis restarted or this node stalled, rewrites every channel).
    fn write(&mut self, c: &mut redis::Connection) -> redis::RedisResult<()> {
        let ttl_ms = self.ttl.as_millis() as u64;
        let mut pipe = redis::pipe();
        pipe.atomic();
        for channel in std::mem::take(&mut self.dirty) {
            match self.local.get(&channel) {
                Some(users) => {
                    let object: serde_json::Map<String, serde_json::Value> = users
                        .iter()
                        .map(|(user, (name, _))| (user.clone(), name.clone().into()))
                        .collect();
                    let value = serde_json::Value::Object(object).to_string();
                    pipe.hset(&self.key, &channel, value).ignore();
                }
                None => {
                    pipe.hdel(&self.key, &channel).ignore();
                }
            }
        }
        pipe.cmd("PEXPIRE").arg(&self.key).arg(ttl_ms);
        pipe.zadd(&self.index, &self.node, now_ms()).ignore();
        let (renewed,): (i64,) = pipe.query(c)?;
        if renewed == 0 && !self.local.is_empty() {
            self.dirty.extend(self.local.keys().cloned());
            return self.write(c);
        }
        Ok(())
    }

    /// Reads the other nodes' hashes; forgets, in the index, nodes whose hash expired long
    /// ago (their last heartbeat is more than ten TTLs old).
    fn read(&mut self, c: &mut redis::Connection) -> redis::RedisResult<()> {
        let stale = now_ms().saturating_sub(10 * self.ttl.as_millis() as u64);
        let nodes: Vec<String> = redis::pipe()
            .cmd("ZREMRANGEBYSCORE")
            .arg(&self.index)
            .arg("-inf")
            .arg(stale)
            .ignore()
            .zrange(&self.index, 0, -1)
            .query::<(Vec<String>,)>(c)?
            .0;
        let others: Vec<&String> = nodes.iter().filter(|n| **n != self.node).collect();
        let mut pipe = redis::pipe();
        for node in &others {
            pipe.hgetall(node_key(&self.prefix, node));
        }
        // An empty pipeline is refused by the client: nobody else to read.
        let hashes: Vec<HashMap<String, String>> = if others.is_empty() {
            Vec::new()
        } else {
            pipe.query(c)?
        };
        let mut table = PresenceTable::new();
        for (channel, users) in hashes.into_iter().flatten() {
            // Another node's entry that is not `{user: name}` is skipped, not trusted.
            let Ok(users) = serde_json::from_str::<BTreeMap<String, String>>(&users) else {
                continue;
            };
            table.entry(channel).or_default().extend(users);
        }
        self.hand_over(table);
        Ok(())
    }

    /// Gives the loop the other nodes' table if it changed.
    fn hand_over(&mut self, table: PresenceTable) {
        if table == self.seen {
            return;
        }
        self.seen = table.clone();
        if let Ok(mut remote) = self.remote.lock() {
            *remote = Some(table);
        }
        let _ = self.waker.wake();
    }
}
