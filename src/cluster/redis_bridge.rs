//! The threads between the event loop and Redis.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use mio::Waker;

use super::RedisConfig;
use crate::backoff::Backoff;
use crate::log::Level;

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long the subscriber blocks for a message before it looks for (un)subscribe requests.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Read/write timeout of the publishing connection (a hung Redis must not stall it).
const IO_TIMEOUT: Duration = Duration::from_secs(2);
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
}

enum Interest {
    Subscribe(String),
    Unsubscribe(String),
}

#[derive(Debug, Default)]
struct Shared {
    /// Bumped each time the subscriber loses its connection: Redis went away, so the
    /// publisher's connection is dead too even though it has not tried to use it yet.
    generation: AtomicU64,
    subscriber_up: AtomicBool,
    publisher_up: AtomicBool,
    published: AtomicU64,
    publish_failures: AtomicU64,
    received: AtomicU64,
    /// Publications larger than this are not relayed ([`RedisConfig::max_payload`]).
    max_payload: usize,
}

/// The loop's handle on the Redis threads.
pub struct Bridge {
    interest: Sender<Interest>,
    publications: SyncSender<(String, Vec<u8>)>,
    inbound: Receiver<Inbound>,
    shared: Arc<Shared>,
    config: RedisConfig,
}

/// A reconnection schedule that never gives up: Redis may be down for long.
fn redis_backoff() -> Backoff {
    Backoff::new(
        Duration::from_millis(100),
        2.0,
        Duration::from_secs(5),
        u32::MAX,
    )
}

impl Bridge {
    /// Starts the subscriber and publisher threads. `waker` wakes the loop when messages
    /// arrive; the loop then calls [`drain`](Self::drain).
    pub fn start(config: RedisConfig, waker: Arc<Waker>) -> Result<Bridge, String> {
        let client = redis::Client::open(config.url.as_str())
            .map_err(|e| format!("redis URL {:?}: {e}", config.redacted_url()))?;
        let shared = Arc::new(Shared {
            max_payload: config.max_payload,
            ..Shared::default()
        });
        let (interest_tx, interest_rx) = mpsc::channel();
        let (publish_tx, publish_rx) = mpsc::sync_channel(PUBLISH_QUEUE);
        // Bounded: if the loop falls behind, the subscriber waits, and Redis cuts it off once
        // its own output buffer limit is reached (then it reconnects).
        let (inbound_tx, inbound_rx) = mpsc::sync_channel(INBOUND_QUEUE);
        {
            let (client, shared) = (client.clone(), Arc::clone(&shared));
            thread::Builder::new()
                .name("redis-sub".into())
                .spawn(move || subscriber(client, interest_rx, inbound_tx, waker, shared))
                .map_err(|e| e.to_string())?;
        }
        {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name("redis-pub".into())
                .spawn(move || publisher(client, publish_rx, shared))
                .map_err(|e| e.to_string())?;
        }
        Ok(Bridge {
            interest: interest_tx,
            publications: publish_tx,
            inbound: inbound_rx,
            shared,
            config,
        })
    }

    /// The bridge's settings.
    pub fn config(&self) -> &RedisConfig {
        &self.config
    }

    /// Publishes without waiting; when the queue is full (Redis down or slow) the
    /// publication is dropped and counted.
    pub fn publish(&self, topic: String, payload: Vec<u8>) {
        match self.publications.try_send((topic, payload)) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.shared.publish_failures.fetch_add(1, Ordering::Relaxed);
            }
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
        self.inbound.try_iter()
    }

    /// Both connections are up.
    pub fn is_up(&self) -> bool {
        self.shared.subscriber_up.load(Ordering::Relaxed)
            && self.shared.publisher_up.load(Ordering::Relaxed)
    }

    /// Publications handed to Redis.
    pub fn published(&self) -> u64 {
        self.shared.published.load(Ordering::Relaxed)
    }

    /// Publications that could not be sent to Redis (down, slow or failing).
    pub fn publish_failures(&self) -> u64 {
        self.shared.publish_failures.load(Ordering::Relaxed)
    }

    /// Publications received from Redis (own echoes included).
    pub fn received(&self) -> u64 {
        self.shared.received.load(Ordering::Relaxed)
    }
}

