//! A whole server under fuzzing: the event loop (`wsloop::server::Server`) running `Echo` or
//! `Serve` on a background thread, driven over real loopback sockets by 2-4 raw clients that
//! write arbitrary bytes (with or without a valid upgrade request in front), while one
//! well-behaved client (`wsloop::client::Client`) talks to the same server. Asserts:
//! - no panic, in the loop or anywhere (libfuzzer-sys turns a panic on any thread into an
//!   abort);
//! - every message of the well-behaved client is delivered within a bounded time: echoed back
//!   by `Echo`, or broadcast back to its sender by `Serve`'s chat, in order;
//! - once every client has gone, the server's connection table (`Stats::connections`) and its
//!   open WebSocket count return to zero within a bounded time: nothing leaks a slot or a
//!   descriptor, whatever the raw clients sent and however they left;
//! - the process's resident memory stays under a bound (`WSLOOP_FUZZ_RSS_MB`, default 1536).
//!
//! One server of each kind lives for the whole fuzzing process (started on first use).
//!
//! Input: byte 0 holds flags (bit 0: `Serve` instead of `Echo`; bits 1-2: raw clients
//! 2 + n % 3; bit 3: raw clients leave with RST instead of FIN; bit 4: they half-close their
//! write side after their last piece). Byte 1: bit k set prepends a valid upgrade request to
//! raw client k's stream. Then the streams of the raw clients, separated by `|~|`; each stream
//! is written in pieces separated by `|.|`. Round r writes piece r of every stream, then the
//! well-behaved client sends message r and waits for it (at least 3 rounds, at most 8).
#![no_main]

use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use mio::Events;
use wsloop::app::echo::Echo;
use wsloop::app::serve::{Serve, ServeConfig};
use wsloop::client::{Client, ClientOptions, Received};
use wsloop::proto::Limits;
use wsloop::server::admission::AddressLimits;
use wsloop::server::{Config, Handler, Server};

const CLIENT_SEP: &[u8] = b"|~|";
const PIECE_SEP: &[u8] = b"|.|";
const MIN_ROUNDS: usize = 3;
const MAX_ROUNDS: usize = 8;
/// Bound on every wait for the server: a delivery, the table emptying.
const WAIT: Duration = Duration::from_secs(5);

/// A server running on its own thread, publishing its counts after every turn.
struct Running {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
}

fn config() -> Config {
    Config {
        listen: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
        // Messages up to 1 MiB (serve's default): memory per connection stays small.
        limits: Limits::with_max_message(1024 * 1024),
        // Every raw client here comes from 127.0.0.1, hundreds of times a second.
        per_address: AddressLimits {
            max_connections: 1_000_000,
            max_pending_handshakes: 1_000_000,
            requests_per_second: f64::INFINITY,
            burst: f64::INFINITY,
        },
        ..Config::default()
    }
}

fn start<H: Handler + Send + 'static>(handler: H) -> Running {
    let mut server = Server::bind(config(), handler).expect("bind a loopback port");
    let addr = server.local_addrs().expect("local address")[0];
    let connections = Arc::new(AtomicUsize::new(0));
    let open = Arc::new(AtomicUsize::new(0));
    let (c, o) = (Arc::clone(&connections), Arc::clone(&open));
    std::thread::spawn(move || {
        let mut events = Events::with_capacity(256);
        loop {
            server
                .turn(&mut events, Some(Duration::from_millis(5)))
                .expect("the event loop failed");
            c.store(server.stats().connections, Ordering::Release);
            o.store(server.stats().open, Ordering::Release);
        }
    });
    Running {
        addr,
        connections,
        open,
    }
}

fn echo() -> &'static Running {
    static ECHO: OnceLock<Running> = OnceLock::new();
    ECHO.get_or_init(|| start(Echo))
}

fn serve() -> &'static Running {
    static SERVE: OnceLock<Running> = OnceLock::new();
    SERVE.get_or_init(|| start(Serve::new(ServeConfig::default())))
}

/// Splits `data` at every `sep`.
fn split<'a>(data: &'a [u8], sep: &[u8]) -> Vec<&'a [u8]> {
    let mut parts = Vec::new();
    let mut rest = data;
    while let Some(i) = rest.windows(sep.len()).position(|w| w == sep) {
        parts.push(&rest[..i]);
        rest = &rest[i + sep.len()..];
    }
    parts.push(rest);
    parts
}

fn upgrade_request(path: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes()
}

/// Resident memory of this process, in MiB.
fn rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib / 1024)
}

fn rss_limit_mib() -> u64 {
    static LIMIT: OnceLock<u64> = OnceLock::new();
    *LIMIT.get_or_init(|| {
        std::env::var("WSLOOP_FUZZ_RSS_MB")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1536)
    })
}

/// The well-behaved client: speaks the protocol, reads everything it is sent.
struct Good {
    client: Client,
    serve: bool,
}

impl Good {
    fn connect(server: &Running, serve: bool) -> Good {
        let path = if serve { "/ws" } else { "/" };
        let options = ClientOptions {
            timeout: Some(WAIT),
            ..ClientOptions::default()
        };
        let mut client = Client::connect_with(&format!("ws://{}{path}", server.addr), &options)
            .unwrap_or_else(|e| panic!("the well-behaved client cannot connect: {e}"));
        if serve {
            match client.recv_message() {
                Ok(Received::Text(t)) if t.contains("\"welcome\"") => {}
                other => panic!("the well-behaved client got no welcome: {other:?}"),
            }
        }
        Good { client, serve }
    }

