//! `sealrelay approve | approvals`, `agent quarantine | release`, `policy validate | check`
//! (`policy prove | diff` in `policy_prove.rs`).

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use sealrelay::client::AdminClient;
use sealrelay::clock;
use sealrelay::core::directory::Attributes;
use sealrelay::core::policy::{
    Action, Authorizer, CedarPolicy, Context, Principal, Target, DEFAULT_CATALOG, DEFAULT_POLICY,
};
use sealrelay::error::{Error, Result};
use sealrelay::ids::{validate_name, GrantId, PartyKind, SpiffeId};
use sealrelay::local::identity_file;

use super::policy_prove::read_text;
use super::relay::runtime;
use super::DirArg;

/// `agent quarantine | release` (admin, against a running relay).
#[derive(Args)]
pub struct QuarantineArgs {
    /// The agent's name.
    #[arg(value_name = "NAME")]
    name: String,
    #[command(flatten)]
    dir: DirArg,
    /// Why (recorded in the event and the alert).
    #[arg(long, value_name = "TEXT", default_value = "stopped by an admin")]
    reason: String,
    /// The relay (HOST:PORT).
    #[arg(long, value_name = "HOST:PORT", env = "SEALRELAY_RELAY")]
    relay: String,
}

#[derive(Args)]
pub struct ReleaseArgs {
    /// The agent's name.
    #[arg(value_name = "NAME")]
    name: String,
    #[command(flatten)]
    dir: DirArg,
    /// The relay (HOST:PORT).
    #[arg(long, value_name = "HOST:PORT", env = "SEALRELAY_RELAY")]
    relay: String,
}

fn admin_call<F>(dir: &Path, relay: &str, f: F) -> Result<()>
where
    F: for<'a> FnOnce(
        &'a AdminClient,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + 'a>>,
{
    let admin = identity_file::load(&dir.join("admin.id"), Some(PartyKind::Admin))?;
    runtime()?.block_on(async {
        let client = AdminClient::connect(&admin, relay).await?;
        let r = f(&client).await;
        client.conn.close().await;
        r
    })
}

pub fn quarantine(args: QuarantineArgs) -> Result<()> {
    validate_name(&args.name)?;
    let (name, reason) = (args.name.clone(), args.reason.clone());
    admin_call(&args.dir.dir, &args.relay, |c| {
        Box::pin(async move { c.quarantine(&name, &reason).await })
    })?;
    println!("quarantined agent {}: its requests are refused and its connections closed until `sealrelay agent release {}`", args.name, args.name);
    Ok(())
}

pub fn release(args: ReleaseArgs) -> Result<()> {
    validate_name(&args.name)?;
    let name = args.name.clone();
    admin_call(&args.dir.dir, &args.relay, |c| {
        Box::pin(async move { c.release(&name).await })
    })?;
    println!("released agent {}", args.name);
    Ok(())
}

#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Validate a Cedar policy (and a resource catalog) against the sealrelay schema.
    Validate {
        /// The policy file (.cedar).
        #[arg(value_name = "FILE")]
        policy: PathBuf,
        /// A resource catalog (TOML) to check too.
        #[arg(long, value_name = "FILE")]
        catalog: Option<PathBuf>,
    },
    /// Evaluate one request: prints allow, or deny with its reasons (exit 6).
    Check(CheckArgs),
    /// Prove the policy's properties (docs/policy.md) with Cedar's symbolic compiler and the
    /// cvc5 solver, or refute each with a counterexample; exit 6 if a required one is broken.
    Prove(ProveArgs),
    /// What NEW permits that OLD does not, and what it no longer permits: an example request
    /// of each kind, and the policies that decide it.
    Diff(DiffArgs),
}

#[derive(Args)]
pub struct ProveArgs {
    /// The policy (default: the one the --config or SEALRELAY_POLICY_FILE names, else the
    /// shipped policy).
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// The resource catalog (default: the one the --config names, else the shipped catalog).
    #[arg(long, value_name = "FILE")]
    catalog: Option<PathBuf>,
    /// More properties, beside the shipped ones (default: the --config's properties_file).
    #[arg(long, value_name = "FILE")]
    properties: Option<PathBuf>,
    /// A relay config: prove what `serve --config FILE` would run (SEALRELAY_* variables apply
    /// with or without it, as for `serve`).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// One JSON document: each property, its verdict, and the counterexample as a request
    /// and entities in Cedar's JSON formats.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct DiffArgs {
    /// The policy in force.
    #[arg(value_name = "OLD")]
    old: PathBuf,
    /// The policy proposed.
    #[arg(value_name = "NEW")]
    new: PathBuf,
    /// The resource catalog both run with (default: the shipped catalog).
    #[arg(long, value_name = "FILE")]
    catalog: Option<PathBuf>,
    /// One JSON document instead of lines.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct CheckArgs {
    /// Who asks: user:NAME, agent:NAME or admin:NAME.
    #[arg(long, value_name = "KIND:NAME")]
    principal: String,
    /// The action (grant, approve, submit, fetch, inbox, list_grants, receipt, audit, …).
    #[arg(long, value_name = "ACTION")]
    action: String,
    /// For grant: the resource asked for.
    #[arg(long, value_name = "R")]
    resource: Option<String>,
    /// The principal's clearance (users).
    #[arg(long, value_name = "N", default_value_t = 0)]
    clearance: u8,
    /// The principal's roles (users; repeatable).
    #[arg(long = "role", value_name = "R")]
    roles: Vec<String>,
    /// The principal's scopes (agents), or the target agent's scopes for grant (repeatable).
    #[arg(long = "scope", value_name = "S")]
    scopes: Vec<String>,
    /// The principal is a quarantined agent.
    #[arg(long)]
    quarantined: bool,
    /// Policy file (default: the shipped policy).
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// Resource catalog (default: the shipped catalog).
    #[arg(long, value_name = "FILE")]
    catalog: Option<PathBuf>,
}

