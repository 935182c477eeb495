//! The `wsloop` command line: `echo`, `serve`, `client` (feature `cli`). The load generator
//! is the separate `wsloop-bench` binary (benches/load).

mod stderr_log;

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use log::Level;
use mio::Waker;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use wsloop::app::access::Tokens;
use wsloop::app::chat::ChatLimits;
use wsloop::app::echo::Echo;
#[cfg(feature = "redis")]
use wsloop::app::node::ClusterNode;
use wsloop::app::serve::{Serve, ServeConfig};
#[cfg(feature = "redis")]
use wsloop::app::topics;
use wsloop::client::ClientOptions;
#[cfg(feature = "redis")]
use wsloop::cluster::{Bridge, RedisConfig};
use wsloop::duration::parse_duration;
use wsloop::proto::Limits;
use wsloop::server::admission::{AddressLimits, ProxyHeader};
use wsloop::server::{Config, Handler, Server};

#[derive(Parser, Debug)]
#[command(
    name = "wsloop",
    version,
    about = "A tiny RFC 6455 WebSocket server on a single-threaded mio event loop"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Echo every text and binary message back to its sender (the Autobahn testee).
    Echo(EchoArgs),
    /// The real-time server: JSON chat and channels at /ws, the browser client at /,
    /// /healthz and /metrics, all on one port.
    Serve(Box<ServeArgs>),
    /// Connect to a WebSocket server: send each line of stdin as a text message, print what
    /// arrives.
    Client(ClientArgs),
}

/// Flags every server command shares.
#[derive(Args, Debug)]
struct LoopArgs {
    /// Address to listen on; repeat for several (e.g. `--listen 127.0.0.1:8080 --listen [::1]:8080`).
    #[arg(long = "listen", value_name = "ADDR")]
    listen: Vec<SocketAddr>,
    /// Largest message (and frame) accepted, in bytes; larger ones close with 1009.
    /// Default: 64 MiB for echo, 1 MiB for serve.
    #[arg(long, value_name = "BYTES")]
    max_message: Option<u64>,
    /// Largest request head (request line and headers); larger gets 431.
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().max_handshake_bytes)]
    max_head_bytes: usize,
    /// Most header lines in a request; more gets 431.
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_headers)]
    max_headers: usize,
    /// Most frames one fragmented message may have; more closes with 1009.
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_fragments)]
    max_fragments: u32,
    /// Close connections whose upgrade request is not complete within this time.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    handshake_timeout: Duration,
    /// How long to wait for the peer's close reply and TCP close.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    close_timeout: Duration,
    /// Outbound bytes queued for one client before it is treated as a slow consumer.
    #[arg(long, value_name = "BYTES", default_value_t = 4 * 1024 * 1024)]
    max_backpressure: usize,
    /// On SIGINT/SIGTERM, how long to wait for clients to answer the 1001 close.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    drain_timeout: Duration,
    /// Most verbose log level printed to stderr: error, warn, info, debug, trace.
    #[arg(long, value_name = "LEVEL", default_value = "info", value_parser = stderr_log::parse_level)]
    log_level: Level,
    /// Share the listening port with other wsloop processes (SO_REUSEPORT): run one per core.
    #[arg(long)]
    reuse_port: bool,
    /// Take the client address from the header your proxy sets (see --trust-proxy-header);
    /// only behind your own proxy, which every client must go through.
    #[arg(long)]
    trust_proxy: bool,
    /// With --trust-proxy: the one header the proxy puts the client address in. x-real-ip
    /// (the proxy sets it, as deploy/nginx.conf does) or x-forwarded-for (its last entry,
    /// which the proxy appended).
    #[arg(long, value_name = "HEADER", default_value = "x-real-ip", value_parser = parse_proxy_header, requires = "trust_proxy")]
    trust_proxy_header: ProxyHeader,
    /// Open WebSocket connections in all; further upgrades get 503.
    #[arg(long, value_name = "N", default_value_t = Config::default().max_connections)]
    max_connections: usize,
    /// Open WebSocket connections per client address; further upgrades get 429.
    #[arg(long, value_name = "N", default_value_t = Config::default().per_address.max_connections)]
    max_connections_per_address: usize,
    /// Connections one address may hold before their request head is complete (slowloris
    /// from one address); more are closed at accept. Not applied with --trust-proxy.
    #[arg(long, value_name = "N", default_value_t = Config::default().per_address.max_pending_handshakes)]
    max_pending_handshakes_per_address: usize,
    /// Request heads (handshakes, HTTP requests) per second per client address, sustained;
    /// twice as many in a burst; beyond that 429. Default: 50 for serve, unlimited for echo
    /// (the Autobahn client opens hundreds of connections a second).
    #[arg(long, value_name = "N")]
    handshakes_per_second: Option<f64>,
    /// Close connections that send nothing for this long (off by default for echo; serve's
    /// heartbeat finds dead peers first).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    idle_timeout: Option<Duration>,
    /// Pings a client may send per second; more fails the connection with 1008.
    #[arg(long, value_name = "N", default_value_t = Config::default().max_pings_per_second)]
    max_pings_per_second: u32,
    /// Accept permessage-deflate (RFC 7692) when a client offers it. Off by default: with
    /// context takeover a connection keeps a compressor and an inflater (hundreds of KiB).
    #[cfg(feature = "deflate")]
    #[arg(long)]
    deflate: bool,
    /// With --deflate: the largest window the server compresses with (8-15 bits); below
    /// 15, only messages that fit the window are compressed, each on its own.
    #[cfg(feature = "deflate")]
    #[arg(long, value_name = "BITS", default_value_t = 15, value_parser = clap::value_parser!(u8).range(8..=15), requires = "deflate")]
    deflate_window_bits: u8,
    /// With --deflate: compress every message on its own (server_no_context_takeover): no
    /// compressor per connection, and a broadcast is compressed once.
    #[cfg(feature = "deflate")]
    #[arg(long, requires = "deflate")]
    deflate_no_context_takeover: bool,
    /// With --deflate: messages shorter than this go out uncompressed.
    #[cfg(feature = "deflate")]
    #[arg(long, value_name = "BYTES", default_value_t = 64, requires = "deflate")]
    deflate_threshold: usize,
    /// With --deflate: compression level, 0 (store) to 9 (smallest).
    #[cfg(feature = "deflate")]
    #[arg(long, value_name = "N", default_value_t = 6, value_parser = clap::value_parser!(u8).range(0..=9), requires = "deflate")]
    deflate_level: u8,
}

