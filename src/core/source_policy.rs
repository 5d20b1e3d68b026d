//! The data owner's policy at a source (docs/sources.md): a Cedar policy over the source's own
//! schema (`docs/policy/source/`), asked about each assignment after every signature, entry and
//! proof has been checked, and before anything is read. Deny by default; an evaluation error is
//! a deny.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;

use cedar_policy::{
    Authorizer, Context, Decision, Entities, Entity, EntityId, EntityTypeName, EntityUid,
    PolicySet, Request, RestrictedExpression,
};

use crate::core::directory::{sha256, DirectoryEntry};
use crate::core::grant::Grant;
use crate::error::{Error, Result};
use crate::ids::hex;

/// The source schema (docs/policy/source/schema.cedarschema).
pub const SOURCE_SCHEMA: &str = include_str!("../../docs/policy/source/schema.cedarschema");
/// The default source policy (docs/policy/source/default.cedar).
pub const SOURCE_DEFAULT_POLICY: &str = include_str!("../../docs/policy/source/default.cedar");

/// A source's policy, validated against the source schema.
pub struct SourcePolicy {
    policies: PolicySet,
    authorizer: Authorizer,
    hash: String,
}

fn uid(ty: &str, id: &str) -> Result<EntityUid> {
    let t = EntityTypeName::from_str(ty)
        .map_err(|e| Error::internal(format!("bad entity type {ty}: {e}")))?;
    Ok(EntityUid::from_type_name_and_id(t, EntityId::new(id)))
}

fn string(s: &str) -> RestrictedExpression {
    RestrictedExpression::new_string(s.to_owned())
}

fn long(v: u64) -> RestrictedExpression {
    RestrictedExpression::new_long(i64::try_from(v).unwrap_or(i64::MAX))
}

fn strings(items: &[String]) -> RestrictedExpression {
    RestrictedExpression::new_set(items.iter().map(|s| string(s)))
}

fn entity(u: EntityUid, attrs: Vec<(&str, RestrictedExpression)>) -> Result<Entity> {
    let attrs: HashMap<String, RestrictedExpression> =
        attrs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    Entity::new(u, attrs, HashSet::new())
        .map_err(|e| Error::internal(format!("cannot build an entity: {e}")))
}

impl SourcePolicy {
    /// Parses and validates a policy (strict mode, against the source schema).
    pub fn new(policy_text: &str) -> Result<Self> {
        let policies = crate::core::policy::validated(
            SOURCE_SCHEMA,
            policy_text,
            "the source policy",
            "docs/policy/source/schema.cedarschema",
        )?;
        Ok(SourcePolicy {
            policies,
            authorizer: Authorizer::new(),
            hash: hex(sha256(policy_text.as_bytes())),
        })
    }

    /// The shipped default (every fill the relay allowed).
    pub fn default_policy() -> Result<Self> {
        Self::new(SOURCE_DEFAULT_POLICY)
    }

    /// SHA-256 of the policy text.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// Whether the data owner's policy lets `grant` be filled for `user` (entry verified) at
    /// the request of `agent` (entry verified), at `now`. `Err` carries the ids of the policies
    /// that forbade it, or "no policy permits it" (never the data's own words).
    pub fn allows(
        &self,
        grant: &Grant,
        user: &DirectoryEntry,
        agent: &DirectoryEntry,
        now: u64,
    ) -> std::result::Result<(), String> {
        self.decide(grant, user, agent, now).unwrap_or_else(|e| {
            Err(format!(
                "the policy could not be evaluated: {}",
                e.message()
            ))
        })
    }

