//! The real programs of the cluster tests: `redis-server` (with a minimal RESP client) and
//! `wsloop serve` nodes with their logs collected; each started on free 127.0.0.1 ports, its
//! files in a temporary directory, and ended by a guard, also when the test panics (`nginx`
//! is in nginx.rs beside this file). Included by tests/cluster.rs and
//! tests/cluster_history.rs (`#[path = "common/cluster.rs"] mod harness;`, with
//! `mod common;` and `#[path = "common/tls.rs"] mod tls;` beside it).
#![allow(dead_code)] // each test binary uses a different subset

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::assert_keys;
use serde_json::Value;

/// The bound on a wait for something that should happen soon.
pub const WAIT: Duration = Duration::from_secs(10);
/// How long a process may take to start.
pub const STARTUP: Duration = Duration::from_secs(20);
/// Redis topic prefix used by the cluster tests (exercises --redis-prefix).
pub const PREFIX: &str = "wsloop-test:";

// ---------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------

/// Polls `condition` every 25 ms until it holds; panics with `what` (and the last state it
/// describes) after `limit`.
pub fn wait_until(what: &str, limit: Duration, mut condition: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + limit;
    loop {
        match condition() {
            Ok(()) => return,
            Err(state) => assert!(
                Instant::now() < deadline,
                "timed out after {limit:?} waiting for {what}; last seen: {state}"
            ),
        }
        thread::sleep(Duration::from_millis(25));
    }
}

/// A port that was free a moment ago (bound on 127.0.0.1:0, then released). Whoever uses it
/// retries with another one if it was taken in between.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// A temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "wsloop-cluster-test-{}-{tag}-{n}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn file(&self, name: &str) -> String {
        self.0.join(name).to_str().expect("UTF-8 path").to_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Finds an external program on PATH, then in the sbin directories (Debian installs nginx in
/// /usr/sbin, which is not on an ordinary user's PATH); when it is nowhere, reports the skip
/// (or the failure under WSLOOP_REQUIRE_EXTERNAL=1) through `crate::common::find_program`.
pub fn external(program: &str, why: &str) -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    });
    on_path
        .or_else(|| {
            ["/usr/sbin", "/usr/local/sbin", "/sbin"]
                .iter()
                .map(|dir| Path::new(dir).join(program))
                .find(|p| p.is_file())
        })
        .or_else(|| crate::common::find_program(program, why))
}

pub fn redis_program() -> Option<PathBuf> {
    external(
        "redis-server",
        "the cluster tests join nodes through a real Redis; apt-get install redis-server",
    )
}

pub fn nginx_program() -> Option<PathBuf> {
    external(
        "nginx",
        "the proxy test runs deploy/nginx.conf in a real nginx; apt-get install nginx",
    )
}

/// Sends `signal` to process `pid` (one we started) with kill(1).
pub fn send_signal(signal: &str, pid: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{signal}"), "--", pid])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Waits up to `limit` for a child to exit.
pub fn wait_exit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// The output lines of a child process, collected by a thread (and echoed, tagged, to the
/// test's captured output so that a failure shows them).
#[derive(Clone, Default)]
pub struct Lines(pub Arc<Mutex<Vec<String>>>);

impl Lines {
    pub fn capture(reader: impl Read + Send + 'static, tag: String) -> Lines {
        let lines = Lines::default();
        let sink = lines.clone();
        thread::spawn(move || {
            for line in BufReader::new(reader).lines() {
                let Ok(line) = line else { break };
                eprintln!("[{tag}] {line}");
                sink.0.lock().expect("lines lock").push(line);
            }
        });
        lines
    }

    pub fn snapshot(&self) -> Vec<String> {
        self.0.lock().expect("lines lock").clone()
    }

    pub fn text(&self) -> String {
        self.snapshot().join("\n")
    }

    pub fn any(&self, predicate: impl Fn(&str) -> bool) -> bool {
        self.snapshot().iter().any(|l| predicate(l))
    }

    pub fn wait_for(&self, what: &str, predicate: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(line) = self.snapshot().into_iter().find(|l| predicate(l)) {
                return line;
            }
            assert!(
                Instant::now() < deadline,
                "no log line {what} within {WAIT:?}; log:\n{}",
                self.text()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Plain HTTP
// ---------------------------------------------------------------------------------------------

pub struct HttpReply {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl HttpReply {
    pub fn header(&self, name: &str) -> Option<&str> {
        crate::common::header(&self.head, name)
    }
}

/// `GET path` over a fresh connection; reads to the end (`Connection: close`).
pub fn try_http_get(addr: SocketAddr, path: &str) -> io::Result<HttpReply> {
    let mut stream = TcpStream::connect_timeout(&addr, WAIT)?;
    stream.set_read_timeout(Some(WAIT))?;
    stream.set_write_timeout(Some(WAIT))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes)?;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("no HTTP head: {text:?}"),
        )
    })?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("status: {head:?}")))?;
    Ok(HttpReply {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    })
}

