//! What the peer servers share: their command line and the line that tells the benchmark
//! driver where they listen.
//!
//! Every peer binds 127.0.0.1 (port 0 unless `--port N` is given), prints
//! `listening on 127.0.0.1:PORT` on stdout once it accepts connections, and runs on one thread.

use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;

/// The command line of a peer: `--port N` and, for some peers, `--mode NAME`.
#[derive(Debug)]
pub struct Args {
    /// Port to bind on 127.0.0.1 (0: any free port).
    pub port: u16,
    /// The value of `--mode`, if given.
    pub mode: Option<String>,
}

impl Args {
    /// Parses the process arguments; prints the usage and exits on anything unknown.
    /// `modes` lists the accepted `--mode` values (empty: the peer has no modes).
    pub fn parse(name: &str, modes: &[&str]) -> Args {
        let usage = || {
            let mode = if modes.is_empty() {
                String::new()
            } else {
                format!(" [--mode {}]", modes.join("|"))
            };
            eprintln!("usage: {name} [--port N]{mode}");
            std::process::exit(2);
        };
        let mut args = Args {
            port: 0,
            mode: None,
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
                _ => usage(),
            }
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
    let args = Args::parse(name, &[]);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.addr()).await?;
        announce(listener.local_addr()?);
        serve(listener).await
    })
}
