//! The command line as an operator meets it: nonsense values refused with a message and
//! status 2, and settings taken from the command line, then `WSLOOP_*` variables, then the
//! `--config` file.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::wsloop_binary;

/// Runs `wsloop ARGS` that must fail at start: its status and standard error.
fn refused(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let output = Command::new(wsloop_binary())
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run wsloop");
    assert!(
        output.stdout.is_empty(),
        "{args:?} started: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Starts `wsloop serve ARGS`, returns its start-up line and stops it.
fn startup_line(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut child = Command::new(wsloop_binary())
        .arg("serve")
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn wsloop serve");
    let stdout = child.stdout.take().expect("stdout piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(Duration::from_secs(10));
    let _ = child.kill();
    let _ = child.wait();
    line.expect("a start-up line within 10 s").trim().to_owned()
}

#[test]
fn nonsense_values_exit_2_with_a_message() {
    // (flags, what the message must say)
    let cases: &[(&[&str], &str)] = &[
        (
            &["serve", "--ping-interval", "0s"],
            "invalid value '0s' for '--ping-interval <DURATION>': must be more than 0 (`off` turns it off)",
        ),
        (
            &["serve", "--max-messages-per-second=-1"],
            "invalid value '-1' for '--max-messages-per-second <N>': want a number of at least 0.5",
        ),
        (
            &["serve", "--max-messages-per-second", "nan"],
            "invalid value 'nan' for '--max-messages-per-second <N>'",
        ),
        (
            &["serve", "--handshakes-per-second", "0"],
            "invalid value '0' for '--handshakes-per-second <N>': want a number of at least 0.5 (not nan or inf), or `unlimited`",
        ),
        (
            &["serve", "--allow-origin", "*"],
            "`*` is not an origin: leave --allow-origin out to allow every origin",
        ),
        (
            &["serve", "--allow-origin", "https://chat.example/"],
            r#"an origin has no path and no trailing slash (browsers send "https://chat.example")"#,
        ),
        (
            &["serve", "--ws-path", "ws"],
            "invalid value 'ws' for '--ws-path <PATH>': must start with `/` (e.g. /ws)",
        ),
        (
            &["serve", "--max-connections", "0"],
            "'--max-connections <N>': must be at least 1",
        ),
        (
            &["serve", "--idle-timeout", "0"],
            "'--idle-timeout <DURATION>': must be more than 0 (`off` turns it off)",
        ),
        (
            &["serve", "--close-timeout", "0ms"],
            "'--close-timeout <DURATION>': must be more than 0",
        ),
        (
            &["serve", "--max-head-bytes", "100"],
            "'--max-head-bytes <BYTES>': must be at least 256",
        ),
        (
            &["serve", "--redis", "127.0.0.1:6379"],
            "want redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]",
        ),
        (
            &["serve", "--redis", "rediss://127.0.0.1:6380/#insecure"],
            "no #fragment: the certificate is always checked",
        ),
        (
            &["serve", "--redis", "rediss://127.0.0.1:6380", "--redis-ca", "/nonexistent.pem"],
            "CA file /nonexistent.pem: I/O error",
        ),
        (
            &["client", "wss://127.0.0.1:9/", "--ca", "/nonexistent.pem"],
            "CA file /nonexistent.pem: I/O error",
        ),
        (
            &["echo", "--max-pings-per-second", "0"],
            "'--max-pings-per-second <N>': must be at least 1",
        ),
        (
            &["client", "ws://127.0.0.1:9/", "-H", "Authorization Bearer x"],
            r#""Authorization Bearer x" has no colon: want `Name: value`"#,
        ),
        (
            &["client", "http://127.0.0.1:9/"],
            "invalid URL \"http://127.0.0.1:9/\"",
        ),
    ];
    for (args, message) in cases {
        let (status, stderr) = refused(args, &[]);
        assert_eq!(status, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
}

#[test]
fn the_heartbeat_can_be_turned_off() {
    let line = startup_line(&["--listen", "127.0.0.1:0", "--ping-interval", "off"], &[]);
    assert!(
        line.starts_with("wsloop: listening on ws://127.0.0.1:"),
        "{line}"
    );
}

#[test]
fn the_startup_line_names_the_websocket_url_and_the_page() {
    let line = startup_line(&["--listen", "127.0.0.1:0", "--ws-path", "/chat"], &[]);
    let addr = line
        .strip_prefix("wsloop: listening on ws://")
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("{line}"));
    assert_eq!(
        line,
        format!("wsloop: listening on ws://{addr}/chat (WebSocket), http://{addr}/ (page)")
    );
}

/// Flag over `WSLOOP_*` over the file over the default, seen in the start-up line (the
/// listen address and the WebSocket path come from different places).
#[test]
fn settings_come_from_flags_then_environment_then_file() {
    let dir = std::env::temp_dir().join(format!("wsloop-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("wsloop.toml");
    std::fs::write(
        &file,
        "listen = [\"127.0.0.2:0\"]\nws-path = \"/from-file\"\nreuse-port = false\n",
    )
    .expect("write config");
    let config = file.to_str().expect("UTF-8 temp path");
    let addr_and_path = |line: String| {
        let rest = line
            .strip_prefix("wsloop: listening on ws://")
            .unwrap_or("");
        let (addr, rest) = rest.split_once('/').unwrap_or(("", ""));
        let ip = addr.rsplit_once(':').map_or("", |(ip, _)| ip).to_owned();
        let path = rest.split(' ').next().unwrap_or("").to_owned();
        (ip, format!("/{path}"))
    };
    // The file alone.
    let line = startup_line(&["--config", config], &[]);
    assert_eq!(
        addr_and_path(line),
        ("127.0.0.2".into(), "/from-file".into())
    );
    // The environment over the file; the file still gives what the environment does not.
    let env = [("WSLOOP_LISTEN", "127.0.0.3:0")];
    let line = startup_line(&["--config", config], &env);
    assert_eq!(
        addr_and_path(line),
        ("127.0.0.3".into(), "/from-file".into())
    );
    // The flag over both; the file named by WSLOOP_CONFIG.
    let env = [("WSLOOP_LISTEN", "127.0.0.3:0"), ("WSLOOP_CONFIG", config)];
    let line = startup_line(&["--listen", "127.0.0.4:0", "--ws-path", "/flag"], &env);
    assert_eq!(addr_and_path(line), ("127.0.0.4".into(), "/flag".into()));
    // Nonsense in the file is refused like nonsense on the command line.
    std::fs::write(&file, "ping-interval = \"0s\"\n").expect("write config");
    let (status, stderr) = refused(&["serve", "--config", config], &[]);
    assert_eq!(status, Some(2), "{stderr}");
    assert!(stderr.contains("must be more than 0"), "{stderr}");
    std::fs::write(&file, "ping-intervall = \"1s\"\n").expect("write config");
    let (status, stderr) = refused(&["serve", "--config", config], &[]);
    assert_eq!(status, Some(2), "{stderr}");
    assert!(
        stderr.contains("`ping-intervall` is not a setting of `wsloop serve`"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
