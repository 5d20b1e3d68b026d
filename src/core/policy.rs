//! The policy decision point: every request the relay serves is put to an [`Authorizer`] with
//! the caller's verified identity and directory attributes. [`CedarPolicy`] evaluates a Cedar
//! policy set (validated against `docs/policy/schema.cedarschema`) over entities the relay
//! builds per request from the directory, the resource catalog and its own records. Decisions
//! deny by default, an evaluation error is a deny, and a deny carries its reasons.
//!
//! The shipped schema, policy and catalog are the files in `docs/policy/`, embedded here, so the
//! documentation and the code cannot drift apart.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Mutex, OnceLock};

use cedar_policy::{
    Authorizer as CedarAuthorizer, Context as CedarContext, Decision as CedarDecision, Entities,
    Entity, EntityUid, PolicySet, Request, RestrictedExpression, Schema, ValidationMode, Validator,
};

use crate::core::directory::{sha256, Attributes};
use crate::error::{Error, Result};
use crate::ids::{hex, EnvelopeId, GrantId, PartyKind, SpiffeId};

/// The Cedar schema (docs/policy/schema.cedarschema).
pub const SCHEMA: &str = include_str!("../../docs/policy/schema.cedarschema");
/// The default policy (docs/policy/default.cedar).
pub const DEFAULT_POLICY: &str = include_str!("../../docs/policy/default.cedar");
/// The default resource catalog (docs/policy/catalog.toml).
pub const DEFAULT_CATALOG: &str = include_str!("../../docs/policy/catalog.toml");

/// What a caller asks to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    PushDirectory,
    GetEntry,
    Grant,
    Approve,
    ListGrants,
    Submit,
    Inbox,
    Fetch,
    Receipt,
    Checkpoint,
    Audit,
    Quarantine,
    Release,
    SubmissionStatus,
    /// An agent has a source fill one of its grants.
    Dispatch,
    /// A source lists what was dispatched to it.
    Assignments,
    /// A source fills (or refuses) a grant dispatched to it.
    Fill,
}

impl Action {
    pub const ALL: [Action; 17] = [
        Action::PushDirectory,
        Action::GetEntry,
        Action::Grant,
        Action::Approve,
        Action::ListGrants,
        Action::Submit,
        Action::Inbox,
        Action::Fetch,
        Action::Receipt,
        Action::Checkpoint,
        Action::Audit,
        Action::Quarantine,
        Action::Release,
        Action::SubmissionStatus,
        Action::Dispatch,
        Action::Assignments,
        Action::Fill,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Action::PushDirectory => "push_directory",
            Action::GetEntry => "get_entry",
            Action::Grant => "grant",
            Action::Approve => "approve",
            Action::ListGrants => "list_grants",
            Action::Submit => "submit",
            Action::Inbox => "inbox",
            Action::Fetch => "fetch",
            Action::Receipt => "receipt",
            Action::Checkpoint => "checkpoint",
            Action::Audit => "audit",
            Action::Quarantine => "quarantine",
            Action::Release => "release",
            Action::SubmissionStatus => "submission_status",
            Action::Dispatch => "dispatch",
            Action::Assignments => "assignments",
            Action::Fill => "fill",
        }
    }
    pub fn from_name(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| Error::bad_input(format!("unknown action {s:?}")))
    }
}

/// The verified caller.
#[derive(Clone, Debug)]
pub struct Principal {
    pub id: SpiffeId,
    /// From the caller's active directory entry (admins have none).
    pub attributes: Option<Attributes>,
    /// Agents: quarantined by the monitor or an admin.
    pub quarantined: bool,
}

/// What a request is about.
#[derive(Clone, Debug, Default)]
pub enum Target {
    /// Nothing in particular (inbox, list grants, checkpoints, the log, the directory).
    #[default]
    Relay,
    /// A resource a grant asks for.
    Resource { name: String },
    /// A grant (submit, approve).
    Grant {
        id: GrantId,
        requester: SpiffeId,
        agent: SpiffeId,
        resource: String,
        approved: bool,
    },
    /// An envelope (fetch, receipt).
    Envelope { id: EnvelopeId, owner: SpiffeId },
    /// An agent (quarantine, release).
    Agent { id: SpiffeId },
}

