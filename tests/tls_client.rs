//! `wss://` from the client's side, against a `wsloop echo` behind a TLS terminator in the
//! test process (tests/common/tls.rs) with certificates made at test time: messages of every
//! size both ways, a writer thread sending while the reader waits, certificates that do not
//! hold (expired, for another name, from an unknown CA) refused with one line, `insecure`
//! accepting them, and `wsloop client`'s `--ca` and `--insecure`; and the client against
//! wsloop's own TLS with no terminator between.
#![cfg(feature = "tls")]

mod common;
#[path = "common/tls.rs"]
mod tls;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use common::{wsloop_binary, Server};
use tls::{Handshake, TestPki, TlsTerminator, Validity};
use wsloop::client::{Client, ClientError, ClientOptions, Received, TlsOptions};

const WAIT: Duration = Duration::from_secs(10);

/// Client options with a timeout and these certificate checks.
fn options(tls: TlsOptions) -> ClientOptions {
    ClientOptions {
        timeout: Some(WAIT),
        tls,
        ..ClientOptions::default()
    }
}

fn trusting(ca: &Path) -> TlsOptions {
    TlsOptions {
        ca_file: Some(ca.to_owned()),
        insecure: false,
    }
}

const INSECURE: TlsOptions = TlsOptions {
    ca_file: None,
    insecure: true,
};

#[test]
fn wss_carries_text_binary_16_mib_and_the_close() {
    let pki = TestPki::new("client-messages");
    let echo = Server::echo(&[]);
    let terminator = TlsTerminator::start(&pki.localhost(), echo.addr);
    let url = format!("wss://localhost:{}/echo", terminator.addr.port());
    let mut client =
        Client::connect_with(&url, &options(trusting(&pki.ca_cert))).expect("connect over TLS");
    // SNI from the URL's host; ALPN says the HTTP/1.1 of the opening handshake.
    assert_eq!(
        terminator.next_handshake(),
        Handshake::Done {
            sni: Some("localhost".into()),
            alpn: Some("http/1.1".into())
        }
    );
    client.send_text("hello over TLS").expect("send text");
    assert_eq!(
        client.recv_message().expect("echo"),
        Received::Text("hello over TLS".into())
    );
    // Larger than any TLS record (16 KiB) and than rustls's buffers: many records each way.
    let big: Vec<u8> = (0..16 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    client.send_binary(&big).expect("send 16 MiB");
    match client.recv_message().expect("16 MiB echo") {
        Received::Binary(data) => assert!(data == big, "the 16 MiB echo differs"),
        other => panic!("expected the binary echo, got {other:?}"),
    }
    // The echo server answers the close with its code and no reason.
    client.close(1000, "done").expect("close");
    assert_eq!(
        client.recv().expect("the close reply"),
        Received::Close(Some(1000), String::new())
    );
    // The server closes TCP; the terminator ends TLS with a close_notify.
    assert!(matches!(client.recv(), Err(ClientError::Closed)));
}

#[test]
fn a_writer_thread_sends_while_the_reader_waits() {
    let pki = TestPki::new("client-threads");
    let echo = Server::echo(&[]);
    let terminator = TlsTerminator::start(&pki.localhost(), echo.addr);
    let url = format!("wss://127.0.0.1:{}/", terminator.addr.port());
    let mut client =
        Client::connect_with(&url, &options(trusting(&pki.ca_cert))).expect("connect over TLS");
    // An IP address is checked against the certificate but sent without SNI (RFC 6066 §3).
    assert_eq!(
        terminator.next_handshake(),
        Handshake::Done {
            sni: None,
            alpn: Some("http/1.1".into())
        }
    );
    let mut writer = client.writer();
    client.set_timeout(None).expect("block while reading");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(client.recv_message().map_err(|e| e.to_string()));
    });
    // Let the reader block in its socket read first: a read that held the TLS state while
    // waiting would keep this send from ever being encrypted.
    thread::sleep(Duration::from_millis(200));
    thread::spawn(move || writer.send_text("from another thread"));
    assert_eq!(
        rx.recv_timeout(WAIT)
            .expect("the reader got the echo within 10 s"),
        Ok(Received::Text("from another thread".into()))
    );
}

