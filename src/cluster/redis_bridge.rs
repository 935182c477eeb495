//! The loop's handle on the Redis threads ([`Bridge`]), the subscriber thread, and what they
//! share (`publisher` and `streams` hold the publishing and reading threads).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use mio::Waker;

use super::publisher::Publisher;
use super::route::Router;
use super::sharded;
use super::streams::{self, Entries, ReadRequest};
use super::RedisConfig;
use crate::app::history::shared::ReadQuery;
use crate::backoff::Backoff;
use crate::log::Level;

/// How long a connection attempt may take.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long the subscriber blocks for a message before it looks for (un)subscribe requests.
pub(super) const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// How long Redis may take to answer a command (PUBLISH, SUBSCRIBE, PING, SET) before the
/// connection is given up: longer than a short stall (a `DEBUG SLEEP 1`, a fork for a
/// snapshot), short enough that a hung Redis is seen within [`PING_INTERVAL`] + this.
pub(super) const REPLY_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the subscriber may hear nothing from Redis before it sends a PING: a node whose
/// clients only listen learns that Redis hangs within `PING_INTERVAL + REPLY_TIMEOUT`.
pub(super) const PING_INTERVAL: Duration = Duration::from_secs(1);
/// How long a contested claim keeps the node reported as a duplicate after the last sighting.
const CONTESTED_FOR: Duration = Duration::from_secs(10);
/// Publications waiting for the publisher thread; beyond this they are dropped and counted.
const PUBLISH_QUEUE: usize = 10_000;
/// Messages from Redis waiting for the loop.
const INBOUND_QUEUE: usize = 10_000;

/// What the bridge reports to the loop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Inbound {
    /// A publication on a subscribed topic.
    Message {
        /// The Redis topic.
        topic: String,
        /// The publication.
        payload: Vec<u8>,
    },
    /// The subscription connection came up (`true`, all topics subscribed) or went down.
    Status(bool),
    /// Redis confirmed a subscription: publications on the topic now reach this node.
    Subscribed(String),
    /// The answer to [`Bridge::read`] number `id`.
    Read {
        /// The read's number.
        id: u64,
        /// The entries, or why there are none.
        result: Result<Entries, String>,
    },
}

/// A publication waiting for the publisher: plain (`PUBLISH`) or recorded in the topic's
/// stream first (the append script).
pub(super) struct Outgoing {
    pub(super) topic: String,
    pub(super) payload: Vec<u8>,
    pub(super) recorded: bool,
}

pub(super) enum Interest {
    Subscribe(String),
    Unsubscribe(String),
}

#[derive(Debug, Default)]
pub(super) struct Shared {
    /// Bumped each time the subscriber loses its connection: Redis went away, so the
    /// publisher's connection is dead too even though it has not tried to use it yet.
    pub(super) generation: AtomicU64,
    pub(super) subscriber_up: AtomicBool,
    pub(super) publisher_up: AtomicBool,
    /// Publications in the queue, not yet taken by the publisher.
    pub(super) queued: AtomicU64,
    pub(super) published: AtomicU64,
    pub(super) dropped: AtomicU64,
    pub(super) unknown: AtomicU64,
    pub(super) received: AtomicU64,
    pub(super) oversized: AtomicU64,
    /// When the claim was last found held by another process, in milliseconds since
    /// `started` plus one (0: never).
    pub(super) contested_at: AtomicU64,
    /// Publications larger than this are not relayed ([`RedisConfig::max_payload`]).
    pub(super) max_payload: usize,
    /// Epochs made so far (the next one's serial).
    pub(super) epochs: AtomicU64,
    /// Stream reads asked of Redis, and those that failed.
    pub(super) reads: AtomicU64,
    pub(super) read_failures: AtomicU64,
}

impl Shared {
    /// The claim was found held by another process within [`CONTESTED_FOR`].
    pub(super) fn contested(&self, started: Instant) -> bool {
        match self.contested_at.load(Ordering::Relaxed) {
            0 => false,
            at => {
                started
                    .elapsed()
                    .saturating_sub(Duration::from_millis(at - 1))
                    < CONTESTED_FOR
            }
        }
    }
}

