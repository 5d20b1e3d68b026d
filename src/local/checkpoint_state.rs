//! The newest checkpoint a client has seen of its relay's log, kept beside the identity file
//! (`IDENTITY.checkpoint`, the signed note with any cosignatures). `fetch`, `audit verify`
//! and `receipt upgrade` accept a new checkpoint only when a consistency proof shows it extends
//! the saved one, then save it if it is newer: a relay that shows this client one history and
//! later another (a fork, a rollback, or a second relay with the same key) is caught.

use std::path::{Path, PathBuf};

use crate::core::sign::VerifierKey;
use crate::core::tlog::checkpoint::{Checkpoint, VerifiedNotes, MAX_CHECKPOINT_LEN};
use crate::core::tlog::cosignature::WitnessPolicy;
use crate::core::tlog::{verify_consistency, Hash};
use crate::error::{Error, ErrorKind, Result};
use crate::local::fs::{read_capped, write_atomic, PUBLIC_MODE};

pub struct CheckpointState {
    path: PathBuf,
    log: VerifierKey,
    /// Notes this party already verified (a long-lived client keeps them across calls).
    notes: Option<std::sync::Arc<VerifiedNotes>>,
}

impl CheckpointState {
    /// The state of the identity at `identity` (its pinned log key verifies the checkpoints).
    pub fn for_identity(identity: &Path, log: VerifierKey) -> Self {
        let mut s = identity.as_os_str().to_owned();
        s.push(".checkpoint");
        CheckpointState {
            path: PathBuf::from(s),
            log,
            notes: None,
        }
    }

    /// A state at an explicit path.
    pub fn at(path: PathBuf, log: VerifierKey) -> Self {
        CheckpointState {
            path,
            log,
            notes: None,
        }
    }

    /// Remembers the notes it verifies in `notes` (and takes those verified before from it).
    pub fn with_notes(mut self, notes: std::sync::Arc<VerifiedNotes>) -> Self {
        self.notes = Some(notes);
        self
    }

    /// The notes it remembers, if it does.
    pub fn notes(&self) -> Option<std::sync::Arc<VerifiedNotes>> {
        self.notes.clone()
    }

    /// Remembers the notes it verifies, in a memory of its own unless it has one.
    pub fn remembering(self) -> Self {
        match self.notes {
            Some(_) => self,
            None => self.with_notes(Default::default()),
        }
    }

    fn verify_note(&self, note: &str) -> Result<Checkpoint> {
        match &self.notes {
            Some(n) => n.verify(note, &self.log),
            None => Checkpoint::verify(note, &self.log),
        }
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
                let cp = self
                    .verify_note(&text)
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
    /// extends the saved checkpoint by `consistency`, a proof from `from` (the saved size the
    /// caller sent to the relay; `None` if nothing was saved then), and saves it when newer:
    /// larger, or of the same size with more cosignatures that verify under `policy`. The
    /// errors say ROLLBACK or FORK. Load, check and write hold a lock file, so two runs at once
    /// cannot each check against a stale state and overwrite each other.
    pub fn accept(
        &self,
        note: &str,
        consistency: &[Hash],
        from: Option<u64>,
        policy: Option<&WitnessPolicy>,
    ) -> Result<Accepted> {
        let new = self
            .verify_note(note)
            .map_err(|e| e.context("the relay's checkpoint"))?;
        if let Some(p) = policy {
            p.check(note)
                .map_err(|e| e.context("the relay's checkpoint"))?;
        }
        let _lock = self.lock()?;
        let saved = self.load()?;
        if saved.as_ref().map(|(c, _)| c.size) != from {
            return Err(Error::new(
                ErrorKind::Unavailable,
                format!(
                    "{} changed while this ran (another sealrelay command?); run it again",
                    self.path.display()
                ),
            ));
        }
        if let Some((old, _)) = &saved {
            check_extends(old, &new, consistency)?;
        }
        let newer = match &saved {
            None => true,
            Some((old, _)) if new.size > old.size => true,
            // The same tree: replaced only by a copy with more cosignatures that verify.
            Some((_, text)) => match policy {
                Some(p) => p.cosigners(note)?.len() > p.cosigners(text)?.len(),
                None => false,
            },
        };
        if newer {
            write_atomic(&self.path, note.as_bytes(), PUBLIC_MODE, true)?;
        }
        Ok(Accepted {
            checkpoint: new,
            previous: saved.map(|(c, _)| c),
        })
    }

    /// An exclusive lock on `PATH.lock`, held until the returned file drops.
    fn lock(&self) -> Result<std::fs::File> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut p = self.path.as_os_str().to_owned();
        p.push(".lock");
        let path = PathBuf::from(p);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(crate::local::fs::PRIVATE_MODE)
            .open(&path)
            .map_err(|e| Error::io(format!("cannot open {}: {e}", path.display())))?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| Error::io(format!("cannot lock {}: {e}", path.display())))?;
        Ok(file)
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::core::sign::SigningKey;
    use crate::core::tlog::cosignature::{cosign, CosignerKey};
    use crate::core::tlog::{leaf_hash, Tree};

