//! Start-up: the trust root, the policy (a relay never starts on one that does not validate),
//! the store checked against the last signed checkpoint, the directory merged from the store
//! and `DIR/directory`, the first checkpoint, and the sweep of blobs with no envelope.

use std::sync::{Arc, RwLock};

use crate::clock::Clock;
use crate::core::directory::Directory;
use crate::core::policy::{CedarPolicy, DEFAULT_CATALOG, DEFAULT_POLICY};
use crate::core::sign::{Signed, SigningKey, StatementType};
use crate::core::store::{Store, StoredSigned, WriteOp};
use crate::core::wire::WireSigned;
use crate::error::{Error, Result};
use crate::local::{dirstore, trust_root};
use crate::store::blobs::{BlobDir, BlobStore};
use crate::store::postgres::PgStore;
use crate::store::redb::RedbStore;

use super::checkpoints;
use super::committer::Committer;
use super::config::RelayConfig;
use super::connections::Connections;
use super::events;
use super::listener::InFlight;
use super::monitor::{Monitor, RateLimiter};
use super::state::Relay;
use super::witnessing::Witnessing;

/// What the relay needs from `DIR` to serve: its TLS key and certificate, the CA.
pub struct Tls {
    pub cert: Vec<u8>,
    pub key: zeroize::Zeroizing<Vec<u8>>,
    pub ca: Vec<u8>,
}

fn read_text(path: &Option<std::path::PathBuf>, default: &str) -> Result<String> {
    match path {
        Some(p) => String::from_utf8(crate::local::fs::read_capped(p, 1 << 20)?)
            .map_err(|_| Error::bad_input(format!("{} is not UTF-8", p.display()))),
        None => Ok(default.to_owned()),
    }
}

/// The policy and catalog the config names (or the embedded defaults), validated.
pub fn read_policy(config: &RelayConfig) -> Result<CedarPolicy> {
    let policy = read_text(&config.policy_file, DEFAULT_POLICY)?;
    let catalog = read_text(&config.catalog_file, DEFAULT_CATALOG)?;
    CedarPolicy::new(&policy, &catalog)
}