/// The loop's handle on the Redis threads.
pub struct Bridge {
    interest: Sender<Interest>,
    /// `None` once [`close`](Self::close) began.
    publications: Option<SyncSender<Outgoing>>,
    /// Reads for the reader thread (`None` without history in Redis).
    reads: Option<SyncSender<ReadRequest>>,
    /// Wakes the loop (to hand it a read refused at once).
    waker: Arc<Waker>,
    /// Reads refused at once (queue full), answered at the next [`drain`](Self::drain).
    refused_reads: std::sync::Mutex<Vec<u64>>,
    /// Disconnected when the publisher thread has ended.
    publisher_done: Receiver<()>,
    inbound: Receiver<Inbound>,
    shared: Arc<Shared>,
    config: RedisConfig,
    token: String,
    started: Instant,
}

/// A reconnection schedule that never gives up: Redis may be down for long.
pub(super) fn redis_backoff() -> Backoff {
    Backoff::new(
        Duration::from_millis(100),
        2.0,
        Duration::from_secs(5),
        u32::MAX,
    )
}

/// The Redis client for `url` (one of `config`'s) speaking `protocol`, trusting the CAs of
/// the config's CA file if it names one.
pub(super) fn client_for(
    url: &str,
    config: &RedisConfig,
    protocol: redis::ProtocolVersion,
) -> Result<redis::Client, String> {
    use redis::IntoConnectionInfo;
    let info = url.into_connection_info().map(|info| {
        let settings = info.redis_settings().clone().set_protocol(protocol);
        info.set_redis_settings(settings)
    });
    let client = match &config.ca_file {
        None => info.and_then(redis::Client::open),
        #[cfg(feature = "tls")]
        Some(path) => {
            let pem = std::fs::read(path)
                .map_err(|e| format!("redis CA file {}: {e}", path.display()))?;
            let certificates = redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem),
            };
            info.and_then(|info| redis::Client::build_with_tls(info, certificates))
        }
        #[cfg(not(feature = "tls"))]
        Some(_) => return Err("a redis CA file needs the `tls` feature".into()),
    };
    client.map_err(|e| format!("redis URL {:?}: {e}", RedisConfig::redact(url)))
}

/// 16 random hex digits: tells this process apart from any other.
fn random_token() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    format!("{:016x}", hasher.finish())
}

impl Bridge {
    /// Starts the subscriber and publisher threads, subscribed to `topics` before the
    /// subscriber first reports itself up (so that a node is not up while its standing
    /// topics are not yet subscribed). `waker` wakes the loop when messages arrive; the loop
    /// then calls [`drain`](Self::drain).
    pub fn start(
        config: RedisConfig,
        topics: &[String],
        waker: Arc<Waker>,
    ) -> Result<Bridge, String> {
        // A bad URL or CA file fails here, not on the threads.
        for url in config.urls() {
            client_for(url, &config, redis::ProtocolVersion::RESP2)?;
        }
        let shared = Arc::new(Shared {
            max_payload: config.max_payload,
            ..Shared::default()
        });
        let token = random_token();
        let started = Instant::now();
        let (interest_tx, interest_rx) = mpsc::channel();
        for topic in topics {
            let _ = interest_tx.send(Interest::Subscribe(topic.clone()));
        }
        let (publish_tx, publish_rx) = mpsc::sync_channel(PUBLISH_QUEUE);
        let (done_tx, done_rx) = mpsc::channel();
        // Bounded: if the loop falls behind, the subscriber waits, and Redis cuts it off once
        // its own output buffer limit is reached (then it reconnects).
        let (inbound_tx, inbound_rx) = mpsc::sync_channel(INBOUND_QUEUE);
        let mut reads = None;
        if let Some(settings) = config.history.clone() {
            let (read_tx, read_rx) = mpsc::sync_channel(streams::READ_QUEUE);
            let router = Router::new(&config, streams::Scripts::load);
            let (shared, token) = (Arc::clone(&shared), token.clone());
            let (inbound, waker) = (inbound_tx.clone(), Arc::clone(&waker));
            thread::Builder::new()
                .name("redis-read".into())
                .spawn(move || {
                    streams::reader(router, settings, token, read_rx, inbound, waker, shared)
                })
                .map_err(|e| e.to_string())?;
            reads = Some(read_tx);
        }
        {
            let router = Router::new(&config, |_| Ok(()));
            let (shared, waker) = (Arc::clone(&shared), Arc::clone(&waker));
            thread::Builder::new()
                .name("redis-sub".into())
                .spawn(move || subscriber(router, interest_rx, inbound_tx, waker, shared))
                .map_err(|e| e.to_string())?;
        }
        {
            let init = match config.history {
                Some(_) => streams::Scripts::load,
                None => |_: &mut redis::Connection| Ok(()),
            };
            let publisher = Publisher {
                router: Router::new(&config, init),
                shared: Arc::clone(&shared),
                streams: config.history.clone(),
                token: token.clone(),
                claim: config.claim.clone().map(|key| (key, token.clone())),
                foreign_sightings: 0,
                started,
                _done: done_tx,
            };
            thread::Builder::new()
                .name("redis-pub".into())
                .spawn(move || publisher.run(publish_rx))
                .map_err(|e| e.to_string())?;
        }
        Ok(Bridge {
            interest: interest_tx,
            publications: Some(publish_tx),
            reads,
            waker,
            refused_reads: std::sync::Mutex::default(),
            publisher_done: done_rx,
            inbound: inbound_rx,
            shared,
            config,
            token,
            started,
        })
    }

