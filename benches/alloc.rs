//! Allocations per echoed message in the steady state, counted by a global allocator.
//!
//! The issue asks for no allocation per message on the echo path once a connection is warm.
//! This bench runs `wsloop::server::Server` with the `echo` application on a thread of this
//! process, connects a client over loopback, warms the connection up, then counts the
//! allocator calls (`alloc`, `alloc_zeroed`, `realloc`) made on the server thread while the
//! client does many echo round trips. The client is a plain blocking socket that writes
//! pre-encoded frames and reads the echoes into a buffer made beforehand, so it allocates
//! nothing per message either (its count is printed to show it).
//!
//! Scenarios, each on its own connection:
//! - `text 16 B, one at a time`: write one masked 16-byte text frame, read its echo (the
//!   issue's figure: 16-byte messages);
//! - `binary 16 B, bursts of 64`: 64 frames in one write, then the 64 echoes (several frames
//!   per read, several replies per write);
//! - `text 4 KiB, one at a time`: a payload larger than a small frame.
//!
//! A control follows: the same first scenario against an echo handler that copies each
//! message into a new `Vec` before sending it, which must show exactly 1 allocation per
//! message; it proves that the counter sees the server thread's allocations.
//!
//! Run: `cargo bench --bench alloc` (release build). Flags after `--`:
//! - `--messages N`: messages per scenario (default 100,000; warm-up is a tenth of it);
//! - `--trace N`: print a backtrace of each of the first N server-thread allocations counted in
//!   each scenario (the tracer's own allocations are not counted);
//! - `--expect-zero`: exit 1 unless the server made no allocation while counting.

use std::alloc::{GlobalAlloc, Layout, System};
use std::backtrace::Backtrace;
use std::cell::Cell;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::Events;
use wsloop::app::echo::Echo;
use wsloop::proto::frame::encode_frame;
use wsloop::proto::{Message, OpCode};
use wsloop::server::{Config, ConnId, Ctx, Handler, Server};

/// Allocator calls and bytes requested.
struct Counter {
    calls: AtomicU64,
    bytes: AtomicU64,
}

impl Counter {
    const fn new() -> Self {
        Counter {
            calls: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        }
    }

    fn add(&self, bytes: usize) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    fn snapshot(&self) -> (u64, u64) {
        (
            self.calls.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }
}

/// Every thread's allocations.
static ALL: Counter = Counter::new();
/// The server thread's.
static SERVER: Counter = Counter::new();
/// The client's (the main thread).
static CLIENT: Counter = Counter::new();
/// Backtraces still to print for server-thread allocations (`--trace`).
static TRACES_LEFT: AtomicU64 = AtomicU64::new(0);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Other,
    Server,
    Client,
}

thread_local! {
    // Const-initialized and without a destructor: reading them from the allocator neither
    // allocates nor registers anything.
    static ROLE: Cell<Role> = const { Cell::new(Role::Other) };
    static TRACING: Cell<bool> = const { Cell::new(false) };
}

/// Counts every request for memory, then hands it to the system allocator.
struct Counting;

impl Counting {
    fn record(size: usize) {
        // The tracer's own allocations (capturing and printing a backtrace) are not counted.
        if TRACING.try_with(Cell::get).unwrap_or(true) {
            return;
        }
        ALL.add(size);
        match ROLE.try_with(Cell::get).unwrap_or(Role::Other) {
            Role::Server => {
                SERVER.add(size);
                if TRACES_LEFT.load(Ordering::Relaxed) > 0 {
                    trace(size);
                }
            }
            Role::Client => CLIENT.add(size),
            Role::Other => {}
        }
    }
}

/// Prints where a server allocation comes from (at most `--trace N` times per scenario).
fn trace(size: usize) {
    let _ = TRACING.try_with(|t| t.set(true));
    let take = TRACES_LEFT.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    if take.is_ok() {
        eprintln!(
            "--- server-thread allocation of {size} bytes:\n{}",
            Backtrace::force_capture()
        );
    }
    let _ = TRACING.try_with(|t| t.set(false));
}

// SAFETY: each method passes its arguments unchanged to `System`, the standard allocator, and
// returns what it returns, so `System`'s guarantees (alignment, size, ownership of the block)
// are exactly this allocator's. The counting beside it only touches atomics and
// const-initialized thread-locals without destructors, which never allocate, so it cannot
// recurse into the allocator; the one path that allocates (`trace`) sets `TRACING` first,
// which makes `record` return at once for its nested allocations.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::record(layout.size());
        // SAFETY: the caller's contract for `alloc` is passed on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Self::record(layout.size());
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        Self::record(new_size);
        // SAFETY: `ptr` was allocated by `System` (through this wrapper) with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` (through this wrapper) with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The echo server on its own thread.
struct Running {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

/// The control: an echo that allocates once per message (a copy of the payload).
struct CopyingEcho;

impl Handler for CopyingEcho {
    fn on_message(&mut self, ctx: &mut Ctx<'_>, id: ConnId, message: Message<'_>) {
        let copy = message.data.to_vec();
        ctx.send(id, message.kind, &copy);
    }
}

fn start_server<H: Handler + Send + 'static>(handler: H) -> Running {
    let config = Config {
        listen: vec!["127.0.0.1:0".parse().expect("address")],
        ..Config::default()
    };
    let mut server = Server::bind(config, handler).expect("bind");
    let addr = server.local_addrs().expect("local address")[0];
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let thread = std::thread::spawn(move || {
        ROLE.with(|r| r.set(Role::Server));
        let mut events = Events::with_capacity(64);
        while !flag.load(Ordering::Relaxed) {
            server
                .turn(&mut events, Some(Duration::from_millis(20)))
                .expect("loop turn");
        }
    });
    Running { addr, stop, thread }
}

