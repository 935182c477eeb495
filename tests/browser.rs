//! The browser client (`web/`) in real headless Chromium, at desktop and phone width: two pages
//! chat through `wsloop serve --deflate` (Chromium offers permessage-deflate by itself; the
//! server must accept it), survive a server restart on the same port by reconnecting by
//! themselves, and keep working; a third gives up and comes back with "Reconnect now".
//! Recovery (PROTOCOL.md): a page cut off by the server API (`/api/disconnect`) while the
//! backend publishes and broadcasts shows every missed message once, in order, and the gap it
//! cannot fill (history too short for what was missed; a restart, which starts a new epoch).
//! The recovery rules themselves (duplicates, live chats held back) also run in Node alone
//! (`tests/e2e/recovery.mjs`).
//! Layout, focus order and accessibility (axe-core) are checked in the pages.
//!
//! The browser is driven by `tests/e2e/chat.mjs` with Playwright (`playwright-core`, which
//! drives the system's Chromium and downloads nothing). This test starts the server, runs the
//! script, restarts the server when the script asks for it, and checks the script's verdict
//! and the screenshots it leaves in `target/test-artifacts/browser-http/` and `browser-https/`
//! (look at them).
//!
//! The same run goes over https:// and wss:// (`--tls-cert`, a certificate of a test CA;
//! the browser ignores certificate errors, as its fresh profile cannot trust that CA).
//!
//! With the history in Redis (two nodes on one `redis-server`, tests/common/cluster.rs), a
//! page whose node stops mid-conversation, while the other node carries on, shows every
//! message it missed once the node is back, with no gap (`tests/e2e/redis-restart.mjs`,
//! screenshot in `target/test-artifacts/browser-redis/`).
//!
//! External dependencies: Chromium (`/usr/bin/chromium` or `chromium` on PATH), `node`, and
//! `npm ci` run in `tests/e2e`; `redis-server` for the Redis run. Without them a test prints
//! a skip, or fails when `WSLOOP_REQUIRE_EXTERNAL=1`.

mod common;
#[path = "common/cluster.rs"]
mod harness;
#[path = "common/tls.rs"]
mod tls;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::Server;
use harness::Node;

/// Bound on the whole script run: the script bounds itself at 150 s, this is the backstop.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(210);
/// The screenshots the script must leave: desktop and phone width, and the page that gave up.
const SCREENSHOTS: [&str; 4] = [
    "desktop.png",
    "phone.png",
    "phone-gave-up.png",
    "phone-refused.png",
];
/// How long the server stays down during the restart: the pages see at least one refused
/// reconnection attempt.
const DOWN_TIME: Duration = Duration::from_millis(1500);
/// How long the script gets to close its browser after SIGTERM before it is killed.
const TERM_GRACE: Duration = Duration::from_secs(5);
/// Short server timers, so that the run also covers the server pinging browsers; and
/// permessage-deflate, which Chromium offers by itself: the chat runs compressed. The pages
/// log in with a nickname; the session key comes from a file, so that their logins hold
/// across the restart (`--session-secret-file` follows these, see [`Secrets`]).
const SERVER_ARGS: [&str; 5] = ["--ping-interval", "2s", "--ping-timeout", "2s", "--deflate"];
/// History kept short, so that chat.mjs can miss more than it holds.
const SHORT_HISTORY: [&str; 2] = ["--history-size", "4"];
/// Channel messages redis-restart.mjs has the backend publish while node A is down.
const MISSED_ON_CHANNEL: u64 = 5;
/// The backend's key for the server API, with which the script cuts a page off and publishes.
const API_KEY: &str = "browser-test-api-key-0123456789";
/// Prefix of the marker argument the script adds to the browser's command line.
const MARKER_ARG: &str = "--wsloop-e2e-marker=";

/// The folder with the script and its `node_modules`.
fn e2e_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("e2e")
}

/// `target/test-artifacts`, under `CARGO_TARGET_DIR` when it is set.
fn artifact_dir() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => manifest.join(dir), // join keeps an absolute path as it is
        None => manifest.join("target"),
    };
    target.join("test-artifacts")
}

