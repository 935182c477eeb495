//! A small chat: every text message goes to everyone, with its sender's number in front.
//!
//! `cargo run --example chat -- 127.0.0.1:9002`, then connect two `wsloop client`s.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use wsloop::proto::{Message, MessageKind};
use wsloop::server::{CloseReason, Config, ConnId, Ctx, Handler, OpenInfo, Server};

#[derive(Default)]
struct Chat {
    members: Vec<ConnId>,
}

impl Handler for Chat {
    fn on_open(&mut self, ctx: &mut Ctx<'_>, id: ConnId, _info: &OpenInfo<'_>) {
        self.members.push(id);
        ctx.send_text(id, &format!("welcome, you are #{id}"));
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_>, id: ConnId, message: Message<'_>) {
        let Some(text) = message.as_text() else {
            return ctx.close(id, 1003, "text only");
        };
        // Encoded once, shared by every member's queue.
        let line = format!("#{id}: {text}");
        ctx.broadcast(
            self.members.iter().copied(),
            MessageKind::Text,
            line.as_bytes(),
        );
    }

    fn on_close(&mut self, _ctx: &mut Ctx<'_>, id: ConnId, _reason: CloseReason) {
        self.members.retain(|m| *m != id);
    }
}

fn main() -> io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9002".into());
    let addr: SocketAddr = addr.parse().map_err(io::Error::other)?;
    // A heartbeat finds members whose network went away without a close.
    let config = Config {
        listen: vec![addr],
        ping_interval: Some(Duration::from_secs(30)),
        ..Config::default()
    };
    let mut server = Server::bind(config, Chat::default())?;
    println!("listening on ws://{}/", server.local_addrs()?[0]);
    server.run()
}
