//! The properties a relay policy must have (`docs/policy/properties.toml`, and an operator's own
//! file of the same form), parsed and checked against the schema before anything is proved.

use std::collections::HashSet;
use std::str::FromStr;

use cedar_policy::PolicySet;
use serde::Deserialize;

use super::{validated, Action, Catalog, SCHEMA};
use crate::core::resource::MAX_CLEARANCE;
use crate::error::{Error, Result};

/// The shipped properties (docs/policy/properties.toml), always checked.
pub const SHIPPED_PROPERTIES: &str = include_str!("../../../docs/policy/properties.toml");

/// The principal entity types a request can have.
pub const PRINCIPAL_TYPES: [&str; 4] = ["User", "Agent", "Admin", "Source"];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    property: Vec<Raw>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    id: String,
    says: String,
    #[serde(default = "yes")]
    required: bool,
    #[serde(default)]
    principals: Vec<String>,
    #[serde(default)]
    actions: Vec<String>,
    #[serde(default)]
    always_denies: bool,
    #[serde(default)]
    allows_only: Option<String>,
    #[serde(default)]
    never_errors: bool,
}

fn yes() -> bool {
    true
}

/// What a property says of the policy, on the requests it is about.
#[derive(Clone, Debug)]
pub enum Check {
    /// Every such request is denied.
    AlwaysDenies,
    /// Such a request is allowed only if these permits allow it.
    AllowsOnly(Box<PolicySet>),
    /// No policy errors on such a request.
    NeverErrors,
}

/// One property, checked.
#[derive(Clone, Debug)]
pub struct Property {
    pub id: String,
    pub says: String,
    /// Refused when broken (unless accepted); otherwise only reported.
    pub required: bool,
    /// Principal entity types (empty: all).
    pub principals: Vec<String>,
    /// Action names (empty: all).
    pub actions: Vec<String>,
    pub check: Check,
}

impl Property {
    /// Whether the property is about requests of this principal type and action.
    pub fn covers(&self, principal: &str, action: &str) -> bool {
        (self.principals.is_empty() || self.principals.iter().any(|p| p == principal))
            && (self.actions.is_empty() || self.actions.iter().any(|a| a == action))
    }
}

/// Parses a properties file; `what` names it in errors. Every property is checked: a unique id,
/// known principal types and actions, exactly one check, and permits that validate against the
/// schema.
pub fn parse(text: &str, what: &str) -> Result<Vec<Property>> {
    let file: File = toml::from_str(text).map_err(|e| {
        Error::bad_input(format!(
            "{what} is not a properties file: {}",
            super::one_line(e.message())
        ))
    })?;
    let mut out = Vec::new();
    for raw in file.property {
        let id = raw.id.clone();
        let named = |m: String| Error::bad_input(format!("{what}: property {id:?}: {m}"));
        if id.is_empty()
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(named(
                "an id is letters, digits, '-' and '_' (e.g. grants-within-clearance)".into(),
            ));
        }
        if raw.says.chars().any(char::is_control) {
            return Err(named(
                "says is one line of text (it goes into one-line refusals and the log)".into(),
            ));
        }
        if let Some(p) = raw
            .principals
            .iter()
            .find(|p| !PRINCIPAL_TYPES.contains(&p.as_str()))
        {
            return Err(named(format!(
                "principal {p:?} is none of {}",
                PRINCIPAL_TYPES.join(", ")
            )));
        }
        for a in &raw.actions {
            Action::from_name(a).map_err(|e| named(e.message().to_owned()))?;
        }
        let check = match (raw.always_denies, raw.allows_only, raw.never_errors) {
            (true, None, false) => Check::AlwaysDenies,
            (false, Some(text), false) => {
                let set = validated(SCHEMA, &text, "allows_only", "the schema")
                    .map_err(|e| named(e.message().to_owned()))?;
                if set.policies().any(|p| p.effect() == cedar_policy::Effect::Forbid) {
                    return Err(named("allows_only holds permits only".into()));
                }
                Check::AllowsOnly(Box::new(set))
            }
            (false, None, true) => Check::NeverErrors,
            _ => {
                return Err(named(
                    "give exactly one of always_denies = true, allows_only = '''…''' or never_errors = true".into(),
                ))
            }
        };
        out.push(Property {
            id: raw.id,
            says: raw.says,
            required: raw.required,
            principals: raw.principals,
            actions: raw.actions,
            check,
        });
    }
    Ok(out)
}