#[test]
fn wss_to_a_plain_server_says_it_does_not_speak_tls() {
    // wsloop waits for a request head that the ClientHello never completes, then hangs up.
    let echo = Server::echo(&["--handshake-timeout", "300ms"]);
    // A server that answers anything with an HTTP error at once, as nginx's plain port does.
    let http = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let http_port = http.local_addr().expect("address").port();
    thread::spawn(move || {
        let (mut stream, _) = http.accept().expect("accept");
        let _ = stream.read(&mut [0; 1024]);
        let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
    });
    let cases = [
        (
            echo.addr.port(),
            "TLS: the server closed the connection during the TLS handshake: a ws:// server?",
        ),
        (
            http_port,
            "TLS: the server does not speak TLS here (received corrupt message of type \
             InvalidContentType): a ws:// server?",
        ),
    ];
    for (port, says) in cases {
        let url = format!("wss://127.0.0.1:{port}/");
        match Client::connect_with(&url, &options(INSECURE)) {
            Ok(_) => panic!("a plain server on {port} passed for TLS"),
            Err(e) => assert_eq!(e.to_string(), says),
        }
    }
}

#[test]
fn certificates_that_do_not_hold_are_refused_with_one_line() {
    let pki = TestPki::new("client-refusals");
    let stranger = TestPki::new("client-stranger");
    let twin = TestPki::new("client-refusals");
    let echo = Server::echo(&[]);
    let expired = pki.leaf("expired", &["localhost", "127.0.0.1"], Validity::Expired);
    let other_name = pki.leaf("other", &["other.example"], Validity::Current);
    let good = pki.localhost();
    let openssl_style = pki.self_signed_ca("self-signed", &["127.0.0.1"]);
    let cases: [(&str, &tls::Leaf, &Path, &str, &str); 5] = [
        (
            "expired",
            &expired,
            &pki.ca_cert,
            "TLS: the server's certificate expired ",
            " days ago",
        ),
        (
            "another name",
            &other_name,
            &pki.ca_cert,
            "TLS: the server's certificate is not valid for 127.0.0.1 (it is for other.example)",
            "",
        ),
        (
            "unknown CA",
            &good,
            &stranger.ca_cert,
            "TLS: the server's certificate is not signed by a trusted CA (for a private or \
             test CA, trust its certificate as the CA file)",
            "",
        ),
        (
            "a self-signed CA certificate",
            &openssl_style,
            &openssl_style.cert,
            "TLS: the server's certificate is a CA certificate, which cannot identify a server \
             (self-signed with `openssl req -x509`? sign a server certificate with it instead)",
            "",
        ),
        (
            "a CA of the same name",
            &good,
            &twin.ca_cert,
            "TLS: the server's certificate is not signed by the trusted CA of its issuer's \
             name (another CA with the same name?)",
            "",
        ),
    ];
    for (what, leaf, ca, starts, ends) in cases {
        let terminator = TlsTerminator::start(leaf, echo.addr);
        let url = format!("wss://127.0.0.1:{}/", terminator.addr.port());
        let error = match Client::connect_with(&url, &options(trusting(ca))) {
            Ok(_) => panic!("{what}: the certificate was accepted"),
            Err(e) => e.to_string(),
        };
        assert!(
            error.starts_with(starts) && error.ends_with(ends) && !error.contains('\n'),
            "{what}: {error:?}"
        );
        // The client said so to the server with an alert before hanging up.
        match terminator.next_handshake() {
            Handshake::Failed(why) => assert!(why.contains("alert"), "{what}: {why}"),
            done => panic!("{what}: the terminator saw {done:?}"),
        }
        // `insecure` takes any certificate: the connection works, encrypted.
        let mut client = Client::connect_with(&url, &options(INSECURE))
            .unwrap_or_else(|e| panic!("{what}, insecure: {e}"));
        client.send_text(what).expect("send");
        assert_eq!(
            client.recv_message().expect("echo"),
            Received::Text(what.into())
        );
    }
}

/// `wsloop client URL ARGS` with `env`, one line on standard input and then its end; the
/// first line it printed and the whole output.
fn run_client(url: &str, args: &[&str], env: &[(&str, &Path)]) -> (String, Output) {
    let mut child = Command::new(wsloop_binary())
        .args(["client", url])
        .args(args)
        .envs(env.iter().copied())
        .env_remove("SSL_CERT_DIR")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the client");
    let mut stdin = child.stdin.take().expect("stdin piped");
    writeln!(stdin, "a line over TLS").expect("write a line");
    let mut first = String::new();
    BufReader::new(child.stdout.as_mut().expect("stdout piped"))
        .read_line(&mut first)
        .expect("read stdout");
    drop(stdin);
    (first, child.wait_with_output().expect("the client exits"))
}