/// Chromium, node and Playwright, or `None` (after a skip message) when one is missing.
fn browser_tools() -> Option<(PathBuf, PathBuf)> {
    let debian = Path::new("/usr/bin/chromium");
    let chromium = if debian.is_file() {
        debian.to_path_buf()
    } else {
        common::find_program("chromium", "browser test; apt-get install chromium")?
    };
    let node = common::find_program("node", "browser test driven by Playwright")?;
    for module in ["playwright-core/package.json", "axe-core/axe.min.js"] {
        if !e2e_dir().join("node_modules").join(module).is_file() {
            common::skip_or_fail(&format!(
                "{module} not installed in {} (run npm ci there)",
                e2e_dir().join("node_modules").display()
            ));
            return None;
        }
    }
    Some((chromium, node))
}

/// The running script. Dropping it stops the script and every browser process it started,
/// also when the test fails half-way.
struct Script {
    child: Child,
    /// The value of the marker argument on this run's browser command line.
    marker: String,
}

impl Script {
    fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits up to `timeout` for the exit; `None` if it is still running.
    fn wait_for_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        if self.is_running() {
            // SIGTERM first: Playwright then closes the browser it launched.
            send_signal("TERM", self.child.id());
            if self.wait_for_exit(TERM_GRACE).is_none() {
                let _ = self.child.kill();
            }
        }
        let _ = self.child.wait();
        // A browser can outlive a killed script: find it by the marker and kill it.
        for pid in pids_with_arg(&format!("{MARKER_ARG}{}", self.marker)) {
            eprintln!("killing browser process {pid} left behind by the script");
            send_signal("KILL", pid);
        }
    }
}

fn send_signal(signal: &str, pid: u32) {
    let _ = Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Processes (from /proc) with `arg` as one of their command-line arguments.
fn pids_with_arg(arg: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| cmdline.split(|&b| b == 0).any(|a| a == arg.as_bytes()))
        })
        .collect()
}

