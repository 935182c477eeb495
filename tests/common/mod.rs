//! Shared helpers for integration tests: start a `wsloop` process on 127.0.0.1:0 and learn its
//! port, and find external programs (skipped when absent, failing when
//! `WSLOOP_REQUIRE_EXTERNAL=1`).
#![allow(dead_code)] // each test binary uses a different subset

pub mod raw;
// `tls.rs` (test certificates, rcgen) is included by the TLS tests alone:
// `#[path = "common/tls.rs"] mod tls;`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long a server may take to print its listening address.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

/// The `wsloop` server binary. In this package's tests Cargo built it and says where; the
/// load generator's tests (benches/load, another package of the workspace, which include this
/// file) build it on first use with the same cargo, profile and target directory, which is a
/// no-op after a workspace-wide `cargo test`.
pub fn wsloop_binary() -> PathBuf {
    if let Some(path) = option_env!("CARGO_BIN_EXE_wsloop") {
        return path.into();
    }
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT.get_or_init(build_wsloop).clone()
}

/// Builds the `wsloop` binary next to the running test executable and returns its path.
fn build_wsloop() -> PathBuf {
    cargo_build(&["--bin", "wsloop"], "wsloop")
}

/// An example program of this package (`examples/NAME.rs`). `cargo test` builds the examples
/// before it runs the tests; when one is missing (a single test run by name) it is built
/// here, the same way.
#[allow(dead_code)]
pub fn example_binary(name: &str) -> PathBuf {
    let built = profile_dir().join("examples").join(name);
    if built.exists() {
        return built;
    }
    cargo_build(&["--example", name], &format!("examples/{name}"))
}

/// `TARGET/PROFILE`, from the running test executable's `TARGET/PROFILE/deps/TEST-HASH`.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("test executable under TARGET/PROFILE/deps")
        .to_path_buf()
}

/// Builds a target of the `wsloop` package with the same cargo, profile and target directory
/// as the running tests; returns `TARGET/PROFILE/output`.
fn cargo_build(target: &[&str], output: &str) -> PathBuf {
    let profile_dir = profile_dir();
    let target_dir = profile_dir.parent().expect("target directory");
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "dev",
        Some(name) => name,
    };
    let status = Command::new(option_env!("CARGO").unwrap_or("cargo"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["build", "--quiet", "-p", "wsloop", "--profile", profile])
        .args(target)
        .env("CARGO_TARGET_DIR", target_dir)
        .status()
        .expect("run cargo build");
    assert!(status.success(), "cargo build {target:?} failed");
    profile_dir.join(output)
}

/// A running `wsloop` process, killed when dropped.
pub struct Server {
    child: Child,
    /// The first address it listens on.
    pub addr: SocketAddr,
    /// Every address it reported, in order (`--listen` ones, then `--listen-plain` ones, then
    /// `--api-listen` ones).
    pub addrs: Vec<SocketAddr>,
    /// What it wrote to standard error, when captured ([`Server::serve_logged`]).
    log: Option<std::sync::Arc<std::sync::Mutex<String>>>,
}

impl Server {
    /// Starts `wsloop <subcommand> --listen 127.0.0.1:0 <args>` and waits for the line
    /// `wsloop: listening on ws://ADDR/` (or `wss://ADDR/`) on its standard output.
    pub fn start(subcommand: &str, args: &[&str]) -> Server {
        Server::start_on(subcommand, "127.0.0.1:0", args)
    }

    /// Starts `wsloop <subcommand> <args>` whose flags name `listeners` addresses (no
    /// `--listen` added) and waits for a listening line for each.
    pub fn start_listening(subcommand: &str, args: &[&str], listeners: usize) -> Server {
        let mut command = Command::new(wsloop_binary());
        command.arg(subcommand).args(args);
        Server::spawn_listening(command, &format!("wsloop {subcommand}"), listeners, false)
    }

    /// Like [`Server::start`] on a given listen address (e.g. to restart on the same port).
    pub fn start_on(subcommand: &str, listen: &str, args: &[&str]) -> Server {
        let mut command = Command::new(wsloop_binary());
        command
            .arg(subcommand)
            .args(["--listen", listen])
            .args(args);
        Server::spawn(command, &format!("wsloop {subcommand}"), false)
    }

    /// `wsloop serve` with extra arguments, its standard error kept for [`Server::log`].
    pub fn serve_logged(args: &[&str]) -> Server {
        let mut command = Command::new(wsloop_binary());
        command
            .arg("serve")
            .args(["--listen", "127.0.0.1:0"])
            .args(args);
        Server::spawn(command, "wsloop serve", true)
    }

