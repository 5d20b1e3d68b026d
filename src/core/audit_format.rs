//! The relay's log events as a SIEM reads them (`sealrelay audit export`, docs/operations.md):
//! JSON lines of our own, RFC 5424 syslog lines, or OCSF 1.x events. No I/O: an event, its leaf
//! index and the checkpoint it was read under go in; one line comes out. Every line carries the
//! log index, the leaf hash and the checkpoint (origin, size, root) it is included under, so a
//! record can be tied back to the verifiable log (an inclusion proof of that index against that
//! size: `Proof` in docs/protocol.md).

use serde_json::{json, Value};

use crate::core::store::Event;
use crate::ids::hex;

/// OCSF schema version the events are written to.
pub const OCSF_VERSION: &str = "1.5.0";

/// Where an event sits in the verifiable log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRef {
    pub index: u64,
    pub leaf_hash: [u8; 32],
    /// The checkpoint the event was read under: its origin, size and root hash.
    pub origin: String,
    pub tree_size: u64,
    pub root_hash: [u8; 32],
}

impl LogRef {
    fn json(&self) -> Value {
        json!({
            "log_index": self.index,
            "leaf_sha256": hex(self.leaf_hash),
            "checkpoint": {
                "origin": self.origin,
                "tree_size": self.tree_size,
                "root_hash": hex(self.root_hash),
            },
        })
    }
}

/// Our own JSON line: the event's fields and its place in the log.
pub fn jsonl(e: &Event, r: &LogRef) -> Value {
    json!({
        "index": r.index,
        "time": e.time,
        "kind": e.kind,
        "actor": e.actor,
        "subject": e.subject,
        "decision": e.decision,
        "detail": e.detail,
        "digest": hex(&e.digest),
        "log": r.json(),
    })
}

/// An RFC 5424 syslog line (facility auth, 10): the event's fields as structured data, and a
/// short message.
pub fn syslog(e: &Event, r: &LogRef, host: &str) -> String {
    // Security alerts (denials, quarantines, integrity failures) at warning; the rest notice.
    let severity = match e.kind.as_str() {
        "deny" | "deny.summary" | "agent.quarantined" | "integrity.failure" => 4,
        _ => 5,
    };
    let pri = 10 * 8 + severity;
    let sd = |v: &str| {
        v.chars()
            .flat_map(|c| match c {
                '"' | '\\' | ']' => vec!['\\', c],
                c if c.is_control() => vec!['?'],
                c => vec![c],
            })
            .collect::<String>()
    };
    let host = if host.is_empty() { "-" } else { host };
    format!(
        "<{pri}>1 {} {} sealrelay - {} [sealrelay@32473 index=\"{}\" kind=\"{}\" actor=\"{}\" subject=\"{}\" decision=\"{}\" detail=\"{}\" digest=\"{}\" leaf=\"{}\" tree_size=\"{}\" root=\"{}\"] {} {} {}",
        crate::clock::rfc3339(e.time),
        sd(host),
        sd(&e.kind).replace(' ', "_"),
        r.index,
        sd(&e.kind),
        sd(&e.actor),
        sd(&e.subject),
        sd(&e.decision),
        sd(&e.detail),
        hex(&e.digest),
        hex(r.leaf_hash),
        r.tree_size,
        hex(r.root_hash),
        e.kind,
        e.decision,
        e.subject.chars().filter(|c| !c.is_control()).collect::<String>(),
    )
}

/// The OCSF class an event kind maps to: (class_uid, category_uid, activity_id, activity name,
/// what the OCSF `api.operation` or entity names).
fn class_of(kind: &str) -> (u32, u32, u32, &'static str) {
    match kind {
        // Entity management (3004): the directory and the agents' standing.
        "directory.push" | "directory.load" => (3004, 3, 1, "Create"),
        "directory.reset_approval" => (3004, 3, 3, "Update"),
        "agent.quarantined" => (3004, 3, 12, "Suspend"),
        "agent.released" => (3004, 3, 13, "Resume"),
        "policy.load" => (3004, 3, 1, "Create"),
        "policy.reload" => (3004, 3, 3, "Update"),
        // API activity (6003): what parties asked the relay to do, and its answers.
        "grant.created" | "grant.dispatched" | "envelope.submitted" | "receipt.recorded" => {
            (6003, 6, 1, "Create")
        }
        "grant.approved" | "grant.denied" | "source.refused" | "grant.expired" => {
            (6003, 6, 3, "Update")
        }
        "envelope.expired" => (6003, 6, 4, "Delete"),
        _ => (6003, 6, 99, "Other"),
    }
}

/// Whether the event is a refusal or a failed delivery (an OCSF status of Failure): a receipt
/// that says the envelope could not be opened is one (and a signal the monitor counts).
fn refused(e: &Event) -> bool {
    matches!(
        e.decision.as_str(),
        "deny" | "refuse" | "refused" | "close" | "undecryptable"
    ) || e.kind == "grant.denied"
}

/// The OCSF severity: security alerts (a quarantine, an integrity failure) High, as syslog
/// marks them a warning; other failures Medium; the rest Informational.
fn severity(e: &Event, failed: bool) -> u32 {
    match e.kind.as_str() {
        "agent.quarantined" | "integrity.failure" => 4,
        _ if failed => 3,
        _ => 1,
    }
}

