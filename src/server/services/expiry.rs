//! The expiry sweep: envelopes past their time to live are deleted (with an event), blob files
//! included, and open grants past their expiry are closed (out of every listing and index).

use crate::core::store::WriteOp;

use super::effects::Cx;
use super::events;
use super::relay::Relay;

/// Deletes every envelope whose time to live has passed at `cx.now` (the shell's timer reads
/// the relay's clock).
pub async fn sweep_expired(relay: &Relay, cx: &Cx) -> usize {
    let now = cx.now;
    // Broken uploads kept longer than `upload_resume_secs`, unresumed (first: a store that
    // fails below must not keep them).
    let lapsed = relay.uploads.expired(now);
    if !lapsed.is_empty() {
        relay.metrics.broken_upload("expired", lapsed.len());
        let _ = cx
            .blocking(move || {
                drop(lapsed);
                Ok(())
            })
            .await;
    }
    let Ok(ids) = relay.store.envelope_ids() else {
        return 0;
    };
    let actor = format!("spiffe://{}/relay", relay.trust_domain);
    let mut swept = 0;
    for id in ids {
        let Ok(Some(e)) = relay.store.envelope(&id) else {
            continue;
        };
        if now < e.expires_at {
            continue;
        }
        let op = WriteOp::DeleteEnvelope {
            envelope_id: id,
            event: events::envelope_expired(now, &actor, &id),
        };
        if let Ok(Ok(_)) = relay.committer.submit(op).await {
            if !e.inline {
                cx.remove_blob(&relay.blobs, id).await;
            }
            swept += 1;
        }
    }
    // Monitor signals past every window, on a shared store (in-memory counts prune themselves).
    let before = now.saturating_sub(relay.monitor.config().window_secs);
    if let Err(e) = relay.store.prune_signals(before) {
        tracing::warn!(error = %e, "cannot prune monitor signals");
    }
    // Database blobs a crash left behind (files are swept at start only).
    let blobs = relay.blobs.clone();
    match cx.blocking(move || blobs.sweep_idle()).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(swept = n, "removed blobs with no envelope record"),
        Err(e) => tracing::warn!(error = %e, "cannot sweep blobs"),
    }
    for (caller, count) in relay.denials.due(now) {
        relay.log_denial_summary(&caller, count, now).await;
    }
    swept + close_expired_grants(relay, now).await
}

/// Grants closed per sweep at most (the next sweep takes the rest).
const GRANTS_PER_SWEEP: usize = 10_000;

async fn close_expired_grants(relay: &Relay, now: u64) -> usize {
    let Ok(ids) = relay.store.expired_grants(now, GRANTS_PER_SWEEP) else {
        return 0;
    };
    let actor = format!("spiffe://{}/relay", relay.trust_domain);
    let mut closed = 0;
    for grant_id in ids {
        let op = WriteOp::ExpireGrant {
            grant_id,
            now,
            approval_ttl: relay.config.approval_ttl_secs,
            event: events::grant_expired(now, &actor, &grant_id),
        };
        if let Ok(Ok(_)) = relay.committer.submit(op).await {
            closed += 1;
        }
    }
    closed + close_lapsed_approvals(relay, now, &actor, GRANTS_PER_SWEEP).await
}

/// Closes grants that waited longer than `approval_ttl_secs` for an approval, so that grants
/// nobody answers stop holding their user's and agent's quotas (threat 51). Looks at `most`
/// waiting grants a sweep, going on from where the last sweep stopped (the waiting grants are
/// in grant id order, and users choose their grants' ids: a sweep that always began at the
/// first would never reach a grant behind `most` others).
pub(crate) async fn close_lapsed_approvals(
    relay: &Relay,
    now: u64,
    actor: &str,
    most: usize,
) -> usize {
    let ttl = relay.config.approval_ttl_secs;
    let page_size = most.clamp(1, 1_000);
    let mut after = relay.approval_sweep.lock().map(|a| *a).unwrap_or_default();
    let mut lapsed = Vec::new();
    let mut seen = 0;
    while seen < most {
        let Ok(page) = relay.store.pending_approvals(after.as_ref(), page_size) else {
            break;
        };
        let last = page.len() < page_size;
        seen += page.len();
        after = page.last().map(|g| g.grant_id);
        lapsed.extend(
            page.iter()
                .filter(|g| crate::core::grant_state::approval_lapsed(g, now, ttl))
                .map(|g| g.grant_id),
        );
        if last {
            // The end: the next sweep begins at the first again.
            after = None;
            break;
        }
    }
    if let Ok(mut cursor) = relay.approval_sweep.lock() {
        *cursor = after;
    }
    let mut closed = 0;
    for grant_id in lapsed {
        let op = WriteOp::ExpireGrant {
            grant_id,
            now,
            approval_ttl: ttl,
            event: events::grant_expired(now, actor, &grant_id),
        };
        if let Ok(Ok(_)) = relay.committer.submit(op).await {
            closed += 1;
        }
    }
    closed
}