    /// What the server has written to standard error so far (empty unless started with
    /// [`Server::serve_logged`]).
    pub fn log(&self) -> String {
        self.log
            .as_ref()
            .map(|log| log.lock().expect("log lock").clone())
            .unwrap_or_default()
    }

    /// The log once it holds `needle`, waiting up to `wait` (panics after).
    pub fn wait_for_log(&self, needle: &str, wait: Duration) -> String {
        let deadline = std::time::Instant::now() + wait;
        loop {
            let log = self.log();
            if log.contains(needle) {
                return log;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no {needle:?} in the log within {wait:?}:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts an example program (`examples/NAME.rs`) on 127.0.0.1:0.
    #[allow(dead_code)]
    pub fn example(name: &str) -> Server {
        let mut command = Command::new(example_binary(name));
        command.arg("127.0.0.1:0");
        Server::spawn(command, &format!("example {name}"), false)
    }

    /// Spawns `command` (any server that prints a line `... listening on ws://ADDR/` on its
    /// standard output when ready) and waits for that line.
    pub fn spawn(command: Command, what: &str, capture_stderr: bool) -> Server {
        Server::spawn_listening(command, what, 1, capture_stderr)
    }

    /// Spawns `command` and waits for `listeners` lines `... listening on ws://ADDR/` (or
    /// `wss://ADDR/`) on its standard output; with `capture_stderr`, keeps its standard error
    /// for [`Server::log`].
    fn spawn_listening(
        mut command: Command,
        what: &str,
        listeners: usize,
        capture_stderr: bool,
    ) -> Server {
        let stderr = if capture_stderr {
            Stdio::piped()
        } else {
            Stdio::inherit()
        };
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
        let log = child.stderr.take().map(|stderr| {
            let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
            let sink = std::sync::Arc::clone(&log);
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    let mut log = sink.lock().expect("log lock");
                    log.push_str(&line);
                    log.push('\n');
                }
            });
            log
        });
        let stdout = child.stdout.take().expect("stdout piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // `http://` starts the line of an internal address (`--api-listen`).
                let url = line
                    .split_once("listening on ws://")
                    .or_else(|| line.split_once("listening on wss://"))
                    .or_else(|| line.split_once("listening on http://"));
                if let Some((_, rest)) = url {
                    let addr = rest.split('/').next().unwrap_or(rest).to_owned();
                    let _ = tx.send(addr);
                }
            }
        });
        let deadline = std::time::Instant::now() + STARTUP_TIMEOUT;
        let mut addrs = Vec::new();
        while addrs.len() < listeners {
            let wait = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(wait) {
                Ok(a) => addrs.push(a.parse().expect("listening address")),
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("{what} did not report its addresses in time");
                }
            }
        }
        Server {
            child,
            addr: addrs[0],
            addrs,
            log,
        }
    }

    /// `wsloop echo` with extra arguments.
    pub fn echo(args: &[&str]) -> Server {
        Server::start("echo", args)
    }

    /// The `ws://` URL of `path` on this server.
    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    /// The process id (for /proc inspection).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `wsloop serve` with extra arguments.
    pub fn serve(args: &[&str]) -> Server {
        Server::start("serve", args)
    }

    /// The `http://` URL of `path` on this server.
    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Sends a signal with `kill(1)` (e.g. `TERM`) and waits up to `timeout` for the exit;
    /// returns the exit code, or `None` if it did not exit in time.
    pub fn signal_and_wait(&mut self, signal: &str, timeout: Duration) -> Option<i32> {
        self.signal(signal);
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Sends a signal with `kill(1)` (e.g. `HUP`) and returns at once.
    pub fn signal(&self, signal: &str) {
        let _ = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status();
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A temporary file, removed on drop.
pub struct TempFile(PathBuf);

impl TempFile {
    /// A file named after this test process and `tag`, holding `contents`.
    pub fn new(tag: &str, contents: &str) -> TempFile {
        let path = std::env::temp_dir().join(format!("wsloop-test-{}-{tag}", std::process::id()));
        std::fs::write(&path, contents).expect("write temp file");
        TempFile(path)
    }

    /// Its path, for a command line.
    pub fn path(&self) -> &str {
        self.0.to_str().expect("UTF-8 temp path")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers of the chat tests (tests/serve.rs, tests/cluster.rs).
// ---------------------------------------------------------------------------------------------

/// Milliseconds since the Unix epoch, as the server stamps `ts`.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

/// Asserts that `value` is an object with exactly these keys.
pub fn assert_keys(value: &serde_json::Value, keys: &[&str]) {
    let object = value
        .as_object()
        .unwrap_or_else(|| panic!("not a JSON object: {value}"));
    let got: std::collections::BTreeSet<&str> = object.keys().map(String::as_str).collect();
    let want: std::collections::BTreeSet<&str> = keys.iter().copied().collect();
    assert_eq!(got, want, "fields of {value}");
}

/// Asserts that `value` is an integer number of ms within `slack_ms` of now; `what` names it.
pub fn assert_recent_ts(value: &serde_json::Value, slack_ms: u64, what: impl std::fmt::Display) {
    let ts = value
        .as_u64()
        .unwrap_or_else(|| panic!("{what}: ts {value} is not a non-negative integer"));
    let now = now_ms();
    assert!(
        ts.abs_diff(now) <= slack_ms,
        "{what}: ts {ts} is not within {slack_ms} ms of now ({now})"
    );
}

/// Whether external test dependencies are required (CI) rather than optional.
pub fn external_required() -> bool {
    std::env::var("WSLOOP_REQUIRE_EXTERNAL").is_ok_and(|v| v == "1")
}

/// Finds `program` on PATH. When it is missing: prints why and returns `None` so the test
/// can skip, or panics when `WSLOOP_REQUIRE_EXTERNAL=1`.
pub fn find_program(program: &str, why: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        skip_or_fail(&format!("{program} not found on PATH ({why})"));
    }
    found
}

/// Reports a missing external dependency: a printed skip, or a failure in CI.
pub fn skip_or_fail(reason: &str) {
    if external_required() {
        panic!("required external dependency missing: {reason}");
    }
    eprintln!("SKIPPED: {reason}; install it or see .ci/run");
}

// ---------------------------------------------------------------------------------------------
// Helpers of the hostile-input and limit tests (tests/hostile.rs, tests/limits.rs).
// ---------------------------------------------------------------------------------------------

/// The `Sec-WebSocket-Key` that [`upgrade_request`] sends: the sample nonce of RFC 6455 §1.3.
pub const SAMPLE_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
/// The `Sec-WebSocket-Accept` for [`SAMPLE_KEY`] (RFC 6455 §1.3).
pub const SAMPLE_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// A valid upgrade request for `path` with [`SAMPLE_KEY`], plus `extra` header lines (each
/// ending in CRLF) before the blank line.
pub fn upgrade_request(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {SAMPLE_KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

/// Lifts serve's per-address request budget (50 a second) so that tests opening many
/// connections from 127.0.0.1 test what they mean to.
pub const MANY_REQUESTS: [&str; 2] = ["--handshakes-per-second", "100000"];

/// The status line of an HTTP head.
pub fn status_line(head: &str) -> &str {
    head.split("\r\n").next().unwrap_or_default()
}

/// The first value of header `name` (case-insensitive) in an HTTP head.
pub fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.split("\r\n")
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
}

/// The `/metrics` series of a handshake rejection reason.
pub fn rejections(reason: &str) -> String {
    format!("wsloop_handshake_rejections_total{{reason=\"{reason}\"}}")
}

/// The `/metrics` series of a close code.
pub fn closes(code: u16) -> String {
    format!("wsloop_closes_total{{code=\"{code}\"}}")
}

/// A metric series of a serve that must be present, read with `extra` request headers.
pub fn sample_with(server: &Server, extra: &str, series: &str) -> u64 {
    let metrics = fetch_metrics(server.addr, extra);
    *metrics
        .get(series)
        .unwrap_or_else(|| panic!("no series {series} in /metrics: {metrics:?}"))
}

/// [`sample_with`] without extra headers.
pub fn sample(server: &Server, series: &str) -> u64 {
    sample_with(server, "", series)
}

/// The resident set size of process `pid` in KiB (`VmRSS` of `/proc/PID/status`).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}

/// User plus system CPU time of process `pid`, in clock ticks (`/proc/PID/stat`).
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/stat: {e}"));
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Serve's per-address limits out of the way, for tests whose many clients are all
/// 127.0.0.1.
pub const NO_ADDRESS_LIMITS: [&str; 8] = [
    "--handshakes-per-second",
    "100000",
    "--max-pending-handshakes-per-address",
    "100000",
    "--max-connections-per-address",
    "100000",
    "--max-messages-per-second",
    "100000",
];

/// A connection from `source` (another address in 127.0.0.0/8, so that per-address limits
/// tell it apart) to `addr`, with 3 s reads.
pub fn connect_from(source: &str, addr: SocketAddr) -> std::net::TcpStream {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    let from: SocketAddr = format!("{source}:0").parse().expect("source address");
    socket.bind(&from.into()).expect("bind source address");
    socket
        .connect_timeout(&addr.into(), Duration::from_secs(2))
        .expect("connect");
    let stream: std::net::TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    stream
}

/// Writes `request` over a fresh connection and reads until the server closes (at most 5 s);
/// returns the response head (status line and headers, without the blank line) and the body.
/// A reset after the response is tolerated (the bytes read before it count).
pub fn http_exchange(addr: SocketAddr, request: &[u8]) -> (String, Vec<u8>) {
    let wait = Duration::from_secs(5);
    let stream = std::net::TcpStream::connect_timeout(&addr, wait).expect("connect");
    stream.set_read_timeout(Some(wait)).unwrap();
    stream.set_write_timeout(Some(wait)).unwrap();
    exchange(stream, request)
}

/// [`http_exchange`] over a connected stream (plain, or TLS from `tests/common/tls.rs`) whose
/// reads and writes are bounded.
pub fn exchange(
    mut stream: impl std::io::Read + std::io::Write,
    request: &[u8],
) -> (String, Vec<u8>) {
    // The server may answer and stop reading before a hostile request is fully written.
    let _ = stream.write_all(request);
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            Err(e) if bytes.is_empty() => panic!("no answer: {e}"),
            Err(_) => break,
        }
    }
    let end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete head: {:?}", String::from_utf8_lossy(&bytes)));
    (
        String::from_utf8_lossy(&bytes[..end]).into_owned(),
        bytes[end + 4..].to_vec(),
    )
}

/// `/metrics` of a `wsloop serve` as `series -> value` (e.g.
/// `wsloop_closes_total{code="1008"}`), requested with `extra` header lines (e.g.
/// `X-Real-IP: 10.9.9.9\r\n` to use a request budget of its own behind `--trust-proxy`).
pub fn fetch_metrics(addr: SocketAddr, extra: &str) -> std::collections::BTreeMap<String, u64> {
    let request = format!("GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\r\n");
    let (head, body) = http_exchange(addr, request.as_bytes());
    assert!(head.starts_with("HTTP/1.1 200 "), "/metrics: {head}");
    parse_metrics(&String::from_utf8(body).expect("UTF-8 metrics"))
}

/// A Prometheus text body's `wsloop_*` series as `series -> value`; a malformed sample line
/// fails the test. (`process_*` samples are seconds with fractions; tests/metrics_page.rs
/// checks the whole page with a real parser.)
pub fn parse_metrics(body: &str) -> std::collections::BTreeMap<String, u64> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty() && !l.starts_with("process_"))
        .map(|l| {
            let (series, value) = l
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("bad sample line {l:?}"));
            let value = value
                .parse()
                .unwrap_or_else(|_| panic!("non-integer sample {l:?}"));
            (series.to_owned(), value)
        })
        .collect()
}

