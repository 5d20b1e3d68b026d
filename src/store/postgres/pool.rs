//! Connections to PostgreSQL, each owned by a worker thread of the store's own: a store call
//! hands its work to a free worker and waits for the answer. The synchronous client runs its own
//! small runtime, which must never run inside the relay's; this keeps them apart. A connection
//! that fails is dropped and made again for the next call, so the store comes back by itself
//! after the database restarts.

use std::sync::{mpsc, Arc, Mutex};

use crate::error::{Error, ErrorKind, Result};

/// A connection of one worker, with the statements it has prepared.
pub struct Conn {
    pub client: postgres::Client,
    pub statements: Statements,
}

/// Statements prepared once per connection and kept (parsed and planned once, and one round
/// trip per use instead of two). Every SQL text is a constant of the store's.
#[derive(Default)]
pub struct Statements(std::collections::HashMap<&'static str, postgres::Statement>);

impl Statements {
    /// The statement for `sql`, prepared on `client` (the connection, or a transaction of it)
    /// the first time.
    pub fn get(
        &mut self,
        client: &mut impl postgres::GenericClient,
        sql: &'static str,
    ) -> std::result::Result<postgres::Statement, postgres::Error> {
        if let Some(s) = self.0.get(sql) {
            return Ok(s.clone());
        }
        let s = client.prepare(sql)?;
        self.0.insert(sql, s.clone());
        Ok(s)
    }
}

/// Longest a store call waits for its answer (a worker may still be waiting on the database;
/// the caller fails instead of hanging).
const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

type Job = Box<dyn FnOnce(&mut Slot, &postgres::Config) + Send>;

/// A worker's connection, or why the last attempt to make one failed.
#[derive(Default)]
struct Slot {
    conn: Option<Conn>,
    failure: Option<Error>,
}

impl Slot {
    /// Whether there is no usable connection.
    fn broken(&self) -> bool {
        self.conn.as_ref().is_none_or(|c| c.client.is_closed())
    }

    /// Makes the connection again; when the database cannot be reached or refuses it, logs
    /// and keeps why.
    fn reconnect(&mut self, config: &postgres::Config) {
        match connect(config) {
            Ok(conn) => {
                self.conn = Some(conn);
                self.failure = None;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot connect to the database");
                self.conn = None;
                self.failure = Some(e);
            }
        }
    }
}

/// A new connection.
fn connect(config: &postgres::Config) -> Result<Conn> {
    config
        .connect(postgres::NoTls)
        .map(|client| Conn {
            client,
            statements: Statements::default(),
        })
        .map_err(connect_err)
}

/// Why a connection could not be made, in one line that never holds the URL or its password.
/// A server that refuses the credentials (28P01 wrong password, 28000 no such role or no
/// pg_hba.conf entry) or has no such database (3D000) needs a setting changed, and says which
/// (BadInput); anything else is "unavailable, try again".
pub fn connect_err(e: postgres::Error) -> Error {
    use postgres::error::SqlState;
    let refused = e.as_db_error().and_then(|db| {
        let code = db.code();
        let said = format!("{}: {}", code.code(), db.message());
        if *code == SqlState::INVALID_PASSWORD
            || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
        {
            Some(Error::bad_input(format!(
                "the database refused the credentials ({said}): check the user and password in the `store` URL (SEALRELAY_STORE) and the server's pg_hba.conf"
            )))
        } else if *code == SqlState::INVALID_CATALOG_NAME {
            Some(Error::bad_input(format!(
                "the database does not exist ({said}): create it (createdb), or fix the database name in the `store` URL (SEALRELAY_STORE)"
            )))
        } else {
            None
        }
    });
    refused.unwrap_or_else(|| pg_err(e))
}

/// Why a store call found no connection: always "unavailable" (a serving relay's callers retry,
/// and the relay answers clients without the detail), with what the database said, for the log.
fn unavailable(failure: Option<&Error>) -> Error {
    match failure {
        Some(e) if e.kind() == ErrorKind::Unavailable => e.clone(),
        Some(e) => Error::new(
            ErrorKind::Unavailable,
            format!("the database is unavailable, try again ({})", e.message()),
        ),
        None => Error::new(
            ErrorKind::Unavailable,
            "the database is unavailable, try again (cannot connect)",
        ),
    }
}

pub struct Pool {
    jobs: Mutex<mpsc::Sender<Job>>,
}

/// A database error as the relay reports it: one line, "unavailable, try again" (the URL and
/// its password never appear).
pub fn pg_err(e: postgres::Error) -> Error {
    let detail = match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    };
    Error::new(
        ErrorKind::Unavailable,
        format!("the database is unavailable, try again ({detail})"),
    )
}

impl Pool {
    /// Starts `size` workers that connect with `config` on first use.
    pub fn new(config: postgres::Config, size: usize) -> Result<Self> {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..size.max(1) {
            let rx = rx.clone();
            let config = config.clone();
            std::thread::Builder::new()
                .name(format!("sealrelay-pg-{i}"))
                .spawn(move || {
                    let mut slot = Slot::default();
                    loop {
                        let job = match rx.lock() {
                            Ok(rx) => match rx.recv() {
                                Ok(job) => job,
                                Err(_) => return,
                            },
                            Err(_) => return,
                        };
                        if slot.broken() {
                            slot.reconnect(&config);
                        }
                        job(&mut slot, &config);
                    }
                })
                .map_err(|e| Error::internal(format!("cannot start a database worker: {e}")))?;
        }
        Ok(Pool {
            jobs: Mutex::new(tx),
        })
    }

