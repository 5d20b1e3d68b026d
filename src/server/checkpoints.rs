//! The relay's signed checkpoints: after every batch that appends events, the commit thread
//! signs a C2SP checkpoint of the new tree with the log key and appends it to `checkpoints` in
//! the data directory (one line per checkpoint: `<size> <base64 note>`, fsynced). At start the
//! relay refuses to run if its store is behind, or forked from, the last checkpoint it signed.

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
    pub fn check_store(&self, store: &dyn Store) -> Result<()> {
        let Some(cp) = self.last_written()? else {
            return Ok(());
        };
        let size = store.log_size();
        if cp.size > size {
            return Err(Error::verification(format!(
                "the store holds {size} log entries but this relay already signed a checkpoint of {}: the data directory was rolled back or restored from an old copy; refusing to start",
                cp.size
            )));
        }
        if store.log_root(cp.size)? != cp.root {
            return Err(Error::verification(format!(
                "the store's log differs from the checkpoint this relay signed at size {}: the data was rewritten; refusing to start",
                cp.size
            )));
        }
        Ok(())
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
