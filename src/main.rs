//! The `wsloop` command line: `echo`, `serve`, `client` (feature `cli`). The load generator
//! is the separate `wsloop-bench` binary (benches/load).

mod config_file;
mod flags;
mod stderr_log;

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
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
    /// TOML file of settings named like the flags (`ping-interval = "30s"`); the command
    /// line and WSLOOP_* variables win over it.
    #[arg(long, global = true, value_name = "FILE", env = "WSLOOP_CONFIG")]
    config: Option<PathBuf>,
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
    #[arg(long = "listen", value_name = "ADDR", value_delimiter = ',')]
    listen: Vec<SocketAddr>,
    /// Largest message (and frame) accepted, in bytes; larger ones close with 1009.
    /// Default: 64 MiB for echo, 1 MiB for serve.
    #[arg(long, value_name = "BYTES", value_parser = flags::count::<u64>)]
    max_message: Option<u64>,
    /// Largest request head (request line and headers); larger gets 431.
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().max_handshake_bytes,
          value_parser = flags::at_least::<256, usize>)]
    max_head_bytes: usize,
    /// Most header lines in a request; more gets 431. At least 5 (an upgrade needs Host,
    /// Upgrade, Connection, Sec-WebSocket-Key and Sec-WebSocket-Version).
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_headers,
          value_parser = flags::at_least::<5, usize>)]
    max_headers: usize,
    /// Most frames one fragmented message may have; more closes with 1009.
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_fragments,
          value_parser = flags::count::<u32>)]
    max_fragments: u32,
    /// Close connections whose upgrade request is not complete within this time.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = flags::positive_duration)]
    handshake_timeout: Duration,
    /// How long to wait for the peer's close reply and TCP close.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = flags::positive_duration)]
    close_timeout: Duration,
    /// Outbound bytes queued for one client before it is treated as a slow consumer.
    #[arg(long, value_name = "BYTES", default_value_t = 4 * 1024 * 1024, value_parser = flags::count::<usize>)]
    max_backpressure: usize,
    /// On SIGINT/SIGTERM, how long to wait for clients to answer the 1001 close (0: close
    /// the sockets right after sending it).
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = wsloop::duration::parse_duration)]
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
    #[arg(long, value_name = "N", default_value_t = Config::default().max_connections,
          value_parser = flags::count::<usize>)]
    max_connections: usize,
    /// Open WebSocket connections per client address; further upgrades get 429.
    #[arg(long, value_name = "N", default_value_t = Config::default().per_address.max_connections,
          value_parser = flags::count::<usize>)]
    max_connections_per_address: usize,
    /// Connections one address may hold before their request head is complete (slowloris
    /// from one address); more are closed at accept. Not applied with --trust-proxy.
    #[arg(long, value_name = "N", default_value_t = Config::default().per_address.max_pending_handshakes,
          value_parser = flags::count::<usize>)]
    max_pending_handshakes_per_address: usize,
    /// Request heads (handshakes, HTTP requests) per second per client address, sustained;
    /// twice as many in a burst; beyond that 429. At least 0.5, or `unlimited`. Default: 50
    /// for serve, unlimited for echo (the Autobahn client opens hundreds of connections a
    /// second).
    #[arg(long, value_name = "N", value_parser = flags::rate_or_unlimited)]
    handshakes_per_second: Option<f64>,
    /// Close connections that send nothing for this long, or `off` (serve's heartbeat finds
    /// dead peers first).
    #[arg(long, value_name = "DURATION", default_value = "off", value_parser = flags::duration_or_off)]
    idle_timeout: std::option::Option<Duration>,
    /// Pings a client may send per second; more fails the connection with 1008.
    #[arg(long, value_name = "N", default_value_t = Config::default().max_pings_per_second,
          value_parser = flags::count::<u32>)]
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
    #[arg(long, value_name = "PATH", default_value = "/ws", value_parser = flags::ws_path)]
    ws_path: String,
    /// Ping every client this often, or `off` (no heartbeat: dead peers are then found only
    /// by --idle-timeout or TCP).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = flags::duration_or_off)]
    ping_interval: std::option::Option<Duration>,
    /// Close, as dead, a client that has not answered a ping within this time.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = flags::positive_duration)]
    ping_timeout: Duration,
    /// File of `token name` lines: upgrades then need a known token (Authorization: Bearer,
    /// `token` query parameter or cookie), else 401; messages are sent under the name.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Origin allowed to connect (repeat for several); browsers from other origins get 403.
    #[arg(long, value_name = "ORIGIN", value_delimiter = ',', value_parser = flags::origin)]
    allow_origin: Vec<String>,
    /// Longest chat content, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = ChatLimits::default().max_content,
          value_parser = flags::count::<usize>)]
    max_content: usize,
    /// Longest channel name, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = ChatLimits::default().max_channel_name,
          value_parser = flags::count::<usize>)]
    max_channel_name: usize,
    /// Most channels one connection may subscribe to.
    #[arg(long, value_name = "N", default_value_t = ChatLimits::default().max_channels,
          value_parser = flags::count::<usize>)]
    max_channels: usize,
    /// Messages per second one client may send (twice as many in a burst); beyond it each
    /// message gets a `rate_limited` error, and a client that keeps on is closed with 1008.
    /// At least 0.5.
    #[arg(long, value_name = "N", default_value_t = ChatLimits::default().max_messages_per_second,
          value_parser = flags::rate)]
    max_messages_per_second: f64,
    /// Join other nodes through Redis Pub/Sub: redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]
    /// (needs the `redis` feature).
    #[arg(long, value_name = "URL", value_parser = flags::redis_url)]
    redis: Option<String>,
    /// This node's id in the cluster (default: random). [A-Za-z0-9_-], at most 64.
    #[arg(long, value_name = "ID", requires = "redis")]
    node_id: Option<String>,
    /// On SIGINT/SIGTERM, how long to keep serving with /readyz answering 503 before the
    /// listeners close and the drain starts (time for a load balancer to stop sending new
    /// clients; 0: drain at once).
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = wsloop::duration::parse_duration)]
    shutdown_delay: Duration,
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
    #[arg(value_parser = client_url)]
    url: String,
    /// Reconnect when the connection is lost (1 s backoff growing 1.5x to 30 s, 50 attempts).
    #[arg(long)]
    reconnect: bool,
    /// Extra request header, e.g. `Authorization: Bearer TOKEN` (repeatable).
    #[arg(long = "header", short = 'H', value_name = "HEADER", value_parser = flags::header)]
    headers: Vec<String>,
    /// Subprotocol to offer (repeatable).
    #[arg(long = "protocol", value_name = "NAME")]
    protocols: Vec<String>,
    /// Connect timeout.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = flags::positive_duration)]
    connect_timeout: Duration,
    /// Keep listening after standard input ends (close only on Ctrl-C or from the server).
    #[arg(short = 'n', long)]
    no_close: bool,
    /// Send each line as a binary message instead of text.
    #[arg(long)]
    binary: bool,
    /// Ping the server this often, or `off`.
    #[arg(long, value_name = "DURATION", default_value = "off", value_parser = flags::duration_or_off)]
    ping_interval: std::option::Option<Duration>,
    /// Print pings and pongs, both ways.
    #[arg(long)]
    show_ping_pong: bool,
    /// Pretty-print received messages that are JSON.
    #[arg(long)]
    json: bool,
}

