//! A C2SP `tlog-witness` server: `POST /add-checkpoint` cosigns a log's checkpoint only when it
//! is consistent with the latest one this witness cosigned for that log (docs/witness.md).
//!
//! Per log the state is one file, `STATE/logs/<sha256(origin) hex>`, holding the latest cosigned
//! checkpoint's note text. Checking a request against it, writing the new state (temp file,
//! fsync, rename, directory fsync) and signing happen under one lock, and the state is durable
//! before the cosignature leaves: a witness killed at any point never cosigns two trees of one
//! size, nor a smaller tree after a larger one. A lock file keeps a second process off the
//! same state directory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use crate::core::sign::{SigningKey, VerifierKey};
use crate::core::tlog::checkpoint::Checkpoint;
use crate::core::tlog::cosignature::{self, CosignerKey};
use crate::core::tlog::witness_protocol::{self as protocol, AddCheckpoint, Refusal};
use crate::error::{Error, Result};
use crate::local::fs::{ensure_dir, read_capped, write_atomic, PRIVATE_DIR_MODE, PRIVATE_MODE};

/// Most logs one witness serves.
pub const MAX_LOGS: usize = 1024;

/// The witness config file: the logs it witnesses, each by its verifier key (the key's name is
/// the log's origin).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WitnessConfig {
    #[serde(default)]
    pub log: Vec<LogEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogEntry {
    /// `<origin>+<hash>+<base64>`, as in the relay's `log.pub`.
    pub key: String,
}

impl WitnessConfig {
    pub fn load(path: &Path) -> Result<Vec<VerifierKey>> {
        let text = read_capped(path, 1024 * 1024)?;
        let text = std::str::from_utf8(&text)
            .map_err(|_| Error::bad_input(format!("{} is not UTF-8 text", path.display())))?;
        let config: WitnessConfig = toml::from_str(text)
            .map_err(|e| Error::bad_input(format!("{}: {}", path.display(), e.message())))?;
        config
            .log
            .iter()
            .map(|l| VerifierKey::parse(&l.key).map_err(|e| e.context(path.display())))
            .collect()
    }
}

/// A witness: its key, the logs it knows, and their durable states.
pub struct Witness {
    key: SigningKey,
    me: CosignerKey,
    logs: HashMap<String, VerifierKey>,
    dir: PathBuf,
    /// The latest cosigned checkpoint per origin; the lock is held from the check to the reply.
    states: tokio::sync::Mutex<HashMap<String, Checkpoint>>,
    _lock: std::fs::File,
}

impl Witness {
    /// Opens (or creates) the state directory, takes its lock, and loads every log's state.
    pub fn open(
        key: SigningKey,
        me: CosignerKey,
        logs: Vec<VerifierKey>,
        dir: &Path,
    ) -> Result<Self> {
        if key.public() != me.key {
            return Err(Error::bad_input(
                "the witness key does not match its public key file",
            ));
        }
        if logs.is_empty() {
            return Err(Error::bad_input(
                "no logs to witness: give --log LOG.pub or a --config file with [[log]] entries",
            ));
        }
        if logs.len() > MAX_LOGS {
            return Err(Error::bad_input(format!(
                "at most {MAX_LOGS} logs per witness"
            )));
        }
        let mut by_origin = HashMap::new();
        for vk in logs {
            if let Some(prev) = by_origin.insert(vk.name.clone(), vk.clone()) {
                if prev != vk {
                    return Err(Error::bad_input(format!(
                        "the log {:?} is listed twice with different keys",
                        vk.name
                    )));
                }
            }
        }
        ensure_dir(dir, PRIVATE_DIR_MODE)?;
        let logs_dir = dir.join("logs");
        ensure_dir(&logs_dir, PRIVATE_DIR_MODE)?;
        let lock = lock_dir(dir)?;
        let mut states = HashMap::new();
        for origin in by_origin.keys() {
            if let Some(cp) = load_state(&state_path(dir, origin), origin)? {
                states.insert(origin.clone(), cp);
            }
        }
        Ok(Witness {
            key,
            me,
            logs: by_origin,
            dir: dir.to_owned(),
            states: tokio::sync::Mutex::new(states),
            _lock: lock,
        })
    }

    pub fn name(&self) -> &str {
        &self.me.name
    }

