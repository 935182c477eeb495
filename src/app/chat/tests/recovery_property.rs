//! Property: whatever the interleaving of publications, disconnections and resubscriptions
//! with `since`, a subscriber never gets an event twice or out of order, and when the server
//! answers `recovered: true` it has every event in between: it has seen all of them.
//! Cases come from a seeded generator (xorshift), so that a failure names its seed.

use std::time::Duration;

use super::*;
use crate::app::history::HistoryLimits;

/// xorshift64: small, deterministic, good enough to pick actions.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// What the reconnecting client remembers and has seen.
struct Client {
    id: Option<ConnId>,
    serial: usize,
    since: Option<(u64, String)>,
    /// Offsets seen since the last `subscribed` that was not a recovery, in order.
    seen: Vec<u64>,
    /// The offset just before `seen` begins.
    from: u64,
}

fn run(seed: u64) {
    let mut rng = Rng(seed);
    let size = 1 + rng.below(8) as usize;
    let history = HistoryLimits {
        size,
        ttl: Duration::from_secs(3600),
        max_bytes: 1 << 20,
    };
    let mut room = Room::with_chat(Chat::new(ChatLimits::default()).with_history(history));
    let mut client = Client {
        id: None,
        serial: 10,
        since: None,
        seen: Vec::new(),
        from: 0,
    };
    let mut published = 0u64;
    for _ in 0..60 {
        let mut recorded = Vec::new();
        match (rng.below(4), client.id) {
            // Publish, from the sender or the observer.
            (0 | 1, _) => {
                let from = if rng.below(2) == 0 {
                    sender()
                } else {
                    observer()
                };
                published += 1;
                let request = json!({"type": "publish", "channel": "news",
                                     "content": published.to_string()});
                recorded = room.handle(from, &text(request.to_string()));
            }
            (2, Some(id)) => {
                room.leave(id);
                client.id = None;
            }
            (_, None) => {
                client.serial += 1;
                let id = ConnId::new(client.serial, client.serial as u32);
                let mut ctx = Ctx::new(&mut room.commands, room.now);
                room.chat.join(&mut ctx, id, None);
                room.commands.clear();
                let mut request = json!({"type": "subscribe", "channel": "news"});
                if let Some((offset, epoch)) = &client.since {
                    request["since"] = json!({"offset": offset, "epoch": epoch});
                }
                recorded = room.handle(id, &text(request.to_string()));
                client.id = Some(id);
            }
            (_, Some(_)) => {}
        }
        let Some(id) = client.id else { continue };
        let events = sent_to(&recorded, id);
        // In a subscribe exchange every `message` is a replayed one.
        let replayed = events.iter().filter(|e| e["type"] == "message").count();
        for event in events {
            let offset = event["offset"].as_u64().unwrap_or(0);
            match event["type"].as_str() {
                Some("message") => {
                    // Offsets are given in publication order: content is the publication's
                    // number, and the offset equals it (one epoch all along here).
                    assert_eq!(event["content"], offset.to_string(), "seed {seed}: {event}");
                    let last = client.seen.last().copied().unwrap_or(client.from);
                    assert!(offset > last, "seed {seed}: {offset} after {last}");
                    client.seen.push(offset);
                }
                Some("subscribed") if event["recovered"] == true => {
                    // Recovered: every offset up to the tip has been seen, once.
                    let want: Vec<u64> = (client.from + 1..=offset).collect();
                    assert_eq!(client.seen, want, "seed {seed}, size {size}");
                }
                Some("subscribed") => {
                    // A new start (or events lost): only what was replayed just now counts,
                    // and it ends at the tip.
                    client.seen.drain(..client.seen.len() - replayed);
                    client.from = offset - replayed as u64;
                }
                _ => {}
            }
            let epoch = event["epoch"].as_str().unwrap_or_default().to_owned();
            client.since = Some((offset, epoch));
        }
    }
}

#[test]
fn replay_and_live_never_duplicate_or_reorder() {
    for seed in 1..=300u64 {
        run(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    }
}
