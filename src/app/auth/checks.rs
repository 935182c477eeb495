//! Password checks on a thread of their own: an argon2 hash costs tens of milliseconds by
//! design, which the event loop must not spend while every other client waits. The loop
//! hands a login over ([`PasswordChecks::submit`]), the thread checks it and wakes the loop,
//! which collects the outcome ([`PasswordChecks::finished`]) and answers the request.

use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread;

use mio::Waker;

use super::users::Users;
use crate::server::ConnId;

/// Logins waiting for the thread; beyond them a login is answered 503 at once, so a flood
/// of logins costs the server one core at most and a bounded queue.
pub const QUEUE: usize = 64;

/// A login to check.
#[derive(Debug)]
struct Job {
    id: ConnId,
    name: String,
    password: String,
}

/// A checked login: the connection waiting for it, the name, and whether the password is
/// the name's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checked {
    /// The connection whose request waits.
    pub id: ConnId,
    /// The name it asked for.
    pub name: String,
    /// The password matched.
    pub ok: bool,
}

/// The loop's handle on the checking thread (which ends when this is dropped).
#[derive(Debug)]
pub struct PasswordChecks {
    jobs: SyncSender<Job>,
    done: Receiver<Checked>,
}

impl PasswordChecks {
    /// Starts the thread; it wakes the loop with `waker` after each check.
    pub fn start(users: Users, waker: Arc<Waker>) -> std::io::Result<Self> {
        let (jobs, queue) = mpsc::sync_channel::<Job>(QUEUE);
        let (done_tx, done) = mpsc::channel();
        thread::Builder::new()
            .name("password-checks".into())
            .spawn(move || {
                for job in queue {
                    let ok = users.check(&job.name, &job.password);
                    let checked = Checked {
                        id: job.id,
                        name: job.name,
                        ok,
                    };
                    if done_tx.send(checked).is_err() {
                        break;
                    }
                    let _ = waker.wake();
                }
            })?;
        Ok(PasswordChecks { jobs, done })
    }

    /// Queues `id`'s login; `false` when [`QUEUE`] logins already wait (or the thread ended).
    pub fn submit(&self, id: ConnId, name: String, password: String) -> bool {
        match self.jobs.try_send(Job { id, name, password }) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
        }
    }

    /// The checks finished since the last call.
    pub fn finished(&self) -> Vec<Checked> {
        self.done.try_iter().collect()
    }
}
