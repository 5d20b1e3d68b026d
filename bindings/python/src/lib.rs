//! `sealrelay._native`: the Rust client core for Python. Everything that checks anything
//! (directory entries, statements, receipts, checkpoints, witnesses, key alerts) is the crate's
//! own code (`sealrelay::client::session`); this file only moves arguments in and results out.
//! Results cross as JSON text (the shapes of the CLI's `--json`), which the pure-Python layer
//! (`python/sealrelay/`) turns into dicts; errors cross as the exception of their kind, with
//! the CLI's one-line message. The GIL is released for all I/O and crypto.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use sealrelay::client::session::{json, verify_receipt as verify, AgentSession, UserSession};
use sealrelay::client::{files, GrantRequest, Retry};
use sealrelay::core::vectors as formats;
use sealrelay::error::{Error, ErrorKind};
use sealrelay::ids::{parse_hex, EnvelopeId, GrantId};

create_exception!(sealrelay, SealrelayError, PyException);
create_exception!(sealrelay, VerificationError, SealrelayError);
create_exception!(sealrelay, BadInputError, SealrelayError);
create_exception!(sealrelay, ConflictError, SealrelayError);
create_exception!(sealrelay, StorageError, SealrelayError);
create_exception!(sealrelay, RefusedError, SealrelayError);
create_exception!(sealrelay, UnavailableError, SealrelayError);
create_exception!(sealrelay, NotFoundError, SealrelayError);
create_exception!(sealrelay, KeyAlertError, SealrelayError);
create_exception!(sealrelay, InternalError, SealrelayError);

/// The exception of `e`'s kind, chosen as the CLI chooses its exit status (a refusal the relay
/// answered is "refused", not "unavailable"), with the CLI's message.
fn raise(e: Error) -> PyErr {
    let msg = e.to_string();
    match e.exit_code() {
        1 => VerificationError::new_err(msg),
        3 => BadInputError::new_err(msg),
        4 => ConflictError::new_err(msg),
        5 => StorageError::new_err(msg),
        6 => RefusedError::new_err(msg),
        7 => UnavailableError::new_err(msg),
        8 => NotFoundError::new_err(msg),
        9 => KeyAlertError::new_err(msg),
        _ => match e.kind() {
            ErrorKind::Internal => InternalError::new_err(msg),
            _ => SealrelayError::new_err(msg),
        },
    }
}

/// One runtime for the process, shared by every client (its threads do the network I/O).
fn runtime() -> PyResult<&'static tokio::runtime::Runtime> {
    static RT: OnceLock<std::result::Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(|e| InternalError::new_err(format!("cannot start the async runtime: {e}")))
}

/// Runs `f` on the runtime with the GIL released.
fn blocking<T: Send>(
    py: Python<'_>,
    f: impl std::future::Future<Output = sealrelay::error::Result<T>> + Send,
) -> PyResult<T> {
    let rt = runtime()?;
    py.detach(|| rt.block_on(f)).map_err(raise)
}

fn text(v: serde_json::Value) -> String {
    v.to_string()
}

fn grant_id(s: &str) -> PyResult<GrantId> {
    parse_hex(s)
        .map(GrantId)
        .map_err(|_| BadInputError::new_err("a grant id is the 32 hex digits `grants` lists"))
}

fn envelope_id(s: &str) -> PyResult<EnvelopeId> {
    parse_hex(s)
        .map(EnvelopeId)
        .map_err(|_| BadInputError::new_err("an envelope id is the 32 hex digits `inbox` lists"))
}

/// Pulls chunks from a Python callable (`next_chunk() -> bytes`, empty at the end) as a
/// `Read`, taking the GIL only while it calls it: an iterator of bytes or a binary file,
/// streamed, never held whole.
struct PyChunks {
    next: Py<PyAny>,
    pending: Vec<u8>,
    at: usize,
    done: bool,
    /// What the source raised: raised again as it was (a `KeyboardInterrupt` stays one).
    failed: Option<PyErr>,
}

