//! The command line: the subcommands and their flags (clap), where each setting comes from
//! (flag, `WSLOOP_*` variable, `--config` file), and the loop's settings built from them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use log::Level;
use wsloop::app::chat::ChatLimits;
use wsloop::app::history::HistoryLimits;
use wsloop::proto::Limits;
use wsloop::server::admission::{AddressLimits, ProxyHeader};
use wsloop::server::Config;

use crate::{config_file, flags, stderr_log};

#[derive(Parser, Debug)]
#[command(
    name = "wsloop",
    version,
    about = "A tiny RFC 6455 WebSocket server on a single-threaded mio event loop"
)]
pub(crate) struct Cli {
    /// TOML file of settings named like the flags (`ping-interval = "30s"`); the command
    /// line and WSLOOP_* variables win over it.
    #[arg(long, global = true, value_name = "FILE", env = "WSLOOP_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Echo every text and binary message back to its sender (the Autobahn testee).
    Echo(EchoArgs),
    /// Send every text and binary message from any client to every connected client, the
    /// sender included, as it came.
    Broadcast(EchoArgs),
    /// The real-time server: JSON chat and channels at /ws, the browser client at /,
    /// /healthz and /metrics, all on one port.
    Serve(Box<ServeArgs>),
    /// Connect to a WebSocket server: send each line of stdin as a text message, print what
    /// arrives.
    Client(ClientArgs),
}

