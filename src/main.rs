//! The `wsloop` command line: `echo`, `broadcast`, `serve`, `client` (feature `cli`). The load
//! generator is the separate `wsloop-bench` binary (benches/load).

mod access_flags;
mod args;
mod config_file;
mod flags;
mod stderr_log;

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use log::Level;
use mio::Waker;
#[cfg(feature = "tls")]
use signal_hook::consts::SIGHUP;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use wsloop::app::broadcast::Broadcast;
use wsloop::app::chat::ChatLimits;
use wsloop::app::echo::Echo;
use wsloop::app::history::HistoryLimits;
#[cfg(feature = "redis")]
use wsloop::app::node::ClusterNode;
use wsloop::app::serve::{Serve, ServeConfig};
#[cfg(feature = "redis")]
use wsloop::app::topics;
use wsloop::client::{ClientOptions, TlsOptions};
#[cfg(feature = "redis")]
use wsloop::cluster::streams::StreamSettings;
#[cfg(feature = "redis")]
use wsloop::cluster::{Bridge, Presence, PresenceConfig, RedisConfig};
use wsloop::proto::Limits;
use wsloop::server::{Config, Handler, Listener, Server};

use args::{parse_cli, serve_config, ClientArgs, Command, EchoArgs, LoopArgs, ServeArgs};

/// The start-up line of one listener: the WebSocket URL first (scripts and tests read the
/// address from `listening on ws://ADDR/` or `wss://ADDR/`), then, for `serve`, the page's URL.
fn listening_line(
    addr: SocketAddr,
    ws_path: Option<&str>,
    listener: Listener,
    tls: bool,
) -> String {
    if listener == Listener::Internal {
        return format!(
            "listening on http://{addr}/api/ (server API, /metrics, /healthz, /readyz)"
        );
    }
    let (ws, http) = if tls && listener == Listener::Listen {
        ("wss", "https")
    } else {
        ("ws", "http")
    };
    match ws_path {
        Some(path) => {
            format!("listening on {ws}://{addr}{path} (WebSocket), {http}://{addr}/ (page)")
        }
        None => format!("listening on {ws}://{addr}/ (WebSocket, any path)"),
    }
}

