use std::sync::Arc;

use super::*;
use crate::core::store::{GrantRecord, GrantState, StoredSigned};
use crate::ids::{EnvelopeId, GrantId, SpiffeId};
use crate::server::services::config::QuotaConfig;
use crate::server::services::events;
use crate::store::redb::RedbStore;

fn a_grant() -> WriteOp {
    let user: SpiffeId = "spiffe://example.org/user/alice".parse().unwrap();
    let agent: SpiffeId = "spiffe://example.org/agent/bot".parse().unwrap();
    WriteOp::CreateGrant {
        record: GrantRecord {
            grant_id: GrantId::random().unwrap(),
            user,
            agent,
            expires: 2_000_000_000,
            max_bytes: 1024,
            created: 1_000,
            grant: StoredSigned {
                statement: b"a grant".to_vec(),
                signature: vec![0; 64],
            },
            state: GrantState::Open,
            resource: "tickets/1".into(),
            needs_approval: false,
            approval: None,
        },
        quotas: QuotaConfig::default().store_quotas(),
        event: events::envelope_expired(1_000, "relay", &EnvelopeId::random().unwrap()),
    }
}

fn a_record() -> WriteOp {
    WriteOp::Append {
        event: events::envelope_expired(1_000, "relay", &EnvelopeId::random().unwrap()),
    }
}

/// Helper-found defect: the reserve was checked once per batch, and a batch refused whole, so a
/// revocation (or a receipt, a quarantine) that shared a batch with a submission failed with
/// "storage full" while the disk was under the reserve: a stolen agent key sending submissions
/// could keep the admin's revocation from taking effect.
#[test]
fn under_the_reserve_only_what_adds_data_is_held_back_in_a_shared_batch() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(&dir.path().join("store.redb")).unwrap();
    // More than any disk has: the reserve is always eaten into.
    store.set_min_free(u64::MAX);
    let store: Arc<dyn Store> = Arc::new(store);
    let (committer, commit_loop) = Committer::new(store.clone(), None);
    // One batch: queued before the loop runs, then the loop is told to stop after it.
    let mut waits = Vec::new();
    for op in [a_grant(), a_record(), a_grant(), a_record()] {
        let (reply, wait) = oneshot::channel();
        committer
            .tx
            .send(Message::Write(Box::new((op, reply))))
            .unwrap();
        waits.push(wait);
    }
    committer.tx.send(Message::Stop).unwrap();
    // Everything, the stop included, is queued: the loop takes the one batch and returns.
    commit_loop.run();
    let answers: Vec<_> = waits
        .into_iter()
        .map(|mut wait| wait.try_recv().expect("a write was not answered"))
        .collect();
    for (i, answer) in answers.iter().enumerate() {
        if i % 2 == 0 {
            assert!(
                matches!(answer, Ok(Err(WriteRefusal::StorageReserve))),
                "a grant was stored inside the reserve: {answer:?}"
            );
        } else {
            assert!(
                matches!(answer, Ok(Ok(_))),
                "a record beside a held-back grant was refused: {answer:?}"
            );
        }
    }
    assert_eq!(
        store.event_count().unwrap(),
        2,
        "both records, and only they"
    );
}