    /// The bridge's settings.
    pub fn config(&self) -> &RedisConfig {
        &self.config
    }

    /// A random token of this process (16 hex digits), also the value of its claim.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Publishes without waiting; when the queue is full (Redis down or slow) or the bridge
    /// is closing, the publication is dropped and counted.
    pub fn publish(&self, topic: String, payload: Vec<u8>) {
        self.enqueue(Outgoing {
            topic,
            payload,
            recorded: false,
        });
    }

    /// Appends `payload` to the topic's stream and publishes it with its position (see
    /// [`streams`](super::streams); needs [`RedisConfig::history`]), without waiting; dropped
    /// and counted as [`publish`](Self::publish) is.
    pub fn append(&self, topic: String, payload: Vec<u8>) {
        self.enqueue(Outgoing {
            topic,
            payload,
            recorded: true,
        });
    }

    /// Reads a topic's stream on the reader thread; the answer arrives as [`Inbound::Read`]
    /// with this `id` (an error at once when the read queue is full or there is no history).
    pub fn read(&self, id: u64, topic: String, query: ReadQuery) {
        let request = ReadRequest { id, topic, query };
        let sent = self
            .reads
            .as_ref()
            .is_some_and(|r| r.try_send(request).is_ok());
        if !sent {
            if let Ok(mut refused) = self.refused_reads.lock() {
                refused.push(id);
            }
            let _ = self.waker.wake();
        }
    }

    fn enqueue(&self, outgoing: Outgoing) {
        let Some(publications) = &self.publications else {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        self.shared.queued.fetch_add(1, Ordering::Relaxed);
        match publications.try_send(outgoing) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.shared.queued.fetch_sub(1, Ordering::Relaxed);
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Graceful shutdown, once at exit: waits up to `timeout` for every queued publication
    /// to be handed to Redis (or counted as failed). Returns how many were still queued when
    /// the time ran out; they are counted as dropped. Later publications are dropped.
    pub fn close(&mut self, timeout: Duration) -> u64 {
        // The publisher takes what is queued, then sees the channel closed and ends.
        drop(self.publications.take());
        match self.publisher_done.recv_timeout(timeout) {
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let left = self.shared.queued.swap(0, Ordering::Relaxed);
                self.shared.dropped.fetch_add(left, Ordering::Relaxed);
                left
            }
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => 0,
        }
    }

    /// Starts receiving a topic (also across reconnects).
    pub fn subscribe(&self, topic: String) {
        let _ = self.interest.send(Interest::Subscribe(topic));
    }

    /// Stops receiving a topic.
    pub fn unsubscribe(&self, topic: String) {
        let _ = self.interest.send(Interest::Unsubscribe(topic));
    }

    /// What arrived since the last call.
    pub fn drain(&self) -> impl Iterator<Item = Inbound> + '_ {
        let refused = self
            .refused_reads
            .lock()
            .map(|mut r| std::mem::take(&mut *r))
            .unwrap_or_default();
        let refused = refused.into_iter().map(|id| Inbound::Read {
            id,
            result: Err("too many reads waiting for redis".into()),
        });
        refused.chain(self.inbound.try_iter())
    }