/// A well-behaved client that shows the server still serves others during an attack: on
/// `wsloop echo` it checks that a text comes back, on `wsloop serve` that a JSON `ping` gets
/// its `pong` (other messages, e.g. an attacker's broadcasts, are skipped).
pub struct Bystander {
    client: wsloop::client::Client,
    chat: bool,
    count: u64,
}

impl Bystander {
    /// Connects to `wsloop echo` on `/`.
    pub fn echo(server: &Server) -> Bystander {
        Bystander::connect(&server.url("/"), &[], false)
    }

    /// Connects to `wsloop serve` on `/ws` with extra request headers and reads the welcome.
    pub fn chat(server: &Server, headers: &[&str]) -> Bystander {
        let mut by = Bystander::connect(&server.url("/ws"), headers, true);
        let welcome = by.next_text("the welcome");
        assert!(welcome.contains("\"welcome\""), "first message: {welcome}");
        by
    }

    fn connect(url: &str, headers: &[&str], chat: bool) -> Bystander {
        let options = wsloop::client::ClientOptions {
            headers: headers.iter().map(|h| (*h).to_owned()).collect(),
            timeout: Some(Duration::from_secs(5)),
            ..Default::default()
        };
        let client = wsloop::client::Client::connect_with(url, &options)
            .unwrap_or_else(|e| panic!("bystander cannot connect to {url}: {e}"));
        Bystander {
            client,
            chat,
            count: 0,
        }
    }

