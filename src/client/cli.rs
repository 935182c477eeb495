//! `wsloop client`: a wscat-like terminal client. Each line of standard input is sent as a
//! message; every message that arrives is printed. On a terminal a line editor (rustyline)
//! reads the input behind a `> ` prompt and prints what arrives as `< ` lines above it; when
//! piped, lines go out and come in plain. Ctrl-C sends close 1000 before exiting. With
//! `reconnect`, a lost connection is retried with the [`Backoff`] policy, and wsloop channels
//! are subscribed to again where the client left them (`client::recover`).

use std::io::{self, BufRead, IsTerminal, Write};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use rustyline::error::ReadlineError;

use super::recover::{Recovery, Shown};
use super::{Client, ClientError, ClientOptions, ClientWriter, Received};
use crate::backoff::Backoff;
use crate::proto::close_code;
use crate::proto::MessageKind;

/// How `wsloop client` behaves, beyond the connection's options.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    /// Reconnect when the connection is lost.
    pub reconnect: bool,
    /// When reconnecting, subscribe again to the wsloop channels the user subscribed to,
    /// with `since` (PROTOCOL.md, "Recovery").
    pub recover: bool,
    /// Keep listening after standard input ends, instead of closing.
    pub no_close: bool,
    /// Send lines as binary messages instead of text.
    pub binary: bool,
    /// Ping the server this often.
    pub ping_interval: Option<Duration>,
    /// Print pings and pongs.
    pub show_ping_pong: bool,
    /// Pretty-print received JSON.
    pub json: bool,
}

/// What the input side tells the connection side.
enum Input {
    /// Standard input ended.
    Eof,
    /// Ctrl-C.
    Interrupt,
}

/// How a session ended.
enum SessionEnd {
    /// The user is done: input ended (and the close handshake was done or attempted), or
    /// Ctrl-C; with the last thing to tell.
    Done(Option<String>),
    /// The connection was lost or closed by the server.
    Lost(String),
}

/// The writer of the current connection, shared with the input thread, which waits on the
/// condition variable while there is no connection (lines are sent once one opens); and the
/// channels to recover, when the client does (both sides update them).
#[derive(Default)]
struct Current {
    writer: Mutex<Option<ClientWriter>>,
    connected: Condvar,
    recovery: Option<Mutex<Recovery>>,
}

impl Current {
    fn lock(&self) -> MutexGuard<'_, Option<ClientWriter>> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the channels to recover, if the client recovers them.
    fn recovery<T>(&self, f: impl FnOnce(&mut Recovery) -> T) -> Option<T> {
        let recovery = self.recovery.as_ref()?;
        Some(f(&mut recovery.lock().unwrap_or_else(|p| p.into_inner())))
    }

    /// What to show of a text message: as it came, or as recovery has it (gap markers, a
    /// chat replay in place of its `history` answer, held chats later).
    fn shown(&self, text: String) -> Vec<Shown> {
        match &self.recovery {
            Some(recovery) => recovery
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .received(text),
            None => vec![Shown::Line(text)],
        }
    }

    fn set(&self, writer: Option<ClientWriter>) {
        *self.lock() = writer;
        self.connected.notify_all();
    }

    /// Sends `line` once a connection is open.
    fn send(&self, kind: MessageKind, line: &str) -> Result<(), ClientError> {
        // Before it goes: the answer may arrive before this thread would get back here.
        if kind == MessageKind::Text {
            self.recovery(|r| r.sent(line));
        }
        let mut current = self.lock();
        while current.is_none() {
            current = self
                .connected
                .wait(current)
                .unwrap_or_else(|p| p.into_inner());
        }
        match current.as_mut() {
            Some(w) => w.send(kind, line.as_bytes()),
            None => Err(ClientError::Closed),
        }
    }
}

/// Where lines for the user go: plain on stdout/stderr, or through the line editor, which
/// prints them above the line being typed.
enum Output {
    Plain,
    Terminal(Box<dyn rustyline::ExternalPrinter + Send>),
}

