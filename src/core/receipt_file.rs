//! The receipt file `fetch` saves beside each output, and its offline verification: the
//! user-signed delivery receipt, the authority-signed directory entry that vouches for the
//! user's key, the receipt's leaf in the relay's transparency log, its inclusion proof, and the
//! signed checkpoint the proof verifies against (in the spirit of C2SP `tlog-proof`).
//! `docs/formats.md` documents the JSON form. Checking needs only the authority and log public
//! keys; each failure names the check that failed.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::directory::DirectoryEntry;
use super::grant::Receipt;
use super::sign::{PublicKey, Signed, StatementType, VerifierKey};
use super::store::{statement_digest, Event};
use super::tlog::checkpoint::{Checkpoint, VerifiedNotes};
use super::tlog::cosignature::WitnessPolicy;
use super::tlog::{leaf_hash, verify_inclusion, Hash};
use crate::error::{Error, Result};

/// Cap on a receipt file.
pub const MAX_RECEIPT_FILE_LEN: usize = 64 * 1024;
/// Most proof hashes a receipt may carry (a tree of 2^64 leaves needs 64).
pub const MAX_PROOF_LEN: usize = 64;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceiptFile {
    pub receipt: Signed,
    pub user_entry: Signed,
    pub leaf_index: u64,
    pub leaf: Vec<u8>,
    pub tree_size: u64,
    pub proof: Vec<Hash>,
    pub checkpoint: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Json {
    sealrelay_receipt: u32,
    receipt: String,
    user_entry: String,
    leaf_index: u64,
    leaf: String,
    tree_size: u64,
    proof: Vec<String>,
    checkpoint: String,
}

/// Witness names with the times of their cosignatures.
pub type Witnesses = Vec<(String, u64)>;

/// What a verified receipt says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    pub receipt: Receipt,
    pub checkpoint: Checkpoint,
    pub leaf_index: u64,
    /// The witnesses whose cosignatures on the checkpoint verified (with a witness policy).
    pub witnessed_by: Vec<(String, u64)>,
}

fn fail(check: &str, why: impl std::fmt::Display) -> Error {
    Error::verification(format!("receipt check failed: {check}: {why}"))
}

impl ReceiptFile {
    pub fn to_json(&self) -> String {
        let j = Json {
            sealrelay_receipt: 1,
            receipt: self.receipt.to_json().trim_end().to_owned(),
            user_entry: self.user_entry.to_json().trim_end().to_owned(),
            leaf_index: self.leaf_index,
            leaf: B64.encode(&self.leaf),
            tree_size: self.tree_size,
            proof: self.proof.iter().map(|h| B64.encode(h)).collect(),
            checkpoint: self.checkpoint.clone(),
        };
        let mut s = serde_json::to_string_pretty(&j).unwrap_or_default();
        s.push('\n');
        s
    }

    /// Parses a receipt file (structure only; [`ReceiptFile::verify`] checks it).
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        if bytes.len() > MAX_RECEIPT_FILE_LEN {
            return Err(Error::bad_input("the receipt file is too large"));
        }
        let j: Json = serde_json::from_slice(bytes)
            .map_err(|e| Error::bad_input(format!("not a sealrelay receipt file ({e})")))?;
        if j.sealrelay_receipt != 1 {
            return Err(Error::bad_input("receipt file version is not 1"));
        }
        if j.proof.len() > MAX_PROOF_LEN {
            return Err(Error::bad_input("the inclusion proof is too long"));
        }
        let line = |s: &str| format!("{s}\n");
        let proof = j
            .proof
            .iter()
            .map(|p| {
                B64.decode(p)
                    .ok()
                    .and_then(|b| <Hash>::try_from(b).ok())
                    .ok_or_else(|| Error::bad_input("a proof hash is not 32 bytes of base64"))
            })
            .collect::<Result<Vec<Hash>>>()?;
        Ok(ReceiptFile {
            receipt: Signed::from_json(line(&j.receipt).as_bytes(), StatementType::Receipt)?,
            user_entry: Signed::from_json(
                line(&j.user_entry).as_bytes(),
                StatementType::DirectoryEntry,
            )?,
            leaf_index: j.leaf_index,
            leaf: B64
                .decode(&j.leaf)
                .map_err(|_| Error::bad_input("the leaf is not base64"))?,
            tree_size: j.tree_size,
            proof,
            checkpoint: j.checkpoint,
        })
    }

    /// Verifies everything offline with the authority and log public keys.
    pub fn verify(&self, authority: &PublicKey, log: &VerifierKey) -> Result<Verified> {
        ReceiptVerifier::new(*authority, log.clone()).verify(self)
    }
}