    /// Sends a text message (e.g. a chat request whose answer the test reads with
    /// [`next_text`](Self::next_text)).
    pub fn send_text(&mut self, text: &str) {
        self.client
            .send_text(text)
            .unwrap_or_else(|e| panic!("bystander send {text:?}: {e}"));
    }

    /// The next text message (pings and pongs skipped), within 5 s; `what` names it in
    /// failure messages.
    pub fn next_text(&mut self, what: &str) -> String {
        loop {
            match self.client.recv() {
                Ok(wsloop::client::Received::Text(t)) => return t,
                Ok(wsloop::client::Received::Ping(_) | wsloop::client::Received::Pong(_)) => {}
                Err(wsloop::client::ClientError::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    panic!("bystander waiting for {what}: nothing from the server within 5 s")
                }
                other => panic!("bystander waiting for {what}: {other:?}"),
            }
        }
    }

    /// One round trip within 5 s; `when` names the moment in failure messages.
    pub fn round_trip(&mut self, when: &str) {
        self.count += 1;
        let start = std::time::Instant::now();
        let want = if self.chat {
            let ts = 1_000_000 + self.count;
            let ping = format!("{{\"type\":\"ping\",\"ts\":{ts}}}");
            self.client
                .send_text(&ping)
                .unwrap_or_else(|e| panic!("bystander send {when}: {e}"));
            format!("\"echo\":{ts}")
        } else {
            let text = format!("bystander {}", self.count);
            self.client
                .send_text(&text)
                .unwrap_or_else(|e| panic!("bystander send {when}: {e}"));
            text
        };
        for _ in 0..100_000 {
            let got = self.next_text(when);
            let done = if self.chat {
                got.contains("\"pong\"") && got.contains(&want)
            } else {
                got == want
            };
            if done {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "bystander round trip {when}: no answer within 5 s"
            );
        }
        panic!("bystander round trip {when}: no answer among 100000 messages");
    }
}

