//! `wsloop-bench`: each scenario runs for about a second against a real `wsloop echo` or
//! `wsloop serve` with a few connections, and its JSON report must show load that went
//! through with nothing wrong (no errors, no mismatches, every delivery made).

// The server helpers of the main package's tests; they build the `wsloop` binary when run
// from this package (see `common::wsloop_binary`).
#[path = "../../../tests/common/mod.rs"]
mod common;
// Test certificates and a TLS terminator in this process, for the wss:// run.
#[path = "../../../tests/common/tls.rs"]
mod tls;

use std::process::Command;

use common::Server;
use serde_json::Value;

/// Flags that keep every run short.
const SHORT: &[&str] = &["--duration", "1s", "--warmup", "300ms", "--json"];

/// Runs `wsloop-bench ARGS` and returns its exit code, its JSON report (if it printed one)
/// and its standard error.
fn bench(args: &[&str]) -> (Option<i32>, Option<Value>, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_wsloop-bench"))
        .args(args)
        .output()
        .expect("run wsloop-bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let json = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok());
    (output.status.code(), json, stderr)
}

/// Runs a scenario that must succeed; returns its report.
fn clean_run(scenario: &str, server: &Server, path: &str, extra: &[&str]) -> Value {
    clean_run_at(scenario, &server.url(path), server, extra)
}

/// [`clean_run`] against `url` (the server's, or a proxy's in front of it).
fn clean_run_at(scenario: &str, url: &str, server: &Server, extra: &[&str]) -> Value {
    let pid = server.pid().to_string();
    let mut args = vec![scenario, "--url", url, "--server-pid", &pid];
    args.extend_from_slice(SHORT);
    args.extend_from_slice(extra);
    let (code, json, stderr) = bench(&args);
    let report = json.unwrap_or_else(|| panic!("no JSON report; stderr:\n{stderr}"));
    assert_eq!(code, Some(0), "{scenario} {extra:?} failed:\n{stderr}");
    assert_eq!(report["scenario"], scenario);
    assert_eq!(report["clean"], true, "{stderr}");
    assert_eq!(report["errors"], 0, "{stderr}");
    report
}

fn number(report: &Value, key: &str) -> f64 {
    report[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is not a number in {report}"))
}

/// Latency percentiles are present and ordered.
fn assert_latency(report: &Value) {
    let latency = &report["latency"];
    let p50 = latency["p50_us"].as_f64().expect("p50_us");
    let p99 = latency["p99_us"].as_f64().expect("p99_us");
    let p999 = latency["p999_us"].as_f64().expect("p999_us");
    assert!(0.0 < p50 && p50 <= p99 && p99 <= p999, "{latency}");
    assert!(
        latency["count"].as_u64().is_some_and(|n| n > 0),
        "{latency}"
    );
}

#[test]
fn echo_checks_every_payload() {
    let server = Server::echo(&[]);
    for extra in [
        &["--connections", "4", "--in-flight", "4"][..],
        &[
            "--connections",
            "6",
            "--in-flight",
            "2",
            "--size",
            "70000",
            "--binary",
            "--threads",
            "2",
            "--source-count",
            "2",
        ][..],
    ] {
        let report = clean_run("echo", &server, "/", extra);
        assert!(number(&report, "messages") > 0.0);
        assert!(number(&report, "messages_per_s") > 0.0);
        assert!(number(&report, "checked") >= number(&report, "messages"));
        assert_eq!(report["mismatches"], 0);
        assert_eq!(report["lost"], 0);
        assert_latency(&report);
        assert!(number(&report, "server_cpu_s") >= 0.0);
        assert!(number(&report, "server_cpu_us_per_msg") >= 0.0);
        assert!(number(&report, "client_cpu_us_per_msg") >= 0.0);
    }
}

#[test]
fn echo_over_wss_checks_every_payload_and_the_certificate() {
    let pki = tls::TestPki::new("bench");
    let server = Server::echo(&[]);
    let terminator = tls::TlsTerminator::start(&pki.localhost(), server.addr);
    let url = format!("wss://localhost:{}/", terminator.addr.port());
    let ca = pki.ca_cert.to_str().expect("UTF-8 path");
    // Messages of several TLS records each way, on two threads.
    let extra = [
        "--ca",
        ca,
        "--connections",
        "4",
        "--in-flight",
        "2",
        "--size",
        "70000",
        "--binary",
        "--threads",
        "2",
    ];
    let report = clean_run_at("echo", &url, &server, &extra);
    assert_eq!(report["tls"], true);
    assert!(number(&report, "messages") > 0.0);
    assert!(number(&report, "checked") >= number(&report, "messages"));
    assert_eq!(report["mismatches"], 0);
    assert_eq!(
        terminator.next_handshake(),
        tls::Handshake::Done {
            sni: Some("localhost".into()),
            alpn: Some("http/1.1".into())
        }
    );
    // A CA nobody told it to trust: no connection opens, and it says why.
    let stranger = tls::TestPki::new("bench-stranger");
    let other_ca = stranger.ca_cert.to_str().expect("UTF-8 path");
    let (code, json, stderr) = bench(&[
        "echo",
        "--url",
        &url,
        "--ca",
        other_ca,
        "--connections",
        "1",
    ]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(json.is_none());
    assert!(
        stderr.contains("TLS: the server's certificate is not signed by a trusted CA"),
        "{stderr}"
    );
    // --insecure skips the check, after a warning.
    let report = clean_run_at("echo", &url, &server, &["--insecure", "--connections", "1"]);
    assert_eq!(report["tls"], true);
}

/// The limits `wsloop serve` must lift for a benchmark (see `wsloop-bench broadcast --help`).
const UNLIMITED: &[&str] = &[
    "--max-pending-handshakes-per-address",
    "100000",
    "--max-messages-per-second",
    "1000000",
    "--handshakes-per-second",
    "1000000",
    "--max-connections-per-address",
    "100000",
];

#[test]
fn broadcast_delivers_everything_to_everyone() {
    let server = Server::serve(UNLIMITED);
    for extra in [
        &[
            "--publishers",
            "2",
            "--subscribers",
            "10",
            "--in-flight",
            "2",
        ][..],
        &[
            "--publishers",
            "2",
            "--subscribers",
            "6",
            "--via",
            "chat",
            "--rate",
            "200",
            "--threads",
            "2",
        ][..],
    ] {
        let report = clean_run("broadcast", &server, "/ws", extra);
        assert!(number(&report, "delivered") > 0.0);
        assert!(number(&report, "delivered_per_s") > 0.0);
        assert!(number(&report, "sent") > 0.0);
        assert_eq!(report["received_in_order"], report["expected"]);
        for key in ["missing", "gaps", "duplicates", "malformed"] {
            assert_eq!(report[key], 0, "{key}");
        }
        assert_latency(&report);
        assert!(number(&report, "server_cpu_us_per_frame") >= 0.0);
    }
}

#[test]
fn broadcast_reports_the_servers_rate_limit() {
    // Default serve limits: 50 messages/s with bursts of 100, so an unpaced publisher is
    // refused within the run; the report says so and the exit status is 2.
    let server = Server::serve(&[]);
    let url = server.url("/ws");
    let mut args = vec!["broadcast", "--url", &url, "--subscribers", "2"];
    args.extend_from_slice(SHORT);
    args.extend_from_slice(&["--drain-timeout", "500ms"]);
    let (code, json, stderr) = bench(&args);
    assert_eq!(code, Some(2), "{stderr}");
    let report = json.expect("JSON report");
    assert_eq!(report["clean"], false);
    assert!(report["error_kinds"]["server error rate_limited"].as_u64() >= Some(1));
}

#[test]
fn deflate_compresses_both_ways_and_reports_the_bytes_on_the_wire() {
    let server = Server::echo(&["--deflate"]);
    let run = |deflate: bool| {
        let mut extra = vec!["--connections", "2", "--size", "4096", "--json-text"];
        if deflate {
            extra.push("--deflate");
        }
        let report = clean_run("echo", &server, "/", &extra);
        assert_eq!(report["deflate"], deflate);
        assert_eq!(report["mismatches"], 0);
        (
            number(&report, "wire_bytes_out_per_msg"),
            number(&report, "wire_bytes_in_per_msg"),
        )
    };
    // Plain: the 4096 bytes and a header each way (the client's with its mask key).
    let (out, into) = run(false);
    assert!((4096.0..4096.0 + 14.0 + 1.0).contains(&out), "{out}");
    assert!((4096.0..4096.0 + 10.0 + 1.0).contains(&into), "{into}");
    // Compressed: JSON-like text shrinks to well under half, both ways.
    let (out, into) = run(true);
    assert!(out < 2048.0, "{out}");
    assert!(into < 2048.0, "{into}");

    let server = Server::serve(&[UNLIMITED, &["--deflate"]].concat());
    let extra = ["--subscribers", "4", "--size", "2000", "--deflate"];
    let report = clean_run("broadcast", &server, "/ws", &extra);
    assert_eq!(report["missing"], 0);
    assert!(
        number(&report, "wire_bytes_in_per_frame") < 1000.0,
        "{report}"
    );
}

#[test]
fn idle_after_a_first_compressed_echo_holds_the_compression_state() {
    // A fresh server each time: memory freed earlier would hide the cost.
    let rss = |extra: &[&str]| {
        let server = Server::echo(&["--deflate"]);
        // 200, so that the loop's fixed costs (its one shared compressor, ~1 MB of RSS in
        // all) weigh little per connection: at 50 they were ~20 KB each and came near the
        // bound below.
        let mut args = vec![
            "--connections",
            "200",
            "--first-message",
            "2000",
            "--deflate",
        ];
        args.extend_from_slice(extra);
        let report = clean_run("idle", &server, "/", &args);
        assert_eq!(report["first_message"], 2000);
        number(&report, "rss_per_connection_bytes")
    };
    // Context takeover both ways: an inflater and a compressor stay per connection.
    let kept = rss(&[]);
    assert!(kept > 100_000.0, "{kept} B");
    // Each message on its own both ways: nothing stays per connection but the agreed
    // parameters (the loop's one shared compressor, shared by the 200, is in the figure).
    let none = rss(&["--deflate-no-context-takeover"]);
    assert!(none < kept / 10.0, "{none} B");
}

#[test]
fn connect_storm() {
    let server = Server::echo(&[]);
    let report = clean_run("connect", &server, "/", &["--concurrency", "4"]);
    assert!(number(&report, "handshakes") > 0.0);
    assert!(number(&report, "handshakes_per_s") > 0.0);
    assert!(number(&report, "closed") >= number(&report, "handshakes"));
    assert_latency(&report);
    assert!(number(&report, "server_cpu_us_per_handshake") >= 0.0);
}

#[test]
fn idle_connections_cost_memory() {
    // A fresh server, so that the memory the connections take is not memory freed earlier.
    let server = Server::echo(&[]);
    let report = clean_run("idle", &server, "/", &["--connections", "300"]);
    assert!(
        number(&report, "rss_per_connection_bytes") > 0.0,
        "{report}"
    );
    assert!(number(&report, "rss_after_kb") > number(&report, "rss_before_kb"));
}

#[test]
fn several_urls_take_the_connections_in_turn() {
    let (a, b) = (Server::serve(UNLIMITED), Server::serve(UNLIMITED));
    let (url_a, url_b) = (a.url("/ws"), b.url("/ws"));
    let urls = format!("{url_a},{url_b}");
    let pids = format!("{},{}", a.pid(), b.pid());
    let mut args = vec!["idle", "--url", &urls, "--server-pid", &pids];
    args.extend_from_slice(SHORT);
    // Enough for the servers' RSS to grow (idle requires it).
    args.extend_from_slice(&["--connections", "101", "--threads", "2"]);
    let (code, json, stderr) = bench(&args);
    assert_eq!(code, Some(0), "{stderr}");
    let report = json.expect("JSON report");
    assert_eq!(report["urls"], serde_json::json!([url_a, url_b]));
    assert_eq!(report["server_pids"], serde_json::json!([a.pid(), b.pid()]));
    // The even connections on the first URL, the odd ones on the second, whichever thread
    // opened them.
    assert_eq!(common::sample(&a, "wsloop_connections_total"), 51);
    assert_eq!(common::sample(&b, "wsloop_connections_total"), 50);
    // All ws:// or all wss://.
    let mixed = format!("{url_a},wss://127.0.0.1:1/");
    let (code, _, stderr) = bench(&["idle", "--url", &mixed, "--server-pid", &pids]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("mixes ws:// and wss://"), "{stderr}");
}

#[test]
fn refuses_hosts_off_this_machine() {
    for url in [
        "ws://10.0.0.1:9001/",
        "ws://192.168.1.10:9001/",
        "ws://example.com:9001/",
        "ws://[::1]:9001/",
    ] {
        let (code, json, stderr) = bench(&["echo", "--url", url, "--duration", "1s"]);
        assert_eq!(code, Some(1), "{url}: {stderr}");
        assert!(json.is_none());
        assert!(stderr.contains("only targets this machine"), "{stderr}");
    }
    let (code, _, stderr) = bench(&[
        "echo",
        "--url",
        "ws://127.0.0.1:9/",
        "--source-addrs",
        "127.0.0.1,172.16.0.1",
    ]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("not in 127.0.0.0/8"), "{stderr}");
}

#[test]
fn bad_arguments_exit_1_as_help_says() {
    for args in [
        &["echo", "--size", "lots"][..],
        &["no-such-scenario"],
        &["echo", "--nope"],
    ] {
        let (code, json, stderr) = bench(args);
        assert_eq!(code, Some(1), "{args:?}: {stderr}");
        assert!(json.is_none());
        assert!(stderr.contains("error:"), "{stderr}");
    }
    let (code, _, _) = bench(&["--help"]);
    assert_eq!(code, Some(0));
}

#[test]
fn cannot_connect_is_an_error() {
    // A port nobody listens on: bind one, then let it go.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let url = format!("ws://127.0.0.1:{port}/");
    let (code, json, stderr) = bench(&["echo", "--url", &url, "--connections", "2"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(json.is_none());
    assert!(stderr.contains("refused"), "{stderr}");
}
