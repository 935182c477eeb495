//! wss:// and https:// served by wsloop itself (`--tls-cert`, `--tls-key`), with certificates
//! made at test time (tests/common/tls.rs): the page, /healthz, /metrics and echo over TLS 1.2
//! and 1.3, the close ending with close_notify before the FIN, the key formats, the flags
//! checked at start, SIGHUP reloading the certificate, `--listen-plain`, and hostile clients
//! (plain HTTP, garbage, a broken ClientHello, a trickled one, a thousand stalled ones).
//!
//! The clients are rustls clients that trust the test CA only, so every test also checks
//! that the server presents the chain it was given.

mod common;
#[path = "common/tls.rs"]
mod tls;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::raw::{opcode, OutFrame, RawClient};
use common::{connect_from, http_exchange, parse_metrics, rejections, Server};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::ClientConnection;
use tls::{KeyFormat, Leaf, TestPki};

/// A wsloop with TLS on its `--listen` address, and the PKI its certificate comes from.
struct TlsServer {
    server: Server,
    pki: TestPki,
    leaf: Leaf,
}

impl TlsServer {
    /// `wsloop SUBCOMMAND --tls-cert ... --tls-key ... ARGS` with a fresh `localhost` certificate.
    fn start(subcommand: &str, args: &[&str]) -> TlsServer {
        let pki = TestPki::new("tls");
        let leaf = pki.localhost();
        TlsServer::start_with(pki, leaf, subcommand, args)
    }

    fn start_with(pki: TestPki, leaf: Leaf, subcommand: &str, args: &[&str]) -> TlsServer {
        let files = tls_flags(&leaf);
        let files: Vec<&str> = files.iter().map(String::as_str).collect();
        let server = Server::start(subcommand, &[files.as_slice(), args].concat());
        TlsServer { server, pki, leaf }
    }

    fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    fn ca(&self) -> &Path {
        &self.pki.ca_cert
    }

    /// A WebSocket connection on `/` over TLS (handshake checked by the raw client).
    fn wss(&self) -> RawClient {
        wss_to(self.addr(), self.ca(), "/")
    }

    /// `GET path` over TLS: the response head and body.
    fn get(&self, path: &str) -> (String, Vec<u8>) {
        let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
        tls::https_exchange(self.addr(), self.ca(), request.as_bytes())
    }

    /// The `wsloop_*` series of /metrics, fetched over TLS.
    fn metrics(&self) -> std::collections::BTreeMap<String, u64> {
        let (head, body) = self.get("/metrics");
        assert!(head.starts_with("HTTP/1.1 200 "), "/metrics: {head}");
        parse_metrics(&String::from_utf8(body).expect("UTF-8 metrics"))
    }
}

/// `--tls-cert FILE --tls-key FILE` for a leaf.
fn tls_flags(leaf: &Leaf) -> [String; 4] {
    [
        "--tls-cert".into(),
        leaf.cert.to_string_lossy().into_owned(),
        "--tls-key".into(),
        leaf.key.to_string_lossy().into_owned(),
    ]
}

fn wss_to(addr: SocketAddr, ca: &Path, path: &str) -> RawClient {
    let config = tls::client_config(ca);
    let mut client =
        RawClient::connect_wrapped(addr, |tcp| Box::new(tls::wrap(tcp, &config, "127.0.0.1")));
    client.handshake(path);
    client
}

/// The TLS failure series of /metrics for a class.
fn tls_failures(class: &str) -> String {
    format!("wsloop_tls_handshake_failures_total{{reason=\"{class}\"}}")
}

/// Echoes a text over an open raw client.
fn echo(client: &mut RawClient, text: &str) {
    client.send(&OutFrame::text(text)).expect("send");
    let frame = client.read_frame();
    assert_eq!(
        (frame.opcode, frame.payload.as_slice()),
        (opcode::TEXT, text.as_bytes())
    );
}

/// The DER of the leaf (first) certificate in a PEM chain file.
fn leaf_der(chain: &Path) -> Vec<u8> {
    CertificateDer::pem_file_iter(chain)
        .expect("open the chain")
        .next()
        .expect("a certificate")
        .expect("PEM")
        .to_vec()
}

/// The certificate a fresh TLS connection is shown.
fn presented_leaf(addr: SocketAddr, ca: &Path) -> Vec<u8> {
    let tls = tls::connect(addr, ca);
    tls.conn.peer_certificates().expect("a certificate")[0].to_vec()
}

