//! `tungstenite-broadcast`: a broadcast server on tokio-tungstenite, the peer of `wsloop serve`
//! in the broadcast benchmark (`wsloop bench broadcast --protocol raw`).
//!
//! Every text message a client sends goes to every connected client, the sender included (its
//! copy is its acknowledgement), written the way tokio-tungstenite's own chat example does it:
//! each connection is split into a sink and a stream, the sink is driven by a writer task fed
//! by an unbounded channel, and a message is fanned out by one `send` on each client's channel.
//! The message itself is shared (its payload is reference-counted `Bytes`), but every client's
//! sink encodes its own frame: one encoding per delivery, against wsloop's one per broadcast.
//!
//! One thread: tokio's current-thread runtime. Read and write buffers are 8 KiB, as in
//! `tungstenite-echo`. Binary messages are dropped; tungstenite answers pings and closes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Largest message; the same default as wsloop's `serve` (1 MiB).
const MAX_MESSAGE: usize = 1 << 20;

/// Every connected client's outbound channel, by connection number.
type Clients = Arc<Mutex<HashMap<u64, UnboundedSender<Message>>>>;

fn main() -> std::io::Result<()> {
    wsloop_peers::run_tokio("tungstenite-broadcast", serve)
}

async fn serve(listener: TcpListener) -> std::io::Result<()> {
    let clients = Clients::default();
    let mut next_id = 0u64;
    loop {
        let (stream, _) = listener.accept().await?;
        next_id += 1;
        tokio::spawn(client(stream, next_id, Arc::clone(&clients)));
    }
}

async fn client(stream: TcpStream, id: u64, clients: Clients) {
    // The same as wsloop: small frames go out at once.
    let _ = stream.set_nodelay(true);
    let config = WebSocketConfig::default()
        .read_buffer_size(wsloop_peers::TUNGSTENITE_BUFFER)
        .write_buffer_size(wsloop_peers::TUNGSTENITE_BUFFER)
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE));
    let Ok(ws) = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await else {
        return;
    };
    let (sink, mut stream) = ws.split();
    let (tx, rx) = mpsc::unbounded_channel();
    clients.lock().expect("not poisoned").insert(id, tx);
    let writer = tokio::spawn(write(sink, rx));
    while let Some(Ok(message)) = stream.next().await {
        match message {
            Message::Text(_) => {
                let clients = clients.lock().expect("not poisoned");
                for tx in clients.values() {
                    // A client whose writer ended is removed by its own task.
                    let _ = tx.send(message.clone());
                }
            }
            Message::Close(_) => break,
            // Pongs and the close reply are queued by tungstenite itself.
            Message::Binary(_) | Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
        }
    }
    // Dropping the sender ends the writer once it has written what was queued.
    clients.lock().expect("not poisoned").remove(&id);
    let _ = writer.await;
}

/// Writes what the channel brings: everything already queued, then one flush.
async fn write(
    mut sink: SplitSink<WebSocketStream<TcpStream>, Message>,
    mut rx: UnboundedReceiver<Message>,
) {
    while let Some(message) = rx.recv().await {
        if sink.feed(message).await.is_err() {
            return;
        }
        while let Ok(message) = rx.try_recv() {
            if sink.feed(message).await.is_err() {
                return;
            }
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
    let _ = sink.close().await;
}
