//! A person's watch on the directory log (docs/keys.md): every statement under their name since
//! the last read is judged, and what their own keys did not make (a reset by an admin, a wait an
//! admin shortened) becomes an alert kept in `IDENTITY.keywatch`. The log is read from the relay
//! over the identity's connection, or over plain HTTP from the relay's admin listener
//! (`--log-url`), which needs no client certificate: a revoked person can still learn what was
//! done under their name. Each read checks the new checkpoint (the log key's signature) against
//! the leaves and the saved right edge of the tree: a log that does not extend what this identity
//! saw is refused (FORK / ROLLBACK).

use std::path::Path;
use std::time::Duration;

use crate::core::identity::Identity;
use crate::core::keylog::{Alert, DirectoryLeaf, Frontier, Watcher};
use crate::core::tlog::checkpoint::Checkpoint;
use crate::core::tlog::leaf_hash;
use crate::core::wire::{Reply, Request};
use crate::error::{Error, ErrorKind, Result};
use crate::local::keywatch_state::{path_for, WatchState};

use super::connection::Connection;
use super::keylog::{directory_key, reset_wait};
use super::unexpected;
use super::verify::authority;

/// Where the directory log is read from.
pub enum LogSource<'a> {
    Relay(&'a Connection),
    /// The relay's admin listener, e.g. `http://relay.example:9464`.
    Http(String),
}

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

/// Most bytes read from one HTTP answer (a full entry bundle: 256 leaves of at most 64 KiB).
const MAX_HTTP_ANSWER: u64 = 256 * (65_535 + 2);
/// Leaves asked for per request to the relay.
const LEAVES_PER_REQUEST: u32 = 256;

fn http_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(20)))
        .http_status_as_error(false)
        .max_redirects(0)
        .user_agent("sealrelay-keys-watch")
        .build()
        .into()
}

fn http_get(agent: &ureq::Agent, url: &str) -> Result<Vec<u8>> {
    let mut response = agent.get(url).call().map_err(|e| {
        Error::new(
            ErrorKind::Unavailable,
            format!("cannot read {url}: {e}; check --log-url (the relay's metrics_listen address)"),
        )
    })?;
    let status = response.status().as_u16();
    if status != 200 {
        return Err(Error::new(
            ErrorKind::Unavailable,
            format!("{url} answered {status}: is --log-url the relay's admin listener?"),
        ));
    }
    response
        .body_mut()
        .with_config()
        .limit(MAX_HTTP_ANSWER)
        .read_to_vec()
        .map_err(|e| Error::new(ErrorKind::Unavailable, format!("cannot read {url}: {e}")))
}

/// The C2SP tlog-tiles path of entry bundle `n`: `x001/x234/067`.
pub fn tile_path(n: u64) -> String {
    let mut groups: Vec<String> = Vec::new();
    let mut rest = n;
    loop {
        groups.push(format!("{:03}", rest % 1000));
        rest /= 1000;
        if rest == 0 {
            break;
        }
    }
    groups.reverse();
    let last = groups.len() - 1;
    groups
        .iter()
        .enumerate()
        .map(|(i, g)| if i < last { format!("x{g}") } else { g.clone() })
        .collect::<Vec<_>>()
        .join("/")
}

/// Splits an entry bundle into leaves.
fn split_bundle(bytes: &[u8]) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let (len, tail) = rest
            .split_first_chunk::<2>()
            .ok_or_else(|| Error::verification("a truncated entry bundle"))?;
        let len = usize::from(u16::from_be_bytes(*len));
        if tail.len() < len {
            return Err(Error::verification("a truncated entry bundle"));
        }
        out.push(tail[..len].to_vec());
        rest = &tail[len..];
    }
    Ok(out)
}

async fn read_checkpoint(source: &LogSource<'_>) -> Result<String> {
    match source {
        LogSource::Relay(conn) => match conn
            .simple(Request::DirectoryCheckpoint { old_size: None })
            .await?
        {
            Reply::Checkpoint { checkpoint, .. } => Ok(checkpoint),
            other => Err(unexpected(&other)),
        },
        LogSource::Http(base) => {
            let url = format!("{}/directory/checkpoint", base.trim_end_matches('/'));
            let bytes = tokio::task::spawn_blocking(move || http_get(&http_agent(), &url))
                .await
                .map_err(|_| Error::internal("the HTTP read failed"))??;
            String::from_utf8(bytes)
                .map_err(|_| Error::verification("the directory checkpoint is not text"))
        }
    }
}

/// Leaves `from..to`.
async fn read_leaves(source: &LogSource<'_>, from: u64, to: u64) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    match source {
        LogSource::Relay(conn) => {
            while from + (out.len() as u64) < to {
                let at = from + out.len() as u64;
                let limit = u32::try_from(to - at)
                    .unwrap_or(u32::MAX)
                    .min(LEAVES_PER_REQUEST);
                match conn
                    .simple(Request::DirectoryLeaves { from: at, limit })
                    .await?
                {
                    Reply::Leaves { leaves } if !leaves.is_empty() => out.extend(leaves),
                    Reply::Leaves { .. } => {
                        return Err(Error::verification(format!(
                            "the relay's checkpoint counts {to} directory leaves but it serves only {at}"
                        )))
                    }
                    other => return Err(unexpected(&other)),
                }
            }
        }
        LogSource::Http(base) => {
            let base = base.trim_end_matches('/').to_owned();
            let (first, last) = (from / 256, (to - 1) / 256);
            let got = tokio::task::spawn_blocking(move || -> Result<Vec<Vec<u8>>> {
                let agent = http_agent();
                let mut all = Vec::new();
                for n in first..=last {
                    let width = (to - n * 256).min(256);
                    let mut url = format!("{base}/directory/tile/entries/{}", tile_path(n));
                    if width < 256 {
                        url.push_str(&format!(".p/{width}"));
                    }
                    let leaves = split_bundle(&http_get(&agent, &url)?)?;
                    if leaves.len() as u64 != width {
                        return Err(Error::verification(format!(
                            "{url} holds {} leaves, not {width}",
                            leaves.len()
                        )));
                    }
                    let skip = from.saturating_sub(n * 256);
                    all.extend(leaves.into_iter().skip(usize::try_from(skip).unwrap_or(0)));
                }
                Ok(all)
            })
            .await
            .map_err(|_| Error::internal("the HTTP read failed"))??;
            out = got;
        }
    }
    out.truncate(usize::try_from(to - from).unwrap_or(usize::MAX));
    Ok(out)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tile_paths_and_bundles() {
        assert_eq!(tile_path(0), "000");
        assert_eq!(tile_path(5), "005");
        assert_eq!(tile_path(1000), "x001/000");
        assert_eq!(tile_path(1_234_067), "x001/x234/067");
        assert_eq!(
            split_bundle(&[0, 1, 7, 0, 0]).unwrap(),
            vec![vec![7], vec![]]
        );
        assert!(split_bundle(&[0, 2, 7]).is_err());
        assert!(split_bundle(&[0]).is_err());
    }
}
