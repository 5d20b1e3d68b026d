//! The relay's directory with its log (docs/keys.md): every statement's position in the
//! directory log, the log's Merkle tree, when each entry may be used (a reset waits), and the
//! second admins' approvals that shortened a wait. Built leaf by leaf from what the store
//! appended, so every node of a cluster derives the same.

use std::collections::{BTreeMap, HashMap};

use super::{Directory, DirectoryEntry, EntryProblem};
use crate::core::keylog::{
    statement_digest, usable_from, Change, DirectoryLeaf, LoggedEntry, ResetApproval,
};
use crate::core::sign::{PublicKey, Signed, StatementType};
use crate::core::tlog::{Hash, Tree};
use crate::error::{Error, Result};
use crate::ids::SpiffeId;

/// Where a statement is in the directory log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogPosition {
    pub index: u64,
    pub logged_at: u64,
}

/// A key that cannot be used yet: a reset within its waiting period.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WaitingKey {
    pub entry: DirectoryEntry,
    pub until: u64,
    pub change: Change,
}

#[derive(Clone, Debug, Default)]
pub(super) struct DirectoryLog {
    tree: Tree,
    /// By the SHA-256 of a statement and its signature.
    positions: HashMap<[u8; 32], LogPosition>,
    /// When each logged entry may be used, and how its keys came.
    usable: BTreeMap<(SpiffeId, u64), (u64, Change)>,
    /// Verified approvals: (party, serial) → the shorter wait, the signed approval.
    approvals: BTreeMap<(SpiffeId, u64), (u64, Signed)>,
    wait: u64,
}

impl DirectoryLog {
    /// The newest entry of `id` in force at `now`: logged, and past any waiting period (a
    /// waiting reset leaves the serial before it in force).
    pub(super) fn in_force<'d>(
        &self,
        dir: &'d Directory,
        id: &SpiffeId,
        now: u64,
    ) -> std::result::Result<&'d DirectoryEntry, EntryProblem> {
        let serials = dir.entries.get(id).ok_or(EntryProblem::Unknown)?;
        let mut waiting = None;
        for (e, _) in serials.values().rev() {
            match self.usable.get(&(id.clone(), e.serial)) {
                Some((at, _)) if *at <= now => return Ok(e),
                Some((at, _)) => {
                    waiting.get_or_insert(*at);
                }
                None => {}
            }
        }
        Err(waiting.map_or(EntryProblem::Unknown, EntryProblem::Waiting))
    }
}

impl Directory {
    /// An empty directory that keeps the directory log: entries are in force only once logged
    /// and, for a reset, `wait` seconds after.
    pub fn logged(wait: u64) -> Self {
        Directory {
            log: Some(Box::new(DirectoryLog {
                wait,
                ..DirectoryLog::default()
            })),
            ..Directory::default()
        }
    }

    fn log_mut(&mut self) -> Result<&mut DirectoryLog> {
        self.log
            .as_deref_mut()
            .ok_or_else(|| Error::internal("this directory keeps no log"))
    }

    /// How many leaves of the directory log are in.
    pub fn log_size(&self) -> u64 {
        self.log.as_ref().map_or(0, |l| l.tree.size())
    }

    /// The directory log's tree (roots and proofs).
    pub fn log_tree(&self) -> Option<&Tree> {
        self.log.as_ref().map(|l| &l.tree)
    }