/// Flags every server command shares.
#[derive(Args, Debug)]
pub(crate) struct LoopArgs {
    /// Address to listen on; repeat for several (e.g. `--listen 127.0.0.1:8080 --listen [::1]:8080`).
    #[arg(long = "listen", value_name = "ADDR", value_delimiter = ',')]
    pub(crate) listen: Vec<SocketAddr>,
    /// PEM file of the certificate chain (the server's certificate first, then any
    /// intermediates): every --listen address then speaks TLS (wss://, https://). Needs
    /// --tls-key; SIGHUP reloads both for new connections.
    #[cfg(feature = "tls")]
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// PEM file of the certificate's private key: PKCS#8, RSA (PKCS#1) or EC (SEC1).
    #[cfg(feature = "tls")]
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub(crate) tls_key: Option<PathBuf>,
    /// With --tls-cert: a further address that speaks plain HTTP and WebSocket (e.g. for a
    /// load balancer's health checks on a private network); repeat for several.
    #[cfg(feature = "tls")]
    #[arg(
        long,
        value_name = "ADDR",
        value_delimiter = ',',
        requires = "tls_cert"
    )]
    pub(crate) listen_plain: Vec<SocketAddr>,
    /// Largest message (and frame) accepted, in bytes; larger ones close with 1009.
    /// Default: 64 MiB for echo, 1 MiB for serve and broadcast.
    #[arg(long, value_name = "BYTES", value_parser = flags::count::<u64>)]
    pub(crate) max_message: Option<u64>,
    /// Largest request head (request line and headers); larger gets 431.
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().max_handshake_bytes,
          value_parser = flags::at_least::<256, usize>)]
    pub(crate) max_head_bytes: usize,
    /// Most header lines in a request; more gets 431. At least 5 (an upgrade needs Host,
    /// Upgrade, Connection, Sec-WebSocket-Key and Sec-WebSocket-Version).
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_headers,
          value_parser = flags::at_least::<5, usize>)]
    pub(crate) max_headers: usize,
    /// Most frames one fragmented message may have; more closes with 1009.
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_fragments,
          value_parser = flags::count::<u32>)]
    pub(crate) max_fragments: u32,
    /// Close connections whose upgrade request is not complete within this time.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = flags::positive_duration)]
    pub(crate) handshake_timeout: Duration,
    /// How long to wait for the peer's close reply and TCP close.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = flags::positive_duration)]
    pub(crate) close_timeout: Duration,
    /// Outbound bytes queued for one client before it is treated as a slow consumer.
    #[arg(long, value_name = "BYTES", default_value_t = 4 * 1024 * 1024, value_parser = flags::count::<usize>)]
    pub(crate) max_backpressure: usize,
    /// On SIGINT/SIGTERM, how long to wait for clients to answer the 1001 close (0: close
    /// the sockets right after sending it).
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = wsloop::duration::parse_duration)]
    pub(crate) drain_timeout: Duration,
    /// Most verbose log level printed to stderr: error, warn, info, debug, trace.
    #[arg(long, value_name = "LEVEL", default_value = "info", value_parser = stderr_log::parse_level)]
    pub(crate) log_level: Level,
    /// Share the listening port with other wsloop processes (SO_REUSEPORT): run one per core.
    #[arg(long)]
    pub(crate) reuse_port: bool,
    /// Take the client address from the header your proxy sets (see --trust-proxy-header);
    /// only behind your own proxy, which every client must go through.
    #[arg(long)]
    pub(crate) trust_proxy: bool,
    /// With --trust-proxy: the one header the proxy puts the client address in. x-real-ip
    /// (the proxy sets it, as deploy/nginx.conf does) or x-forwarded-for (its last entry,
    /// which the proxy appended).
    #[arg(long, value_name = "HEADER", default_value = "x-real-ip", value_parser = parse_proxy_header, requires = "trust_proxy")]
    pub(crate) trust_proxy_header: ProxyHeader,
    /// Open WebSocket connections in all; further upgrades get 503.
    #[arg(long, value_name = "N", default_value_t = Config::default().max_connections,
          value_parser = flags::count::<usize>)]
    pub(crate) max_connections: usize,
    /// Open WebSocket connections per client address; further upgrades get 429.
    #[arg(long, value_name = "N", default_value_t = Config::default().per_address.max_connections,
          value_parser = flags::count::<usize>)]
    pub(crate) max_connections_per_address: usize,
    /// Connections one address may hold before their request head is complete (slowloris
    /// from one address); more are closed at accept. Not applied with --trust-proxy.
    #[arg(long, value_name = "N", default_value_t = Config::default().per_address.max_pending_handshakes,
          value_parser = flags::count::<usize>)]
    pub(crate) max_pending_handshakes_per_address: usize,
    /// Request heads (handshakes, HTTP requests) per second per client address, sustained;
    /// twice as many in a burst; beyond that 429. At least 0.5, or `unlimited`. Default: 50
    /// for serve, unlimited for echo and broadcast (the Autobahn client opens hundreds of
    /// connections a second).
    #[arg(long, value_name = "N", value_parser = flags::rate_or_unlimited)]
    pub(crate) handshakes_per_second: Option<f64>,
    /// Close connections that send nothing for this long, or `off` (serve's heartbeat finds
    /// dead peers first).
    #[arg(long, value_name = "DURATION", default_value = "off", value_parser = flags::duration_or_off)]
    pub(crate) idle_timeout: std::option::Option<Duration>,
    /// Pings a client may send per second; more fails the connection with 1008.
    #[arg(long, value_name = "N", default_value_t = Config::default().max_pings_per_second,
          value_parser = flags::count::<u32>)]
    pub(crate) max_pings_per_second: u32,
    /// Accept permessage-deflate (RFC 7692) when a client offers it. Off by default: with
    /// context takeover a connection keeps a compressor and an inflater (hundreds of KiB).
    #[cfg(feature = "deflate")]
    #[arg(long)]
    pub(crate) deflate: bool,
    /// With --deflate: the largest window the server compresses with (8-15 bits); below
    /// 15, only messages that fit the window are compressed, each on its own.
    #[cfg(feature = "deflate")]
    #[arg(long, value_name = "BITS", default_value_t = 15, value_parser = clap::value_parser!(u8).range(8..=15), requires = "deflate")]
    pub(crate) deflate_window_bits: u8,
    /// With --deflate: compress every message on its own (server_no_context_takeover): no
    /// compressor per connection, and a broadcast is compressed once.
    #[cfg(feature = "deflate")]
    #[arg(long, requires = "deflate")]
    pub(crate) deflate_no_context_takeover: bool,
    /// With --deflate: messages shorter than this go out uncompressed.
    #[cfg(feature = "deflate")]
    #[arg(long, value_name = "BYTES", default_value_t = 64, requires = "deflate")]
    pub(crate) deflate_threshold: usize,
    /// With --deflate: compression level, 0 (store) to 9 (smallest).
    #[cfg(feature = "deflate")]
    #[arg(long, value_name = "N", default_value_t = 6, value_parser = clap::value_parser!(u8).range(0..=9), requires = "deflate")]
    pub(crate) deflate_level: u8,
}

