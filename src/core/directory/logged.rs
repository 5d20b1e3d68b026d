//! The relay's directory with its log (docs/keys.md): every statement's position in the
//! directory log, the log's Merkle tree, when each entry may be used (a reset waits), and the
//! second admins' approvals that shortened a wait. Built leaf by leaf from what the store
//! appended, so every node of a cluster derives the same.

use std::collections::{BTreeMap, HashMap};

use super::{Directory, DirectoryEntry, EntryProblem};
use crate::core::keylog::{
    change_of, statement_digest, usable_from, Change, DirectoryLeaf, LoggedEntry, ResetApproval,
};
use crate::core::sign::{PublicKey, Signed, StatementType};
use crate::core::tlog::Tree;
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

/// A verified approval: the shorter wait, the signed approval, and the approving admin's entry
/// (id, serial) whose key signed it.
type Approved = (u64, Signed, (SpiffeId, u64));

#[derive(Clone, Debug, Default)]
pub(super) struct DirectoryLog {
    tree: Tree,
    /// By the SHA-256 of a statement and its signature.
    positions: HashMap<[u8; 32], LogPosition>,
    /// When each logged entry may be used, and how its keys came.
    usable: BTreeMap<(SpiffeId, u64), (u64, Change)>,
    /// Verified approvals: (party, serial) → [`Approved`].
    approvals: BTreeMap<(SpiffeId, u64), Approved>,
    wait: u64,
    /// Leaves whose statement was not taken, and why.
    refused: Vec<(u64, String)>,
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
    /// the leaf joins the tree whatever it holds (the tree follows the store), and its
    /// statement is verified against `authority` and added if new. A statement that cannot be
    /// taken (a signature that does not verify, a second entry for one serial, an approval that
    /// does not hold) is never in force; why is kept in [`Directory::refused_leaves`]. Errors
    /// only when the bytes are not a leaf at all (a damaged store).
    pub fn take_leaf(&mut self, bytes: &[u8], authority: &PublicKey) -> Result<()> {
        let leaf = DirectoryLeaf::decode(bytes)?;
        let index = self.log_size();
        let position = LogPosition {
            index,
            logged_at: leaf.logged_at,
        };
        self.log_mut()?
            .tree
            .append(crate::core::tlog::leaf_hash(bytes));
        if let Err(e) = self.take_statement(leaf.statement, position, authority) {
            self.log_mut()?
                .refused
                .push((index, e.message().to_owned()));
        }
        Ok(())
    }

    fn take_statement(
        &mut self,
        statement: Signed,
        position: LogPosition,
        authority: &PublicKey,
    ) -> Result<()> {
        let digest = statement_digest(&statement);
        match statement.ty {
            StatementType::DirectoryEntry => {
                let e = self.insert_entry(statement, authority)?;
                self.log_mut()?.positions.insert(digest, position);
                self.judge(&e.id);
            }
            StatementType::Revocation => {
                let r = self.insert_revocation(&statement, authority)?;
                self.log_mut()?.positions.insert(digest, position);
                // A rotation consented by a revoked key is no continuity, and a reset's wait
                // shortened by a revoked admin's key stands in full: judged again.
                self.judge(&r.id);
                let approved: Vec<SpiffeId> = self
                    .log
                    .as_ref()
                    .into_iter()
                    .flat_map(|l| l.approvals.iter())
                    .filter(|(_, (_, _, (approver, _)))| *approver == r.id)
                    .map(|((id, _), _)| id.clone())
                    .collect();
                for id in approved {
                    self.judge(&id);
                }
            }
            StatementType::ResetApproval => {
                let (a, by) = self.checked_approval(&statement)?;
                // One approval per reset; one whose admin key was since revoked approves
                // nothing, and another admin may approve in its place.
                let standing = self.approval(&a.id, a.serial).is_some();
                let log = self.log_mut()?;
                if standing {
                    return Err(Error::conflict(
                        "a second approval of one reset changes nothing",
                    ));
                }
                log.positions.insert(digest, position);
                log.approvals
                    .insert((a.id.clone(), a.serial), (a.wait, statement, by));
                self.judge(&a.id);
            }
            other => {
                return Err(Error::verification(format!(
                    "a {other} statement in the directory log"
                )))
            }
        }
        Ok(())
    }

    /// Checks a reset approval against this directory: the key it names is a logged reset of
    /// its party; the approver is an admin whose entry (not revoked) was in force before the
    /// reset was logged, signed the approval with that entry's key, and did not enroll the key
    /// (a second person: docs/keys.md).
    pub fn check_approval(&self, signed: &Signed) -> Result<ResetApproval> {
        self.checked_approval(signed).map(|(a, _)| a)
    }