    /// Takes in the next leaf of the directory log (`bytes`, at index [`Directory::log_size`]):
    /// its statement is verified against `authority` and added if new, and its position kept.
    pub fn take_leaf(&mut self, bytes: &[u8], authority: &PublicKey) -> Result<()> {
        let leaf = DirectoryLeaf::decode(bytes)?;
        let hash: Hash = crate::core::tlog::leaf_hash(bytes);
        let index = self.log_size();
        let position = LogPosition {
            index,
            logged_at: leaf.logged_at,
        };
        let statement = leaf.statement;
        match statement.ty {
            StatementType::DirectoryEntry => {
                let e = self.insert_entry(statement.clone(), authority)?;
                let log = self.log_mut()?;
                log.positions.insert(statement_digest(&statement), position);
                log.tree.append(hash);
                self.judge(&e.id)?;
            }
            StatementType::Revocation => {
                self.insert_revocation(&statement, authority)?;
                let log = self.log_mut()?;
                log.positions.insert(statement_digest(&statement), position);
                log.tree.append(hash);
            }
            StatementType::ResetApproval => {
                let a = ResetApproval::decode(&statement.statement)?;
                let approver = self
                    .latest(&a.approver)
                    .cloned()
                    .ok_or_else(|| Error::verification("a reset approval by an unknown admin"))?;
                let reset = self
                    .entries
                    .get(&a.id)
                    .and_then(|v| v.get(&a.serial))
                    .map(|(e, _)| e.clone())
                    .ok_or_else(|| Error::verification("a reset approval of an unknown key"))?;
                ResetApproval::verify(&statement, &approver, &reset)?;
                let log = self.log_mut()?;
                log.positions.insert(statement_digest(&statement), position);
                log.tree.append(hash);
                log.approvals
                    .insert((a.id.clone(), a.serial), (a.wait, statement));
                self.judge(&a.id)?;
            }
            other => {
                return Err(Error::verification(format!(
                    "a {other} statement in the directory log"
                )))
            }
        }
        Ok(())
    }

    /// Computes again when each logged entry of `id` may be used (log time of `now` = the
    /// moment the chain is judged does not matter here: the chain is whole).
    fn judge(&mut self, id: &SpiffeId) -> Result<()> {
        let chain = self.logged_chain(id);
        let Some(log) = self.log.as_deref_mut() else {
            return Ok(());
        };
        let approved: BTreeMap<u64, u64> = log
            .approvals
            .iter()
            .filter(|((who, _), _)| who == id)
            .map(|((_, serial), (wait, _))| (*serial, *wait))
            .collect();
        for n in 1..=chain.len() {
            // `now` = 0: the whole chain is given, so no entry needs the "old enough" rule.
            let (at, change) = usable_from(&chain[..n], log.wait, &approved, 0)?;
            log.usable
                .insert((id.clone(), chain[n - 1].entry.serial), (at, change));
        }
        Ok(())
    }

    /// Every logged entry of `id`, oldest first, with its position.
    pub fn logged_chain(&self, id: &SpiffeId) -> Vec<LoggedEntry> {
        let Some(log) = &self.log else {
            return Vec::new();
        };
        self.entries
            .get(id)
            .into_iter()
            .flat_map(|v| v.values())
            .filter_map(|(e, s)| {
                log.positions
                    .get(&statement_digest(s))
                    .map(|p| LoggedEntry {
                        entry: e.clone(),
                        index: p.index,
                        logged_at: p.logged_at,
                    })
            })
            .collect()
    }

    /// Where `signed` is in the directory log, if it is.
    pub fn position(&self, signed: &Signed) -> Option<LogPosition> {
        self.log
            .as_ref()
            .and_then(|l| l.positions.get(&statement_digest(signed)).copied())
    }

    /// The approval that shortened the wait of serial `serial` of `id`, if any.
    pub fn approval(&self, id: &SpiffeId, serial: u64) -> Option<&Signed> {
        self.log
            .as_ref()
            .and_then(|l| l.approvals.get(&(id.clone(), serial)))
            .map(|(_, s)| s)
    }

    /// The newest key of `id` when it is not in force yet: when it will be, and why.
    pub fn waiting(&self, id: &SpiffeId, now: u64) -> Option<WaitingKey> {
        let log = self.log.as_ref()?;
        let e = self.latest(id)?;
        let (until, change) = *log.usable.get(&(id.clone(), e.serial))?;
        (until > now).then(|| WaitingKey {
            entry: e.clone(),
            until,
            change,
        })
    }

    /// The entry of `id` whose TLS key is `spki` and that is logged but waiting at `now`.
    pub fn waiting_with_tls_key(
        &self,
        id: &SpiffeId,
        spki: &[u8; 32],
        now: u64,
    ) -> Option<WaitingKey> {
        let log = self.log.as_ref()?;
        self.entries.get(id)?.values().rev().find_map(|(e, _)| {
            let (until, change) = *log.usable.get(&(id.clone(), e.serial))?;
            (e.tls_spki_sha256 == *spki && until > now).then(|| WaitingKey {
                entry: e.clone(),
                until,
                change,
            })
        })
    }
}