/// What the request is about, and facts about it.
#[derive(Clone, Debug, Default)]
pub struct Context {
    pub target: Target,
    /// The requesting user (`sub`) on agent actions.
    pub user: Option<SpiffeId>,
    /// The acting agent (`act`).
    pub agent: Option<SpiffeId>,
    /// The agent's directory attributes, when a user grants to an agent.
    pub agent_attributes: Option<Attributes>,
    /// Whether that agent is quarantined.
    pub agent_quarantined: bool,
    /// The source's directory attributes (the patterns it serves), when a grant is dispatched
    /// to it or it fills one.
    pub source_attributes: Option<Attributes>,
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
    /// SHA-256 of the policy in force (logged with every deny).
    fn policy_hash(&self) -> String;
}

/// Whether `resource` is within `scope`, segment by segment (`core::resource::matches`):
/// anything outside the resource grammar matches nothing.
pub fn scope_matches(scope: &str, resource: &str) -> bool {
    super::resource::matches(scope, resource)
}

pub use super::resource::{Catalog, CatalogEntry};

mod by_action;
mod entities;
mod explain;
pub mod properties;

use entities::{entity, long, uid};

/// A Cedar policy set, its schema and the resource catalog.
pub struct CedarPolicy {
    policies: PolicySet,
    /// The same policies split by the action they can match (`by_action`).
    by_action: Option<by_action::ByAction>,
    catalog: Catalog,
    authorizer: CedarAuthorizer,
    hash: String,
    /// Principal entities already built, by what they are built from: a party's entity is
    /// the same for every request until its attributes or quarantine change (which changes
    /// the key). Bounded: emptied when full.
    principals: Mutex<HashMap<PrincipalKey, (EntityUid, Entity)>>,
    /// Whether the schema admits a request, by what its answer depends on (`Shape`): Cedar's
    /// own check of a request against the schema runs once per shape, not per request.
    admitted: Mutex<HashMap<Shape, bool>>,
}

/// What the schema's check of a request the relay builds depends on: the principal's entity
/// type (from its kind), the action, and the resource's entity type (from the target's kind).
/// The context is always built with the same attributes of the same types, whatever their
/// values (`evaluate`), and the check reads no entity data. This holds while the schema has
/// no enumerated entity types (whose ids it checks) and the context no optional attribute: a
/// schema that gains either must key this on more.
type Shape = (PartyKind, Action, std::mem::Discriminant<Target>);

/// What a principal entity is built from.
#[derive(Clone, PartialEq, Eq, Hash)]
struct PrincipalKey {
    id: SpiffeId,
    attributes: Option<Attributes>,
    quarantined: bool,
}

/// Principal entities kept at most.
const MAX_CACHED_PRINCIPALS: usize = 8192;

impl CedarPolicy {
    /// Parses and validates a policy (strict mode, against the schema) and a catalog.
    pub fn new(policy_text: &str, catalog_text: &str) -> Result<Self> {
        let policies = validated(SCHEMA, policy_text, "the policy", "the schema")?;
        let catalog = Catalog::parse(catalog_text)?;
        let mut h = policy_text.as_bytes().to_vec();
        h.push(0);
        h.extend_from_slice(catalog_text.as_bytes());
        Ok(CedarPolicy {
            by_action: by_action::ByAction::split(&policies, schema()?),
            policies,
            catalog,
            authorizer: CedarAuthorizer::new(),
            hash: hex(sha256(&h)),
            principals: Mutex::new(HashMap::new()),
            admitted: Mutex::new(HashMap::new()),
        })
    }