impl Output {
    /// A received message: `< ` before it on a terminal, nothing when piped.
    fn received(&mut self, text: &str) {
        match self {
            Output::Plain => {
                let mut out = io::stdout().lock();
                let _ = writeln!(out, "{text}");
                let _ = out.flush();
            }
            Output::Terminal(printer) => {
                let _ = printer.print(format!("< {}", text.replace('\n', "\n  ")));
            }
        }
    }

    /// A status line (connected, closed, ping): stderr when piped, so stdout stays data.
    fn status(&mut self, text: &str) {
        match self {
            Output::Plain => eprintln!("{text}"),
            Output::Terminal(printer) => {
                let _ = printer.print(text.to_owned());
            }
        }
    }
}

/// The terminal's settings from before the line editor changed them, put back when the
/// client ends: the editor's thread may still be inside `readline`, in raw mode, when the
/// connection is lost or the server closes it.
struct RestoreTerminal(Option<nix::sys::termios::Termios>);

impl Drop for RestoreTerminal {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            let _ = nix::sys::termios::tcsetattr(
                io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                saved,
            );
        }
    }
}

/// Runs the client until the user is done (exit code 0) or the connection is lost for good
/// (exit code 1).
pub fn run(url: &str, options: &ClientOptions, settings: &Settings) -> i32 {
    let current = Arc::new(Current {
        recovery: (settings.reconnect && settings.recover).then(Mutex::default),
        ..Current::default()
    });
    let (input_tx, input_rx) = mpsc::channel();
    let kind = if settings.binary {
        MessageKind::Binary
    } else {
        MessageKind::Text
    };
    let terminal = io::stdin().is_terminal() && io::stdout().is_terminal();
    let restore = RestoreTerminal(
        terminal
            .then(|| nix::sys::termios::tcgetattr(io::stdin()).ok())
            .flatten(),
    );
    let mut output = if terminal {
        match spawn_line_editor(Arc::clone(&current), kind, input_tx.clone()) {
            Ok(printer) => Output::Terminal(printer),
            Err(e) => {
                eprintln!("line editor: {e}");
                return 1;
            }
        }
    } else {
        spawn_stdin_pump(Arc::clone(&current), kind, input_tx.clone());
        Output::Plain
    };
    // On a terminal the editor turns Ctrl-C into `Interrupted` while it reads; a SIGINT at
    // any other time (or when piped) arrives here.
    if let Err(e) = forward_sigint(input_tx) {
        output.status(&format!("cannot handle Ctrl-C: {e}"));
    }
    let (code, last) = connect_loop(url, options, settings, &current, &input_rx, &mut output);
    // The line editor's printer is asynchronous: the last line goes straight to the terminal,
    // once it is out of raw mode.
    drop(output);
    drop(restore);
    if let Some(last) = last {
        eprintln!("{}{last}", if terminal { "\r\n" } else { "" });
    }
    code
}

/// Connects, runs sessions, reconnects if asked: the exit code and the last line to print.
fn connect_loop(
    url: &str,
    options: &ClientOptions,
    settings: &Settings,
    current: &Current,
    input_rx: &Receiver<Input>,
    output: &mut Output,
) -> (i32, Option<String>) {
    let mut backoff = Backoff::default();
    let mut input_ended = false;
    loop {
        match Client::connect_with(url, options) {
            Ok(client) => {
                backoff.reset();
                output.status(&format!("connected to {url}{}", agreed(&client, options)));
                let mut session = Session {
                    client,
                    current,
                    input: input_rx,
                    settings,
                    output,
                    input_ended,
                };
                let end = session.run();
                input_ended = session.input_ended;
                match end {
                    SessionEnd::Done(last) => return (0, last),
                    SessionEnd::Lost(why) if !settings.reconnect => {
                        return (1, Some(format!("disconnected: {why}")))
                    }
                    SessionEnd::Lost(why) => output.status(&format!("disconnected: {why}")),
                }
            }
            Err(e) if !settings.reconnect => {
                return (1, Some(format!("cannot connect to {url}: {e}")))
            }
            Err(e) => output.status(&format!("cannot connect to {url}: {e}")),
        }
        let Some(delay) = backoff.next_delay() else {
            return (
                1,
                Some(format!("giving up after {} attempts", backoff.attempts())),
            );
        };
        output.status(&format!(
            "reconnecting in {:.1}s (attempt {}/{})",
            delay.as_secs_f64(),
            backoff.attempts(),
            backoff.max_attempts
        ));
        // Ctrl-C during the wait ends the client at once (there is no connection to close).
        match input_rx.recv_timeout(delay) {
            Ok(Input::Interrupt) => return (0, None),
            Ok(Input::Eof) => input_ended = true,
            Err(_) => {}
        }
    }
}

