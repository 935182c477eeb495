//! Signed tokens at the handshake and in-band (issue 15), on the simulation: tokens are signed
//! here, at test time, with HS256 and ES256; every refusal has its exact 401 or 4001 close;
//! the in-band deadline and a token's expiry run on the virtual clock.
#![cfg(feature = "auth")]

mod common;

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use wsloop::app::access::{unix_now, Access};
use wsloop::app::auth::jwt::JwtVerifier;
use wsloop::app::serve::{Serve, ServeConfig};
use wsloop::server::sim::{Sim, SimPeer};
use wsloop::server::Config;

use common::raw::{OutFrame, RawClient};
use common::{http_exchange, upgrade_request, Server, TempFile};

const SECOND: Duration = Duration::from_secs(1);
const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-test";
const AUTH_TIMEOUT: Duration = Duration::from_secs(10);

fn upgrade(target: &str, extra: &str) -> Vec<u8> {
    format!(
        "GET {target} HTTP/1.1\r\nHost: sim\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
    .into_bytes()
}

/// A token signed with HS256 and [`SECRET`].
fn hs256(claims: &Value) -> String {
    sign(Algorithm::HS256, claims, &hmac_key(SECRET))
}

/// An HMAC key for signing test tokens.
fn hmac_key(secret: &[u8]) -> EncodingKey {
    EncodingKey::from_secret(secret).expect("HMAC key")
}

fn sign(alg: Algorithm, claims: &Value, key: &EncodingKey) -> String {
    encode(&Header::new(alg), claims, key).expect("sign a test token")
}

/// Claims valid for an hour.
fn claims(sub: &str) -> Value {
    json!({"sub": sub, "exp": unix_now() + 3600})
}

fn server(access: Access) -> Sim<Serve> {
    let config = ServeConfig {
        access,
        auth_timeout: AUTH_TIMEOUT,
        ..ServeConfig::default()
    };
    Sim::new(Config::default(), Serve::new(config))
}

fn hs256_server() -> Sim<Serve> {
    server(Access {
        jwt: Some(JwtVerifier::from_secret(SECRET).expect("secret")),
        ..Access::default()
    })
}

/// The frames in bytes the server wrote: (opcode, payload). Server frames are unmasked.
fn frames(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while bytes.len() >= 2 {
        let opcode = bytes[0] & 0x0f;
        let (len, start) = match bytes[1] & 0x7f {
            126 => (u16::from_be_bytes([bytes[2], bytes[3]]) as usize, 4),
            127 => panic!("no test message is that long"),
            n => (n as usize, 2),
        };
        out.push((opcode, bytes[start..start + len].to_vec()));
        bytes = &bytes[start + len..];
    }
    assert!(bytes.is_empty(), "a partial frame: {bytes:?}");
    out
}

/// The JSON messages the server wrote to `peer` since the last look.
fn messages(sim: &mut Sim<Serve>, peer: &SimPeer) -> Vec<Value> {
    frames(&sim.take(peer))
        .into_iter()
        .map(|(opcode, payload)| {
            assert_eq!(opcode, 1, "a text frame: {payload:?}");
            serde_json::from_slice(&payload).expect("JSON")
        })
        .collect()
}

/// The one close frame the server wrote to `peer`: (code, reason).
fn close(sim: &mut Sim<Serve>, peer: &SimPeer) -> (u16, String) {
    let frames = frames(&sim.take(peer));
    match frames.as_slice() {
        [(8, payload)] => (
            u16::from_be_bytes([payload[0], payload[1]]),
            String::from_utf8_lossy(&payload[2..]).into_owned(),
        ),
        other => panic!("expected one close frame, got {other:?}"),
    }
}

fn send(sim: &mut Sim<Serve>, peer: &SimPeer, message: &Value) {
    sim.send(peer, &OutFrame::text(message.to_string()).encode());
}

/// Opens a connection with `extra` headers; returns it and its `welcome`.
fn join(sim: &mut Sim<Serve>, target: &str, extra: &str) -> (SimPeer, Value) {
    let peer = sim.connect();
    sim.send(&peer, &upgrade(target, extra));
    let reply = sim.take(&peer);
    let head_end = reply
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head")
        + 4;
    let head = String::from_utf8_lossy(&reply[..head_end]).into_owned();
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    let welcome = frames(&reply[head_end..]);
    let welcome: Value = serde_json::from_slice(&welcome[0].1).expect("welcome JSON");
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    (peer, welcome)
}

/// The response to an upgrade that must be refused: (head, body).
fn refused(sim: &mut Sim<Serve>, target: &str, extra: &str) -> (String, String) {
    let peer = sim.connect();
    sim.send(&peer, &upgrade(target, extra));
    let reply = String::from_utf8(sim.take(&peer)).expect("UTF-8 response");
    assert!(sim.is_closed_by_server(&peer), "closed after the answer");
    let (head, body) = reply.split_once("\r\n\r\n").expect("a response head");
    (head.to_owned(), body.to_owned())
}

#[test]
fn an_hs256_token_names_the_user_and_limits_its_channels() {
    let mut sim = hs256_server();
    let token = hs256(
        &json!({"sub": "u-17", "name": "Ann", "exp": unix_now() + 3600,
                              "channels": ["news", "room:*"]}),
    );
    let (ann, welcome) = join(
        &mut sim,
        "/ws",
        &format!("Authorization: Bearer {token}\r\n"),
    );
    assert_eq!(welcome["user"], "u-17");
    assert_eq!(welcome["name"], "Ann");
    for channel in ["news", "room:1"] {
        send(
            &mut sim,
            &ann,
            &json!({"type": "subscribe", "channel": channel}),
        );
        let reply = messages(&mut sim, &ann);
        assert_eq!(reply.len(), 1, "{reply:?}");
        assert_eq!(reply[0]["type"], "subscribed", "{reply:?}");
        assert_eq!(reply[0]["channel"], channel, "{reply:?}");
    }
    for request in [
        json!({"type": "subscribe", "channel": "secret"}),
        json!({"type": "publish", "channel": "room", "content": "x"}),
    ] {
        send(&mut sim, &ann, &request);
        let reply = messages(&mut sim, &ann);
        assert_eq!(reply.len(), 1, "{reply:?}");
        assert_eq!(reply[0]["type"], "error", "{request}");
        assert_eq!(reply[0]["code"], "forbidden", "{request}");
    }
    // `from` is the token's name, whatever the client writes in its message.
    send(
        &mut sim,
        &ann,
        &json!({"type": "publish", "channel": "room:1", "content": "hi", "from": "Mallory"}),
    );
    let replies = messages(&mut sim, &ann);
    assert_eq!(replies[0]["type"], "message", "{replies:?}");
    assert_eq!(replies[0]["from"], "Ann", "{replies:?}");
    send(
        &mut sim,
        &ann,
        &json!({"type": "chat", "content": "hello", "from": "Mallory"}),
    );
    assert_eq!(messages(&mut sim, &ann)[0]["from"], "Ann");
}

#[test]
fn a_token_in_a_cookie_or_the_query_is_taken_too() {
    let mut sim = hs256_server();
    let token = hs256(&claims("bob"));
    let (_, welcome) = join(&mut sim, "/ws", &format!("Cookie: a=b; token={token}\r\n"));
    assert_eq!(welcome["user"], "bob");
    assert_eq!(welcome["name"], "bob", "no `name`: the user id");
    let (_, welcome) = join(&mut sim, &format!("/ws?token={token}"), "");
    assert_eq!(welcome["user"], "bob");
}

/// A token with this header (JSON) and claims, and the signature of another one: what an
/// attacker can make without the key.
fn unsigned(header: &Value, claims: &Value, signature: &str) -> String {
    format!(
        "{}.{}.{signature}",
        B64.encode(header.to_string()),
        B64.encode(claims.to_string())
    )
}

#[test]
fn every_bad_token_gets_401_with_its_reason() {
    let now = unix_now();
    let other_key = hmac_key(b"another secret, 32 bytes or more....");
    let genuine = hs256(&claims("ann"));
    let genuine_signature = genuine.rsplit('.').next().unwrap().to_owned();
    let cases = [
        (
            "bad signature",
            sign(Algorithm::HS256, &claims("ann"), &other_key),
            "bad signature",
        ),
        (
            "claims altered, signature kept",
            unsigned(
                &json!({"alg": "HS256", "typ": "JWT"}),
                &claims("root"),
                &genuine_signature,
            ),
            "bad signature",
        ),
        (
            "alg none",
            unsigned(&json!({"alg": "none", "typ": "JWT"}), &claims("ann"), ""),
            "wrong algorithm",
        ),
        (
            "HS384 where HS256 is configured",
            sign(Algorithm::HS384, &claims("ann"), &hmac_key(SECRET)),
            "wrong algorithm",
        ),
        (
            "expired",
            hs256(&json!({"sub": "ann", "exp": now - 120})),
            "token expired",
        ),
        (
            "not yet valid",
            hs256(&json!({"sub": "ann", "exp": now + 3600, "nbf": now + 120})),
            "token not yet valid",
        ),
        (
            "missing sub",
            hs256(&json!({"exp": now + 3600})),
            "claim \"sub\" missing",
        ),
        (
            "missing exp",
            hs256(&json!({"sub": "ann"})),
            "claim \"exp\" missing",
        ),
        (
            "sub not a string",
            hs256(&json!({"sub": 7, "exp": now + 3600})),
            "claim \"sub\" has the wrong type",
        ),
        (
            "name not a string",
            hs256(&json!({"sub": "a", "name": 1, "exp": now + 3600})),
            "claim \"name\" has the wrong type",
        ),
        ("not a token", "abc".to_owned(), "malformed token"),
        (
            "oversized",
            hs256(&json!({"sub": "ann", "exp": now + 3600, "pad": "x".repeat(4000)})),
            "token longer than 4096 bytes",
        ),
    ];
    let mut sim = hs256_server();
    for (what, token, reason) in cases {
        let (head, body) = refused(
            &mut sim,
            "/ws",
            &format!("Authorization: Bearer {token}\r\n"),
        );
        assert!(
            head.starts_with("HTTP/1.1 401 Unauthorized\r\n"),
            "{what}: {head}"
        );
        assert!(
            head.contains("\r\nWWW-Authenticate: Bearer error=\"invalid_token\""),
            "{what}: {head}"
        );
        assert_eq!(body, format!("invalid credential: {reason}\n"), "{what}");
    }
    assert_eq!(sim.server().stats().upgraded, 0);
}

#[test]
fn an_es256_token_is_checked_with_the_public_key_and_hs256_with_it_is_refused() {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("P-256 key");
    let public_pem = pair.public_key_pem();
    let private = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).expect("EC key");
    let verifier = JwtVerifier::from_public_key(public_pem.as_bytes()).expect("public key");
    assert_eq!(verifier.algorithm(), "ES256");
    let mut sim = server(Access {
        jwt: Some(verifier),
        ..Access::default()
    });
    let token = sign(
        Algorithm::ES256,
        &json!({"sub": "eve", "name": "Eve", "exp": unix_now() + 60}),
        &private,
    );
    let (_, welcome) = join(
        &mut sim,
        "/ws",
        &format!("Authorization: Bearer {token}\r\n"),
    );
    assert_eq!(welcome["name"], "Eve");
    // The classic confusion: an HS256 token whose "secret" is the public key.
    let forged = sign(
        Algorithm::HS256,
        &claims("eve"),
        &hmac_key(public_pem.as_bytes()),
    );
    let (head, body) = refused(
        &mut sim,
        "/ws",
        &format!("Authorization: Bearer {forged}\r\n"),
    );
    assert!(head.starts_with("HTTP/1.1 401 "), "{head}");
    assert_eq!(body, "invalid credential: wrong algorithm\n");
    // Another key pair's signature.
    let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("P-256 key");
    let other = EncodingKey::from_ec_pem(other.serialize_pem().as_bytes()).expect("EC key");
    let token = sign(Algorithm::ES256, &claims("eve"), &other);
    let (_, body) = refused(
        &mut sim,
        "/ws",
        &format!("Authorization: Bearer {token}\r\n"),
    );
    assert_eq!(body, "invalid credential: bad signature\n");
}

