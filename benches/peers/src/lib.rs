//! What the peer servers share: their command line and the line that tells the benchmark
//! driver where they listen.
//!
//! Every peer binds 127.0.0.1 (port 0 unless `--port N` is given), prints
//! `listening on 127.0.0.1:PORT` on stdout once it accepts connections, and runs on one thread.

pub mod raw;

use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;

/// The command line of a peer: `--port N` and, for some peers, `--mode NAME` or
/// `--tls-cert FILE --tls-key FILE`.
#[derive(Debug)]
pub struct Args {
    /// Port to bind on 127.0.0.1 (0: any free port).
    pub port: u16,
    /// The value of `--mode`, if given.
    pub mode: Option<String>,
    /// PEM certificate chain (`--tls-cert`), for the TLS peers.
    pub tls_cert: Option<std::path::PathBuf>,
    /// PEM private key (`--tls-key`), for the TLS peers.
    pub tls_key: Option<std::path::PathBuf>,
}

impl Args {
    /// Parses the process arguments; prints the usage and exits on anything unknown.
    /// `modes` lists the accepted `--mode` values (empty: the peer has no modes).
    pub fn parse(name: &str, modes: &[&str]) -> Args {
        Args::parse_with(name, modes, false)
    }

    /// [`Args::parse`] for a TLS peer: `--tls-cert` and `--tls-key` are required.
    pub fn parse_tls(name: &str) -> Args {
        Args::parse_with(name, &[], true)
    }

    fn parse_with(name: &str, modes: &[&str], tls: bool) -> Args {
        let usage = || {
            let mode = if modes.is_empty() {
                String::new()
            } else {
                format!(" [--mode {}]", modes.join("|"))
            };
            let tls = if tls {
                " --tls-cert FILE --tls-key FILE"
            } else {
                ""
            };
            eprintln!("usage: {name} [--port N]{mode}{tls}");
            std::process::exit(2);
        };
        let mut args = Args {
            port: 0,
            mode: None,
            tls_cert: None,
            tls_key: None,
        };
        let mut it = std::env::args().skip(1);
        while let Some(arg) = it.next() {
            match arg.as_str() {
                "--port" => match it.next().and_then(|p| p.parse().ok()) {
                    Some(port) => args.port = port,
                    None => usage(),
                },
                "--mode" if !modes.is_empty() => match it.next() {
                    Some(m) if modes.contains(&m.as_str()) => args.mode = Some(m),
                    _ => usage(),
                },
                "--tls-cert" | "--tls-key" if tls => match (arg.as_str(), it.next()) {
                    ("--tls-cert", Some(file)) => args.tls_cert = Some(file.into()),
                    (_, Some(file)) => args.tls_key = Some(file.into()),
                    (_, None) => usage(),
                },
                _ => usage(),
            }
        }
        if tls && (args.tls_cert.is_none() || args.tls_key.is_none()) {
            usage();
        }
        args
    }

    /// The address to bind.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

/// Tells the driver the bound address. Flushed at once: stdout is a pipe under a driver, and
/// a block-buffered line would never arrive.
pub fn announce(addr: SocketAddr) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "listening on {addr}");
    let _ = out.flush();
}

/// The start of every tokio peer: parses the command line (no modes), binds 127.0.0.1 on a
/// current-thread runtime (each peer is single-threaded, as wsloop is), announces the address
/// and runs `serve` on the listener.
pub fn run_tokio<F, Fut>(name: &str, serve: F) -> std::io::Result<()>
where
    F: FnOnce(tokio::net::TcpListener) -> Fut,
    Fut: Future<Output = std::io::Result<()>>,
{
    run_tokio_with(Args::parse(name, &[]), serve)
}

/// [`run_tokio`] with the command line already parsed.
pub fn run_tokio_with<F, Fut>(args: Args, serve: F) -> std::io::Result<()>
where
    F: FnOnce(tokio::net::TcpListener) -> Fut,
    Fut: Future<Output = std::io::Result<()>>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.addr()).await?;
        let addr = listener.local_addr()?;
        if args.tls_cert.is_some() {
            // The driver's URL scheme comes from this line.
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "listening on wss://{addr}/");
            let _ = out.flush();
        } else {
            announce(addr);
        }
        serve(listener).await
    })
}

/// Read and write buffer size of the tungstenite peers, in bytes (tungstenite's default is
/// 128 KiB each, which would make its memory per connection incomparable with wsloop's).
pub const TUNGSTENITE_BUFFER: usize = 8 * 1024;

/// The tungstenite echo loop, over any stream (TCP, or TLS on TCP): upgrade, then send every
/// text and binary message back as it came. tungstenite answers pings and closes by itself.
pub async fn tungstenite_echo<S>(stream: S, max_message: usize)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
    use tokio_tungstenite::tungstenite::Message;

    let config = WebSocketConfig::default()
        .read_buffer_size(TUNGSTENITE_BUFFER)
        .write_buffer_size(TUNGSTENITE_BUFFER)
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message));
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