/// The flags of `echo` and `broadcast`: the loop's own, nothing of the application.
#[derive(Args, Debug)]
pub(crate) struct EchoArgs {
    #[command(flatten)]
    pub(crate) common: LoopArgs,
}

#[derive(Args, Debug)]
pub(crate) struct ServeArgs {
    #[command(flatten)]
    pub(crate) common: LoopArgs,
    /// Path of the WebSocket endpoint; upgrades elsewhere get 404.
    #[arg(long, value_name = "PATH", default_value = "/ws", value_parser = flags::ws_path)]
    pub(crate) ws_path: String,
    /// Ping every client this often, or `off` (no heartbeat: dead peers are then found only
    /// by --idle-timeout or TCP).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = flags::duration_or_off)]
    pub(crate) ping_interval: std::option::Option<Duration>,
    /// Close, as dead, a client that has not answered a ping within this time.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = flags::positive_duration)]
    pub(crate) ping_timeout: Duration,
    /// File of `token name` lines: upgrades then need a known token (Authorization: Bearer,
    /// `token` cookie or query parameter, or the first message), else 401; messages are
    /// sent under the name.
    #[arg(long, value_name = "FILE")]
    pub(crate) token_file: Option<PathBuf>,
    /// HS256 secret (at least 32 bytes) of the signed tokens (JWT) your backend issues:
    /// upgrades then need a token with `sub` and `exp` (header, cookie or first message).
    #[cfg(feature = "auth")]
    #[arg(long, value_name = "FILE", conflicts_with = "jwt_public_key")]
    pub(crate) jwt_secret_file: Option<PathBuf>,
    /// PEM public key (RSA: RS256, EC P-256: ES256) of the signed tokens your backend issues.
    #[cfg(feature = "auth")]
    #[arg(long, value_name = "FILE")]
    pub(crate) jwt_public_key: Option<PathBuf>,
    /// Key (at least 32 bytes) signing the page's session cookies; share it between nodes.
    /// Default: random per process (logins end with a restart).
    #[cfg(feature = "auth")]
    #[arg(long, value_name = "FILE")]
    pub(crate) session_secret_file: Option<PathBuf>,
    /// File of `name argon2-hash` lines: /login then checks passwords, and upgrades need a
    /// login.
    #[cfg(feature = "auth")]
    #[arg(long, value_name = "FILE")]
    pub(crate) users_file: Option<PathBuf>,
    /// File of server API keys, one a line (16 characters or more): the application's
    /// backend then publishes, sends and disconnects through /api/* with
    /// `Authorization: apikey KEY`.
    #[cfg(feature = "auth")]
    #[arg(long, value_name = "FILE")]
    pub(crate) api_key_file: Option<PathBuf>,
    /// Serve the server API on this address only (plain HTTP, for the application's backend
    /// on a private network; it also answers /metrics, /healthz and /readyz, and nothing
    /// else): the public addresses then answer /api/ with 404. Repeat for several.
    #[cfg(feature = "auth")]
    #[arg(
        long,
        value_name = "ADDR",
        value_delimiter = ',',
        requires = "api_key_file"
    )]
    pub(crate) api_listen: Vec<SocketAddr>,
    /// Origin allowed to connect (repeat for several); browsers from other origins get 403.
    #[arg(long, value_name = "ORIGIN", value_delimiter = ',', value_parser = flags::origin)]
    pub(crate) allow_origin: Vec<String>,
    /// Longest chat content, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = ChatLimits::default().max_content,
          value_parser = flags::count::<usize>)]
    pub(crate) max_content: usize,
    /// Longest channel name, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = ChatLimits::default().max_channel_name,
          value_parser = flags::count::<usize>)]
    pub(crate) max_channel_name: usize,
    /// Most channels one connection may subscribe to.
    #[arg(long, value_name = "N", default_value_t = ChatLimits::default().max_channels,
          value_parser = flags::count::<usize>)]
    pub(crate) max_channels: usize,
    /// Messages per second one client may send (twice as many in a burst); beyond it each
    /// message gets a `rate_limited` error, and a client that keeps on is closed with 1008.
    /// At least 0.5.
    #[arg(long, value_name = "N", default_value_t = ChatLimits::default().max_messages_per_second,
          value_parser = flags::rate)]
    pub(crate) max_messages_per_second: f64,
    /// Events kept per channel (and for the chat) for `since` recovery and `history`
    /// requests; 0: no history.
    #[arg(long, value_name = "N", default_value_t = HistoryLimits::default().size)]
    pub(crate) history_size: usize,
    /// A channel without a new event for this long loses its history.
    #[arg(long, value_name = "DURATION", default_value = "60m", value_parser = wsloop::duration::parse_duration)]
    pub(crate) history_ttl: Duration,
    /// Bytes of history in all channels together; past it the oldest events go first.
    #[arg(long, value_name = "BYTES", default_value_t = HistoryLimits::default().max_bytes,
          value_parser = flags::count::<usize>)]
    pub(crate) history_max_bytes: usize,
    /// Join other nodes through Redis Pub/Sub: redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]
    /// (needs the `redis` feature).
    #[arg(long, value_name = "URL", value_parser = flags::redis_url, group = "redis_backend")]
    pub(crate) redis: Option<String>,
    /// Join other nodes through a Redis Cluster (Redis 7; sharded Pub/Sub), given the URLs
    /// of one or more of its nodes: URL[,URL...]. Instead of --redis.
    #[arg(long, value_name = "URLS", value_parser = flags::redis_cluster_urls,
          group = "redis_backend")]
    pub(crate) redis_cluster: Option<String>,
    /// This node's id in the cluster (default: random). [A-Za-z0-9_-], at most 64.
    #[arg(long, value_name = "ID", requires = "redis_backend")]
    pub(crate) node_id: Option<String>,
    /// With a rediss:// URL: PEM file of the CA certificates that Redis's certificate must
    /// chain to, trusted instead of the system's (a private CA).
    #[cfg(feature = "tls")]
    #[arg(long, value_name = "FILE", value_parser = flags::ca_file, requires = "redis_backend")]
    pub(crate) redis_ca: Option<PathBuf>,
    /// On SIGINT/SIGTERM, how long to keep serving with /readyz answering 503 before the
    /// listeners close and the drain starts (time for a load balancer to stop sending new
    /// clients; 0: drain at once).
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = wsloop::duration::parse_duration)]
    pub(crate) shutdown_delay: Duration,
    /// Prefix of the Redis topics.
    #[arg(
        long,
        value_name = "PREFIX",
        default_value = "wsloop:",
        requires = "redis_backend"
    )]
    pub(crate) redis_prefix: String,
    /// How long a node's presence entries live in Redis after its last heartbeat (one every
    /// third of it): a killed node's users leave every presence answer within 4/3 of this.
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = flags::positive_duration,
          requires = "redis_backend")]
    pub(crate) presence_ttl: Duration,
    /// Channels announce each subscription (`join`) and its end (`leave`) to their
    /// subscribers.
    #[arg(long)]
    pub(crate) presence_events: bool,
}