    /// Stream reads asked of Redis, and those of them that failed.
    pub fn reads(&self) -> (u64, u64) {
        let s = &self.shared;
        (
            s.reads.load(Ordering::Relaxed),
            s.read_failures.load(Ordering::Relaxed),
        )
    }

    /// Both connections are up (and the subscriber's link answered its last PING).
    pub fn is_up(&self) -> bool {
        self.shared.subscriber_up.load(Ordering::Relaxed)
            && self.shared.publisher_up.load(Ordering::Relaxed)
    }

    /// Another process renewed this process's claim ([`RedisConfig::claim`]) within the
    /// last 10 seconds.
    pub fn claim_contested(&self) -> bool {
        self.shared.contested(self.started)
    }

    /// Publications Redis confirmed (PUBLISH answered).
    pub fn published(&self) -> u64 {
        self.shared.published.load(Ordering::Relaxed)
    }

    /// Publications never handed to Redis (queue full, Redis known down, drain timeout):
    /// no other node receives them.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Publications sent to Redis without an answer in time (a hung or failing Redis):
    /// their outcome is unknown, other nodes may receive them late or never.
    pub fn unknown(&self) -> u64 {
        self.shared.unknown.load(Ordering::Relaxed)
    }

    /// Publications received from Redis (own echoes included).
    pub fn received(&self) -> u64 {
        self.shared.received.load(Ordering::Relaxed)
    }

    /// Publications from Redis not relayed for being over [`RedisConfig::max_payload`].
    pub fn oversized(&self) -> u64 {
        self.shared.oversized.load(Ordering::Relaxed)
    }
}

/// Applies interest changes that arrived; `Err` when the loop's side is gone.
pub(super) fn absorb(
    interest: &Receiver<Interest>,
    wanted: &mut BTreeSet<String>,
) -> Result<Vec<Interest>, ()> {
    let mut changes = Vec::new();
    loop {
        match interest.try_recv() {
            Ok(change) => {
                match &change {
                    Interest::Subscribe(t) => wanted.insert(t.clone()),
                    Interest::Unsubscribe(t) => wanted.remove(t),
                };
                changes.push(change);
            }
            Err(TryRecvError::Empty) => return Ok(changes),
            Err(TryRecvError::Disconnected) => return Err(()),
        }
    }
}

/// Hands what the subscriber hears to the loop, waking it.
pub(super) struct Relay<'a> {
    pub(super) inbound: &'a SyncSender<Inbound>,
    pub(super) waker: &'a Waker,
    pub(super) shared: &'a Shared,
}

impl Relay<'_> {
    /// Redis confirmed a subscription.
    pub(super) fn subscribed(&self, topic: String) {
        let _ = self.inbound.send(Inbound::Subscribed(topic));
        let _ = self.waker.wake();
    }

    /// Hands a publication to the loop; `false` when the loop's side is gone.
    pub(super) fn message(&self, topic: &str, payload: &[u8]) -> bool {
        if payload.len() > self.shared.max_payload {
            self.shared.oversized.fetch_add(1, Ordering::Relaxed);
            log!(
                Level::Warn,
                "redis: dropped a {}-byte publication on {topic} (over the size limit)",
                payload.len(),
            );
            return true;
        }
        self.shared.received.fetch_add(1, Ordering::Relaxed);
        let relayed = Inbound::Message {
            topic: topic.to_owned(),
            payload: payload.to_vec(),
        };
        if self.inbound.send(relayed).is_err() {
            return false;
        }
        let _ = self.waker.wake();
        true
    }
}

/// What a subscriber's session needs: the interest changes, the topics wanted, the backoff
/// (reset once up) and the status report.
pub(super) struct Session<'a> {
    pub(super) interest: &'a Receiver<Interest>,
    pub(super) wanted: &'a mut BTreeSet<String>,
    pub(super) backoff: &'a mut Backoff,
    pub(super) report: &'a dyn Fn(bool),
    pub(super) relay: Relay<'a>,
}