    /// The shipped policy and catalog.
    pub fn default_policy() -> Result<Self> {
        Self::new(DEFAULT_POLICY, DEFAULT_CATALOG)
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The principal's entity, built once per party and attributes.
    fn principal_entity(&self, p: &Principal) -> Result<(EntityUid, Entity)> {
        let key = PrincipalKey {
            id: p.id.clone(),
            attributes: p.attributes.clone(),
            quarantined: p.quarantined,
        };
        if let Some(hit) = self
            .principals
            .lock()
            .ok()
            .and_then(|m| m.get(&key).cloned())
        {
            return Ok(hit);
        }
        let built = self.build_principal_entity(p)?;
        if let Ok(mut m) = self.principals.lock() {
            if m.len() >= MAX_CACHED_PRINCIPALS {
                m.clear();
            }
            m.insert(key, built.clone());
        }
        Ok(built)
    }

    fn evaluate(&self, p: &Principal, action: Action, ctx: &Context) -> Result<Decision> {
        let (principal, principal_entity) = self.principal_entity(p)?;
        let mut entities = vec![principal_entity];
        let resource = match &ctx.target {
            Target::Relay => {
                let u = uid("Relay", "relay")?;
                entities.push(entity(u.clone(), vec![])?);
                u
            }
            Target::Resource { name } => {
                let Some(c) = self.catalog.lookup(name) else {
                    return Ok(Decision::deny(
                        "the resource asked for is not in the resource catalog",
                    ));
                };
                let u = uid("Resource", name)?;
                entities.push(entity(
                    u.clone(),
                    vec![
                        ("classification", long(u64::from(c.classification))),
                        ("approval", RestrictedExpression::new_bool(c.approval)),
                    ],
                )?);
                u
            }
            Target::Grant {
                id,
                requester,
                agent,
                resource,
                approved,
            } => {
                let Some(c) = self.catalog.lookup(resource) else {
                    return Ok(Decision::deny(
                        "the grant's resource is not in the resource catalog",
                    ));
                };
                let u = uid("Grant", &id.to_hex())?;
                entities.push(entity(
                    u.clone(),
                    vec![
                        (
                            "requester",
                            RestrictedExpression::new_entity_uid(uid(
                                "User",
                                &requester.to_string(),
                            )?),
                        ),
                        (
                            "agent",
                            RestrictedExpression::new_entity_uid(uid("Agent", &agent.to_string())?),
                        ),
                        ("classification", long(u64::from(c.classification))),
                        ("approval", RestrictedExpression::new_bool(c.approval)),
                        ("approved", RestrictedExpression::new_bool(*approved)),
                    ],
                )?);
                u
            }
            Target::Envelope { id, owner } => {
                let u = uid("Envelope", &id.to_hex())?;
                entities.push(entity(
                    u.clone(),
                    vec![(
                        "owner",
                        RestrictedExpression::new_entity_uid(uid("User", &owner.to_string())?),
                    )],
                )?);
                u
            }
            Target::Agent { id } => uid("Agent", &id.to_string())?,
        };
        let in_scope = match (&ctx.target, &ctx.agent_attributes) {
            (Target::Resource { name }, Some(a)) => a.scopes.iter().any(|s| scope_matches(s, name)),
            _ => false,
        };
        let source_serves = match (&ctx.target, &ctx.source_attributes) {
            (Target::Grant { resource, .. }, Some(a)) => {
                a.scopes.iter().any(|s| scope_matches(s, resource))
            }
            _ => false,
        };
        let context = CedarContext::from_pairs([
            (
                "source_serves".to_owned(),
                RestrictedExpression::new_bool(source_serves),
            ),
            ("now".to_owned(), long(ctx.now)),
            ("size".to_owned(), long(ctx.size.unwrap_or(0))),
            (
                "sub".to_owned(),
                RestrictedExpression::new_string(
                    ctx.user.as_ref().map(|u| u.to_string()).unwrap_or_default(),
                ),
            ),
            (
                "act".to_owned(),
                RestrictedExpression::new_string(
                    ctx.agent
                        .as_ref()
                        .map(|a| a.to_string())
                        .unwrap_or_default(),
                ),
            ),
            (
                "in_scope".to_owned(),
                RestrictedExpression::new_bool(in_scope),
            ),
            (
                "agent_active".to_owned(),
                RestrictedExpression::new_bool(
                    ctx.agent_attributes.is_some() && !ctx.agent_quarantined,
                ),
            ),
        ])
        .map_err(|e| Error::internal(format!("cannot build the context: {e}")))?;
        // Only requests the schema admits reach the policy: a policy that validates cannot
        // reach past the schema (an unconstrained `principal` in a `permit` for `fetch` is a
        // user's, never an agent's), so what `policy prove` proves of the schema's requests
        // holds of every request.
        let shape = (p.id.kind(), action, std::mem::discriminant(&ctx.target));
        let known = self
            .admitted
            .lock()
            .ok()
            .and_then(|m| m.get(&shape).copied());
        let action_uid = uid("Action", action.as_str())?;
        let request = match known {
            // A shape the schema admitted: so is this request.
            Some(true) => Request::new(principal, action_uid, resource, context, None)
                .map_err(|e| Error::internal(format!("cannot build the request: {e}")))?,
            Some(false) => return Ok(self.not_admitted(p, action)),
            None => {
                let checked =
                    Request::new(principal, action_uid, resource, context, Some(schema()?));
                if let Ok(mut m) = self.admitted.lock() {
                    m.insert(shape, checked.is_ok());
                }
                match checked {
                    Ok(request) => request,
                    Err(_) => return Ok(self.not_admitted(p, action)),
                }
            }
        };
        let entities = Entities::from_entities(entities, None)
            .map_err(|e| Error::internal(format!("cannot build entities: {e}")))?;
        Ok(self
            .decided(&request, &entities)
            .unwrap_or_else(|| Decision::Deny {
                reasons: vec![self.explain(p, action, ctx, in_scope)],
            }))
    }

    fn not_admitted(&self, p: &Principal, action: Action) -> Decision {
        Decision::deny(format!(
            "{}: the schema admits no such request",
            self.explain(p, action, &Context::default(), false)
        ))
    }

    /// The relay's decision on a Cedar request, as `serve` makes it (an error denies, a forbid
    /// names itself): for replaying a request built elsewhere, e.g. a counterexample of
    /// `policy prove`.
    pub fn decide(&self, request: &Request, entities: &Entities) -> Decision {
        self.decided(request, entities)
            .unwrap_or_else(|| Decision::deny("no policy permits it"))
    }

    /// [`CedarPolicy::decide`]; `None`: no policy permits it and none forbids it.
    fn decided(&self, request: &Request, entities: &Entities) -> Option<Decision> {
        // Only the policies that can match the request's action: the same decision, reasons
        // and errors as the whole set (`by_action`).
        let policies = match (&self.by_action, request.action()) {
            (Some(split), Some(action)) => split.for_action(action).unwrap_or(&self.policies),
            _ => &self.policies,
        };
        let response = self.authorizer.is_authorized(request, policies, entities);
        let errors: Vec<String> = response
            .diagnostics()
            .errors()
            .map(|e| one_line(&e.to_string()))
            .collect();
        if !errors.is_empty() {
            return Some(Decision::Deny {
                reasons: errors
                    .into_iter()
                    .map(|e| format!("policy evaluation error (denied): {e}"))
                    .collect(),
            });
        }
        if response.decision() == CedarDecision::Allow {
            return Some(Decision::Allow);
        }
        let forbids: Vec<String> = response
            .diagnostics()
            .reason()
            .map(|id| {
                format!(
                    "forbidden by policy {}",
                    self.policies.annotation(id, "id").unwrap_or(id.as_ref())
                )
            })
            .collect();
        (!forbids.is_empty()).then_some(Decision::Deny { reasons: forbids })
    }

    /// The validated policy set in force.
    pub fn policies(&self) -> &PolicySet {
        &self.policies
    }
}

/// The relay's schema (docs/policy/schema.cedarschema), parsed once.
pub(crate) fn schema() -> Result<&'static Schema> {
    static PARSED: OnceLock<std::result::Result<Schema, String>> = OnceLock::new();
    PARSED
        .get_or_init(|| {
            Schema::from_cedarschema_str(SCHEMA)
                .map(|(s, _)| s)
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| Error::internal(format!("the built-in Cedar schema does not parse: {e}")))
}

impl Authorizer for CedarPolicy {
    fn authorize(&self, principal: &Principal, action: Action, ctx: &Context) -> Decision {
        match self.evaluate(principal, action, ctx) {
            Ok(d) => d,
            // Fail closed: anything that goes wrong evaluating is a deny.
            Err(e) => Decision::deny(format!(
                "policy evaluation failed (denied): {}",
                e.message()
            )),
        }
    }
    fn policy_hash(&self) -> String {
        self.hash.clone()
    }
}

/// `policy_text` parsed and validated in strict mode against `schema_text` (a built-in schema:
/// one that does not parse is an internal error); errors in one line, named `what` and `against`.
pub(crate) fn validated(
    schema_text: &str,
    policy_text: &str,
    what: &str,
    against: &str,
) -> Result<PolicySet> {
    let (schema, _warnings) = Schema::from_cedarschema_str(schema_text)
        .map_err(|e| Error::internal(format!("a built-in Cedar schema does not parse: {e}")))?;
    let policies = PolicySet::from_str(policy_text).map_err(|e| {
        Error::bad_input(format!(
            "{what} does not parse: {}",
            one_line(&e.to_string())
        ))
    })?;
    let result = Validator::new(schema).validate(&policies, ValidationMode::Strict);
    if !result.validation_passed() {
        let first = result
            .validation_errors()
            .next()
            .map(|e| one_line(&e.to_string()))
            .unwrap_or_default();
        return Err(Error::bad_input(format!(
            "{what} does not validate against {against}: {first}"
        )));
    }
    Ok(policies)
}

pub(crate) fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests;
