//! `wsloop client` as a user sees it: in a pseudo-terminal (a prompt, `<` before what
//! arrives, JSON pretty-printed, Ctrl-C closing with 1000) and piped (plain lines).
#![cfg(unix)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use common::{closes, sample, wsloop_binary, Server};

/// Waits up to 10 s for the server to count `n` closes with `code`.
fn wait_for_closes(server: &Server, code: u16, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while sample(server, &closes(code)) != n {
        assert!(Instant::now() < deadline, "no {n} close(s) with {code}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn on_a_terminal_a_prompt_markers_pretty_json_and_ctrl_c_closing_with_1000() {
    let server = Server::serve(&[]);
    let mut command = Command::new(wsloop_binary());
    command.args(["client", &server.url("/ws"), "--json"]);
    let mut tty = rexpect::session::spawn_command(command, Some(10_000)).expect("spawn in a pty");
    tty.exp_string("connected to ws://")
        .expect("the connected line");
    // The welcome, pretty-printed after the received marker (and indented under it), in
    // the key order the server sent.
    tty.exp_string("< {\r\n    \"id\": \"")
        .expect("a pretty-printed welcome after `< `");
    tty.exp_string("-1\",\r\n    \"name\": \"")
        .expect("the id's serial, then the name");
    tty.exp_string("\"type\": \"welcome\",\r\n    \"user\": \"")
        .expect("the type, then the user");
    tty.exp_string("\"\r\n  }").expect("the welcome's end");
    tty.exp_string("> ").expect("the prompt");
    tty.send_line(r#"{"type":"chat","content":"hi there"}"#)
        .expect("type a line");
    tty.exp_string("\"content\": \"hi there\"")
        .expect("the chat coming back");
    // A message that arrives while a line is being typed goes above it, and the line is
    // drawn again below, whole.
    tty.send("half a li").expect("type without Enter");
    tty.flush().expect("flush the typing");
    tty.exp_string("half a li").expect("the echo of the typing");
    let mut other = wsloop::client::Client::connect(&server.url("/ws")).expect("connect");
    other
        .send_text(r#"{"type":"chat","content":"interrupting"}"#)
        .expect("send");
    tty.exp_string("\"content\": \"interrupting\"")
        .expect("the other's chat");
    tty.exp_regex(r"> (\x1b\[[0-9;?]*[A-Za-z]|\r)*half a li")
        .expect("the typed line redrawn after it");
    other.close(1000, "").expect("close the other");
    wait_for_closes(&server, 1000, 1);
    tty.send_control('c').expect("Ctrl-C");
    tty.exp_eof().expect("the client exits");
    let status = tty.process().wait().expect("exit status");
    assert!(
        matches!(status, rexpect::process::WaitStatus::Exited(_, 0)),
        "{status:?}"
    );
    // The other client's close, then this one's.
    wait_for_closes(&server, 1000, 2);
}

/// `wsloop client URL EXTRA` with pipes for stdin, stdout and stderr (no terminal), after it
/// printed its first line, the server's welcome, plain.
fn piped_client(server: &Server, extra: &[&str]) -> (Child, BufReader<ChildStdout>) {
    let mut child = Command::new(wsloop_binary())
        .args(["client", &server.url("/ws")])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the client");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout piped"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("the welcome");
    assert!(line.starts_with('{'), "{line:?}");
    assert!(line.contains(r#""type":"welcome","user":"#), "{line:?}");
    (child, stdout)
}

#[test]
fn piped_lines_are_plain_and_end_of_input_closes_with_1000() {
    let server = Server::serve(&[]);
    let (mut child, mut stdout) = piped_client(&server, &[]);
    let mut line = String::new();
    let mut stdin = child.stdin.take().expect("stdin piped");
    writeln!(stdin, r#"{{"type":"chat","content":"piped"}}"#).expect("send a line");
    line.clear();
    stdout.read_line(&mut line).expect("the chat");
    assert!(
        line.starts_with('{') && line.contains(r#""type":"chat""#),
        "{line:?}"
    );
    assert!(line.contains(r#""content":"piped""#), "{line:?}");
    drop(stdin);
    let output = child.wait_with_output().expect("the client exits");
    assert_eq!(output.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("connected to ws://"), "{stderr}");
    wait_for_closes(&server, 1000, 1);
}

#[test]
fn no_close_keeps_listening_after_the_end_of_input() {
    let server = Server::serve(&[]);
    let (mut child, mut stdout) = piped_client(&server, &["-n"]);
    drop(child.stdin.take());
    let mut line = String::new();
    // Another client's chat still reaches it after its own input ended.
    let mut other = wsloop::client::Client::connect(&server.url("/ws")).expect("connect");
    other
        .send_text(r#"{"type":"chat","content":"still there?"}"#)
        .expect("send");
    line.clear();
    stdout.read_line(&mut line).expect("the other's chat");
    assert!(line.contains(r#""content":"still there?""#), "{line:?}");
    assert!(matches!(child.try_wait(), Ok(None)), "the client exited");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn a_lost_connection_exits_1_with_the_terminal_out_of_raw_mode() {
    let mut server = Server::serve(&[]);
    let mut command = Command::new(wsloop_binary());
    command.args(["client", &server.url("/ws")]);
    let mut tty = rexpect::session::spawn_command(command, Some(10_000)).expect("spawn in a pty");
    tty.exp_string("\"type\":\"welcome\"").expect("the welcome");
    tty.exp_string("> ").expect("the prompt");
    // The line editor is in raw mode now, waiting for a line, when the server goes away.
    assert_eq!(
        server.signal_and_wait("KILL", Duration::from_secs(10)),
        None
    );
    tty.exp_string("disconnected")
        .expect("the disconnected line");
    tty.exp_eof().expect("the client exits");
    let status = tty.process().wait().expect("exit status");
    assert!(
        matches!(status, rexpect::process::WaitStatus::Exited(_, 1)),
        "{status:?}"
    );
    // The pseudo-terminal's settings (read through its master) are cooked again: raw mode
    // clears ICANON and ISIG. (ECHO was off from the start: rexpect turns it off.)
    let master = tty.process().get_file_handle().expect("the pty master");
    let termios = nix::sys::termios::tcgetattr(&master).expect("tcgetattr");
    let local = termios.local_flags;
    use nix::sys::termios::LocalFlags;
    assert!(
        local.contains(LocalFlags::ICANON | LocalFlags::ISIG),
        "left in raw mode: {local:?}"
    );
}

#[test]
fn binary_lines_pings_and_pongs_are_shown_as_asked() {
    let server = Server::echo(&[]);
    let mut child = Command::new(wsloop_binary())
        .args(["client", &server.url("/")])
        .args(["--binary", "--ping-interval", "100ms", "--show-ping-pong"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the client");
    let mut stdin = child.stdin.take().expect("stdin piped");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout piped"));
    // A line goes out as a binary message; the echo comes back as one (5 bytes: "hello").
    writeln!(stdin, "hello").expect("send a line");
    let mut line = String::new();
    stdout.read_line(&mut line).expect("the echo");
    assert_eq!(line, "<binary, 5 bytes>\n");
    // Let a few pings go out before the end of input closes the connection.
    std::thread::sleep(Duration::from_millis(450));
    drop(stdin);
    let output = child.wait_with_output().expect("the client exits");
    assert_eq!(output.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let pings = stderr.lines().filter(|l| *l == "> ping").count();
    let pongs = stderr.lines().filter(|l| *l == "< pong (0 bytes)").count();
    assert!(pings >= 2, "pings sent every 100 ms: {stderr}");
    assert!(
        pongs >= 1 && pongs <= pings,
        "the echo server's pongs: {stderr}"
    );
}
