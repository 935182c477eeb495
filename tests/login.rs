//! The built-in page's login (issue 15): `POST /login` with and without a users file,
//! `POST /logout`, `GET /session`, the session cookie at the upgrade (tampered, or signed by
//! another process's key), and request bodies read strictly: on the simulation, then two
//! processes with and without a shared `--session-secret-file`.
#![cfg(feature = "auth")]

mod common;

use std::time::Duration;

use serde_json::{json, Value};
use wsloop::app::access::Access;
use wsloop::app::auth::session::SessionKey;
use wsloop::app::auth::users::Users;
use wsloop::app::serve::{Serve, ServeConfig};
use wsloop::server::sim::Sim;
use wsloop::server::Config;

use common::{http_exchange, upgrade_request, Server, TempFile};

/// argon2id of "secret" with small parameters (m=64 KiB, t=1), so the tests are quick.
const ANN_SECRET: &str =
    "$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHRzYWx0$Sm3MnLdCFk0Af+croKgebRoqqmhbKd88iiW3yUOXn78";

fn server(users: Option<&str>) -> Sim<Serve> {
    let access = Access {
        sessions: Some(SessionKey::random().expect("key")),
        users: users.map(|u| Users::parse(u).expect("users")),
        ..Access::default()
    };
    let config = ServeConfig {
        access,
        allowed_origins: vec!["http://chat.example".into()],
        ..ServeConfig::default()
    };
    Sim::new(Config::default(), Serve::new(config))
}

/// An HTTP answer: status line, headers, body.
#[derive(Debug)]
struct Reply {
    head: String,
    body: String,
}

impl Reply {
    fn parse(bytes: &[u8]) -> Reply {
        let text = String::from_utf8(bytes.to_vec()).expect("UTF-8 answer");
        let (head, body) = text.split_once("\r\n\r\n").expect("a head");
        Reply {
            head: head.to_owned(),
            body: body.to_owned(),
        }
    }

    fn status(&self) -> u16 {
        self.head[9..12].parse().expect("a status")
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {self:?}"))
    }

    /// The session cookie's value from `Set-Cookie`.
    fn session(&self) -> String {
        let set = self.header("Set-Cookie").expect("Set-Cookie");
        let value = set.split(';').next().expect("name=value");
        value
            .strip_prefix("wsloop_session=")
            .expect("the session cookie")
            .to_owned()
    }
}

/// Sends `request` on a new connection and reads the whole answer (the server closes after).
fn exchange(sim: &mut Sim<Serve>, request: &[u8]) -> Reply {
    let peer = sim.connect();
    sim.send(&peer, request);
    let reply = Reply::parse(&sim.take(&peer));
    assert!(sim.is_closed_by_server(&peer), "closed after {reply:?}");
    reply
}

