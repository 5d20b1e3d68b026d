//! Resource names and patterns: one grammar (docs/formats.md), checked wherever a name enters —
//! a grant's decoding, the catalog and scope matcher, and the agent before a command or
//! connector sees the name — so that `public/../payroll/x` can never be classified by its
//! prefix and then read as something else.
//!
//! A resource name is 1 to 16 segments joined by `/`, 256 bytes at most. A segment is 1 to 64
//! of `A-Z a-z 0-9 - _ .`, and is neither `.` nor `..`. So there is no empty segment, no leading
//! or trailing `/`, no percent-encoding, no backslash, no control, invisible or non-ASCII
//! character. A pattern is a resource name, or a resource name followed by `/*` (everything
//! below it), or `*` alone (everything).

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::ids::truncate_for_message;

pub const MAX_RESOURCE_LEN: usize = 256;
pub const MAX_SEGMENTS: usize = 16;
pub const MAX_SEGMENT_LEN: usize = 64;
/// Highest clearance level: a party's clearance (a directory entry's attribute) and a
/// resource's classification are on one scale, 0 to this.
pub const MAX_CLEARANCE: u8 = 9;

fn segment_ok(seg: &str) -> bool {
    !seg.is_empty()
        && seg.len() <= MAX_SEGMENT_LEN
        && seg != "."
        && seg != ".."
        && seg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn names_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_RESOURCE_LEN
        && name.split('/').count() <= MAX_SEGMENTS
        && name.split('/').all(segment_ok)
}

/// Checks a resource name against the grammar.
pub fn validate_resource(name: &str) -> Result<()> {
    if names_ok(name) {
        Ok(())
    } else {
        Err(Error::bad_input(format!(
            "invalid resource name {:?}: use 1-{MAX_SEGMENTS} '/'-separated segments of letters, digits, '-', '_' or '.' (not '.' or '..'), {MAX_RESOURCE_LEN} bytes at most",
            truncate_for_message(name)
        )))
    }
}

/// Checks a pattern (a catalog line or an agent's scope): a resource name, `name/*`, or `*`.
pub fn validate_pattern(pattern: &str) -> Result<()> {
    let ok = pattern == "*"
        || match pattern.strip_suffix("/*") {
            Some(prefix) => names_ok(prefix),
            None => names_ok(pattern),
        };
    if ok {
        Ok(())
    } else {
        Err(Error::bad_input(format!(
            "invalid resource pattern {:?}: use a resource name, NAME/* or *",
            truncate_for_message(pattern)
        )))
    }
}

/// Whether `resource` is covered by `pattern`, segment by segment. Anything that does not
/// follow the grammar matches nothing (fail closed).
pub fn matches(pattern: &str, resource: &str) -> bool {
    if validate_pattern(pattern).is_err() || validate_resource(resource).is_err() {
        return false;
    }
    if pattern == "*" {
        return true;
    }
    match pattern.strip_suffix("/*") {
        Some(prefix) => resource
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/')),
        None => pattern == resource,
    }
}

/// One catalog line.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CatalogEntry {
    pub pattern: String,
    pub classification: u8,
    #[serde(default)]
    pub approval: bool,
}

/// Resource patterns → classification and approval.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    #[serde(default)]
    pub resource: Vec<CatalogEntry>,
}

impl Catalog {
    pub fn parse(text: &str) -> Result<Self> {
        let c: Catalog = toml::from_str(text)
            .map_err(|e| Error::bad_input(format!("resource catalog: {}", e.message())))?;
        if let Some(bad) = c.resource.iter().find(|e| e.classification > MAX_CLEARANCE) {
            return Err(Error::bad_input(format!(
                "resource catalog: {} has a classification above 9",
                bad.pattern
            )));
        }
        for e in &c.resource {
            validate_pattern(&e.pattern).map_err(|err| err.context("resource catalog"))?;
        }
        Ok(c)
    }
    /// The first entry whose pattern matches.
    pub fn lookup(&self, resource: &str) -> Option<&CatalogEntry> {
        self.resource.iter().find(|e| matches(&e.pattern, resource))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_one_grammar() {
        for ok in [
            "tickets/4711",
            "a",
            "payroll/2026.csv",
            "A-b_c/d.e/f",
            "x/.hidden",
        ] {
            assert!(validate_resource(ok).is_ok(), "{ok} refused");
        }
        for bad in [
            "",
            "public/../payroll/2026.csv",
            "public/./x",
            "..",
            "/tickets/1",
            "tickets/1/",
            "tickets//1",
            "tickets/%2e%2e/x",
            "tickets\\1",
            "tickets/1\u{200b}",
            "tickets/\u{0}",
            "tickets/é",
            "tickets/1 2",
            "tickets/*",
        ] {
            assert!(validate_resource(bad).is_err(), "{bad:?} accepted");
        }
        assert!(validate_resource("a/".repeat(16).trim_end_matches('/')).is_ok());
        assert!(validate_resource("a/".repeat(17).trim_end_matches('/')).is_err());
        assert!(validate_resource(&"a".repeat(65)).is_err());
    }

    #[test]
    fn patterns_match_by_segment_and_fail_closed() {
        assert!(matches("tickets/*", "tickets/1"));
        assert!(matches("tickets/*", "tickets/a/b"));
        assert!(!matches("tickets/*", "tickets"));
        assert!(!matches("tickets/*", "ticketsx/1"));
        assert!(!matches("public/*", "public/../payroll/2026.csv"));
        assert!(matches("tickets/1", "tickets/1"));
        assert!(!matches("tickets/1", "tickets/10"));
        assert!(matches("*", "anything/at/all"));
        assert!(
            !matches("tick*", "tickets/1"),
            "a partial wildcard is not a pattern"
        );
        assert!(validate_pattern("tick*").is_err());
        assert!(validate_pattern("a/*/b").is_err());
        assert!(validate_pattern("../*").is_err());
    }
}