    /// Sends message `n` and waits until it comes back (echo) or is delivered (chat).
    fn round_trip(&mut self, n: usize) {
        let content = format!("well-behaved message {n}");
        let sent = if self.serve {
            format!("{{\"type\":\"chat\",\"content\":\"{content}\"}}")
        } else {
            content.clone()
        };
        self.client
            .send_text(&sent)
            .unwrap_or_else(|e| panic!("the well-behaved client cannot send message {n}: {e}"));
        let started = Instant::now();
        loop {
            let received = self.client.recv_message().unwrap_or_else(|e| {
                panic!(
                    "message {n} of the well-behaved client not delivered after {:?}: {e}",
                    started.elapsed()
                )
            });
            let Received::Text(text) = received else {
                panic!("the well-behaved client got {received:?}");
            };
            if !self.serve {
                assert_eq!(text, sent, "echo of message {n}");
                return;
            }
            // Serve: others' chats may come first; ours carries our content.
            if text.contains("\"type\":\"chat\"") && text.contains(&content) {
                return;
            }
            assert!(
                started.elapsed() < WAIT,
                "message {n} of the well-behaved client not delivered within {WAIT:?}"
            );
        }
    }

    fn close(mut self) {
        if self.client.close(1000, "").is_err() {
            return;
        }
        let started = Instant::now();
        while started.elapsed() < WAIT {
            match self.client.recv() {
                Ok(Received::Close(..)) | Err(_) => return,
                Ok(_) => {}
            }
        }
        panic!("the server did not answer the well-behaved client's close");
    }
}

/// The loop writes with `writev`, which raises SIGPIPE on a socket the peer has reset (EPIPE).
/// A Rust `main` ignores SIGPIPE before it runs; libFuzzer's C++ `main` does not, so this
/// process ignores it itself, as the `wsloop` binary does.
fn ignore_sigpipe() {
    extern "C" {
        fn signal(signum: i32, handler: usize) -> usize;
    }
    const SIGPIPE: i32 = 13;
    const SIG_IGN: usize = 1;
    // SAFETY: installing SIG_IGN for SIGPIPE has no preconditions.
    unsafe {
        signal(SIGPIPE, SIG_IGN);
    }
}

fuzz_target!(
    init: {
        // No logger is installed: the library's `log` records go nowhere.
        ignore_sigpipe();
    },
    |input: &[u8]| {
        let [flags, handshakes, rest @ ..] = input else {
            return;
        };
        let serve_app = flags & 1 != 0;
        let raw_count = 2 + usize::from((flags >> 1) & 3) % 3;
        let rst = flags & 8 != 0;
        let half_close = flags & 16 != 0;
        let server = if serve_app { serve() } else { echo() };
        let path = if serve_app { "/ws" } else { "/" };

        // Each raw client's pieces, the upgrade request first when asked for.
        let mut streams: Vec<Vec<Vec<u8>>> = Vec::new();
        let mut parts = split(rest, CLIENT_SEP).into_iter();
        for k in 0..raw_count {
            let data = parts.next().unwrap_or_default();
            let mut pieces: Vec<Vec<u8>> = split(data, PIECE_SEP)
                .into_iter()
                .take(MAX_ROUNDS)
                .map(<[u8]>::to_vec)
                .collect();
            if handshakes & (1 << k) != 0 {
                let mut first = upgrade_request(path);
                first.extend_from_slice(&pieces[0]);
                pieces[0] = first;
            }
            streams.push(pieces);
        }
        let rounds = streams
            .iter()
            .map(Vec::len)
            .max()
            .unwrap_or(0)
            .clamp(MIN_ROUNDS, MAX_ROUNDS);

        let raws: Vec<TcpStream> = (0..raw_count)
            .map(|_| {
                let s = TcpStream::connect(server.addr).expect("raw client connects");
                s.set_nodelay(true).unwrap();
                s.set_write_timeout(Some(WAIT)).unwrap();
                s
            })
            .collect();
        let mut good = Good::connect(server, serve_app);
        for round in 0..rounds {
            for (raw, pieces) in raws.iter().zip(&streams) {
                if let Some(piece) = pieces.get(round).filter(|p| !p.is_empty()) {
                    // The server may have closed this connection already (a protocol error,
                    // a refused request): a failed write is part of the game.
                    let _ = (&*raw).write_all(piece);
                }
                if half_close && round + 1 == pieces.len() {
                    let _ = raw.shutdown(Shutdown::Write);
                }
            }
            good.round_trip(round);
        }

        for raw in raws {
            if rst {
                let _ = socket2::SockRef::from(&raw).set_linger(Some(Duration::ZERO));
            }
            drop(raw);
        }
        good.close();

        let started = Instant::now();
        loop {
            let connections = server.connections.load(Ordering::Acquire);
            let open = server.open.load(Ordering::Acquire);
            if connections == 0 && open == 0 {
                break;
            }
            assert!(
                started.elapsed() < WAIT,
                "{connections} connections ({open} open) still held {WAIT:?} after every \
                 client left"
            );
            std::thread::sleep(Duration::from_micros(200));
        }
        let rss = rss_mib();
        assert!(
            rss <= rss_limit_mib(),
            "RSS {rss} MiB over the {} MiB bound",
            rss_limit_mib()
        );
    }
);
