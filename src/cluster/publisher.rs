//! The publishing thread: pipelines the queued publications (plain `PUBLISH`es, and appends
//! to a topic's stream through the script of `streams`), renews the claim on the node's name,
//! and tells publications Redis confirmed from those whose outcome is unknown. In a Redis
//! Cluster each publication goes to its topic's master (`SPUBLISH`, or the script there), one
//! pipeline per master.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::collections::BTreeMap;

use super::redis_bridge::{redis_backoff, Outgoing, Shared};
use super::route::Router;
use super::streams::{self, Scripts};
use crate::log::Level;

/// How often an idle publisher wakes up (to reconnect, to renew the claim).
const IDLE_WAKE: Duration = Duration::from_millis(200);
/// How often the publisher renews the claim on this node's name ([`RedisConfig::claim`]).
const CLAIM_INTERVAL: Duration = Duration::from_secs(1);
/// How long a claim lives in Redis without renewal.
const CLAIM_TTL_MS: u64 = 3_000;
/// Publications sent to Redis in one pipeline (one round trip).
const PUBLISH_BATCH: usize = 256;

/// The publishing thread's state.
pub(super) struct Publisher {
    /// Connections to where topics live (scripts loaded when history is kept in Redis).
    pub(super) router: Router,
    pub(super) shared: Arc<Shared>,
    /// The key this process claims and its token.
    pub(super) claim: Option<(String, String)>,
    /// Recorded publications' streams (`None`: history is not kept in Redis).
    pub(super) streams: Option<streams::StreamSettings>,
    /// This process's token (new epochs begin with it).
    pub(super) token: String,
    /// Renewals that found another process's token. The first may be a crashed
    /// predecessor's (its claim outlives it by up to [`CLAIM_TTL_MS`]); from the second on
    /// another process is alive under this name.
    pub(super) foreign_sightings: u32,
    pub(super) started: Instant,
    /// Dropped when the thread ends: [`Bridge::close`] waits for that.
    pub(super) _done: Sender<()>,
}

