//! HTTP on the WebSocket port, by the book (RFC 9110, RFC 9112, RFC 6455 §4.2.1, §11.3), as
//! a table run on the simulation (`wsloop::server::sim`) against `wsloop serve`'s routes: each
//! row is a request head and the exact status line it must get, with the checks every row
//! shares (one response, `Connection: close`, the connection closed, the refusal counted).

use wsloop::app::serve::{Serve, ServeConfig};
use wsloop::server::sim::Sim;
use wsloop::server::{Config, Rejection};

const KEY: &str = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
const VERSION: &str = "Sec-WebSocket-Version: 13\r\n";
const UPGRADE: &str = "Upgrade: websocket\r\nConnection: Upgrade\r\n";

/// A request head: request line, header lines, blank line.
fn head(request_line: &str, headers: &str) -> String {
    format!("{request_line}\r\n{headers}\r\n")
}

fn upgrade_headers(extra: &str) -> String {
    format!("Host: sim\r\n{UPGRADE}{KEY}{VERSION}{extra}")
}

/// Sends `request` to a fresh `serve` and returns what came back, once the server closed.
fn exchange(request: &str) -> (String, Sim<Serve>) {
    let mut sim = Sim::new(Config::default(), Serve::new(ServeConfig::default()));
    let peer = sim.connect();
    sim.send(&peer, request.as_bytes());
    let answer = String::from_utf8_lossy(&sim.take(&peer)).into_owned();
    assert!(
        sim.is_closed_by_server(&peer),
        "{request:?}: the server closes after answering"
    );
    (answer, sim)
}

#[test]
fn requests_get_the_status_the_rfcs_prescribe() {
    // (what, request, status line, rejection counted)
    let rows: Vec<(&str, String, &str, Option<Rejection>)> = vec![
        (
            "RFC 9112 §3.2: HTTP/1.1 without Host",
            head("GET /healthz HTTP/1.1", ""),
            "HTTP/1.1 400 Bad Request",
            Some(Rejection::MissingHost),
        ),
        (
            "RFC 9112 §3.2: two Host lines",
            head("GET /healthz HTTP/1.1", "Host: a\r\nHost: b\r\n"),
            "HTTP/1.1 400 Bad Request",
            Some(Rejection::BadHost),
        ),
        (
            "RFC 9112 §3.2: an upgrade with two Host lines",
            head(
                "GET /ws HTTP/1.1",
                &format!("Host: a\r\n{}", upgrade_headers("")),
            ),
            "HTTP/1.1 400 Bad Request",
            Some(Rejection::BadHost),
        ),
        (
            "RFC 9112 §3.2: an invalid Host value",
            head("GET /healthz HTTP/1.1", "Host: a b/c\r\n"),
            "HTTP/1.1 400 Bad Request",
            Some(Rejection::BadHost),
        ),
        (
            "RFC 9112 §3.2.1: a target that is not origin-form",
            head("GET healthz HTTP/1.1", "Host: sim\r\n"),
            "HTTP/1.1 400 Bad Request",
            Some(Rejection::BadTarget),
        ),
        (
            "RFC 9112 §3.2.4: asterisk-form only with OPTIONS",
            head("GET * HTTP/1.1", "Host: sim\r\n"),
            "HTTP/1.1 400 Bad Request",
            Some(Rejection::BadTarget),
        ),
        (
            "RFC 6455 §11.3.1: two Sec-WebSocket-Key lines",
            head(
                "GET /ws HTTP/1.1",
                &upgrade_headers("Sec-WebSocket-Key: AQIDBAUGBwgJCgsMDQ4PEA==\r\n"),
            ),
            "HTTP/1.1 400 Bad Request",
            Some(Rejection::RepeatedHeader),
        ),
        (
            "RFC 6455 §11.3.5: two Sec-WebSocket-Version lines",
            head("GET /ws HTTP/1.1", &upgrade_headers(VERSION)),
            "HTTP/1.1 400 Bad Request",
            Some(Rejection::RepeatedHeader),
        ),
        (
            "an upgrade declaring a body (its bytes would be read as frames)",
            head(
                "GET /ws HTTP/1.1",
                &upgrade_headers("Content-Length: 5\r\n"),
            ),
            "HTTP/1.1 400 Bad Request",
            Some(Rejection::UpgradeWithBody),
        ),
        (
            "an upgrade with a chunked body",
            head(
                "GET /ws HTTP/1.1",
                &upgrade_headers("Transfer-Encoding: chunked\r\n"),
            ),
            "HTTP/1.1 400 Bad Request",
            Some(Rejection::UpgradeWithBody),
        ),
        (
            "RFC 9110 §15.5.6: another method gets 405 with Allow",
            head("DELETE /healthz HTTP/1.1", "Host: sim\r\n"),
            "HTTP/1.1 405 Method Not Allowed",
            None,
        ),
        (
            "RFC 9112 §3.2.4: OPTIONS * is a valid target; the method is not served",
            head("OPTIONS * HTTP/1.1", "Host: sim\r\n"),
            "HTTP/1.1 405 Method Not Allowed",
            None,
        ),
        (
            "RFC 9110 §7.8: an Upgrade to another protocol is ignored: the page is served",
            head(
                "GET / HTTP/1.1",
                "Host: sim\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n",
            ),
            "HTTP/1.1 200 OK",
            None,
        ),
        (
            "RFC 9112 §3.2.2: a server MUST accept the absolute form",
            head("GET http://sim/healthz HTTP/1.1", "Host: sim\r\n"),
            "HTTP/1.1 200 OK",
            None,
        ),
        (
            "RFC 9112 §3.2: HTTP/1.0 needs no Host",
            head("GET /healthz HTTP/1.0", ""),
            "HTTP/1.1 200 OK",
            None,
        ),
        (
            "RFC 9110 §7.2: an empty Host is valid",
            head("GET /healthz HTTP/1.1", "Host:\r\n"),
            "HTTP/1.1 200 OK",
            None,
        ),
    ];
    for (what, request, status, rejection) in rows {
        let (answer, sim) = exchange(&request);
        let line = answer.lines().next().unwrap_or("");
        assert_eq!(line, status, "{what}: {answer:?}");
        assert!(
            answer.contains("\r\nConnection: close\r\n"),
            "{what}: {answer:?}"
        );
        let rejections = &sim.server().stats().rejections;
        match rejection {
            Some(reason) => assert_eq!(rejections.get(&reason), Some(&1), "{what}: {rejections:?}"),
            None => assert!(rejections.is_empty(), "{what}: {rejections:?}"),
        }
        if status.contains("405") {
            assert!(
                answer.contains("\r\nAllow: GET, HEAD\r\n"),
                "{what}: {answer:?}"
            );
        }
    }
}