    struct Log {
        key: SigningKey,
        vk: VerifierKey,
        tree: Tree,
    }

    impl Log {
        fn new(tag: &str, key: SigningKey) -> Log {
            let vk = VerifierKey::new("example.org/log", key.public()).unwrap();
            let mut tree = Tree::new();
            for i in 0..20u32 {
                let t = if i < 5 { "same" } else { tag };
                tree.append(leaf_hash(format!("{t}{i}").as_bytes()));
            }
            Log { key, vk, tree }
        }
        fn note(&self, size: u64) -> String {
            Checkpoint {
                origin: self.vk.name.clone(),
                size,
                root: self.tree.root(size).unwrap(),
            }
            .sign(&self.key, &self.vk)
            .unwrap()
        }
    }

    #[test]
    fn a_fork_a_rollback_a_stale_proof_and_padding_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate().unwrap();
        let a = Log::new("a", SigningKey::from_pkcs8(key.pkcs8()).unwrap());
        let b = Log::new("b", key);
        let state = CheckpointState::for_identity(&dir.path().join("alice.id"), a.vk.clone());
        state.accept(&a.note(8), &[], None, None).unwrap();
        // Consistent growth is saved.
        let p = a.tree.consistency_proof(8, 12).unwrap();
        state.accept(&a.note(12), &p, Some(8), None).unwrap();
        assert_eq!(state.size().unwrap(), Some(12));
        // The other history: FORK, and nothing saved.
        let p = b.tree.consistency_proof(12, 15).unwrap();
        let err = state.accept(&b.note(15), &p, Some(12), None).unwrap_err();
        assert!(err.message().starts_with("FORK"), "{err}");
        // Smaller: ROLLBACK.
        let err = state.accept(&a.note(10), &[], Some(12), None).unwrap_err();
        assert!(err.message().starts_with("ROLLBACK"), "{err}");
        // A proof from a size that is no longer the saved one: refused, run again.
        let p = a.tree.consistency_proof(8, 16).unwrap();
        let err = state.accept(&a.note(16), &p, Some(8), None).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable);
        assert_eq!(state.size().unwrap(), Some(12));
        // The same tree padded with junk lines does not replace the saved note; one with more
        // cosignatures that verify under the policy does.
        let wkey = SigningKey::generate().unwrap();
        let w = CosignerKey::new("w.example", wkey.public()).unwrap();
        let policy = WitnessPolicy::new(vec![w.clone()], None).unwrap();
        let plain = a.note(12);
        let padded = format!("{plain}\u{2014} junk.example AAAAAAAAAAAAAAAAAAAA\n");
        state.accept(&padded, &[], Some(12), None).unwrap();
        let saved = std::fs::read_to_string(state.path()).unwrap();
        assert_eq!(saved, plain);
        let text = Checkpoint::verify(&plain, &a.vk).unwrap().note_text();
        let cosigned = format!("{plain}{}", cosign(&text, 1, &wkey, &w).unwrap());
        state
            .accept(&cosigned, &[], Some(12), Some(&policy))
            .unwrap();
        assert_eq!(std::fs::read_to_string(state.path()).unwrap(), cosigned);
    }
}
