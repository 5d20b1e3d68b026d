//! An agent's (or a source's) mirror of the whole directory log (`core::keylog::Mirror`), read
//! on from where this identity last stopped up to each directory checkpoint it accepts, and
//! checked against that checkpoint's root (the leaves must add up to it, from the saved right
//! edge). With it, a served key is judged against everything the log holds for its party, not
//! only the chain the relay chose to send: a newer serial or a revocation left out is found.

use std::path::PathBuf;

use tokio::sync::{MappedMutexGuard, Mutex, MutexGuard};

use crate::core::keylog::{DirectoryLeaf, Mirror};
use crate::core::sign::PublicKey;
use crate::core::tlog::checkpoint::Checkpoint;
use crate::core::tlog::leaf_hash;
use crate::error::{Error, ErrorKind, Result};
use crate::ids::SpiffeId;
use crate::local::dirmirror::MirrorState;

use super::connection::Connection;
use super::dirlog::{read_leaves, LogSource};

/// Leaves asked for per request (a reply holds fewer when they are large).
const STEP: u64 = 256;
/// A long read is saved every this many leaves, so a read cut off goes on from there.
const SAVE_EVERY: u64 = 4096;

/// The mirror, kept in `IDENTITY.dirmirror` (or in this process's memory), loaded at first use.
#[derive(Debug, Default)]
pub struct DirMirror {
    file: Option<PathBuf>,
    state: Mutex<Option<MirrorState>>,
}

impl DirMirror {
    /// Kept in the file at `file`.
    pub fn at(file: PathBuf) -> Self {
        DirMirror {
            file: Some(file),
            state: Mutex::default(),
        }
    }

    /// The mirror read up to `cp` (a directory checkpoint this identity accepted, of the log
    /// `origin`) at least: the leaves since the last read are fetched over `conn`, each
    /// statement `authority` signed taken in, and the tree's new right edge must have `cp`'s
    /// root. Judge with it as of `cp.size` (it may hold more: another process of this identity
    /// may have read further).
    pub async fn caught_up(
        &self,
        conn: &Connection,
        cp: &Checkpoint,
        origin: &str,
        authority: &PublicKey,
    ) -> Result<MappedMutexGuard<'_, Mirror>> {
        let fingerprint = authority.fingerprint();
        let mut guard = self.state.lock().await;
        let ours = |s: &MirrorState| s.origin == origin && s.authority == fingerprint;
        let state = match guard.take() {
            Some(s) if ours(&s) => Some(s),
            Some(_) => None,
            None => match &self.file {
                Some(f) => MirrorState::load(f)?.filter(ours),
                None => None,
            },
        };
        let state = guard.insert(state.unwrap_or_else(|| MirrorState {
            origin: origin.to_owned(),
            authority: fingerprint.clone(),
            ..MirrorState::default()
        }));
        if cp.size < state.size && cp.size > state.verified {
            // Leaves read past `cp` but not yet checked: nothing before `cp` can be trusted
            // from them alone. (Reads stop at the checkpoint they were given, so this is a read
            // of another process, under way.)
            return Err(Error::new(
                ErrorKind::Unavailable,
                "the directory log is being read by another process of this identity: list again in a moment",
            ));
        }
        if cp.size >= state.size {
            let mut frontier = state.frontier()?;
            let mut unsaved = 0u64;
            let read = async {
                while frontier.size < cp.size {
                    let at = frontier.size;
                    let to = (at + STEP).min(cp.size);
                    for (i, bytes) in
                        (at..).zip(read_leaves(&LogSource::Relay(conn), at, to).await?)
                    {
                        let leaf = DirectoryLeaf::decode(&bytes)
                            .map_err(|e| e.context(format!("directory log leaf {i}")))?;
                        frontier.append(leaf_hash(&bytes));
                        state.mirror.observe(i, &leaf, authority);
                        unsaved += 1;
                    }
                    // In step after every batch (a read given up on keeps what it took in).
                    state.set_frontier(&frontier);
                    if unsaved >= SAVE_EVERY && frontier.size < cp.size {
                        unsaved = 0;
                        if let Some(f) = &self.file {
                            state.save(f)?;
                        }
                    }
                }
                Ok::<(), Error>(())
            };
            if let Err(e) = read.await {
                // What was taken in is kept with its edge (unchecked yet).
                state.set_frontier(&frontier);
                return Err(e);
            }
            if frontier.root() != cp.root {
                // Nothing of what was read holds: the next read starts again from the first
                // leaf.
                *guard = None;
                if let Some(f) = &self.file {
                    let _ = std::fs::remove_file(f);
                }
                return Err(Error::verification(format!(
                    "FORK: the directory log's leaves do not add up to its checkpoint of {} leaves: the relay shows this identity another directory than it signed; refusing to seal to keys from it",
                    cp.size
                )));
            }
            let moved = frontier.size > state.size || state.verified < frontier.size;
            state.set_frontier(&frontier);
            state.verified = frontier.size;
            if let (true, Some(f)) = (moved, &self.file) {
                state.save(f)?;
            }
        }
        // (The state was put in place above: nothing is inserted here.)
        Ok(MutexGuard::map(guard, |s| {
            &mut s.get_or_insert_with(MirrorState::default).mirror
        }))
    }

    /// The highest serial of `id` the directory log revokes, as far as this identity checked
    /// it (`None`: none, or nothing read yet).
    pub async fn revoked_through(&self, id: &SpiffeId) -> Option<u64> {
        let guard = self.state.lock().await;
        let s = guard.as_ref()?;
        s.mirror.revoked_through(id, s.verified)
    }
}
