//! What an operator's tools read from `wsloop serve`: `/metrics` through a real Prometheus
//! and OpenMetrics parser (Python `prometheus_client`), and the readiness page `/readyz`
//! through a stop and without Redis.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{http_exchange, Server};

/// `GET path` on a fresh connection: status line and body.
fn get(server: &Server, path: &str) -> (String, String) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let (head, body) = http_exchange(server.addr, request.as_bytes());
    let status = head.lines().next().unwrap_or_default().to_owned();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Polls `path` until its status line is `want` (at most 10 s).
fn wait_for_status(server: &Server, path: &str, want: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = get(server, path);
        if status == want {
            return body;
        }
        assert!(Instant::now() < deadline, "{path} stayed {status}: {body}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `python3` that can import prometheus_client, or a skip (a failure in CI).
fn python_with_prometheus_client() -> Option<PathBuf> {
    let python = common::find_program("python3", "the metrics page check")?;
    let probe = Command::new(&python)
        .args(["-c", "import prometheus_client.openmetrics.parser"])
        .stderr(Stdio::null())
        .status();
    if matches!(probe, Ok(s) if s.success()) {
        return Some(python);
    }
    common::skip_or_fail(
        "Python module prometheus_client not importable (pip install -r tests/interop/requirements.txt)",
    );
    None
}

/// Runs tests/metrics/check_page.py `format` on `page`: the families as the parser saw them.
fn parse_page(python: &Path, format: &str, page: &str) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/metrics/check_page.py");
    let mut child = Command::new(python)
        .arg(script)
        .arg(format)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run check_page.py");
    child
        .stdin
        .take()
        .expect("stdin piped")
        .write_all(page.as_bytes())
        .expect("write the page");
    let output = child.wait_with_output().expect("check_page.py output");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the {format} parser refused the page: {stderr}\n{page}"
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn metrics_page_passes_the_prometheus_and_openmetrics_parsers() {
    let Some(python) = python_with_prometheus_client() else {
        return;
    };
    let server = Server::serve(&[]);
    // One rejection, so that a labelled series with a value other than 0 exists.
    let _ = http_exchange(
        server.addr,
        common::upgrade_request("/elsewhere", "").as_bytes(),
    );
    let request = |accept: &str| {
        let request =
            format!("GET /metrics HTTP/1.1\r\nHost: x\r\n{accept}Connection: close\r\n\r\n");
        let (head, body) = http_exchange(server.addr, request.as_bytes());
        (head, String::from_utf8_lossy(&body).into_owned())
    };
    let (head, text) = request("");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8"),
        "{head}"
    );
    // What Prometheus sends by default.
    let (head, open) = request(
        "Accept: application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.4\r\n",
    );
    assert!(
        head.contains("Content-Type: application/openmetrics-text; version=1.0.0; charset=utf-8"),
        "{head}"
    );
    assert!(open.ends_with("# EOF\n"), "{open}");
    let text_families = parse_page(&python, "text", &text);
    let open_families = parse_page(&python, "openmetrics", &open);
    // `family type samples`, as each parser understood them (both name a counter's family
    // without `_total`: a gauge `wsloop_connections` would clash with the counter).
    for families in [&text_families, &open_families] {
        for expected in [
            "wsloop_open_connections gauge 1",
            "wsloop_connections counter 1",
            "wsloop_build_info gauge 1",
            "process_cpu_seconds counter 1",
            "process_resident_memory_bytes gauge 1",
            "process_open_fds gauge 1",
            "process_max_fds gauge 1",
            "process_start_time_seconds gauge 1",
            // Every rejection reason and every standard close code, from the start.
            "wsloop_handshake_rejections counter 22",
            "wsloop_closes counter 11",
        ] {
            assert!(
                families.lines().any(|l| l == expected),
                "no {expected:?} in:\n{families}"
            );
        }
    }
    assert!(
        text.contains(&format!(
            "wsloop_build_info{{version=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
    assert!(text.contains("wsloop_handshake_rejections_total{reason=\"not_found\"} 1\n"));
    assert!(text.contains("wsloop_handshake_rejections_total{reason=\"unauthorized\"} 0\n"));
}

#[test]
fn readyz_says_not_ready_from_the_stop_signal_while_still_serving() {
    let mut server = Server::serve(&["--shutdown-delay", "30s"]);
    let (status, body) = get(&server, "/readyz");
    assert_eq!(
        (status.as_str(), body.as_str()),
        ("HTTP/1.1 200 OK", r#"{"status":"ready"}"#)
    );
    let _ = Command::new("kill")
        .args(["-TERM", &server.pid().to_string()])
        .status();
    let body = wait_for_status(&server, "/readyz", "HTTP/1.1 503 Service Unavailable");
    assert_eq!(body, r#"{"status":"draining"}"#);
    // Still alive and still taking clients until the delay is over: only new ones should
    // go elsewhere.
    assert_eq!(get(&server, "/healthz").0, "HTTP/1.1 200 OK");
    let mut client = wsloop::client::Client::connect(&server.url("/ws")).expect("upgrade");
    client.send_text(r#"{"type":"ping"}"#).expect("send");
    assert!(server.is_running());
    // A second signal ends it at once.
    assert_eq!(
        server.signal_and_wait("TERM", Duration::from_secs(10)),
        Some(1)
    );
}

#[cfg(feature = "redis")]
#[test]
fn readyz_says_not_ready_while_redis_is_unreachable() {
    // Nothing listens on the port of a listener just closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let redis = format!("redis://127.0.0.1:{port}");
    let server = Server::serve(&["--redis", &redis]);
    let body = wait_for_status(&server, "/readyz", "HTTP/1.1 503 Service Unavailable");
    assert_eq!(body, r#"{"status":"redis_unreachable"}"#);
    // Liveness stays 200: the process is fine, and restarting it would not bring Redis back.
    let (status, body) = get(&server, "/healthz");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(body.contains(r#""status":"degraded""#), "{body}");
}
