//! `policy prove` and `policy diff`: what `core::policy::prove` finds, for a person or a pipeline.

use std::path::{Path, PathBuf};

use sealrelay::core::policy::properties;
use sealrelay::core::policy::{Authorizer, CedarPolicy, DEFAULT_CATALOG, DEFAULT_POLICY};
use sealrelay::error::{Error, ErrorKind, Result};
use sealrelay::prover::{run_blocking, Change, Outcome, Prover, Verdict};
use sealrelay::server::RelayConfig;

use sealrelay::local::fs::read_capped;

/// What to prove (`policy prove`).
pub struct ProveOptions {
    pub policy: Option<PathBuf>,
    pub catalog: Option<PathBuf>,
    pub properties: Option<PathBuf>,
    pub config: Option<PathBuf>,
    pub json: bool,
}

pub(super) fn read_text(path: &Path) -> Result<String> {
    String::from_utf8(read_capped(path, 1 << 20)?)
        .map_err(|_| Error::bad_input(format!("{} is not UTF-8 text", path.display())))
}

/// The text at `path`, else `default`.
fn text_or(path: Option<&Path>, default: &str) -> Result<String> {
    match path {
        Some(p) => read_text(p).map_err(|e| e.context(p.display())),
        None => Ok(default.to_owned()),
    }
}

pub fn prove(o: ProveOptions) -> Result<()> {
    // What `serve` would run, built as `serve` builds it (the file if any, then SEALRELAY_*
    // variables, which apply without a file too); the flags override it.
    let config = RelayConfig::from_file_and_env(o.config.as_deref())?;
    let policy_path = o.policy.or_else(|| config.policy_file.clone());
    let catalog_path = o.catalog.or_else(|| config.catalog_file.clone());
    let props_path = o.properties.or_else(|| config.properties_file.clone());
    let policy = CedarPolicy::new(
        &text_or(policy_path.as_deref(), DEFAULT_POLICY)?,
        &text_or(catalog_path.as_deref(), DEFAULT_CATALOG)?,
    )?;
    let extra = match &props_path {
        Some(p) => Some((read_text(p)?, p.display().to_string())),
        None => None,
    };
    let props = properties::load(extra.as_ref().map(|(t, n)| (t.as_str(), n.as_str())))?;
    let (set, catalog, checked) = (
        policy.policies().clone(),
        policy.catalog().clone(),
        props.clone(),
    );
    let outcomes = run_blocking(move || {
        Box::pin(async move { Prover::new()?.prove(&set, &catalog, &checked).await })
    })?;
    let broken: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.property.required && matches!(o.verdict, Verdict::Refuted { .. }))
        .collect();
    if o.json {
        let doc = serde_json::json!({
            "policy_hash": policy.policy_hash(),
            "properties": outcomes.iter().map(outcome_json).collect::<Vec<_>>(),
        });
        println!("{doc}");
    } else {
        for outcome in &outcomes {
            print_outcome(outcome);
        }
        let proved = outcomes
            .iter()
            .filter(|o| matches!(o.verdict, Verdict::Proved { .. }))
            .count();
        println!(
            "{proved} of {} properties proved (policy {})",
            outcomes.len(),
            policy.policy_hash()
        );
    }
    match broken.as_slice() {
        [] => Ok(()),
        b => Err(Error::new(
            ErrorKind::Refused,
            format!(
                "the policy breaks {} required propert{}: {}",
                b.len(),
                if b.len() == 1 { "y" } else { "ies" },
                b.iter()
                    .map(|o| o.property.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

fn outcome_json(o: &Outcome) -> serde_json::Value {
    let p = &o.property;
    match &o.verdict {
        Verdict::Proved { kinds } => serde_json::json!({
            "id": p.id, "says": p.says, "required": p.required,
            "verdict": "proved", "request_kinds": kinds,
        }),
        Verdict::Refuted { kind, example } => serde_json::json!({
            "id": p.id, "says": p.says, "required": p.required,
            "verdict": "refuted", "request_kind": kind,
            "counterexample": example.to_json(),
        }),
    }
}

fn print_outcome(o: &Outcome) {
    let p = &o.property;
    let advisory = if p.required { "" } else { " (advisory)" };
    match &o.verdict {
        Verdict::Proved { kinds: 0 } => println!(
            "proved   {}{advisory}: {} (the schema admits no such request, and the relay refuses one outside it)",
            p.id, p.says
        ),
        Verdict::Proved { kinds } => println!(
            "proved   {}{advisory}: {} ({kinds} kind{} of request)",
            p.id,
            p.says,
            if *kinds == 1 { "" } else { "s" }
        ),
        Verdict::Refuted { kind, example } => {
            println!("REFUTED  {}{advisory}: {}", p.id, p.says);
            println!("         {kind}: {}", example.summary());
            println!("         decided by: {}", decided(&example.policies));
        }
    }
}

fn decided(ids: &[String]) -> String {
    if ids.is_empty() {
        "no policy".into()
    } else {
        ids.join(", ")
    }
}

pub fn diff(old: &Path, new: &Path, catalog: Option<&Path>, json: bool) -> Result<()> {
    let catalog_text = text_or(catalog, DEFAULT_CATALOG)?;
    let load = |p: &Path| {
        CedarPolicy::new(&read_text(p)?, &catalog_text).map_err(|e| e.context(p.display()))
    };
    let (old_p, new_p) = (load(old)?, load(new)?);
    let (o, n, c) = (
        old_p.policies().clone(),
        new_p.policies().clone(),
        new_p.catalog().clone(),
    );
    let changes =
        run_blocking(move || Box::pin(async move { Prover::new()?.diff(&o, &n, &c).await }))?;
    if json {
        let doc: Vec<serde_json::Value> = changes
            .iter()
            .map(|c: &Change| {
                serde_json::json!({
                    "change": if c.permits { "newly permits" } else { "no longer permits" },
                    "request_kind": c.kind,
                    "counterexample": c.example.to_json(),
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(doc));
        return Ok(());
    }
    if changes.is_empty() {
        println!(
            "no change: {} and {} permit the same requests",
            old.display(),
            new.display()
        );
    }
    for c in &changes {
        let (what, by) = if c.permits {
            ("newly permits    ", "permitted by")
        } else {
            ("no longer permits", "permitted by the old")
        };
        println!("{what} {}: {}", c.kind, c.example.summary());
        println!("                  {by}: {}", decided(&c.example.policies));
    }
    Ok(())
}
