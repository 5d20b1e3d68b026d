//! The policy set split by action, once, when the policy is loaded: a request is put only to
//! the policies whose action scope can match its action. Cedar evaluates every policy of the set
//! it is given, and a policy whose scope names other actions is false for this request without
//! an error (the scope is checked before any `when`), so leaving it out changes neither the
//! decision nor its reasons: the relay's default policy has 14 policies, and a request meets at
//! most 3.

use std::collections::{HashMap, HashSet};

use cedar_policy::{ActionConstraint, EntityUid, PolicySet, Schema};

pub(super) struct ByAction {
    sets: HashMap<EntityUid, PolicySet>,
}

impl ByAction {
    /// `None` when the set cannot be split (it has templates, or the schema's actions cannot
    /// be listed): every request then meets the whole set.
    pub(super) fn split(policies: &PolicySet, schema: &Schema) -> Option<ByAction> {
        if policies.templates().next().is_some()
            || policies.policies().any(|p| p.template_id().is_some())
        {
            return None;
        }
        let actions = schema.action_entities().ok()?;
        let mut sets = HashMap::new();
        for action in actions.iter() {
            let uid = action.uid();
            // `action in A` holds for A itself and for every action A is a group of.
            let groups: HashSet<EntityUid> = actions.ancestors(&uid)?.cloned().collect();
            let mut set = PolicySet::new();
            for policy in policies.policies() {
                let meets = match policy.action_constraint() {
                    ActionConstraint::Any => true,
                    ActionConstraint::Eq(a) => a == uid,
                    ActionConstraint::In(list) => {
                        list.iter().any(|a| *a == uid || groups.contains(a))
                    }
                };
                if meets {
                    set.add(policy.clone()).ok()?;
                }
            }
            sets.insert(uid, set);
        }
        Some(ByAction { sets })
    }

    /// The policies a request for `action` can meet; `None` for an action the schema does not
    /// name (the caller uses the whole set).
    pub(super) fn for_action(&self, action: &EntityUid) -> Option<&PolicySet> {
        self.sets.get(action)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{schema, validated, SCHEMA};
    use super::*;
    use cedar_policy::{Authorizer, Context, Entities, Request};
    use std::str::FromStr;

    fn uid(s: &str) -> EntityUid {
        EntityUid::from_str(s).unwrap()
    }

    /// Every action, for principals of each kind and resources of each kind (with and without
    /// the attributes a `when` reads, so some requests err): the split set decides exactly as
    /// the whole set, with the same deciding policies and the same errors.
    #[test]
    fn the_split_set_decides_as_the_whole_set() {
        let text = format!(
            "{}\n{}",
            super::super::DEFAULT_POLICY,
            r#"
@id("any-action")
permit (principal is Admin, action, resource) when { context.size > 5 };
@id("two-actions")
forbid (principal is User, action in [Action::"fetch", Action::"inbox"], resource)
when { context.size > 100 };
"#
        );
        let policies = validated(SCHEMA, &text, "the policy", "the schema").unwrap();
        let schema = schema().unwrap();
        let split = ByAction::split(&policies, schema).unwrap();
        let actions = schema.action_entities().unwrap();
        let principals = [
            r#"User::"spiffe://example.org/user/alice""#,
            r#"Agent::"spiffe://example.org/agent/bot""#,
            r#"Admin::"spiffe://example.org/admin/root""#,
            r#"Source::"spiffe://example.org/source/crm""#,
        ];
        let resources = [
            r#"Relay::"relay""#,
            r#"Resource::"tickets/1""#,
            r#"Grant::"00""#,
            r#"Envelope::"00""#,
        ];
        let mut compared = 0;
        let mut fewer = 0;
        for action in actions.iter() {
            let a = action.uid();
            let part = split.for_action(&a).unwrap();
            if part.policies().count() < policies.policies().count() {
                fewer += 1;
            }
            for p in principals {
                for r in resources {
                    for size in [0, 1000] {
                        let context =
                            Context::from_json_value(serde_json::json!({ "size": size }), None)
                                .unwrap();
                        let request =
                            Request::new(uid(p), a.clone(), uid(r), context, None).unwrap();
                        let entities = Entities::empty();
                        let whole = Authorizer::new().is_authorized(&request, &policies, &entities);
                        let parted = Authorizer::new().is_authorized(&request, part, &entities);
                        assert_eq!(whole.decision(), parted.decision(), "{a} {p} {r}");
                        let reasons = |r: &cedar_policy::Response| {
                            let mut v: Vec<String> =
                                r.diagnostics().reason().map(|id| id.to_string()).collect();
                            v.sort();
                            v
                        };
                        assert_eq!(reasons(&whole), reasons(&parted), "{a} {p} {r}");
                        let errors = |r: &cedar_policy::Response| {
                            let mut v: Vec<String> =
                                r.diagnostics().errors().map(|e| e.to_string()).collect();
                            v.sort();
                            v
                        };
                        assert_eq!(errors(&whole), errors(&parted), "{a} {p} {r}");
                        compared += 1;
                    }
                }
            }
        }
        assert!(compared > 100, "{compared}");
        assert_eq!(
            fewer,
            actions.iter().count(),
            "every action meets fewer policies"
        );
    }
}
