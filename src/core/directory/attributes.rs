//! What policy knows about a party, as its directory entry says: clearance and roles for
//! users, scopes for agents.

use super::{MAX_ATTRIBUTE_LEN, MAX_CLEARANCE, MAX_ROLES, MAX_SCOPES};
use crate::error::{Error, Result};
use crate::ids::PartyKind;

fn check_attribute(value: &str, what: &str) -> Result<()> {
    let ok = !value.is_empty()
        && value.len() <= MAX_ATTRIBUTE_LEN
        && value.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':' | b'/' | b'*')
        });
    if ok {
        Ok(())
    } else {
        Err(Error::bad_input(format!(
            "invalid {what} {value:?}: use letters, digits and . _ - : / * (at most {MAX_ATTRIBUTE_LEN})"
        )))
    }
}

/// What policy knows about a party: clearance and roles for users, scopes for agents.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Attributes {
    pub clearance: u8,
    pub roles: Vec<String>,
    pub scopes: Vec<String>,
}

impl Attributes {
    pub fn validate(&self, kind: PartyKind) -> Result<()> {
        if self.clearance > MAX_CLEARANCE {
            return Err(Error::bad_input(format!(
                "clearance {} is above the highest level {MAX_CLEARANCE}",
                self.clearance
            )));
        }
        if self.roles.len() > MAX_ROLES || self.scopes.len() > MAX_SCOPES {
            return Err(Error::bad_input(format!(
                "at most {MAX_ROLES} roles and {MAX_SCOPES} scopes"
            )));
        }
        for r in &self.roles {
            check_attribute(r, "role")?;
        }
        for s in &self.scopes {
            check_attribute(s, "scope")?;
            crate::core::resource::validate_pattern(s).map_err(|e| e.context("scope"))?;
        }
        match kind {
            PartyKind::Agent if !self.roles.is_empty() || self.clearance != 0 => Err(
                Error::bad_input("agents carry scopes, not roles or a clearance"),
            ),
            PartyKind::Source if !self.roles.is_empty() || self.clearance != 0 => {
                Err(Error::bad_input(
                    "sources carry the patterns they serve (--serves), not roles or a clearance",
                ))
            }
            PartyKind::User if !self.scopes.is_empty() => Err(Error::bad_input(
                "users carry a clearance and roles, not scopes",
            )),
            _ => Ok(()),
        }
    }
}
