//! The oracles of the suite: the canary scanner (no plaintext, raw or hex or base64, in
//! anything the relay wrote), the acked ledger (every ack survives, byte-exact, once) and the
//! log auditor (checkpoints consistent with each other, the tree recomputed from every leaf,
//! every receipt included).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use sealrelay::client::Connection;
use sealrelay::core::receipt_file::ReceiptFile;
use sealrelay::core::sign::{PublicKey, VerifierKey};
use sealrelay::core::tlog as merkle;
use sealrelay::core::tlog::checkpoint::Checkpoint;
use sealrelay::ids::{EnvelopeId, GrantId};

/// A random 32-byte canary, put in every test plaintext.
pub fn canary() -> [u8; 32] {
    let mut c = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut c).unwrap();
    c
}

/// The forms in which the canary could leak: raw, hex (both cases) and base64 (standard and
/// URL-safe, at each of the three alignments it can have inside a longer encoded text).
pub fn canary_forms(canary: &[u8]) -> Vec<(String, Vec<u8>)> {
    let hex: String = canary.iter().map(|b| format!("{b:02x}")).collect();
    let mut forms = vec![
        ("raw".to_owned(), canary.to_vec()),
        ("hex".to_owned(), hex.clone().into_bytes()),
        ("HEX".to_owned(), hex.to_uppercase().into_bytes()),
    ];
    for skip in 0..3 {
        let rest = &canary[skip..];
        let aligned = &rest[..rest.len() / 3 * 3];
        for (name, engine) in [
            ("base64", &base64::engine::general_purpose::STANDARD),
            ("base64url", &base64::engine::general_purpose::URL_SAFE),
        ] {
            forms.push((
                format!("{name}+{skip}"),
                engine.encode(aligned).into_bytes(),
            ));
        }
    }
    forms
}

/// Every regular file under `dir` (recursively).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else if p.is_file() {
            out.push(p);
        }
    }
    out
}

fn find(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// Where the canary (in any form) appears in `files` and `blobs` (named byte strings such as a
/// captured stdout): "file: form" for each hit. Zero hits is the only passing answer.
pub fn canary_hits(canary: &[u8], files: &[PathBuf], blobs: &[(&str, &[u8])]) -> Vec<String> {
    let forms = canary_forms(canary);
    let mut hits = Vec::new();
    let mut check = |name: &str, bytes: &[u8]| {
        for (form, needle) in &forms {
            if find(bytes, needle) {
                hits.push(format!("{name}: {form}"));
            }
        }
    };
    for f in files {
        check(
            &f.display().to_string(),
            &std::fs::read(f).unwrap_or_default(),
        );
    }
    for (name, bytes) in blobs {
        check(name, bytes);
    }
    hits
}

/// The client-side record of every ack.
#[derive(Default, Debug)]
pub struct Ledger {
    /// envelope → (grant, SHA-256 of the plaintext sent).
    pub acked: HashMap<EnvelopeId, (GrantId, [u8; 32])>,
}

impl Ledger {
    pub fn ack(&mut self, envelope: EnvelopeId, grant: GrantId, plaintext: &[u8]) {
        let prev = self.acked.insert(
            envelope,
            (grant, sealrelay::core::directory::sha256(plaintext)),
        );
        assert!(prev.is_none(), "two acks named one envelope");
    }

    /// Checks the ledger against what the user can list: every acked envelope is listed
    /// exactly once, and no grant has two envelopes. Returns (lost, duplicated).
    pub fn against_inbox(&self, listed: &[(EnvelopeId, GrantId)]) -> (usize, usize) {
        let mut seen: HashMap<EnvelopeId, usize> = HashMap::new();
        let mut per_grant: HashMap<GrantId, usize> = HashMap::new();
        for (e, g) in listed {
            *seen.entry(*e).or_default() += 1;
            *per_grant.entry(*g).or_default() += 1;
        }
        let lost = self.acked.keys().filter(|e| !seen.contains_key(e)).count();
        let duplicated = seen.values().filter(|n| **n > 1).count()
            + per_grant.values().filter(|n| **n > 1).count();
        (lost, duplicated)
    }
}

/// The log auditor: an independent reading of the log through the auditor role.
pub struct Auditor {
    pub log: VerifierKey,
    pub authority: PublicKey,
    /// Every checkpoint seen, oldest first.
    pub seen: Vec<Checkpoint>,
}

impl Auditor {
    pub fn new(log: VerifierKey, authority: PublicKey) -> Self {
        Auditor {
            log,
            authority,
            seen: Vec::new(),
        }
    }

    /// Takes the relay's current checkpoint, verifies its signature, and checks that every
    /// checkpoint seen before is consistent with it (a proof per pair); then recomputes the
    /// root from every leaf. Returns the leaves under the new checkpoint.
    pub async fn audit(&mut self, conn: &Connection) -> Vec<Vec<u8>> {
        let (note, _) = conn.checkpoint(None).await.unwrap();
        let new = Checkpoint::verify(&note, &self.log).expect("the checkpoint's signature");
        for old in &self.seen {
            assert!(
                new.size >= old.size,
                "ROLLBACK: {} < {}",
                new.size,
                old.size
            );
            let (again, proof) = conn.checkpoint(Some(old.size)).await.unwrap();
            let again = Checkpoint::verify(&again, &self.log).unwrap();
            merkle::verify_consistency(old.size, again.size, &proof, &old.root, &again.root)
                .unwrap_or_else(|e| panic!("FORK between {} and {}: {e}", old.size, again.size));
        }
        let mut leaves = Vec::new();
        while (leaves.len() as u64) < new.size {
            let want = (new.size - leaves.len() as u64).min(100) as u32;
            let page = conn.events(leaves.len() as u64, want).await.unwrap();
            assert!(
                !page.is_empty(),
                "the relay served no leaves past {}",
                leaves.len()
            );
            for (index, leaf) in page {
                assert_eq!(index, leaves.len() as u64, "leaves out of order");
                leaves.push(leaf);
            }
        }
        leaves.truncate(new.size as usize);
        let hashes: Vec<merkle::Hash> = leaves.iter().map(|l| merkle::leaf_hash(l)).collect();
        assert_eq!(
            merkle::root_from_leaf_hashes(&hashes),
            new.root,
            "the signed root is not the root of the leaves the relay serves"
        );
        self.seen.push(new);
        leaves
    }

    /// A receipt verifies offline and its leaf is the leaf the log holds at its index.
    pub fn check_receipt(&self, file: &ReceiptFile, leaves: &[Vec<u8>]) {
        file.verify(&self.authority, &self.log)
            .expect("the receipt verifies offline");
        let at = leaves
            .get(file.leaf_index as usize)
            .expect("the receipt's leaf is in the audited log");
        assert_eq!(
            at, &file.leaf,
            "the log holds another leaf at the receipt's index"
        );
    }
}