#[derive(Args, Debug)]
struct EchoArgs {
    #[command(flatten)]
    common: LoopArgs,
}

#[derive(Args, Debug)]
struct ServeArgs {
    #[command(flatten)]
    common: LoopArgs,
    /// Path of the WebSocket endpoint; upgrades elsewhere get 404.
    #[arg(long, value_name = "PATH", default_value = "/ws")]
    ws_path: String,
    /// Ping every client this often.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    ping_interval: Duration,
    /// Close, as dead, a client that has not answered a ping within this time.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    ping_timeout: Duration,
    /// File of `token name` lines: upgrades then need a known token (Authorization: Bearer,
    /// `token` query parameter or cookie), else 401; messages are sent under the name.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Origin allowed to connect (repeat for several); browsers from other origins get 403.
    #[arg(long, value_name = "ORIGIN")]
    allow_origin: Vec<String>,
    /// Longest chat content, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = ChatLimits::default().max_content)]
    max_content: usize,
    /// Longest channel name, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = ChatLimits::default().max_channel_name)]
    max_channel_name: usize,
    /// Most channels one connection may subscribe to.
    #[arg(long, value_name = "N", default_value_t = ChatLimits::default().max_channels)]
    max_channels: usize,
    /// Messages per second one client may send (twice as many in a burst); beyond it each
    /// message gets a `rate_limited` error, and a client that keeps on is closed with 1008.
    #[arg(long, value_name = "N", default_value_t = ChatLimits::default().max_messages_per_second)]
    max_messages_per_second: f64,
    /// Join other nodes through Redis Pub/Sub: redis://HOST:PORT[/DB] (needs the `redis`
    /// feature).
    #[arg(long, value_name = "URL")]
    redis: Option<String>,
    /// This node's id in the cluster (default: random). [A-Za-z0-9_-], at most 64.
    #[arg(long, value_name = "ID", requires = "redis")]
    node_id: Option<String>,
    /// Prefix of the Redis topics.
    #[arg(
        long,
        value_name = "PREFIX",
        default_value = "wsloop:",
        requires = "redis"
    )]
    redis_prefix: String,
}

#[derive(Args, Debug)]
struct ClientArgs {
    /// Server URL, e.g. ws://127.0.0.1:8080/ws
    url: String,
    /// Reconnect when the connection is lost (1 s backoff growing 1.5x to 30 s, 50 attempts).
    #[arg(long)]
    reconnect: bool,
    /// Extra request header, e.g. `Authorization: Bearer TOKEN` (repeatable).
    #[arg(long = "header", short = 'H', value_name = "HEADER")]
    headers: Vec<String>,
    /// Subprotocol to offer (repeatable).
    #[arg(long = "protocol", value_name = "NAME")]
    protocols: Vec<String>,
    /// Connect timeout.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    connect_timeout: Duration,
}

