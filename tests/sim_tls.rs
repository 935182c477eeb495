//! TLS on the deterministic simulation (`wsloop::server::sim`): the same loop and transport as
//! on sockets, over in-memory pipes and a virtual clock, with a rustls client in the test
//! moving the records by hand. Checks the exact plaintext both ways, the close_notify before
//! the FIN, writable interest while rustls holds records the socket did not take, the handshake
//! deadline against a trickled ClientHello, and the plain 400 to an HTTP client.

mod common;
#[path = "common/tls.rs"]
mod tls;

use std::io::{Cursor, Read, Write};
use std::time::Duration;

use common::raw::OutFrame;
use rustls::pki_types::ServerName;
use rustls::ClientConnection;
use wsloop::app::echo::Echo;
use wsloop::server::sim::{Sim, SimPeer};
use wsloop::server::tls::TlsConfig;
use wsloop::server::{Config, Rejection, TlsFailure};

const SECOND: Duration = Duration::from_secs(1);
/// RFC 6455 §1.3: the sample key and the accept value it must produce.
const UPGRADE: &[u8] = b"GET / HTTP/1.1\r\nHost: sim\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Version: 13\r\n\r\n";
const SWITCHING: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";

/// An echo server with TLS on the simulated network, and the PKI of its certificate.
fn tls_sim(config: Config) -> (Sim<Echo>, tls::TestPki) {
    let pki = tls::TestPki::new("sim");
    let leaf = pki.localhost();
    let tls = TlsConfig::from_pem_files(&leaf.cert, &leaf.key).expect("TLS config");
    let config = Config {
        tls: Some(tls),
        ..config
    };
    (Sim::new(config, Echo), pki)
}

/// A rustls client on one simulated connection.
struct TlsPeer {
    peer: SimPeer,
    tls: ClientConnection,
    /// Plaintext received and not yet taken.
    plain: Vec<u8>,
    /// The server's close_notify arrived.
    close_notify: bool,
}

impl TlsPeer {
    fn connect(sim: &mut Sim<Echo>, pki: &tls::TestPki) -> TlsPeer {
        let name = ServerName::try_from("localhost").expect("name");
        let tls = ClientConnection::new(tls::client_config(&pki.ca_cert), name).expect("client");
        let mut peer = TlsPeer {
            peer: sim.connect(),
            tls,
            plain: Vec::new(),
            close_notify: false,
        };
        peer.pump(sim);
        assert!(!peer.tls.is_handshaking(), "the TLS handshake completed");
        peer
    }

    /// Moves records both ways until neither side has more to say.
    fn pump(&mut self, sim: &mut Sim<Echo>) {
        loop {
            let mut out = Vec::new();
            while self.tls.wants_write() {
                self.tls.write_tls(&mut out).expect("encrypt");
            }
            if !out.is_empty() {
                sim.send(&self.peer, &out);
            }
            let back = sim.take(&self.peer);
            self.receive(&back);
            if out.is_empty() && back.is_empty() {
                return;
            }
        }
    }

    /// Feeds the server's bytes to rustls and keeps the plaintext.
    fn receive(&mut self, bytes: &[u8]) {
        let mut records = Cursor::new(bytes);
        while (records.position() as usize) < bytes.len() {
            self.tls.read_tls(&mut records).expect("read records");
            self.tls.process_new_packets().expect("valid records");
            let mut chunk = [0u8; 16 * 1024];
            loop {
                match self.tls.reader().read(&mut chunk) {
                    Ok(0) => {
                        self.close_notify = true;
                        break;
                    }
                    Ok(n) => self.plain.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("plaintext: {e}"),
                }
            }
        }
    }

    fn send(&mut self, sim: &mut Sim<Echo>, plaintext: &[u8]) {
        self.tls.writer().write_all(plaintext).expect("plaintext");
        self.pump(sim);
    }

    fn take_plain(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.plain)
    }
}