    fn decide(
        &self,
        grant: &Grant,
        user: &DirectoryEntry,
        agent: &DirectoryEntry,
        now: u64,
    ) -> Result<std::result::Result<(), String>> {
        let u = uid("User", &user.id.to_string())?;
        let a = uid("Agent", &agent.id.to_string())?;
        let r = uid("Resource", &grant.resource)?;
        let segments: Vec<&str> = grant.resource.split('/').collect();
        let entities = vec![
            entity(
                u.clone(),
                vec![
                    ("name", string(user.id.name())),
                    ("clearance", long(u64::from(user.attributes.clearance))),
                    ("roles", strings(&user.attributes.roles)),
                ],
            )?,
            entity(
                a.clone(),
                vec![
                    ("name", string(agent.id.name())),
                    ("scopes", strings(&agent.attributes.scopes)),
                ],
            )?,
            entity(
                r.clone(),
                vec![
                    ("path", string(&grant.resource)),
                    ("first", string(segments.first().copied().unwrap_or(""))),
                    ("last", string(segments.last().copied().unwrap_or(""))),
                ],
            )?,
        ];
        let context = Context::from_pairs([
            ("agent".to_owned(), RestrictedExpression::new_entity_uid(a)),
            ("purpose".to_owned(), string(&grant.purpose)),
            ("now".to_owned(), long(now)),
            ("max_bytes".to_owned(), long(grant.max_bytes)),
        ])
        .map_err(|e| Error::internal(format!("cannot build the context: {e}")))?;
        let request = Request::new(u, uid("Action", "fill")?, r, context, None)
            .map_err(|e| Error::internal(format!("cannot build the request: {e}")))?;
        let entities = Entities::from_entities(entities, None)
            .map_err(|e| Error::internal(format!("cannot build entities: {e}")))?;
        let response = self
            .authorizer
            .is_authorized(&request, &self.policies, &entities);
        if response.diagnostics().errors().next().is_some() {
            return Ok(Err("the policy's evaluation failed (denied)".into()));
        }
        if response.decision() == Decision::Allow {
            return Ok(Ok(()));
        }
        let forbids: Vec<String> = response
            .diagnostics()
            .reason()
            .map(|id| {
                self.policies
                    .annotation(id, "id")
                    .unwrap_or(id.as_ref())
                    .to_owned()
            })
            .collect();
        Ok(Err(if forbids.is_empty() {
            "no policy of the data owner permits it".to_owned()
        } else {
            format!(
                "forbidden by the data owner's policy {}",
                forbids.join(", ")
            )
        }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::core::directory::Attributes;
    use crate::core::identity::Identity;
    use crate::ids::{GrantId, PartyKind, SpiffeId};

    fn entry(kind: PartyKind, name: &str) -> DirectoryEntry {
        let id = Identity::generate(kind, name).unwrap();
        DirectoryEntry {
            id: SpiffeId::new("example.org", kind, name).unwrap(),
            serial: 1,
            age_recipient: None,
            signing_key: id.signing_key.public(),
            tls_spki_sha256: [0; 32],
            attributes: Attributes::default(),
            not_before: 0,
            not_after: u64::MAX,
            enrolled_by: String::new(),
            rotation: None,
        }
    }

    fn grant(resource: &str) -> Grant {
        Grant {
            grant_id: GrantId([1; 16]),
            user: SpiffeId::new("example.org", PartyKind::User, "alice").unwrap(),
            agent: SpiffeId::new("example.org", PartyKind::Agent, "bot").unwrap(),
            resource: resource.into(),
            purpose: "p".into(),
            created: 0,
            expires: 10,
            max_bytes: 10,
        }
    }

    #[test]
    fn the_data_owners_policy_decides_and_denies_by_default() {
        let alice = entry(PartyKind::User, "alice");
        let bot = entry(PartyKind::Agent, "bot");
        let default = SourcePolicy::default_policy().unwrap();
        assert!(default
            .allows(&grant("payroll/bob"), &alice, &bot, 1)
            .is_ok());
        let own = SourcePolicy::new(
            r#"@id("own-payroll-record-only")
            permit (principal is User, action == Action::"fill", resource is Resource)
            when { resource.first == "payroll" && resource.last == principal.name };"#,
        )
        .unwrap();
        assert!(own.allows(&grant("payroll/alice"), &alice, &bot, 1).is_ok());
        let no = own
            .allows(&grant("payroll/bob"), &alice, &bot, 1)
            .unwrap_err();
        assert!(no.contains("no policy"), "{no}");
        let forbid = SourcePolicy::new(
            r#"permit (principal, action, resource);
            @id("no-bots") forbid (principal, action, resource) when { context.agent.name == "bot" };"#,
        )
        .unwrap();
        let no = forbid
            .allows(&grant("payroll/alice"), &alice, &bot, 1)
            .unwrap_err();
        assert!(no.contains("no-bots"), "{no}");
        // The relay's schema is not the source's: a policy for it does not validate here.
        assert!(SourcePolicy::new(crate::core::policy::DEFAULT_POLICY).is_err());
        assert!(
            SourcePolicy::new("permit (principal, action, resource) when { resource.nope };")
                .is_err()
        );
    }
}