/// The loop's settings with the TLS of `--tls-cert` and `--tls-key`. A certificate or key
/// that cannot be used stops the start with status 2, as a bad flag does.
fn with_tls(config: Config, args: &LoopArgs) -> Result<Config, ExitCode> {
    #[cfg(feature = "tls")]
    return match args.tls() {
        Ok(tls) => Ok(Config { tls, ..config }),
        Err(e) => {
            wsloop::log!(Level::Error, "{e}");
            Err(ExitCode::from(2))
        }
    };
    #[cfg(not(feature = "tls"))]
    {
        let _ = args;
        Ok(config)
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
    #[cfg(feature = "tls")]
    let reload = config.tls.clone();
    #[cfg(not(feature = "tls"))]
    let reload = None;
    if let Err(e) = watch_signals(waker, Arc::clone(&stop), stopping, reload) {
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
    #[cfg(feature = "tls")]
    let tls = config.tls.is_some();
    #[cfg(not(feature = "tls"))]
    let tls = false;
    for (i, addr) in addrs.iter().enumerate() {
        // A stable line that scripts and tests parse to learn the port.
        let line = listening_line(*addr, ws_path, config.listener(i), tls);
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

/// What SIGHUP reloads: the TLS certificate and key (nothing without TLS, and SIGHUP then
/// keeps its default action).
#[cfg(feature = "tls")]
type Reload = Option<wsloop::server::tls::TlsConfig>;
#[cfg(not(feature = "tls"))]
type Reload = Option<std::convert::Infallible>;

/// A thread that turns the first SIGINT/SIGTERM into a graceful stop (after the shutdown
/// delay, during which the server says it is not ready); a second one exits at once. With
/// TLS, SIGHUP reloads the certificate and key for new connections.
fn watch_signals(
    waker: Arc<Waker>,
    stop: Arc<AtomicBool>,
    how: Stopping,
    reload: Reload,
) -> std::io::Result<()> {
    let mut signals = Signals::new([SIGINT, SIGTERM])?;
    #[cfg(feature = "tls")]
    if reload.is_some() {
        signals.add_signal(SIGHUP)?;
    }
    std::thread::spawn(move || {
        let mut signalled = false;
        for signal in signals.forever() {
            #[cfg(feature = "tls")]
            if let (SIGHUP, Some(tls)) = (signal, &reload) {
                // On this thread: reading and parsing the files never stalls the loop.
                match tls.reload() {
                    Ok(()) => wsloop::log!(
                        Level::Info,
                        "SIGHUP: certificate and key reloaded for new connections"
                    ),
                    Err(e) => wsloop::log!(
                        Level::Error,
                        "SIGHUP: {e}; still serving the previous certificate"
                    ),
                }
                continue;
            }
            #[cfg(not(feature = "tls"))]
            let _ = &reload;
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

/// `broadcast`'s largest message by default: serve's 1 MiB. Echo takes 64 MiB for Autobahn's
/// section 9; a broadcast is held once whatever the number of receivers, but each receiver's
/// queue must take it under `--max-backpressure`.
const BROADCAST_MAX_MESSAGE: u64 = 1 << 20;

/// Runs `echo` or `broadcast`: an application without settings of its own on the loop's
/// flags, on 127.0.0.1:9001 by default, with no request rate limit and no readiness.
fn run_plain<H: Handler>(args: &EchoArgs, default_max_message: u64, handler: H) -> ExitCode {
    stderr_log::set_level(args.common.log_level);
    let config = args.common.config(
        SocketAddr::from(([127, 0, 0, 1], 9001)),
        default_max_message,
        f64::INFINITY,
    );
    let config = match with_tls(config, &args.common) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let stopping = Stopping {
        not_ready: None,
        delay: Duration::ZERO,
        drain_timeout: args.common.drain_timeout,
    };
    run_server(config, stopping, handler, None, |_, _| Ok(()), |_, _| {})
}

fn serve(args: Box<ServeArgs>) -> ExitCode {
    let config = match with_tls(serve_config(&args), &args.common) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let access = match access_flags::access(&args) {
        Ok(access) => access,
        Err(e) => {
            wsloop::log!(Level::Error, "{e}");
            return ExitCode::from(2);
        }
    };
    #[cfg(not(feature = "redis"))]
    if args.redis.is_some() || args.redis_cluster.is_some() {
        wsloop::log!(
            Level::Error,
            "--redis: this wsloop was built without the `redis` feature (no cluster support)"
        );
        return ExitCode::from(2);
    }
    #[cfg(feature = "redis")]
    let backend = match (args.redis, args.redis_cluster) {
        (Some(url), _) => Some((url, false)),
        (None, Some(urls)) => Some((urls, true)),
        (None, None) => None,
    };
    #[cfg(feature = "redis")]
    let redis = match backend {
        Some((url, cluster)) => {
            let node_id = args.node_id.unwrap_or_else(topics::random_node_id);
            if let Err(e) = topics::validate_node_id(&node_id) {
                wsloop::log!(Level::Error, "--node-id: {e}");
                return ExitCode::from(2);
            }
            #[cfg(feature = "tls")]
            let ca_file = args.redis_ca;
            #[cfg(not(feature = "tls"))]
            let ca_file = None;
            if ca_file.is_some() && !url.split(',').all(|u| u.starts_with("rediss://")) {
                wsloop::log!(Level::Error, "--redis-ca: the --redis URL is not rediss://");
                return ExitCode::from(2);
            }
            let config = RedisConfig {
                url,
                cluster,
                ca_file,
                // An event quotes at most `max_content` bytes, which JSON escaping can grow
                // six times (`\u0001`), plus names, ids and the envelope.
                max_payload: args.max_content.saturating_mul(6).saturating_add(4096),
                claim: Some(ClusterNode::claim_key(&node_id, &args.redis_prefix)),
                // With history, each recorded topic's history lives in a Redis Stream.
                history: (args.history_size > 0).then_some(StreamSettings {
                    max_len: args.history_size,
                    ttl: args.history_ttl,
                }),
            };
            let presence = PresenceConfig {
                node: node_id.clone(),
                prefix: args.redis_prefix.clone(),
                ttl: args.presence_ttl,
            };
            Some((config, presence, node_id, args.redis_prefix))
        }
        None => None,
    };
    let serve_config = ServeConfig {
        #[cfg(feature = "auth")]
        api_internal: !args.api_listen.is_empty(),
        #[cfg(not(feature = "auth"))]
        api_internal: false,
        ws_path: args.ws_path,
        access,
        auth_timeout: config.handshake_timeout,
        allowed_origins: args.allow_origin,
        chat: ChatLimits {
            max_content: args.max_content,
            max_channel_name: args.max_channel_name,
            max_channels: args.max_channels,
            max_messages_per_second: args.max_messages_per_second,
        },
        presence_events: args.presence_events,
        history: HistoryLimits {
            size: args.history_size,
            ttl: args.history_ttl,
            max_bytes: args.history_max_bytes,
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
            #[cfg(feature = "auth")]
            _serve
                .start_password_checks(Arc::clone(&_waker))
                .map_err(|e| format!("password checks: {e}"))?;
            #[cfg(feature = "redis")]
            if let Some((redis, presence, node_id, prefix)) = redis {
                wsloop::log!(
                    Level::Info,
                    "cluster node {node_id} via {} (topics {prefix}*)",
                    redis.redacted_url(),
                );
                let presence = Presence::start(&redis, presence, Arc::clone(&_waker))?;
                let topics = ClusterNode::standing_topics(&prefix);
                let bridge = Bridge::start(redis, &topics, _waker)?;
                _serve.attach_cluster(ClusterNode::new(bridge, presence, node_id, prefix));
            }
            Ok(())
        },
        Serve::close_cluster,
    )
}

/// `--ca` and `--insecure`; the warning that `--insecure` owes the user.
#[cfg(feature = "tls")]
fn client_tls(args: &ClientArgs) -> TlsOptions {
    let secure = wsloop::client::WsUrl::parse(&args.url).is_ok_and(|u| u.secure);
    if args.insecure && secure {
        eprintln!("{}", wsloop::client::tls::INSECURE_WARNING);
    }
    TlsOptions {
        ca_file: args.ca.clone(),
        insecure: args.insecure,
    }
}

#[cfg(not(feature = "tls"))]
fn client_tls(_args: &ClientArgs) -> TlsOptions {
    TlsOptions::default()
}

fn main() -> ExitCode {
    let cli = parse_cli(std::env::args_os().collect());
    stderr_log::install(Level::Info);
    match cli.command {
        Command::Echo(args) => run_plain(&args, Limits::default().max_message, Echo),
        Command::Broadcast(args) => run_plain(&args, BROADCAST_MAX_MESSAGE, Broadcast::default()),
        Command::Serve(args) => {
            stderr_log::set_level(args.common.log_level);
            serve(args)
        }
        Command::Client(args) => {
            let tls = client_tls(&args);
            let options = ClientOptions {
                headers: args.headers,
                protocols: args.protocols,
                timeout: Some(args.connect_timeout),
                max_message: None,
                tls,
                #[cfg(feature = "deflate")]
                deflate: args
                    .deflate
                    .then(wsloop::proto::extension::DeflateOffer::default),
            };
            let settings = wsloop::client::cli::Settings {
                reconnect: args.reconnect,
                recover: !args.no_recover,
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