#[test]
fn https_serves_the_page_health_and_metrics() {
    let server = TlsServer::start("serve", &[]);
    let (head, body) = server.get("/");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(body.starts_with(b"<!doctype html>"), "the page");
    let (head, body) = server.get("/healthz");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    let health: serde_json::Value = serde_json::from_slice(&body).expect("JSON health");
    assert_eq!(health["status"], "ok");
    // The page, the health and this request: three handshakes, no failure.
    let metrics = server.metrics();
    assert_eq!(metrics["wsloop_tls_handshakes_total"], 3, "{metrics:?}");
    for class in [
        "plain_http",
        "not_tls",
        "peer_alert",
        "protocol",
        "closed",
        "timeout",
    ] {
        assert_eq!(metrics[&tls_failures(class)], 0, "{class}");
    }
}

#[test]
fn tls_1_2_and_1_3_both_agree_on_http_1_1() {
    let server = TlsServer::start("serve", &[]);
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let config = tls::client_config_with(server.ca(), &[version]);
        let tcp = TcpStream::connect(server.addr()).expect("connect");
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut stream = tls::wrap(tcp, &config, "localhost");
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .expect("request");
        let mut reply = Vec::new();
        stream
            .read_to_end(&mut reply)
            .expect("reply, then close_notify");
        assert!(reply.starts_with(b"HTTP/1.1 200 OK\r\n"));
        assert_eq!(stream.conn.protocol_version(), Some(version.version));
        assert_eq!(stream.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    }
}

#[test]
fn wss_echoes_and_the_close_ends_with_close_notify_before_the_fin() {
    let server = TlsServer::start("echo", &[]);
    let mut client = server.wss();
    echo(&mut client, "hello over TLS");
    // Larger than a TLS record (16 KiB) and than rustls' buffer (64 KiB).
    let big = vec![0xa5; 200 * 1024];
    client.send(&OutFrame::binary(big.clone())).expect("send");
    let frame = client.read_frame();
    assert_eq!((frame.opcode, frame.payload == big), (opcode::BINARY, true));
    client.send(&OutFrame::close(1000, "bye")).expect("close");
    // The read after the close frame returns 0 only after a close_notify: a FIN alone is an
    // error (unexpected EOF) for rustls, and fails here.
    assert_eq!(client.expect_close(false), Some(1000));
}

#[test]
fn key_formats_pkcs8_rsa_and_ec() {
    let Some(openssl) = common::find_program("openssl", "RSA (PKCS#1) and EC (SEC1) test keys")
    else {
        return;
    };
    for (format, header) in [
        (KeyFormat::Pkcs8, "-----BEGIN PRIVATE KEY-----"),
        (KeyFormat::Pkcs1Rsa, "-----BEGIN RSA PRIVATE KEY-----"),
        (KeyFormat::Sec1Ec, "-----BEGIN EC PRIVATE KEY-----"),
    ] {
        let pki = TestPki::new("keys");
        let leaf = pki.leaf_with_key_format("server", format, &openssl);
        let key = std::fs::read_to_string(&leaf.key).expect("key file");
        assert!(key.starts_with(header), "{format:?} key file: {key}");
        let server = TlsServer::start_with(pki, leaf, "echo", &[]);
        let mut client = server.wss();
        echo(&mut client, &format!("{format:?}"));
    }
}

/// Runs `wsloop echo ARGS` that must refuse to start; returns its exit code and stderr.
fn refused_start(args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(common::wsloop_binary())
        .arg("echo")
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn wsloop");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("wsloop echo {args:?} started instead of refusing");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    let _ = child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr);
    (status.code(), stderr)
}

#[test]
fn unusable_tls_flags_are_refused_at_start_with_status_2() {
    let pki = TestPki::new("flags");
    let leaf = pki.localhost();
    let other = pki.leaf("other", &["localhost"], tls::Validity::Current);
    let cert = leaf.cert.to_string_lossy().into_owned();
    let key = leaf.key.to_string_lossy().into_owned();
    let other_key = other.key.to_string_lossy().into_owned();
    let missing = pki.dir().join("missing.pem").to_string_lossy().into_owned();
    let empty = pki.dir().join("empty.pem");
    std::fs::write(&empty, "no PEM here\n").expect("write");
    let empty = empty.to_string_lossy().into_owned();
    let cases: [(&[&str], &str); 6] = [
        (&["--tls-cert", &cert], "--tls-key"),
        (&["--tls-key", &key], "--tls-cert"),
        (
            &["--tls-cert", &missing, "--tls-key", &key],
            "missing.pem: No such file",
        ),
        (
            &["--tls-cert", &empty, "--tls-key", &key],
            "empty.pem: no CERTIFICATE section",
        ),
        (
            &["--tls-cert", &cert, "--tls-key", &empty],
            "empty.pem: no private key",
        ),
        (
            &["--tls-cert", &cert, "--tls-key", &other_key],
            "KeyMismatch",
        ),
    ];
    for (args, says) in cases {
        let (code, stderr) = refused_start(args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(says),
            "{args:?} should say {says:?}: {stderr}"
        );
    }
}

