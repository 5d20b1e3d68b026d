//! The Node.js addon of sealrelay: the Rust client core (`sealrelay::client::session`) behind
//! Promises. Every check is the crate's own code; this file moves arguments in and results out.
//! Results cross as JSON text (the CLI's `--json` shapes), parsed by `index.mjs`; an error's
//! `code` is its kind (`Refused`, `NotFound`, …, chosen as the CLI chooses its exit status)
//! and its message the CLI's one line. Work runs on the addon's tokio runtime, never on the
//! JavaScript thread.

use std::io::Read;
use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};

use napi::bindgen_prelude::*;
use napi_derive::napi;
use sealrelay::client::session::{json, verify_receipt as verify, AgentSession, UserSession};
use sealrelay::client::{files, Delivered, GrantRequest, Retry};
use sealrelay::core::vectors as formats;
use sealrelay::ids::{hex, parse_hex, EnvelopeId, GrantId};

/// An error as JavaScript sees it: `code` names the kind.
fn js(e: sealrelay::error::Error) -> napi::Error {
    let code = match e.exit_code() {
        1 => "Verification",
        3 => "BadInput",
        4 => "Conflict",
        5 => "Storage",
        6 => "Refused",
        7 => "Unavailable",
        8 => "NotFound",
        9 => "KeyAlert",
        _ => "Internal",
    };
    napi::Error::new(Status::GenericFailure, format!("{code}\u{1f}{e}"))
}

fn bad(msg: &str) -> napi::Error {
    napi::Error::new(Status::GenericFailure, format!("BadInput\u{1f}{msg}"))
}

fn grant_id(s: &str) -> Result<GrantId> {
    parse_hex(s)
        .map(GrantId)
        .map_err(|_| bad("a grant id is the 32 hex digits `grants` lists"))
}

fn envelope_id(s: &str) -> Result<EnvelopeId> {
    parse_hex(s)
        .map(EnvelopeId)
        .map_err(|_| bad("an envelope id is the 32 hex digits `inbox` lists"))
}

/// Runs blocking work (a session's calls block on the network and on the data's source) on
/// the runtime's blocking pool, with a runtime handle for the futures inside.
async fn off_thread<T: Send + 'static>(
    f: impl FnOnce(&tokio::runtime::Handle) -> sealrelay::error::Result<T> + Send + 'static,
) -> Result<T> {
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || f(&handle))
        .await
        .map_err(|_| napi::Error::new(Status::GenericFailure, "Internal\u{1f}a task failed"))?
        .map_err(js)
}

/// An agent.
#[napi]
pub struct Agent {
    session: Arc<AgentSession>,
}

#[napi]
impl Agent {
    #[napi(constructor)]
    pub fn new(identity: String, relay: Option<String>) -> Result<Self> {
        Ok(Agent {
            session: Arc::new(
                AgentSession::open(&PathBuf::from(identity), relay.as_deref()).map_err(js)?,
            ),
        })
    }

    #[napi]
    pub async fn grants(&self) -> Result<String> {
        let s = self.session.clone();
        off_thread(move |rt| {
            let grants = rt.block_on(s.grants())?;
            Ok(serde_json::Value::Array(grants.iter().map(json::grant).collect()).to_string())
        })
        .await
    }

    #[napi]
    pub async fn status(&self, grant: String) -> Result<String> {
        let id = grant_id(&grant)?;
        let s = self.session.clone();
        off_thread(move |rt| Ok(json::status(&rt.block_on(s.status(id))?).to_string())).await
    }

    /// Starts a delivery for `grant`: `write` the data piece by piece, then `finish`.
    #[napi]
    pub fn start_delivery(&self, grant: String, retry_attempts: Option<u32>) -> Result<Delivery> {
        let id = grant_id(&grant)?;
        // Two pieces in flight at most: a fast source waits for the sealing, memory stays flat.
        let (tx, rx) = sync_channel::<Piece>(2);
        let s = self.session.clone();
        let attempts = retry_attempts.unwrap_or(3).max(1);
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let run = move |rt: tokio::runtime::Handle| {
            let mut reader = Pieces {
                rx,
                pending: Vec::new(),
                at: 0,
            };
            let result = rt.block_on(s.deliver(id, &mut reader, Retry::times(attempts)));
            let _ = done_tx.send(result);
        };
        // The sealing reads the pieces as they come, on a blocking thread of the addon's
        // runtime (never the JavaScript thread).
        napi::bindgen_prelude::spawn(async move {
            let h = tokio::runtime::Handle::current();
            let _ = tokio::task::spawn_blocking(move || run(h)).await;
        });
        Ok(Delivery {
            tx: Arc::new(Mutex::new(Some(tx))),
            done: Arc::new(tokio::sync::Mutex::new(Some(done_rx))),
        })
    }
}

