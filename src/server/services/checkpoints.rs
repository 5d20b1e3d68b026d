//! The relay's signed checkpoints: after every batch that appends events, the commit thread
//! signs a C2SP checkpoint of the new tree with the log key and appends it to `checkpoints` in
//! the data directory (one line per checkpoint: `<size> <base64 note>`, fsynced). At start the
//! relay refuses to run if its store is behind, or forked from, the last checkpoint it signed.
//! Beside it, `checkpoints.store` names the kind of store the checkpoints were made on
//! (`embedded` or `postgres`, never a URL), so that a node started without its `store` is told
//! so instead of being told its data was rolled back.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

use crate::core::sign::{SigningKey, VerifierKey};
use crate::core::store::Store;
use crate::core::tlog::checkpoint::Checkpoint;
use crate::error::{Error, Result};

/// The latest checkpoint: parsed, and its signed note.
pub type Latest = Arc<RwLock<Option<(Checkpoint, String)>>>;

/// The kind of store a relay runs on, as `checkpoints.store` records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreKind {
    /// `data/state.redb`.
    Embedded,
    /// PostgreSQL (`store`, `SEALRELAY_STORE`).
    Postgres,
}

impl StoreKind {
    fn as_str(self) -> &'static str {
        match self {
            StoreKind::Embedded => "embedded",
            StoreKind::Postgres => "postgres",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "embedded" => Some(StoreKind::Embedded),
            "postgres" => Some(StoreKind::Postgres),
            _ => None,
        }
    }
}

/// Why this node may be on another store than the one its checkpoints were made on, when
/// `checkpoints.store` says it is, as a question with what to do.
fn other_store(recorded: Option<StoreKind>, now: Option<StoreKind>) -> Option<String> {
    match (recorded, now) {
        (Some(StoreKind::Postgres), Some(StoreKind::Embedded)) => Some(
            "this data directory's checkpoints were made on PostgreSQL but this node was started on the embedded store: was it started without its `store` (SEALRELAY_STORE)? Start it with the settings it ran with"
                .to_owned(),
        ),
        (Some(StoreKind::Embedded), Some(StoreKind::Postgres)) => Some(
            "this data directory's checkpoints were made on the embedded store (data/state.redb) but this node was started on PostgreSQL: was `store` (SEALRELAY_STORE) set by mistake? A relay's log does not move between stores"
                .to_owned(),
        ),
        _ => None,
    }
}

/// The refusal of a store whose log is shorter than the last checkpoint signed: the store named
/// plainly when it is another kind, or empty (a node started without its `store`), and a
/// rollback otherwise.
fn behind_message(
    signed: u64,
    size: u64,
    recorded: Option<StoreKind>,
    now: Option<StoreKind>,
) -> String {
    if let Some(hint) = other_store(recorded, now) {
        return format!(
            "{hint} (the checkpoints come from a log of {signed} entries, the store holds {size}); refusing to start"
        );
    }
    if size == 0 {
        return format!(
            "this data directory's checkpoints come from a log of {signed} entries, but the store is empty: was this node started without its `store` (SEALRELAY_STORE), or on another database? Start it with the store it ran with; refusing to start"
        );
    }
    format!(
        "the store holds {size} log entries but this relay already signed a checkpoint of {signed}: the data directory was rolled back or restored from an old copy; refusing to start"
    )
}

pub struct Signer {
    key: SigningKey,
    vk: VerifierKey,
    path: PathBuf,
    pub latest: Latest,
    /// Woken after each new checkpoint (the witnessing task waits on it).
    pub signed: Arc<tokio::sync::Notify>,
    /// When the last checkpoint was signed; also serializes signing and appending.
    last_signed: std::sync::Mutex<Option<std::time::Instant>>,
    /// Why the last attempt to sign failed (cleared by the next success): `/readyz`.
    failure: std::sync::Mutex<Option<String>>,
}

impl Signer {
    pub fn new(key: SigningKey, vk: VerifierKey, data: &Path) -> Result<Self> {
        if key.public() != vk.key {
            return Err(Error::verification("log.key does not match log.pub"));
        }
        let path = data.join("checkpoints");
        if path.exists() {
            crate::local::fs::restrict(&path, crate::local::fs::PRIVATE_MODE)?;
        }
        Ok(Signer {
            key,
            vk,
            path,
            latest: Arc::default(),
            signed: Arc::default(),
            last_signed: std::sync::Mutex::new(None),
            failure: std::sync::Mutex::new(None),
        })
    }

