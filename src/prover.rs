//! Proofs about a relay policy (the solver is a process, so this is not in the core): each property of `properties.rs` proved for every kind of request
//! the schema admits (the relay refuses any other before the policy), or refuted with a
//! counterexample, by Cedar's symbolic compiler (`cedar-policy-symcc`) and the cvc5 solver; and
//! the difference between two policies, as what one newly permits.
//!
//! The policy is analysed together with what the relay guarantees of the entities it builds
//! (`properties::catalog_assumptions`), so a counterexample is a request the relay could really
//! put to it. The solver runs as a child process (`$CVC5`, else `cvc5` on the `PATH`).

use std::collections::BTreeSet;

use cedar_policy::{Authorizer, Entities, PolicyId, PolicySet, Request, RequestEnv, Schema};
use cedar_policy_symcc::solver::LocalSolver;
use cedar_policy_symcc::{CedarSymCompiler, CompiledPolicy, CompiledPolicySet, Env};

use crate::core::policy::properties::{catalog_assumptions, Check, Property};
use crate::core::policy::{one_line, schema, Catalog};
use crate::error::{Error, ErrorKind, Result};

/// A concrete request and entities, found by the solver.
pub struct Counterexample {
    pub request: Request,
    pub entities: Entities,
    /// The ids (`@id`, else Cedar's) of the policies that decide it.
    pub policies: Vec<String>,
}

/// A property's result.
pub enum Verdict {
    /// It holds on every kind of request it is about (`kinds` of them; 0: the schema admits none,
    /// so the relay refuses every such request before the policy).
    Proved { kinds: usize },
    /// It does not: a kind of request (`User grant Resource`) and an example.
    Refuted {
        kind: String,
        example: Box<Counterexample>,
    },
}

pub struct Outcome {
    pub property: Property,
    pub verdict: Verdict,
}

/// What a new policy changes.
pub struct Change {
    /// Newly permits (`true`) or no longer permits (`false`).
    pub permits: bool,
    pub kind: String,
    pub example: Counterexample,
}

/// The solver, and the schema's kinds of request.
pub struct Prover {
    compiler: CedarSymCompiler<LocalSolver>,
    schema: &'static Schema,
    envs: Vec<RequestEnv>,
}

fn solver_error(e: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::Unavailable,
        format!("the policy prover failed: {}", one_line(&e.to_string())),
    )
}

/// `User grant Resource`.
fn kind(env: &RequestEnv) -> String {
    format!(
        "{} {} {}",
        env.principal(),
        env.action().id().unescaped(),
        env.resource()
    )
}

impl Prover {
    /// Starts the solver: `$CVC5`, else `cvc5` on the `PATH`.
    pub fn new() -> Result<Self> {
        // A time limit per query, not on the whole process: one solver answers every query.
        let solver = LocalSolver::cvc5_with_args(["--tlimit-per=60000"]).map_err(|e| {
            Error::new(
                ErrorKind::Unavailable,
                format!(
                    "cannot start the cvc5 solver ({}): install it (Debian: apt-get install cvc5) or set CVC5 to its path",
                    one_line(&e.to_string())
                ),
            )
        })?;
        let compiler = CedarSymCompiler::new(solver).map_err(solver_error)?;
        let schema = schema()?;
        Ok(Prover {
            compiler,
            schema,
            envs: schema.request_envs().collect(),
        })
    }

    /// `policy` with the relay's guarantees about entities built from `catalog` added.
    fn analysed(policy: &PolicySet, catalog: &Catalog) -> Result<PolicySet> {
        let mut set = policy.clone();
        set.merge(&catalog_assumptions(catalog)?, true)
            .map_err(|e| Error::internal(format!("cannot add the catalog's assumptions: {e}")))?;
        Ok(set)
    }

    fn compile(&self, set: &PolicySet, env: &RequestEnv) -> Result<CompiledPolicySet> {
        CompiledPolicySet::compile(set, env, self.schema).map_err(solver_error)
    }

    /// Proves or refutes each property of `policy` (a validated set) under `catalog`.
    pub async fn prove(
        &mut self,
        policy: &PolicySet,
        catalog: &Catalog,
        properties: &[Property],
    ) -> Result<Vec<Outcome>> {
        let analysed = Self::analysed(policy, catalog)?;
        let mut out = Vec::new();
        for property in properties {
            let verdict = self.prove_one(policy, &analysed, property).await?;
            out.push(Outcome {
                property: property.clone(),
                verdict,
            });
        }
        Ok(out)
    }

    async fn prove_one(
        &mut self,
        policy: &PolicySet,
        analysed: &PolicySet,
        property: &Property,
    ) -> Result<Verdict> {
        let envs: Vec<RequestEnv> = self
            .envs
            .iter()
            .filter(|e| property.covers(&e.principal().to_string(), e.action().id().unescaped()))
            .cloned()
            .collect();
        for env in &envs {
            let found = match &property.check {
                Check::AlwaysDenies => {
                    let set = self.compile(analysed, env)?;
                    self.compiler
                        .check_always_denies_with_counterexample_opt(&set)
                        .await
                        .map_err(solver_error)?
                }
                Check::AllowsOnly(bound) => {
                    let set = self.compile(analysed, env)?;
                    let bound = self.compile(bound, env)?;
                    self.compiler
                        .check_implies_with_counterexample_opt(&set, &bound)
                        .await
                        .map_err(solver_error)?
                }
                Check::NeverErrors => self.first_error(policy, env).await?,
            };
            if let Some(env_found) = found {
                return Ok(Verdict::Refuted {
                    kind: kind(env),
                    example: Box::new(explained(env_found, policy)),
                });
            }
        }
        Ok(Verdict::Proved { kinds: envs.len() })
    }