pub fn http_get(addr: SocketAddr, path: &str) -> HttpReply {
    try_http_get(addr, path).unwrap_or_else(|e| panic!("GET {path} from {addr}: {e}"))
}

/// `/healthz` of a node: 200, exactly `status`, `connections`, `uptime_s`.
pub fn health(addr: SocketAddr) -> Value {
    let reply = http_get(addr, "/healthz");
    assert_eq!(reply.status, 200, "{}\n{}", reply.head, reply.body);
    let value: Value = serde_json::from_str(&reply.body)
        .unwrap_or_else(|e| panic!("/healthz is not JSON ({e}): {:?}", reply.body));
    assert_keys(&value, &["status", "connections", "uptime_s"]);
    value
}

/// `/metrics` as `series -> value`.
pub fn metrics(addr: SocketAddr) -> BTreeMap<String, u64> {
    let reply = http_get(addr, "/metrics");
    assert_eq!(reply.status, 200, "{}", reply.head);
    crate::common::parse_metrics(&reply.body)
}

pub fn sample(metrics: &BTreeMap<String, u64>, series: &str) -> u64 {
    *metrics
        .get(series)
        .unwrap_or_else(|| panic!("no series {series} in {metrics:?}"))
}

// ---------------------------------------------------------------------------------------------
// wsloop nodes
// ---------------------------------------------------------------------------------------------

/// A running `wsloop serve`, with its standard error collected; killed when dropped.
pub struct Node {
    pub child: Child,
    pub name: String,
    pub addr: SocketAddr,
    pub log: Lines,
}

/// Spawns `program args`, collecting stdout lines into a channel and stderr into [`Lines`];
/// its standard input is a pipe (a client reads it, servers leave it alone).
pub fn spawn_collecting(
    program: &Path,
    args: &[String],
    tag: &str,
) -> (Child, mpsc::Receiver<String>, Lines) {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", program.display()));
    let log = Lines::capture(child.stderr.take().expect("stderr piped"), tag.to_owned());
    let stdout = child.stdout.take().expect("stdout piped");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx, log)
}

impl Node {
    /// `wsloop serve --listen <listen> <args>`; waits for `wsloop: listening on ws://ADDR/`.
    pub fn start(name: &str, listen: &str, args: &[&str]) -> Node {
        let mut argv = vec!["serve".to_owned(), "--listen".into(), listen.into()];
        argv.extend(args.iter().map(|a| (*a).to_owned()));
        Node::start_argv(name, &argv)
    }

    pub fn start_argv(name: &str, argv: &[String]) -> Node {
        Node::start_program(name, Path::new(env!("CARGO_BIN_EXE_wsloop")), argv)
    }

    /// `program argv` (wsloop, or a wrapper that runs it) until it reports its address.
    pub fn start_program(name: &str, program: &Path, argv: &[String]) -> Node {
        let (mut child, stdout, log) = spawn_collecting(program, argv, &format!("node {name}"));
        let deadline = Instant::now() + STARTUP;
        let addr = loop {
            match stdout.recv_timeout(Duration::from_millis(50)) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix("wsloop: listening on ws://") {
                        break rest
                            .split('/')
                            .next()
                            .unwrap_or_default()
                            .parse()
                            .expect("listening address");
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = wait_exit(&mut child, WAIT);
                    panic!(
                        "wsloop {argv:?} exited ({status:?}) before listening; stderr:\n{}",
                        log.text()
                    );
                }
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("wsloop {argv:?} did not report its address within {STARTUP:?}");
            }
        };
        Node {
            child,
            name: name.to_owned(),
            addr,
            log,
        }
    }

    /// A clustered node: `--redis <redis> --node-id <name> --redis-prefix PREFIX`.
    pub fn clustered(name: &str, redis: &Redis, listen: &str, extra: &[&str]) -> Node {
        let url = redis.url();
        let mut args = vec!["--redis", &url, "--node-id", name, "--redis-prefix", PREFIX];
        args.extend_from_slice(extra);
        Node::start(name, listen, &args)
    }

    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub fn health_status(&self) -> String {
        health(self.addr)["status"]
            .as_str()
            .expect("status is a string")
            .to_owned()
    }

    pub fn wait_health(&self, want: &str, limit: Duration) {
        wait_until(
            &format!("node {} /healthz status {want:?}", self.name),
            limit,
            || {
                let status = self.health_status();
                if status == want {
                    Ok(())
                } else {
                    Err(status)
                }
            },
        );
    }

    /// Sends SIGTERM and waits for the exit; returns the exit code.
    pub fn terminate(&mut self, limit: Duration) -> Option<i32> {
        send_signal("TERM", &self.child.id().to_string());
        wait_exit(&mut self.child, limit).and_then(|s| s.code())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// redis-server and a minimal RESP client
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resp {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<String>),
    Array(Option<Vec<Resp>>),
}

