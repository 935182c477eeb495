//! The event loop's own behaviour over real loopback sockets: listeners, handshake answers and
//! timeouts, bytes that arrive with the upgrade, backpressure, descriptor exhaustion, the close
//! timeout and the broadcast pass.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use common::Server as Process;
use mio::Events;
use wsloop::client::{Client, ClientOptions, Received};
use wsloop::proto::{Message, MessageKind};
use wsloop::server::{CloseReason, Config, ConnId, Ctx, Handler, OpenInfo, Server, Stats};

const UPGRADE: &str = "GET / HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
const RESPONSE_101: &str = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";

/// A masked client frame (key 37 fa 21 3d, RFC 6455 §5.7).
fn masked(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::new();
    wsloop::proto::frame::encode_frame(
        &mut frame,
        true,
        wsloop::proto::OpCode::from_bits(opcode).expect("opcode"),
        Some([0x37, 0xfa, 0x21, 0x3d]),
        payload,
    );
    frame
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// Reads until the peer closes (or `limit` bytes, or the read timeout).
fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => panic!(
                "read failed before close ({e}); got {:?}",
                String::from_utf8_lossy(&out)
            ),
        }
    }
}

fn read_exact_timeout(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut out = vec![0u8; n];
    s.read_exact(&mut out).expect("read_exact");
    out
}

#[test]
fn frames_in_the_same_packet_as_the_upgrade_are_processed() {
    let server = Process::echo(&[]);
    let mut s = connect(server.addr);
    let mut bytes = UPGRADE.as_bytes().to_vec();
    bytes.extend(masked(0x1, b"Hello"));
    bytes.extend(masked(0x8, &[0x03, 0xe8]));
    s.write_all(&bytes).unwrap();
    let got = read_to_close(&mut s);
    let mut want = RESPONSE_101.as_bytes().to_vec();
    want.extend_from_slice(&[
        0x81, 0x05, b'H', b'e', b'l', b'l', b'o', 0x88, 0x02, 0x03, 0xe8,
    ]);
    assert_eq!(got, want);
}

#[test]
fn handshake_errors_get_their_status_and_the_connection_closes() {
    let server = Process::echo(&[]);
    let cases = [
        (
            UPGRADE.replace("Version: 13", "Version: 8"),
            "426 Upgrade Required",
            Some("Sec-WebSocket-Version: 13"),
        ),
        (UPGRADE.replace("GET", "POST"), "400 Bad Request", None),
        (
            UPGRADE.replace("HTTP/1.1", "HTTP/1.0"),
            "400 Bad Request",
            None,
        ),
        (
            UPGRADE.replace("dGhlIHNhbXBsZSBub25jZQ==", "short"),
            "400 Bad Request",
            None,
        ),
        (
            UPGRADE.replace("Connection: Upgrade", "Connection: close"),
            "400 Bad Request",
            None,
        ),
        (
            format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(9000)),
            "431 Request Header Fields Too Large",
            None,
        ),
    ];
    for (request, status, header) in cases {
        let mut s = connect(server.addr);
        s.write_all(request.as_bytes()).unwrap();
        let got = String::from_utf8(read_to_close(&mut s)).unwrap();
        assert!(
            got.starts_with(&format!("HTTP/1.1 {status}\r\n")),
            "{status}: got {got:?}"
        );
        assert!(got.contains("Connection: close\r\n"), "{got:?}");
        if let Some(h) = header {
            assert!(got.contains(&format!("{h}\r\n")), "{got:?}");
        }
    }
    // The server is still fine.
    let mut c = Client::connect(&server.url("/")).unwrap();
    c.send_text("still here").unwrap();
    assert_eq!(c.recv().unwrap(), Received::Text("still here".into()));
}

#[test]
fn oversized_head_is_refused_before_it_ends() {
    let server = Process::echo(&[]);
    let mut s = connect(server.addr);
    // 9000 bytes of one header line and no end of head: the answer must not wait for one.
    let mut head = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
    head.resize(9000, b'a');
    s.write_all(&head).unwrap();
    let got = String::from_utf8(read_to_close(&mut s)).unwrap();
    assert!(got.starts_with("HTTP/1.1 431 "), "{got:?}");
}

#[test]
fn a_head_sent_one_byte_at_a_time_is_accepted() {
    let server = Process::echo(&[]);
    let mut s = connect(server.addr);
    s.set_nodelay(true).unwrap();
    for b in UPGRADE.as_bytes() {
        s.write_all(&[*b]).unwrap();
    }
    let got = read_exact_timeout(&mut s, RESPONSE_101.len());
    assert_eq!(String::from_utf8(got).unwrap(), RESPONSE_101);
}

