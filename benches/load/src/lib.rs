//! `wsloop-bench`: a load generator for wsloop servers on this machine, built on the same
//! protocol core as the server (client frames masked, every frame decoded and checked). It is
//! a crate of its own, on the `wsloop` library's `proto` and `client` modules, so that its
//! dependencies (clap, an HDR histogram, rlimit) never enter the server's build.
//!
//! Scenarios, one module each: [`echo`] (round trips, every echo compared byte for byte),
//! [`broadcast`] (chat-protocol fan-out, every subscriber must get every message once),
//! [`connect`] (connection storm, and idle connections for memory per connection). They
//! share a non-blocking client on mio ([`driver`]), the run timeline with /proc samples of
//! the server ([`mod@run`]) and the output ([`report`]). The figure that counts on a small machine
//! where client and server share the cores is the server's CPU time per message, printed
//! beside the rate.

pub mod broadcast;
pub mod connect;
pub mod driver;
pub mod echo;
pub mod net;
pub mod opener;
pub mod outbox;
pub mod reflect;
pub mod report;
pub mod run;
pub mod stream;
pub mod text;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::{Args, Parser, Subcommand, ValueEnum};
use wsloop::duration::parse_duration;

use self::driver::{Endpoint, Timeouts};
use self::report::Report;
use self::run::Plan;
use self::stream::TlsTarget;
use wsloop::client::tls::INSECURE_WARNING;
use wsloop::client::TlsOptions;
use wsloop::proto::extension::DeflateOffer;
use wsloop::proto::Limits;

/// Longest duration any flag accepts (keeps every deadline computation in range).
const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// Descriptors kept free beyond one per connection (poll, stdio, /proc reads).
const SPARE_DESCRIPTORS: u64 = 64;

/// `wsloop-bench` and its scenarios.
#[derive(Parser, Debug)]
#[command(
    name = "wsloop-bench",
    version,
    about = "Load generator for a wsloop server on this machine (127.0.0.0/8 only): echo round \
             trips, broadcast fan-out, connection storms, memory per idle connection; prints \
             rates, latency percentiles and the server's CPU time per message."
)]
#[command(after_help = "\
Exit status: 0 for a clean run; 1 when the run could not be made (bad arguments, a host \
outside 127.0.0.0/8, connections that could not be opened); 2 when it ran but saw errors, \
payload mismatches or missing deliveries (the figures are printed all the same).")]
pub struct BenchArgs {
    /// What to measure.
    #[command(subcommand)]
    pub scenario: Scenario,
}

/// The scenarios.
#[derive(Subcommand, Debug)]
pub enum Scenario {
    /// N connections each keeping K messages in flight against an echo server (`wsloop
    /// echo`); prints messages/s, round-trip latency percentiles and server CPU per message.
    /// Every echo is compared byte for byte with what was sent.
    #[command(after_help = "\
Example (the server's per-address connection limit is 1000 by default):
  wsloop echo --listen 127.0.0.1:9001 --max-connections-per-address 100000 &
  wsloop-bench echo --url ws://127.0.0.1:9001/ --server-pid $! --connections 100 --in-flight 16")]
    Echo(EchoArgs),
    /// Publishers and subscribers on `wsloop serve` (the JSON chat protocol): delivered
    /// frames/s, publish-to-receive latency and server CPU per delivered frame. Every
    /// subscriber must get every message exactly once, in order.
    #[command(after_help = "\
The server's default limits (50 messages/s per connection, 50 handshakes/s and 1000 \
connections per address) would show up as errors; lift them for a run:
  wsloop serve --listen 127.0.0.1:8080 --max-messages-per-second 1000000 \\
      --handshakes-per-second 1000000 --max-connections-per-address 100000 &
  wsloop-bench broadcast --url ws://127.0.0.1:8080/ws --server-pid $! --subscribers 100

Publishers send {\"type\":\"publish\",\"channel\":C,\"content\":\"P:SEQ:MICROS:words\"} (or \
`chat` with --via chat) and keep --in-flight of them unacknowledged (the `published` reply, \
or their own chat coming back); subscribers check SEQ per publisher and take the latency \
from MICROS. With --protocol raw the message is the bare content P:SEQ:MICROS:words, for a \
server that sends every text message to every client (benches/peers tungstenite-broadcast).")]
    Broadcast(BroadcastArgs),
    /// Connection storm: open, handshake, close, again, with --concurrency connections at a
    /// time; prints handshakes/s, handshake latency and server CPU per handshake.
    #[command(after_help = "\
Against `wsloop serve` lift --handshakes-per-second (default 50 per address). Each \
connection ends with a closing handshake the server finishes (it closes TCP first, so the \
TIME_WAIT state stays on its side); --source-count spreads the ports over more addresses.")]
    Connect(ConnectArgs),
    /// Open N connections, hold them idle for --duration and report the server's resident
    /// memory per connection (VmRSS from /proc/PID/status; needs --server-pid).
    #[command(after_help = "\
Use a fresh server: memory it freed earlier is reused and hides the cost. The resident \
size is read before the first connection and again after the warm-up that follows the last \
one. Above 1000 connections, lift --max-connections-per-address on the server or use \
--source-count.")]
    Idle(IdleArgs),
}

