//! The user's client: creates grants, lists its inbox, lists and approves grants that need a
//! second person. Fetching is in `fetch.rs`.

use crate::clock;
use crate::core::grant::{Approval, Grant};
use crate::core::identity::Identity;
use crate::core::wire::{EnvelopeView, Reply, Request, WireSigned};
use crate::error::{Error, Result};
use crate::ids::{GrantId, PartyKind, SpiffeId};

use super::connection::Connection;
use super::unexpected;
use super::verify::{authority, own_id, verified_grant, OpenGrant};

/// A user: creates grants, lists and fetches its envelopes, files receipts.
pub struct UserClient<'a> {
    pub conn: Connection,
    pub(crate) identity: &'a Identity,
    pub(crate) id: SpiffeId,
    /// The newest checkpoint this client saw: each receipt's checkpoint must extend it.
    pub(crate) seen: Option<crate::local::checkpoint_state::CheckpointState>,
}

/// Options for a new grant.
pub struct GrantRequest {
    pub agent: String,
    pub resource: String,
    pub purpose: String,
    pub ttl_secs: u64,
    pub max_bytes: u64,
}

/// A grant this user made, and where it is.
#[derive(Clone, Debug)]
pub struct MyGrant {
    pub grant: crate::core::grant::Grant,
    pub progress: crate::core::wire::GrantProgress,
    pub envelope_id: Option<crate::ids::EnvelopeId>,
    pub receipt_index: Option<u64>,
    /// Who approved or denied it (read from the signed decision, as the relay served it).
    pub decided_by: Option<crate::ids::SpiffeId>,
}

impl<'a> UserClient<'a> {
    pub async fn connect(identity: &'a Identity, relay: &str) -> Result<Self> {
        let id = own_id(identity, PartyKind::User)?;
        Ok(UserClient {
            conn: Connection::connect(identity, relay).await?,
            identity,
            id,
            seen: None,
        })
    }

    /// Keeps the newest checkpoint seen in `state` (see `local::checkpoint_state`): a receipt's
    /// checkpoint that does not extend it fails the fetch with ROLLBACK or FORK.
    pub fn remember_checkpoints(
        mut self,
        state: crate::local::checkpoint_state::CheckpointState,
    ) -> Self {
        // A client fetches again and again: the note it saved last is checked once.
        self.seen = Some(state.remembering());
        self
    }

    /// Signs and files a grant; returns its id.
    pub async fn grant(&self, req: &GrantRequest) -> Result<GrantId> {
        let agent: SpiffeId = if req.agent.starts_with("spiffe://") {
            req.agent.parse()?
        } else {
            SpiffeId::new(self.id.trust_domain(), PartyKind::Agent, &req.agent)?
        };
        let now = clock::now();
        let grant = Grant {
            grant_id: GrantId::random()?,
            user: self.id.clone(),
            agent,
            resource: req.resource.clone(),
            purpose: req.purpose.clone(),
            created: now,
            expires: now.saturating_add(req.ttl_secs),
            max_bytes: req.max_bytes,
        };
        let signed = grant.sign(&self.identity.signing_key)?;
        let request = Request::CreateGrant {
            grant: WireSigned::from_signed(&signed),
        };
        match self.conn.simple(request).await? {
            Reply::GrantCreated { grant_id, .. } => Ok(grant_id),
            other => Err(unexpected(&other)),
        }
    }

    /// The inbox with each envelope's header judged (who, what, why, verified or not).
    pub async fn inbox_headers(&self) -> Result<Vec<super::header::EnvelopeHeader>> {
        let views = self.inbox().await?;
        let mut own = Vec::new();
        let mut headers = Vec::with_capacity(views.len());
        for v in &views {
            headers.push(self.judge(v, &mut own).await?);
        }
        Ok(headers)
    }

    /// Judges an envelope's header; a grant this identity's key did not sign is checked again
    /// against the user's other entries (fetched once into `own`), so one signed before a
    /// rotation is recognised as the user's.
    pub(crate) async fn judge(
        &self,
        view: &EnvelopeView,
        own: &mut Vec<crate::core::directory::DirectoryEntry>,
    ) -> Result<super::header::EnvelopeHeader> {
        Ok(self.judge_verified(view, own).await?.0)
    }

    /// [`UserClient::judge`], with the root the agent's statement signs when all of it
    /// verified (`header::describe_verified`).
    pub(crate) async fn judge_verified(
        &self,
        view: &EnvelopeView,
        own: &mut Vec<crate::core::directory::DirectoryEntry>,
    ) -> Result<(super::header::EnvelopeHeader, Option<[u8; 32]>)> {
        let judged = super::header::describe_verified(self.identity, own, view);
        if judged.0.problem.as_deref() != Some("the grant is not one you signed") || !own.is_empty()
        {
            return Ok(judged);
        }
        match self.own_history().await {
            Ok(history) => *own = history,
            // One envelope the history cannot explain stays unverifiable; the inbox goes on.
            Err(_) => return Ok(judged),
        }
        Ok(super::header::describe_verified(self.identity, own, view))
    }

    /// This user's entries the relay holds (every serial), each verified against the pinned
    /// authority and naming this user.
    pub async fn own_history(&self) -> Result<Vec<crate::core::directory::DirectoryEntry>> {
        let authority = authority(self.identity)?;
        let request = Request::GetEntries {
            id: self.id.to_string(),
        };
        match self.conn.simple(request).await? {
            Reply::Entries { entries } => entries
                .iter()
                .map(|w| super::verify::verified_entry(w, &authority, Some(&self.id)))
                .collect(),
            other => Err(unexpected(&other)),
        }
    }