/// The shipped properties, then the operator's (`extra`: its text and a name for errors); ids
/// must be unique across both.
pub fn load(extra: Option<(&str, &str)>) -> Result<Vec<Property>> {
    let mut all = parse(SHIPPED_PROPERTIES, "the shipped properties")?;
    if let Some((text, what)) = extra {
        all.extend(parse(text, what)?);
    }
    let mut seen = HashSet::new();
    if let Some(p) = all.iter().find(|p| !seen.insert(p.id.clone())) {
        return Err(Error::bad_input(format!(
            "property {:?} is defined twice (the shipped properties are always checked: give yours other ids)",
            p.id
        )));
    }
    Ok(all)
}

/// What the relay guarantees of the entities it builds from the catalog, as Cedar `forbid`s
/// added to a policy before it is analysed: a `Resource` or a `Grant` only ever has a
/// (classification, approval) pair that some catalog entry has (a resource no entry matches is
/// refused before the policy), and a `User`'s clearance is one a directory entry can hold.
pub fn catalog_assumptions(catalog: &Catalog) -> Result<PolicySet> {
    let mut pairs: Vec<(u8, bool)> = catalog
        .resource
        .iter()
        .map(|e| (e.classification, e.approval))
        .collect();
    pairs.sort_unstable();
    pairs.dedup();
    let allowed = if pairs.is_empty() {
        "false".to_owned()
    } else {
        pairs
            .iter()
            .map(|(c, a)| format!("(resource.classification == {c} && resource.approval == {a})"))
            .collect::<Vec<_>>()
            .join(" || ")
    };
    let mut text = ["Resource", "Grant"]
        .iter()
        .map(|t| {
            format!(
                "@id(\"catalog-{t}\")\nforbid (principal, action, resource is {t}) unless {{ {allowed} }};\n"
            )
        })
        .collect::<String>();
    // A user's clearance comes from their signed directory entry, which holds 0 to 9.
    text.push_str(&format!(
        "@id(\"directory-clearance\")\nforbid (principal is User, action, resource) unless {{ principal.clearance >= 0 && principal.clearance <= {MAX_CLEARANCE} }};\n"
    ));
    PolicySet::from_str(&text)
        .map_err(|e| Error::internal(format!("the catalog's assumptions do not parse: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_properties_parse() {
        let all = load(None).unwrap();
        assert_eq!(all.len(), 6);
        assert!(all.iter().all(|p| p.required));
    }

    #[test]
    fn a_bad_property_is_refused_naming_it() {
        for (text, needle) in [
            ("[[property]]\nid = \"x\"\nsays = \"\"\n", "exactly one"),
            (
                "[[property]]\nid = \"x\"\nsays = \"\"\nprincipals = [\"Robot\"]\nalways_denies = true\n",
                "Robot",
            ),
            (
                "[[property]]\nid = \"x\"\nsays = \"\"\nactions = [\"steal\"]\nalways_denies = true\n",
                "steal",
            ),
            (
                "[[property]]\nid = \"x\"\nsays = \"\"\nallows_only = \"permit(principal, action, resource) when { resource.nope };\"\n",
                "validate",
            ),
            (
                "[[property]]\nid = \"x\"\nsays = \"\"\nallows_only = \"forbid(principal, action, resource);\"\n",
                "permits only",
            ),
            (
                "[[property]]\nid = \"never-errors\"\nsays = \"\"\nnever_errors = true\n",
                "defined twice",
            ),
            ("[[property]]\nid = \"a b\"\nsays = \"\"\nnever_errors = true\n", "an id"),
            (
                "[[property]]\nid = \"x\"\nsays = '''two\nlines'''\nnever_errors = true\n",
                "one line",
            ),
        ] {
            let e = load(Some((text, "p.toml"))).unwrap_err();
            assert!(e.message().contains(needle), "{needle}: {}", e.message());
        }
    }
}
