//! The newest checkpoint a client has seen of its relay's log, kept beside the identity file
//! (`IDENTITY.checkpoint`, the signed note with any cosignatures). `fetch`, `audit verify`
//! and `receipt upgrade` accept a new checkpoint only when a consistency proof shows it extends
//! the saved one, then save it if it is newer: a relay that shows this client one history and
//! later another (a fork, a rollback, or a second relay with the same key) is caught.

use std::path::{Path, PathBuf};

use crate::core::sign::VerifierKey;
use crate::core::tlog::checkpoint::{Checkpoint, MAX_CHECKPOINT_LEN};
use crate::core::tlog::cosignature::WitnessPolicy;
use crate::core::tlog::{verify_consistency, Hash};
use crate::error::{Error, ErrorKind, Result};
use crate::local::fs::{read_capped, write_atomic, PUBLIC_MODE};

pub struct CheckpointState {
    path: PathBuf,
    log: VerifierKey,
}

impl CheckpointState {
    /// The state of the identity at `identity` (its pinned log key verifies the checkpoints).
    pub fn for_identity(identity: &Path, log: VerifierKey) -> Self {
        let mut s = identity.as_os_str().to_owned();
        s.push(".checkpoint");
        CheckpointState {
            path: PathBuf::from(s),
            log,
        }
    }

    /// A state at an explicit path.
    pub fn at(path: PathBuf, log: VerifierKey) -> Self {
        CheckpointState { path, log }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The saved checkpoint, verified with the log key (`None` before the first).
    pub fn load(&self) -> Result<Option<(Checkpoint, String)>> {
        match read_capped(&self.path, MAX_CHECKPOINT_LEN) {
            Ok(bytes) => {
                let text = String::from_utf8(bytes).map_err(|_| {
                    Error::bad_input(format!("{} is not text", self.path.display()))
                })?;
                let cp = Checkpoint::verify(&text, &self.log)
                    .map_err(|e| e.context(self.path.display()))?;
                Ok(Some((cp, text)))
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The saved checkpoint's size, to ask the relay for a consistency proof from it.
    pub fn size(&self) -> Result<Option<u64>> {
        Ok(self.load()?.map(|(c, _)| c.size))
    }

    /// Verifies `note` (the log's signature and, with a `policy`, its witnesses), checks it
    /// extends the saved checkpoint by `consistency` (a proof from the saved size), and saves
    /// it when it is newer. The errors say ROLLBACK or FORK.
    pub fn accept(
        &self,
        note: &str,
        consistency: &[Hash],
        policy: Option<&WitnessPolicy>,
    ) -> Result<Accepted> {
        let new =
            Checkpoint::verify(note, &self.log).map_err(|e| e.context("the relay's checkpoint"))?;
        if let Some(p) = policy {
            p.check(note)
                .map_err(|e| e.context("the relay's checkpoint"))?;
        }
        let saved = self.load()?;
        if let Some((old, _)) = &saved {
            check_extends(old, &new, consistency)?;
        }
        let newer = saved.as_ref().is_none_or(|(old, text)| {
            new.size > old.size || (new.size == old.size && note.len() > text.len())
        });
        if newer {
            // Another process may have saved a newer one meanwhile: never replace it.
            let current = self.load()?;
            if current.as_ref().is_none_or(|(c, _)| c.size <= new.size) {
                write_atomic(&self.path, note.as_bytes(), PUBLIC_MODE, true)?;
            }
        }
        Ok(Accepted {
            checkpoint: new,
            previous: saved.map(|(c, _)| c),
        })
    }
}

/// What [`CheckpointState::accept`] found.
#[derive(Debug)]
pub struct Accepted {
    pub checkpoint: Checkpoint,
    /// The checkpoint saved before, which the new one extends.
    pub previous: Option<Checkpoint>,
}

/// ROLLBACK if `new` is smaller than `old`, FORK unless `proof` shows `new` extends `old`.
pub fn check_extends(old: &Checkpoint, new: &Checkpoint, proof: &[Hash]) -> Result<()> {
    if old.size == 0 {
        return Ok(()); // every tree extends the empty one
    }
    if new.size < old.size {
        return Err(Error::verification(format!(
            "ROLLBACK: the relay's log has {} entries, fewer than the {} of the checkpoint you saw before",
            new.size, old.size
        )));
    }
    verify_consistency(old.size, new.size, proof, &old.root, &new.root).map_err(|e| {
        Error::verification(format!(
            "FORK: the relay's log of {} entries is not an extension of the checkpoint of {} you saw before ({e})",
            new.size, old.size
        ))
    })
}