#[test]
fn ipv4_and_ipv6_listeners_serve_together() {
    let config = Config {
        listen: vec!["127.0.0.1:0".parse().unwrap(), "[::1]:0".parse().unwrap()],
        ..Config::default()
    };
    let running = InProcess::start(config, wsloop::app::echo::Echo);
    for addr in &running.addrs {
        let mut c = Client::connect(&format!("ws://{addr}/")).unwrap();
        c.send_binary(&[1, 2, 3]).unwrap();
        assert_eq!(c.recv().unwrap(), Received::Binary(vec![1, 2, 3]), "{addr}");
    }
    assert!(running.addrs[1].is_ipv6());
    running.stop();
}

#[test]
fn a_client_that_does_not_read_is_paused_and_loses_nothing() {
    let server = Process::echo(&[]);
    let mut c = Client::connect_with(
        &server.url("/"),
        &ClientOptions {
            timeout: Some(Duration::from_secs(20)),
            ..Default::default()
        },
    )
    .unwrap();
    // 24 MiB of echo requests written before reading any reply: the server's queue for this
    // connection passes its cap, it stops reading, the client's writes block; a writer thread
    // keeps pushing while this thread reads everything back in order.
    let count = 384;
    let payload = |i: usize| vec![(i % 251) as u8; 64 * 1024];
    let mut writer = c.writer();
    let sender = std::thread::spawn(move || {
        for i in 0..count {
            writer.send_binary(&payload(i)).unwrap();
        }
    });
    for i in 0..count {
        match c.recv().unwrap() {
            Received::Binary(b) => assert_eq!(b, payload(i), "message {i}"),
            other => panic!("message {i}: {other:?}"),
        }
    }
    sender.join().unwrap();
}

#[test]
fn accept_pauses_without_spinning_when_descriptors_run_out_and_resumes() {
    let Some(sh) = common::find_program("sh", "to lower RLIMIT_NOFILE for the server") else {
        return;
    };
    // stdin/out/err, epoll, listener and the poll's internal descriptors leave room for about
    // 24 connections under a limit of 32.
    let mut child = std::process::Command::new(sh)
        .arg("-c")
        .arg(format!(
            "ulimit -n 32 && exec {} echo --listen 127.0.0.1:0",
            env!("CARGO_BIN_EXE_wsloop")
        ))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let guard = KillOnDrop(&mut child);
    let mut line = String::new();
    let mut stdout = std::io::BufReader::new(guard.0.stdout.take().unwrap());
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    let addr: SocketAddr = line
        .trim()
        .trim_start_matches("wsloop: listening on ws://")
        .split('/')
        .next()
        .unwrap_or_default()
        .parse()
        .unwrap();
    let pid = guard.0.id();

    let options = ClientOptions {
        timeout: Some(Duration::from_secs(2)),
        ..Default::default()
    };
    let mut open = Vec::new();
    let mut refused_at = None;
    for i in 0..40 {
        match Client::connect_with(&format!("ws://{addr}/"), &options) {
            Ok(c) => open.push(c),
            Err(_) => {
                refused_at = Some(i);
                break;
            }
        }
    }
    assert!(refused_at.is_some(), "descriptor limit was never reached");
    // The server is out of descriptors with connections waiting in the backlog: it must not
    // spin. Measure its CPU time over one second.
    let cpu = || common::cpu_ticks(pid);
    let waiting: Vec<TcpStream> = (0..3).map(|_| connect(addr)).collect();
    let before = cpu();
    std::thread::sleep(Duration::from_secs(1));
    let ticks = cpu() - before;
    assert!(
        ticks <= 20,
        "server used {ticks} clock ticks in 1 s while out of descriptors"
    );
    // Existing clients keep working.
    for c in open.iter_mut().take(3) {
        c.send_text("alive").unwrap();
        assert_eq!(c.recv().unwrap(), Received::Text("alive".into()));
    }
    // Free descriptors: a client that waited in the backlog gets its handshake answered.
    open.truncate(open.len() - 5);
    drop(waiting);
    std::thread::sleep(Duration::from_millis(300));
    let mut late =
        Client::connect_with(&format!("ws://{addr}/"), &options).expect("accepting resumed");
    late.send_text("late").unwrap();
    assert_eq!(late.recv().unwrap(), Received::Text("late".into()));
}

struct KillOnDrop<'a>(&'a mut std::process::Child);

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Broadcasts every text message to all open connections; closes on "bye".
#[derive(Default)]
struct Room {
    members: Vec<ConnId>,
}

impl Handler for Room {
    fn on_open(&mut self, _ctx: &mut Ctx<'_>, id: ConnId, _info: &OpenInfo<'_>) {
        self.members.push(id);
    }
    fn on_message(&mut self, ctx: &mut Ctx<'_>, id: ConnId, message: Message<'_>) {
        if message.data == b"bye" {
            ctx.close(id, 4000, "bye to you");
        } else {
            ctx.broadcast(
                self.members.iter().copied(),
                MessageKind::Text,
                message.data,
            );
        }
    }
    fn on_close(&mut self, _ctx: &mut Ctx<'_>, id: ConnId, _reason: CloseReason) {
        self.members.retain(|m| *m != id);
    }
}