#[test]
fn sighup_reloads_the_certificate_for_new_connections_only() {
    let server = TlsServer::start("echo", &[]);
    let first = leaf_der(&server.leaf.cert);
    assert_eq!(presented_leaf(server.addr(), server.ca()), first);
    let mut open = server.wss();
    echo(&mut open, "before the reload");
    // New files in place, then SIGHUP: new connections see the new certificate.
    let second = server.pki.localhost();
    let second = leaf_der(&second.cert);
    assert_ne!(first, second);
    server.server.signal("HUP");
    let seen = wait_for_leaf(&server, &second);
    assert_eq!(seen, second, "the reloaded certificate was never presented");
    echo(&mut open, "the open connection keeps working");
    // A key that does not parse is refused, and the current certificate stays.
    std::fs::write(&server.leaf.key, "-----BEGIN PRIVATE KEY-----\nbroken\n").expect("write");
    server.server.signal("HUP");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(presented_leaf(server.addr(), server.ca()), second);
    // Signals are handled in order: once good files are back and loaded, the bad ones
    // have been dealt with, and did not end the process.
    let third = leaf_der(&server.pki.localhost().cert);
    server.server.signal("HUP");
    assert_eq!(wait_for_leaf(&server, &third), third);
    echo(&mut open, "still open after both reloads");
}

/// The certificate new connections see once it is `want`, polled for up to 5 s.
fn wait_for_leaf(server: &TlsServer, want: &[u8]) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let seen = presented_leaf(server.addr(), server.ca());
        if seen == want || Instant::now() > deadline {
            return seen;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn listen_plain_serves_plain_http_beside_the_tls_port() {
    let pki = TestPki::new("plain");
    let leaf = pki.localhost();
    let files = tls_flags(&leaf);
    let mut args: Vec<&str> = files.iter().map(String::as_str).collect();
    args.extend(["--listen", "127.0.0.1:0", "--listen-plain", "127.0.0.1:0"]);
    let server = Server::start_listening("serve", &args, 2);
    let (secure, plain) = (server.addrs[0], server.addrs[1]);
    let request = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let (head, _) = http_exchange(plain, request);
    assert!(
        head.starts_with("HTTP/1.1 200 OK\r\n"),
        "plain port: {head}"
    );
    let (head, _) = tls::https_exchange(secure, &pki.ca_cert, request);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "TLS port: {head}");
    let mut ws = RawClient::connect_tcp(plain);
    ws.handshake("/ws");
    chat_round_trip(&mut ws);
}

/// A chat client of serve's `/ws` over TLS, past its welcome.
fn chat_client(server: &TlsServer) -> RawClient {
    let mut client = wss_to(server.addr(), server.ca(), "/ws");
    let welcome = client.read_frame();
    assert!(String::from_utf8_lossy(&welcome.payload).contains("\"welcome\""));
    client
}