    pub async fn inbox(&self) -> Result<Vec<EnvelopeView>> {
        self.conn
            .all_pages(
                |page| Request::Inbox { page },
                |reply| match reply {
                    Reply::Inbox { envelopes, next } => Ok((envelopes, next)),
                    other => Err(unexpected(&other)),
                },
            )
            .await
    }

    /// Grants awaiting approval that this user may approve, each verified: the requester's entry
    /// against the pinned authority, the grant against the requester's key.
    pub async fn pending_approvals(&self) -> Result<Vec<OpenGrant>> {
        Ok(self
            .pending_with_classification()
            .await?
            .into_iter()
            .map(|(g, _)| g)
            .collect())
    }

    /// [`UserClient::pending_approvals`], each with the classification the relay's catalog
    /// gives its resource.
    pub async fn pending_with_classification(&self) -> Result<Vec<(OpenGrant, u8)>> {
        let authority = authority(self.identity)?;
        let grants = self
            .conn
            .all_pages(
                |page| Request::PendingApprovals { page },
                |reply| match reply {
                    Reply::Pending { grants, next } => Ok((grants, next)),
                    other => Err(unexpected(&other)),
                },
            )
            .await?;
        // A grant that does not verify is skipped (with a warning), not the whole listing.
        Ok(grants
            .iter()
            .filter_map(|p| match verified_grant(&p.view, &authority) {
                Ok(g) => Some((g, p.classification)),
                Err(e) => {
                    tracing::warn!(error = %e, "a pending grant the relay listed was skipped");
                    None
                }
            })
            .collect())
    }

    /// Denies a pending grant: a signed refusal bound to the grant's SHA-256; the relay closes
    /// the grant and logs it.
    pub async fn deny(&self, grant_id: GrantId, reason: &str) -> Result<OpenGrant> {
        let pending = self.pending_approvals().await?;
        let g = pending
            .into_iter()
            .find(|g| g.grant.grant_id == grant_id)
            .ok_or_else(|| Error::not_found("no grant with that id awaits your decision (unknown, already decided, expired, or yours)"))?;
        let denial = crate::core::grant::Denial {
            grant_id,
            grant_sha256: crate::core::directory::sha256(&g.grant.encode()),
            approver: self.id.clone(),
            reason: reason.to_owned(),
            time: clock::now(),
        };
        // The same checks the relay makes, so a bad reason is refused here with its rule.
        crate::core::grant::Denial::decode(&denial.encode())?;
        let request = Request::Deny {
            denial: WireSigned::from_signed(&denial.sign(&self.identity.signing_key)),
        };
        match self.conn.simple(request).await? {
            Reply::Done => Ok(g),
            other => Err(unexpected(&other)),
        }
    }

    /// The grants this user made, each checked against its own key, with where it is now.
    pub async fn my_grants(&self) -> Result<Vec<MyGrant>> {
        let views = self
            .conn
            .all_pages(
                |page| Request::MyGrants { page },
                |reply| match reply {
                    Reply::MyGrants { grants, next } => Ok((grants, next)),
                    other => Err(unexpected(&other)),
                },
            )
            .await?;
        let key = self.identity.signing_key.public();
        views
            .into_iter()
            .map(|v| {
                let grant = crate::core::grant::Grant::verify(
                    &v.grant.to_signed(crate::core::sign::StatementType::Grant)?,
                    &key,
                )
                .map_err(|e| e.context("the relay served a grant this user did not sign"))?;
                let decided_by = v.decision.as_ref().and_then(|d| {
                    crate::core::grant::Approval::decode(&d.statement)
                        .map(|a| a.approver)
                        .or_else(|_| {
                            crate::core::grant::Denial::decode(&d.statement).map(|d| d.approver)
                        })
                        .ok()
                });
                Ok(MyGrant {
                    grant,
                    progress: v.progress,
                    envelope_id: v.envelope_id,
                    receipt_index: v.receipt_index,
                    decided_by,
                })
            })
            .collect()
    }

    /// Approves a pending grant: signs an approval bound to the SHA-256 of the grant exactly as
    /// its requester signed it.
    pub async fn approve(&self, grant_id: GrantId) -> Result<OpenGrant> {
        let pending = self.pending_approvals().await?;
        let g = pending
            .into_iter()
            .find(|g| g.grant.grant_id == grant_id)
            .ok_or_else(|| Error::not_found("no grant with that id awaits your approval (unknown, already approved, expired, or yours)"))?;
        self.approve_statement(&g.grant.encode(), grant_id).await?;
        Ok(g)
    }

    /// Signs and sends an approval of the grant statement `grant_statement` (for tests that
    /// approve something else than what the relay holds).
    pub async fn approve_statement(&self, grant_statement: &[u8], grant_id: GrantId) -> Result<()> {
        let approval = Approval {
            grant_id,
            grant_sha256: crate::core::directory::sha256(grant_statement),
            approver: self.id.clone(),
            time: clock::now(),
        }
        .sign(&self.identity.signing_key);
        let request = Request::Approve {
            approval: WireSigned::from_signed(&approval),
        };
        match self.conn.simple(request).await? {
            Reply::Done => Ok(()),
            other => Err(unexpected(&other)),
        }
    }
}
