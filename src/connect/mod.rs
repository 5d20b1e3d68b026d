//! Connectors: where an agent's data comes from, read and sealed at the source so that whoever
//! drives the agent (an LLM through MCP) never holds the plaintext.
//!
//! A TOML file (docs/mcp.md) maps resource patterns to sources: an HTTP(S) GET, a file under an
//! allowed root, or a command run without a shell. The first connector whose pattern covers a
//! grant's resource serves it; a resource that none covers is refused before anything is read.
//! A source is a plain [`std::io::Read`] with a byte limit, pulled by the sealer a bounded
//! buffer at a time: no plaintext on disk, in a log, or in any error (errors say what failed —
//! a status code, a limit, a path rule — never what was read).
//!
//! [`command`] is the one runner of processes for data (an argv as given, never a shell of its
//! own; its own process group, an optional watchdog, the group killed at the end): command
//! connectors use it, and so does `agent run`.

pub mod command;
mod source;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use zeroize::Zeroizing;

use crate::core::resource::{matches, validate_pattern, validate_resource};
use crate::error::{Error, Result};
use crate::ids::truncate_for_message;

pub use source::Source;

/// The largest connector file read.
const MAX_FILE: usize = 1 << 20;
/// The largest secret file a header value is read from.
const MAX_SECRET: usize = 64 * 1024;
/// Defaults when a connector does not say.
pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;
pub const DEFAULT_TIMEOUT_SECS: u64 = 30;
pub const DEFAULT_MAX_REDIRECTS: u32 = 3;

/// The connector file as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileShape {
    #[serde(default)]
    connector: Vec<RawConnector>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConnector {
    resources: String,
    http: Option<String>,
    file_root: Option<PathBuf>,
    command: Option<Vec<String>>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    /// PEM file of CA certificates trusted for this HTTPS source instead of the built-in roots.
    ca_file: Option<PathBuf>,
    max_bytes: Option<u64>,
    timeout_secs: Option<u64>,
    max_redirects: Option<u32>,
}

/// Where a connector reads from.
pub enum Kind {
    /// A URL template with `{rest}` / `{resource}`, and headers resolved at load time.
    Http {
        template: String,
        headers: Vec<(String, Zeroizing<String>)>,
        ca_pem: Option<Vec<u8>>,
        max_redirects: u32,
    },
    /// A directory; `{rest}` is opened beneath it (the kernel refuses any escape).
    File { root: PathBuf },
    /// A program and its argument templates, run without a shell.
    Command { argv: Vec<String> },
}

/// Header values are secrets: `Debug` shows the names only.
impl std::fmt::Debug for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Kind::Http {
                template,
                headers,
                ca_pem,
                max_redirects,
            } => f
                .debug_struct("Http")
                .field("template", template)
                .field(
                    "headers",
                    &headers.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
                )
                .field("ca_pem", &ca_pem.is_some())
                .field("max_redirects", max_redirects)
                .finish(),
            Kind::File { root } => f.debug_struct("File").field("root", root).finish(),
            Kind::Command { argv } => f.debug_struct("Command").field("argv", argv).finish(),
        }
    }
}

/// One `[[connector]]`.
#[derive(Debug)]
pub struct Connector {
    /// The catalog pattern it serves (`tickets/*`, `*`, or one name).
    pub resources: String,
    pub kind: Kind,
    pub max_bytes: u64,
    pub timeout_secs: u64,
}

/// The connectors of one file, in order.
#[derive(Debug)]
pub struct Connectors {
    pub list: Vec<Connector>,
}

impl Connectors {
    /// No connectors: every grant goes to a source (an agent host that holds no credential).
    pub fn none() -> Connectors {
        Connectors { list: Vec::new() }
    }

    /// Reads and checks a connector file; header values are resolved now, so a missing
    /// variable or secret file is found at start, not on the first retrieval.
    pub fn load(path: &Path) -> Result<Connectors> {
        let text = crate::local::fs::read_capped(path, MAX_FILE)?;
        let text = String::from_utf8(text)
            .map_err(|_| Error::bad_input(format!("{} is not UTF-8 text", path.display())))?;
        Self::parse(&text, path.parent().unwrap_or(Path::new(".")))
    }