/// Flags every scenario takes.
#[derive(Args, Clone, Debug)]
pub struct CommonArgs {
    /// Server URL, ws://HOST:PORT/PATH or wss://HOST:PORT/PATH (TLS). HOST must be an IPv4
    /// address in 127.0.0.0/8 or `localhost`: any other host is refused without being
    /// resolved, so this tool can only load the machine it runs on. Several URLs,
    /// comma-separated (all ws:// or all wss://), for the nodes of a cluster: connections are
    /// numbered over the run (broadcast: publishers first, then subscribers) and connection g
    /// goes to URL g % n, so `--url A,B` with one publisher puts it on A and splits the
    /// subscribers evenly between A and B.
    #[arg(long, value_name = "URL[,URL...]")]
    pub url: String,
    /// For wss://: PEM file of the CA certificates to trust instead of the system's (a
    /// private or test CA).
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// For wss://: accept any certificate, for any name (self-signed test setups only).
    #[arg(long, conflicts_with = "ca")]
    pub insecure: bool,
    /// The server's process id: its CPU time (/proc/PID/stat) and memory (/proc/PID/status)
    /// over the measured window are reported. Several, comma-separated, for a server made of
    /// several processes (a TLS proxy in front of wsloop): their sum is reported.
    #[arg(long, value_name = "PID", value_delimiter = ',')]
    pub server_pid: Vec<u32>,
    /// Client threads, each with its own mio poll and an equal share of the connections.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub threads: usize,
    /// Length of the measured window.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Load before the window that is not counted (caches, allocator, TCP windows).
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Start the measured window at this wall-clock time, in seconds since the Unix epoch
    /// (as `date +%s` prints), instead of --warmup after the set-up: load generators started
    /// together then measure one window and close at once. The set-up must be over by then.
    #[arg(long, value_name = "UNIX_SECONDS", value_parser = parse_wall_clock)]
    pub window_start: Option<SystemTime>,
    /// Connections opening at once, per thread (during setup; for `connect`, the storm's
    /// width).
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub concurrency: usize,
    /// Per connection: TCP connect plus the opening handshake.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// Every connection (and subscription) must be ready within this, or the run fails.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub setup_timeout: Duration,
    /// After the window: how long to wait for messages still in flight.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// Per connection at the end: from our close frame to the server closing TCP.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub close_timeout: Duration,
    /// Source addresses to bind client sockets to, round-robin, e.g.
    /// 127.0.0.1,127.0.0.2 (each in 127.0.0.0/8): every address has its own ephemeral ports.
    #[arg(
        long,
        value_name = "ADDRS",
        value_delimiter = ',',
        conflicts_with = "source_count"
    )]
    pub source_addrs: Vec<Ipv4Addr>,
    /// Bind client sockets to 127.0.0.1 ... 127.0.0.N, round-robin.
    #[arg(long, value_name = "N")]
    pub source_count: Option<u8>,
    /// Accept masked frames from the server and unmask them. Only for a server that sends
    /// the client's own bytes back unchanged (benches/peers `raw-echo --mode bytes`, the bare
    /// TCP ceiling); RFC 6455 §5.1 has a client fail a real server that masks. Frames must
    /// then fit the 64 KiB read buffer.
    #[arg(long)]
    pub accept_masked: bool,
    /// Print one JSON object with every figure on stdout (the text summary goes to stderr).
    #[arg(long)]
    pub json: bool,
    /// Offer permessage-deflate (RFC 7692) as browsers do (`client_max_window_bits`), and
    /// compress what is sent (messages of 64 bytes and more) when the server accepts; the
    /// report gives the bytes on the wire per message both ways.
    #[arg(long)]
    pub deflate: bool,
    /// With --deflate: also ask for server_no_context_takeover and offer
    /// client_no_context_takeover (each message compressed on its own, both ways).
    #[arg(long, requires = "deflate")]
    pub deflate_no_context_takeover: bool,
}

