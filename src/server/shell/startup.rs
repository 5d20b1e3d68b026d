//! Start-up: the trust root, the policy (a relay never starts on one that does not validate),
//! the store checked against the last signed checkpoint, the directory merged from the store
//! and `DIR/directory`, the first checkpoint, and the sweep of blobs with no envelope.

use std::sync::{Arc, RwLock};

use crate::clock::Clock;
use crate::core::sign::SigningKey;
use crate::core::store::Store;
use crate::error::{Error, Result};
use crate::local::trust_root;
use crate::store::blobs::{BlobDir, BlobStore};
use crate::store::postgres::PgStore;
use crate::store::redb::RedbStore;

use crate::server::services::checkpoints;
use crate::server::services::committer::Committer;
use crate::server::services::config::RelayConfig;
use crate::server::services::connections::Connections;
use crate::server::services::loading::load_directory;
use crate::server::services::misbehaviour::{Monitor, RateLimiter};
use crate::server::services::relay::Relay;
use crate::server::services::witnessed::Witnessed;

/// What the relay needs from `DIR` to serve: its TLS key and certificate, the CA.
pub struct Tls {
    pub cert: Vec<u8>,
    pub key: zeroize::Zeroizing<Vec<u8>>,
    pub ca: Vec<u8>,
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
    let metrics = Arc::new(crate::server::services::metrics::Metrics::new()?);
    let store: Arc<dyn Store> = Arc::new(crate::server::services::metrics::MeteredStore::new(
        store,
        metrics.clone(),
    ));
    let (policy, proved) = super::policy_gate::proved_policy(&config)
        .map_err(|e| e.context("refusing to start on this policy"))?;
    tracing::info!(policy = %crate::core::policy::Authorizer::policy_hash(&policy), proof = %proved, "policy loaded");
    let monitor = Monitor::new(config.monitor.clone(), store.quarantined()?);
    let limiter = RateLimiter::new(config.requests_per_second, config.request_burst);
    // The log key signs checkpoints; a store behind the last one signed is refused.
    let log_key = SigningKey::from_pkcs8(&trust_root::read_key_pem(&dir.join("log.key"))?)
        .map_err(|e| e.context("log.key"))?;
    let log_vk = trust_root::read_verifier_key(&dir.join("log.pub"))?;
    let signer = Arc::new(checkpoints::Signer::new(log_key, log_vk, &config.data)?);
    signer.check_store(store.as_ref(), store_kind)?;
    let relay_actor = format!("spiffe://{}/relay/{}", meta.trust_domain, meta.relay_name);
    let directory = load_directory(
        &dir,
        store.as_ref(),
        &authority,
        &relay_actor,
        clock.now(),
        meta.reset_wait,
    )?;
    let dir_signer = checkpoints::DirectorySigner::new(
        SigningKey::from_pkcs8(&trust_root::read_key_pem(&dir.join("log.key"))?)
            .map_err(|e| e.context("log.key"))?,
        &meta.log_origin,
    )?;
    // From here on every batch is checkpointed; the first checkpoint covers what is there now.
    // A policy other than the shipped one starts with what was proved of it (or accepted
    // unproven) in the log, as a reload does.
    if config.policy_file.is_some()
        || config.catalog_file.is_some()
        || config.properties_file.is_some()
    {
        let event = crate::server::services::events::policy_load(
            clock.now(),
            &relay_actor,
            format!(
                "policy {}: {proved}",
                crate::core::policy::Authorizer::policy_hash(&policy)
            ),
        );
        store.apply(&[crate::core::store::WriteOp::Append { event }])?;
    }
    signer.sign_current(store.as_ref())?;
    let checkpoint = signer.latest.clone();
    let (committer, commit_loop) = Committer::new(store.clone(), Some(signer.clone()));
    std::thread::Builder::new()
        .name("sealrelay-commit".into())
        .spawn(move || commit_loop.run())
        .map_err(|e| Error::internal(format!("cannot start the commit thread: {e}")))?;
    let witnessing = config
        .witness_policy()?
        .map(|p| Arc::new(Witnessed::new(p)));
    let dir_witnessing = config
        .witness_policy()?
        .map(|p| Arc::new(Witnessed::new(p)));
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
        reset_wait: meta.reset_wait,
        log_origin: meta.log_origin.clone(),
        dir_signer,
        blobs,
        policy: RwLock::new(Arc::new(policy)),
        in_flight: Default::default(),
        checkpoint,
        signer,
        witnessing,
        dir_witnessing,
        monitor,
        limiter,
        connections: Connections::default(),
        clock,
        uploads: Default::default(),
        push_lock: tokio::sync::Mutex::new(()),
        denials: Default::default(),
        feeds: Default::default(),
        approval_sweep: Default::default(),
        metrics,
    };
    Ok((relay, tls))
}
