//! A store for tests that attack the relay from below: it delegates to redb, refuses every
//! transaction once `fail` is set (an I/O error), and serves the envelope named in `tamper`
//! with one bit of its agent-signed statement's signature flipped (a corrupted or malicious
//! store: the user's client must notice); `forge` alters the assignments it lists to a
//! source (a relay forwarding forged assignments: the source must notice); `full_at_commit`
//! makes the disk pass the reserve check an upload starts with and fail the one at its commit
//! (the blob itself took the disk under the reserve); `room` is how many incoming bytes the
//! disk takes before the reserve (unlimited at `u64::MAX`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use sealrelay::core::store::{AssignmentRecord, EnvelopeRecord, Store};
use sealrelay::ids::EnvelopeId;

/// What a forging relay does to each assignment it lists.
pub type Forge = fn(&mut AssignmentRecord);

pub struct Hooked {
    pub inner: sealrelay::store::redb::RedbStore,
    pub fail: Arc<AtomicBool>,
    pub tamper: Arc<Mutex<Option<EnvelopeId>>>,
    pub forge: Arc<Mutex<Option<Forge>>>,
    pub full_at_commit: Arc<AtomicBool>,
    pub room: Arc<std::sync::atomic::AtomicU64>,
}

impl Hooked {
    pub fn in_memory() -> Hooked {
        Hooked {
            inner: sealrelay::store::redb::RedbStore::in_memory().unwrap(),
            fail: Arc::default(),
            tamper: Arc::default(),
            forge: Arc::default(),
            full_at_commit: Arc::default(),
            room: Arc::new(std::sync::atomic::AtomicU64::new(u64::MAX)),
        }
    }

    fn served(&self, mut e: EnvelopeRecord) -> EnvelopeRecord {
        if *self.tamper.lock().unwrap() == Some(e.envelope_id) {
            e.statement.signature[0] ^= 1;
        }
        e
    }
}

