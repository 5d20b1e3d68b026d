//! `IDENTITY.dirmirror`: how far an agent (or a source) has read the whole directory log, the
//! tree's right edge there (so the next read checks the new checkpoint against the leaves
//! without the old ones), and what it learned of every party (`core::keylog::Mirror`). Kept
//! across runs so each run reads only the leaves added since (a long read is saved as it goes,
//! and used only once its leaves add up to a checkpoint's root); written atomically. Two
//! processes of one identity each read on from what they loaded: the last to write wins, and
//! what it wrote is whole.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::core::keylog::{Frontier, Mirror};
use crate::error::Result;
use crate::local::tree_state;

/// Largest state file read: about 2 million directory statements (each entry and revocation is
/// kept, with its leaf index and digest).
const MAX_STATE_LEN: usize = 256 << 20;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorState {
    /// The directory log's origin and the authority's fingerprint (a state from another log or
    /// trust root is not this one's).
    pub origin: String,
    pub authority: String,
    /// Leaves read, and of them how many were checked against a checkpoint's root (a long
    /// first read is saved as it goes, and checked when it reaches the checkpoint).
    pub size: u64,
    pub verified: u64,
    /// The tree's right edge at `size` (hex hashes).
    pub frontier: Vec<String>,
    pub mirror: Mirror,
}

pub fn path_for(identity: &Path) -> PathBuf {
    let mut s = identity.as_os_str().to_owned();
    s.push(".dirmirror");
    PathBuf::from(s)
}

impl MirrorState {
    /// The saved state, `None` before the first read.
    pub fn load(path: &Path) -> Result<Option<MirrorState>> {
        tree_state::load(path, MAX_STATE_LEN, "a directory mirror")
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        tree_state::save(path, self, "the directory mirror", false)
    }

    pub fn frontier(&self) -> Result<Frontier> {
        tree_state::frontier(self.size, &self.frontier)
    }

    pub fn set_frontier(&mut self, f: &Frontier) {
        self.size = f.size;
        self.frontier = tree_state::hashes(f);
    }
}