#[derive(Args, Debug)]
pub(crate) struct ClientArgs {
    /// Server URL, e.g. ws://127.0.0.1:8080/ws or wss://chat.example.org/ws
    #[arg(value_parser = client_url)]
    pub(crate) url: String,
    /// Reconnect when the connection is lost (1 s backoff growing 1.5x to 30 s, 50 attempts).
    #[arg(long)]
    pub(crate) reconnect: bool,
    /// With --reconnect: do not subscribe again to the wsloop channels subscribed to (with
    /// `since`, to get what was missed) nor ask for the missed chats; only reconnect.
    #[arg(long, requires = "reconnect")]
    pub(crate) no_recover: bool,
    /// Extra request header, e.g. `Authorization: Bearer TOKEN` (repeatable).
    #[arg(long = "header", short = 'H', value_name = "HEADER", value_parser = flags::header)]
    pub(crate) headers: Vec<String>,
    /// Subprotocol to offer (repeatable).
    #[arg(long = "protocol", value_name = "NAME")]
    pub(crate) protocols: Vec<String>,
    /// Connect timeout.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = flags::positive_duration)]
    pub(crate) connect_timeout: Duration,
    /// Keep listening after standard input ends (close only on Ctrl-C or from the server).
    #[arg(short = 'n', long)]
    pub(crate) no_close: bool,
    /// Send each line as a binary message instead of text.
    #[arg(long)]
    pub(crate) binary: bool,
    /// Ping the server this often, or `off`.
    #[arg(long, value_name = "DURATION", default_value = "off", value_parser = flags::duration_or_off)]
    pub(crate) ping_interval: std::option::Option<Duration>,
    /// Print pings and pongs, both ways.
    #[arg(long)]
    pub(crate) show_ping_pong: bool,
    /// Pretty-print received messages that are JSON.
    #[arg(long)]
    pub(crate) json: bool,
    /// For wss://: PEM file of the CA certificates to trust instead of the system's (a
    /// private or test CA).
    #[cfg(feature = "tls")]
    #[arg(long, value_name = "FILE", value_parser = flags::ca_file)]
    pub(crate) ca: Option<PathBuf>,
    /// For wss://: accept any certificate, for any name (self-signed test setups only; the
    /// server is then not authenticated, and a warning says so).
    #[cfg(feature = "tls")]
    #[arg(long, conflicts_with = "ca")]
    pub(crate) insecure: bool,
    /// Offer permessage-deflate (RFC 7692) as browsers do; the connected line says what the
    /// server agreed to.
    #[cfg(feature = "deflate")]
    #[arg(long)]
    pub(crate) deflate: bool,
}