/// Builds the relay's state; `store` is the embedded one unless given.
pub fn load(
    config: RelayConfig,
    store: Option<Arc<dyn Store>>,
    clock: Arc<dyn Clock>,
) -> Result<(Relay, Tls)> {
    let dir = config.dir.clone();
    let meta = trust_root::read_meta(&dir)?;
    let tls = Tls {
        cert: trust_root::read_cert_pem(&dir.join("relay.crt"))?,
        key: trust_root::read_key_pem(&dir.join("relay.key"))?,
        ca: trust_root::read_cert_pem(&dir.join("ca.crt"))?,
    };
    let authority = trust_root::read_verifier_key(&dir.join("authority.pub"))?.key;
    std::fs::create_dir_all(&config.data).map_err(|e| {
        Error::io(format!(
            "cannot create the data directory {}: {e}",
            config.data.display()
        ))
    })?;
    // The data directory is the relay operator's alone (0700, files 0600), whatever the umask.
    crate::local::fs::restrict(&config.data, crate::local::fs::PRIVATE_DIR_MODE)?;
    // What the checkpoints in the data directory are compared with (a store handed in is of no
    // kind known here).
    let store_kind = match (&store, &config.store) {
        (Some(_), _) => None,
        (None, Some(_)) => Some(checkpoints::StoreKind::Postgres),
        (None, None) => Some(checkpoints::StoreKind::Embedded),
    };
    // Large ciphertexts live beside the state: in the database, or files in the data directory.
    let (store, blobs): (Arc<dyn Store>, Arc<dyn BlobStore>) = match store {
        Some(s) => (s, Arc::new(BlobDir::open(&config.data)?)),
        None => match &config.store {
            Some(url) => {
                let store = PgStore::connect(url, config.store_connections)
                    .map_err(|e| e.context("store"))?;
                let blobs = store.blobs();
                (Arc::new(store), Arc::new(blobs))
            }
            None => {
                let store = RedbStore::open(&config.data.join("state.redb"))?;
                store.set_min_free(config.min_free_bytes);
                (Arc::new(store), Arc::new(BlobDir::open(&config.data)?))
            }
        },
    };
    // Every store's failures are counted for `/metrics`.
    let metrics = Arc::new(super::metrics::Metrics::new()?);
    let store: Arc<dyn Store> = Arc::new(super::metrics::MeteredStore::new(store, metrics.clone()));
    let policy =
        read_policy(&config).map_err(|e| e.context("refusing to start on an invalid policy"))?;
    let monitor = Monitor::new(config.monitor.clone(), store.quarantined()?);
    let limiter = RateLimiter::new(config.requests_per_second, config.request_burst);
    // The log key signs checkpoints; a store behind the last one signed is refused.
    let log_key = SigningKey::from_pkcs8(&trust_root::read_key_pem(&dir.join("log.key"))?)
        .map_err(|e| e.context("log.key"))?;
    let log_vk = trust_root::read_verifier_key(&dir.join("log.pub"))?;
    let signer = Arc::new(checkpoints::Signer::new(log_key, log_vk, &config.data)?);
    signer.check_store(store.as_ref(), store_kind)?;
    let relay_actor = format!("spiffe://{}/relay/{}", meta.trust_domain, meta.relay_name);
    let directory = load_directory(&dir, store.as_ref(), &authority, &relay_actor, clock.now())?;
    // From here on every batch is checkpointed; the first checkpoint covers what is there now.
    signer.sign_current(store.as_ref())?;
    let checkpoint = signer.latest.clone();
    let committer = Committer::start(store.clone(), Some(signer.clone()))?;
    let witnessing = match config.witness_policy()? {
        Some(policy) => Some(Arc::new(Witnessing::new(&config, policy)?)),
        None => None,
    };
    // Blobs whose envelope never committed (or was deleted) go.
    let swept = blobs.sweep_at_start(store.as_ref())?;
    if swept > 0 {
        tracing::info!(swept, "removed blobs with no envelope record");
    }
    let relay = Relay {
        config,
        store,
        committer,
        directory: RwLock::new(directory),
        authority,
        trust_domain: meta.trust_domain,
        blobs,
        policy: RwLock::new(Arc::new(policy)),
        in_flight: InFlight::default(),
        checkpoint,
        signer,
        witnessing,
        monitor,
        limiter,
        connections: Connections::default(),
        clock,
        uploads: Default::default(),
        push_lock: tokio::sync::Mutex::new(()),
        denials: Default::default(),
        synced: Default::default(),
        metrics,
    };
    Ok((relay, tls))
}

/// The directory: what was pushed before (in the store) plus what is in `DIR/directory`; what
/// the disk adds is stored with a `directory.load` event.
fn load_directory(
    dir: &std::path::Path,
    store: &dyn Store,
    authority: &crate::core::sign::PublicKey,
    relay_actor: &str,
    now: u64,
) -> Result<Directory> {
    let (mut directory, _) = directory_from_store(store, authority)?;
    let disk_dir = dir.join("directory");
    if !disk_dir.is_dir() {
        return Ok(directory);
    }
    let (disk, _) = dirstore::load(&disk_dir, authority)?;
    let (entries, revocations) = directory_statements(&disk);
    for (_, _, s) in &entries {
        directory.insert_entry(to_signed(s, StatementType::DirectoryEntry)?, authority)?;
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
        };
        store.apply(std::slice::from_ref(&op))?;
    }
    Ok(directory)
}

/// The directory from the statements the store holds (every one verified against
/// `authority`), for a node that shares its store with others.
pub fn directory_from_store(
    store: &dyn Store,
    authority: &crate::core::sign::PublicKey,
) -> Result<(Directory, usize)> {
    let mut directory = Directory::new();
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