    pub fn log_count(&self) -> usize {
        self.logs.len()
    }

    /// Handles one `add-checkpoint` body at time `now`: the cosignature line, or the refusal.
    /// The new state is durable before the line is returned. Not to be cancelled half-way (the
    /// HTTP handler runs it as a task of its own): the state it writes and the one it keeps in
    /// memory would part.
    pub async fn add_checkpoint(
        &self,
        body: &[u8],
        now: u64,
    ) -> std::result::Result<String, Failure> {
        let req = AddCheckpoint::parse(body).map_err(Failure::Refused)?;
        let origin = protocol::origin_of(&req.note)
            .unwrap_or_default()
            .to_owned();
        // The origin is the requester's text: logged escaped, so it cannot forge log lines.
        let shown = origin.escape_debug().to_string();
        let log = self.logs.get(&origin);
        let mut states = self.states.lock().await;
        let latest = states.get(&origin);
        let cp = match protocol::decide(&req, log, latest) {
            Ok(cp) => cp,
            Err(refusal) => {
                // A refused checkpoint signed by a known log may be evidence of a fork: keep
                // it in the log output (checkpoints are public).
                if matches!(refusal.status(), 409 | 422) && log.is_some() {
                    tracing::warn!(origin = %shown, status = refusal.status(), reason = %refusal.reason(), old = req.old_size, note = %req.note.escape_debug(), "refused to cosign");
                } else {
                    tracing::info!(origin = %shown, status = refusal.status(), reason = %refusal.reason(), "refused to cosign");
                }
                return Err(Failure::Refused(refusal));
            }
        };
        let text = cp.note_text();
        if latest.is_none_or(|l| l.size != cp.size) {
            let path = state_path(&self.dir, &origin);
            let bytes = text.clone().into_bytes();
            tokio::task::spawn_blocking(move || write_atomic(&path, &bytes, PRIVATE_MODE, true))
                .await
                .map_err(|_| Failure::Internal("the state write failed".into()))?
                .map_err(|e| {
                    tracing::error!(error = %e, "cannot write the witness state; not cosigning");
                    Failure::Internal("cannot write the witness state".into())
                })?;
            states.insert(origin.clone(), cp.clone());
        }
        let line = cosignature::cosign(&text, now, &self.key, &self.me)
            .map_err(|e| Failure::Internal(e.message().to_owned()))?;
        drop(states);
        tracing::info!(origin = %shown, size = cp.size, "cosigned");
        Ok(line)
    }
}

/// Why a request got no cosignature.
#[derive(Debug)]
pub enum Failure {
    Refused(Refusal),
    /// 500: the state could not be made durable (nothing was cosigned).
    Internal(String),
}

fn state_path(dir: &Path, origin: &str) -> PathBuf {
    dir.join("logs")
        .join(crate::ids::hex(crate::core::directory::sha256(
            origin.as_bytes(),
        )))
}