/// The client's URL, checked before connecting.
pub(crate) fn client_url(text: &str) -> Result<String, String> {
    wsloop::client::WsUrl::parse(text)
        .map(|_| text.to_owned())
        .map_err(|e| e.to_string())
}

impl LoopArgs {
    /// The TLS settings of `--tls-cert` and `--tls-key`, read and checked now: a file that
    /// cannot be read or used is refused at start, not at the first client.
    #[cfg(feature = "tls")]
    pub(crate) fn tls(&self) -> Result<Option<wsloop::server::tls::TlsConfig>, String> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        wsloop::server::tls::TlsConfig::from_pem_files(cert, key)
            .map(Some)
            .map_err(|e| format!("--tls-cert/--tls-key: {e}"))
    }

    pub(crate) fn config(
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
            #[cfg(feature = "tls")]
            listen_plain: self.listen_plain.clone(),
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

/// `--trust-proxy-header`: the header names are case-insensitive (RFC 9110 §5.1).
pub(crate) fn parse_proxy_header(value: &str) -> Result<ProxyHeader, String> {
    match value.to_ascii_lowercase().as_str() {
        "x-real-ip" => Ok(ProxyHeader::RealIp),
        "x-forwarded-for" => Ok(ProxyHeader::ForwardedFor),
        _ => Err(format!("{value:?}: want x-real-ip or x-forwarded-for")),
    }
}

/// The loop's settings for `serve`: the common flags, a 1 MiB message limit and the heartbeat.
pub(crate) fn serve_config(args: &ServeArgs) -> Config {
    Config {
        ping_interval: args.ping_interval,
        ping_timeout: args.ping_timeout,
        #[cfg(feature = "auth")]
        listen_internal: args.api_listen.clone(),
        ..args.common.config(
            SocketAddr::from(([127, 0, 0, 1], 8080)),
            1024 * 1024,
            Config::default().per_address.requests_per_second,
        )
    }
}

/// Parses the command line, the `WSLOOP_*` variables and the `--config` file, in that
/// order of precedence; exits with status 2 and a message on any bad value.
pub(crate) fn parse_cli(argv: Vec<std::ffi::OsString>) -> Cli {
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
