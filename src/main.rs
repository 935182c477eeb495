//! The `wsloop` command line.

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use wsloop::app::echo::Echo;
use wsloop::log::{self, Level};
use wsloop::proto::limits::DEFAULT_MAX_MESSAGE;
use wsloop::proto::Limits;
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
}

/// Flags every server command shares.
#[derive(Args, Debug)]
struct ServerArgs {
    /// Address to listen on; repeat for several (e.g. `--listen 127.0.0.1:9001 --listen [::1]:9001`).
    #[arg(long = "listen", value_name = "ADDR")]
    listen: Vec<SocketAddr>,
    /// Largest message (and frame) accepted, in bytes; larger ones close with 1009.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_MESSAGE)]
    max_message: u64,
    /// Close connections whose upgrade request is not complete within this time.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    handshake_timeout: Duration,
    /// How long to wait for the peer's close reply and TCP close.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    close_timeout: Duration,
    /// Most verbose log level printed to stderr: error, warn, info, debug, trace.
    #[arg(long, value_name = "LEVEL", default_value = "info")]
    log_level: Level,
}

#[derive(Args, Debug)]
struct EchoArgs {
    #[command(flatten)]
    server: ServerArgs,
}

impl ServerArgs {
    fn config(&self, default_listen: SocketAddr) -> Config {
        let listen = if self.listen.is_empty() {
            vec![default_listen]
        } else {
            self.listen.clone()
        };
        Config {
            listen,
            limits: Limits::with_max_message(self.max_message),
            handshake_timeout: self.handshake_timeout,
            close_timeout: self.close_timeout,
            ..Config::default()
        }
    }
}

/// Parses `250ms`, `10s`, `2m` or a bare number of seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("invalid duration {text:?} (e.g. 500ms, 10s, 2m)"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("unknown unit in {text:?} (ms, s, m)")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("invalid duration {text:?}: {e}"))
}

fn serve<H: Handler>(config: Config, handler: H, what: &str) -> ExitCode {
    let mut server = match Server::bind(config.clone(), handler) {
        Ok(s) => s,
        Err(e) => {
            wsloop::log!(Level::Error, "cannot listen on {:?}: {e}", config.listen);
            return ExitCode::FAILURE;
        }
    };
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
        wsloop::log!(Level::Info, "{what} listening on {addr}");
    }
    let _ = stdout.flush();
    drop(stdout);
    match server.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            wsloop::log!(Level::Error, "event loop failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Echo(args) => {
            log::set_level(args.server.log_level);
            let config = args.server.config(SocketAddr::from(([127, 0, 0, 1], 9001)));
            serve(config, Echo, "echo")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("3h").is_err());
        assert!(parse_duration("x").is_err());
    }
}