/// `wsloop-bench echo`.
#[derive(Args, Debug)]
pub struct EchoArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Connections.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub connections: usize,
    /// Messages in flight per connection: a new one is sent as each echo comes back (with
    /// --rate: the most a connection may have outstanding; a paced send beyond is skipped).
    #[arg(long, value_name = "K", default_value_t = 1)]
    pub in_flight: usize,
    /// Messages per second per connection, the connections taking turns evenly spaced
    /// (0: a new message as each echo comes back, the throughput shape).
    #[arg(long, value_name = "N", default_value_t = 0.0)]
    pub rate: f64,
    /// Payload bytes per message.
    #[arg(long, value_name = "BYTES", default_value_t = 16)]
    pub size: usize,
    /// Send binary messages (default: text).
    #[arg(long)]
    pub binary: bool,
    /// Text of JSON-like chat messages with varying fields, which compresses as real
    /// traffic does (default: a repeating ASCII pattern, which compresses to almost nothing).
    #[arg(long, conflicts_with = "binary")]
    pub json_text: bool,
}

/// How broadcast publishers reach the subscribers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Via {
    /// `publish` on a channel the subscribers `subscribe` to.
    Publish,
    /// `chat`, which goes to every connection.
    Chat,
}

/// What a broadcast server speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Protocol {
    /// The JSON chat protocol of `wsloop serve` (PROTOCOL.md).
    Chat,
    /// Plain text, for a server that sends every text message to every client, the sender
    /// included (benches/peers `tungstenite-broadcast`): the message is the content, a
    /// publisher's own copy is its acknowledgement; --via and --channel do not apply.
    Raw,
}

/// `wsloop-bench broadcast`.
#[derive(Args, Debug)]
pub struct BroadcastArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Publishing connections.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub publishers: usize,
    /// Receiving connections.
    #[arg(long, value_name = "M", default_value_t = 100)]
    pub subscribers: usize,
    /// Unacknowledged publishes per publisher.
    #[arg(long, value_name = "K", default_value_t = 1)]
    pub in_flight: usize,
    /// Publishes per second per publisher (0: as fast as acknowledgements allow).
    #[arg(long, value_name = "N", default_value_t = 0.0)]
    pub rate: f64,
    /// Bytes of `content` per message (at least what the sequence number and timestamp
    /// take).
    #[arg(long, value_name = "BYTES", default_value_t = 64)]
    pub size: usize,
    /// Channel name.
    #[arg(long, value_name = "NAME", default_value = "bench")]
    pub channel: String,
    /// `publish` to a channel, or `chat` to everyone.
    #[arg(long, value_enum, default_value_t = Via::Publish)]
    pub via: Via,
    /// The server's protocol: `wsloop serve`'s chat, or plain text to everyone.
    #[arg(long, value_enum, default_value_t = Protocol::Chat)]
    pub protocol: Protocol,
}

/// `wsloop-bench connect`.
#[derive(Args, Debug)]
pub struct ConnectArgs {
    #[command(flatten)]
    pub common: CommonArgs,
}

