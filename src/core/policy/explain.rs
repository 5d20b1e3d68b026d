//! Why no policy permitted a request, in the terms of the default policy (one line, logged as an
//! event: it names no resource).

use super::{Action, CedarPolicy, Context, Principal, Target};
use crate::ids::PartyKind;

impl CedarPolicy {
    /// Why no policy permitted the request, in the terms of the default policy. Reasons are
    /// logged as events, so they name no resource (a resource name can itself be sensitive).
    pub(super) fn explain(
        &self,
        p: &Principal,
        action: Action,
        ctx: &Context,
        in_scope: bool,
    ) -> String {
        let kind = p.id.kind();
        let article = if matches!(kind, PartyKind::Admin | PartyKind::Agent) {
            "an"
        } else {
            "a"
        };
        let base = format!("no policy permits {article} {kind} to {}", action.as_str());
        match (&ctx.target, action) {
            (Target::Resource { name }, Action::Grant) if kind == PartyKind::User => {
                let clearance = p.attributes.as_ref().map_or(0, |a| a.clearance);
                let class = self.catalog.lookup(name).map_or(0, |c| c.classification);
                if ctx.agent_attributes.is_none() {
                    format!("{base}: the agent has no active directory entry (not enrolled, revoked or expired)")
                } else if ctx.agent_quarantined {
                    format!("{base}: the agent is quarantined")
                } else if clearance < class {
                    format!("{base} that resource: clearance {clearance} is below its classification {class}")
                } else if !in_scope {
                    format!("{base} that resource: the agent's scopes do not cover it")
                } else {
                    base
                }
            }
            (Target::Grant { requester, .. }, Action::Approve) if *requester == p.id => {
                format!("{base}: a user cannot approve their own grant")
            }
            (Target::Grant { .. }, Action::Approve) => {
                format!("{base}: it takes the approver role")
            }
            (
                Target::Grant {
                    approved: false, ..
                },
                Action::Submit,
            ) => format!("{base}: the grant awaits approval"),
            _ => base,
        }
    }
}
