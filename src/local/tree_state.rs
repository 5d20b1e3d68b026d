//! What the state files of directory-log readers share (`IDENTITY.keywatch`,
//! `IDENTITY.dirmirror`): JSON read with a cap and written atomically (0600), and the tree's
//! right edge kept as hex hashes.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::core::keylog::Frontier;
use crate::error::{Error, ErrorKind, Result};
use crate::ids::{hex, parse_hex};
use crate::local::fs::{read_capped, write_atomic, PRIVATE_MODE};

/// The state saved at `path`, `None` before the first read; `what` names it in the error a
/// damaged file gets.
pub fn load<T: DeserializeOwned>(path: &Path, cap: usize, what: &str) -> Result<Option<T>> {
    match read_capped(path, cap) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            Error::bad_input(format!(
                "{} is not {what} ({e}); move it away to read the directory log from the start",
                path.display()
            ))
        }),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes `state` to `path` atomically, readable by its owner only (`pretty`: indented, for
/// a file people read).
pub fn save<T: Serialize>(path: &Path, state: &T, what: &str, pretty: bool) -> Result<()> {
    let text = if pretty {
        serde_json::to_vec_pretty(state)
    } else {
        serde_json::to_vec(state)
    }
    .map_err(|e| Error::internal(format!("cannot encode {what}: {e}")))?;
    write_atomic(path, &text, PRIVATE_MODE, true)
}

/// The right edge saved as `hashes` (hex) for a tree of `size` leaves.
pub fn frontier(size: u64, hashes: &[String]) -> Result<Frontier> {
    let hashes = hashes
        .iter()
        .map(|h| parse_hex::<32>(h))
        .collect::<Result<Vec<_>>>()?;
    Frontier::new(size, hashes)
}

/// A right edge's hashes, as saved.
pub fn hashes(f: &Frontier) -> Vec<String> {
    f.hashes.iter().map(hex).collect()
}