/// Applies interest changes that arrived; `Err` when the loop's side is gone.
fn absorb(
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

fn subscriber(
    client: redis::Client,
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
        let error = match client.get_connection_with_timeout(CONNECT_TIMEOUT) {
            Err(e) => e.to_string(),
            Ok(mut connection) => {
                let mut pubsub = connection.as_pubsub();
                match serve_subscriptions(
                    &mut pubsub,
                    &interest,
                    &mut wanted,
                    &inbound,
                    &waker,
                    &shared,
                    &mut backoff,
                    &report,
                ) {
                    Ok(()) => return,
                    Err(e) => e,
                }
            }
        };
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

/// Subscribes every wanted topic, then relays messages until the connection fails (`Err`) or
/// the loop's side is gone (`Ok`).
#[allow(clippy::too_many_arguments)]
fn serve_subscriptions(
    pubsub: &mut redis::PubSub<'_>,
    interest: &Receiver<Interest>,
    wanted: &mut BTreeSet<String>,
    inbound: &SyncSender<Inbound>,
    waker: &Waker,
    shared: &Shared,
    backoff: &mut Backoff,
    report: &dyn Fn(bool),
) -> Result<(), String> {
    pubsub
        .set_read_timeout(Some(POLL_INTERVAL))
        .map_err(|e| e.to_string())?;
    if absorb(interest, wanted).is_err() {
        return Ok(());
    }
    for topic in wanted.iter() {
        pubsub.subscribe(topic).map_err(|e| e.to_string())?;
        let _ = inbound.send(Inbound::Subscribed(topic.clone()));
    }
    log!(Level::Info, "redis subscriber up ({} topics)", wanted.len());
    backoff.reset();
    report(true);
    loop {
        let Ok(changes) = absorb(interest, wanted) else {
            return Ok(());
        };
        for change in changes {
            match change {
                Interest::Subscribe(t) => {
                    // subscribe() returns once Redis has answered the SUBSCRIBE.
                    pubsub.subscribe(&t).map_err(|e| e.to_string())?;
                    let _ = inbound.send(Inbound::Subscribed(t));
                    let _ = waker.wake();
                }
                Interest::Unsubscribe(t) => pubsub.unsubscribe(&t).map_err(|e| e.to_string())?,
            }
        }
        match pubsub.get_message() {
            Ok(message) if message.get_payload_bytes().len() > shared.max_payload => {
                log!(
                    Level::Warn,
                    "redis: dropped a {}-byte publication on {} (over the size limit)",
                    message.get_payload_bytes().len(),
                    message.get_channel_name()
                );
            }
            Ok(message) => {
                shared.received.fetch_add(1, Ordering::Relaxed);
                let relayed = Inbound::Message {
                    topic: message.get_channel_name().to_owned(),
                    payload: message.get_payload_bytes().to_vec(),
                };
                if inbound.send(relayed).is_err() {
                    return Ok(());
                }
                let _ = waker.wake();
            }
            Err(e) if e.is_timeout() => {}
            Err(e) => return Err(e.to_string()),
        }
    }
}

fn publisher(
    client: redis::Client,
    publications: Receiver<(String, Vec<u8>)>,
    shared: Arc<Shared>,
) {
    let mut connection: Option<redis::Connection> = None;
    let mut generation = shared.generation.load(Ordering::Relaxed);
    let mut backoff = redis_backoff();
    let mut retry_at = Instant::now();
    let connect = |connection: &mut Option<redis::Connection>| -> Result<(), String> {
        let c = client
            .get_connection_with_timeout(CONNECT_TIMEOUT)
            .map_err(|e| e.to_string())?;
        c.set_read_timeout(Some(IO_TIMEOUT))
            .map_err(|e| e.to_string())?;
        c.set_write_timeout(Some(IO_TIMEOUT))
            .map_err(|e| e.to_string())?;
        *connection = Some(c);
        Ok(())
    };
    // Connect at once so that health reflects Redis before the first publication.
    match connect(&mut connection) {
        Ok(()) => shared.publisher_up.store(true, Ordering::Relaxed),
        Err(e) => {
            log!(Level::Warn, "redis publisher cannot connect: {e}");
            retry_at = Instant::now() + backoff.next_delay().unwrap_or(Duration::from_secs(5));
        }
    }
    loop {
        // While down, wake up now and then to reconnect even if nothing is published, so
        // that health recovers by itself.
        let next = match publications.recv_timeout(Duration::from_millis(200)) {
            Ok(p) => Some(p),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        };
        // The subscriber saw Redis go away: this connection is dead too; replace it before
        // using it, instead of losing the next publication to discover that.
        let current = shared.generation.load(Ordering::Relaxed);
        if current != generation {
            generation = current;
            connection = None;
            retry_at = Instant::now();
        }
        if connection.is_none() && Instant::now() >= retry_at {
            match connect(&mut connection) {
                Ok(()) => {
                    log!(Level::Info, "redis publisher up");
                    shared.publisher_up.store(true, Ordering::Relaxed);
                    backoff.reset();
                }
                Err(_) => {
                    retry_at =
                        Instant::now() + backoff.next_delay().unwrap_or(Duration::from_secs(5));
                }
            }
        }
        let Some((topic, payload)) = next else {
            continue;
        };
        let Some(c) = connection.as_mut() else {
            // At-most-once: a publication made while Redis is down is counted, not retried.
            shared.publish_failures.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        match redis::cmd("PUBLISH")
            .arg(&topic)
            .arg(&payload)
            .query::<i64>(c)
        {
            Ok(_) => {
                shared.published.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                log!(Level::Warn, "redis publisher down: {e}");
                shared.publish_failures.fetch_add(1, Ordering::Relaxed);
                shared.publisher_up.store(false, Ordering::Relaxed);
                connection = None;
                retry_at = Instant::now() + backoff.next_delay().unwrap_or(Duration::from_secs(5));
            }
        }
    }
}
