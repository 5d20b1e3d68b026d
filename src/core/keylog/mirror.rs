//! What an agent (or a source) knows of every party from the whole directory log, read leaf by
//! leaf (`client::dirmirror`): each party's newest logged serial and how far its keys are
//! revoked. The relay serves a user's key chain with each grant; a chain proved entry by entry
//! can still leave something out (a newer serial, a revocation), and a relay that did would
//! have agents seal to a key its owner replaced or revoked. Checked against the mirror, a
//! served entry must be the newest the log holds for its party, and not revoked.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{statement_digest, DirectoryLeaf};
use crate::core::directory::{DirectoryEntry, Revocation};
use crate::core::sign::{PublicKey, Signed, StatementType};
use crate::error::{Error, Result};
use crate::ids::hex;

/// Every party's standing in the directory log, as far as it was read.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mirror {
    /// Party id → its newest logged serial, that entry's leaf index and its
    /// [`statement_digest`] (hex).
    pub newest: BTreeMap<String, (u64, u64, String)>,
    /// Party id → the highest serial revoked (every serial up to it is revoked).
    pub revoked: BTreeMap<String, u64>,
}

impl Mirror {
    /// Takes in leaf `index`. Only statements the authority signed count: a leaf that does
    /// not verify names no key anyone uses (clients verify every entry against the authority),
    /// so it changes nothing here. Reset approvals are judged with the grant (`client::keylog`).
    pub fn observe(&mut self, index: u64, leaf: &DirectoryLeaf, authority: &PublicKey) {
        match leaf.statement.ty {
            StatementType::DirectoryEntry => {
                if let Ok(e) = DirectoryEntry::verify(&leaf.statement, authority) {
                    let digest = hex(statement_digest(&leaf.statement));
                    let newest =
                        self.newest
                            .entry(e.id.to_string())
                            .or_insert((0, index, String::new()));
                    // A later leaf for the same serial with another statement is a second
                    // entry for it: the newest is what a served entry of that serial must be.
                    if e.serial > newest.0 || (e.serial == newest.0 && digest != newest.2) {
                        *newest = (e.serial, index, digest);
                    }
                }
            }
            StatementType::Revocation => {
                if let Ok(r) = Revocation::verify(&leaf.statement, authority) {
                    let through = self.revoked.entry(r.id.to_string()).or_insert(0);
                    *through = (*through).max(r.serial);
                }
            }
            _ => {}
        }
    }

    /// Whether `entry` (its signed statement `signed`), served at leaf `index` of the log this
    /// mirror read, may be sealed to: the newest entry the log holds for its party, and not
    /// revoked.
    pub fn check(&self, entry: &DirectoryEntry, signed: &Signed, index: u64) -> Result<()> {
        let id = entry.id.to_string();
        let who = entry.id.short();
        if let Some((serial, at, digest)) = self.newest.get(&id) {
            let (serial, at) = (*serial, *at);
            if serial > entry.serial {
                return Err(Error::verification(format!(
                    "the directory log holds {who}'s key serial {serial} (leaf {at}), newer than the serial {} the relay served: a relay leaving out a key change; refusing to seal to it",
                    entry.serial
                )));
            }
            if serial == entry.serial && *digest != hex(statement_digest(signed)) {
                return Err(Error::verification(format!(
                    "the directory log holds another entry for {who}'s serial {serial} (leaf {at}) than the one the relay served (leaf {index}): refusing to seal to it"
                )));
            }
        }
        if let Some(&through) = self.revoked.get(&id) {
            if entry.serial <= through {
                return Err(Error::verification(format!(
                    "the directory log revokes {who}'s keys through serial {through}, and the relay served serial {}: refusing to seal to a revoked key",
                    entry.serial
                )));
            }
        }
        Ok(())
    }
}