    /// A request on which some policy of `policy` errors, if there is one.
    async fn first_error(&mut self, policy: &PolicySet, env: &RequestEnv) -> Result<Option<Env>> {
        for p in policy.policies() {
            let compiled = CompiledPolicy::compile(p, env, self.schema).map_err(solver_error)?;
            if let Some(found) = self
                .compiler
                .check_never_errors_with_counterexample_opt(&compiled)
                .await
                .map_err(solver_error)?
            {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// What `new` permits that `old` does not, and what it no longer permits: one example per
    /// kind of request, under `catalog`.
    pub async fn diff(
        &mut self,
        old: &PolicySet,
        new: &PolicySet,
        catalog: &Catalog,
    ) -> Result<Vec<Change>> {
        let (old_a, new_a) = (Self::analysed(old, catalog)?, Self::analysed(new, catalog)?);
        let mut out = Vec::new();
        for env in self.envs.clone() {
            let (o, n) = (self.compile(&old_a, &env)?, self.compile(&new_a, &env)?);
            for (permits, wider, narrower, by) in [(true, &n, &o, new), (false, &o, &n, old)] {
                if let Some(found) = self
                    .compiler
                    .check_implies_with_counterexample_opt(wider, narrower)
                    .await
                    .map_err(solver_error)?
                {
                    out.push(Change {
                        permits,
                        kind: kind(&env),
                        example: explained(found, by),
                    });
                }
            }
        }
        Ok(out)
    }
}

/// The counterexample, with the policies of `policy` that decide it (those that permit it, or
/// that error on it).
fn explained(env: Env, policy: &PolicySet) -> Counterexample {
    let response = Authorizer::new().is_authorized(&env.request, policy, &env.entities);
    let mut ids: BTreeSet<String> = response
        .diagnostics()
        .reason()
        .map(|id| named(policy, id))
        .collect();
    ids.extend(response.diagnostics().errors().map(|e| match e {
        cedar_policy::AuthorizationError::PolicyEvaluationError(e) => named(policy, e.policy_id()),
    }));
    Counterexample {
        request: env.request,
        entities: env.entities,
        policies: ids.into_iter().collect(),
    }
}

fn named(policy: &PolicySet, id: &PolicyId) -> String {
    policy
        .annotation(id, "id")
        .unwrap_or(id.as_ref())
        .to_owned()
}

impl Counterexample {
    /// The request and entities as JSON: `principal`, `action`, `resource` (Cedar entity uids
    /// as `Type::"id"`), `context` and `entities` (Cedar's JSON entity format), so that it can be
    /// replayed through any Cedar authorizer.
    pub fn to_json(&self) -> serde_json::Value {
        let uid = |u: Option<&cedar_policy::EntityUid>| u.map(|u| u.to_string());
        serde_json::json!({
            "principal": uid(self.request.principal()),
            "action": uid(self.request.action()),
            "resource": uid(self.request.resource()),
            "context": self.request.context().and_then(|c| c.to_json_value().ok()),
            "entities": self.entities.to_json_value().ok(),
            "decided_by": self.policies,
        })
    }

    /// One line: who, with which attributes, asks what, of what, in which context.
    pub fn summary(&self) -> String {
        let attrs = |u: Option<&cedar_policy::EntityUid>| -> String {
            let Some(u) = u else {
                return "?".into();
            };
            let described = self.entities.get(u).map(|e| {
                let mut a: Vec<String> = e
                    .attrs()
                    .map(|(k, v)| match v {
                        Ok(v) => format!("{k}: {v}"),
                        Err(_) => format!("{k}: ?"),
                    })
                    .collect();
                a.sort();
                a.join(", ")
            });
            match described {
                Some(a) if !a.is_empty() => format!("{u} {{{a}}}"),
                _ => u.to_string(),
            }
        };
        let context = self
            .request
            .context()
            .and_then(|c| c.to_json_value().ok())
            .map(|v| v.to_string())
            .unwrap_or_default();
        let action = self
            .request
            .action()
            .map(|a| a.id().unescaped().to_owned())
            .unwrap_or_default();
        format!(
            "{} asks {action} of {}, context {context}",
            attrs(self.request.principal()),
            attrs(self.request.resource())
        )
    }
}

/// Runs `f` to completion on a runtime of its own, on a thread of its own: callable from
/// synchronous code and from inside another runtime alike.
pub fn run_blocking<T, F>(f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<T>> + Send>>
        + Send
        + 'static,
{
    std::thread::Builder::new()
        .name("sealrelay-prover".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| Error::internal(format!("cannot start the prover's runtime: {e}")))?;
            rt.block_on(f())
        })
        .map_err(|e| Error::internal(format!("cannot start the prover's thread: {e}")))?
        .join()
        .map_err(|_| Error::internal("the prover's thread panicked"))?
}
