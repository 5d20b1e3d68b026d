//! The newest directory checkpoint an agent accepted (docs/keys.md), kept in
//! `IDENTITY.dircheckpoint` beside the identity (or in this process's memory): a new one is
//! accepted only with a consistency proof from it (FORK / ROLLBACK).

use std::path::PathBuf;

use crate::core::sign::VerifierKey;
use crate::core::tlog::checkpoint::{Checkpoint, VerifiedNotes};
use crate::core::wire::DirectoryCheckpoint;
use crate::error::{Error, Result};
use crate::local::checkpoint_state::{check_extends, CheckpointState};

/// `IDENTITY.dircheckpoint`: the newest directory checkpoint an identity saw.
pub fn state_path(identity: &std::path::Path) -> PathBuf {
    let mut s = identity.as_os_str().to_owned();
    s.push(".dircheckpoint");
    PathBuf::from(s)
}

/// Where the newest directory checkpoint seen is kept: a file beside the identity, or this
/// process's memory.
#[derive(Debug, Default)]
pub struct DirectorySeen {
    file: Option<PathBuf>,
    /// The note, and when it was accepted.
    memory: std::sync::Mutex<Option<(String, u64)>>,
    /// The notes verified so far: the same checkpoint comes with every grant until the
    /// directory grows, and is checked once.
    notes: std::sync::Arc<VerifiedNotes>,
}

impl DirectorySeen {
    pub fn in_memory() -> Self {
        DirectorySeen::default()
    }

    pub fn at(file: PathBuf) -> Self {
        DirectorySeen {
            file: Some(file),
            memory: Default::default(),
            notes: Default::default(),
        }
    }

    fn state(&self, file: &std::path::Path, key: &VerifierKey) -> CheckpointState {
        CheckpointState::at(file.to_path_buf(), key.clone()).with_notes(self.notes.clone())
    }

    /// The size of the newest checkpoint seen, verified with `key`.
    pub fn size(&self, key: &VerifierKey) -> Result<Option<u64>> {
        match &self.file {
            Some(f) => self.state(f, key).size(),
            None => {
                let m = self
                    .memory
                    .lock()
                    .map_err(|_| Error::internal("the directory state is poisoned"))?;
                m.as_ref()
                    .map(|(n, _)| self.notes.verify(n, key).map(|c| c.size))
                    .transpose()
            }
        }
    }

    /// The size of the newest checkpoint seen and when it was first kept (Unix seconds): a
    /// leaf past that size was logged after that moment, give or take clock skew.
    pub fn seen(&self, key: &VerifierKey) -> Result<Option<(u64, u64)>> {
        let Some(size) = self.size(key)? else {
            return Ok(None);
        };
        let at = match &self.file {
            Some(f) => std::fs::metadata(f)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs()),
            None => self
                .memory
                .lock()
                .map_err(|_| Error::internal("the directory state is poisoned"))?
                .as_ref()
                .map_or(0, |(_, at)| *at),
        };
        Ok(Some((size, at)))
    }

    /// Accepts `d` (signed by `key`) only if it extends what was seen (from `from`, the size
    /// the request named), and keeps it when newer. Errors say FORK or ROLLBACK.
    pub fn accept(
        &self,
        key: &VerifierKey,
        d: &DirectoryCheckpoint,
        from: Option<u64>,
    ) -> Result<Checkpoint> {
        let context = |e: Error| e.context("the relay's directory log");
        match &self.file {
            Some(f) => Ok(self
                .state(f, key)
                .accept(&d.checkpoint, &d.consistency, from, None)
                .map_err(context)?
                .checkpoint),
            None => {
                let new = self.notes.verify(&d.checkpoint, key).map_err(context)?;
                let mut m = self
                    .memory
                    .lock()
                    .map_err(|_| Error::internal("the directory state is poisoned"))?;
                if let Some((old, _)) = m.as_ref() {
                    let old = self.notes.verify(old, key)?;
                    if Some(old.size) != from {
                        return Err(Error::verification(
                            "the directory state changed while a listing ran; list again",
                        ));
                    }
                    check_extends(&old, &new, &d.consistency).map_err(context)?;
                    if new.size <= old.size {
                        return Ok(new);
                    }
                }
                *m = Some((d.checkpoint.clone(), crate::clock::now()));
                Ok(new)
            }
        }
    }
}
