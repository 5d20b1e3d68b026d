//! `IDENTITY.pins`: the highest directory serial an agent has seen of each party, kept beside
//! its identity file across runs, so a relay cannot hand the agent an older, superseded entry
//! of a user on its next call or its next run (the agent would seal to a rotated-away key).
//!
//! A first line `authority <fingerprint>` (pins belong to one trust root: a root made anew
//! starts its serials again, and its pins again), then one line per party, `<serial> <spiffe
//! id>`, sorted by id. Reads and writes hold a lock file (`IDENTITY.pins.lock`), and what is on
//! disk is merged (highest serial wins) before a write, so two processes of one agent (an MCP
//! server and a `send`) never lower each other's pins. Written atomically (temp file, fsync,
//! rename).

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

/// The saved pins (empty before the first), for the trust root whose authority has the
/// fingerprint `authority`: pins saved under another authority (a trust root made anew, whose
/// serials start again at 1) are not this root's, and are set aside.
pub fn load(path: &Path, authority: &str) -> Result<HashMap<SpiffeId, u64>> {
    let bytes = match read_capped(path, MAX_PINS_FILE) {
        Ok(b) => b,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(e) => return Err(e),
    };
    let corrupt = |n: usize| {
        Error::bad_input(format!(
            "{} line {n} is not what it should be: the agent's serial pins are damaged; restore the file (removing it forgets which keys were superseded)",
            path.display()
        ))
    };
    let text = String::from_utf8(bytes).map_err(|_| corrupt(1))?;
    let mut lines = text.lines();
    match lines.next() {
        Some(h) if h == format!("authority {authority}") => {}
        // Another trust root's pins.
        Some(h) if h.starts_with("authority ") => return Ok(HashMap::new()),
        _ => return Err(corrupt(1)),
    }
    let mut pins = HashMap::new();
    for (i, line) in lines.enumerate() {
        let n = i + 2;
        let (serial, id) = line.split_once(' ').ok_or_else(|| corrupt(n))?;
        let serial: u64 = serial.parse().map_err(|_| corrupt(n))?;
        let id: SpiffeId = id.parse().map_err(|_| corrupt(n))?;
        let seen = pins.entry(id).or_insert(serial);
        *seen = (*seen).max(serial);
    }
    Ok(pins)
}

/// Merges `pins` into the file (the highest serial of each party wins) under the lock, and
/// returns what the file holds now for the trust root of `authority`.
pub fn merge_and_save(
    path: &Path,
    authority: &str,
    pins: &HashMap<SpiffeId, u64>,
) -> Result<HashMap<SpiffeId, u64>> {
    let _lock = lock(path)?;
    let mut all = load(path, authority)?;
    // Nothing saved for this root yet (or another root's pins): written anew.
    let mut changed = all.is_empty();
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
        let mut text = format!("authority {authority}\n");
        text.extend(lines.iter().map(|(id, s)| format!("{s} {id}\n")));
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
    fn pins_merge_upwards_belong_to_one_root_and_damage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_for(&dir.path().join("bot.id"));
        let fp = "0011223344556677";
        assert!(load(&path, fp).unwrap().is_empty());
        let alice = SpiffeId::new("t", PartyKind::User, "alice").unwrap();
        let bob = SpiffeId::new("t", PartyKind::User, "bob").unwrap();
        merge_and_save(&path, fp, &HashMap::from([(alice.clone(), 3)])).unwrap();
        // A second process with an older view never lowers a pin.
        let older = HashMap::from([(alice.clone(), 2), (bob.clone(), 1)]);
        let all = merge_and_save(&path, fp, &older).unwrap();
        assert_eq!(all[&alice], 3);
        assert_eq!(
            load(&path, fp).unwrap(),
            HashMap::from([(alice.clone(), 3), (bob, 1)])
        );
        // A trust root made anew (another authority) starts its serials, and its pins, again.
        let new_root = "8899aabbccddeeff";
        assert!(load(&path, new_root).unwrap().is_empty());
        let all = merge_and_save(&path, new_root, &HashMap::from([(alice.clone(), 1)])).unwrap();
        assert_eq!(all, HashMap::from([(alice, 1)]));
        std::fs::write(
            &path,
            format!("authority {fp}\nthree spiffe://t/user/alice\n"),
        )
        .unwrap();
        let err = load(&path, fp).unwrap_err();
        assert!(err.message().contains("damaged"), "{err}");
        std::fs::write(&path, "3 spiffe://t/user/alice\n").unwrap();
        assert!(
            load(&path, fp).is_err(),
            "a file without its authority line"
        );
    }
}
