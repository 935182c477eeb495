//! The opening handshake of RFC 6455 §4 as tables of literal request heads: what a server
//! accepts, which status each rule's violation earns, and the §1.3 accept-key vector.

use wsloop_proto::handshake::*;
use wsloop_proto::Limits;

const GOOD: &[u8] = b"GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Origin: http://example.com\r\nSec-WebSocket-Protocol: chat, superchat\r\n\
Sec-WebSocket-Version: 13\r\n\r\n";

fn parse(bytes: &[u8]) -> Result<Option<(Request, usize)>, HandshakeError> {
    HeadReader::new().read(bytes, &Limits::default())
}

fn upgrade(bytes: &[u8]) -> Result<Upgrade, HandshakeError> {
    let (req, _) = parse(bytes)?.expect("complete head");
    validate_upgrade(&req)
}

fn with_header_replaced(name: &str, line: &str) -> Vec<u8> {
    let text = std::str::from_utf8(GOOD).unwrap();
    let out: Vec<&str> = text
        .split("\r\n")
        .map(|l| if l.starts_with(name) { line } else { l })
        .collect();
    out.join("\r\n").into_bytes()
}

#[test]
fn rfc_1_3_accept_key() {
    // RFC 6455 §1.3: the sample nonce and its accept value.
    assert_eq!(
        accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );
}

#[test]
fn rfc_1_3_request_is_accepted_with_protocols() {
    let up = upgrade(GOOD).unwrap();
    assert_eq!(up.accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    assert_eq!(up.offered_protocols, ["chat", "superchat"]);
    let server = vec!["superchat".to_owned(), "chat".to_owned()];
    assert_eq!(
        select_protocol(&server, &up.offered_protocols),
        Some("superchat")
    );
    assert_eq!(
        select_protocol(&["mqtt".to_owned()], &up.offered_protocols),
        None
    );
}

#[test]
fn switching_protocols_bytes() {
    let mut out = Vec::new();
    write_switching_protocols(&mut out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", Some("chat"), None);
    assert_eq!(
        out,
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: chat\r\n\r\n"
    );
    out.clear();
    let ext = Some("permessage-deflate; server_no_context_takeover");
    write_switching_protocols(&mut out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", None, ext);
    assert!(out.ends_with(
        b"\r\nSec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\n\r\n"
    ));
}

#[test]
fn head_is_found_whatever_the_chunking_and_trailing_bytes_kept() {
    let mut stream = GOOD.to_vec();
    stream.extend_from_slice(&[0x81, 0x80]);
    let mut reader = HeadReader::new();
    let limits = Limits::default();
    for end in 1..stream.len() {
        match reader.read(&stream[..end], &limits).unwrap() {
            None => assert!(end < GOOD.len(), "head ended at {end}"),
            Some((_, len)) => {
                assert_eq!((end, len), (GOOD.len(), GOOD.len()));
                return;
            }
        }
    }
    panic!("head never completed");
}

#[test]
fn bare_lf_line_endings_are_accepted() {
    let text = std::str::from_utf8(GOOD).unwrap().replace("\r\n", "\n");
    assert!(upgrade(text.as_bytes()).is_ok());
}

#[test]
fn token_lists_are_case_insensitive() {
    let req = with_header_replaced("Connection", "connection: keep-alive, UPGRADE");
    assert!(upgrade(&req).is_ok());
    let req = with_header_replaced("Upgrade", "upgrade: WebSocket");
    assert!(upgrade(&req).is_ok());
}

#[test]
fn each_rule_has_its_error() {
    let cases: Vec<(Vec<u8>, HandshakeError)> = vec![
        (
            std::str::from_utf8(GOOD)
                .unwrap()
                .replacen("GET", "POST", 1)
                .into_bytes(),
            HandshakeError::NotGet,
        ),
        (
            std::str::from_utf8(GOOD)
                .unwrap()
                .replacen("HTTP/1.1", "HTTP/1.0", 1)
                .into_bytes(),
            HandshakeError::HttpVersion,
        ),
        (
            with_header_replaced("Host", "X-No-Host: 1"),
            HandshakeError::MissingHost,
        ),
        (
            with_header_replaced("Upgrade", "Upgrade: h2c"),
            HandshakeError::NotWebSocketUpgrade,
        ),
        (
            with_header_replaced("Connection", "Connection: keep-alive"),
            HandshakeError::MissingConnectionUpgrade,
        ),
        (
            with_header_replaced("Sec-WebSocket-Version", "Sec-WebSocket-Version: 8"),
            HandshakeError::UnsupportedVersion,
        ),
        (
            with_header_replaced("Sec-WebSocket-Key", "Sec-WebSocket-Key: c2hvcnQ="),
            HandshakeError::BadKey,
        ),
        (
            with_header_replaced("Sec-WebSocket-Key", "X-Key: 1"),
            HandshakeError::BadKey,
        ),
    ];
    // Hostile variants: keys that do not decode to 16 bytes, versions other than 13.
    let long_key = format!("Sec-WebSocket-Key: {}", "QUFB".repeat(1_000));
    let keys = [
        "Sec-WebSocket-Key: ",
        "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAA",
        "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAAA=",
        "Sec-WebSocket-Key: !!!!!!!!!!!!!!!!!!!!!!==",
        &long_key,
    ];
    let versions = ["12", "14", "1300", "13, 8", ""];
    let good = std::str::from_utf8(GOOD).unwrap();
    let cases = cases
        .into_iter()
        .chain(keys.iter().map(|line| {
            (
                with_header_replaced("Sec-WebSocket-Key", line),
                HandshakeError::BadKey,
            )
        }))
        .chain(versions.iter().map(|v| {
            let line = format!("Sec-WebSocket-Version: {v}");
            (
                with_header_replaced("Sec-WebSocket-Version", &line),
                HandshakeError::UnsupportedVersion,
            )
        }))
        .chain([
            (
                with_header_replaced("Sec-WebSocket-Version", "X-Version: 13"),
                HandshakeError::UnsupportedVersion,
            ),
            (
                good.replacen("GET", "PUT", 1).into_bytes(),
                HandshakeError::NotGet,
            ),
            (
                good.replacen("HTTP/1.1", "HTTP/2.0", 1).into_bytes(),
                HandshakeError::HttpVersion,
            ),
        ]);
    for (bytes, want) in cases {
        let what = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned();
        assert_eq!(upgrade(&bytes), Err(want.clone()), "{want:?}: {what}");
    }
    assert_eq!(HandshakeError::UnsupportedVersion.status(), 426);
    assert_eq!(HandshakeError::BadKey.status(), 400);
}

#[test]
fn oversized_head_is_431_before_it_ends() {
    let mut big = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
    big.resize(Limits::default().max_handshake_bytes + 1, b'a');
    assert_eq!(parse(&big), Err(HandshakeError::HeadTooLarge));
}

#[test]
fn too_many_headers_is_431() {
    let mut head = b"GET / HTTP/1.1\r\n".to_vec();
    for i in 0..(Limits::default().max_headers + 1) {
        head.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
    }
    head.extend_from_slice(b"\r\n");
    assert_eq!(parse(&head), Err(HandshakeError::TooManyHeaders));
}