/// Opens a connection that carries no token: 101, and no welcome until it authenticates.
fn open_unauthenticated(sim: &mut Sim<Serve>) -> SimPeer {
    let peer = sim.connect();
    sim.send(&peer, &upgrade("/ws", ""));
    let reply = String::from_utf8(sim.take(&peer)).expect("UTF-8 head");
    assert!(reply.starts_with("HTTP/1.1 101 "), "{reply}");
    assert!(
        reply.ends_with("\r\n\r\n"),
        "nothing after the 101: {reply}"
    );
    peer
}

#[test]
fn the_first_message_may_carry_the_token() {
    let mut sim = hs256_server();
    let peer = open_unauthenticated(&mut sim);
    sim.advance(AUTH_TIMEOUT - Duration::from_millis(1));
    send(
        &mut sim,
        &peer,
        &json!({"type": "auth", "token": hs256(&claims("ann"))}),
    );
    let replies = messages(&mut sim, &peer);
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert_eq!(replies[0]["type"], "welcome");
    assert_eq!(replies[0]["user"], "ann");
    sim.advance(AUTH_TIMEOUT);
    assert!(
        sim.take(&peer).is_empty(),
        "authenticated: no deadline left"
    );
}

#[test]
fn without_an_auth_message_in_time_the_connection_is_closed_with_4001() {
    let mut sim = hs256_server();
    let peer = open_unauthenticated(&mut sim);
    sim.advance(AUTH_TIMEOUT - Duration::from_millis(1));
    assert!(sim.take(&peer).is_empty());
    sim.advance(Duration::from_millis(1));
    assert_eq!(
        close(&mut sim, &peer),
        (4001, "authentication timeout".into())
    );
}