fn post(path: &str, content_type: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: sim\r\nContent-Type: {content_type}\r\n\
Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn login(sim: &mut Sim<Serve>, body: &Value) -> Reply {
    exchange(sim, &post("/login", "application/json", &body.to_string()))
}

fn session(sim: &mut Sim<Serve>, cookie: &str) -> Reply {
    let request =
        format!("GET /session HTTP/1.1\r\nHost: sim\r\nCookie: wsloop_session={cookie}\r\n\r\n");
    exchange(sim, request.as_bytes())
}

/// The upgrade with this session cookie: the welcome, or the refusal's status and body.
fn upgrade(sim: &mut Sim<Serve>, cookie: Option<&str>) -> Result<Value, (u16, String)> {
    let extra = cookie.map_or(String::new(), |c| format!("Cookie: wsloop_session={c}\r\n"));
    let peer = sim.connect();
    sim.send(&peer, upgrade_request("/ws", &extra).as_bytes());
    let bytes = sim.take(&peer);
    let end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head")
        + 4;
    let head = String::from_utf8_lossy(&bytes[..end]);
    if !head.starts_with("HTTP/1.1 101 ") {
        let reply = Reply::parse(&bytes);
        return Err((reply.status(), reply.body));
    }
    // The welcome is one short text frame: 0x81, its length, the JSON.
    let frame = &bytes[end..];
    assert_eq!(frame[0], 0x81, "a text frame");
    Ok(serde_json::from_slice(&frame[2..2 + frame[1] as usize]).expect("welcome JSON"))
}

#[test]
fn a_nickname_login_sets_a_strict_http_only_cookie_that_the_upgrade_carries() {
    let mut sim = server(None);
    let reply = login(&mut sim, &json!({"name": " Ann "}));
    assert_eq!(reply.status(), 200, "{reply:?}");
    assert_eq!(reply.json(), json!({"user": "Ann", "name": "Ann"}));
    let set = reply.header("Set-Cookie").expect("Set-Cookie");
    assert!(
        set.ends_with("; Path=/; Max-Age=86400; HttpOnly; SameSite=Strict"),
        "{set}"
    );
    let cookie = reply.session();
    let me = session(&mut sim, &cookie);
    assert_eq!(me.status(), 200);
    assert_eq!(
        me.json(),
        json!({"user": "Ann", "name": "Ann", "login": "nickname"})
    );
    let welcome = upgrade(&mut sim, Some(&cookie)).expect("upgrade");
    assert_eq!(
        (&welcome["user"], &welcome["name"]),
        (&json!("Ann"), &json!("Ann"))
    );
    // Without a users file a login is not required: no cookie, the id is the name.
    let anonymous = upgrade(&mut sim, None).expect("upgrade");
    assert_eq!(anonymous["name"], anonymous["id"]);
    let nobody = exchange(&mut sim, b"GET /session HTTP/1.1\r\nHost: sim\r\n\r\n");
    assert_eq!(nobody.status(), 401);
    assert_eq!(
        nobody.json(),
        json!({"error": "not logged in", "login": "nickname"})
    );
}

#[test]
fn with_a_users_file_the_password_is_checked_and_a_login_required() {
    let mut sim = server(Some(&format!("ann {ANN_SECRET}\n")));
    for body in [
        json!({"name": "ann", "password": "Secret"}),
        json!({"name": "ann"}),
        json!({"name": "bob", "password": "secret"}),
    ] {
        let reply = login(&mut sim, &body);
        assert_eq!(reply.status(), 401, "{body}: {reply:?}");
        assert_eq!(reply.json(), json!({"error": "wrong name or password"}));
        assert_eq!(reply.header("Set-Cookie"), None, "{body}");
    }
    assert_eq!(
        upgrade(&mut sim, None),
        Err((401, "not logged in\n".into())),
        "no session, no connection"
    );
    let reply = login(&mut sim, &json!({"name": "ann", "password": "secret"}));
    assert_eq!(reply.status(), 200, "{reply:?}");
    let welcome = upgrade(&mut sim, Some(&reply.session())).expect("upgrade");
    assert_eq!(welcome["user"], "ann");
    assert_eq!(
        session(&mut sim, &reply.session()).json()["login"],
        "password"
    );
}

#[test]
fn a_tampered_cookie_or_one_of_another_key_is_refused() {
    let mut sim = server(None);
    let cookie = login(&mut sim, &json!({"name": "ann"})).session();
    let (signed, tag) = cookie.rsplit_once('.').unwrap();
    // Another name in the payload, the tag kept.
    let payload = signed.strip_prefix("v1.").unwrap();
    let other_payload = payload.replacen('h', "i", 1);
    let tampered = format!("v1.{other_payload}.{tag}");
    assert_ne!(tampered, cookie);
    let foreign = SessionKey::random()
        .unwrap()
        .sign("ann", "ann", u64::MAX / 2);
    for (what, value, reason) in [
        ("tampered", tampered.as_str(), "bad signature"),
        ("another key", &foreign, "bad signature"),
        ("garbage", "abc", "malformed token"),
    ] {
        assert_eq!(
            upgrade(&mut sim, Some(value)),
            Err((401, format!("invalid credential: {reason}\n"))),
            "{what}"
        );
        let me = session(&mut sim, value);
        assert_eq!(me.status(), 401, "{what}");
    }
}

#[test]
fn logout_removes_the_cookie() {
    let mut sim = server(None);
    let reply = exchange(&mut sim, &post("/logout", "application/json", "{}"));
    assert_eq!(reply.status(), 200);
    assert_eq!(reply.json(), json!({"logged_out": true}));
    assert_eq!(
        reply.header("Set-Cookie"),
        Some("wsloop_session=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict")
    );
}

#[test]
fn login_bodies_are_bounded_and_parsed_strictly() {
    let mut sim = server(None);
    let long = format!(r#"{{"name":"{}"}}"#, "a".repeat(1100));
    let cases: [(&str, Vec<u8>, u16, &str); 9] = [
        ("form", post("/login", "application/x-www-form-urlencoded", "name=ann"), 415, r#"{"error":"send Content-Type: application/json"}"#),
        ("not an object", post("/login", "application/json", "[1]"), 400, r#"{"error":"the body must be a JSON object"}"#),
        ("unknown field", post("/login", "application/json", r#"{"name":"a","admin":true}"#), 400, r#"{"error":"unknown field \"admin\""}"#),
        ("name not a string", post("/login", "application/json", r#"{"name":1}"#), 400, r#"{"error":"field \"name\" must be a string"}"#),
        ("empty name", post("/login", "application/json", r#"{"name":"  "}"#), 400, r#"{"error":"a name is 1 to 32 bytes long"}"#),
        ("control character", post("/login", "application/json", r#"{"name":"a\u0007"}"#), 400, r#"{"error":"a name has no control characters and no spaces at either end"}"#),
        ("a password without users", post("/login", "application/json", r#"{"name":"a","password":"x"}"#), 400, r#"{"error":"no passwords here: choose a nickname"}"#),
        ("too long", post("/login", "application/json", &long), 413, "the body is 1111 bytes; at most 1024 are taken here\n"),
        (
            "chunked",
            b"POST /login HTTP/1.1\r\nHost: sim\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"a\":\r\n0\r\n\r\n".to_vec(),
            411,
            "send the body with a Content-Length (chunked bodies are not read here)\n",
        ),
    ];
    for (what, request, status, body) in cases {
        let reply = exchange(&mut sim, &request);
        assert_eq!(
            (reply.status(), reply.body.as_str()),
            (status, body),
            "{what}"
        );
    }
    let other_origin = b"POST /login HTTP/1.1\r\nHost: sim\r\nOrigin: http://evil.example\r\n\
Content-Type: application/json\r\nContent-Length: 14\r\n\r\n{\"name\":\"ann\"}";
    let reply = exchange(&mut sim, other_origin);
    assert_eq!(
        (reply.status(), reply.body.as_str()),
        (403, r#"{"error":"origin not allowed"}"#)
    );
}

#[test]
fn a_body_may_come_in_pieces_and_after_100_continue_but_not_after_the_deadline() {
    let mut sim = server(None);
    let head = b"POST /login HTTP/1.1\r\nHost: sim\r\nContent-Type: application/json\r\n\
Expect: 100-continue\r\nContent-Length: 14\r\n\r\n";
    let peer = sim.connect();
    sim.send(&peer, head);
    assert_eq!(sim.take(&peer), b"HTTP/1.1 100 Continue\r\n\r\n");
    sim.send(&peer, b"{\"name\":");
    assert!(sim.take(&peer).is_empty(), "half a body: no answer yet");
    sim.send(&peer, b"\"ann\"}");
    let reply = Reply::parse(&sim.take(&peer));
    assert_eq!(reply.status(), 200, "{reply:?}");
    // A body that stops short is dropped with the head's deadline (10 s by default).
    let slow = sim.connect();
    sim.send(
        &slow,
        &post("/login", "application/json", r#"{"name":"ann"}"#)[..100],
    );
    sim.advance(Duration::from_secs(10));
    assert!(sim.take(&slow).is_empty());
    assert!(sim.is_closed_by_server(&slow), "dropped at the deadline");
}

#[test]
fn with_tokens_there_is_no_login_here() {
    let tokens = wsloop::app::access::Tokens::parse("abc ann\n").unwrap();
    let access = Access {
        tokens: Some(tokens),
        sessions: Some(SessionKey::random().unwrap()),
        ..Access::default()
    };
    let mut sim = Sim::new(
        Config::default(),
        Serve::new(ServeConfig {
            access,
            ..ServeConfig::default()
        }),
    );
    let reply = login(&mut sim, &json!({"name": "ann"}));
    assert_eq!(reply.status(), 404, "{reply:?}");
    let reply = exchange(&mut sim, b"GET /session HTTP/1.1\r\nHost: sim\r\n\r\n");
    assert_eq!(
        reply.json(),
        json!({"error": "not logged in", "login": "token"})
    );
}

/// Logs in at one process and upgrades at another: refused with a per-process key,
/// accepted when both read one `--session-secret-file`.
#[test]
fn a_cookie_holds_on_another_process_only_with_the_shared_secret() {
    let users = TempFile::new("login-users", &format!("ann {ANN_SECRET}\n"));
    let secret = TempFile::new("login-secret", "a session secret of 32 bytes or more");
    let own = |extra: &[&str]| {
        let mut args = vec!["--users-file", users.path()];
        args.extend_from_slice(extra);
        Server::serve(&args)
    };
    let shared = ["--session-secret-file", secret.path()];
    for (a, b, accepted) in [
        (own(&[]), own(&[]), false),
        (own(&shared), own(&shared), true),
    ] {
        let body = r#"{"name":"ann","password":"secret"}"#;
        let request = format!(
            "POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let (head, _) = http_exchange(a.addr, request.as_bytes());
        assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
        let cookie = head
            .lines()
            .find_map(|l| l.strip_prefix("Set-Cookie: "))
            .and_then(|c| c.split(';').next())
            .expect("Set-Cookie")
            .to_owned();
        let (head, _) = http_exchange(
            b.addr,
            upgrade_request("/ws", &format!("Cookie: {cookie}\r\n")).as_bytes(),
        );
        let want = if accepted {
            "HTTP/1.1 101 "
        } else {
            "HTTP/1.1 401 "
        };
        assert!(head.starts_with(want), "shared secret {accepted}: {head}");
    }
}

/// A password check (argon2, slow by design) runs off the event loop: while one login's hash
/// is being computed, other requests are answered; then the login gets its answer.
#[test]
fn a_password_check_does_not_hold_up_other_clients() {
    use argon2::{Algorithm, Argon2, Params, PasswordHasher, Version};
    use std::io::{Read, Write};
    use std::net::TcpStream;
    // Costly on purpose (16 MiB, 8 passes): hundreds of milliseconds even in a release build.
    let params = Params::new(16 * 1024, 8, 1, None).expect("params");
    let slow = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_with_salt(b"secret", b"a salt of 16+ bytes")
        .expect("hash")
        .to_string();
    let users = TempFile::new("login-slow-users", &format!("ann {slow}\n"));
    let server = Server::serve(&["--users-file", users.path()]);
    let body = r#"{"name":"ann","password":"secret"}"#;
    let request = format!(
        "POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut login = TcpStream::connect(server.addr).expect("connect");
    login.write_all(request.as_bytes()).expect("send the login");
    // Another client meanwhile: answered while the hash is being computed.
    let (head, _) = http_exchange(server.addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    login.set_nonblocking(true).expect("nonblocking");
    let mut byte = [0u8; 1];
    let early = login.read(&mut byte);
    assert!(
        matches!(&early, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the login was answered before the other client: {early:?}"
    );
    login.set_nonblocking(false).expect("blocking");
    login
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let mut answer = String::new();
    login
        .read_to_string(&mut answer)
        .expect("the login's answer");
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    assert!(
        answer.contains("\r\nSet-Cookie: wsloop_session="),
        "{answer}"
    );
}
