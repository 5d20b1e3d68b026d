//! `IDENTITY.keywatch`: how far a person's client has read the directory log, the tree's right
//! edge there (so the next read checks the new checkpoint against the old one without the old
//! leaves), what judging the next leaf needs, and every alert found so far (kept: an alert stays
//! in the person's history after the key it was about is in force or gone).

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::core::directory::DirectoryEntry;
use crate::core::keylog::{Alert, Frontier, Previous, Watcher};
use crate::error::{Error, Result};
use crate::local::tree_state;

/// Largest state file read.
const MAX_STATE_LEN: usize = 4 << 20;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchState {
    /// The directory log's origin (a state from another log is refused).
    pub origin: String,
    pub size: u64,
    /// The tree's right edge at `size` (hex hashes).
    pub frontier: Vec<String>,
    pub watcher: Watcher,
    /// The newest entry under the person's name read so far (its statement, base64) and
    /// whether it was their own.
    pub previous: Option<(String, bool)>,
    pub alerts: Vec<Alert>,
    /// How many of `alerts` (the first ones) the person acknowledged.
    pub acknowledged: usize,
}

pub fn path_for(identity: &Path) -> PathBuf {
    let mut s = identity.as_os_str().to_owned();
    s.push(".keywatch");
    PathBuf::from(s)
}

impl WatchState {
    /// The saved state, `None` before the first read.
    pub fn load(path: &Path) -> Result<Option<WatchState>> {
        tree_state::load(path, MAX_STATE_LEN, "a key-watch state")
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        tree_state::save(path, self, "the key-watch state", true)
    }

    pub fn frontier(&self) -> Result<Frontier> {
        tree_state::frontier(self.size, &self.frontier)
    }

    pub fn set_frontier(&mut self, f: &Frontier) {
        self.size = f.size;
        self.frontier = tree_state::hashes(f);
    }

    pub fn previous(&self) -> Result<Previous> {
        Ok(Previous(match &self.previous {
            None => None,
            Some((b64, own)) => {
                let bytes = B64
                    .decode(b64)
                    .map_err(|_| Error::bad_input("the key-watch state's entry is not base64"))?;
                Some((DirectoryEntry::decode(&bytes)?, *own))
            }
        }))
    }

    pub fn set_previous(&mut self, p: &Previous) {
        self.previous = p.0.as_ref().map(|(e, own)| (B64.encode(e.encode()), *own));
    }

    /// The alerts not acknowledged yet.
    pub fn open_alerts(&self) -> &[Alert] {
        self.alerts.get(self.acknowledged..).unwrap_or(&[])
    }
}