impl LoopArgs {
    fn config(
        &self,
        default_listen: SocketAddr,
        default_max_message: u64,
        default_handshake_rate: f64,
    ) -> Config {
        let handshake_rate = self.handshakes_per_second.unwrap_or(default_handshake_rate);
        let listen = if self.listen.is_empty() {
            vec![default_listen]
        } else {
            self.listen.clone()
        };
        Config {
            listen,
            limits: Limits {
                max_handshake_bytes: self.max_head_bytes,
                max_headers: self.max_headers,
                max_fragments: self.max_fragments,
                ..Limits::with_max_message(self.max_message.unwrap_or(default_max_message))
            },
            handshake_timeout: self.handshake_timeout,
            close_timeout: self.close_timeout,
            max_backpressure: self.max_backpressure,
            reuse_port: self.reuse_port,
            trust_proxy: self.trust_proxy.then_some(self.trust_proxy_header),
            max_connections: self.max_connections,
            per_address: AddressLimits {
                max_connections: self.max_connections_per_address,
                max_pending_handshakes: self.max_pending_handshakes_per_address,
                requests_per_second: handshake_rate,
                burst: 2.0 * handshake_rate,
            },
            idle_timeout: self.idle_timeout,
            max_pings_per_second: self.max_pings_per_second,
            #[cfg(feature = "deflate")]
            deflate: self
                .deflate
                .then_some(wsloop::proto::extension::DeflateConfig {
                    window_bits: self.deflate_window_bits,
                    no_context_takeover: self.deflate_no_context_takeover,
                    threshold: self.deflate_threshold,
                    level: self.deflate_level,
                }),
            ..Config::default()
        }
    }
}

