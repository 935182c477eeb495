//! Topic histories in Redis Streams (`--redis` with `--history-size` above 0): the two Lua
//! scripts, the key names, and the reader thread that answers the loop's reads.
//!
//! Each recorded topic `T` has a meta hash `{T}:meta` (`offset`: the last given out, `epoch`:
//! names this run of offsets) and a stream `{T}:stream` whose entry IDs are `OFFSET-0`. The
//! hash tag is the topic name itself, so that in a Redis Cluster the stream, the meta key and
//! the (sharded) Pub/Sub channel `T` all hash to one slot.
//!
//! The append script gives the next offset, adds the entry (`MAXLEN ~`), publishes it with its
//! position and renews both keys' TTL in one atomic step: the Pub/Sub order of a topic is its
//! offset order, and every node sees the same offset for the same entry. A meta key that is
//! gone (expired, or Redis restarted without its data) starts a new epoch, chosen by the node
//! that finds it gone.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Arc;
use std::time::Duration;

use mio::Waker;

use super::redis_bridge::{Inbound, Shared};
use super::route::Router;
use crate::app::history::shared::ReadQuery;
use crate::log::Level;

/// Appends one payload: KEYS meta, stream; ARGV topic, payload, new epoch, max length, ttl ms,
/// publishing command (`PUBLISH`, or `SPUBLISH` in a Redis Cluster: the shard channel is in
/// the keys' slot).
const APPEND: &str = r"
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[3]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'offset', 0)
end
local offset = redis.call('HINCRBY', KEYS[1], 'offset', 1)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], offset .. '-0', 'p', ARGV[2])
redis.call(ARGV[6], ARGV[1], '#' .. offset .. ' ' .. epoch .. '\n' .. ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
return offset
";

/// Reads a topic: KEYS meta, stream; ARGV mode (`after` / `last`), first offset wanted, the
/// caller's epoch, count, whole stream when the epoch differs (`1` / `0`), new epoch, ttl ms.
/// Answers `{epoch, tip, entries}` (`epoch` empty: no history and, for `last`, none made).
/// The history is the last `count` offsets: `MAXLEN ~` may have left older entries, which
/// an `after` read does not return.
const READ: &str = r"
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  if ARGV[1] == 'last' then return {'', 0, {}} end
  epoch = ARGV[6]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'offset', 0)
  redis.call('PEXPIRE', KEYS[1], ARGV[7])
end
local tip = tonumber(redis.call('HGET', KEYS[1], 'offset'))
local count = tonumber(ARGV[4])
local entries = {}
if count > 0 then
  if ARGV[1] == 'last' then
    entries = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', count)
  else
    local first = nil
    if epoch == ARGV[3] then first = tonumber(ARGV[2]) elseif ARGV[5] == '1' then first = 1 end
    -- Nothing lies past the tip (nor can a position beyond it be written as an entry id).
    if first and first <= tip then
      first = math.max(first, tip - count + 1)
      entries = redis.call('XRANGE', KEYS[2], string.format('%d-0', first), '+', 'COUNT', count)
    end
  end
end
return {epoch, tip, entries}
";

/// Reads waiting for the reader thread; past this a read is refused at once.
pub(super) const READ_QUEUE: usize = 1_024;

/// How long recorded topics live and how long their streams are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamSettings {
    /// Entries kept per stream (`MAXLEN ~`: Redis may keep a few more).
    pub max_len: usize,
    /// A stream and its meta key expire this long after the last append.
    pub ttl: Duration,
}

/// A topic's entries as read, oldest first, and where it stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entries {
    /// The topic's epoch (empty: it has no history, after a `Last` read).
    pub epoch: String,
    /// The last offset given out in that epoch.
    pub tip: u64,
    /// (offset, payload), oldest first.
    pub entries: Vec<(u64, Vec<u8>)>,
}

/// A read for the reader thread.
pub(super) struct ReadRequest {
    pub(super) id: u64,
    pub(super) topic: String,
    pub(super) query: ReadQuery,
}

/// The Redis key of a topic's meta hash.
pub fn meta_key(topic: &str) -> String {
    format!("{{{topic}}}:meta")
}

/// The Redis key of a topic's stream.
pub fn stream_key(topic: &str) -> String {
    format!("{{{topic}}}:stream")
}

