//! The smallest wsloop server: every message goes back to its sender.
//!
//! `cargo run --example echo -- 127.0.0.1:9001`, then `wsloop client ws://127.0.0.1:9001/`.

use std::io;
use std::net::SocketAddr;

use wsloop::proto::Message;
use wsloop::server::{Config, ConnId, Ctx, Handler, Server};

struct Echo;

impl Handler for Echo {
    fn on_message(&mut self, ctx: &mut Ctx<'_>, id: ConnId, message: Message<'_>) {
        // Same kind (text or binary), same bytes; the frame goes straight into the queue.
        ctx.send(id, message.kind, message.data);
    }
}

fn main() -> io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9001".into());
    let addr: SocketAddr = addr.parse().map_err(io::Error::other)?;
    let config = Config {
        listen: vec![addr],
        ..Config::default()
    };
    let mut server = Server::bind(config, Echo)?;
    println!("listening on ws://{}/", server.local_addrs()?[0]);
    server.run()
}