/// A chat `ping` answered by its `pong`.
fn chat_round_trip(client: &mut RawClient) {
    client
        .send(&OutFrame::text(r#"{"type":"ping","ts":7}"#))
        .expect("send");
    loop {
        let frame = client.read_frame();
        let text = String::from_utf8_lossy(&frame.payload).into_owned();
        if text.contains("\"pong\"") {
            assert!(text.contains("\"echo\":7"), "{text}");
            return;
        }
    }
}

#[test]
fn plain_http_to_the_tls_port_gets_a_plain_400() {
    let server = TlsServer::start("serve", &[]);
    let (head, body) = http_exchange(server.addr(), b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(common::status_line(&head), "HTTP/1.1 400 Bad Request");
    assert_eq!(body, b"This port speaks TLS: use https:// or wss://.\n");
    let metrics = server.metrics();
    assert_eq!(metrics[&tls_failures("plain_http")], 1);
    assert_eq!(
        metrics["wsloop_tls_handshakes_total"], 1,
        "only the metrics request"
    );
}

#[test]
fn garbage_or_a_broken_client_hello_is_closed_and_counted() {
    let server = TlsServer::start("serve", &[]);
    let mut bystander = chat_client(&server);
    // Bytes that are no TLS record at all: closed without an answer.
    let mut garbage = TcpStream::connect(server.addr()).expect("connect");
    garbage
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    garbage
        .write_all(b"\x00\x01\x02 not TLS\r\n\r\n")
        .expect("write");
    let mut reply = Vec::new();
    let _ = garbage.read_to_end(&mut reply);
    assert!(reply.is_empty(), "no answer to garbage: {reply:?}");
    // A handshake record whose ClientHello is malformed: rustls answers with an alert
    // record (content type 21, RFC 8446 §5.1) and the connection is closed.
    let mut broken = TcpStream::connect(server.addr()).expect("connect");
    broken
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    broken
        .write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 0x01, 0x00, 0x00, 0x01, 0xff])
        .expect("write");
    let mut reply = Vec::new();
    let _ = broken.read_to_end(&mut reply);
    assert_eq!(reply.first(), Some(&0x15), "an alert record: {reply:?}");
    chat_round_trip(&mut bystander);
    let metrics = server.metrics();
    assert_eq!(metrics[&tls_failures("not_tls")], 1);
    assert_eq!(metrics[&tls_failures("protocol")], 1);
}

#[test]
fn a_trickled_client_hello_runs_into_the_handshake_deadline() {
    let server = TlsServer::start("serve", &["--handshake-timeout", "1s"]);
    let hello = client_hello(server.ca());
    let mut stream = TcpStream::connect(server.addr()).expect("connect");
    stream.set_nodelay(true).unwrap();
    let mut writer = stream.try_clone().expect("clone");
    let started = Instant::now();
    // Ten bytes a second: the whole hello would take tens of seconds.
    let trickle = std::thread::spawn(move || {
        let mut sent = 0;
        for byte in hello.iter() {
            if writer.write_all(std::slice::from_ref(byte)).is_err() {
                break;
            }
            sent += 1;
            std::thread::sleep(Duration::from_millis(100));
        }
        (sent, hello.len())
    });
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    let closed_after = started.elapsed();
    assert!(reply.is_empty(), "no answer to half a hello: {reply:?}");
    assert!(
        closed_after >= Duration::from_millis(900) && closed_after < Duration::from_secs(4),
        "closed after {closed_after:?}, not at the 1 s deadline"
    );
    let (sent, total) = trickle.join().expect("trickle thread");
    assert!(
        sent < total,
        "the whole hello went out ({sent} bytes) before the deadline"
    );
    let metrics = server.metrics();
    assert_eq!(metrics[&tls_failures("timeout")], 1);
    assert_eq!(metrics[&rejections("handshake_timeout")], 1);
}

/// The bytes of a real ClientHello for this server (rustls, trusting `ca`).
fn client_hello(ca: &Path) -> Vec<u8> {
    let name = ServerName::try_from("localhost").expect("name");
    let mut conn = ClientConnection::new(tls::client_config(ca), name).expect("client");
    let mut hello = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut hello).expect("write the hello");
    }
    hello
}

#[test]
fn a_thousand_stalled_tls_handshakes_leave_room_for_another_client() {
    let server = TlsServer::start("serve", &["--handshake-timeout", "60s"]);
    let hello = client_hello(server.ca());
    let half = &hello[..hello.len() / 2];
    // From 127.0.0.1: each sends half a ClientHello and stalls. The per-address limit of
    // pending handshakes (128) holds; the rest are closed at accept. Refused sockets are
    // let go as they are found, so the test needs few descriptors.
    let mut stalled: Vec<TcpStream> = Vec::new();
    for batch in 0..10 {
        for _ in 0..100 {
            let mut s = connect_from("127.0.0.1", server.addr());
            let _ = s.write_all(half);
            stalled.push(s);
        }
        std::thread::sleep(Duration::from_millis(100 + 20 * batch));
        stalled.retain(still_open);
    }
    assert_eq!(
        stalled.len(),
        128,
        "pending TLS handshakes held for one address"
    );
    // Another address completes TLS and the WebSocket handshake and is served.
    let tcp = connect_from("127.0.0.2", server.addr());
    let mut client = RawClient::from_wire(Box::new(tls::wrap(
        tcp,
        &tls::client_config(server.ca()),
        "localhost",
    )));
    client.handshake("/ws");
    let welcome = client.read_frame();
    assert!(String::from_utf8_lossy(&welcome.payload).contains("\"welcome\""));
    chat_round_trip(&mut client);
    let request = b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let tcp = connect_from("127.0.0.3", server.addr());
    let stream = tls::wrap(tcp, &tls::client_config(server.ca()), "localhost");
    let (_, body) = common::exchange(stream, request);
    let metrics = parse_metrics(&String::from_utf8(body).expect("UTF-8"));
    assert_eq!(metrics[&rejections("pending_handshakes")], 1000 - 128);
    assert_eq!(metrics["wsloop_tls_handshakes_total"], 2, "{metrics:?}");
    assert_eq!(metrics["wsloop_tcp_connections"], 128 + 2);
}

/// Whether the server still holds a connection open (a read would block).
fn still_open(stream: &TcpStream) -> bool {
    stream.set_nonblocking(true).expect("nonblocking");
    let mut byte = [0u8; 1];
    let open =
        matches!(stream.peek(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
    stream.set_nonblocking(false).expect("blocking");
    open
}