    /// The last checkpoint in the file, verified.
    pub fn last_written(&self) -> Result<Option<Checkpoint>> {
        let file = match std::fs::File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(Error::io(format!(
                    "cannot read {}: {e}",
                    self.path.display()
                )))
            }
        };
        let mut last = None;
        for line in BufReader::new(file).lines() {
            let line =
                line.map_err(|e| Error::io(format!("cannot read {}: {e}", self.path.display())))?;
            // A torn last line (a crash while appending) is ignored; the one before stands.
            let Some((_, b64)) = line.split_once(' ') else {
                continue;
            };
            let Ok(note) = B64.decode(b64) else { continue };
            let Ok(note) = String::from_utf8(note) else {
                continue;
            };
            if let Ok(cp) = Checkpoint::verify(&note, &self.vk) {
                last = Some(cp);
            }
        }
        Ok(last)
    }

    /// Refuses a store that is behind or forked from the last checkpoint this relay signed.
    /// `kind` is the kind of store this node runs on (`None`: one handed in, not known); once
    /// the store passes, it is recorded in `checkpoints.store` for the next start to compare.
    pub fn check_store(&self, store: &dyn Store, kind: Option<StoreKind>) -> Result<()> {
        let recorded = self.recorded_kind();
        if let Some(cp) = self.last_written()? {
            let size = store.log_size();
            if cp.size > size {
                return Err(Error::verification(behind_message(
                    cp.size, size, recorded, kind,
                )));
            }
            if store.log_root(cp.size)? != cp.root {
                let hint = other_store(recorded, kind)
                    .map(|h| format!(": {h}"))
                    .unwrap_or_default();
                return Err(Error::verification(format!(
                    "the store's log differs from the checkpoint this relay signed at size {}: the data was rewritten{hint}; refusing to start",
                    cp.size
                )));
            }
        }
        if let Some(kind) = kind {
            if recorded != Some(kind) {
                self.record_kind(kind);
            }
        }
        Ok(())
    }

    fn kind_path(&self) -> PathBuf {
        self.path.with_file_name("checkpoints.store")
    }

    /// The kind of store `checkpoints.store` names (`None` when there is none, or it is not
    /// one this relay knows).
    fn recorded_kind(&self) -> Option<StoreKind> {
        std::fs::read_to_string(self.kind_path())
            .ok()
            .and_then(|s| StoreKind::parse(&s))
    }

    /// Records the kind of store the checkpoints are made on. It only improves a message at
    /// the next start: a failure to write it is logged, not fatal.
    fn record_kind(&self, kind: StoreKind) {
        let path = self.kind_path();
        let text = format!("{}\n", kind.as_str());
        if let Err(e) = crate::local::fs::write_atomic(
            &path,
            text.as_bytes(),
            crate::local::fs::PRIVATE_MODE,
            true,
        ) {
            tracing::warn!(error = %e, "cannot record the kind of store beside the checkpoints");
        }
    }

    /// Whether the last checkpoint is older than `age` (or there is none).
    pub fn is_stale(&self, age: std::time::Duration) -> bool {
        self.last_signed
            .lock()
            .map(|t| t.is_none_or(|t| t.elapsed() >= age))
            .unwrap_or(true)
    }

    /// Signs a checkpoint of the store's current tree and appends it durably (a failure is
    /// kept for [`Signer::failure`] until a later attempt succeeds).
    pub fn sign_current(&self, store: &dyn Store) -> Result<()> {
        let r = self.sign_current_inner(store);
        if let Ok(mut f) = self.failure.lock() {
            *f = r.as_ref().err().map(|e| e.message().to_owned());
        }
        if r.is_err() {
            // A failed attempt is no checkpoint: the next batch tries again at once.
            if let Ok(mut last) = self.last_signed.lock() {
                *last = None;
            }
        }
        r
    }

    /// Why the last attempt to sign a checkpoint failed, if it did.
    pub fn failure(&self) -> Option<String> {
        self.failure.lock().ok().and_then(|f| f.clone())
    }

    fn sign_current_inner(&self, store: &dyn Store) -> Result<()> {
        let mut last_signed = self
            .last_signed
            .lock()
            .map_err(|_| Error::internal("checkpoint lock poisoned"))?;
        *last_signed = Some(std::time::Instant::now());
        let size = store.log_size();
        if let Ok(guard) = self.latest.read() {
            if guard.as_ref().is_some_and(|(cp, _)| cp.size == size) {
                return Ok(());
            }
        }
        let cp = Checkpoint {
            origin: self.vk.name.clone(),
            size,
            root: store.log_root(size)?,
        };
        let note = cp.sign(&self.key, &self.vk)?;
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(crate::local::fs::PRIVATE_MODE)
            .open(&self.path)
            .map_err(|e| Error::io(format!("cannot open {}: {e}", self.path.display())))?;
        f.write_all(format!("{size} {}\n", B64.encode(&note)).as_bytes())
            .and_then(|_| f.sync_data())
            .map_err(|e| Error::io(format!("cannot write {}: {e}", self.path.display())))?;
        if let Ok(mut guard) = self.latest.write() {
            *guard = Some((cp, note));
        }
        self.signed.notify_one();
        Ok(())
    }
}

/// Signs the directory log's checkpoints (docs/keys.md): the log key under the directory
/// origin (`<log origin>/directory`), one signature per size, kept for the next request.
pub struct DirectorySigner {
    key: SigningKey,
    vk: VerifierKey,
    last: std::sync::Mutex<Option<(u64, String)>>,
}

impl DirectorySigner {
    pub fn new(key: SigningKey, log_origin: &str) -> Result<Self> {
        let origin = crate::core::keylog::directory_origin(log_origin);
        let vk = VerifierKey::new(&origin, key.public())?;
        Ok(DirectorySigner {
            key,
            vk,
            last: std::sync::Mutex::new(None),
        })
    }

    /// The signed checkpoint of the directory log at `size` (at most `tree`'s).
    pub fn checkpoint(&self, tree: &crate::core::tlog::Tree, size: u64) -> Result<String> {
        let mut last = self
            .last
            .lock()
            .map_err(|_| Error::internal("the directory signer is poisoned"))?;
        if let Some((s, note)) = last.as_ref() {
            if *s == size {
                return Ok(note.clone());
            }
        }
        let cp = Checkpoint {
            origin: self.vk.name.clone(),
            size,
            root: tree.root(size).map_err(Error::from)?,
        };
        let note = cp.sign(&self.key, &self.vk)?;
        *last = Some((size, note.clone()));
        Ok(note)
    }
}