/// `wsloop-bench idle`.
#[derive(Args, Debug)]
pub struct IdleArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Connections to open and hold.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub connections: usize,
    /// Each connection sends one JSON-like text message of this many bytes once open and is
    /// held after its echo came back (against an echo server): what a connection keeps after
    /// its first messages, e.g. permessage-deflate's compressor and inflater.
    #[arg(long, value_name = "BYTES")]
    pub first_message: Option<usize>,
}

/// Runs a scenario and prints its report. See [`BenchArgs`] for the exit status.
pub fn run(args: &BenchArgs) -> ExitCode {
    let (common, result) = match &args.scenario {
        Scenario::Echo(a) => (&a.common, echo::run(a)),
        Scenario::Broadcast(a) => (&a.common, broadcast::run(a)),
        Scenario::Connect(a) => (&a.common, connect::run_connect(a)),
        Scenario::Idle(a) => (&a.common, connect::run_idle(a)),
    };
    match result {
        Ok(report) => {
            report.print(common.json);
            if report.is_clean() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            }
        }
        Err(e) => {
            eprintln!("wsloop-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

impl CommonArgs {
    /// Checks the flags, raises the descriptor limit for `connections` sockets and shapes
    /// the run.
    pub fn plan(&self, connections: usize) -> Result<Plan, String> {
        let targets = net::parse_targets(&self.url)?;
        let options = TlsOptions {
            ca_file: self.ca.clone(),
            insecure: self.insecure,
        };
        if self.insecure && targets[0].secure {
            eprintln!("{INSECURE_WARNING}");
        }
        let endpoints = targets
            .into_iter()
            .map(|target| {
                let tls = match target.secure {
                    false => None,
                    true => Some(TlsTarget::new(target.host_name(), &options)?),
                };
                Ok(Endpoint { target, tls })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let sources = net::source_addrs(&self.source_addrs, self.source_count)?;
        if self.threads == 0 || self.concurrency == 0 {
            return Err("--threads and --concurrency must be at least 1".into());
        }
        if self.duration.is_zero() {
            return Err("--duration must be positive".into());
        }
        let durations = [
            self.duration,
            self.warmup,
            self.connect_timeout,
            self.setup_timeout,
            self.drain_timeout,
            self.close_timeout,
        ];
        if durations.iter().any(|d| *d > MAX_DURATION) {
            return Err("durations are limited to a day".into());
        }
        let limit = net::raise_descriptor_limit()
            .map_err(|e| format!("cannot raise the descriptor limit: {e}"))?;
        if (connections as u64).saturating_add(SPARE_DESCRIPTORS) > limit {
            return Err(format!(
                "{connections} connections need more descriptors than the hard limit \
                 allows ({limit}); raise it (ulimit -Hn, or LimitNOFILE)"
            ));
        }
        Ok(Plan {
            endpoints,
            sources,
            server_pid: self.server_pid.clone(),
            threads: self.threads,
            warmup: self.warmup,
            window_start: self.window_start,
            duration: self.duration,
            setup_timeout: self.setup_timeout,
            drain_timeout: self.drain_timeout,
            timeouts: Timeouts {
                connect: self.connect_timeout,
                close: self.close_timeout,
            },
            max_message: Limits::default().max_message,
            accept_masked: self.accept_masked,
            deflate: self.deflate.then(|| DeflateOffer {
                server_no_context_takeover: self.deflate_no_context_takeover,
                client_no_context_takeover: self.deflate_no_context_takeover,
                ..DeflateOffer::default()
            }),
        })
    }

    /// A report for `scenario` whose headline says `what` ran, and how; with the shared
    /// flags in its JSON.
    pub fn report(&self, plan: &Plan, scenario: &str, what: &str) -> Report {
        let threads = match self.threads {
            1 => "1 thread".to_owned(),
            n => format!("{n} threads"),
        };
        // --window-start replaces --warmup: the window began at a set time.
        let window_start = self.window_start.map(|at| {
            at.duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64()
        });
        let after = match window_start {
            Some(at) => format!("from --window-start {at:.3}"),
            None => format!("after {:.1} s warm-up", self.warmup.as_secs_f64()),
        };
        let headline = format!(
            "{scenario}: {what}; {}, {:.1} s measured {after}, {threads}",
            self.url,
            self.duration.as_secs_f64(),
        );
        let mut report = Report::new(scenario, headline);
        report.set("url", self.url.as_str());
        report.set("urls", self.url.split(',').collect::<Vec<_>>());
        report.set("tls", plan.secure());
        report.set("server_pid", self.server_pid.first().copied());
        report.set("server_pids", self.server_pid.clone());
        report.set("threads", self.threads);
        report.set("accept_masked", self.accept_masked);
        report.set("deflate", self.deflate);
        report.set(
            "deflate_no_context_takeover",
            self.deflate_no_context_takeover,
        );
        report.set("duration_s", self.duration.as_secs_f64());
        report.set(
            "warmup_s",
            window_start.is_none().then_some(self.warmup.as_secs_f64()),
        );
        report.set("window_start", window_start);
        let sources: Vec<String> = plan.sources.iter().map(|a| a.to_string()).collect();
        report.set("source_addrs", sources);
        report
    }
}

/// `--window-start`: seconds since the Unix epoch, fractions allowed.
fn parse_wall_clock(text: &str) -> Result<SystemTime, String> {
    text.parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0 && *s < 1e11)
        .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs_f64(s))
        .ok_or_else(|| format!("{text:?} is not a time in seconds since the Unix epoch"))
}

/// The connections (numbered 0..total) that thread `thread` of `threads` runs.
pub fn share(total: usize, threads: usize, thread: usize) -> impl Iterator<Item = usize> {
    (thread..total).step_by(threads.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_everything_once() {
        let mut all: Vec<usize> = (0..3).flat_map(|t| share(10, 3, t)).collect();
        all.sort_unstable();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
        assert_eq!(share(2, 4, 3).count(), 0);
    }

    #[test]
    fn window_start_is_seconds_since_the_epoch() {
        let at = parse_wall_clock("1764752400.5").unwrap();
        let since = at.duration_since(SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!(since, Duration::from_millis(1_764_752_400_500));
        for bad in ["", "-1", "NaN", "inf", "1e300", "tomorrow"] {
            assert!(parse_wall_clock(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn one_publisher_on_the_first_url_and_the_subscribers_split_evenly() {
        // broadcast's numbering: 1 publisher (0), then 2,000 subscribers; `--url A,B`.
        let (publishers, total) = (1, 2001);
        for threads in [1, 2, 3] {
            let mut publisher_on = Vec::new();
            let mut subscribers_on = [0; 2];
            for t in 0..threads {
                for g in share(total, threads, t) {
                    let url = net::target_of(g, 2);
                    if g < publishers {
                        publisher_on.push(url);
                    } else {
                        subscribers_on[url] += 1;
                    }
                }
            }
            assert_eq!(publisher_on, [0], "{threads} threads");
            assert_eq!(subscribers_on, [1000, 1000], "{threads} threads");
        }
    }

    #[test]
    fn url_flag_takes_a_list() {
        let args = BenchArgs::try_parse_from([
            "wsloop-bench",
            "broadcast",
            "--url",
            "ws://127.0.0.1:1/ws,ws://127.0.0.1:2/ws",
        ])
        .unwrap();
        let Scenario::Broadcast(b) = args.scenario else {
            panic!("not broadcast");
        };
        let plan = b.common.plan(2).unwrap();
        let ports: Vec<u16> = plan
            .endpoints
            .iter()
            .map(|e| e.target.addr.port())
            .collect();
        assert_eq!(ports, [1, 2]);
        assert!(!plan.secure());
        let report = b.common.report(&plan, "broadcast", "test").json();
        assert_eq!(
            report["urls"],
            serde_json::json!(["ws://127.0.0.1:1/ws", "ws://127.0.0.1:2/ws"])
        );
    }
}