/// Reads a raw client's frames until the server's close frame, with at most `limit` frames
/// before it (each read bounded by the client's wait); returns those frames and the close's
/// code and reason.
pub fn read_until_close(
    raw: &mut raw::RawClient,
    limit: usize,
) -> (Vec<raw::Frame>, Option<u16>, String) {
    let mut before = Vec::new();
    loop {
        let frame = raw.read_frame();
        if frame.opcode == raw::opcode::CLOSE {
            let (code, reason) = frame.close_code();
            let reason = String::from_utf8(reason.to_vec()).expect("close reason is UTF-8");
            return (before, code, reason);
        }
        assert!(
            before.len() < limit,
            "no close frame among the first {limit} frames"
        );
        before.push(frame);
    }
}

/// Reads server frames from a clone of a raw client's stream through a large buffer, for tests
/// that read thousands of frames (the raw client's buffer suits a few). Open it only when the
/// raw client has nothing buffered (e.g. right after the handshake and the welcome).
pub struct FrameReader {
    stream: std::io::BufReader<std::net::TcpStream>,
}

impl FrameReader {
    /// Reads from a clone of `stream`, waiting up to `wait` for each read.
    pub fn new(stream: &std::net::TcpStream, wait: Duration) -> FrameReader {
        let stream = stream.try_clone().expect("clone stream");
        stream.set_read_timeout(Some(wait)).expect("read timeout");
        FrameReader {
            stream: std::io::BufReader::with_capacity(256 * 1024, stream),
        }
    }

    /// The next frame, or the I/O error (timeout, end of stream) that stopped it. Panics on a
    /// masked server frame (§5.1).
    pub fn try_next(&mut self) -> std::io::Result<raw::Frame> {
        use std::io::Read;
        let mut head = [0u8; 2];
        self.stream.read_exact(&mut head)?;
        assert_eq!(head[1] & 0x80, 0, "masked server frame (RFC 6455 §5.1)");
        let len = match head[1] & 0x7F {
            126 => {
                let mut b = [0u8; 2];
                self.stream.read_exact(&mut b)?;
                u64::from(u16::from_be_bytes(b))
            }
            127 => {
                let mut b = [0u8; 8];
                self.stream.read_exact(&mut b)?;
                u64::from_be_bytes(b)
            }
            n => u64::from(n),
        };
        let mut payload = vec![0u8; usize::try_from(len).expect("frame fits in memory")];
        self.stream.read_exact(&mut payload)?;
        Ok(raw::Frame {
            fin: head[0] & 0x80 != 0,
            rsv: (head[0] >> 4) & 7,
            opcode: head[0] & 0x0F,
            payload,
        })
    }

    /// The next frame; panics if none arrives.
    pub fn next_frame(&mut self) -> raw::Frame {
        self.try_next()
            .unwrap_or_else(|e| panic!("expected a frame from the server: {e}"))
    }
}
