//! Interop with third-party clients: Python `websockets` and Node `ws` run scripted sessions
//! (`tests/interop/client.py`, `tests/interop/client.js`) against `wsloop echo`.
//!
//! Each test starts its own server on 127.0.0.1, runs one scenario of one client with a
//! bounded time (the client is killed when it runs over), and asserts that the client exited
//! 0 and printed its summary line, which it prints only when every check of the scenario
//! passed: exact echoed payloads (16 MiB ones included), pong payloads and close codes.
//!
//! The `*_over_wss` tests run the same scenarios over TLS (`--tls-cert`, a certificate of a
//! test CA the client is told to trust with `--ca`).
//!
//! The clients are external dependencies: `python3` with `websockets` >= 13 and `node` with
//! `ws` 8 installed in `tests/interop/node_modules` (`npm install` in `tests/interop`).
//! Without them the tests print a skip, or fail when `WSLOOP_REQUIRE_EXTERNAL=1`.

mod common;
#[path = "common/tls.rs"]
mod tls;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::Server;

/// Bound on one client run: a scenario bounds itself at 100 s, this is the backstop.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(150);
/// Bound on checking that a client library is installed.
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);
/// The `--max-message` the too-big scenarios expect (see the client scripts).
const TOO_BIG_LIMIT: &str = "65536";

/// The folder with the client scripts.
fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("interop")
}

/// What a finished client printed.
struct Finished {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// A spawned client, killed (and reaped) on drop so that no test leaves one behind.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn read_all(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Runs `cmd` to completion within `timeout`. On timeout the process is killed and the
/// error carries what it printed so far.
fn run_bounded(cmd: &mut Command, timeout: Duration) -> Result<Finished, String> {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot spawn {cmd:?}: {e}"))?;
    let mut child = KillOnDrop(child);
    let stdout = read_all(child.0.stdout.take().expect("stdout piped"));
    let stderr = read_all(child.0.stderr.take().expect("stderr piped"));
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.0.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() >= deadline => break None,
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("waiting for {cmd:?}: {e}")),
        }
    };
    // Killing (on timeout) closes the pipes, so the readers finish either way.
    drop(child);
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    match status {
        Some(status) => Ok(Finished {
            status,
            stdout,
            stderr,
        }),
        None => Err(format!(
            "{cmd:?} still running after {timeout:?}, killed\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
        )),
    }
}

/// `python3` if it can import `websockets` >= 13 (the `websockets.asyncio` client).
fn python_with_websockets() -> Option<PathBuf> {
    let python = common::find_program("python3", "interop tests with Python websockets")?;
    let probe = run_bounded(
        Command::new(&python).args([
            "-c",
            "import websockets, websockets.asyncio.client; print(websockets.__version__)",
        ]),
        PROBE_TIMEOUT,
    );
    match probe {
        Ok(out) if out.status.success() => {
            eprintln!("using Python websockets {}", out.stdout.trim());
            Some(python)
        }
        Ok(out) => {
            common::skip_or_fail(&format!(
                "Python module websockets >= 13 not importable by {} ({}; pip install 'websockets>=13,<18')",
                python.display(),
                out.stderr.trim().lines().last().unwrap_or("no message")
            ));
            None
        }
        Err(e) => {
            common::skip_or_fail(&format!("cannot probe Python websockets: {e}"));
            None
        }
    }
}

/// `node` if `tests/interop/node_modules` holds `ws` 8.
fn node_with_ws() -> Option<PathBuf> {
    let node = common::find_program("node", "interop tests with Node ws")?;
    let dir = interop_dir();
    if !dir.join("node_modules/ws/package.json").is_file() {
        common::skip_or_fail(&format!(
            "Node package ws not installed in {} (run npm install there)",
            dir.join("node_modules").display()
        ));
        return None;
    }
    let probe = run_bounded(
        Command::new(&node).current_dir(&dir).args([
            "-e",
            "require('ws'); process.stdout.write(require('ws/package.json').version)",
        ]),
        PROBE_TIMEOUT,
    );
    match probe {
        Ok(out) if out.status.success() && out.stdout.starts_with("8.") => {
            eprintln!("using Node ws {}", out.stdout.trim());
            Some(node)
        }
        Ok(out) => {
            common::skip_or_fail(&format!(
                "Node package ws 8 not loadable from {} (version {:?}; {}; run npm install there)",
                dir.display(),
                out.stdout.trim(),
                out.stderr.trim().lines().last().unwrap_or("no message")
            ));
            None
        }
        Err(e) => {
            common::skip_or_fail(&format!("cannot probe Node ws: {e}"));
            None
        }
    }
}

/// Runs `interpreter script URL scenario [--ca FILE]` and asserts that it exits 0 and
/// prints `summary` as a line of its own.
fn run_client(
    interpreter: &Path,
    script: &str,
    url: &str,
    ca: Option<&Path>,
    scenario: &str,
    summary: &str,
) {
    let dir = interop_dir();
    let mut command = Command::new(interpreter);
    command
        .current_dir(&dir)
        .arg(dir.join(script))
        .args([url, scenario]);
    if let Some(ca) = ca {
        command.arg("--ca").arg(ca);
    }
    let out = run_bounded(&mut command, CLIENT_TIMEOUT)
        .unwrap_or_else(|e| panic!("{script} {scenario}: {e}"));
    let report = format!(
        "{script} {scenario} against {url}: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status, out.stdout, out.stderr
    );
    assert!(out.status.success(), "client failed: {report}");
    assert!(
        out.stdout.lines().any(|line| line == summary),
        "summary line {summary:?} missing: {report}"
    );
}