#[test]
fn client_command_trusts_a_ca_file_or_the_system_and_insecure_warns() {
    let pki = TestPki::new("client-cli");
    let echo = Server::echo(&[]);
    let good = TlsTerminator::start(&pki.localhost(), echo.addr);
    let url = format!("wss://localhost:{}/", good.addr.port());
    let ca = pki.ca_cert.to_str().expect("UTF-8 path");

    // --ca: the test CA instead of the system's.
    let (line, output) = run_client(&url, &["--ca", ca], &[]);
    assert_eq!(line, "a line over TLS\n");
    assert_eq!(output.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with(&format!("connected to {url}\n")),
        "{stderr}"
    );

    // Without --ca, the system's CAs: here the store named by SSL_CERT_FILE holds the test CA.
    let (line, output) = run_client(&url, &[], &[("SSL_CERT_FILE", &pki.ca_cert)]);
    assert_eq!(line, "a line over TLS\n");
    assert_eq!(output.status.code(), Some(0));

    // An expired certificate: exit 1 with one line saying so.
    let expired = pki.leaf("expired", &["localhost"], Validity::Expired);
    let stale = TlsTerminator::start(&expired, echo.addr);
    let url = format!("wss://localhost:{}/", stale.addr.port());
    let (line, output) = run_client(&url, &["--ca", ca], &[]);
    assert_eq!(line, "");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let prefix = format!("cannot connect to {url}: TLS: the server's certificate expired ");
    assert!(
        stderr.starts_with(&prefix)
            && stderr.ends_with(" days ago\n")
            && stderr.lines().count() == 1,
        "{stderr:?}"
    );

    // --insecure connects anyway, after a warning.
    let (line, output) = run_client(&url, &["--insecure"], &[]);
    assert_eq!(line, "a line over TLS\n");
    assert_eq!(output.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        stderr.lines().next(),
        Some(wsloop::client::tls::INSECURE_WARNING),
        "{stderr}"
    );
}

#[test]
fn client_command_refuses_a_bad_ca_file_at_start() {
    let pki = TestPki::new("client-bad-ca");
    let leaf = pki.localhost();
    let not_a_ca = std::fs::read_to_string(&leaf.key).expect("read the key");
    let key_only = pki.dir().join("key-only.pem");
    std::fs::write(&key_only, not_a_ca).expect("write");
    let missing = pki.dir().join("missing.pem");
    let ca = pki.ca_cert.to_str().expect("UTF-8 path");
    let cases: [(&[&str], &str); 3] = [
        (
            &["--ca", missing.to_str().expect("path")],
            "missing.pem: I/O error",
        ),
        (
            &["--ca", key_only.to_str().expect("path")],
            "key-only.pem: no PEM certificate in it",
        ),
        (&["--ca", ca, "--insecure"], "cannot be used with"),
    ];
    for (args, says) in cases {
        let output = Command::new(wsloop_binary())
            .args(["client", "wss://127.0.0.1:9/"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run the client");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}

/// The client against wsloop's own TLS (`--tls-cert`, `--tls-key`), no terminator between:
/// the library client's messages both ways, then `wsloop client wss://` with `--ca`.
#[test]
fn client_talks_to_wsloops_own_tls() {
    let pki = TestPki::new("client-own-tls");
    let leaf = pki.localhost();
    let (cert, key) = (
        leaf.cert.to_str().expect("UTF-8 path"),
        leaf.key.to_str().expect("UTF-8 path"),
    );
    let echo = Server::echo(&["--tls-cert", cert, "--tls-key", key]);
    let url = format!("wss://localhost:{}/", echo.addr.port());

    let mut client =
        Client::connect_with(&url, &options(trusting(&pki.ca_cert))).expect("connect over TLS");
    client.send_text("héllo over wss").expect("send text");
    assert_eq!(
        client.recv_message().expect("echo"),
        Received::Text("héllo over wss".into())
    );
    let big = vec![0xA5; 300 * 1024];
    client.send_binary(&big).expect("send binary");
    assert_eq!(client.recv_message().expect("echo"), Received::Binary(big));
    // The echo server answers the close with its code and no reason.
    client.close(1000, "done").expect("close");
    assert_eq!(
        client.recv().expect("close reply"),
        Received::Close(Some(1000), String::new())
    );

    let ca = pki.ca_cert.to_str().expect("UTF-8 path");
    let (line, output) = run_client(&url, &["--ca", ca], &[]);
    assert_eq!(line, "a line over TLS\n");
    assert_eq!(output.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with(&format!("connected to {url}\n")),
        "{stderr}"
    );
}