/// The client's URL, checked before connecting.
fn client_url(text: &str) -> Result<String, String> {
    wsloop::client::WsUrl::parse(text)
        .map(|_| text.to_owned())
        .map_err(|e| e.to_string())
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

/// The start-up line of one listener: the WebSocket URL first (scripts and tests read the
/// address from `listening on ws://ADDR/`), then, for `serve`, the page's URL.
fn listening_line(addr: SocketAddr, ws_path: Option<&str>) -> String {
    match ws_path {
        Some(path) => format!("listening on ws://{addr}{path} (WebSocket), http://{addr}/ (page)"),
        None => format!("listening on ws://{addr}/ (WebSocket, any path)"),
    }
}

/// Binds, lets `setup` finish the application with the loop's waker, prints the listening
/// line, runs until SIGINT/SIGTERM, drains the connections, then lets `finish` drain the
/// application with what is left of `drain` since the signal.
fn run_server<H: Handler>(
    config: Config,
    stopping: Stopping,
    handler: H,
    ws_path: Option<&str>,
    setup: impl FnOnce(&mut H, Arc<Waker>) -> Result<(), String>,
    finish: impl FnOnce(&mut H, Duration),
) -> ExitCode {
    warn_if_descriptors_run_out(config.max_connections);
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
    let drain = stopping.drain_timeout;
    if let Err(e) = watch_signals(waker, Arc::clone(&stop), stopping) {
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
        let line = listening_line(*addr, ws_path);
        let _ = writeln!(stdout, "wsloop: {line}");
        wsloop::log!(Level::Info, "{line}");
    }
    let _ = stdout.flush();
    drop(stdout);
    let ran = server.run_until(&stop, drain);
    let since_signal = STOPPING_SINCE
        .get()
        .map_or(Duration::ZERO, Instant::elapsed);
    finish(server.handler_mut(), drain.saturating_sub(since_signal));
    match ran {
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

/// Warns when `--max-connections` cannot be reached under the open-file limit: every
/// connection is a descriptor, and listeners, connections still handshaking, Redis and the
/// log need some more.
fn warn_if_descriptors_run_out(max_connections: usize) {
    const SPARE: u64 = 256;
    let Some(limit) = wsloop::app::process::read().and_then(|p| p.max_fds) else {
        return;
    };
    let wanted = (max_connections as u64).saturating_add(SPARE);
    if wanted > limit {
        wsloop::log!(
            Level::Warn,
            "--max-connections {max_connections} needs about {wanted} file descriptors, but the \
             limit is {limit}: raise it (ulimit -n, systemd LimitNOFILE=) or lower --max-connections"
        );
    }
}

/// How a server stops on SIGINT/SIGTERM.
struct Stopping {
    /// Set at the signal (`/readyz` then says 503)...
    not_ready: Option<Arc<AtomicBool>>,
    /// ...this long before the listeners close...
    delay: Duration,
    /// ...and this long for the clients to answer the 1001 close.
    drain_timeout: Duration,
}

/// When the drain began (after the shutdown delay): the drain, connections and application
/// together, lasts at most `--drain-timeout` from then.
static STOPPING_SINCE: OnceLock<Instant> = OnceLock::new();

/// A thread that turns the first SIGINT/SIGTERM into a graceful stop (after the shutdown
/// delay, during which the server says it is not ready); a second one exits at once.
fn watch_signals(waker: Arc<Waker>, stop: Arc<AtomicBool>, how: Stopping) -> std::io::Result<()> {
    let mut signals = Signals::new([SIGINT, SIGTERM])?;
    std::thread::spawn(move || {
        let mut signalled = false;
        for signal in signals.forever() {
            if std::mem::replace(&mut signalled, true) {
                wsloop::log!(Level::Warn, "second signal: exiting now");
                std::process::exit(1);
            }
            if let Some(not_ready) = &how.not_ready {
                not_ready.store(true, Ordering::Relaxed);
            }
            let (waker, stop, delay) = (Arc::clone(&waker), Arc::clone(&stop), how.delay);
            if !delay.is_zero() {
                wsloop::log!(
                    Level::Info,
                    "signal {signal}: not ready; draining in {:.1}s",
                    delay.as_secs_f64()
                );
            }
            // The wait runs apart, so that a second signal still exits at once.
            std::thread::spawn(move || {
                std::thread::sleep(delay);
                wsloop::log!(Level::Info, "signal {signal}: draining connections");
                let _ = STOPPING_SINCE.set(Instant::now());
                stop.store(true, Ordering::Relaxed);
                if let Err(e) = waker.wake() {
                    wsloop::log!(Level::Error, "wake: {e}");
                }
            });
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
        ping_interval: args.ping_interval,
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
                wsloop::log!(Level::Error, "--token-file: {e}");
                return ExitCode::from(2);
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
                wsloop::log!(Level::Error, "--node-id: {e}");
                return ExitCode::from(2);
            }
            let config = RedisConfig {
                url,
                // An event quotes at most `max_content` bytes, which JSON escaping can grow
                // six times (`\u0001`), plus names, ids and the envelope.
                max_payload: args.max_content.saturating_mul(6).saturating_add(4096),
                claim: Some(ClusterNode::claim_key(&node_id, &args.redis_prefix)),
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
    let ws_path = serve_config.ws_path.clone();
    let serve = Serve::new(serve_config);
    let stopping = Stopping {
        not_ready: Some(serve.stopping_flag()),
        delay: args.shutdown_delay,
        drain_timeout: args.common.drain_timeout,
    };
    run_server(
        config,
        stopping,
        serve,
        Some(&ws_path),
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
        Serve::close_cluster,
    )
}

/// Parses the command line, the `WSLOOP_*` variables and the `--config` file, in that
/// order of precedence; exits with status 2 and a message on any bad value.
fn parse_cli(argv: Vec<std::ffi::OsString>) -> Cli {
    let command = config_file::with_env(Cli::command());
    let matches = command.clone().get_matches_from(&argv);
    let mut argv = argv;
    if let Some((name, sub_matches)) = matches.subcommand() {
        if let Some(path) = sub_matches.get_one::<PathBuf>("config") {
            let sub = command
                .find_subcommand(name)
                .expect("a parsed subcommand exists");
            match config_file::file_args(path, sub, sub_matches) {
                // Before a `--`, after which everything is positional.
                Ok(extra) => {
                    let at = argv.iter().position(|a| a == "--").unwrap_or(argv.len());
                    argv.splice(at..at, extra);
                }
                Err(e) => {
                    let mut command = command;
                    command
                        .error(
                            clap::error::ErrorKind::InvalidValue,
                            format!("--config {e}"),
                        )
                        .exit()
                }
            }
        }
    }
    let matches = command.get_matches_from(argv);
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

fn main() -> ExitCode {
    let cli = parse_cli(std::env::args_os().collect());
    stderr_log::install(Level::Info);
    match cli.command {
        Command::Echo(args) => {
            stderr_log::set_level(args.common.log_level);
            let config = args.common.config(
                SocketAddr::from(([127, 0, 0, 1], 9001)),
                Limits::default().max_message,
                f64::INFINITY,
            );
            let stopping = Stopping {
                not_ready: None,
                delay: Duration::ZERO,
                drain_timeout: args.common.drain_timeout,
            };
            run_server(config, stopping, Echo, None, |_, _| Ok(()), |_, _| {})
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
            let settings = wsloop::client::cli::Settings {
                reconnect: args.reconnect,
                no_close: args.no_close,
                binary: args.binary,
                ping_interval: args.ping_interval,
                show_ping_pong: args.show_ping_pong,
                json: args.json,
            };
            let code = wsloop::client::cli::run(&args.url, &options, &settings);
            ExitCode::from(code as u8)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_well_formed() {
        config_file::with_env(Cli::command()).debug_assert();
    }

    /// README's flag tables list exactly the flags of `--help`, with the same defaults: a
    /// row `| `--flag ARG` | default | meaning |` belongs to `client` under the client's
    /// heading, to `serve` elsewhere (echo's flags are serve's common ones).
    #[test]
    fn readme_flag_tables_match_help() {
        use std::collections::BTreeMap;
        let mut readme: BTreeMap<&str, BTreeMap<String, String>> = BTreeMap::new();
        let mut command = "serve";
        for line in include_str!("../README.md").lines() {
            if line.starts_with("### ") {
                command = if line.contains("wsloop client") {
                    "client"
                } else {
                    "serve"
                };
            }
            let Some(row) = line.strip_prefix("| `--") else {
                continue;
            };
            let cells: Vec<&str> = row.split(" | ").collect();
            let flag = row.split([' ', '`']).next().unwrap_or_default();
            let default = cells.get(1).copied().unwrap_or_default().trim();
            let previous = readme
                .entry(command)
                .or_default()
                .insert(flag.to_owned(), default.to_owned());
            assert!(
                previous.is_none(),
                "README lists --{flag} twice for {command}"
            );
        }
        let cli = config_file::with_env(Cli::command());
        for name in ["serve", "client"] {
            let sub = cli.find_subcommand(name).expect("subcommand");
            let mut help: BTreeMap<String, Option<String>> = BTreeMap::new();
            for arg in sub.get_arguments().chain(cli.get_arguments()) {
                let (Some(long), false) = (arg.get_long(), long_is_builtin(arg)) else {
                    continue;
                };
                let default = match arg.get_action() {
                    clap::ArgAction::SetTrue => None,
                    _ => arg
                        .get_default_values()
                        .first()
                        .map(|v| v.to_string_lossy().into_owned()),
                };
                help.insert(long.to_owned(), default);
            }
            let documented = readme.get(name).cloned().unwrap_or_default();
            let in_help: Vec<_> = help.keys().collect();
            let in_readme: Vec<_> = documented.keys().collect();
            assert_eq!(
                in_readme, in_help,
                "README's flags of `wsloop {name}` vs --help"
            );
            for (flag, default) in &help {
                let cell = documented[flag].trim_matches('`');
                let single = !cell.contains([' ', '`']);
                if let (Some(default), true) = (default, single) {
                    assert_eq!(cell, default, "README's default of --{flag} ({name})");
                }
            }
        }
    }

    /// `--help` and `--version`, which README's tables leave out.
    fn long_is_builtin(arg: &clap::Arg) -> bool {
        matches!(
            arg.get_action(),
            clap::ArgAction::Help | clap::ArgAction::Version
        )
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