/// Mixes replies to the sender with broadcasts and closes in one callback, to check that
/// what a callback does reaches the sockets in the order it was done.
#[derive(Default)]
struct Mixer {
    members: Vec<ConnId>,
}

impl Handler for Mixer {
    fn on_open(&mut self, _ctx: &mut Ctx<'_>, id: ConnId, _info: &OpenInfo<'_>) {
        self.members.push(id);
    }
    fn on_message(&mut self, ctx: &mut Ctx<'_>, id: ConnId, message: Message<'_>) {
        let all = self.members.clone();
        match message.data {
            b"reply-broadcast-reply" => {
                ctx.send_text(id, "1");
                ctx.broadcast(all, MessageKind::Text, b"2");
                ctx.send_text(id, "3");
            }
            b"broadcast-reply" => {
                ctx.broadcast(all, MessageKind::Text, b"x");
                ctx.send(id, MessageKind::Binary, b"y");
            }
            _ => {
                ctx.close(id, 4000, "done");
                ctx.send_text(id, "after the close");
            }
        }
    }
    fn on_close(&mut self, _ctx: &mut Ctx<'_>, id: ConnId, _reason: CloseReason) {
        self.members.retain(|m| *m != id);
    }
}

#[test]
fn replies_broadcasts_and_closes_of_one_callback_go_out_in_order() {
    let running = InProcess::start(
        Config {
            listen: vec!["127.0.0.1:0".parse().unwrap()],
            ..Config::default()
        },
        Mixer::default(),
    );
    let url = format!("ws://{}/", running.addrs[0]);
    let mut other = Client::connect(&url).unwrap();
    let mut s = connect(running.addrs[0]);
    s.write_all(UPGRADE.as_bytes()).unwrap();
    assert_eq!(
        read_exact_timeout(&mut s, RESPONSE_101.len()),
        RESPONSE_101.as_bytes()
    );
    s.write_all(&masked(0x1, b"reply-broadcast-reply")).unwrap();
    assert_eq!(
        read_exact_timeout(&mut s, 9),
        [0x81, 1, b'1', 0x81, 1, b'2', 0x81, 1, b'3']
    );
    s.write_all(&masked(0x1, b"broadcast-reply")).unwrap();
    assert_eq!(
        read_exact_timeout(&mut s, 6),
        [0x81, 1, b'x', 0x82, 1, b'y']
    );
    assert_eq!(other.recv().unwrap(), Received::Text("2".into()));
    assert_eq!(other.recv().unwrap(), Received::Text("x".into()));
    // A reply after the close of the same callback is not sent (§5.5.1: no data after a
    // close); the close frame is the last thing on the wire.
    s.write_all(&masked(0x1, b"close")).unwrap();
    let mut want = vec![0x88, 6, 0x0f, 0xa0];
    want.extend_from_slice(b"done");
    assert_eq!(read_exact_timeout(&mut s, want.len()), want);
    s.write_all(&masked(0x8, &[0x0f, 0xa0])).unwrap();
    assert_eq!(read_to_close(&mut s), b"");
    drop(other);
    let stats = running.stop();
    // 1, 3, y to the sender; 2 and x to both.
    assert_eq!((stats.broadcast_encodes, stats.messages_out), (2, 7));
}

/// A server running on a thread of this test process.
struct InProcess<H: Handler + Send + 'static> {
    addrs: Vec<SocketAddr>,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Server<H>>,
}

impl<H: Handler + Send + 'static> InProcess<H> {
    fn start(config: Config, handler: H) -> Self {
        let mut server = Server::bind(config, handler).unwrap();
        let addrs = server.local_addrs().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut events = Events::with_capacity(64);
            while !flag.load(Ordering::Relaxed) {
                server
                    .turn(&mut events, Some(Duration::from_millis(20)))
                    .unwrap();
            }
            server
        });
        InProcess {
            addrs,
            stop,
            thread,
        }
    }

    fn stop(self) -> Stats {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap().stats().clone()
    }
}

#[test]
fn a_broadcast_is_encoded_once_for_all_receivers() {
    let running = InProcess::start(
        Config {
            listen: vec!["127.0.0.1:0".parse().unwrap()],
            ..Config::default()
        },
        Room::default(),
    );
    let url = format!("ws://{}/", running.addrs[0]);
    let mut clients: Vec<Client> = (0..5).map(|_| Client::connect(&url).unwrap()).collect();
    // Make sure all five are registered before the broadcast.
    for c in clients.iter_mut() {
        c.ping(b"sync").unwrap();
        assert_eq!(c.recv().unwrap(), Received::Pong(b"sync".to_vec()));
    }
    clients[0].send_text("to everyone").unwrap();
    for c in clients.iter_mut() {
        assert_eq!(c.recv().unwrap(), Received::Text("to everyone".into()));
    }
    drop(clients);
    let stats = running.stop();
    assert_eq!((stats.broadcast_encodes, stats.messages_out), (1, 5));
}