fn load(policy: Option<&Path>, catalog: Option<&Path>) -> Result<CedarPolicy> {
    let p = match policy {
        Some(p) => read_text(p)?,
        None => DEFAULT_POLICY.to_owned(),
    };
    let c = match catalog {
        Some(c) => read_text(c)?,
        None => DEFAULT_CATALOG.to_owned(),
    };
    CedarPolicy::new(&p, &c)
}

pub fn run(cmd: PolicyCommand) -> Result<()> {
    match cmd {
        PolicyCommand::Validate { policy, catalog } => {
            let p =
                load(Some(&policy), catalog.as_deref()).map_err(|e| e.context(policy.display()))?;
            println!(
                "ok: {} validates against the sealrelay schema (policy hash {})",
                policy.display(),
                p.policy_hash()
            );
            Ok(())
        }
        PolicyCommand::Check(a) => check(a),
        PolicyCommand::Prove(a) => super::policy_prove::prove(a.into()),
        PolicyCommand::Diff(a) => {
            super::policy_prove::diff(&a.old, &a.new, a.catalog.as_deref(), a.json)
        }
    }
}

impl From<ProveArgs> for super::policy_prove::ProveOptions {
    fn from(a: ProveArgs) -> Self {
        super::policy_prove::ProveOptions {
            policy: a.policy,
            catalog: a.catalog,
            properties: a.properties,
            config: a.config,
            json: a.json,
        }
    }
}

fn check(a: CheckArgs) -> Result<()> {
    let policy = load(a.policy.as_deref(), a.catalog.as_deref())?;
    let (kind, name) = a
        .principal
        .split_once(':')
        .ok_or_else(|| Error::bad_input("--principal is KIND:NAME, e.g. user:alice"))?;
    let kind: PartyKind = kind.parse()?;
    let td = "sealrelay.local";
    let id = SpiffeId::new(td, kind, name)?;
    let action = Action::from_name(&a.action)?;
    let attrs = match kind {
        PartyKind::User => Some(Attributes {
            clearance: a.clearance,
            roles: a.roles.clone(),
            scopes: vec![],
        }),
        PartyKind::Agent => Some(Attributes {
            clearance: 0,
            roles: vec![],
            scopes: a.scopes.clone(),
        }),
        _ => None,
    };
    let principal = Principal {
        id: id.clone(),
        attributes: attrs,
        quarantined: a.quarantined,
    };
    let agent = SpiffeId::new(td, PartyKind::Agent, "agent")?;
    let target = match (action, &a.resource) {
        (Action::Grant, Some(r)) => Target::Resource { name: r.clone() },
        (Action::Grant, None) => return Err(Error::bad_input("grant needs --resource")),
        (Action::Submit | Action::Approve, r) => Target::Grant {
            id: GrantId([0; 16]),
            requester: SpiffeId::new(td, PartyKind::User, "requester")?,
            agent: if kind == PartyKind::Agent {
                id.clone()
            } else {
                agent.clone()
            },
            resource: r.clone().unwrap_or_else(|| "tickets/1".into()),
            approved: false,
        },
        (Action::Fetch | Action::Receipt, _) => Target::Envelope {
            id: sealrelay::ids::EnvelopeId([0; 16]),
            owner: id.clone(),
        },
        _ => Target::Relay,
    };
    let ctx = Context {
        target,
        agent: Some(agent),
        agent_attributes: (action == Action::Grant).then(|| Attributes {
            clearance: 0,
            roles: vec![],
            scopes: a.scopes.clone(),
        }),
        now: clock::now(),
        ..Context::default()
    };
    match policy.authorize(&principal, action, &ctx) {
        sealrelay::core::policy::Decision::Allow => {
            println!("allow");
            Ok(())
        }
        sealrelay::core::policy::Decision::Deny { reasons } => Err(Error::new(
            sealrelay::ErrorKind::Refused,
            format!("deny: {}", reasons.join("; ")),
        )),
    }
}
