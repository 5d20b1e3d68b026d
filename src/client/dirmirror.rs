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
use crate::error::{Error, Result};
use crate::local::dirmirror::MirrorState;

use super::connection::Connection;
use super::dirlog::{read_leaves, LogSource};

/// Leaves read per request.
const STEP: u64 = 256;

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
    /// statement the authority signed taken in, and the tree's new right edge must have `cp`'s
    /// root. Saved when it moved on.
    pub async fn caught_up(
        &self,
        conn: &Connection,
        cp: &Checkpoint,
        origin: &str,
        authority: &PublicKey,
    ) -> Result<MappedMutexGuard<'_, Mirror>> {
        let mut guard = self.state.lock().await;
        let fresh = || MirrorState {
            origin: origin.to_owned(),
            ..MirrorState::default()
        };
        let state = match guard.take() {
            Some(s) if s.origin == origin => s,
            Some(_) => fresh(),
            None => match &self.file {
                Some(f) => MirrorState::load(f)?
                    .filter(|s| s.origin == origin)
                    .unwrap_or_else(fresh),
                None => fresh(),
            },
        };
        let state = guard.insert(state);
        // Another process of this identity may have read further: what it read holds. At the
        // same size, the roots must agree.
        if cp.size >= state.size {
            let mut frontier = state.frontier()?;
            let mut mirror = state.mirror.clone();
            let mut at = state.size;
            while at < cp.size {
                let to = (at + STEP).min(cp.size);
                for bytes in read_leaves(&LogSource::Relay(conn), at, to).await? {
                    let leaf = DirectoryLeaf::decode(&bytes)
                        .map_err(|e| e.context(format!("directory log leaf {at}")))?;
                    frontier.append(leaf_hash(&bytes));
                    mirror.observe(at, &leaf, authority);
                    at += 1;
                }
            }
            if frontier.root() != cp.root {
                return Err(Error::verification(format!(
                    "FORK: the directory log's leaves do not add up to its checkpoint of {} leaves (or do not extend the {} this identity read before): refusing to seal to keys from it",
                    cp.size, state.size
                )));
            }
            if frontier.size > state.size {
                state.mirror = mirror;
                state.set_frontier(&frontier);
                if let Some(f) = &self.file {
                    state.save(f)?;
                }
            }
        }
        // (The state was put in place above: nothing is inserted here.)
        Ok(MutexGuard::map(guard, |s| {
            &mut s.get_or_insert_with(MirrorState::default).mirror
        }))
    }
}