/// Verifies many receipts: a directory entry or checkpoint that several receipts share is
/// checked once (by the SHA-256 of its signed bytes), so a batch costs about one signature
/// verification per receipt.
pub struct ReceiptVerifier {
    authority: PublicKey,
    log: VerifierKey,
    witnesses: Option<WitnessPolicy>,
    entries: std::collections::HashMap<[u8; 32], DirectoryEntry>,
    checkpoints: std::collections::HashMap<[u8; 32], (Checkpoint, Witnesses)>,
    /// Checkpoint notes the verifying party already checked (its client's memory).
    notes: Option<std::sync::Arc<VerifiedNotes>>,
    /// A receipt the verifying party signed itself just now, and the key it signed with: its
    /// signature is not checked again (everything else is).
    own: Option<(Signed, PublicKey)>,
}

impl ReceiptVerifier {
    pub fn new(authority: PublicKey, log: VerifierKey) -> Self {
        ReceiptVerifier {
            authority,
            log,
            witnesses: None,
            entries: std::collections::HashMap::new(),
            checkpoints: std::collections::HashMap::new(),
            notes: None,
            own: None,
        }
    }

    /// Takes checkpoint notes already verified from `notes`, and remembers new ones there.
    pub fn with_notes(mut self, notes: Option<std::sync::Arc<VerifiedNotes>>) -> Self {
        self.notes = notes;
        self
    }

    /// The client that signed `receipt` with `key` a moment ago checks what the relay made of
    /// it: the log entry, the proof and the checkpoint, not its own signature. A file whose
    /// receipt differs by a byte, or whose entry names another key, is checked in full.
    pub fn signed_here(mut self, receipt: &Signed, key: PublicKey) -> Self {
        self.own = Some((receipt.clone(), key));
        self
    }

    /// Also requires the checkpoint to be cosigned by a quorum of `policy`'s witnesses.
    pub fn with_witnesses(mut self, policy: Option<WitnessPolicy>) -> Self {
        self.witnesses = policy;
        self
    }

    pub fn verify(&mut self, file: &ReceiptFile) -> Result<Verified> {
        let entry_key = statement_digest(&file.user_entry);
        let entry = match self.entries.get(&entry_key) {
            Some(e) => e.clone(),
            None => {
                let e = DirectoryEntry::verify(&file.user_entry, &self.authority)
                    .map_err(|e| fail("user directory entry (authority signature)", e.message()))?;
                self.entries.insert(entry_key, e.clone());
                e
            }
        };
        let cp_key = super::directory::sha256(file.checkpoint.as_bytes());
        let (checkpoint, witnessed_by) = match self.checkpoints.get(&cp_key) {
            Some(c) => c.clone(),
            None => {
                let c = match &self.notes {
                    Some(n) => n.verify(&file.checkpoint, &self.log),
                    None => Checkpoint::verify(&file.checkpoint, &self.log),
                }
                .map_err(|e| fail("checkpoint signature", e.message()))?;
                let by = match &self.witnesses {
                    Some(policy) => {
                        policy
                            .check(&file.checkpoint)
                            .map_err(|e| {
                                fail(
                                    "witness cosignatures",
                                    format!(
                                        "{} (a receipt answered before its checkpoint was witnessed can be brought up to date with `sealrelay receipt upgrade`)",
                                        e.message()
                                    ),
                                )
                            })?
                            .by
                    }
                    None => Vec::new(),
                };
                self.checkpoints.insert(cp_key, (c.clone(), by.clone()));
                (c, by)
            }
        };
        let signed_here = self
            .own
            .as_ref()
            .is_some_and(|(r, key)| *r == file.receipt && *key == entry.signing_key);
        let mut v = file.verify_with(&entry, checkpoint, signed_here)?;
        v.witnessed_by = witnessed_by;
        Ok(v)
    }
}

impl ReceiptFile {
    fn verify_with(
        &self,
        entry: &DirectoryEntry,
        checkpoint: Checkpoint,
        signed_here: bool,
    ) -> Result<Verified> {
        let receipt = if signed_here {
            Receipt::decode(&self.receipt.statement)
        } else {
            Receipt::verify(&self.receipt, &entry.signing_key)
        }
        .map_err(|e| fail("user signature on the receipt", e.message()))?;
        if receipt.user != entry.id {
            return Err(fail(
                "user signature on the receipt",
                format!("signed by {} but names {}", entry.id, receipt.user),
            ));
        }
        let event =
            Event::from_leaf_bytes(&self.leaf).map_err(|e| fail("log entry", e.message()))?;
        let digest = statement_digest(&self.receipt);
        if event.kind != "receipt.recorded"
            || event.digest != digest
            || event.subject != receipt.envelope_id.to_hex()
            || event.actor != receipt.user.to_string()
        {
            return Err(fail(
                "log entry",
                "the log leaf does not record this receipt",
            ));
        }
        if self.tree_size != checkpoint.size {
            return Err(fail(
                "inclusion proof",
                "the proof is for another tree size than the checkpoint",
            ));
        }
        verify_inclusion(
            &leaf_hash(&self.leaf),
            self.leaf_index,
            checkpoint.size,
            &self.proof,
            &checkpoint.root,
        )
        .map_err(|e| fail("inclusion proof", e))?;
        Ok(Verified {
            receipt,
            checkpoint,
            leaf_index: self.leaf_index,
            witnessed_by: Vec::new(),
        })
    }
}
