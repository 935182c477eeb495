//! `tungstenite-echo`: a WebSocket echo server on tokio-tungstenite, for side-by-side
//! benchmarks with wsloop.
//!
//! One thread: tokio's current-thread runtime, each connection a task on it. Read and write
//! buffers are 8 KiB (tungstenite's default is 128 KiB each, which would make its memory per
//! connection incomparable). Text and binary messages go back as they came; tungstenite answers
//! pings and closes by itself.

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

/// Read and write buffer size, in bytes.
const BUFFER: usize = 8 * 1024;
/// Largest message; the same default as wsloop's `echo` (64 MiB).
const MAX_MESSAGE: usize = 64 << 20;

fn main() -> std::io::Result<()> {
    wsloop_peers::run_tokio("tungstenite-echo", serve)
}

async fn serve(listener: TcpListener) -> std::io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(echo(stream));
    }
}

async fn echo(stream: TcpStream) {
    // The same as wsloop: small frames go out at once.
    let _ = stream.set_nodelay(true);
    let config = WebSocketConfig::default()
        .read_buffer_size(BUFFER)
        .write_buffer_size(BUFFER)
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE));
    let Ok(mut ws) = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await else {
        return;
    };
    while let Some(Ok(message)) = ws.next().await {
        match message {
            // `send` writes and flushes: one reply, one write, like a server that answers each
            // request as it comes.
            Message::Text(_) | Message::Binary(_) => {
                if ws.send(message).await.is_err() {
                    return;
                }
            }
            // Pongs for pings and the close reply are queued by tungstenite itself and written
            // on the next read or flush.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            Message::Close(_) => {
                let _ = ws.flush().await;
            }
        }
    }
}