/// What the connected line adds about permessage-deflate: what was agreed, or that the
/// server declined the offer.
fn agreed(client: &Client, options: &ClientOptions) -> String {
    #[cfg(feature = "deflate")]
    if options.deflate.is_some() {
        return match client.deflate() {
            Some(agreed) => format!(" with {}", agreed.response_header()),
            None => " (the server declined permessage-deflate)".to_owned(),
        };
    }
    let _ = (client, options);
    String::new()
}

/// Turns SIGINT into [`Input::Interrupt`].
fn forward_sigint(input: Sender<Input>) -> io::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGINT])?;
    thread::spawn(move || {
        for _ in signals.forever() {
            if input.send(Input::Interrupt).is_err() {
                break;
            }
        }
    });
    Ok(())
}

/// Reads lines with the line editor (prompt `> `, history) on its own thread; returns the
/// printer that writes above the line being edited.
fn spawn_line_editor(
    current: Arc<Current>,
    kind: MessageKind,
    input: Sender<Input>,
) -> rustyline::Result<Box<dyn rustyline::ExternalPrinter + Send>> {
    let mut editor = rustyline::DefaultEditor::new()?;
    let printer = Box::new(editor.create_external_printer()?);
    thread::spawn(move || {
        let end = loop {
            match editor.readline("> ") {
                Ok(line) => {
                    let _ = editor.add_history_entry(line.as_str());
                    if let Err(e) = current.send(kind, &line) {
                        eprintln!("send failed: {e}");
                    }
                }
                Err(ReadlineError::Interrupted) => break Input::Interrupt,
                Err(_) => break Input::Eof,
            }
        };
        let _ = input.send(end);
    });
    Ok(printer)
}

/// Sends standard input's lines through whatever connection is current; tells the
/// connection side at the end.
fn spawn_stdin_pump(current: Arc<Current>, kind: MessageKind, input: Sender<Input>) {
    thread::spawn(move || {
        for line in io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if let Err(e) = current.send(kind, &line) {
                eprintln!("send failed: {e}");
            }
        }
        let _ = input.send(Input::Eof);
    });
}

/// One connection: receives and prints, pings, and closes when the user is done.
struct Session<'a> {
    client: Client,
    current: &'a Current,
    input: &'a Receiver<Input>,
    settings: &'a Settings,
    output: &'a mut Output,
    /// Standard input has ended (in this session or an earlier one).
    input_ended: bool,
}