fn python_scenario(scenario: &str, server_args: &[&str], summary: &str) {
    let Some(python) = python_with_websockets() else {
        return;
    };
    let server = Server::echo(server_args);
    run_client(
        &python,
        "client.py",
        &server.url("/"),
        None,
        scenario,
        summary,
    );
}

fn node_scenario(scenario: &str, server_args: &[&str], summary: &str) {
    let Some(node) = node_with_ws() else {
        return;
    };
    let server = Server::echo(server_args);
    run_client(
        &node,
        "client.js",
        &server.url("/"),
        None,
        scenario,
        summary,
    );
}

/// A scenario of `script` run by `interpreter` against `wsloop echo` over wss://, with a
/// certificate of a test CA that the client is told to trust.
fn wss_scenario(interpreter: Option<PathBuf>, script: &str, scenario: &str, summary: &str) {
    let Some(interpreter) = interpreter else {
        return;
    };
    let pki = tls::TestPki::new("interop");
    let leaf = pki.localhost();
    let (cert, key) = (leaf.cert.to_string_lossy(), leaf.key.to_string_lossy());
    let server = Server::echo(&["--tls-cert", &cert, "--tls-key", &key]);
    let url = format!("wss://localhost:{}/", server.addr.port());
    run_client(
        &interpreter,
        script,
        &url,
        Some(&pki.ca_cert),
        scenario,
        summary,
    );
}

/// Text, binary, fragmented (UTF-8 split across frames), 16 MiB messages, pings, close 1000.
#[test]
fn python_websockets_session() {
    python_scenario(
        "session",
        &[],
        "interop ok: python-websockets session (20 checks)",
    );
}

/// A close with the private-use code 4000 is echoed with 4000.
#[test]
fn python_websockets_close_4000() {
    python_scenario(
        "close-4000",
        &[],
        "interop ok: python-websockets close-4000 (5 checks)",
    );
}

/// A text frame that is not UTF-8 fails the connection with 1007.
#[test]
fn python_websockets_invalid_utf8() {
    python_scenario(
        "invalid-utf8",
        &[],
        "interop ok: python-websockets invalid-utf8 (5 checks)",
    );
}

/// With `--max-message 65536`, 65536 bytes are echoed and 65537 fail with 1009.
#[test]
fn python_websockets_too_big() {
    python_scenario(
        "too-big",
        &["--max-message", TOO_BIG_LIMIT],
        "interop ok: python-websockets too-big (5 checks)",
    );
}

/// Text, binary, fragmented via `{fin: false}`, 16 MiB messages, pings, close 1000.
#[test]
fn node_ws_session() {
    node_scenario("session", &[], "interop ok: node-ws session (17 checks)");
}

/// A close with the private-use code 4000 is echoed with 4000.
#[test]
fn node_ws_close_4000() {
    node_scenario(
        "close-4000",
        &[],
        "interop ok: node-ws close-4000 (5 checks)",
    );
}

/// A text frame that is not UTF-8 fails the connection with 1007.
#[test]
fn node_ws_invalid_utf8() {
    node_scenario(
        "invalid-utf8",
        &[],
        "interop ok: node-ws invalid-utf8 (4 checks)",
    );
}

/// With `--max-message 65536`, 65536 bytes are echoed and 65537 fail with 1009.
#[test]
fn node_ws_too_big() {
    node_scenario(
        "too-big",
        &["--max-message", TOO_BIG_LIMIT],
        "interop ok: node-ws too-big (4 checks)",
    );
}

/// The whole session over wss:// (text, binary, fragments, 16 MiB messages, pings, close).
#[test]
fn python_websockets_session_over_wss() {
    wss_scenario(
        python_with_websockets(),
        "client.py",
        "session",
        "interop ok: python-websockets session (20 checks)",
    );
}

/// A close with 4000 over wss:// is echoed with 4000.
#[test]
fn python_websockets_close_4000_over_wss() {
    wss_scenario(
        python_with_websockets(),
        "client.py",
        "close-4000",
        "interop ok: python-websockets close-4000 (5 checks)",
    );
}

/// The whole session over wss:// (text, binary, fragments, 16 MiB messages, pings, close).
#[test]
fn node_ws_session_over_wss() {
    wss_scenario(
        node_with_ws(),
        "client.js",
        "session",
        "interop ok: node-ws session (17 checks)",
    );
}

/// A close with 4000 over wss:// is echoed with 4000.
#[test]
fn node_ws_close_4000_over_wss() {
    wss_scenario(
        node_with_ws(),
        "client.js",
        "close-4000",
        "interop ok: node-ws close-4000 (5 checks)",
    );
}

/// With `--deflate`: one connection per permessage-deflate parameter set, the server's answer
/// checked exactly, small, JSON-like, 64 KiB and fragmented messages compressed both ways.
#[test]
fn python_websockets_deflate_parameter_sets() {
    python_scenario(
        "deflate",
        &["--deflate", "--deflate-threshold", "0"],
        "interop ok: python-websockets deflate (60 checks)",
    );
}

/// The whole session (16 MiB messages, fragments, pings, close) with compression negotiated
/// (websockets offers permessage-deflate by default).
#[test]
fn python_websockets_session_compressed() {
    python_scenario(
        "session",
        &["--deflate"],
        "interop ok: python-websockets session (20 checks)",
    );
}

/// With `--deflate`: Node ws `perMessageDeflate` with each parameter set.
#[test]
fn node_ws_deflate_parameter_sets() {
    node_scenario(
        "deflate",
        &["--deflate", "--deflate-threshold", "0"],
        "interop ok: node-ws deflate (45 checks)",
    );
}

/// The whole session with compression negotiated (ws offers permessage-deflate by default).
#[test]
fn node_ws_session_compressed() {
    node_scenario(
        "session",
        &["--deflate", "--deflate-no-context-takeover"],
        "interop ok: node-ws session (17 checks)",
    );
}