    /// [`Directory::check_approval`], with the approving entry (id, serial) whose key signed it.
    fn checked_approval(&self, signed: &Signed) -> Result<(ResetApproval, (SpiffeId, u64))> {
        let a = ResetApproval::decode(&signed.statement)?;
        let chain = self.logged_chain(&a.id);
        let at = chain
            .iter()
            .position(|l| l.entry.serial == a.serial)
            .ok_or_else(|| Error::not_found("the approval names a key that is not logged"))?;
        let reset = &chain[at];
        let previous = at.checked_sub(1).map(|p| &chain[p].entry);
        if self.continuity(&reset.entry, previous) != Change::Reset {
            return Err(Error::conflict(format!(
                "{} serial {} is not a reset: there is no wait to shorten",
                a.id.short(),
                a.serial
            )));
        }
        let log = self.log.as_ref().ok_or_else(|| Error::internal("no log"))?;
        // In force when the reset was logged, and logged before it in the log's order (as
        // agents judge it: a renewal logged in the same second but after the reset is not the
        // entry that approves, or agents would drop the approval).
        let approver = self
            .history(&a.approver)
            .filter(|(_, s)| {
                log.positions
                    .get(&statement_digest(s))
                    .is_some_and(|p| p.index < reset.index)
            })
            .map(|(e, _)| e)
            .filter(|e| !self.is_revoked(&a.approver, e.serial))
            .filter(|e| {
                log.usable
                    .get(&(a.approver.clone(), e.serial))
                    .is_some_and(|(from, _)| *from <= reset.logged_at)
            })
            .find(|e| signed.verify(&e.signing_key).is_ok())
            .ok_or_else(|| {
                Error::verification(format!(
                    "the approval is not signed by an entry of {} that was in force before the reset was logged",
                    a.approver.short()
                ))
            })?;
        let by = (approver.id.clone(), approver.serial);
        Ok((ResetApproval::verify(signed, approver, &reset.entry)?, by))
    }

    /// How `entry` came after `previous`: as [`change_of`], but a rotation or renewal whose
    /// previous serial is revoked is a reset (a revoked, perhaps leaked, key vouches for
    /// nothing).
    pub fn continuity(&self, entry: &DirectoryEntry, previous: Option<&DirectoryEntry>) -> Change {
        match change_of(entry, previous) {
            Change::Rotation | Change::Renewal
                if previous.is_some_and(|p| self.is_revoked(&p.id, p.serial)) =>
            {
                Change::Reset
            }
            c => c,
        }
    }

    /// Computes again when each logged entry of `id` may be used. An entry whose chain does not
    /// hold (serials logged out of order) is never in force.
    fn judge(&mut self, id: &SpiffeId) {
        let chain = self.logged_chain(id);
        let revoked_through = self.revoked.get(id).copied();
        // Approvals by an admin's key since revoked, or by an entry no longer in force when the
        // reset was logged, shorten nothing.
        let approved: BTreeMap<u64, u64> = self
            .log
            .as_ref()
            .into_iter()
            .flat_map(|l| l.approvals.iter())
            .filter(|((who, serial), a)| who == id && self.stands(id, *serial, a))
            .map(|((_, serial), (wait, _, _))| (*serial, *wait))
            .collect();
        let Some(log) = self.log.as_deref_mut() else {
            return;
        };
        let mut broken = false;
        for n in 1..=chain.len() {
            let serial = chain[n - 1].entry.serial;
            // `now` = 0: the whole chain is given, so no entry needs the "old enough" rule. A
            // rotation or renewal of a revoked serial is a reset, and so waits whatever
            // rotates from it.
            let judged = if broken {
                None
            } else {
                usable_from(&chain[..n], log.wait, &approved, revoked_through, 0).ok()
            };
            broken |= judged.is_none();
            log.usable.insert(
                (id.clone(), serial),
                judged.unwrap_or((u64::MAX, Change::Reset)),
            );
        }
    }

    /// When serial `serial` of `id` is in force (`None`: not logged).
    pub fn in_force_from(&self, id: &SpiffeId, serial: u64) -> Option<u64> {
        self.log
            .as_ref()
            .and_then(|l| l.usable.get(&(id.clone(), serial)))
            .map(|(at, _)| *at)
    }

    /// Leaves whose statement could not be taken, with why (never in force).
    pub fn refused_leaves(&self) -> &[(u64, String)] {
        self.log.as_ref().map_or(&[], |l| &l.refused)
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

    /// The approval that shortened the wait of serial `serial` of `id`, if any (none once the
    /// key that signed it is revoked).
    pub fn approval(&self, id: &SpiffeId, serial: u64) -> Option<&Signed> {
        self.approval_by(id, serial).map(|(s, _)| s)
    }

    /// [`Directory::approval`], with the approving admin's entry whose key signed it (the one
    /// judged in force before the reset was logged, not necessarily the admin's newest).
    pub fn approval_by(
        &self,
        id: &SpiffeId,
        serial: u64,
    ) -> Option<(&Signed, &(DirectoryEntry, Signed))> {
        let (_, signed, (approver, by)) = self
            .log
            .as_ref()?
            .approvals
            .get(&(id.clone(), serial))
            .filter(|a| self.stands(id, serial, a))?;
        let entry = self.history(approver).find(|(e, _)| e.serial == *by)?;
        Some((signed, entry))
    }

    /// Whether approval `a` of serial `serial` of `id` still stands: the admin entry that signed
    /// it is not revoked, and is still judged in force by the time the reset was logged (a
    /// revocation can make the rotation that brought that entry a reset, which waits).
    fn stands(&self, id: &SpiffeId, serial: u64, a: &Approved) -> bool {
        let (_, _, (approver, by)) = a;
        let Some(log) = self.log.as_ref() else {
            return false;
        };
        let reset_logged = self
            .entries
            .get(id)
            .and_then(|v| v.get(&serial))
            .and_then(|(_, s)| log.positions.get(&statement_digest(s)))
            .map(|p| p.logged_at);
        !self.is_revoked(approver, *by)
            && log
                .usable
                .get(&(approver.clone(), *by))
                .zip(reset_logged)
                .is_some_and(|((from, _), at)| *from <= at)
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
            // A revoked key waits for nothing: it is revoked (said so by `active`).
            if self.is_revoked(id, e.serial) {
                return None;
            }
            let (until, change) = *log.usable.get(&(id.clone(), e.serial))?;
            (e.tls_spki_sha256 == *spki && until > now).then(|| WaitingKey {
                entry: e.clone(),
                until,
                change,
            })
        })
    }
}
