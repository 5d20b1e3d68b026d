//! A person's watch on the directory log (docs/keys.md): every statement under their name since
//! the last read is judged, and what their own keys did not make (a reset by an admin, a wait an
//! admin shortened) becomes an alert kept in `IDENTITY.keywatch`. The log is read from the relay
//! over the identity's connection, or over plain HTTP from the relay's admin listener
//! (`--log-url`), which needs no client certificate: a revoked person can still learn what was
//! done under their name. Each read checks the new checkpoint (the log key's signature) against
//! the leaves and the saved right edge of the tree: a log that does not extend what this identity
//! saw is refused (FORK / ROLLBACK).

use std::path::Path;

use crate::core::identity::Identity;
use crate::core::keylog::{Alert, DirectoryLeaf, Frontier, Watcher};
use crate::core::tlog::checkpoint::Checkpoint;
use crate::core::tlog::leaf_hash;
use crate::error::{Error, ErrorKind, Result};
use crate::local::keywatch_state::{path_for, WatchState};

pub use super::dirlog::LogSource;
use super::dirlog::{read_checkpoint, read_leaves};
use super::keylog::{directory_key, reset_wait};
use super::verify::authority;

/// What a read found.
#[derive(Debug, Clone)]
pub struct WatchReport {
    /// Alerts found by this read.
    pub new_alerts: Vec<Alert>,
    /// Every alert not acknowledged yet (the new ones included).
    pub open_alerts: Vec<Alert>,
    /// Every alert ever found for this identity.
    pub history: Vec<Alert>,
    /// The leaves read so far (the checkpoint's size).
    pub size: u64,
    /// Whether the newest entry under the person's name is one of their own keys.
    pub current_is_own: bool,
}

impl WatchReport {
    /// An error of kind [`ErrorKind::KeyAlert`] when alerts are open (for the exit code).
    pub fn as_error(&self, identity_file: &Path) -> Option<Error> {
        (!self.open_alerts.is_empty()).then(|| {
            Error::new(
                ErrorKind::KeyAlert,
                format!(
                    "{} key alert(s) under this identity's name: a key it did not make was enrolled; run `sealrelay keys watch --identity {}` for who and when, and tell your security team",
                    self.open_alerts.len(),
                    identity_file.display()
                ),
            )
        })
    }
}

/// One alert, on one line, for a person.
pub fn describe(a: &Alert) -> String {
    let by = if a.by.is_empty() {
        "the authority"
    } else {
        &a.by
    };
    match a.what.as_str() {
        "shortened wait" => format!(
            "KEY ALERT: {by} approved a shorter waiting period for your key reset serial {} at {} (leaf {})",
            a.serial,
            crate::clock::rfc3339(a.logged_at),
            a.index
        ),
        _ => format!(
            "KEY ALERT: a key you did not make was enrolled under your name by {by} at {} ({}, serial {}, safety number {}, in force from {}); if it was not you, tell your security team now (leaf {})",
            crate::clock::rfc3339(a.logged_at),
            a.what,
            a.serial,
            a.safety_number,
            crate::clock::rfc3339(a.usable_from),
            a.index
        ),
    }
}

/// Reads the directory log from where `identity` (kept at `identity_file`) last stopped,
/// judges every statement under its name, saves the state, and reports. With `acknowledge`,
/// every alert found so far is marked as seen (the history keeps them).
pub async fn watch(
    identity: &Identity,
    identity_file: &Path,
    source: LogSource<'_>,
    acknowledge: bool,
) -> Result<WatchReport> {
    watch_with(identity, identity_file, source, acknowledge, None).await
}

/// [`watch`], requiring the directory checkpoint to be cosigned by a quorum of `witnesses`
/// (a relay showing this person a log the witnesses did not see is refused).
pub async fn watch_with(
    identity: &Identity,
    identity_file: &Path,
    source: LogSource<'_>,
    acknowledge: bool,
    witnesses: Option<&crate::core::tlog::cosignature::WitnessPolicy>,
) -> Result<WatchReport> {
    let id = identity
        .id
        .clone()
        .ok_or_else(|| Error::bad_input("this identity is not enrolled: import its bundle"))?;
    let authority = authority(identity)?;
    let key = directory_key(identity)?;
    let wait = reset_wait(identity);
    let state_file = path_for(identity_file);
    let mut state = WatchState::load(&state_file)?.unwrap_or_else(|| WatchState {
        origin: key.name.clone(),
        watcher: Watcher::new(&identity.signing_key.public()),
        ..WatchState::default()
    });
    if state.origin != key.name {
        return Err(Error::verification(format!(
            "{} follows the directory log {}, not {}: another trust root's state",
            state_file.display(),
            state.origin,
            key.name
        )));
    }
    state
        .watcher
        .add_own(&identity.signing_key.public(), own_material(identity)?);
    let note = read_checkpoint(&source).await?;
    let cp =
        Checkpoint::verify(&note, &key).map_err(|e| e.context("the directory log's checkpoint"))?;
    if let Some(policy) = witnesses {
        policy.check(&note).map_err(|e| {
            e.context(
                "the directory log's checkpoint is not cosigned by a quorum of your witnesses (yet: try again in a few seconds)",
            )
        })?;
    }
    if cp.size < state.size {
        return Err(Error::verification(format!(
            "ROLLBACK: the directory log now has {} leaves, fewer than the {} this identity read: the relay shows another history",
            cp.size, state.size
        )));
    }
    let mut frontier: Frontier = state.frontier()?;
    let mut previous = state.previous()?;
    let mut new_alerts = Vec::new();
    let mut at = state.size;
    while at < cp.size {
        // One entry bundle at a time: what is held is bounded by one tile.
        let to = (at + 256).min(cp.size);
        for bytes in read_leaves(&source, at, to).await? {
            let leaf = DirectoryLeaf::decode(&bytes)
                .map_err(|e| e.context(format!("directory log leaf {at}")))?;
            frontier.append(leaf_hash(&bytes));
            if let Some(a) =
                state
                    .watcher
                    .observe(&id, at, &leaf, &authority, &mut previous, wait)?
            {
                new_alerts.push(a);
            }
            at += 1;
        }
    }
    if frontier.root() != cp.root {
        return Err(Error::verification(format!(
            "FORK: the directory log's leaves do not add up to its checkpoint of {} leaves (or do not extend the {} this identity read before): the relay shows this identity another directory than it signed",
            cp.size, state.size
        )));
    }
    state.set_frontier(&frontier);
    state.set_previous(&previous);
    state.alerts.extend(new_alerts.iter().cloned());
    if acknowledge {
        state.acknowledged = state.alerts.len();
    }
    state.save(&state_file)?;
    Ok(WatchReport {
        new_alerts,
        open_alerts: state.open_alerts().to_vec(),
        history: state.alerts.clone(),
        size: state.size,
        current_is_own: state.watcher.current_is_own,
    })
}

/// This identity's keys besides its signing key, as the watcher compares them
/// ([`Watcher::material`]).
pub fn own_material(identity: &Identity) -> Result<String> {
    let age = identity
        .age_identity
        .as_ref()
        .map(|a| a.to_public().to_string());
    let spki = crate::core::directory::sha256(&identity.tls_key.spki_der()?);
    Ok(Watcher::material(
        &identity.signing_key.public(),
        age.as_deref(),
        &spki,
    ))
}