pub fn read_resp(reader: &mut impl BufRead) -> io::Result<Resp> {
    let bad = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    let line = line.trim_end_matches("\r\n");
    let Some(kind) = line.chars().next() else {
        return Err(bad("empty RESP line".into()));
    };
    let rest = &line[1..];
    let number = || {
        rest.parse::<i64>()
            .map_err(|_| bad(format!("bad RESP number {line:?}")))
    };
    Ok(match kind {
        '+' => Resp::Simple(rest.to_owned()),
        '-' => Resp::Error(rest.to_owned()),
        ':' => Resp::Int(number()?),
        '$' => match usize::try_from(number()?) {
            Err(_) => Resp::Bulk(None),
            Ok(n) => {
                let mut data = vec![0u8; n + 2];
                reader.read_exact(&mut data)?;
                data.truncate(n);
                Resp::Bulk(Some(String::from_utf8_lossy(&data).into_owned()))
            }
        },
        '*' => match usize::try_from(number()?) {
            Err(_) => Resp::Array(None),
            Ok(n) => Resp::Array(Some(
                (0..n)
                    .map(|_| read_resp(reader))
                    .collect::<io::Result<_>>()?,
            )),
        },
        _ => return Err(bad(format!("unknown RESP type {line:?}"))),
    })
}

/// Whether the Redis answering on `port` is the process `pid`: a PING alone may be answered
/// by another test's server holding the port while ours fails to bind it.
pub fn redis_answers_as(port: u16, pid: u32) -> bool {
    let mine = format!("process_id:{pid}\r\n");
    matches!(redis_command(port, &["INFO", "server"]), Ok(Resp::Bulk(Some(info))) if info.contains(&mine))
}

/// One command on a fresh connection.
pub fn redis_command(port: u16, args: &[&str]) -> io::Result<Resp> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(WAIT))?;
    stream.set_write_timeout(Some(WAIT))?;
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    stream.write_all(request.as_bytes())?;
    read_resp(&mut BufReader::new(stream))
}

/// A `redis-server` on a free port, with its config and working directory in a temp dir.
/// Killed when dropped.
pub struct Redis {
    pub program: PathBuf,
    pub dir: TempDir,
    pub port: u16,
    /// A TLS port besides the plain one (which stays for the test's own commands).
    pub tls: Option<RedisTls>,
    pub child: Option<Child>,
    pub log: Lines,
}

/// Redis's TLS listener: its port and the PEM files of its certificate, key and CA.
pub struct RedisTls {
    pub port: u16,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

impl Redis {
    pub fn start(program: PathBuf) -> Redis {
        Redis::start_with(program, None)
    }

    /// Redis with a TLS port too, serving `leaf`; clients need no certificate of their own.
    pub fn start_tls(program: PathBuf, leaf: &crate::tls::Leaf, ca: &Path) -> Redis {
        let tls = RedisTls {
            port: 0,
            cert: leaf.cert.clone(),
            key: leaf.key.clone(),
            ca: ca.to_owned(),
        };
        Redis::start_with(program, Some(tls))
    }

    pub fn start_with(program: PathBuf, tls: Option<RedisTls>) -> Redis {
        let mut redis = Redis {
            program,
            dir: TempDir::new("redis"),
            port: 0,
            tls,
            child: None,
            log: Lines::default(),
        };
        let mut failures = Vec::new();
        for _ in 0..5 {
            if let Some(tls) = &mut redis.tls {
                tls.port = free_port();
            }
            let port = free_port();
            match redis.spawn_on(port) {
                Ok(()) => return redis,
                Err(e) => failures.push(e),
            }
        }
        panic!("redis-server did not start on a free port: {failures:#?}");
    }

