//! `wsloop client`: a wscat-like terminal client. Each line of standard input is sent as a
//! text message; every message that arrives is printed on standard output. With `reconnect`,
//! a lost connection is retried with the [`Backoff`] policy.

use std::io::{self, BufRead, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;

use super::{Client, ClientError, ClientOptions, ClientWriter, Received};
use crate::backoff::Backoff;
use crate::proto::close_code;

/// How a session ended.
enum SessionEnd {
    /// Standard input ended and the closing handshake was done (or attempted).
    InputDone,
    /// The connection was lost or closed by the server.
    Lost(String),
}

/// The writer of the current connection, shared with the stdin thread, which waits on the
/// condition variable while there is no connection (lines are sent once one opens).
#[derive(Default)]
struct Current {
    writer: Mutex<Option<ClientWriter>>,
    connected: Condvar,
}

type SharedWriter = Arc<Current>;

impl Current {
    fn lock(&self) -> MutexGuard<'_, Option<ClientWriter>> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, writer: Option<ClientWriter>) {
        *self.lock() = writer;
        self.connected.notify_all();
    }
}

/// Runs the client until standard input ends (exit code 0) or the connection is lost for
/// good (exit code 1).
pub fn run(url: &str, options: &ClientOptions, reconnect: bool) -> i32 {
    let writer: SharedWriter = Arc::default();
    let (input_done_tx, input_done_rx) = std::sync::mpsc::channel::<()>();
    spawn_stdin_pump(Arc::clone(&writer), input_done_tx);
    let mut backoff = Backoff::default();
    loop {
        match Client::connect_with(url, options) {
            Ok(client) => {
                backoff.reset();
                eprintln!("connected to {url}");
                match session(client, &writer, &input_done_rx) {
                    SessionEnd::InputDone => return 0,
                    SessionEnd::Lost(why) => eprintln!("disconnected: {why}"),
                }
            }
            Err(e) => eprintln!("cannot connect to {url}: {e}"),
        }
        if !reconnect {
            return 1;
        }
        let Some(delay) = backoff.next_delay() else {
            eprintln!("giving up after {} attempts", backoff.attempts());
            return 1;
        };
        eprintln!(
            "reconnecting in {:.1}s (attempt {}/{})",
            delay.as_secs_f64(),
            backoff.attempts(),
            backoff.max_attempts
        );
        thread::sleep(delay);
    }
}

/// Sends stdin lines through whatever connection is current; tells the main thread at EOF.
fn spawn_stdin_pump(writer: SharedWriter, done: std::sync::mpsc::Sender<()>) {
    thread::spawn(move || {
        for line in io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            let mut current = writer.lock();
            while current.is_none() {
                current = writer
                    .connected
                    .wait(current)
                    .unwrap_or_else(|p| p.into_inner());
            }
            if let Some(w) = current.as_mut() {
                if let Err(e) = w.send_text(&line) {
                    eprintln!("send failed: {e}");
                }
            }
        }
        let _ = done.send(());
    });
}

fn session(
    mut client: Client,
    writer: &SharedWriter,
    input_done: &std::sync::mpsc::Receiver<()>,
) -> SessionEnd {
    writer.set(Some(client.writer()));
    // Poll for input EOF between receives with a short read timeout.
    let _ = client.set_timeout(Some(std::time::Duration::from_millis(200)));
    let mut stdout = io::stdout();
    let mut closing = false;
    let end = loop {
        if !closing && input_done.try_recv().is_ok() {
            closing = true;
            if client.close(close_code::NORMAL, "").is_err() {
                break SessionEnd::InputDone;
            }
        }
        match client.recv() {
            Ok(Received::Text(text)) => {
                let _ = writeln!(stdout, "{text}");
            }
            Ok(Received::Binary(data)) => {
                let _ = writeln!(stdout, "<binary, {} bytes>", data.len());
            }
            Ok(Received::Ping(_) | Received::Pong(_)) => {}
            Ok(Received::Close(code, reason)) => {
                let code = code.map_or("none".to_owned(), |c| c.to_string());
                eprintln!("server closed: code {code} {reason}");
                if closing {
                    break SessionEnd::InputDone;
                }
                break SessionEnd::Lost(format!("closed by server ({code})"));
            }
            Err(ClientError::Io(e))
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) if closing => {
                eprintln!("{e}");
                break SessionEnd::InputDone;
            }
            Err(e) => break SessionEnd::Lost(e.to_string()),
        }
        let _ = stdout.flush();
    };
    writer.set(None);
    end
}