impl Read for PyChunks {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.pending.len() && !self.done {
            let chunk: PyResult<Vec<u8>> = Python::attach(|py| {
                let got = self.next.call0(py)?;
                let bytes = got.bind(py).cast::<PyBytes>().map_err(|_| {
                    BadInputError::new_err("the data must yield bytes (not str or other objects)")
                })?;
                Ok(bytes.as_bytes().to_vec())
            });
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    self.failed = Some(e);
                    return Err(std::io::Error::other("the data source raised an exception"));
                }
            };
            if chunk.is_empty() {
                self.done = true;
            }
            self.pending = chunk;
            self.at = 0;
        }
        let n = (self.pending.len() - self.at).min(buf.len());
        buf[..n].copy_from_slice(&self.pending[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// An agent (`sealrelay.AgentClient` wraps it).
#[pyclass(module = "sealrelay._native", frozen)]
struct Agent {
    session: AgentSession,
}

#[pymethods]
impl Agent {
    #[new]
    #[pyo3(signature = (identity, relay=None))]
    fn new(identity: PathBuf, relay: Option<String>) -> PyResult<Self> {
        Ok(Agent {
            session: AgentSession::open(&identity, relay.as_deref()).map_err(raise)?,
        })
    }

    fn grants(&self, py: Python<'_>) -> PyResult<String> {
        let grants = blocking(py, self.session.grants())?;
        Ok(text(serde_json::Value::Array(
            grants.iter().map(json::grant).collect(),
        )))
    }

    /// Delivers from a file at `path`.
    #[pyo3(signature = (grant, path, retry_attempts=3))]
    fn deliver_path(
        &self,
        py: Python<'_>,
        grant: &str,
        path: PathBuf,
        retry_attempts: u32,
    ) -> PyResult<String> {
        let id = grant_id(grant)?;
        let mut file = open_input(&path).map_err(raise)?;
        let d = blocking(
            py,
            self.session
                .deliver(id, &mut file, Retry::times(retry_attempts.max(1))),
        )?;
        Ok(text(json::delivered(&d)))
    }

    /// Delivers what `next_chunk()` yields until it returns empty bytes.
    #[pyo3(signature = (grant, next_chunk, retry_attempts=3))]
    fn deliver_chunks(
        &self,
        py: Python<'_>,
        grant: &str,
        next_chunk: Py<PyAny>,
        retry_attempts: u32,
    ) -> PyResult<String> {
        let id = grant_id(grant)?;
        let mut reader = PyChunks {
            next: next_chunk,
            pending: Vec::new(),
            at: 0,
            done: false,
            failed: None,
        };
        let result = blocking(
            py,
            self.session
                .deliver(id, &mut reader, Retry::times(retry_attempts.max(1))),
        );
        // The source's own exception first: nothing was submitted.
        if let Some(e) = reader.failed.take() {
            return Err(e);
        }
        Ok(text(json::delivered(&result?)))
    }

    fn status(&self, py: Python<'_>, grant: &str) -> PyResult<String> {
        let id = grant_id(grant)?;
        Ok(text(json::status(&blocking(py, self.session.status(id))?)))
    }
}

fn open_input(path: &Path) -> sealrelay::error::Result<std::fs::File> {
    std::fs::File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            Error::not_found(format!("{} does not exist: check the path", path.display()))
        }
        _ => Error::io(format!("cannot read {}: {e}", path.display())),
    })
}

/// A person (`sealrelay.UserClient` wraps it).
#[pyclass(module = "sealrelay._native", frozen)]
struct User {
    session: UserSession,
}

#[pymethods]
impl User {
    #[new]
    #[pyo3(signature = (identity, relay=None))]
    fn new(identity: PathBuf, relay: Option<String>) -> PyResult<Self> {
        Ok(User {
            session: UserSession::open(&identity, relay.as_deref()).map_err(raise)?,
        })
    }

    #[pyo3(signature = (agent, resource, purpose="", ttl_secs=3600, max_bytes=1<<30))]
    fn grant(
        &self,
        py: Python<'_>,
        agent: String,
        resource: String,
        purpose: &str,
        ttl_secs: u64,
        max_bytes: u64,
    ) -> PyResult<String> {
        let req = GrantRequest {
            agent,
            resource,
            purpose: purpose.to_owned(),
            ttl_secs,
            max_bytes,
        };
        let id = blocking(py, self.session.grant(&req))?;
        Ok(sealrelay::ids::hex(id))
    }

    fn inbox(&self, py: Python<'_>) -> PyResult<String> {
        Ok(text(json::inbox(&blocking(py, self.session.inbox())?)))
    }

    fn fetch(&self, py: Python<'_>, envelope: &str, out: PathBuf) -> PyResult<String> {
        let id = envelope_id(envelope)?;
        Ok(text(json::fetched(&blocking(
            py,
            self.session.fetch(id, &out),
        )?)))
    }