    /// Parses connector TOML; relative paths are taken from `base`.
    pub fn parse(text: &str, base: &Path) -> Result<Connectors> {
        let shape: FileShape = toml::from_str(text).map_err(|e| {
            Error::bad_input(format!(
                "the connector file is not valid: {}",
                e.message().lines().next().unwrap_or("malformed TOML")
            ))
        })?;
        if shape.connector.is_empty() {
            return Err(Error::bad_input(
                "the connector file has no [[connector]]: add one per source (docs/mcp.md)",
            ));
        }
        let list = shape
            .connector
            .into_iter()
            .enumerate()
            .map(|(i, raw)| {
                connector(raw, base).map_err(|e| {
                    Error::new(
                        e.kind(),
                        format!("connector {} of the file: {}", i + 1, e.message()),
                    )
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Connectors { list })
    }

    /// The connector that serves `resource`: the first whose pattern covers it.
    pub fn for_resource(&self, resource: &str) -> Result<&Connector> {
        validate_resource(resource)?;
        self.list
            .iter()
            .find(|c| matches(&c.resources, resource))
            .ok_or_else(|| {
                Error::not_found(format!(
                    "no connector serves {:?}: add a [[connector]] whose resources pattern covers it",
                    truncate_for_message(resource)
                ))
            })
    }

    /// Scopes and connectors must agree: a connector outside every scope could never be used
    /// (an error), and a scope that no connector serves any part of means grants that will be
    /// refused (returned, for a warning).
    pub fn check_scopes(&self, scopes: &[String]) -> Result<Vec<String>> {
        for c in &self.list {
            if !scopes.iter().any(|s| pattern_within(&c.resources, s)) {
                return Err(Error::bad_input(format!(
                    "the connector for {:?} is outside the agent's scopes ({}): remove it or widen the agent's scopes",
                    c.resources,
                    scopes.join(", ")
                )));
            }
        }
        Ok(scopes
            .iter()
            .filter(|s| {
                !self
                    .list
                    .iter()
                    .any(|c| pattern_within(s, &c.resources) || pattern_within(&c.resources, s))
            })
            .cloned()
            .collect())
    }
}

/// Whether every name `inner` covers is covered by `outer`.
pub fn pattern_within(inner: &str, outer: &str) -> bool {
    if outer == "*" {
        return true;
    }
    if inner == "*" {
        return false;
    }
    match (inner.strip_suffix("/*"), outer.strip_suffix("/*")) {
        (Some(i), Some(o)) => i == o || matches(outer, i),
        (None, _) => matches(outer, inner),
        (Some(_), None) => false,
    }
}

fn connector(raw: RawConnector, base: &Path) -> Result<Connector> {
    validate_pattern(&raw.resources)?;
    let max_bytes = raw.max_bytes.unwrap_or(DEFAULT_MAX_BYTES);
    let timeout_secs = raw.timeout_secs.unwrap_or(DEFAULT_TIMEOUT_SECS);
    if max_bytes == 0 || timeout_secs == 0 || timeout_secs > 24 * 3600 {
        return Err(Error::bad_input(
            "max_bytes must be above 0 and timeout_secs 1 to 86400",
        ));
    }
    let sources = [
        raw.http.is_some(),
        raw.file_root.is_some(),
        raw.command.is_some(),
    ]
    .iter()
    .filter(|x| **x)
    .count();
    if sources != 1 {
        return Err(Error::bad_input(
            "give exactly one of http, file_root or command",
        ));
    }
    let http_only = !raw.headers.is_empty() || raw.ca_file.is_some() || raw.max_redirects.is_some();
    let kind = if let Some(template) = raw.http {
        check_url_template(&template)?;
        let headers = raw
            .headers
            .into_iter()
            .map(|(name, value)| Ok((check_header_name(name)?, header_value(&value, base)?)))
            .collect::<Result<Vec<_>>>()?;
        let ca_pem = raw
            .ca_file
            .map(|p| crate::local::fs::read_capped(&base.join(p), MAX_FILE))
            .transpose()?;
        // A redirect could send the secret headers to another host (ureq strips only
        // Authorization and Cookie): a connector with headers follows none.
        let max_redirects = if headers.is_empty() {
            raw.max_redirects.unwrap_or(DEFAULT_MAX_REDIRECTS).min(10)
        } else if raw.max_redirects.is_some_and(|n| n > 0) {
            return Err(Error::bad_input(
                    "max_redirects cannot be set with headers: a redirect could carry the secret headers to another host (point http at the final URL)",
                ));
        } else {
            0
        };
        Kind::Http {
            template,
            headers,
            ca_pem,
            max_redirects,
        }
    } else if let Some(root) = raw.file_root {
        if http_only {
            return Err(Error::bad_input(
                "headers, ca_file and max_redirects apply to http connectors only",
            ));
        }
        let root = base.join(root);
        let root = root.canonicalize().map_err(|e| {
            Error::not_found(format!("file_root {} cannot be used: {e}", root.display()))
        })?;
        if !root.is_dir() {
            return Err(Error::bad_input(format!(
                "file_root {} is not a directory",
                root.display()
            )));
        }
        Kind::File { root }
    } else {
        if http_only {
            return Err(Error::bad_input(
                "headers, ca_file and max_redirects apply to http connectors only",
            ));
        }
        let argv = raw.command.unwrap_or_default();
        match argv.first() {
            None => return Err(Error::bad_input("command is empty: give the program first")),
            Some(p) if p.contains('{') => {
                return Err(Error::bad_input(
                    "the program of a command is fixed: {rest} and {resource} go in its arguments",
                ))
            }
            Some(p) if !Path::new(p).is_absolute() => {
                return Err(Error::bad_input(format!(
                    "command program {p:?} must be an absolute path (no PATH lookup)"
                )))
            }
            Some(_) => {}
        }
        Kind::Command { argv }
    };
    Ok(Connector {
        resources: raw.resources,
        kind,
        max_bytes,
        timeout_secs,
    })
}

/// An `http` template: http or https, and placeholders only in the path or query, never in the
/// scheme or host (a resource name can then never choose where the request goes).
fn check_url_template(t: &str) -> Result<()> {
    let rest = t
        .strip_prefix("https://")
        .or_else(|| t.strip_prefix("http://"))
        .ok_or_else(|| Error::bad_input("http must be an http:// or https:// URL template"))?;
    let path_at = rest.find('/').unwrap_or(rest.len());
    if rest[..path_at].is_empty() || rest[..path_at].contains(['{', '}', '@']) {
        return Err(Error::bad_input(
            "the http template's host is fixed: put {rest} or {resource} in its path or query",
        ));
    }
    let unknown = t
        .replace("{rest}", "")
        .replace("{resource}", "")
        .contains(['{', '}']);
    if unknown {
        return Err(Error::bad_input(
            "the http template knows only {rest} and {resource}",
        ));
    }
    Ok(())
}

fn check_header_name(name: String) -> Result<String> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if ok {
        Ok(name)
    } else {
        Err(Error::bad_input(format!(
            "{:?} is not a valid header name",
            truncate_for_message(&name)
        )))
    }
}

/// A header value from `env:NAME` or `file:PATH`; an inline value is refused so that no secret
/// sits in the connector file.
fn header_value(spec: &str, base: &Path) -> Result<Zeroizing<String>> {
    let value = if let Some(name) = spec.strip_prefix("env:") {
        Zeroizing::new(std::env::var(name).map_err(|_| {
            Error::not_found(format!(
                "header variable {name} is not set: export it before starting"
            ))
        })?)
    } else if let Some(path) = spec.strip_prefix("file:") {
        let path = base.join(path);
        let bytes = Zeroizing::new(crate::local::fs::read_capped(&path, MAX_SECRET)?);
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| Error::bad_input(format!("{} is not UTF-8 text", path.display())))?;
        Zeroizing::new(text.trim_end_matches(['\n', '\r']).to_owned())
    } else {
        return Err(Error::bad_input(
            "header values are env:NAME or file:PATH, never inline (keep secrets out of the connector file)",
        ));
    };
    if value.bytes().any(|b| b < 0x20 && b != b'\t' || b == 0x7f) {
        return Err(Error::bad_input(
            "a header value holds a control character (a line break?)",
        ));
    }
    Ok(value)
}

#[cfg(test)]
mod source_tests;
#[cfg(test)]
mod tests;
