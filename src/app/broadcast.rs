//! `wsloop broadcast`: every text and binary message from any client goes to every connected
//! client, the sender included, as it came (the articles' simplest fan-out server, and the
//! shape of the benchmark peers' broadcast servers).

use std::collections::HashMap;

use crate::proto::Message;
use crate::server::{CloseReason, ConnId, Ctx, Handler, OpenInfo};

/// The connected clients; each message is broadcast to all of them, encoded once and shared
/// by every receiver's queue (`server::fanout`).
#[derive(Debug, Default)]
pub struct Broadcast {
    /// Open connections, in no particular order (a leaving one takes the last one's place).
    members: Vec<ConnId>,
    /// Where each member is in `members`, so that leaving costs no scan.
    position: HashMap<ConnId, usize>,
}

impl Broadcast {
    /// Connections a message is sent to now.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// No client is connected.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
}

impl Handler for Broadcast {
    fn on_open(&mut self, _ctx: &mut Ctx<'_>, id: ConnId, _info: &OpenInfo<'_>) {
        self.position.insert(id, self.members.len());
        self.members.push(id);
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_>, _id: ConnId, message: Message<'_>) {
        ctx.broadcast(self.members.iter().copied(), message.kind, message.data);
    }

    fn on_close(&mut self, _ctx: &mut Ctx<'_>, id: ConnId, _reason: CloseReason) {
        let Some(at) = self.position.remove(&id) else {
            return;
        };
        self.members.swap_remove(at);
        if let Some(moved) = self.members.get(at) {
            self.position.insert(*moved, at);
        }
    }
}