/// An unmasked server frame with FIN set, in the length form RFC 6455 §5.2 requires.
fn server_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x80 | opcode];
    match payload.len() {
        n @ 0..=125 => frame.push(n as u8),
        n @ 126..=0xffff => {
            frame.push(126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(payload);
    frame
}

#[test]
fn tls_echo_on_the_virtual_network_ends_with_close_notify_then_the_fin() {
    let (mut sim, pki) = tls_sim(Config::default());
    let mut client = TlsPeer::connect(&mut sim, &pki);
    assert_eq!(sim.server().stats().tls_handshakes, 1);
    client.send(&mut sim, UPGRADE);
    assert_eq!(client.take_plain(), SWITCHING);
    client.send(&mut sim, &OutFrame::text("Hello").encode());
    assert_eq!(client.take_plain(), server_frame(0x1, b"Hello"));
    client.send(&mut sim, &OutFrame::close(1000, "").encode());
    // The close echoed, then close_notify, then the FIN: nothing after the close frame.
    assert_eq!(
        client.take_plain(),
        server_frame(0x8, &1000u16.to_be_bytes())
    );
    assert!(client.close_notify, "close_notify after the close frame");
    assert!(
        sim.is_closed_by_server(&client.peer),
        "FIN after close_notify"
    );
}

#[test]
fn records_the_socket_did_not_take_keep_writable_interest_until_written() {
    let (mut sim, pki) = tls_sim(Config::default());
    let mut client = TlsPeer::connect(&mut sim, &pki);
    client.send(&mut sim, UPGRADE);
    assert_eq!(client.take_plain(), SWITCHING);
    // The peer's receive window holds 1000 bytes: the 100 KiB echo cannot leave at once.
    sim.set_window(&client.peer, 1000);
    let message: Vec<u8> = (0..100 * 1024).map(|i| (i % 251) as u8).collect();
    client.tls.set_buffer_limit(None);
    client
        .tls
        .writer()
        .write_all(&OutFrame::binary(message.clone()).encode())
        .expect("plaintext");
    let mut records = Vec::new();
    while client.tls.wants_write() {
        client.tls.write_tls(&mut records).expect("encrypt");
    }
    sim.send(&client.peer, &records);
    let want = server_frame(0x2, &message);
    while client.plain.len() < want.len() {
        // Taking what the window held lets the server write more, if it still watches the
        // socket: whatever is left waits in its queue or, encrypted, in rustls.
        let bytes = sim.take(&client.peer);
        assert!(
            !bytes.is_empty(),
            "{} of {} bytes delivered and the server stopped writing",
            client.plain.len(),
            want.len()
        );
        client.receive(&bytes);
    }
    assert_eq!(client.take_plain(), want);
    assert!(
        !sim.is_watching_writable(&client.peer),
        "all written: no interest left"
    );
}

#[test]
fn a_client_hello_trickled_a_byte_a_second_runs_into_the_handshake_deadline() {
    let config = Config {
        handshake_timeout: 10 * SECOND,
        ..Config::default()
    };
    let (mut sim, pki) = tls_sim(config);
    let name = ServerName::try_from("localhost").expect("name");
    let mut hello_client =
        ClientConnection::new(tls::client_config(&pki.ca_cert), name).expect("client");
    let mut hello = Vec::new();
    while hello_client.wants_write() {
        hello_client.write_tls(&mut hello).expect("hello");
    }
    let bystander = sim.connect();
    let peer = sim.connect();
    let mut sent = 0;
    while sim.is_connected(&peer) {
        assert!(sent < hello.len(), "the whole hello went out first");
        sim.send(&peer, &hello[sent..=sent]);
        sent += 1;
        sim.advance(SECOND);
    }
    // Accepted at 0 s with 10 s to finish: bytes went out at 0..9 s, the tenth second ends it.
    assert_eq!(sent, 10);
    let stats = sim.server().stats();
    assert_eq!(stats.tls_failures.get(&TlsFailure::Timeout), Some(&2));
    assert_eq!(stats.rejections.get(&Rejection::HandshakeTimeout), Some(&2));
    assert!(
        !sim.is_connected(&bystander),
        "the silent one timed out as well"
    );
}

#[test]
fn plain_http_to_the_tls_port_gets_exactly_a_plain_400_and_a_fin() {
    let (mut sim, pki) = tls_sim(Config::default());
    let plain = sim.connect();
    sim.send(&plain, b"GET /healthz HTTP/1.1\r\nHost: sim\r\n\r\n");
    let body = "This port speaks TLS: use https:// or wss://.\n";
    let want = format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    assert_eq!(String::from_utf8(sim.take(&plain)).unwrap(), want);
    assert!(sim.is_closed_by_server(&plain));
    // Garbage gets nothing and is dropped; a TLS client is served all along.
    let garbage = sim.connect();
    sim.send(&garbage, b"\x00\x01\x02\x03");
    assert!(sim.take(&garbage).is_empty());
    assert!(!sim.is_connected(&garbage));
    let mut client = TlsPeer::connect(&mut sim, &pki);
    client.send(&mut sim, UPGRADE);
    assert_eq!(client.take_plain(), SWITCHING);
    let stats = sim.server().stats();
    assert_eq!(stats.tls_failures.get(&TlsFailure::PlainHttp), Some(&1));
    assert_eq!(stats.tls_failures.get(&TlsFailure::NotTls), Some(&1));
    assert_eq!(stats.tls_handshakes, 1);
}
