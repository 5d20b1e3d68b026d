//! The expiry sweep: envelopes past their time to live are deleted (with an event), blob files
//! included.

use crate::core::store::WriteOp;

use super::events;
use super::state::Relay;

/// Deletes every envelope whose time to live has passed at the relay clock's `now`.
pub async fn sweep_expired(relay: &Relay) -> usize {
    let now = relay.clock.now();
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
            relay.blobs.remove(&id);
            swept += 1;
        }
    }
    swept
}