impl Store for Hooked {
    fn apply(
        &self,
        ops: &[sealrelay::core::store::WriteOp],
    ) -> sealrelay::Result<Vec<sealrelay::core::store::OpResult>> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(sealrelay::Error::io("disk full (injected)"));
        }
        self.inner.apply(ops)
    }
    fn ensure_room(&self, incoming: u64) -> sealrelay::Result<()> {
        if incoming > self.room.load(Ordering::SeqCst)
            || (self.full_at_commit.load(Ordering::SeqCst)
                && std::thread::current().name() == Some("sealrelay-commit"))
        {
            return Err(sealrelay::Error::storage_full(
                "under the reserve (injected)",
            ));
        }
        self.inner.ensure_room(incoming)
    }
    fn health(&self) -> sealrelay::Result<()> {
        // A store that fails every write is down, as a database that went away would be.
        if self.fail.load(Ordering::SeqCst) {
            return Err(sealrelay::Error::io("disk full (injected)"));
        }
        self.inner.health()
    }
    fn directory(
        &self,
    ) -> sealrelay::Result<(
        Vec<sealrelay::core::store::StoredSigned>,
        Vec<sealrelay::core::store::StoredSigned>,
    )> {
        self.inner.directory()
    }
    fn directory_log(&self, from: u64, n: usize) -> sealrelay::Result<Vec<Vec<u8>>> {
        self.inner.directory_log(from, n)
    }
    fn grant(
        &self,
        id: &sealrelay::ids::GrantId,
    ) -> sealrelay::Result<Option<sealrelay::core::store::GrantRecord>> {
        self.inner.grant(id)
    }
    fn assignment(
        &self,
        id: &sealrelay::ids::GrantId,
    ) -> sealrelay::Result<Option<AssignmentRecord>> {
        self.inner.assignment(id)
    }
    fn assignments_for(
        &self,
        source: &sealrelay::ids::SpiffeId,
        after: Option<&sealrelay::ids::GrantId>,
        limit: usize,
    ) -> sealrelay::Result<Vec<AssignmentRecord>> {
        let mut listed = self.inner.assignments_for(source, after, limit)?;
        if let Some(forge) = *self.forge.lock().unwrap() {
            listed.iter_mut().for_each(forge);
        }
        Ok(listed)
    }
    fn grants_by(
        &self,
        user: &sealrelay::ids::SpiffeId,
        after: Option<&sealrelay::ids::GrantId>,
        limit: usize,
    ) -> sealrelay::Result<Vec<sealrelay::core::store::GrantRecord>> {
        self.inner.grants_by(user, after, limit)
    }
    fn open_grants_for(
        &self,
        agent: &sealrelay::ids::SpiffeId,
        after: Option<&sealrelay::ids::GrantId>,
        limit: usize,
    ) -> sealrelay::Result<Vec<sealrelay::core::store::GrantRecord>> {
        self.inner.open_grants_for(agent, after, limit)
    }
    fn envelope(
        &self,
        id: &sealrelay::ids::EnvelopeId,
    ) -> sealrelay::Result<Option<sealrelay::core::store::EnvelopeRecord>> {
        Ok(self.inner.envelope(id)?.map(|e| self.served(e)))
    }
    fn delivery(
        &self,
        id: &sealrelay::ids::EnvelopeId,
    ) -> sealrelay::Result<Option<sealrelay::core::store::DeliveryRecord>> {
        self.inner.delivery(id)
    }
    fn inbox(
        &self,
        user: &sealrelay::ids::SpiffeId,
        after: Option<&sealrelay::ids::EnvelopeId>,
        limit: usize,
    ) -> sealrelay::Result<Vec<sealrelay::core::store::EnvelopeRecord>> {
        Ok(self
            .inner
            .inbox(user, after, limit)?
            .into_iter()
            .map(|e| self.served(e))
            .collect())
    }
    fn inline_body(&self, id: &sealrelay::ids::EnvelopeId) -> sealrelay::Result<Option<Vec<u8>>> {
        self.inner.inline_body(id)
    }
    fn envelope_ids(&self) -> sealrelay::Result<Vec<sealrelay::ids::EnvelopeId>> {
        self.inner.envelope_ids()
    }
    fn events(
        &self,
        from: u64,
        limit: usize,
    ) -> sealrelay::Result<Vec<(u64, sealrelay::core::store::Event)>> {
        self.inner.events(from, limit)
    }
    fn event_count(&self) -> sealrelay::Result<u64> {
        self.inner.event_count()
    }
    fn log_size(&self) -> u64 {
        self.inner.log_size()
    }
    fn quarantined(&self) -> sealrelay::Result<Vec<(String, String)>> {
        self.inner.quarantined()
    }
    fn pending_approvals(
        &self,
        after: Option<&sealrelay::ids::GrantId>,
        limit: usize,
    ) -> sealrelay::Result<Vec<sealrelay::core::store::GrantRecord>> {
        self.inner.pending_approvals(after, limit)
    }
    fn usage(
        &self,
        party: &sealrelay::ids::SpiffeId,
    ) -> sealrelay::Result<sealrelay::core::store::Usage> {
        self.inner.usage(party)
    }
    fn expired_grants(
        &self,
        now: u64,
        limit: usize,
    ) -> sealrelay::Result<Vec<sealrelay::ids::GrantId>> {
        self.inner.expired_grants(now, limit)
    }
    fn log_root(&self, size: u64) -> sealrelay::Result<sealrelay::core::tlog::Hash> {
        self.inner.log_root(size)
    }
    fn inclusion_proof(
        &self,
        i: u64,
        size: u64,
    ) -> sealrelay::Result<Vec<sealrelay::core::tlog::Hash>> {
        self.inner.inclusion_proof(i, size)
    }
    fn consistency_proof(
        &self,
        a: u64,
        b: u64,
    ) -> sealrelay::Result<Vec<sealrelay::core::tlog::Hash>> {
        self.inner.consistency_proof(a, b)
    }
}
