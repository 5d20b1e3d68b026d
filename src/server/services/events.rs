//! One constructor per kind of event the relay records. Events hold ids, digests, decisions and
//! times, never content: a resource name appears only as its SHA-256, since names can be
//! sensitive.

use crate::core::directory::sha256;
use crate::core::grant::{Approval, Denial, Grant, Receipt};
use crate::core::sign::Signed;
use crate::core::store::{statement_digest, Event};
use crate::ids::{hex, EnvelopeId, GrantId, SpiffeId};

fn event(now: u64, kind: &str, actor: &str, subject: String, decision: &str) -> Event {
    Event {
        time: now,
        kind: kind.into(),
        actor: actor.to_owned(),
        subject,
        decision: decision.into(),
        detail: String::new(),
        digest: Vec::new(),
    }
}

/// The relay merged the directory on disk into its own at start.
pub fn directory_load(now: u64, relay: &str, entries: usize, revocations: usize) -> Event {
    event(
        now,
        "directory.load",
        relay,
        format!("{entries} entries, {revocations} revocations"),
        "allow",
    )
}

/// An admin pushed directory statements; `names` lists `user/alice#2` and `revoke …` items.
pub fn directory_push(now: u64, admin: &SpiffeId, names: &[String]) -> Event {
    event(
        now,
        "directory.push",
        &admin.to_string(),
        names.join(", "),
        "allow",
    )
}

/// A second admin approved a shorter wait for a reset key.
pub fn reset_approved(
    now: u64,
    admin: &SpiffeId,
    party: &SpiffeId,
    serial: u64,
    wait: u64,
) -> Event {
    let mut e = event(
        now,
        "directory.reset_approval",
        &admin.to_string(),
        format!("{}#{serial}", party.short()),
        "allow",
    );
    e.detail = format!("wait={wait}");
    e
}

/// A user created a grant (awaiting approval where the catalog says so).
pub fn grant_created(
    now: u64,
    user: &SpiffeId,
    g: &Grant,
    signed: &Signed,
    awaiting: bool,
) -> Event {
    Event {
        detail: format!(
            "agent={} resource_sha256={}",
            g.agent,
            hex(sha256(g.resource.as_bytes()))
        ),
        digest: statement_digest(signed).to_vec(),
        ..event(
            now,
            "grant.created",
            &user.to_string(),
            g.grant_id.to_hex(),
            if awaiting {
                "awaiting approval"
            } else {
                "allow"
            },
        )
    }
}

/// A second person approved a grant.
pub fn grant_approved(
    now: u64,
    approver: &SpiffeId,
    requester: &SpiffeId,
    a: &Approval,
    signed: &Signed,
) -> Event {
    Event {
        detail: format!("requester={requester} grant_sha256={}", hex(a.grant_sha256)),
        digest: statement_digest(signed).to_vec(),
        ..event(
            now,
            "grant.approved",
            &approver.to_string(),
            a.grant_id.to_hex(),
            "approve",
        )
    }
}

/// A second person denied a grant.
pub fn grant_denied(
    now: u64,
    approver: &SpiffeId,
    requester: &SpiffeId,
    d: &Denial,
    signed: &Signed,
) -> Event {
    Event {
        detail: format!("requester={requester} grant_sha256={}", hex(d.grant_sha256)),
        digest: statement_digest(signed).to_vec(),
        ..event(
            now,
            "grant.denied",
            &approver.to_string(),
            d.grant_id.to_hex(),
            "deny",
        )
    }
}

/// An agent's envelope was stored.
#[allow(clippy::too_many_arguments)]
pub fn envelope_submitted(
    now: u64,
    agent: &SpiffeId,
    envelope_id: &EnvelopeId,
    grant_id: &GrantId,
    user: &SpiffeId,
    sha256: &[u8; 32],
    length: u64,
    signed: &Signed,
) -> Event {
    Event {
        detail: format!(
            "grant={} user={user} ciphertext_root={} length={length}",
            grant_id.to_hex(),
            hex(sha256)
        ),
        digest: statement_digest(signed).to_vec(),
        ..event(
            now,
            "envelope.submitted",
            &agent.to_string(),
            envelope_id.to_hex(),
            "allow",
        )
    }
}

