//! `IDENTITY.pins`: the highest directory serial an agent has seen of each party, kept beside
//! its identity file across runs, so a relay cannot hand the agent an older, superseded entry
//! of a user on its next call or its next run (the agent would seal to a rotated-away key).
//!
//! One line per party, `<serial> <spiffe id>`, sorted by id. Reads and writes hold a lock file
//! (`IDENTITY.pins.lock`), and what is on disk is merged (highest serial wins) before a write,
//! so two processes of one agent (an MCP server and a `send`) never lower each other's pins.
//! Written atomically (temp file, fsync, rename).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, ErrorKind, Result};
use crate::ids::SpiffeId;
use crate::local::fs::{read_capped, write_atomic, PRIVATE_MODE};

/// Largest pins file read (about 40,000 parties).
const MAX_PINS_FILE: usize = 4 << 20;

/// The pins file of the identity at `identity`.
pub fn path_for(identity: &Path) -> PathBuf {
    let mut s = identity.as_os_str().to_owned();
    s.push(".pins");
    PathBuf::from(s)
}

/// The saved pins (empty before the first).
pub fn load(path: &Path) -> Result<HashMap<SpiffeId, u64>> {
    let bytes = match read_capped(path, MAX_PINS_FILE) {
        Ok(b) => b,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(e) => return Err(e),
    };
    let corrupt = |n: usize| {
        Error::bad_input(format!(
            "{} line {n} is not `<serial> <spiffe id>`: the agent's serial pins are damaged; restore the file (removing it forgets which keys were superseded)",
            path.display()
        ))
    };
    let text = String::from_utf8(bytes).map_err(|_| corrupt(1))?;
    let mut pins = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let (serial, id) = line.split_once(' ').ok_or_else(|| corrupt(i + 1))?;
        let serial: u64 = serial.parse().map_err(|_| corrupt(i + 1))?;
        let id: SpiffeId = id.parse().map_err(|_| corrupt(i + 1))?;
        let seen = pins.entry(id).or_insert(serial);
        *seen = (*seen).max(serial);
    }
    Ok(pins)
}

/// Merges `pins` into the file (the highest serial of each party wins) under the lock, and
/// returns what the file holds now.
pub fn merge_and_save(
    path: &Path,
    pins: &HashMap<SpiffeId, u64>,
) -> Result<HashMap<SpiffeId, u64>> {
    let _lock = lock(path)?;
    let mut all = load(path)?;
    let mut changed = false;
    for (id, serial) in pins {
        let seen = all.entry(id.clone()).or_insert(0);
        if *serial > *seen {
            *seen = *serial;
            changed = true;
        }
    }
    if changed {
        let mut lines: Vec<(String, u64)> =
            all.iter().map(|(id, s)| (id.to_string(), *s)).collect();
        lines.sort();
        let text: String = lines.iter().map(|(id, s)| format!("{s} {id}\n")).collect();
        write_atomic(path, text.as_bytes(), PRIVATE_MODE, true)?;
    }
    Ok(all)
}

/// An exclusive lock on `PATH.lock`, held until the returned file drops.
fn lock(path: &Path) -> Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut p = path.as_os_str().to_owned();
    p.push(".lock");
    let lock_path = PathBuf::from(p);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(PRIVATE_MODE)
        .open(&lock_path)
        .map_err(|e| Error::io(format!("cannot open {}: {e}", lock_path.display())))?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| Error::io(format!("cannot lock {}: {e}", lock_path.display())))?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::ids::PartyKind;

    #[test]
    fn pins_merge_upwards_and_damage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_for(&dir.path().join("bot.id"));
        assert!(load(&path).unwrap().is_empty());
        let alice = SpiffeId::new("t", PartyKind::User, "alice").unwrap();
        let bob = SpiffeId::new("t", PartyKind::User, "bob").unwrap();
        merge_and_save(&path, &HashMap::from([(alice.clone(), 3)])).unwrap();
        // A second process with an older view never lowers a pin.
        let all = merge_and_save(
            &path,
            &HashMap::from([(alice.clone(), 2), (bob.clone(), 1)]),
        )
        .unwrap();
        assert_eq!(all[&alice], 3);
        assert_eq!(load(&path).unwrap(), HashMap::from([(alice, 3), (bob, 1)]));
        std::fs::write(&path, "three spiffe://t/user/alice\n").unwrap();
        let err = load(&path).unwrap_err();
        assert!(err.message().contains("damaged"), "{err}");
    }
}
