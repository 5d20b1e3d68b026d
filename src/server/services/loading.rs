//! Reading the relay's state: the policy and catalog files (or the embedded defaults), and the
//! directory from the store and `DIR/directory`. Used at start and on reloads.

use crate::core::directory::Directory;
use crate::core::policy::{CedarPolicy, DEFAULT_CATALOG, DEFAULT_POLICY};
use crate::core::sign::{Signed, StatementType};
use crate::core::store::{Store, StoredSigned, WriteOp};
use crate::core::wire::WireSigned;
use crate::error::{Error, Result};
use crate::local::dirstore;

use super::config::RelayConfig;
use super::events;

fn read_text(path: &Option<std::path::PathBuf>, default: &str) -> Result<String> {
    match path {
        Some(p) => String::from_utf8(crate::local::fs::read_capped(p, 1 << 20)?)
            .map_err(|_| Error::bad_input(format!("{} is not UTF-8", p.display()))),
        None => Ok(default.to_owned()),
    }
}

/// The policy and catalog the config names (or the embedded defaults), validated; whether they
/// are the shipped ones; and the config's properties file (its text and name), if any.
pub fn read_policy(config: &RelayConfig) -> Result<LoadedPolicy> {
    let policy_text = read_text(&config.policy_file, DEFAULT_POLICY)?;
    let catalog_text = read_text(&config.catalog_file, DEFAULT_CATALOG)?;
    let policy = CedarPolicy::new(&policy_text, &catalog_text)?;
    let extra_properties = match &config.properties_file {
        Some(p) => Some((read_text(&Some(p.clone()), "")?, p.display().to_string())),
        None => None,
    };
    Ok(LoadedPolicy {
        shipped: policy_text == DEFAULT_POLICY && catalog_text == DEFAULT_CATALOG,
        policy,
        extra_properties,
    })
}

/// What [`read_policy`] read.
pub struct LoadedPolicy {
    pub policy: CedarPolicy,
    /// The shipped policy and catalog, word for word.
    pub shipped: bool,
    pub extra_properties: Option<(String, String)>,
}

/// The directory: what was pushed before (in the store) plus what is in `DIR/directory`; what
/// the disk adds is stored with a `directory.load` event.
pub fn load_directory(
    dir: &std::path::Path,
    store: &dyn Store,
    authority: &crate::core::sign::PublicKey,
    relay_actor: &str,
    now: u64,
    reset_wait: u64,
) -> Result<Directory> {
    let (mut directory, _) = directory_from_store(store, authority, reset_wait)?;
    if directory.log_size() == 0 && directory.all_entries().next().is_some() {
        // A store from before key transparency: its statements become the log's first leaves.
        let (entries, revocations) = directory_statements(&directory);
        let event = events::directory_load(now, relay_actor, entries.len(), revocations.len());
        store.apply(&[WriteOp::PutDirectory {
            entries,
            revocations,
            event,
            log_all: true,
            conflicts_refused: false,
        }])?;
        catch_up(&mut directory, store, authority)?;
    }
    let disk_dir = dir.join("directory");
    if !disk_dir.is_dir() {
        return Ok(directory);
    }
    let (disk, left_out) = dirstore::load_lenient(&disk_dir, authority)?;
    for (path, why) in &left_out {
        // A revocation that cannot be read keeps the relay from starting, as before: it must
        // not serve a party whose revocation it failed to take.
        if path.starts_with(disk_dir.join("revocations")) {
            return Err(why
                .clone()
                .context("a revocation in the trust-root directory"));
        }
        tracing::warn!(file = %path.display(), reason = %why, "a file in the trust-root directory is not taken");
    }
    let (mut on_disk, revocations) = directory_statements(&disk);
    // Each party's entries oldest first, each following the one before: one that skips a
    // serial (its predecessor not copied in yet), or an older one after a newer one, waits,
    // and is taken once it follows (`Directory::out_of_order`).
    on_disk.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    let mut entries = Vec::with_capacity(on_disk.len());
    for row in on_disk {
        let signed = to_signed(&row.2, StatementType::DirectoryEntry)?;
        let e = crate::core::directory::DirectoryEntry::verify(&signed, authority)?;
        if let Some(why) = directory.out_of_order(&e) {
            tracing::warn!(reason = %why, "a directory entry on disk waits");
            continue;
        }
        directory.insert_entry(signed, authority)?;
        entries.push(row);
    }
    for (_, _, s) in &revocations {
        directory.insert_revocation(&to_signed(s, StatementType::Revocation)?, authority)?;
    }
    if !entries.is_empty() || !revocations.is_empty() {
        let event = events::directory_load(now, relay_actor, entries.len(), revocations.len());
        let op = WriteOp::PutDirectory {
            entries,
            revocations,
            event,
            log_all: false,
            conflicts_refused: false,
        };
        store.apply(std::slice::from_ref(&op))?;
        catch_up(&mut directory, store, authority)?;
    }
    Ok(directory)
}