/// A user's signed delivery receipt was recorded.
pub fn receipt_recorded(now: u64, user: &SpiffeId, r: &Receipt, signed: &Signed) -> Event {
    let digest = statement_digest(signed);
    Event {
        detail: format!(
            "grant={} agent={} ciphertext_root={} receipt_sha256={}",
            r.grant_id.to_hex(),
            r.agent,
            hex(r.ciphertext_root),
            hex(digest)
        ),
        digest: digest.to_vec(),
        ..event(
            now,
            "receipt.recorded",
            &user.to_string(),
            r.envelope_id.to_hex(),
            r.status.as_str(),
        )
    }
}

/// An undelivered envelope passed its time to live and was deleted.
pub fn envelope_expired(now: u64, relay: &str, envelope_id: &EnvelopeId) -> Event {
    event(
        now,
        "envelope.expired",
        relay,
        envelope_id.to_hex(),
        "delete",
    )
}

/// An open grant passed its expiry unused and was closed by the sweep.
pub fn grant_expired(now: u64, relay: &str, grant_id: &GrantId) -> Event {
    event(now, "grant.expired", relay, grant_id.to_hex(), "close")
}

/// Stored ciphertext did not match its recorded digest (found at fetch): it was not sent.
pub fn integrity_failure(now: u64, relay: &str, envelope_id: &EnvelopeId) -> Event {
    Event {
        detail: "the stored ciphertext does not match its recorded SHA-256".into(),
        ..event(
            now,
            "integrity.failure",
            relay,
            envelope_id.to_hex(),
            "refuse",
        )
    }
}

/// A request was refused by authentication or policy. `reason` names no resource.
pub fn deny(now: u64, caller: &SpiffeId, action: &str, reason: &str, policy_hash: &str) -> Event {
    Event {
        detail: format!(
            "{reason} (policy {})",
            policy_hash.get(..16).unwrap_or_default()
        ),
        ..event(now, "deny", &caller.to_string(), action.into(), "deny")
    }
}

/// `count` more denials of `caller` in its previous minute, past the per-minute cap.
pub fn deny_summary(now: u64, caller: &SpiffeId, count: u64) -> Event {
    Event {
        detail: format!("{count} more denials in the minute before, not logged one by one"),
        ..event(
            now,
            "deny.summary",
            &caller.to_string(),
            String::new(),
            "deny",
        )
    }
}

/// An agent was quarantined (by the monitor or an admin's kill switch).
pub fn agent_quarantined(now: u64, actor: &str, agent: &SpiffeId, reason: &str) -> Event {
    Event {
        detail: reason.to_owned(),
        ..event(
            now,
            "agent.quarantined",
            actor,
            agent.to_string(),
            "quarantine",
        )
    }
}

/// An admin released a quarantined agent.
pub fn agent_released(now: u64, admin: &SpiffeId, agent: &SpiffeId) -> Event {
    event(
        now,
        "agent.released",
        &admin.to_string(),
        agent.to_string(),
        "release",
    )
}

/// The relay started on a policy other than the shipped one: its hash and what was proved of it.
pub fn policy_load(now: u64, relay: &str, detail: String) -> Event {
    Event {
        detail,
        ..event(now, "policy.load", relay, "policy".into(), "allow")
    }
}

/// The operator reloaded the policy (`allow`: in force; `deny`: refused, the old one kept).
pub fn policy_reload(now: u64, operator: &str, decision: &str, detail: String) -> Event {
    Event {
        detail,
        ..event(now, "policy.reload", operator, "policy".into(), decision)
    }
}

/// An agent dispatched one of its grants to a source.
pub fn grant_dispatched(
    now: u64,
    agent: &SpiffeId,
    grant_id: &GrantId,
    source: &SpiffeId,
    signed: &Signed,
) -> Event {
    Event {
        detail: format!("source={source}"),
        digest: statement_digest(signed).to_vec(),
        ..event(
            now,
            "grant.dispatched",
            &agent.to_string(),
            grant_id.to_hex(),
            "allow",
        )
    }
}

/// A source refused a grant dispatched to it (the reason is one of a fixed list).
pub fn source_refused(
    now: u64,
    source: &SpiffeId,
    grant_id: &GrantId,
    reason: &str,
    signed: &Signed,
) -> Event {
    Event {
        detail: format!("reason={reason}"),
        digest: statement_digest(signed).to_vec(),
        ..event(
            now,
            "source.refused",
            &source.to_string(),
            grant_id.to_hex(),
            "refused",
        )
    }
}