    /// What the nodes connect to: the TLS port if there is one.
    pub fn url(&self) -> String {
        match &self.tls {
            Some(tls) => format!("rediss://127.0.0.1:{}/0", tls.port),
            None => format!("redis://127.0.0.1:{}/0", self.port),
        }
    }

    /// Starts redis-server on `port` and waits until it answers as itself; `Err` (with its log)
    /// if it exits first (e.g. the port was taken).
    pub fn spawn_on(&mut self, port: u16) -> Result<(), String> {
        let conf = self.dir.file("redis.conf");
        let mut text = format!(
            "port {port}\nbind 127.0.0.1\nprotected-mode yes\nsave \"\"\nappendonly no\n\
             daemonize no\nlogfile \"\"\ndir {}\nenable-debug-command local\n",
            self.dir.path().display()
        );
        if let Some(tls) = &self.tls {
            text.push_str(&format!(
                "tls-port {}\ntls-cert-file {}\ntls-key-file {}\ntls-ca-cert-file {}\n\
                 tls-auth-clients no\n",
                tls.port,
                tls.cert.display(),
                tls.key.display(),
                tls.ca.display()
            ));
        }
        std::fs::write(&conf, text).expect("write redis.conf");
        let mut child = Command::new(&self.program)
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.program.display()));
        let tag = format!("redis :{port}");
        let log = Lines::capture(child.stdout.take().expect("stdout"), tag.clone());
        let _err = Lines::capture(child.stderr.take().expect("stderr"), tag);
        let deadline = Instant::now() + STARTUP;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "exited with {status} on port {port}:\n{}",
                    log.text()
                ));
            }
            if redis_answers_as(port, child.id()) {
                break;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("no answer on port {port} within {STARTUP:?}"));
            }
            thread::sleep(Duration::from_millis(20));
        }
        self.port = port;
        self.child = Some(child);
        self.log = log;
        Ok(())
    }

    /// SIGKILL: connections drop with no goodbye, as in a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends a signal (STOP, CONT) to redis-server.
    pub fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("redis-server is running");
        send_signal(signal, &child.id().to_string());
    }

    /// Starts again on the same port (the nodes have it in their URL).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "redis-server is still running");
        let mut failures = Vec::new();
        for _ in 0..10 {
            match self.spawn_on(self.port) {
                Ok(()) => return,
                Err(e) => failures.push(e),
            }
            thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "redis-server did not restart on port {}: {failures:#?}",
            self.port
        );
    }

    pub fn command(&self, args: &[&str]) -> Resp {
        redis_command(self.port, args).unwrap_or_else(|e| panic!("redis {args:?}: {e}"))
    }

    /// Subscribers per topic under PREFIX: `PUBSUB CHANNELS`, then `PUBSUB NUMSUB` of each.
    pub fn topics(&self) -> BTreeMap<String, i64> {
        let pattern = format!("{PREFIX}*");
        let Resp::Array(Some(names)) = self.command(&["PUBSUB", "CHANNELS", &pattern]) else {
            panic!("PUBSUB CHANNELS: unexpected reply");
        };
        let names: Vec<String> = names
            .into_iter()
            .map(|n| match n {
                Resp::Bulk(Some(n)) => n,
                other => panic!("PUBSUB CHANNELS entry {other:?}"),
            })
            .collect();
        let mut out = BTreeMap::new();
        for name in names {
            let reply = self.command(&["PUBSUB", "NUMSUB", &name]);
            let Resp::Array(Some(pair)) = &reply else {
                panic!("PUBSUB NUMSUB {name}: {reply:?}");
            };
            let Some(Resp::Int(n)) = pair.get(1) else {
                panic!("PUBSUB NUMSUB {name}: {reply:?}");
            };
            if *n > 0 {
                out.insert(name, *n);
            }
        }
        out
    }

    /// Waits until the Redis subscriptions under PREFIX are exactly `want`.
    pub fn wait_topics(&self, want: &BTreeMap<String, i64>, limit: Duration) {
        wait_until(&format!("Redis subscriptions {want:?}"), limit, || {
            let got = self.topics();
            if &got == want {
                Ok(())
            } else {
                Err(format!("{got:?}"))
            }
        });
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}