impl Session<'_> {
    fn run(&mut self) -> SessionEnd {
        // The channels of the last connection first, before lines typed meanwhile.
        for (request, status) in self
            .current
            .recovery(Recovery::resubscriptions)
            .unwrap_or_default()
        {
            self.output.status(&status);
            if let Err(e) = self.client.send_text(&request) {
                return SessionEnd::Lost(e.to_string());
            }
        }
        self.current.set(Some(self.client.writer()));
        // Poll for input events between receives with a short read timeout.
        let _ = self.client.set_timeout(Some(Duration::from_millis(100)));
        let mut closing = false;
        let mut next_ping = self.settings.ping_interval.map(|i| Instant::now() + i);
        let end = loop {
            let event = match self.input.try_recv() {
                Ok(event) => Some(event),
                Err(_) if self.input_ended && !self.settings.no_close => Some(Input::Eof),
                Err(_) => None,
            };
            if let (Some(event), false) = (event, closing) {
                if matches!(event, Input::Eof) {
                    self.input_ended = true;
                }
                if matches!(event, Input::Interrupt) || !self.settings.no_close {
                    closing = true;
                    // RFC 6455 §7.4.1: 1000 indicates a normal closure.
                    if let Err(e) = self.client.close(close_code::NORMAL, "") {
                        break SessionEnd::Done(Some(e.to_string()));
                    }
                }
            }
            if let (Some(interval), Some(at), false) =
                (self.settings.ping_interval, next_ping, closing)
            {
                if Instant::now() >= at {
                    next_ping = Some(at + interval);
                    if self.client.ping(b"").is_ok() && self.settings.show_ping_pong {
                        self.output.status("> ping");
                    }
                }
            }
            match self.client.recv() {
                Ok(Received::Text(text)) => {
                    for shown in self.current.shown(text) {
                        match shown {
                            Shown::Status(note) => self.output.status(&note),
                            Shown::Line(line) if self.settings.json => {
                                self.output.received(&pretty_json(&line).unwrap_or(line));
                            }
                            Shown::Line(line) => self.output.received(&line),
                        }
                    }
                }
                Ok(Received::Binary(data)) => {
                    self.output
                        .received(&format!("<binary, {} bytes>", data.len()));
                }
                Ok(Received::Ping(p)) if self.settings.show_ping_pong => {
                    self.output
                        .status(&format!("< ping ({} bytes), > pong", p.len()));
                }
                Ok(Received::Pong(p)) if self.settings.show_ping_pong => {
                    self.output.status(&format!("< pong ({} bytes)", p.len()));
                }
                Ok(Received::Ping(_) | Received::Pong(_)) => {}
                Ok(Received::Close(code, reason)) => {
                    let code = code.map_or("none".to_owned(), |c| c.to_string());
                    let closed = format!("closed by the server: code {code} {reason}");
                    if closing || self.input_ended {
                        break SessionEnd::Done(Some(closed));
                    }
                    break SessionEnd::Lost(closed);
                }
                Err(ClientError::Io(e))
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(e) if closing => break SessionEnd::Done(Some(e.to_string())),
                Err(e) => break SessionEnd::Lost(e.to_string()),
            }
        };
        self.current.set(None);
        end
    }
}

/// `text` re-indented with two spaces when it is JSON, keys in their order (a JSON value of
/// serde_json would sort them); `None` when it is not JSON.
fn pretty_json(text: &str) -> Option<String> {
    serde_json::from_str::<serde_json::Value>(text).ok()?;
    let mut out = String::with_capacity(text.len() * 2);
    let mut depth = 0usize;
    let (mut in_string, mut escaped) = (false, false);
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        out.push_str(&"  ".repeat(depth));
    };
    let mut chars = text.trim().chars().peekable();
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '{' | '[' => {
                out.push(c);
                // An empty object or array stays `{}` / `[]`.
                while chars.peek().is_some_and(|c| c.is_whitespace()) {
                    chars.next();
                }
                if matches!(chars.peek(), Some('}' | ']')) {
                    out.extend(chars.next());
                } else {
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            c if c.is_whitespace() => {}
            c => out.push(c),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::pretty_json;

    #[test]
    fn json_is_reindented_in_its_own_key_order() {
        let text = r#"{"type":"chat","b":[1, 2,{}],"a":{"s":"x,\"{y}\":z"},"e":[]}"#;
        let expected = "{\n  \"type\": \"chat\",\n  \"b\": [\n    1,\n    2,\n    {}\n  ],\n  \"a\": {\n    \"s\": \"x,\\\"{y}\\\":z\"\n  },\n  \"e\": []\n}";
        assert_eq!(pretty_json(text).as_deref(), Some(expected));
        assert_eq!(pretty_json("42").as_deref(), Some("42"));
        assert_eq!(pretty_json("not json {"), None);
    }
}
