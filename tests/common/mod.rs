//! Shared helpers for integration tests: start a `wsloop` process on 127.0.0.1:0 and learn its
//! port, and find external programs (skipped when absent, failing when
//! `WSLOOP_REQUIRE_EXTERNAL=1`).
#![allow(dead_code)] // each test binary uses a different subset

pub mod raw;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long a server may take to print its listening address.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

/// A running `wsloop` process, killed when dropped.
pub struct Server {
    child: Child,
    /// The first address it listens on.
    pub addr: SocketAddr,
}

impl Server {
    /// Starts `wsloop <subcommand> --listen 127.0.0.1:0 <args>` and waits for the line
    /// `wsloop: listening on ws://ADDR/` on its standard output.
    pub fn start(subcommand: &str, args: &[&str]) -> Server {
        Server::start_on(subcommand, "127.0.0.1:0", args)
    }

    /// Like [`Server::start`] on a given listen address (e.g. to restart on the same port).
    pub fn start_on(subcommand: &str, listen: &str, args: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_wsloop"))
            .arg(subcommand)
            .args(["--listen", listen])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn wsloop");
        let stdout = child.stdout.take().expect("stdout piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.strip_prefix("wsloop: listening on ws://") {
                    let addr = rest.trim_end_matches('/').to_owned();
                    let _ = tx.send(addr);
                }
            }
        });
        let addr = match rx.recv_timeout(STARTUP_TIMEOUT) {
            Ok(a) => a.parse().expect("listening address"),
            Err(_) => {
                let _ = child.kill();
                panic!("wsloop {subcommand} did not report its address in time");
            }
        };
        Server { child, addr }
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
        let _ = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
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
