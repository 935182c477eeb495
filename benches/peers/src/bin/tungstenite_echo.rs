//! `tungstenite-echo`: a WebSocket echo server on tokio-tungstenite, for side-by-side
//! benchmarks with wsloop.
//!
//! One thread: tokio's current-thread runtime, each connection a task on it. Read and write
//! buffers are 8 KiB. Text and binary messages go back as they came
//! ([`wsloop_peers::tungstenite_echo`]).

use tokio::net::TcpListener;

/// Largest message; the same default as wsloop's `echo` (64 MiB).
const MAX_MESSAGE: usize = 64 << 20;

fn main() -> std::io::Result<()> {
    wsloop_peers::run_tokio("tungstenite-echo", serve)
}

async fn serve(listener: TcpListener) -> std::io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        // The same as wsloop: small frames go out at once.
        let _ = stream.set_nodelay(true);
        tokio::spawn(wsloop_peers::tungstenite_echo(stream, MAX_MESSAGE));
    }
}