#[test]
fn a_bad_in_band_token_or_another_first_message_is_closed_with_4001_and_its_reason() {
    let mut sim = hs256_server();
    let cases = [
        (
            json!({"type": "auth", "token": hs256(&json!({"sub": "a", "exp": unix_now() - 120}))}),
            "token expired",
        ),
        (
            json!({"type": "auth", "token": "x".repeat(5000)}),
            "token longer than 4096 bytes",
        ),
        (
            json!({"type": "auth", "token": 7}),
            "authentication required",
        ),
        (
            json!({"type": "chat", "content": "hi"}),
            "authentication required",
        ),
    ];
    for (first, reason) in cases {
        let peer = open_unauthenticated(&mut sim);
        send(&mut sim, &peer, &first);
        assert_eq!(close(&mut sim, &peer), (4001, reason.into()), "{first}");
    }
}

#[test]
fn a_token_expiring_while_open_closes_unless_refreshed_by_the_same_user() {
    let mut sim = hs256_server();
    let short = hs256(&json!({"sub": "ann", "exp": unix_now() + 60}));
    let (lapsing, _) = join(
        &mut sim,
        "/ws",
        &format!("Authorization: Bearer {short}\r\n"),
    );
    let (refreshed, _) = join(
        &mut sim,
        "/ws",
        &format!("Authorization: Bearer {short}\r\n"),
    );
    // 60 s and the 30 s leeway, give or take the second the clock may tick meanwhile.
    sim.advance(88 * SECOND);
    let later = unix_now() + 3600;
    send(
        &mut sim,
        &refreshed,
        &json!({"type": "auth", "token": hs256(&json!({"sub": "ann", "name": "Ann", "exp": later}))}),
    );
    assert_eq!(
        messages(&mut sim, &refreshed),
        [json!({"type": "authenticated", "user": "ann", "name": "Ann", "expires": later})]
    );
    send(
        &mut sim,
        &refreshed,
        &json!({"type": "auth", "token": hs256(&claims("bob"))}),
    );
    let reply = messages(&mut sim, &refreshed);
    assert_eq!(reply[0]["code"], "forbidden", "{reply:?}");
    send(
        &mut sim,
        &refreshed,
        &json!({"type": "auth", "token": "nope"}),
    );
    let reply = messages(&mut sim, &refreshed);
    assert_eq!(reply[0]["code"], "invalid_token", "{reply:?}");
    assert!(sim.take(&lapsing).is_empty(), "not before exp + leeway");
    sim.advance(3 * SECOND);
    assert_eq!(close(&mut sim, &lapsing), (4001, "token expired".into()));
    assert!(sim.take(&refreshed).is_empty(), "the refreshed token holds");
    // A message with the renamed user's name shows the refresh took.
    send(
        &mut sim,
        &refreshed,
        &json!({"type": "chat", "content": "still here"}),
    );
    assert_eq!(messages(&mut sim, &refreshed)[0]["from"], "Ann");
}

