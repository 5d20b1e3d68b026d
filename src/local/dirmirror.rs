//! `IDENTITY.dirmirror`: how far an agent (or a source) has read the whole directory log, the
//! tree's right edge there (so the next read checks the new checkpoint against the leaves
//! without the old ones), and what it learned of every party (`core::keylog::Mirror`). Kept
//! across runs so each run reads only the leaves added since; written atomically. Two
//! processes of one identity each read on from what they loaded: the last to write wins, and
//! what it wrote is whole.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::core::keylog::{Frontier, Mirror};
use crate::error::{Error, ErrorKind, Result};
use crate::ids::{hex, parse_hex};
use crate::local::fs::{read_capped, write_atomic, PRIVATE_MODE};

/// Largest state file read (about 100,000 parties).
const MAX_STATE_LEN: usize = 64 << 20;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorState {
    /// The directory log's origin (a state from another log is not this one's).
    pub origin: String,
    pub size: u64,
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
        match read_capped(path, MAX_STATE_LEN) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                Error::bad_input(format!(
                    "{} is not a directory mirror ({e}); move it away to read the directory log from the start",
                    path.display()
                ))
            }),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_vec(self)
            .map_err(|e| Error::internal(format!("cannot encode the directory mirror: {e}")))?;
        write_atomic(path, &text, PRIVATE_MODE, true)
    }

    pub fn frontier(&self) -> Result<Frontier> {
        let hashes = self
            .frontier
            .iter()
            .map(|h| parse_hex::<32>(h))
            .collect::<Result<Vec<_>>>()?;
        Frontier::new(self.size, hashes)
    }

    pub fn set_frontier(&mut self, f: &Frontier) {
        self.size = f.size;
        self.frontier = f.hashes.iter().map(hex).collect();
    }
}