/// Most directory-log leaves read from the store at once.
const LEAVES_PER_READ: usize = 1024;

/// Takes in the directory-log leaves the store holds beyond what `directory` has; how many.
pub fn catch_up(
    directory: &mut Directory,
    store: &dyn Store,
    authority: &crate::core::sign::PublicKey,
) -> Result<u64> {
    let start = directory.log_size();
    let refused_before = directory.refused_leaves().len();
    loop {
        let leaves = store.directory_log(directory.log_size(), LEAVES_PER_READ)?;
        if leaves.is_empty() {
            for (index, why) in directory.refused_leaves().iter().skip(refused_before) {
                tracing::warn!(leaf = index, reason = %why, "a directory-log leaf is not in force");
            }
            return Ok(directory.log_size() - start);
        }
        for leaf in &leaves {
            let at = directory.log_size();
            directory
                .take_leaf(leaf, authority)
                .map_err(|e| e.context(format!("directory log leaf {at}")))?;
        }
    }
}

/// The directory from the statements the store holds (every one verified against
/// `authority`), for a node that shares its store with others.
pub fn directory_from_store(
    store: &dyn Store,
    authority: &crate::core::sign::PublicKey,
    reset_wait: u64,
) -> Result<(Directory, usize)> {
    let mut directory = Directory::logged(reset_wait);
    catch_up(&mut directory, store, authority)?;
    // Statements stored but not logged (none, on a store this relay wrote) are held but never
    // in force: an entry is used only once it is in the log.
    let (entries, revocations) = store.directory()?;
    for s in &entries {
        directory.insert_entry(to_signed(s, StatementType::DirectoryEntry)?, authority)?;
    }
    for s in &revocations {
        directory.insert_revocation(&to_signed(s, StatementType::Revocation)?, authority)?;
    }
    Ok((directory, entries.len() + revocations.len()))
}

fn to_signed(s: &StoredSigned, ty: StatementType) -> Result<Signed> {
    WireSigned {
        statement: s.statement.clone(),
        signature: s.signature.clone(),
    }
    .to_signed(ty)
}

type Rows = Vec<(String, u64, StoredSigned)>;

/// Every statement of a verified directory, as store rows: (entries, revocations).
fn directory_statements(d: &Directory) -> (Rows, Rows) {
    let stored = |s: &Signed| StoredSigned {
        statement: s.statement.clone(),
        signature: s.signature.to_vec(),
    };
    // Every serial, not only the latest: clients recognise a party's earlier keys (a grant or
    // a statement signed before a rotation) from the relay's history of its entries.
    let entries = d
        .all_entries()
        .map(|(e, s)| (e.id.to_string(), e.serial, stored(s)))
        .collect();
    let revocations = d
        .revocations()
        .map(|(r, s)| (r.id.to_string(), r.serial, stored(s)))
        .collect();
    (entries, revocations)
}