/// The event as an OCSF 1.5 event: Entity Management (3004) for changes to the directory, the
/// agents' standing and the policy; API Activity (6003) for every request a party made of the
/// relay (grants, dispatches, submissions, receipts, approvals and the relay's refusals);
/// `unmapped.sealrelay` keeps the event's own fields and its place in the log.
pub fn ocsf(e: &Event, r: &LogRef) -> Value {
    let (class_uid, category_uid, activity_id, activity) = class_of(&e.kind);
    let failed = refused(e);
    let time_ms = e.time.saturating_mul(1000);
    let party = |id: &str| {
        // `spiffe://td/kind/name`: the name as the user name, the whole id as its uid.
        let name = id.rsplit('/').next().unwrap_or(id);
        let kind = id.split('/').nth(3).unwrap_or("");
        let _ = kind;
        json!({ "name": name, "uid": id })
    };
    let mut event = json!({
        "class_uid": class_uid,
        "category_uid": category_uid,
        "activity_id": activity_id,
        "activity_name": activity,
        "type_uid": u64::from(class_uid) * 100 + u64::from(activity_id),
        "time": time_ms,
        "severity_id": severity(e, failed),
        "status_id": if failed { 2 } else { 1 },
        "status": if failed { "Failure" } else { "Success" },
        "message": format!("{} {} {}", e.kind, e.decision, e.subject),
        "metadata": {
            "version": OCSF_VERSION,
            "product": { "name": "sealrelay", "vendor_name": "sealrelay", "version": env!("CARGO_PKG_VERSION") },
            "uid": format!("{}:{}", r.origin, r.index),
            "log_name": r.origin,
            "original_time": crate::clock::rfc3339(e.time),
        },
        "actor": { "user": party(&e.actor) },
        "unmapped": { "sealrelay": {
            "kind": e.kind,
            "decision": e.decision,
            "subject": e.subject,
            "detail": e.detail,
            "digest": hex(&e.digest),
            "log": r.json(),
        }},
    });
    if failed {
        event["status_detail"] = json!(e.detail);
    }
    // A refusal by the relay's policy: the security-control profile says what was decided.
    if e.kind == "deny" || e.kind == "deny.summary" {
        event["metadata"]["profiles"] = json!(["security_control"]);
        event["action_id"] = json!(2);
        event["action"] = json!("Denied");
        event["disposition_id"] = json!(2);
        event["disposition"] = json!("Blocked");
    }
    if class_uid == 3004 {
        event["entity"] =
            json!({ "name": e.subject, "type": e.kind.split('.').next().unwrap_or("") });
    } else {
        event["api"] = json!({ "operation": e.kind, "service": { "name": "sealrelay" } });
        event["src_endpoint"] = json!({ "name": e.actor });
    }
    event
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn event(kind: &str, decision: &str) -> Event {
        Event {
            time: 1_800_000_000,
            kind: kind.into(),
            actor: "spiffe://example.org/agent/bot".into(),
            subject: "ab\"c]\n".into(),
            decision: decision.into(),
            detail: "why".into(),
            digest: vec![1; 32],
        }
    }

    fn at() -> LogRef {
        LogRef {
            index: 7,
            leaf_hash: [2; 32],
            origin: "relay.example/log".into(),
            tree_size: 9,
            root_hash: [3; 32],
        }
    }

    #[test]
    fn every_form_carries_the_log_reference_and_escapes_what_it_must() {
        let e = event("deny", "deny");
        let o = ocsf(&e, &at());
        assert_eq!(o["class_uid"], 6003);
        assert_eq!(o["type_uid"], 600399);
        assert_eq!(o["status_id"], 2);
        assert_eq!(o["unmapped"]["sealrelay"]["log"]["log_index"], 7);
        assert_eq!(o["metadata"]["uid"], "relay.example/log:7");
        let q = ocsf(&event("agent.quarantined", "quarantine"), &at());
        assert_eq!(
            (q["class_uid"].clone(), q["type_uid"].clone()),
            (json!(3004), json!(300412))
        );
        // Helper-found: a quarantine and an undecryptable delivery came out Informational /
        // Success, so a SIEM rule on OCSF severity or status missed both.
        assert_eq!(q["severity_id"], 4);
        assert_eq!(o["severity_id"], 3);
        let u = ocsf(&event("receipt.recorded", "undecryptable"), &at());
        assert_eq!(
            (u["status_id"].clone(), u["severity_id"].clone()),
            (json!(2), json!(3))
        );
        let d = ocsf(&event("receipt.recorded", "delivered"), &at());
        assert_eq!(
            (d["status_id"].clone(), d["severity_id"].clone()),
            (json!(1), json!(1))
        );
        let s = syslog(&e, &at(), "host");
        assert!(s.starts_with("<84>1 "), "{s}");
        assert!(s.contains("subject=\"ab\\\"c\\]?\""), "{s}");
        assert!(!s.contains('\n'));
        assert_eq!(jsonl(&e, &at())["log"]["checkpoint"]["tree_size"], 9);
    }
}