/// What JavaScript hands the sealing: a piece, the end, or the source's failure.
enum Piece {
    Data(Vec<u8>),
    End,
    Fail(String),
}

/// Pieces written from JavaScript, as a `Read`. Only an explicit `End` ends the data: a channel
/// closed without it (the `Delivery` dropped mid-stream, its worker torn down) is a failure,
/// so what was read so far is never submitted as if it were all.
struct Pieces {
    rx: Receiver<Piece>,
    pending: Vec<u8>,
    at: usize,
}

impl Read for Pieces {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.pending.len() {
            match self.rx.recv() {
                Ok(Piece::Data(piece)) => {
                    self.pending = piece;
                    self.at = 0;
                }
                Ok(Piece::End) => return Ok(0),
                Ok(Piece::Fail(why)) => return Err(std::io::Error::other(why)),
                Err(_) => {
                    return Err(std::io::Error::other(
                        "the delivery was dropped before its data ended",
                    ))
                }
            }
        }
        let n = (self.pending.len() - self.at).min(buf.len());
        buf[..n].copy_from_slice(&self.pending[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

type Done = tokio::sync::oneshot::Receiver<sealrelay::error::Result<Delivered>>;

/// A delivery in progress.
#[napi]
pub struct Delivery {
    tx: Arc<Mutex<Option<SyncSender<Piece>>>>,
    done: Arc<tokio::sync::Mutex<Option<Done>>>,
}

#[napi]
impl Delivery {
    /// Hands one piece to the sealing; resolves once it is taken (back-pressure).
    #[napi]
    pub async fn write(&self, piece: Buffer) -> Result<()> {
        let bytes = piece.to_vec();
        let tx = self.tx.lock().ok().and_then(|g| g.clone());
        let Some(tx) = tx else {
            return Err(bad("this delivery is finished"));
        };
        // A send that fails means the sealing stopped early: reject, so that the caller stops
        // reading its source and asks `finish` why.
        let sent = tokio::task::spawn_blocking(move || tx.send(Piece::Data(bytes))).await;
        match sent {
            Ok(Ok(())) => Ok(()),
            _ => Err(napi::Error::new(
                Status::GenericFailure,
                "Stopped\u{1f}the sealing stopped",
            )),
        }
    }

    /// The source failed: the sealing stops and nothing is submitted.
    #[napi]
    pub async fn abort(&self, why: String) -> Result<()> {
        let tx = self.tx.lock().ok().and_then(|mut g| g.take());
        if let Some(tx) = tx {
            let _ = tokio::task::spawn_blocking(move || tx.send(Piece::Fail(why))).await;
        }
        let rx = self.done.lock().await.take();
        if let Some(rx) = rx {
            let _ = rx.await;
        }
        Ok(())
    }

    /// Ends the data and waits for the relay's answer.
    #[napi]
    pub async fn finish(&self) -> Result<String> {
        let tx = self.tx.lock().ok().and_then(|mut g| g.take());
        if let Some(tx) = tx {
            // The end, said explicitly (a closed channel alone is a failure).
            let _ = tokio::task::spawn_blocking(move || tx.send(Piece::End)).await;
        }
        let rx = self.done.lock().await.take();
        let Some(rx) = rx else {
            return Err(bad("this delivery is finished"));
        };
        let d = rx
            .await
            .map_err(|_| {
                napi::Error::new(Status::GenericFailure, "Internal\u{1f}the delivery stopped")
            })?
            .map_err(js)?;
        Ok(json::delivered(&d).to_string())
    }
}

impl Drop for Delivery {
    /// Dropped before `finish`: the sealing is told the source failed (nothing is submitted).
    fn drop(&mut self) {
        if let Some(tx) = self.tx.lock().ok().and_then(|mut g| g.take()) {
            let _ = tx.try_send(Piece::Fail("the delivery was dropped".into()));
        }
    }
}

/// A person.
#[napi]
pub struct User {
    session: Arc<UserSession>,
}

#[napi]
impl User {
    #[napi(constructor)]
    pub fn new(identity: String, relay: Option<String>) -> Result<Self> {
        Ok(User {
            session: Arc::new(
                UserSession::open(&PathBuf::from(identity), relay.as_deref()).map_err(js)?,
            ),
        })
    }

    #[napi]
    pub async fn grant(
        &self,
        agent: String,
        resource: String,
        purpose: String,
        ttl_secs: u32,
        max_bytes: f64,
    ) -> Result<String> {
        let req = GrantRequest {
            agent,
            resource,
            purpose,
            ttl_secs: u64::from(ttl_secs),
            max_bytes: if max_bytes.is_finite() && max_bytes >= 0.0 {
                max_bytes as u64
            } else {
                return Err(bad("maxBytes must be a non-negative number"));
            },
        };
        let s = self.session.clone();
        off_thread(move |rt| Ok(hex(rt.block_on(s.grant(&req))?))).await
    }

    #[napi]
    pub async fn inbox(&self) -> Result<String> {
        let s = self.session.clone();
        off_thread(move |rt| Ok(json::inbox(&rt.block_on(s.inbox())?).to_string())).await
    }

    #[napi]
    pub async fn fetch(&self, envelope: String, out: String) -> Result<String> {
        let id = envelope_id(&envelope)?;
        let s = self.session.clone();
        off_thread(move |rt| {
            Ok(json::fetched(&rt.block_on(s.fetch(id, &PathBuf::from(out)))?).to_string())
        })
        .await
    }

    #[napi]
    pub async fn approvals(&self) -> Result<String> {
        let s = self.session.clone();
        off_thread(move |rt| {
            let list = rt.block_on(s.approvals())?;
            Ok(serde_json::Value::Array(list.iter().map(json::grant).collect()).to_string())
        })
        .await
    }

    #[napi]
    pub async fn approve(&self, grant: String) -> Result<String> {
        let id = grant_id(&grant)?;
        let s = self.session.clone();
        off_thread(move |rt| Ok(json::grant(&rt.block_on(s.approve(id))?).to_string())).await
    }

    #[napi]
    pub async fn deny(&self, grant: String, reason: String) -> Result<String> {
        let id = grant_id(&grant)?;
        let s = self.session.clone();
        off_thread(move |rt| Ok(json::grant(&rt.block_on(s.deny(id, &reason))?).to_string())).await
    }
}

/// Verifies a receipt file offline.
#[napi]
pub async fn verify_receipt(
    receipt: String,
    authority: String,
    log_key: String,
    witnesses: Vec<String>,
    quorum: Option<u32>,
) -> Result<String> {
    off_thread(move |_| {
        let w: Vec<PathBuf> = witnesses.into_iter().map(PathBuf::from).collect();
        let v = verify(
            &PathBuf::from(receipt),
            &PathBuf::from(authority),
            &PathBuf::from(log_key),
            &w,
            quorum.map(|q| q as usize),
        )?;
        Ok(json::verified(&v).to_string())
    })
    .await
}

/// Seals the file at `input` to an age recipient into `out`; the ciphertext's length.
#[napi]
pub async fn seal(recipient: String, input: String, out: String) -> Result<f64> {
    off_thread(move |_| {
        files::seal_path(&recipient, &PathBuf::from(input), &PathBuf::from(out)).map(|n| n as f64)
    })
    .await
}

/// Opens the envelope at `input` with an identity file into `out`; the plaintext's length.
#[napi(js_name = "open")]
pub async fn open_envelope(identity: String, input: String, out: String) -> Result<f64> {
    off_thread(move |_| {
        files::open_path(
            &PathBuf::from(identity),
            &PathBuf::from(input),
            &PathBuf::from(out),
        )
        .map(|n| n as f64)
    })
    .await
}

/// Verifies a signed statement under its signer's key; its fields as JSON text.
#[napi]
pub fn verify_statement(
    statement_type: String,
    statement: Buffer,
    signature: Buffer,
    signer: Buffer,
) -> Result<String> {
    formats::verify_statement(&statement_type, &statement, &signature, &signer)
        .map(|v| v.to_string())
        .map_err(js)
}

/// Decodes a protocol frame (`request` or `response`) strictly; the message as JSON text.
#[napi]
pub fn decode_frame(kind: String, frame: Buffer) -> Result<String> {
    formats::decode_wire_frame(&kind, &frame)
        .map(|v| v.to_string())
        .map_err(js)
}

/// Verifies a checkpoint note under the log's key and each witness's; JSON text.
#[napi]
pub fn verify_checkpoint(note: String, log_key: String, witnesses: Vec<String>) -> Result<String> {
    let keys: Vec<&str> = witnesses.iter().map(String::as_str).collect();
    formats::verify_checkpoint(&note, &log_key, &keys)
        .map(|v| v.to_string())
        .map_err(js)
}
