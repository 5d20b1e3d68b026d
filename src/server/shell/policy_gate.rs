//! The gate a policy passes before the relay runs it, at start and on a reload: its required
//! properties proved (`prover`, which runs the cvc5 solver), or the operator's acceptance of a
//! broken one named in the config.

use crate::core::policy::properties::{self, Property};
use crate::core::policy::{one_line, CedarPolicy};
use crate::error::{Error, ErrorKind, Result};
use crate::prover::{run_blocking, Outcome, Prover, Verdict};
use crate::server::services::config::RelayConfig;
use crate::server::services::loading::{read_policy, LoadedPolicy};
use crate::server::services::relay::Relay;

/// The policy and catalog the config names, validated, and proved unless they are the shipped
/// ones (whose proofs are the test suite's, `tests/policy_prove.rs`, so they need no solver);
/// with a line for the log saying what was proved.
pub fn proved_policy(config: &RelayConfig) -> Result<(CedarPolicy, String)> {
    let LoadedPolicy {
        policy,
        shipped,
        extra_properties,
    } = read_policy(config)?;
    if shipped && extra_properties.is_none() {
        return Ok((
            policy,
            "the shipped policy (its properties are proved by the test suite)".into(),
        ));
    }
    let note = gate(config, &policy, extra_properties)?;
    Ok((policy, note))
}

/// Re-reads and proves the policy off the runtime's threads, then puts it in force (or logs
/// its refusal): what SIGHUP does.
pub async fn reload(relay: &Relay) -> Result<String> {
    let config = relay.config.clone();
    let loaded = tokio::task::spawn_blocking(move || proved_policy(&config))
        .await
        .map_err(|_| Error::internal("the policy check panicked"))?;
    relay.reload_policy(loaded).await
}

/// Where the counterexample of a refused policy is written, in the data directory.
pub const COUNTEREXAMPLE_FILE: &str = "policy-counterexample.json";

/// Proves `policy`'s properties (the shipped ones and `extra`: a file's text and its name).
/// Returns a line for the log, or refuses, in one line naming the property and pointing at its
/// counterexample, a policy that breaks a required property the config does not accept.
pub fn gate(
    config: &RelayConfig,
    policy: &CedarPolicy,
    extra: Option<(String, String)>,
) -> Result<String> {
    let props = properties::load(extra.as_ref().map(|(t, n)| (t.as_str(), n.as_str())))?;
    let accepted = |id: &str| {
        config
            .accept_broken_properties
            .iter()
            .any(|a| a == "*" || a == id)
    };
    let (set, catalog, checked) = (
        policy.policies().clone(),
        policy.catalog().clone(),
        props.clone(),
    );
    let outcomes = match run_blocking(move || {
        Box::pin(async move { Prover::new()?.prove(&set, &catalog, &checked).await })
    }) {
        Ok(o) => o,
        Err(e) if e.kind() == ErrorKind::Unavailable && accepted("*") => {
            tracing::warn!(error = %e.message(), "running a policy whose properties could not be proved (accept_broken_properties = [\"*\"])");
            return Ok(format!(
                "not proved ({}); accepted by accept_broken_properties",
                e.message()
            ));
        }
        Err(e) => {
            return Err(Error::new(
                e.kind(),
                format!(
                    "cannot prove the policy's required properties: {} (or accept_broken_properties = [\"*\"] to run it unproven)",
                    e.message()
                ),
            ))
        }
    };
    let mut broken_accepted = Vec::new();
    for Outcome { property, verdict } in &outcomes {
        let Verdict::Refuted { kind, example } = verdict else {
            continue;
        };
        if !property.required {
            tracing::warn!(property = %property.id, "the policy breaks an advisory property");
            continue;
        }
        if accepted(&property.id) {
            tracing::warn!(property = %property.id, "the policy breaks a required property; accepted by accept_broken_properties");
            broken_accepted.push(property.id.clone());
            continue;
        }
        let path = config.data.join(COUNTEREXAMPLE_FILE);
        let written = serde_json::to_vec_pretty(&serde_json::json!({
            "property": property.id,
            "says": property.says,
            "request_kind": kind,
            "counterexample": example.to_json(),
        }))
        .ok()
        .and_then(|b| std::fs::write(&path, b).ok())
        .map_or_else(
            || "`sealrelay policy prove` shows it".to_owned(),
            |()| format!("the counterexample is in {}", path.display()),
        );
        return Err(Error::new(
            ErrorKind::Refused,
            format!(
                "the policy breaks the required property {} ({}): {kind}: {}, decided by {}; {written} (accept_broken_properties = [\"{}\"] runs it anyway)",
                property.id,
                one_line(&property.says),
                example.summary(),
                one_line(&decided_by(&example.policies)),
                property.id
            ),
        ));
    }
    let proved = outcomes
        .iter()
        .filter(|o| matches!(o.verdict, Verdict::Proved { .. }))
        .count();
    Ok(note(&props, proved, &broken_accepted))
}

fn decided_by(ids: &[String]) -> String {
    if ids.is_empty() {
        "no policy".into()
    } else {
        format!("policy {}", ids.join(", "))
    }
}

fn note(props: &[Property], proved: usize, broken_accepted: &[String]) -> String {
    let mut s = format!("{proved} of {} properties proved", props.len());
    if !broken_accepted.is_empty() {
        s.push_str(&format!(
            "; broken and accepted by accept_broken_properties: {}",
            broken_accepted.join(", ")
        ));
    }
    s
}
