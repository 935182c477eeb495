//! What the fault and soak tests observe of a running `wsloop` process, from the outside:
//! its descriptors (`/proc/PID/fd`), its resident memory (`VmRSS`), its connection table
//! (`wsloop_tcp_connections` of `/metrics`, for `serve`) and its CPU time; plus bounded waits
//! and an abortive close (RST) for client sockets.
#![allow(dead_code)] // each test binary uses a different subset

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::common::raw::{opcode, RawClient};
#[allow(unused_imports)] // each test binary uses a different subset
pub use crate::common::{cpu_ticks, rss_kib};

/// Descriptors the process holds now.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/fd: {e}"))
        .count()
}

/// `GET /metrics` of a `wsloop serve` as `series -> value`.
pub fn metrics(addr: SocketAddr) -> BTreeMap<String, u64> {
    crate::common::fetch_metrics(addr, "")
}

/// A series of `/metrics`, 0 when absent (labelled counters appear on first use).
pub fn series(metrics: &BTreeMap<String, u64>, name: &str) -> u64 {
    metrics.get(name).copied().unwrap_or(0)
}

/// Connections in the server's table (its slab) other than the `/metrics` request itself.
pub fn held_connections(addr: SocketAddr) -> u64 {
    let m = metrics(addr);
    let tcp = *m
        .get("wsloop_tcp_connections")
        .unwrap_or_else(|| panic!("no wsloop_tcp_connections in {m:?}"));
    assert!(
        tcp >= 1,
        "the /metrics request itself is not counted: {m:?}"
    );
    tcp - 1
}

/// Polls `condition` every 20 ms until it holds, for at most `timeout`; panics with `what`
/// and the last observation otherwise. Returns how long it took.
pub fn wait_until<T: std::fmt::Debug>(
    what: &str,
    timeout: Duration,
    mut observe: impl FnMut() -> T,
    mut holds: impl FnMut(&T) -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        let seen = observe();
        if holds(&seen) {
            return start.elapsed();
        }
        if start.elapsed() >= timeout {
            panic!("timed out after {timeout:?} waiting for {what}; last seen: {seen:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A process's resources at rest.
#[derive(Clone, Copy, Debug)]
pub struct Baseline {
    pub fds: usize,
    pub rss_kib: u64,
}

/// How far memory may stay above the baseline once everything is closed (allocator caches).
pub const RSS_MARGIN_KIB: u64 = 16 * 1024;
/// How long cleanup may take once every client is gone.
pub const CLEANUP: Duration = Duration::from_secs(10);

/// The baseline of an idle server: waits until it holds no connection (when `metrics` is
/// given, i.e. `serve`) and its descriptor count is stable, then reads descriptors and RSS.
pub fn baseline(pid: u32, metrics: Option<SocketAddr>) -> Baseline {
    if let Some(addr) = metrics {
        wait_until(
            "an idle server before the baseline",
            CLEANUP,
            || held_connections(addr),
            |n| *n == 0,
        );
    }
    // The /metrics connection itself may linger a moment: take the lowest of a few readings.
    let mut fds = usize::MAX;
    for _ in 0..5 {
        fds = fds.min(fd_count(pid));
        std::thread::sleep(Duration::from_millis(40));
    }
    Baseline {
        fds,
        rss_kib: rss_kib(pid),
    }
}

/// Asserts that the server returns to `base` once its clients are gone: descriptors exactly
/// (within [`CLEANUP`]), its connection table empty (`serve`), and RSS within
/// `rss_margin_kib` (e.g. [`RSS_MARGIN_KIB`]). Returns the RSS seen, in KiB.
pub fn assert_back_to(
    pid: u32,
    metrics: Option<SocketAddr>,
    base: Baseline,
    rss_margin_kib: u64,
    what: &str,
) -> u64 {
    if let Some(addr) = metrics {
        wait_until(
            &format!("{what}: the connection table to empty"),
            CLEANUP,
            || held_connections(addr),
            |n| *n == 0,
        );
    }
    wait_until(
        &format!("{what}: descriptors back to the baseline of {}", base.fds),
        CLEANUP,
        || fd_count(pid),
        |n| *n <= base.fds,
    );
    let rss = rss_kib(pid);
    assert!(
        rss <= base.rss_kib + rss_margin_kib,
        "{what}: RSS {rss} KiB, baseline {} KiB: more than {rss_margin_kib} KiB kept",
        base.rss_kib
    );
    rss
}

/// Closes a client socket abortively: `SO_LINGER` 0 makes `close` send RST instead of FIN.
pub fn reset(stream: TcpStream) {
    socket2::SockRef::from(&stream)
        .set_linger(Some(Duration::ZERO))
        .expect("SO_LINGER 0");
    drop(stream);
}

/// A `wsloop` child process started through `sh -c` (to set limits with `ulimit`), killed on
/// drop; `addr` is parsed from its `wsloop: listening on ws://ADDR/` line.
pub struct ShellServer {
    pub child: std::process::Child,
    pub addr: SocketAddr,
}

impl ShellServer {
    /// Runs `sh -c "PREFIX exec wsloop ARGS --listen 127.0.0.1:0"`.
    pub fn start(sh: &std::path::Path, prefix: &str, args: &str) -> ShellServer {
        let mut child = std::process::Command::new(sh)
            .arg("-c")
            .arg(format!(
                "{prefix} exec {} {args} --listen 127.0.0.1:0",
                env!("CARGO_BIN_EXE_wsloop")
            ))
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn wsloop through sh");
        let stdout = child.stdout.take().expect("stdout piped");
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)
            .expect("read the listening line");
        let addr = line
            .trim()
            .trim_start_matches("wsloop: listening on ws://")
            .split('/')
            .next()
            .unwrap_or_default()
            .parse()
            .unwrap_or_else(|_| panic!("no listening line, got {line:?}"));
        ShellServer { child, addr }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ShellServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A raw client on `/ws` that has read its welcome.
pub fn welcomed(addr: SocketAddr) -> RawClient {
    let mut raw = RawClient::connect_tcp(addr);
    raw.handshake("/ws");
    let welcome = raw.read_frame();
    assert_eq!(welcome.opcode, opcode::TEXT, "{welcome:?}");
    raw
}

/// Ends a raw client abruptly: RST when `rst`, else FIN without a close frame.
pub fn vanish(raw: RawClient, rst: bool) {
    let stream = raw.stream().try_clone().expect("clone");
    drop(raw);
    if rst {
        reset(stream);
    }
}