    /// Connects a worker now, for a start-up to fail on the real reason: a database that
    /// refuses the credentials or does not exist is a setting to fix ([`connect_err`]), not
    /// "unavailable, try again" as a store call later reports it.
    pub fn connect_now(&self) -> Result<()> {
        self.submit(
            Some(CALL_TIMEOUT),
            |slot: &mut Slot, _: &postgres::Config| match (&slot.conn, &slot.failure) {
                (Some(_), _) => Ok(()),
                (None, Some(e)) => Err(e.clone()),
                (None, None) => Err(unavailable(None)),
            },
        )
    }

    /// Runs `f` on a connection and waits for its result. A connection found broken by the
    /// call (the server restarted since its last use, say) is made again and `f` runs once
    /// more, unless `f` cleared its `retryable` flag first (it sent something whose outcome it
    /// cannot know, a COMMIT). A connection that stays broken is dropped (the next call
    /// connects again).
    pub fn run<T: Send + 'static>(
        &self,
        f: impl Fn(&mut Conn, &mut bool) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.run_within(f, Some(CALL_TIMEOUT))
    }

    /// [`Pool::run`] for a write whose outcome its caller must know: waits for the answer
    /// however long the database takes. Each statement before the COMMIT is bounded by the
    /// server (`statement_timeout`, `lock_timeout`) and a dead connection by TCP keepalives;
    /// a caller told "try again" after a time limit while the worker went on to COMMIT would
    /// have its write stored and reported failed (a retried submission then refused as used,
    /// a retried grant made twice).
    pub fn run_to_end<T: Send + 'static>(
        &self,
        f: impl Fn(&mut Conn, &mut bool) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.run_within(f, None)
    }

    fn run_within<T: Send + 'static>(
        &self,
        f: impl Fn(&mut Conn, &mut bool) -> Result<T> + Send + 'static,
        limit: Option<std::time::Duration>,
    ) -> Result<T> {
        self.submit(limit, move |slot: &mut Slot, config: &postgres::Config| {
            let attempt = |slot: &mut Slot, retryable: &mut bool| {
                let Slot { conn, failure } = slot;
                match conn.as_mut() {
                    None => Err(unavailable(failure.as_ref())),
                    Some(conn) => f(conn, retryable),
                }
            };
            let mut retryable = true;
            let mut result = attempt(slot, &mut retryable);
            if result.is_err() {
                // A failure may come from a statement the server no longer knows (a schema
                // changed under it): prepare afresh next time.
                if let Some(conn) = slot.conn.as_mut() {
                    conn.statements.0.clear();
                }
            }
            if result.is_err() && slot.broken() {
                slot.reconnect(config);
                if retryable && slot.conn.is_some() {
                    result = attempt(slot, &mut retryable);
                }
                if result.is_err() && slot.broken() {
                    slot.conn = None;
                }
            }
            result
        })
    }

    /// Hands `work` to a free worker and waits for its answer (at most `limit`: then the
    /// caller is told the database did not answer, and the work is skipped if no worker has
    /// begun it yet).
    fn submit<T: Send + 'static>(
        &self,
        limit: Option<std::time::Duration>,
        work: impl FnOnce(&mut Slot, &postgres::Config) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = mpsc::sync_channel(1);
        let abandoned = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let given_up = abandoned.clone();
        let job: Job = Box::new(move |slot: &mut Slot, config: &postgres::Config| {
            if given_up.load(std::sync::atomic::Ordering::Acquire) {
                return;
            }
            let _ = tx.send(work(slot, config));
        });
        self.jobs
            .lock()
            .map_err(|_| Error::internal("the database pool lock is poisoned"))?
            .send(job)
            .map_err(|_| Error::new(ErrorKind::Unavailable, "the database pool has stopped"))?;
        let Some(limit) = limit else {
            return rx
                .recv()
                .unwrap_or_else(|_| Err(Error::internal("a database worker stopped")));
        };
        match rx.recv_timeout(limit) {
            Ok(result) => result,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                abandoned.store(true, std::sync::atomic::Ordering::Release);
                Err(Error::new(
                    ErrorKind::Unavailable,
                    "the database is unavailable, try again (no answer in time)",
                ))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                Err(Error::internal("a database worker stopped"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use super::*;

    /// Helper-found: a store write was given up on after the call's time limit while its worker
    /// went on to COMMIT, so a batch reported "try again" had been stored. A write is waited
    /// for to its end now; a call given up on before any worker began it is never begun.
    #[test]
    fn a_call_given_up_on_is_not_begun_and_a_write_is_waited_for() {
        let mut config = postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(1)
            .user("nobody")
            .connect_timeout(Duration::from_millis(200));
        let pool = Pool::new(config, 1).unwrap();
        let began = Arc::new(AtomicBool::new(false));
        std::thread::scope(|s| {
            // The only worker is busy with a write for 600 ms …
            let write = s.spawn(|| {
                pool.submit(None, |_, _| {
                    std::thread::sleep(Duration::from_millis(600));
                    Ok(7)
                })
            });
            std::thread::sleep(Duration::from_millis(100));
            // … so a call limited to 100 ms is told the database did not answer.
            let flag = began.clone();
            let e = pool
                .submit(Some(Duration::from_millis(100)), move |_, _| {
                    flag.store(true, Ordering::SeqCst);
                    Ok(())
                })
                .unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Unavailable);
            assert_eq!(write.join().unwrap().unwrap(), 7);
        });
        // Everything queued before this has been taken by the worker.
        pool.submit(None, |_, _| Ok(())).unwrap();
        assert!(!began.load(Ordering::SeqCst), "a call given up on was run");
    }
}
