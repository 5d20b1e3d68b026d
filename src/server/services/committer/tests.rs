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

/// Commits `ops` as one batch (queued before the loop runs, then the loop is told to stop after
/// it) and returns each one's answer.
fn one_batch(store: &Arc<dyn Store>, ops: Vec<WriteOp>) -> Vec<Result<OpResult>> {
    let (committer, commit_loop) = Committer::new(store.clone(), None);
    let mut waits = Vec::new();
    for op in ops {
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
    waits
        .into_iter()
        .map(|mut wait| wait.try_recv().expect("a write was not answered"))
        .collect()
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
    let answers = one_batch(&store, vec![a_grant(), a_record(), a_grant(), a_record()]);
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

/// A submission of `len` bytes stored inline, for a grant the store does not hold (refused in
/// the store, after the reserve has judged it).
fn a_submission(len: usize) -> WriteOp {
    let user: SpiffeId = "spiffe://example.org/user/alice".parse().unwrap();
    let agent: SpiffeId = "spiffe://example.org/agent/bot".parse().unwrap();
    WriteOp::ConsumeGrant {
        agent: agent.clone(),
        source: None,
        envelope: crate::core::store::EnvelopeRecord {
            envelope_id: EnvelopeId::random().unwrap(),
            grant_id: GrantId::random().unwrap(),
            user,
            agent,
            length: len as u64,
            sha256: [0; 32],
            received_at: 1_000,
            expires_at: 2_000,
            statement: StoredSigned {
                statement: b"a statement".to_vec(),
                signature: vec![0; 64],
            },
            receipt: None,
            inline: true,
        },
        // Zeroed on allocation: no memory is touched for it.
        inline_body: Some(vec![0; len]),
        now: 1_000,
        quotas: QuotaConfig::default().store_quotas(),
        event: events::envelope_expired(1_000, "relay", &EnvelopeId::random().unwrap()),
    }
}

/// Helper-found: the reserve was judged for nothing more (`ensure_room(0)`), so a batch of
/// submissions that together ate the reserve (1,024 inline bodies of up to 64 KiB: 64 MiB, the
/// default reserve) went to the disk whole; run out of space there, the whole batch fails, the
/// revocations and receipts beside it too. The batch's own new data counts now: what fits goes
/// on, the rest is held back.
#[test]
fn a_batch_that_would_eat_the_reserve_holds_back_what_does_not_fit() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(&dir.path().join("store.redb")).unwrap();
    let free = crate::local::fs::free_bytes(dir.path()).unwrap();
    if free < (300 << 20) {
        eprintln!("skipped: {free} bytes free, the test needs 300 MiB");
        return;
    }
    // Room above the reserve for one of the 100 MiB submissions below, not for two (50 MiB
    // either way for whatever else writes to this disk meanwhile).
    store.set_min_free(free - (150 << 20));
    let store: Arc<dyn Store> = Arc::new(store);
    let answers = one_batch(
        &store,
        vec![
            a_submission(100 << 20),
            a_record(),
            a_submission(100 << 20),
            a_record(),
        ],
    );
    // The first submission fits: judged by the store (its grant is not there).
    assert!(
        matches!(answers[0], Ok(Err(WriteRefusal::GrantNotFound))),
        "{:?}",
        answers[0]
    );
    assert!(
        matches!(answers[2], Ok(Err(WriteRefusal::StorageReserve))),
        "the second submission went on into the reserve: {:?}",
        answers[2]
    );
    assert!(matches!(answers[1], Ok(Ok(_))) && matches!(answers[3], Ok(Ok(_))));
    assert_eq!(store.event_count().unwrap(), 2);
}
