//! A running relay picks up what the admin writes to its trust-root directory (`DIR/directory`,
//! where `user add`, `user revoke` and `agent revoke` put their signed statements): every
//! [`WATCH_EVERY`] it looks at the directory's listing, and when it changed, verifies every
//! statement against the authority and takes in the ones it does not hold yet, as a push would
//! (stored with a `directory.load` event first, then in force; a revoked party's connections
//! closed). A revocation written on the relay's host is thus in force within seconds without a
//! `directory push` (issue: a revocation is not in force until someone pushes it).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::core::directory::Directory;
use crate::core::store::{StoredSigned, WriteOp};
use crate::core::wire::CloseCode;
use crate::error::Result;
use crate::ids::SpiffeId;
use crate::local::dirstore;

use crate::server::services::events;
use crate::server::services::relay::Relay;

/// How often `DIR/directory` is looked at.
pub const WATCH_EVERY: Duration = Duration::from_secs(2);

/// What the directory's listing looked like: (name, length, modification time) per file.
type Listing = Vec<(PathBuf, u64, Option<SystemTime>)>;

fn listing(dir: &Path) -> Listing {
    let mut out: Listing = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let m = e.metadata().ok()?;
            Some((e.path(), m.len(), m.modified().ok()))
        })
        .collect();
    out.sort();
    out
}

/// Watches `DIR/directory` until aborted.
pub async fn run(relay: Arc<Relay>) {
    let dir = relay.config.dir.join("directory");
    let mut seen: Option<Listing> = None;
    let mut tick = tokio::time::interval(WATCH_EVERY);
    loop {
        tick.tick().await;
        let (d, before) = (dir.clone(), seen.clone());
        let Ok(now_listed) = tokio::task::spawn_blocking(move || (before, listing(&d))).await
        else {
            continue;
        };
        let (before, now_listed) = now_listed;
        // Unchanged since the last look: nothing to do. The first look takes in too (what was
        // written while the relay started; taking in is idempotent).
        if before.as_ref() == Some(&now_listed) {
            continue;
        }
        match take_in(&relay, &dir).await {
            Ok(0) => seen = Some(now_listed),
            Ok(n) => {
                tracing::info!(
                    statements = n,
                    "took in new statements from the trust-root directory"
                );
                seen = Some(now_listed);
            }
            // A statement that does not verify (or a half-written file): logged, tried again.
            Err(e) => {
                tracing::warn!(error = %e, "cannot load the trust-root directory; will retry")
            }
        }
    }
}

/// Verifies `dir` and takes in what the relay does not hold yet; how many statements.
async fn take_in(relay: &Relay, dir: &Path) -> Result<usize> {
    let authority = relay.authority;
    let d = dir.to_path_buf();
    // A stray file (an editor's backup, a file under another name) is left out, said so, and
    // keeps nothing else from being taken (a revocation beside it).
    let (disk, left_out): (Directory, _) =
        tokio::task::spawn_blocking(move || dirstore::load_lenient(&d, &authority))
            .await
            .map_err(|_| crate::error::Error::internal("the directory task failed"))??;
    for (path, why) in &left_out {
        tracing::warn!(file = %path.display(), reason = %why, "a file in the trust-root directory is not taken");
    }
    let _one_at_a_time = relay.push_lock.lock().await;
    let mut next = relay
        .directory
        .read()
        .map_err(|_| crate::error::Error::internal("the directory lock is poisoned"))?
        .clone();
    let stored = |s: &crate::core::sign::Signed| StoredSigned {
        statement: s.statement.clone(),
        signature: s.signature.to_vec(),
    };
    let mut entries = Vec::new();
    for (e, s) in disk.all_entries() {
        if e.id.trust_domain() != relay.trust_domain {
            continue;
        }
        if !next.has_entry(&e.id, e.serial) {
            // Each party's entries in order (`Directory::out_of_order`): one whose predecessor
            // is not here yet waits for it.
            if let Some(why) = next.out_of_order(e) {
                tracing::warn!(reason = %why, "a directory entry on disk waits");
                continue;
            }
            next.insert_entry(s.clone(), &relay.authority)?;
            entries.push((e.id.to_string(), e.serial, stored(s)));
        }
    }
    let mut revocations = Vec::new();
    let mut revoked: Vec<SpiffeId> = Vec::new();
    for (r, s) in disk.revocations() {
        if !next.has_revocation(&r.id, r.serial) {
            next.insert_revocation(s, &relay.authority)?;
            revocations.push((r.id.to_string(), r.serial, stored(s)));
            revoked.push(r.id.clone());
        }
    }
    let n = entries.len() + revocations.len();
    if n == 0 {
        return Ok(0);
    }
    let now = relay.clock.now();
    let event =
        events::directory_load(now, &relay.actor("relay"), entries.len(), revocations.len());
    relay
        .commit(WriteOp::PutDirectory {
            entries,
            revocations,
            event,
            log_all: false,
            conflicts_refused: false,
        })
        .await
        .map_err(|r| crate::error::Error::new(crate::ErrorKind::Unavailable, r.message))?;
    crate::server::services::loading::catch_up(&mut next, relay.store.as_ref(), &relay.authority)?;
    // In force only once stored, as a push.
    if let Ok(mut d) = relay.directory.write() {
        *d = next;
    }
    for id in &revoked {
        relay.connections.close_all(id, CloseCode::Revoked);
    }
    Ok(n)
}