fn load_state(path: &Path, origin: &str) -> Result<Option<Checkpoint>> {
    match read_capped(path, 4096) {
        Ok(bytes) => {
            let text = std::str::from_utf8(&bytes)
                .map_err(|_| Error::verification(format!("{} is not text", path.display())))?;
            let cp = Checkpoint::parse_text(text).map_err(|e| e.context(path.display()))?;
            if cp.origin != origin {
                return Err(Error::verification(format!(
                    "{} holds the state of {:?}, not {origin:?}",
                    path.display(),
                    cp.origin
                )));
            }
            Ok(Some(cp))
        }
        Err(e) if e.kind() == crate::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn lock_dir(dir: &Path) -> Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join("lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(PRIVATE_MODE)
        .open(&path)
        .map_err(|e| Error::io(format!("cannot open {}: {e}", path.display())))?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(|_| {
        Error::new(
            crate::ErrorKind::Conflict,
            format!(
                "another witness process holds {}: stop it first (two on one state could cosign a fork)",
                dir.display()
            ),
        )
    })?;
    Ok(file)
}

/// Serves the witness over HTTP until `shutdown` completes.
pub async fn serve(
    witness: Arc<Witness>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let app = axum::Router::new()
        .route("/add-checkpoint", post(add_checkpoint))
        .route("/", get(info))
        .layer(DefaultBodyLimit::max(protocol::MAX_REQUEST_LEN))
        .with_state(witness);
    // Open to the network: a deadline for each request's head and a cap on connections.
    crate::net::http::serve(
        listener,
        app,
        shutdown,
        crate::net::http::HEAD_TIMEOUT,
        crate::net::http::MAX_CONNECTIONS,
    )
    .await
    .map_err(|e| e.context("witness server"))
}

async fn info(State(w): State<Arc<Witness>>) -> Response {
    let text = format!(
        "sealrelay witness {}\n{}\nPOST /add-checkpoint (c2sp.org/tlog-witness)\n",
        w.me.name,
        w.me.encode()
    );
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response()
}

/// How long a request body may take to arrive.
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

async fn add_checkpoint(State(w): State<Arc<Witness>>, body: axum::body::Body) -> Response {
    // The body is read here, capped and with a deadline, so a slow sender holds nothing long.
    let body = match tokio::time::timeout(
        BODY_TIMEOUT,
        axum::body::to_bytes(body, protocol::MAX_REQUEST_LEN),
    )
    .await
    {
        Ok(Ok(b)) => b,
        Ok(Err(_)) => {
            return (StatusCode::PAYLOAD_TOO_LARGE, "request too large\n").into_response();
        }
        Err(_) => return (StatusCode::REQUEST_TIMEOUT, "request body too slow\n").into_response(),
    };
    // Run to its end whatever becomes of this request: a client that goes away while the new
    // state is being written drops this handler, and the check, the write and the state kept
    // in memory must not part (a second request would be judged against the older state while
    // the disk takes the first: a cosigned fork after a restart).
    let witness = w.clone();
    let decided =
        tokio::spawn(async move { witness.add_checkpoint(&body, crate::clock::now()).await })
            .await
            .unwrap_or_else(|_| Err(Failure::Internal("the witness failed".into())));
    match decided {
        Ok(line) => ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], line).into_response(),
        Err(Failure::Refused(r)) => {
            let status = StatusCode::from_u16(r.status()).unwrap_or(StatusCode::BAD_REQUEST);
            let ctype = if r.status() == 409 {
                protocol::SIZE_CONTENT_TYPE
            } else {
                "text/plain; charset=utf-8"
            };
            (status, [(header::CONTENT_TYPE, ctype)], r.body()).into_response()
        }
        Err(Failure::Internal(why)) => {
            (StatusCode::INTERNAL_SERVER_ERROR, format!("{why}\n")).into_response()
        }
    }
}

/// `witness keygen`: a new witness key (PKCS#8 PEM, 0600) at `out` and its verifier key
/// (`<name>+<hash>+<base64(0x04||key)>`) at `out.pub`; neither may exist.
pub fn keygen(name: &str, out: &Path) -> Result<CosignerKey> {
    let key = SigningKey::generate()?;
    let me = CosignerKey::new(name, key.public())?;
    let public = pub_path(out);
    if crate::local::fs::exists(&public) {
        return Err(Error::new(
            crate::ErrorKind::Conflict,
            format!("{} exists: choose another --out", public.display()),
        ));
    }
    write_atomic(
        out,
        crate::core::pki::key_pem(key.pkcs8()).as_bytes(),
        PRIVATE_MODE,
        false,
    )?;
    write_atomic(
        &public,
        format!("{}\n", me.encode()).as_bytes(),
        crate::local::fs::PUBLIC_MODE,
        false,
    )?;
    Ok(me)
}

/// `F.pub` beside a key file `F`.
pub fn pub_path(key: &Path) -> PathBuf {
    let mut s = key.as_os_str().to_owned();
    s.push(".pub");
    PathBuf::from(s)
}

/// Reads a witness key file and its `.pub` (which carries the name).
pub fn load_key(path: &Path) -> Result<(SigningKey, CosignerKey)> {
    let der = crate::local::trust_root::read_key_pem(path)?;
    let key = SigningKey::from_pkcs8(&der).map_err(|e| e.context(path.display()))?;
    let me = read_cosigner_key(&pub_path(path))?;
    if me.key != key.public() {
        return Err(Error::bad_input(format!(
            "{} does not hold the public key of {}",
            pub_path(path).display(),
            path.display()
        )));
    }
    Ok((key, me))
}

pub use crate::local::cosigner_key::read_cosigner_key;

#[cfg(test)]
mod tests;