impl Publisher {
    /// Renews the claim: `SET key token GET PX ttl` answers the previous holder's token.
    fn renew_claim(&mut self) -> Result<(), redis::RedisError> {
        let Some((key, token)) = &self.claim else {
            return Ok(());
        };
        let lost = |e: String| redis::RedisError::from((redis::ErrorKind::Io, "claim", e));
        let c = self.router.connection_for(key.as_bytes()).map_err(lost)?;
        let previous: Option<String> = redis::cmd("SET")
            .arg(key)
            .arg(token)
            .arg("GET")
            .arg("PX")
            .arg(CLAIM_TTL_MS)
            .query(c)?;
        if previous.is_some_and(|p| &p != token) {
            self.foreign_sightings += 1;
            if self.foreign_sightings < 2 {
                return Ok(());
            }
            if !self.shared.contested(self.started) {
                log!(
                    Level::Error,
                    "redis: another process holds {key}: two nodes run with the same node id"
                );
            }
            let at = self.started.elapsed().as_millis() as u64 + 1;
            self.shared.contested_at.store(at, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Sends a batch, one pipeline per master; counts each pipeline published, or unknown
    /// when Redis did not answer (the commands may have reached it: a hung Redis runs them
    /// when it resumes).
    fn send(&mut self, scripts: &Scripts, batch: &[Outgoing]) -> Result<(), String> {
        let publish = if self.router.is_cluster() {
            "SPUBLISH"
        } else {
            "PUBLISH"
        };
        let mut pipes: BTreeMap<usize, (redis::Pipeline, u64)> = BTreeMap::new();
        for out in batch {
            let node = match self.router.node_of(out.topic.as_bytes()) {
                Ok(node) => node,
                // No slot map: nothing of the batch has been sent yet.
                Err(e) => {
                    let n = batch.len() as u64;
                    self.shared.dropped.fetch_add(n, Ordering::Relaxed);
                    return Err(e);
                }
            };
            let (pipe, n) = pipes.entry(node).or_default();
            *n += 1;
            match (&self.streams, out.recorded) {
                (Some(settings), true) => {
                    let epoch = streams::new_epoch(&self.token, &self.shared);
                    scripts.append(pipe, settings, &epoch, &out.topic, &out.payload);
                }
                _ => {
                    pipe.cmd(publish).arg(&out.topic).arg(&out.payload);
                }
            }
        }
        let mut outcome = Ok(());
        for (node, (pipe, n)) in pipes {
            let sent = self
                .router
                .connection(node)
                .and_then(|c| pipe.query::<Vec<i64>>(c).map_err(|e| e.to_string()));
            match sent {
                Ok(_) => {
                    self.shared.published.fetch_add(n, Ordering::Relaxed);
                }
                Err(e) => {
                    self.shared.unknown.fetch_add(n, Ordering::Relaxed);
                    outcome = Err(e);
                }
            }
        }
        outcome
    }

    pub(super) fn run(mut self, publications: Receiver<Outgoing>) {
        let scripts = Scripts::new(self.router.is_cluster());
        let mut connected = false;
        let mut generation = self.shared.generation.load(Ordering::Relaxed);
        let mut backoff = redis_backoff();
        let mut retry_at = Instant::now();
        let mut claim_due = Instant::now();
        let mut batch = Vec::with_capacity(PUBLISH_BATCH);
        let mut open = true;
        // The first turn connects at once, so that health reflects Redis from the start.
        let mut wait = Duration::ZERO;
        while open {
            // While down, wake up now and then to reconnect even if nothing is published, so
            // that health recovers by itself; once the loop's side is gone, empty the queue.
            match publications.recv_timeout(std::mem::replace(&mut wait, IDLE_WAKE)) {
                Ok(p) => batch.push(p),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => open = false,
            }
            while batch.len() < PUBLISH_BATCH {
                match publications.try_recv() {
                    Ok(p) => batch.push(p),
                    Err(_) => break,
                }
            }
            self.shared
                .queued
                .fetch_sub(batch.len() as u64, Ordering::Relaxed);
            // The subscriber saw Redis go away: this connection is dead too; replace it
            // before using it, instead of losing the next publication to discover that.
            let current = self.shared.generation.load(Ordering::Relaxed);
            if current != generation {
                generation = current;
                connected = false;
                self.router.invalidate();
                retry_at = Instant::now();
            }
            if !connected && Instant::now() >= retry_at {
                // One connection (where the claim lives) shows that Redis is there.
                let probe = self.claim.as_ref().map_or("", |(key, _)| key.as_str());
                match self.router.connection_for(probe.as_bytes()) {
                    Ok(_) => {
                        log!(Level::Info, "redis publisher up");
                        self.shared.publisher_up.store(true, Ordering::Relaxed);
                        backoff.reset();
                        connected = true;
                        claim_due = Instant::now();
                    }
                    Err(e) => {
                        if backoff.attempts() == 0 {
                            log!(Level::Warn, "redis publisher cannot connect: {e}");
                        }
                        retry_at =
                            Instant::now() + backoff.next_delay().unwrap_or(Duration::from_secs(5));
                    }
                }
            }
            if !connected {
                // At-most-once: a publication made while Redis is down is counted, not
                // retried.
                self.shared
                    .dropped
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                batch.clear();
                continue;
            }
            let mut result = Ok(());
            if !batch.is_empty() {
                result = self.send(&scripts, &batch);
                batch.clear();
            }
            if result.is_ok() && self.claim.is_some() && Instant::now() >= claim_due {
                claim_due = Instant::now() + CLAIM_INTERVAL;
                match self.renew_claim() {
                    Ok(()) => {}
                    // Redis refused the command (a user without SET, a Redis before 6.2):
                    // the connection is fine, only the check is lost.
                    // MOVED, ASK, TRYAGAIN, CLUSTERDOWN: the cluster is changing, not refusing.
                    Err(e)
                        if matches!(e.kind(), redis::ErrorKind::Server(_))
                            && !e.is_cluster_error() =>
                    {
                        log!(
                            Level::Warn,
                            "redis: cannot claim this node's id ({e}); two nodes started with \
                             one id will not be noticed"
                        );
                        self.claim = None;
                    }
                    Err(e) => result = Err(e.to_string()),
                }
            }
            if let Err(e) = result {
                log!(Level::Warn, "redis publisher down: {e}");
                self.shared.publisher_up.store(false, Ordering::Relaxed);
                connected = false;
                self.router.invalidate();
                retry_at = Instant::now() + backoff.next_delay().unwrap_or(Duration::from_secs(5));
            }
        }
        // A graceful exit gives the name back, so that a restart is not taken for a twin.
        if let (true, Some((key, _))) = (connected, &self.claim) {
            if let Ok(c) = self.router.connection_for(key.as_bytes()) {
                let _ = redis::cmd("DEL").arg(key).query::<i64>(c);
            }
        }
    }
}
