//! What an agent (or a source) knows of every party from the whole directory log, read leaf by
//! leaf (`client::dirmirror`): each party's logged entries and revocations, with their leaf
//! indexes. The relay serves a user's key chain with each grant; a chain proved entry by entry
//! can still leave something out (a newer serial, a revocation), and a relay that did would
//! have agents seal to a key its owner replaced or revoked. Checked against the mirror as of
//! the checkpoint the chain was proved under, a served entry must be the one in force for its
//! serial, the newest its party has, and not revoked.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{statement_digest, DirectoryLeaf};
use crate::core::directory::{DirectoryEntry, Revocation};
use crate::core::sign::{PublicKey, Signed, StatementType};
use crate::error::{Error, Result};
use crate::ids::{hex, SpiffeId};

/// Every party's statements in the directory log, as far as it was read.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mirror {
    /// Party id → each entry logged for it, in log order: (serial, leaf index, the hex
    /// [`statement_digest`] of the signed entry).
    pub entries: BTreeMap<String, Vec<(u64, u64, String)>>,
    /// Party id → each revocation logged for it, in log order: (the serial revoked, with every
    /// one before it; leaf index).
    pub revocations: BTreeMap<String, Vec<(u64, u64)>>,
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
                    self.entries
                        .entry(e.id.to_string())
                        .or_default()
                        .push((e.serial, index, digest));
                }
            }
            StatementType::Revocation => {
                if let Ok(r) = Revocation::verify(&leaf.statement, authority) {
                    self.revocations
                        .entry(r.id.to_string())
                        .or_default()
                        .push((r.serial, index));
                }
            }
            _ => {}
        }
    }

    /// The highest serial of `id` revoked by the leaves before `size` (every serial up to it
    /// is revoked), as the relay counts revocations.
    pub fn revoked_through(&self, id: &SpiffeId, size: u64) -> Option<u64> {
        self.revocations
            .get(&id.to_string())?
            .iter()
            .filter(|(_, at)| *at < size)
            .map(|(serial, _)| *serial)
            .max()
    }

    /// Whether `entry` (its signed statement `signed`), served under a checkpoint of `size`
    /// leaves, may be sealed to, judged on the leaves before `size`: its serial is the newest
    /// logged for its party, it is the entry in force for that serial (the first logged: the
    /// relay never takes a second), and it is not revoked.
    pub fn check(&self, entry: &DirectoryEntry, signed: &Signed, size: u64) -> Result<()> {
        let who = entry.id.short();
        let logged = self
            .entries
            .get(&entry.id.to_string())
            .map(|v| v.iter().filter(|(_, at, _)| *at < size).collect::<Vec<_>>())
            .unwrap_or_default();
        if let Some((serial, at, _)) = logged.iter().max_by_key(|(serial, _, _)| *serial) {
            if *serial > entry.serial {
                return Err(Error::verification(format!(
                    "the directory log holds {who}'s key serial {serial} (leaf {at}), newer than the serial {} the relay served: a relay leaving out a key change; refusing to seal to it",
                    entry.serial
                )));
            }
        }
        self.check_chain(&entry.id, &[(entry.serial, signed)], size)?;
        if let Some(through) = self.revoked_through(&entry.id, size) {
            if entry.serial <= through {
                return Err(Error::verification(format!(
                    "the directory log revokes {who}'s keys through serial {through}, and the relay served serial {}: refusing to seal to a revoked key",
                    entry.serial
                )));
            }
        }
        Ok(())
    }

    /// Whether the chain the relay served for `id` (each entry's serial and signed statement,
    /// oldest first) is the log's, judged on the leaves before `size`: each entry is the one in
    /// force for its serial (the first logged), and no logged serial between the chain's first
    /// and its last is left out (a chain that skips one could pass a reset off as a rotation
    /// of the serial before it).
    pub fn check_chain(&self, id: &SpiffeId, chain: &[(u64, &Signed)], size: u64) -> Result<()> {
        let who = id.short();
        let logged = self
            .entries
            .get(&id.to_string())
            .map(|v| v.iter().filter(|(_, at, _)| *at < size).collect::<Vec<_>>())
            .unwrap_or_default();
        for (serial, signed) in chain {
            match logged.iter().find(|(s, _, _)| s == serial) {
                Some((_, at, digest)) if *digest != hex(statement_digest(signed)) => {
                    return Err(Error::verification(format!(
                        "the directory log's entry for {who}'s serial {serial} is another one (leaf {at}) than the one the relay served: refusing to seal to it"
                    )));
                }
                Some(_) => {}
                None => {
                    return Err(Error::verification(format!(
                        "the relay served {who}'s serial {serial}, which the directory log read so far does not hold: refusing to seal to it"
                    )));
                }
            }
        }
        let (Some(first), Some(last)) = (
            chain.iter().map(|(s, _)| *s).min(),
            chain.iter().map(|(s, _)| *s).max(),
        ) else {
            return Ok(());
        };
        if let Some((skipped, at, _)) = logged
            .iter()
            .find(|(s, _, _)| (first..=last).contains(s) && !chain.iter().any(|(c, _)| c == s))
        {
            return Err(Error::verification(format!(
                "the relay served {who}'s keys without serial {skipped} (leaf {at}), which the directory log holds: a relay leaving out a key change; refusing to seal to it"
            )));
        }
        Ok(())
    }
}