fn read_all(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

fn write_line(stdin: &mut ChildStdin, line: &str) {
    writeln!(stdin, "{line}")
        .and_then(|()| stdin.flush())
        .expect("write to the script's stdin");
}

/// The page's recovery rules (`web/recovery.js`) in Node, without a browser: each offset shown
/// once and in order, live chats held back during the chat's recovery, the gap markers
/// (`tests/e2e/recovery.mjs`).
#[test]
fn page_recovery_rules() {
    let Some(node) = common::find_program("node", "the page's recovery rules run in Node") else {
        return;
    };
    let output = Command::new(node)
        .current_dir(e2e_dir())
        .arg("recovery.mjs")
        .output()
        .expect("run node recovery.mjs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(
        output.status.success() && stdout.trim() == "RECOVERY OK",
        "node recovery.mjs: {}\n{stdout}\n{stderr}",
        output.status
    );
}

/// Two pages chat and publish on a channel; the server restarts on the same port; both pages
/// show that they are reconnecting, reconnect without a reload, join their channel again by
/// themselves, and chat and publish again; a third page gives up and reconnects on demand
/// (exact texts, layout, focus order and accessibility checked by the script).
#[test]
fn browser_pages_chat_and_reconnect_after_restart() {
    chat_and_reconnect(None);
}

/// The same over https:// and wss://.
#[test]
fn browser_pages_chat_and_reconnect_over_https() {
    let pki = tls::TestPki::new("browser");
    chat_and_reconnect(Some((&pki, pki.localhost())));
}

/// The browser run against `wsloop serve`, with TLS when a certificate is given.
fn chat_and_reconnect(tls: Option<(&tls::TestPki, tls::Leaf)>) {
    let Some(tools) = browser_tools() else {
        return;
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let shots = screenshot_dir(&format!("browser-{scheme}"));
    let secrets = Secrets::new(scheme);
    let mut args = secrets.server_args(&SHORT_HISTORY);
    if let Some((_, leaf)) = &tls {
        for (flag, file) in [("--tls-cert", &leaf.cert), ("--tls-key", &leaf.key)] {
            args.extend([flag.to_owned(), file.to_string_lossy().into_owned()]);
        }
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut server = Some(Server::serve(&args));
    let addr = server.as_ref().expect("started").addr;
    let url = format!("{scheme}://{addr}/");

    let mut restarted = false;
    let outcome = run_script(&tools, "chat.mjs", &url, &shots, &[], |line| {
        if line != "READY_FOR_RESTART" || restarted {
            return None;
        }
        server = None; // killed
        std::thread::sleep(DOWN_TIME);
        server = Some(Server::start_on("serve", &addr.to_string(), &args));
        restarted = true;
        Some("RESTARTED")
    });
    assert!(
        restarted,
        "the script never asked for the restart: {}",
        outcome.report()
    );
    let report = outcome.assert_passed(&shots, &SCREENSHOTS);
    let server = server.expect("restarted");
    let metrics = match &tls {
        Some((pki, _)) => {
            let request = b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n";
            let (_, body) = tls::https_exchange(server.addr, &pki.ca_cert, request);
            common::parse_metrics(&String::from_utf8_lossy(&body))
        }
        None => common::fetch_metrics(server.addr, ""),
    };
    // Both pages' handshakes with the restarted server accepted Chromium's deflate offer.
    let deflated = metrics.get("wsloop_deflate_negotiated_total").copied();
    assert!(
        deflated >= Some(2),
        "permessage-deflate negotiated {deflated:?} times: {report}"
    );
    if tls.is_some() {
        // Over https, the pages' WebSocket connections were TLS connections too.
        let tls_handshakes = metrics.get("wsloop_tls_handshakes_total").copied();
        assert!(
            tls_handshakes >= Some(2),
            "{tls_handshakes:?} TLS handshakes with the restarted server: {report}"
        );
    }
    eprintln!("{report}\nscreenshots in {}", shots.display());
}

/// Two nodes share a Redis, which keeps the history of the channels and the chat: a page on
/// node A chats and follows a channel; node A stops mid-conversation, and the backend publishes
/// and chats through node B's server API meanwhile; node A starts again on the same port. The
/// page reconnects and shows every message it missed exactly once, in order, with no gap
/// marker (the epochs survived in Redis), then live ones (`tests/e2e/redis-restart.mjs`).
#[test]
fn browser_page_recovers_every_message_across_a_restart_with_redis() {
    let Some(tools) = browser_tools() else {
        return;
    };
    let Some(redis_server) = harness::external(
        "redis-server",
        "the browser test with Redis; apt-get install redis-server",
    ) else {
        return;
    };
    let redis = harness::Redis::start(redis_server);
    let shots = screenshot_dir("browser-redis");
    let secrets = Secrets::new("redis");
    let args = secrets.server_args(&[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // A node is started once its link to Redis is up.
    let start = |name: &str, listen: &str| {
        let node = Node::clustered(name, &redis, listen, &args);
        node.wait_health("ok", harness::WAIT);
        node
    };
    let mut node_a = Some(start("a", "127.0.0.1:0"));
    let node_b = start("b", "127.0.0.1:0");
    let addr_a = node_a.as_ref().expect("started").addr;
    let url = format!("http://{addr_a}/");
    let backend = format!("http://{}/", node_b.addr);
    let missed_messages = MISSED_ON_CHANNEL.to_string();

    let (mut stopped, mut started) = (false, false);
    let env = [
        ("WSLOOP_E2E_BACKEND", backend.as_str()),
        ("WSLOOP_E2E_MISSED_MESSAGES", missed_messages.as_str()),
    ];
    let outcome = run_script(&tools, "redis-restart.mjs", &url, &shots, &env, |line| {
        match line {
            "STOP_SERVER" if !stopped => {
                node_a = None; // killed: the page's connection drops with no close frame
                stopped = true;
                Some("STOPPED")
            }
            "START_SERVER" if stopped && !started => {
                node_a = Some(start("a", &addr_a.to_string()));
                started = true;
                Some("STARTED")
            }
            _ => None,
        }
    });
    assert!(
        stopped && started,
        "the script did not ask to stop and start node A: {}",
        outcome.report()
    );
    let report = outcome.assert_passed(&shots, &["redis-restart.png"]);
    // The restarted node A read the channel's missed messages from the stream in Redis, for
    // the page's `subscribe` with `since`, and no read failed.
    let metrics = harness::metrics(node_a.expect("restarted").addr);
    assert_eq!(
        (
            harness::sample(&metrics, "wsloop_history_replayed_total"),
            harness::sample(&metrics, "wsloop_history_read_failures_total")
        ),
        (MISSED_ON_CHANNEL, 0),
        "{report}"
    );
    eprintln!("{report}\nscreenshot in {}", shots.display());
}

/// `target/test-artifacts/NAME`, emptied: a screenshot checked is always this run's.
fn screenshot_dir(name: &str) -> PathBuf {
    let shots = artifact_dir().join(name);
    let _ = std::fs::remove_dir_all(&shots);
    std::fs::create_dir_all(&shots).expect("create the screenshot folder");
    shots
}

/// The files a test's servers share: the session key (so that logins hold across a restart,
/// and on every node) and the server API's key.
struct Secrets {
    session: common::TempFile,
    api_keys: common::TempFile,
}

impl Secrets {
    /// Files named after `tag`, distinct for each test of this process.
    fn new(tag: &str) -> Secrets {
        Secrets {
            session: common::TempFile::new(
                &format!("browser-{tag}-session"),
                "the browser test's session secret, 32+ bytes",
            ),
            api_keys: common::TempFile::new(
                &format!("browser-{tag}-api-keys"),
                &format!("{API_KEY}\n"),
            ),
        }
    }

    /// [`SERVER_ARGS`], the flags naming these files, and `extra`.
    fn server_args(&self, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = SERVER_ARGS.iter().map(|a| a.to_string()).collect();
        args.extend([
            "--session-secret-file".to_owned(),
            self.session.path().to_owned(),
        ]);
        args.extend(["--api-key-file".to_owned(), self.api_keys.path().to_owned()]);
        args.extend(extra.iter().map(|a| a.to_string()));
        args
    }
}

/// A finished script run.
struct Outcome {
    /// The command, for the report.
    command: String,
    /// Its exit status; `None` if it was still running at [`SCRIPT_TIMEOUT`] (then killed).
    status: Option<ExitStatus>,
    /// The lines it printed on standard output.
    printed: Vec<String>,
    /// Its standard error (its log).
    stderr: String,
}

impl Outcome {
    fn report(&self) -> String {
        format!(
            "{}: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.command,
            self.status.map_or_else(
                || format!("still running after {SCRIPT_TIMEOUT:?}, killed"),
                |s| s.to_string()
            ),
            self.printed.join("\n"),
            self.stderr
        )
    }

    /// Checks the verdict: exit 0, an `E2E OK` line, and each of `screenshots` a PNG in
    /// `shots`. Returns the report.
    fn assert_passed(&self, shots: &Path, screenshots: &[&str]) -> String {
        let report = self.report();
        assert!(
            self.status.is_some_and(|s| s.success()),
            "the script failed: {report}"
        );
        assert!(
            self.printed.iter().any(|line| line == "E2E OK"),
            "no E2E OK line: {report}"
        );
        for name in screenshots {
            let path = shots.join(name);
            let png = std::fs::read(&path)
                .unwrap_or_else(|e| panic!("screenshot {}: {e}\n{report}", path.display()));
            assert!(
                png.starts_with(b"\x89PNG\r\n\x1a\n"),
                "{} is not a PNG ({} bytes)",
                path.display(),
                png.len()
            );
        }
        report
    }
}

/// Runs `node SCRIPT URL SHOTS` from `tests/e2e` with `env` besides the browser's and the API
/// key, until it exits or [`SCRIPT_TIMEOUT`]. Each line the script prints goes to `driver`,
/// whose answer, if any, is written to the script's standard input: the driver stops and
/// starts servers when the script asks. The script and its browser are gone on return.
fn run_script(
    (chromium, node): &(PathBuf, PathBuf),
    script: &str,
    url: &str,
    shots: &Path,
    env: &[(&str, &str)],
    mut driver: impl FnMut(&str) -> Option<&'static str>,
) -> Outcome {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let marker = format!("{}-{nanos}", std::process::id());
    let dir = e2e_dir();
    let child = Command::new(node)
        .current_dir(&dir)
        .arg(dir.join(script))
        .arg(url)
        .arg(shots)
        .env("CHROMIUM", chromium)
        .env("WSLOOP_E2E_MARKER", &marker)
        .env("WSLOOP_E2E_API_KEY", API_KEY)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn node");
    let mut running = Script { child, marker };
    let mut stdin = running.child.stdin.take().expect("stdin piped");
    let stderr = read_all(running.child.stderr.take().expect("stderr piped"));
    let stdout = running.child.stdout.take().expect("stdout piped");
    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });

    // Follow the script's output until it closes, answering its requests.
    let deadline = Instant::now() + SCRIPT_TIMEOUT;
    let mut printed = Vec::new();
    let timed_out = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                if let Some(answer) = driver(&line) {
                    write_line(&mut stdin, answer);
                }
                printed.push(line);
            }
            Err(RecvTimeoutError::Disconnected) => break false,
            Err(RecvTimeoutError::Timeout) => break true,
        }
    };
    let status = if timed_out {
        None
    } else {
        running.wait_for_exit(deadline.saturating_duration_since(Instant::now()))
    };
    drop(running); // stops the script and its browser if still running
    Outcome {
        command: format!("node {script} {url}"),
        status,
        printed,
        stderr: stderr.join().unwrap_or_default(),
    }
}