/// The process: the flag reads the secret file, and a token in the URL reaches no log line,
/// not even at `trace` (the request line is logged with `token=***`).
#[test]
fn a_token_in_the_url_is_redacted_from_every_log_line() {
    let secret = TempFile::new("jwt-secret", std::str::from_utf8(SECRET).unwrap());
    let server =
        Server::serve_logged(&["--jwt-secret-file", secret.path(), "--log-level", "trace"]);
    let valid = hs256(&claims("ann"));
    let expired = hs256(&json!({"sub": "ann", "exp": unix_now() - 120}));
    let mut raw = RawClient::connect_tcp(server.addr);
    raw.send_raw(upgrade_request(&format!("/ws?room=1&token={valid}"), "").as_bytes())
        .expect("send upgrade");
    let head = raw.read_http_head().expect("101");
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    let welcome: Value = serde_json::from_slice(&raw.read_frame().payload).expect("JSON");
    assert_eq!(welcome["user"], "ann");
    let (head, _) = http_exchange(
        server.addr,
        upgrade_request(&format!("/ws?token={expired}"), "").as_bytes(),
    );
    assert!(head.starts_with("HTTP/1.1 401 "), "{head}");
    // The lines were written before the answers; the pipe may still hold them.
    let log = server.wait_for_log("upgrade refused: token expired", Duration::from_secs(5));
    assert!(log.contains("GET /ws?room=1&token=***\n"), "{log}");
    for token in [&valid, &expired] {
        let signature = token.rsplit('.').next().unwrap();
        assert!(!log.contains(signature), "a token in the log:\n{log}");
    }
}

#[test]
fn bad_key_files_stop_the_server_with_status_2() {
    let short = TempFile::new("short-secret", "too short");
    let not_pem = TempFile::new("not-pem", "-----BEGIN NOTHING-----\n");
    for (flag, file, message) in [
        ("--jwt-secret-file", short.path(), "needs at least 32 bytes"),
        (
            "--jwt-public-key",
            not_pem.path(),
            "not an RSA or EC P-256 public key",
        ),
        (
            "--jwt-secret-file",
            "/nonexistent/secret",
            "/nonexistent/secret",
        ),
    ] {
        let output = std::process::Command::new(common::wsloop_binary())
            .args(["serve", "--listen", "127.0.0.1:0", flag, file])
            .output()
            .expect("run wsloop");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{flag}: {stderr}");
        assert!(
            stderr.contains(flag) && stderr.contains(message),
            "{flag}: {stderr}"
        );
    }
}