    fn approvals(&self, py: Python<'_>) -> PyResult<String> {
        let list = blocking(py, self.session.approvals())?;
        Ok(text(serde_json::Value::Array(
            list.iter().map(json::grant).collect(),
        )))
    }

    fn approve(&self, py: Python<'_>, grant: &str) -> PyResult<String> {
        let id = grant_id(grant)?;
        Ok(text(json::grant(&blocking(py, self.session.approve(id))?)))
    }

    fn deny(&self, py: Python<'_>, grant: &str, reason: &str) -> PyResult<String> {
        let id = grant_id(grant)?;
        Ok(text(json::grant(&blocking(
            py,
            self.session.deny(id, reason),
        )?)))
    }
}

/// Verifies a receipt file offline.
#[pyfunction]
#[pyo3(signature = (receipt, authority, log_key, witnesses=Vec::new(), quorum=None))]
fn verify_receipt(
    py: Python<'_>,
    receipt: PathBuf,
    authority: PathBuf,
    log_key: PathBuf,
    witnesses: Vec<PathBuf>,
    quorum: Option<usize>,
) -> PyResult<String> {
    let v = py
        .detach(|| verify(&receipt, &authority, &log_key, &witnesses, quorum))
        .map_err(raise)?;
    Ok(text(json::verified(&v)))
}

/// Seals the file at `input` to an age recipient into `out` (written whole, then renamed).
#[pyfunction]
fn seal(py: Python<'_>, recipient: &str, input: PathBuf, out: PathBuf) -> PyResult<u64> {
    py.detach(|| files::seal_path(recipient, &input, &out))
        .map_err(raise)
}

/// Opens the envelope at `input` with an identity file into `out` (kept only if it all
/// authenticated).
#[pyfunction]
fn open(py: Python<'_>, identity: PathBuf, input: PathBuf, out: PathBuf) -> PyResult<u64> {
    py.detach(|| files::open_path(&identity, &input, &out))
        .map_err(raise)
}

/// Verifies a signed statement (type tag, bytes, signature, signer's Ed25519 key) and returns
/// its fields as `docs/vectors/` lists them, as JSON text.
#[pyfunction]
fn verify_statement(
    py: Python<'_>,
    statement_type: &str,
    statement: Vec<u8>,
    signature: Vec<u8>,
    signer: Vec<u8>,
) -> PyResult<String> {
    py.detach(|| formats::verify_statement(statement_type, &statement, &signature, &signer))
        .map(text)
        .map_err(raise)
}

/// Decodes a protocol frame (`request` or `response`) strictly; the message as JSON text.
#[pyfunction]
fn decode_frame(kind: &str, frame: Vec<u8>) -> PyResult<String> {
    formats::decode_wire_frame(kind, &frame)
        .map(text)
        .map_err(raise)
}

/// Verifies a checkpoint note under the log's verifier key and each witness's; origin, size,
/// root and cosignature times as JSON text.
#[pyfunction]
#[pyo3(signature = (note, log_key, witnesses=Vec::new()))]
fn verify_checkpoint(note: &str, log_key: &str, witnesses: Vec<String>) -> PyResult<String> {
    let keys: Vec<&str> = witnesses.iter().map(String::as_str).collect();
    formats::verify_checkpoint(note, log_key, &keys)
        .map(text)
        .map_err(raise)
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<Agent>()?;
    m.add_class::<User>()?;
    m.add_function(wrap_pyfunction!(verify_receipt, m)?)?;
    m.add_function(wrap_pyfunction!(seal, m)?)?;
    m.add_function(wrap_pyfunction!(open, m)?)?;
    m.add_function(wrap_pyfunction!(verify_statement, m)?)?;
    m.add_function(wrap_pyfunction!(decode_frame, m)?)?;
    m.add_function(wrap_pyfunction!(verify_checkpoint, m)?)?;
    for (name, ty) in [
        ("SealrelayError", py.get_type::<SealrelayError>()),
        ("VerificationError", py.get_type::<VerificationError>()),
        ("BadInputError", py.get_type::<BadInputError>()),
        ("ConflictError", py.get_type::<ConflictError>()),
        ("StorageError", py.get_type::<StorageError>()),
        ("RefusedError", py.get_type::<RefusedError>()),
        ("UnavailableError", py.get_type::<UnavailableError>()),
        ("NotFoundError", py.get_type::<NotFoundError>()),
        ("KeyAlertError", py.get_type::<KeyAlertError>()),
        ("InternalError", py.get_type::<InternalError>()),
    ] {
        m.add(name, ty)?;
    }
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
