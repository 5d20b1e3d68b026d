//! The policy decision point's seam: every request the relay serves is put to an
//! [`Authorizer`] first, with the caller's verified identity and directory attributes.
//! Decisions deny by default and carry their reasons. [`BuiltinPolicy`] is the structural
//! rule (who may call what at all; agents are write-only); the Cedar policy builds on it.

use crate::core::directory::Attributes;
use crate::ids::{PartyKind, SpiffeId};

/// What a caller asks to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    PushDirectory,
    GetEntry,
    Grant,
    ListGrants,
    Submit,
    Inbox,
    Fetch,
    Receipt,
    /// Read the signed checkpoint and consistency proofs.
    Checkpoint,
    /// Read the event log.
    Audit,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::PushDirectory => "push_directory",
            Action::GetEntry => "get_entry",
            Action::Grant => "grant",
            Action::ListGrants => "list_grants",
            Action::Submit => "submit",
            Action::Inbox => "inbox",
            Action::Fetch => "fetch",
            Action::Receipt => "receipt",
            Action::Checkpoint => "checkpoint",
            Action::Audit => "audit",
        }
    }
}

/// The verified caller.
#[derive(Clone, Debug)]
pub struct Principal {
    pub id: SpiffeId,
    /// From the caller's active directory entry (admins have none).
    pub attributes: Option<Attributes>,
}

/// What the request is about, when it is about something.
#[derive(Clone, Debug, Default)]
pub struct Context {
    /// The resource a grant names.
    pub resource: Option<String>,
    /// The requesting user (`sub`) on agent actions.
    pub user: Option<SpiffeId>,
    /// The acting agent (`act`).
    pub agent: Option<SpiffeId>,
    /// The agent's directory attributes, when a user grants to an agent.
    pub agent_attributes: Option<Attributes>,
    pub now: u64,
    pub size: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny { reasons: Vec<String> },
}

impl Decision {
    pub fn deny(reason: impl Into<String>) -> Self {
        Decision::Deny {
            reasons: vec![reason.into()],
        }
    }
    pub fn is_allow(&self) -> bool {
        matches!(self, Decision::Allow)
    }
}

pub trait Authorizer: Send + Sync {
    fn authorize(&self, principal: &Principal, action: Action, ctx: &Context) -> Decision;
}

/// Whether `resource` is within `scope`: equal, or `scope` ends in `*` and is a prefix.
pub fn scope_matches(scope: &str, resource: &str) -> bool {
    match scope.strip_suffix('*') {
        Some(prefix) => resource.starts_with(prefix),
        None => scope == resource,
    }
}

/// The structural rule: admins push the directory; users grant, list their inbox, fetch and
/// file receipts; agents list their grants and submit (write-only); anyone enrolled may read a
/// signed directory entry. A grant must name a resource within the agent's scopes.
#[derive(Clone, Copy, Debug, Default)]
pub struct BuiltinPolicy;

impl Authorizer for BuiltinPolicy {
    fn authorize(&self, principal: &Principal, action: Action, ctx: &Context) -> Decision {
        use Action::*;
        let kind = principal.id.kind();
        let auditor = principal
            .attributes
            .as_ref()
            .is_some_and(|a| a.roles.iter().any(|r| r == "auditor"));
        let allowed = matches!(
            (kind, action),
            (
                PartyKind::Admin,
                PushDirectory | GetEntry | Checkpoint | Audit
            ) | (
                PartyKind::User,
                GetEntry | Grant | Inbox | Fetch | Receipt | Checkpoint
            ) | (
                PartyKind::Agent,
                GetEntry | ListGrants | Submit | Checkpoint
            )
        ) || (kind == PartyKind::User && action == Audit && auditor);
        if !allowed {
            let article = if kind == PartyKind::Admin || kind == PartyKind::Agent {
                "an"
            } else {
                "a"
            };
            return Decision::deny(format!("{article} {kind} may not {}", action.as_str()));
        }
        if action == Grant {
            let (Some(resource), Some(attrs)) = (&ctx.resource, &ctx.agent_attributes) else {
                return Decision::deny("a grant needs a resource and an enrolled agent");
            };
            if !attrs.scopes.iter().any(|s| scope_matches(s, resource)) {
                return Decision::deny(format!(
                    "the agent's scopes do not cover the resource {resource:?}"
                ));
            }
        }
        Decision::Allow
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(s: &str) -> Principal {
        Principal {
            id: s.parse().unwrap(),
            attributes: None,
        }
    }

    #[test]
    fn agents_are_write_only_and_default_is_deny() {
        let p = BuiltinPolicy;
        let agent = principal("spiffe://x.org/agent/bot");
        for a in [
            Action::Inbox,
            Action::Fetch,
            Action::Grant,
            Action::Receipt,
            Action::PushDirectory,
        ] {
            assert!(
                !p.authorize(&agent, a, &Context::default()).is_allow(),
                "{a:?}"
            );
        }
        assert!(p
            .authorize(&agent, Action::Submit, &Context::default())
            .is_allow());
        let user = principal("spiffe://x.org/user/alice");
        assert!(!p
            .authorize(&user, Action::Submit, &Context::default())
            .is_allow());
        assert!(!p
            .authorize(&user, Action::PushDirectory, &Context::default())
            .is_allow());
        let relay = principal("spiffe://x.org/relay/r");
        assert!(!p
            .authorize(&relay, Action::GetEntry, &Context::default())
            .is_allow());
    }

    #[test]
    fn grants_need_the_agents_scope() {
        let p = BuiltinPolicy;
        let user = principal("spiffe://x.org/user/alice");
        let mut ctx = Context {
            resource: Some("tickets/42".into()),
            agent_attributes: Some(Attributes {
                clearance: 0,
                roles: vec![],
                scopes: vec!["tickets/*".into()],
            }),
            ..Context::default()
        };
        assert!(p.authorize(&user, Action::Grant, &ctx).is_allow());
        ctx.resource = Some("payroll/2026".into());
        assert!(!p.authorize(&user, Action::Grant, &ctx).is_allow());
        assert!(
            scope_matches("a/b", "a/b")
                && !scope_matches("a/b", "a/bc")
                && scope_matches("a/*", "a/bc")
        );
    }
}