fn subscriber(
    mut router: Router,
    interest: Receiver<Interest>,
    inbound: SyncSender<Inbound>,
    waker: Arc<Waker>,
    shared: Arc<Shared>,
) {
    let mut wanted = BTreeSet::new();
    let mut backoff = redis_backoff();
    let report = |up: bool| {
        shared.subscriber_up.store(up, Ordering::Relaxed);
        let _ = inbound.send(Inbound::Status(up));
        let _ = waker.wake();
    };
    loop {
        if absorb(&interest, &mut wanted).is_err() {
            return;
        }
        let mut session = Session {
            interest: &interest,
            wanted: &mut wanted,
            backoff: &mut backoff,
            report: &report,
            relay: Relay {
                inbound: &inbound,
                waker: &waker,
                shared: &shared,
            },
        };
        let outcome = if router.is_cluster() {
            sharded::serve(&mut router, &mut session)
        } else {
            router
                .open(0, redis::ProtocolVersion::RESP2)
                .and_then(|mut connection| {
                    Link {
                        pubsub: connection.as_pubsub(),
                    }
                    .serve(&mut session)
                })
        };
        let error = match outcome {
            Ok(()) => return,
            Err(e) => e,
        };
        router.invalidate();
        if shared.subscriber_up.load(Ordering::Relaxed) || backoff.attempts() == 0 {
            log!(Level::Warn, "redis subscriber down: {error}");
            shared.generation.fetch_add(1, Ordering::Relaxed);
            shared.publisher_up.store(false, Ordering::Relaxed);
            report(false);
        }
        let delay = backoff.next_delay().unwrap_or(Duration::from_secs(5));
        thread::sleep(delay);
    }
}

/// The subscriber's connection to one Redis while it is up.
struct Link<'c> {
    pubsub: redis::PubSub<'c>,
}

impl Link<'_> {
    /// Runs a command and waits for its answer up to [`REPLY_TIMEOUT`] (the short polling
    /// timeout must not bound it: a stall of a second is not a failure), relaying the
    /// publications that arrive meanwhile.
    fn command<T>(
        &mut self,
        run: impl FnOnce(&mut redis::PubSub<'_>) -> redis::RedisResult<T>,
    ) -> Result<T, String> {
        let e = |e: redis::RedisError| e.to_string();
        self.pubsub
            .set_read_timeout(Some(REPLY_TIMEOUT))
            .map_err(e)?;
        let answer = run(&mut self.pubsub).map_err(e)?;
        self.pubsub
            .set_read_timeout(Some(POLL_INTERVAL))
            .map_err(e)?;
        Ok(answer)
    }

    fn subscribe(&mut self, relay: &Relay<'_>, topic: String) -> Result<(), String> {
        // subscribe() returns once Redis has answered the SUBSCRIBE.
        self.command(|p| p.subscribe(&topic))?;
        relay.subscribed(topic);
        Ok(())
    }

    /// Subscribes every wanted topic, then relays messages until the connection fails
    /// (`Err`) or the loop's side is gone (`Ok`).
    fn serve(&mut self, session: &mut Session<'_>) -> Result<(), String> {
        self.pubsub
            .set_read_timeout(Some(POLL_INTERVAL))
            .map_err(|e| e.to_string())?;
        if absorb(session.interest, session.wanted).is_err() {
            return Ok(());
        }
        for topic in session.wanted.iter() {
            self.subscribe(&session.relay, topic.clone())?;
        }
        log!(
            Level::Info,
            "redis subscriber up ({} topics)",
            session.wanted.len()
        );
        session.backoff.reset();
        (session.report)(true);
        let mut heard = Instant::now();
        loop {
            let Ok(changes) = absorb(session.interest, session.wanted) else {
                return Ok(());
            };
            for change in changes {
                match change {
                    Interest::Subscribe(t) => self.subscribe(&session.relay, t)?,
                    Interest::Unsubscribe(t) => self.command(|p| p.unsubscribe(&t))?,
                }
                heard = Instant::now();
            }
            if heard.elapsed() >= PING_INTERVAL {
                // Silence may be a hung Redis: a node whose clients only listen would
                // otherwise never notice.
                self.command(|p| p.ping::<redis::Value>())?;
                heard = Instant::now();
            }
            match self.pubsub.get_message() {
                Ok(message) => {
                    heard = Instant::now();
                    let topic = message.get_channel_name();
                    if !session.relay.message(topic, message.get_payload_bytes()) {
                        return Ok(());
                    }
                }
                Err(e) if e.is_timeout() => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    }
}