#[test]
fn head_gets_the_headers_of_get_and_no_body() {
    for path in ["/healthz", "/readyz", "/", "/metrics", "/nowhere"] {
        let (get, _) = exchange(&head(&format!("GET {path} HTTP/1.1"), "Host: sim\r\n"));
        let (head_answer, _) = exchange(&head(&format!("HEAD {path} HTTP/1.1"), "Host: sim\r\n"));
        let (get_head, body) = get.split_once("\r\n\r\n").expect("a complete response");
        assert!(!body.is_empty(), "GET {path} has a body");
        // Same status line and header names (Content-Length included), no content.
        let names = |h: &str| -> Vec<String> {
            h.lines()
                .map(|l| l.split(':').next().unwrap_or("").to_owned())
                .collect()
        };
        assert!(
            head_answer.ends_with("\r\n\r\n"),
            "HEAD {path}: {head_answer:?}"
        );
        assert_eq!(
            names(head_answer.trim_end()),
            names(get_head),
            "HEAD {path}"
        );
        let length = |h: &str| {
            h.lines()
                .find_map(|l| l.strip_prefix("Content-Length: ").map(str::to_owned))
        };
        if !["/metrics", "/healthz", "/readyz"].contains(&path) {
            // The page and the 404 do not change between the two requests.
            assert_eq!(length(&head_answer), length(get_head), "HEAD {path}");
        }
    }
}

#[test]
fn an_upgrade_in_absolute_form_opens() {
    let request = head("GET http://sim/ws HTTP/1.1", &upgrade_headers(""));
    let mut sim = Sim::new(Config::default(), Serve::new(ServeConfig::default()));
    let peer = sim.connect();
    sim.send(&peer, request.as_bytes());
    let answer = String::from_utf8_lossy(&sim.take(&peer)).into_owned();
    assert!(
        answer.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{answer:?}"
    );
    assert!(
        answer.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        "{answer:?}"
    );
    assert!(!sim.is_closed_by_server(&peer));
}

/// An application that answers bodies later (`Answer::Later`): each `on_wake` answers the
/// requests waiting so far.
#[derive(Default)]
struct LaterAnswers {
    waiting: Vec<wsloop::server::ConnId>,
}

impl wsloop::server::Handler for LaterAnswers {
    fn on_request(
        &mut self,
        _request: &wsloop::proto::handshake::Request,
        _peer: std::net::SocketAddr,
        _listener: wsloop::server::Listener,
        _stats: &wsloop::server::Stats,
    ) -> wsloop::server::Route {
        wsloop::server::Route::ReadBody(64)
    }

    fn on_body(
        &mut self,
        _ctx: &mut wsloop::server::Ctx<'_>,
        id: wsloop::server::ConnId,
        _request: &wsloop::proto::handshake::Request,
        _body: &[u8],
    ) -> wsloop::server::Answer {
        self.waiting.push(id);
        wsloop::server::Answer::Later
    }

    fn on_message(
        &mut self,
        _ctx: &mut wsloop::server::Ctx<'_>,
        _id: wsloop::server::ConnId,
        _message: wsloop::proto::Message<'_>,
    ) {
    }

    fn on_wake(&mut self, ctx: &mut wsloop::server::Ctx<'_>) {
        for id in self.waiting.drain(..) {
            ctx.respond(id, &wsloop::server::HttpResponse::text(200, "later"));
        }
    }
}

/// A request answered later gets its answer when the application gives it; one left
/// unanswered gets 503 at the head's deadline, and an answer after that goes nowhere.
#[test]
fn an_answer_given_later_arrives_and_a_missing_one_is_503_at_the_deadline() {
    let config = Config::default();
    let deadline = config.handshake_timeout;
    let mut sim = Sim::new(config, LaterAnswers::default());
    let post = "POST /x HTTP/1.1\r\nHost: sim\r\nContent-Length: 2\r\n\r\nhi";
    let answered = sim.connect();
    sim.send(&answered, post.as_bytes());
    assert!(
        sim.take(&answered).is_empty(),
        "no answer before the application's"
    );
    sim.wake();
    let answer = String::from_utf8(sim.take(&answered)).expect("UTF-8");
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.ends_with("\r\n\r\nlater\n"), "{answer}");
    assert!(sim.is_closed_by_server(&answered));

    let forgotten = sim.connect();
    sim.send(&forgotten, post.as_bytes());
    sim.advance(deadline);
    let answer = String::from_utf8(sim.take(&forgotten)).expect("UTF-8");
    assert!(
        answer.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{answer}"
    );
    // The application's late answer finds the request answered: nothing more is sent.
    sim.wake();
    assert!(sim.take(&forgotten).is_empty());
}
