//! `wsloop echo`: sends every text and binary message back as it came (the Autobahn testee).

use crate::proto::Message;
use crate::server::{ConnId, Ctx, Handler};

/// Echoes each message to its sender, same kind, same payload.
#[derive(Debug, Default)]
pub struct Echo;

impl Handler for Echo {
    fn on_message(&mut self, ctx: &mut Ctx<'_>, id: ConnId, message: Message<'_>) {
        ctx.send(id, message.kind, message.data);
    }
}
