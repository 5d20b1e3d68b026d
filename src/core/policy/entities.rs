//! The Cedar entities the relay builds for a request: uids, attribute values, and the
//! principal's entity from its verified directory attributes.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::OnceLock;

use cedar_policy::{Entity, EntityId, EntityTypeName, EntityUid, RestrictedExpression};

use super::{CedarPolicy, Principal};
use crate::error::{Error, Result};
use crate::ids::PartyKind;

/// The schema's entity types, parsed once (parsing a type name runs Cedar's parser).
const ENTITY_TYPES: [&str; 9] = [
    "User", "Agent", "Admin", "Relay", "Resource", "Grant", "Envelope", "Action", "Source",
];

pub(super) fn uid(ty: &str, id: &str) -> Result<EntityUid> {
    static PARSED: OnceLock<HashMap<&'static str, EntityTypeName>> = OnceLock::new();
    let parsed = PARSED.get_or_init(|| {
        ENTITY_TYPES
            .iter()
            .filter_map(|t| EntityTypeName::from_str(t).ok().map(|n| (*t, n)))
            .collect()
    });
    let t = match parsed.get(ty) {
        Some(t) => t.clone(),
        None => EntityTypeName::from_str(ty)
            .map_err(|e| Error::internal(format!("bad entity type {ty}: {e}")))?,
    };
    Ok(EntityUid::from_type_name_and_id(t, EntityId::new(id)))
}

pub(super) fn strings(items: &[String]) -> RestrictedExpression {
    RestrictedExpression::new_set(
        items
            .iter()
            .map(|s| RestrictedExpression::new_string(s.clone())),
    )
}

pub(super) fn long(v: u64) -> RestrictedExpression {
    RestrictedExpression::new_long(i64::try_from(v).unwrap_or(i64::MAX))
}

pub(super) fn entity(uid: EntityUid, attrs: Vec<(&str, RestrictedExpression)>) -> Result<Entity> {
    let attrs: HashMap<String, RestrictedExpression> =
        attrs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    Entity::new(uid, attrs, HashSet::new())
        .map_err(|e| Error::internal(format!("cannot build an entity: {e}")))
}

pub(super) fn party_type(kind: PartyKind) -> &'static str {
    match kind {
        PartyKind::User => "User",
        PartyKind::Agent => "Agent",
        PartyKind::Admin => "Admin",
        PartyKind::Relay => "Relay",
        PartyKind::Source => "Source",
    }
}

impl CedarPolicy {
    pub(super) fn build_principal_entity(&self, p: &Principal) -> Result<(EntityUid, Entity)> {
        let id = p.id.to_string();
        let attrs = p.attributes.clone().unwrap_or_default();
        match p.id.kind() {
            PartyKind::User => {
                let u = uid("User", &id)?;
                let e = entity(
                    u.clone(),
                    vec![
                        ("clearance", long(u64::from(attrs.clearance))),
                        ("roles", strings(&attrs.roles)),
                    ],
                )?;
                Ok((u, e))
            }
            PartyKind::Agent => {
                let u = uid("Agent", &id)?;
                let status = if p.quarantined {
                    "quarantined"
                } else {
                    "active"
                };
                let e = entity(
                    u.clone(),
                    vec![
                        ("scopes", strings(&attrs.scopes)),
                        ("status", RestrictedExpression::new_string(status.into())),
                    ],
                )?;
                Ok((u, e))
            }
            PartyKind::Source => {
                let u = uid("Source", &id)?;
                let e = entity(u.clone(), vec![("serves", strings(&attrs.scopes))])?;
                Ok((u, e))
            }
            kind => {
                let u = uid(party_type(kind), &id)?;
                Ok((u.clone(), entity(u, vec![])?))
            }
        }
    }
}