impl Running {
    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("server thread");
    }
}

/// A blocking client that does the opening handshake by hand (allocations here are before
/// anything is counted).
fn connect(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).expect("write request");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).expect("read response");
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101 "),
        "{}",
        String::from_utf8_lossy(&head)
    );
    stream
}

struct Scenario {
    name: &'static str,
    opcode: OpCode,
    payload_len: usize,
    /// Frames per write (and echoes per read).
    burst: usize,
}

struct Measured {
    messages: u64,
    server: (u64, u64),
    client: (u64, u64),
    all: (u64, u64),
    elapsed: Duration,
}

fn delta(after: (u64, u64), before: (u64, u64)) -> (u64, u64) {
    (after.0 - before.0, after.1 - before.1)
}

fn run(addr: SocketAddr, scenario: &Scenario, messages: usize, trace: u64) -> Measured {
    let mut stream = connect(addr);
    let payload: Vec<u8> = (0..scenario.payload_len)
        .map(|i| b'a' + (i % 26) as u8)
        .collect();
    let mut request = Vec::new();
    let mut expected = Vec::new();
    for i in 0..scenario.burst {
        let key = [0x12, i as u8, 0x56, 0x78];
        encode_frame(&mut request, true, scenario.opcode, Some(key), &payload);
        encode_frame(&mut expected, true, scenario.opcode, None, &payload);
    }
    let mut reply = vec![0u8; expected.len()];
    let rounds = messages.div_ceil(scenario.burst);
    let mut round_trip = |stream: &mut TcpStream| {
        stream.write_all(&request).expect("write");
        stream.read_exact(&mut reply).expect("read echo");
        assert!(reply == expected, "wrong echo");
    };
    ROLE.with(|r| r.set(Role::Client));
    for _ in 0..rounds.div_ceil(10) {
        round_trip(&mut stream);
    }
    // Let the server finish the loop turn of the last warm-up message.
    std::thread::sleep(Duration::from_millis(100));
    let before = (SERVER.snapshot(), CLIENT.snapshot(), ALL.snapshot());
    TRACES_LEFT.store(trace, Ordering::Relaxed);
    let started = Instant::now();
    for _ in 0..rounds {
        round_trip(&mut stream);
    }
    let elapsed = started.elapsed();
    std::thread::sleep(Duration::from_millis(100));
    TRACES_LEFT.store(0, Ordering::Relaxed);
    let after = (SERVER.snapshot(), CLIENT.snapshot(), ALL.snapshot());
    ROLE.with(|r| r.set(Role::Other));
    Measured {
        messages: (rounds * scenario.burst) as u64,
        server: delta(after.0, before.0),
        client: delta(after.1, before.1),
        all: delta(after.2, before.2),
        elapsed,
    }
}

fn main() {
    let mut messages = 100_000;
    let mut trace = 0;
    let mut expect_zero = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--messages" => messages = args.next().and_then(|n| n.parse().ok()).unwrap_or(0),
            "--trace" => trace = args.next().and_then(|n| n.parse().ok()).unwrap_or(0),
            "--expect-zero" => expect_zero = true,
            // `cargo bench` passes `--bench`; a filter word is accepted and ignored.
            _ => {}
        }
    }
    if messages == 0 {
        eprintln!("usage: alloc [--messages N] [--trace N] [--expect-zero]");
        std::process::exit(2);
    }
    let scenarios = [
        Scenario {
            name: "text 16 B, one at a time",
            opcode: OpCode::Text,
            payload_len: 16,
            burst: 1,
        },
        Scenario {
            name: "binary 16 B, bursts of 64",
            opcode: OpCode::Binary,
            payload_len: 16,
            burst: 64,
        },
        Scenario {
            name: "text 4 KiB, one at a time",
            opcode: OpCode::Text,
            payload_len: 4096,
            burst: 1,
        },
    ];
    let server = start_server(Echo);
    println!(
        "{:<28} {:>9} {:>14} {:>12} {:>14} {:>14} {:>10}",
        "scenario",
        "messages",
        "server allocs",
        "per message",
        "bytes/message",
        "client allocs",
        "µs/round"
    );
    let mut server_total = 0;
    for scenario in &scenarios {
        let m = run(server.addr, scenario, messages, trace);
        server_total += m.server.0;
        report(scenario.name, scenario, &m);
    }
    server.stop();
    // The control runs without tracing: its allocations are the expected ones.
    let control = start_server(CopyingEcho);
    let m = run(control.addr, &scenarios[0], messages, 0);
    report("control: copying echo", &scenarios[0], &m);
    control.stop();
    let control_ok = m.server.0 == m.messages;
    println!("server allocations while counting: {server_total}");
    if !control_ok {
        println!(
            "CONTROL FAILED: expected {} allocations, counted {}",
            m.messages, m.server.0
        );
    }
    if !control_ok || (expect_zero && server_total > 0) {
        std::process::exit(1);
    }
}

fn report(name: &str, scenario: &Scenario, m: &Measured) {
    let rounds = m.messages / scenario.burst as u64;
    println!(
        "{:<28} {:>9} {:>14} {:>12.3} {:>14.1} {:>14} {:>10.1}",
        name,
        m.messages,
        m.server.0,
        m.server.0 as f64 / m.messages as f64,
        m.server.1 as f64 / m.messages as f64,
        m.client.0,
        m.elapsed.as_secs_f64() * 1e6 / rounds as f64,
    );
    let others = m.all.0 - m.server.0 - m.client.0;
    if others > 0 {
        println!("  ({others} allocations on other threads)");
    }
}