/// Binds, lets `setup` finish the application with the loop's waker, prints the listening
/// line, runs until SIGINT/SIGTERM, drains.
fn run_server<H: Handler>(
    config: Config,
    drain: Duration,
    handler: H,
    scheme: &str,
    setup: impl FnOnce(&mut H, Arc<Waker>) -> Result<(), String>,
) -> ExitCode {
    let mut server = match Server::bind(config.clone(), handler) {
        Ok(s) => s,
        Err(e) => {
            wsloop::log!(Level::Error, "cannot listen on {:?}: {e}", config.listen);
            return ExitCode::FAILURE;
        }
    };
    // mio allows one waker per poll: signals and the Redis bridge share it.
    let waker = match server.waker() {
        Ok(w) => Arc::new(w),
        Err(e) => {
            wsloop::log!(Level::Error, "waker: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = setup(server.handler_mut(), Arc::clone(&waker)) {
        wsloop::log!(Level::Error, "{e}");
        return ExitCode::FAILURE;
    }
    let stop = Arc::new(AtomicBool::new(false));
    if let Err(e) = watch_signals(waker, Arc::clone(&stop)) {
        wsloop::log!(Level::Error, "cannot install signal handlers: {e}");
        return ExitCode::FAILURE;
    }
    let addrs = match server.local_addrs() {
        Ok(a) => a,
        Err(e) => {
            wsloop::log!(Level::Error, "local address: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut stdout = std::io::stdout().lock();
    for addr in &addrs {
        // A stable line that scripts and tests parse to learn the port.
        let _ = writeln!(stdout, "wsloop: listening on ws://{addr}/");
        wsloop::log!(Level::Info, "listening on {scheme}://{addr}/");
    }
    let _ = stdout.flush();
    drop(stdout);
    match server.run_until(&stop, drain) {
        Ok(()) => {
            wsloop::log!(Level::Info, "stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            wsloop::log!(Level::Error, "event loop failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A thread that turns the first SIGINT/SIGTERM into a graceful stop; a second one exits at
/// once.
fn watch_signals(waker: Arc<Waker>, stop: Arc<AtomicBool>) -> std::io::Result<()> {
    let mut signals = Signals::new([SIGINT, SIGTERM])?;
    std::thread::spawn(move || {
        for signal in signals.forever() {
            if stop.swap(true, Ordering::Relaxed) {
                wsloop::log!(Level::Warn, "second signal: exiting now");
                std::process::exit(1);
            }
            wsloop::log!(Level::Info, "signal {signal}: draining connections");
            if let Err(e) = waker.wake() {
                wsloop::log!(Level::Error, "wake: {e}");
            }
        }
    });
    Ok(())
}

/// `--trust-proxy-header`: the header names are case-insensitive (RFC 9110 §5.1).
fn parse_proxy_header(value: &str) -> Result<ProxyHeader, String> {
    match value.to_ascii_lowercase().as_str() {
        "x-real-ip" => Ok(ProxyHeader::RealIp),
        "x-forwarded-for" => Ok(ProxyHeader::ForwardedFor),
        _ => Err(format!("{value:?}: want x-real-ip or x-forwarded-for")),
    }
}

/// The loop's settings for `serve`: the common flags, a 1 MiB message limit and the heartbeat.
fn serve_config(args: &ServeArgs) -> Config {
    Config {
        ping_interval: Some(args.ping_interval),
        ping_timeout: args.ping_timeout,
        ..args.common.config(
            SocketAddr::from(([127, 0, 0, 1], 8080)),
            1024 * 1024,
            Config::default().per_address.requests_per_second,
        )
    }
}

fn serve(args: Box<ServeArgs>) -> ExitCode {
    let config = serve_config(&args);
    let tokens = match &args.token_file {
        Some(path) => match Tokens::load(path) {
            Ok(t) => Some(t),
            Err(e) => {
                wsloop::log!(Level::Error, "token file: {e}");
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };
    #[cfg(not(feature = "redis"))]
    if args.redis.is_some() {
        wsloop::log!(
            Level::Error,
            "--redis: this wsloop was built without the `redis` feature (no cluster support)"
        );
        return ExitCode::from(2);
    }
    #[cfg(feature = "redis")]
    let redis = match args.redis {
        Some(url) => {
            let node_id = args.node_id.unwrap_or_else(topics::random_node_id);
            if let Err(e) = topics::validate_node_id(&node_id) {
                wsloop::log!(Level::Error, "{e}");
                return ExitCode::FAILURE;
            }
            let config = RedisConfig {
                url,
                // An event quotes at most `max_content` bytes, which JSON escaping can grow
                // six times (`\u0001`), plus names, ids and the envelope.
                max_payload: args.max_content.saturating_mul(6).saturating_add(4096),
            };
            Some((config, node_id, args.redis_prefix))
        }
        None => None,
    };
    let serve_config = ServeConfig {
        ws_path: args.ws_path,
        tokens,
        allowed_origins: args.allow_origin,
        chat: ChatLimits {
            max_content: args.max_content,
            max_channel_name: args.max_channel_name,
            max_channels: args.max_channels,
            max_messages_per_second: args.max_messages_per_second,
        },
    };
    let serve = Serve::new(serve_config);
    run_server(
        config,
        args.common.drain_timeout,
        serve,
        "http",
        |_serve, _waker| {
            #[cfg(feature = "redis")]
            if let Some((redis, node_id, prefix)) = redis {
                wsloop::log!(
                    Level::Info,
                    "cluster node {node_id} via {} (topics {prefix}*)",
                    redis.redacted_url(),
                );
                let bridge = Bridge::start(redis, _waker)?;
                _serve.attach_cluster(ClusterNode::new(bridge, node_id, prefix));
            }
            Ok(())
        },
    )
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    stderr_log::install(Level::Info);
    match cli.command {
        Command::Echo(args) => {
            stderr_log::set_level(args.common.log_level);
            let config = args.common.config(
                SocketAddr::from(([127, 0, 0, 1], 9001)),
                Limits::default().max_message,
                f64::INFINITY,
            );
            run_server(config, args.common.drain_timeout, Echo, "ws", |_, _| Ok(()))
        }
        Command::Serve(args) => {
            stderr_log::set_level(args.common.log_level);
            serve(args)
        }
        Command::Client(args) => {
            let options = ClientOptions {
                headers: args.headers,
                protocols: args.protocols,
                timeout: Some(args.connect_timeout),
                max_message: None,
            };
            let code = wsloop::client::cli::run(&args.url, &options, args.reconnect);
            ExitCode::from(code as u8)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    /// The timed rules are tested on the simulation's virtual clock (tests/sim.rs); what the
    /// command line adds is that each flag's value reaches the loop and its protocol cores.
    #[test]
    fn timing_flags_reach_the_timeouts_of_every_connection() {
        use clap::Parser;
        let cli = Cli::try_parse_from([
            "wsloop",
            "serve",
            "--ping-interval",
            "300ms",
            "--ping-timeout",
            "200ms",
            "--idle-timeout",
            "2s",
            "--close-timeout",
            "400ms",
            "--handshake-timeout",
            "700ms",
            "--max-pings-per-second",
            "7",
        ])
        .expect("valid flags");
        let Command::Serve(args) = cli.command else {
            panic!("serve parsed as another command");
        };
        let config = serve_config(&args);
        let ms = Duration::from_millis;
        assert_eq!(config.handshake_timeout, ms(700));
        let timeouts = config.timeouts();
        assert_eq!(timeouts.ping_interval, Some(ms(300)));
        assert_eq!(timeouts.ping_timeout, ms(200));
        assert_eq!(timeouts.idle_timeout, Some(ms(2000)));
        assert_eq!(timeouts.close_timeout, ms(400));
        assert_eq!(timeouts.max_pings_per_second, Some(7));
    }
}
