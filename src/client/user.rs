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
}

/// Options for a new grant.
pub struct GrantRequest {
    pub agent: String,
    pub resource: String,
    pub purpose: String,
    pub ttl_secs: u64,
    pub max_bytes: u64,
}

impl<'a> UserClient<'a> {
    pub async fn connect(identity: &'a Identity, relay: &str) -> Result<Self> {
        let id = own_id(identity, PartyKind::User)?;
        Ok(UserClient {
            conn: Connection::connect(identity, relay).await?,
            identity,
            id,
        })
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
        grants
            .iter()
            .map(|view| verified_grant(view, &authority))
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