/// A recorded publication as it arrives: `#OFFSET EPOCH\n` then the payload. Returns the
/// offset, the epoch and the payload; `None` when the publication is not a recorded one.
pub fn split_recorded(publication: &[u8]) -> Option<(u64, &str, &[u8])> {
    let rest = publication.strip_prefix(b"#")?;
    let newline = rest.iter().position(|&b| b == b'\n')?;
    let head = std::str::from_utf8(&rest[..newline]).ok()?;
    let (offset, epoch) = head.split_once(' ')?;
    let offset = offset.parse().ok().filter(|&n| n > 0)?;
    (!epoch.is_empty() && !epoch.contains(' ')).then_some((offset, epoch, &rest[newline + 1..]))
}

/// The two scripts' SHA1 digests (computed here, the same on every Redis), and how appends
/// publish.
pub(super) struct Scripts {
    append: String,
    read: String,
    publish: &'static str,
}

/// The SHA1 digest `EVALSHA` names a script by, in hex.
fn digest(script: &str) -> String {
    use sha1::{Digest, Sha1};
    Sha1::digest(script.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Scripts {
    /// The scripts for one Redis (`cluster`: false) or a Redis Cluster.
    pub(super) fn new(cluster: bool) -> Scripts {
        Scripts {
            append: digest(APPEND),
            read: digest(READ),
            publish: if cluster { "SPUBLISH" } else { "PUBLISH" },
        }
    }

    /// Loads both scripts on a fresh connection (a restarted Redis, or another master of a
    /// cluster, does not know them yet).
    pub(super) fn load(c: &mut redis::Connection) -> redis::RedisResult<()> {
        for text in [APPEND, READ] {
            redis::cmd("SCRIPT")
                .arg("LOAD")
                .arg(text)
                .query::<String>(c)?;
        }
        Ok(())
    }

    /// Adds an append of `payload` on `topic` to a pipeline.
    pub(super) fn append(
        &self,
        pipe: &mut redis::Pipeline,
        settings: &StreamSettings,
        new_epoch: &str,
        topic: &str,
        payload: &[u8],
    ) {
        pipe.cmd("EVALSHA")
            .arg(&self.append)
            .arg(2)
            .arg(meta_key(topic))
            .arg(stream_key(topic))
            .arg(topic)
            .arg(payload)
            .arg(new_epoch)
            .arg(settings.max_len)
            .arg(ttl_ms(settings))
            .arg(self.publish);
    }

    fn read(
        &self,
        c: &mut redis::Connection,
        settings: &StreamSettings,
        new_epoch: &str,
        request: &ReadRequest,
    ) -> Result<Entries, String> {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(&self.read)
            .arg(2)
            .arg(meta_key(&request.topic))
            .arg(stream_key(&request.topic));
        match &request.query {
            ReadQuery::After {
                from,
                epoch,
                count,
                whole_on_new_epoch,
            } => cmd
                .arg("after")
                .arg(*from)
                .arg(epoch)
                .arg(*count)
                .arg(if *whole_on_new_epoch { "1" } else { "0" }),
            ReadQuery::Last { count } => cmd.arg("last").arg(0).arg("").arg(*count).arg("0"),
        };
        cmd.arg(new_epoch).arg(ttl_ms(settings));
        let answer = cmd.query::<redis::Value>(c).map_err(|e| e.to_string())?;
        parse_entries(answer, matches!(request.query, ReadQuery::Last { .. }))
            .ok_or_else(|| "redis: unexpected answer to a stream read".to_owned())
    }
}

fn ttl_ms(settings: &StreamSettings) -> u64 {
    settings.ttl.as_millis().clamp(1, u64::MAX as u128) as u64
}

fn text(value: &redis::Value) -> Option<&[u8]> {
    match value {
        redis::Value::BulkString(bytes) => Some(bytes),
        redis::Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

/// `{epoch, tip, entries}`; entries of `XREVRANGE` (`reversed`) are put oldest first.
fn parse_entries(answer: redis::Value, reversed: bool) -> Option<Entries> {
    let redis::Value::Array(fields) = answer else {
        return None;
    };
    let [epoch, tip, redis::Value::Array(raw)] = fields.as_slice() else {
        return None;
    };
    let epoch = String::from_utf8(text(epoch)?.to_vec()).ok()?;
    let redis::Value::Int(tip) = tip else {
        return None;
    };
    let mut entries = Vec::with_capacity(raw.len());
    for entry in raw {
        let redis::Value::Array(parts) = entry else {
            return None;
        };
        let [id, redis::Value::Array(pairs)] = parts.as_slice() else {
            return None;
        };
        let id = std::str::from_utf8(text(id)?).ok()?;
        let offset = id.strip_suffix("-0")?.parse().ok()?;
        let payload = pairs.get(1).and_then(text)?.to_vec();
        entries.push((offset, payload));
    }
    if reversed {
        entries.reverse();
    }
    Some(Entries {
        epoch,
        tip: u64::try_from(*tip).ok()?,
        entries,
    })
}

/// A fresh epoch for a topic whose history is gone: this process's token and a serial.
pub(super) fn new_epoch(token: &str, shared: &Shared) -> String {
    let n = shared.epochs.fetch_add(1, Ordering::Relaxed);
    format!("{token}-{n}")
}

/// The reader thread: answers each read on a connection to where the topic lives
/// (reconnecting as needed), so that the loop never waits for Redis. A read that fails is
/// answered with the error.
pub(super) fn reader(
    mut router: Router,
    settings: StreamSettings,
    token: String,
    requests: Receiver<ReadRequest>,
    inbound: SyncSender<Inbound>,
    waker: Arc<Waker>,
    shared: Arc<Shared>,
) {
    let scripts = Scripts::new(router.is_cluster());
    for request in requests {
        shared.reads.fetch_add(1, Ordering::Relaxed);
        // A connection kept from an earlier read may have died meanwhile (Redis restarted,
        // the link was cut, the slot moved): one more try on a fresh one before the read
        // fails.
        let mut result = Err("redis is unreachable".to_owned());
        for _ in 0..2 {
            let epoch = new_epoch(&token, &shared);
            result = router
                .connection_for(meta_key(&request.topic).as_bytes())
                .and_then(|c| scripts.read(c, &settings, &epoch, &request));
            if result.is_ok() {
                break;
            }
            router.invalidate();
        }
        if let Err(e) = &result {
            log!(Level::Debug, "redis read failed: {e}");
            shared.read_failures.fetch_add(1, Ordering::Relaxed);
        }
        let answer = Inbound::Read {
            id: request.id,
            result,
        };
        if inbound.send(answer).is_err() {
            return;
        }
        let _ = waker.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_publications_split() {
        assert_eq!(
            split_recorded(b"#12 ab-3\nn1 s 4\n{}"),
            Some((12, "ab-3", &b"n1 s 4\n{}"[..]))
        );
        for bad in [
            &b"12 ab\nx"[..],
            b"#0 ab\nx",
            b"#x ab\nx",
            b"#1 \nx",
            b"#1 a b\nx",
            b"#1 ab",
            b"n1 s 4\n{}",
        ] {
            assert_eq!(
                split_recorded(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn digests_are_those_redis_computes() {
        // SHA1("") as Redis's SCRIPT LOAD would answer it.
        assert_eq!(digest(""), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
        assert_eq!(digest(APPEND).len(), 40);
    }

    #[test]
    fn keys_share_the_topic_as_hash_tag() {
        assert_eq!(meta_key("p:channel:x"), "{p:channel:x}:meta");
        assert_eq!(stream_key("p:chat"), "{p:chat}:stream");
    }

    #[test]
    fn read_answers_parse_oldest_first() {
        use redis::Value::{Array, BulkString, Int};
        let entry = |id: &str, p: &str| {
            Array(vec![
                BulkString(id.into()),
                Array(vec![BulkString(b"p".to_vec()), BulkString(p.into())]),
            ])
        };
        let answer = || {
            Array(vec![
                BulkString(b"e-1".to_vec()),
                Int(9),
                Array(vec![entry("8-0", "h"), entry("9-0", "i")]),
            ])
        };
        let forward = parse_entries(answer(), false).expect("parsed");
        assert_eq!(forward.epoch, "e-1");
        assert_eq!(forward.tip, 9);
        assert_eq!(
            forward.entries,
            vec![(8, b"h".to_vec()), (9, b"i".to_vec())]
        );
        let reversed = parse_entries(answer(), true).expect("parsed");
        assert_eq!(reversed.entries[0].0, 9);
        assert_eq!(parse_entries(Int(1), false), None);
        let bad_id = Array(vec![
            BulkString(b"e".to_vec()),
            Int(1),
            Array(vec![entry("1-1", "x")]),
        ]);
        assert_eq!(parse_entries(bad_id, false), None);
    }
}
