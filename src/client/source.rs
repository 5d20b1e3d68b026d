//! The source's client (docs/sources.md): it lists what agents dispatched to it and checks every
//! assignment itself, trusting neither the relay nor the agent: the user's signature on the
//! grant and the user's entry with its place in the directory log (as an agent does before
//! sealing), the agent's entry against the pinned authority and its signature on the dispatch,
//! that the dispatch names exactly this grant and this source, and that this source's own entry
//! serves the resource. Then it seals to the user and signs as the source, or refuses.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use crate::clock;
use crate::core::directory::DirectoryEntry;
use crate::core::dispatch::SourceSubmission;
use crate::core::dispatch::{check_dispatch, Dispatch, RefusalReason, SourceRefusal};
use crate::core::identity::Identity;
use crate::core::sign::StatementType;
use crate::core::store::statement_digest;
use crate::core::wire::{AssignmentView, Reply, Request, WireSigned};
use crate::error::{Error, Result};
use crate::ids::{EnvelopeId, GrantId, PartyKind, SpiffeId};

use super::agent::{judge_listing, seal_signed, Sealed};
use super::connection::Connection;
use super::unexpected;
use super::verify::{authority, own_id, verified_entry, OpenGrant, SerialPins};

/// An assignment the source checked: the grant (verified as an agent verifies one), the
/// agent's dispatch and entry.
#[derive(Clone, Debug)]
pub struct Assignment {
    pub grant: OpenGrant,
    pub dispatch: Dispatch,
    pub dispatch_digest: [u8; 32],
    pub agent_entry: DirectoryEntry,
    /// When the relay queued it (for the source's queue-age metric only).
    pub dispatched_at: u64,
}

/// An assignment as listed: the grant, user and agent its dispatch names (as claimed), and
/// this source's verdict.
#[derive(Debug)]
pub struct Listed {
    pub grant_id: GrantId,
    pub user: SpiffeId,
    pub agent: SpiffeId,
    /// Checked, or why it must not be filled (one line).
    pub verdict: Result<Assignment>,
}

/// A source: lists its assignments, fills or refuses them.
pub struct SourceClient<'a> {
    pub conn: Connection,
    identity: &'a Identity,
    id: SpiffeId,
    pins: Arc<SerialPins>,
}

impl<'a> SourceClient<'a> {
    pub async fn connect(identity: &'a Identity, relay: &str) -> Result<Self> {
        let id = own_id(identity, PartyKind::Source)?;
        Ok(SourceClient {
            conn: Connection::connect(identity, relay).await?,
            identity,
            id,
            pins: Arc::new(SerialPins::in_memory()),
        })
    }

    /// Uses `pins` (kept beside the identity by [`SerialPins::for_identity`]).
    pub fn with_pins(mut self, pins: Arc<SerialPins>) -> Self {
        self.pins = pins;
        self
    }

    pub fn id(&self) -> &SpiffeId {
        &self.id
    }

    /// This source's own entry (from its identity file, verified at import).
    fn own_entry(&self) -> Result<DirectoryEntry> {
        let signed = self.identity.entry.as_ref().ok_or_else(|| {
            Error::bad_input("this identity has no directory entry: import its bundle")
        })?;
        DirectoryEntry::verify(signed, &authority(self.identity)?)
    }

    /// Every assignment the relay listed, each with this source's verdict: checked, or why it
    /// must not be filled (one line).
    pub async fn assignments(&self) -> Result<Vec<Listed>> {
        let judged = judge_listing(
            &self.conn,
            self.identity,
            &self.pins,
            |page, dir_size| Request::Assignments { page, dir_size },
            |reply| match reply {
                Reply::Assignments {
                    assignments,
                    next,
                    directory,
                } => Ok((assignments, next, directory)),
                other => Err(unexpected(&other)),
            },
            |a: &AssignmentView| &a.view,
        )
        .await?;
        let own = self.own_entry()?;
        let authority = authority(self.identity)?;
        let now = clock::now();
        let mut out = Vec::new();
        for (view, grant) in judged {
            // The dispatching agent's key must not be one the directory log revokes (a relay
            // could serve a leaked, revoked agent key with its dispatch).
            let agent_revoked = match &grant {
                Ok(g) => self.pins.mirror.revoked_through(&g.grant.agent).await,
                Err(_) => None,
            };
            let Ok(claimed) = view
                .dispatch
                .to_signed(StatementType::Dispatch)
                .and_then(|s| Dispatch::decode(&s.statement))
            else {
                // Not even a dispatch: nothing to name in a refusal.
                tracing::warn!("the relay listed an assignment that is not a dispatch");
                continue;
            };
            // The agent's entry is pinned like a user's: a relay cannot serve an older one.
            let verdict = grant
                .and_then(|g| check(&view, g, &own, &self.id, &authority, now))
                .and_then(|a| self.pins.check(&a.agent_entry).map(|()| a))
                .and_then(|a| match agent_revoked {
                    Some(r) if a.agent_entry.serial <= r => Err(Error::verification(format!(
                        "the directory log revokes {}'s keys through serial {r}, and its dispatch is signed with serial {}: refusing to fill it",
                        a.agent_entry.id.short(),
                        a.agent_entry.serial
                    ))),
                    _ => Ok(a),
                });
            out.push(Listed {
                grant_id: claimed.grant_id,
                user: claimed.user,
                agent: claimed.agent,
                verdict,
            });
        }
        Ok(out)
    }

    /// Seals `input` to the assignment's user into `scratch_dir` and signs the source's
    /// statement. Blocking (callers on a runtime run it on a blocking thread).
    pub fn seal(
        identity: &Identity,
        a: &Assignment,
        input: &mut (dyn Read + Send),
        scratch_dir: &Path,
    ) -> Result<Sealed> {
        let source = own_id(identity, PartyKind::Source)?;
        seal_signed(&a.grant, input, scratch_dir, |digest, len| {
            SourceSubmission {
                grant_id: a.grant.grant.grant_id,
                user: a.grant.grant.user.clone(),
                agent: a.dispatch.agent.clone(),
                source,
                dispatch_digest: a.dispatch_digest,
                ciphertext_root: digest,
                ciphertext_len: len,
            }
            .sign(&identity.signing_key)
        })
    }

    /// Submits what [`SourceClient::seal`] made (again after a lost answer: the relay answers
    /// the same statement with the same envelope).
    pub async fn submit(&self, sealed: &mut Sealed) -> Result<EnvelopeId> {
        let ask = sealed.was_tried();
        super::agent::submit_sealed_over(&self.conn, sealed, ask).await
    }

    /// Refuses an assignment with a signed refusal (a reason from the fixed list).
    pub async fn refuse(
        &self,
        grant_id: GrantId,
        user: &SpiffeId,
        agent: &SpiffeId,
        reason: RefusalReason,
    ) -> Result<()> {
        let refusal = SourceRefusal {
            grant_id,
            user: user.clone(),
            agent: agent.clone(),
            source: self.id.clone(),
            reason,
            time: clock::now(),
        }
        .sign(&self.identity.signing_key);
        match self
            .conn
            .simple(Request::RefuseAssignment {
                refusal: WireSigned::from_signed(&refusal),
            })
            .await?
        {
            Reply::Done => Ok(()),
            other => Err(unexpected(&other)),
        }
    }
}

/// The source's own checks of one assignment whose grant verified.
fn check(
    view: &AssignmentView,
    grant: OpenGrant,
    own: &DirectoryEntry,
    me: &SpiffeId,
    authority: &crate::core::sign::PublicKey,
    now: u64,
) -> Result<Assignment> {
    let g = &grant.grant;
    let agent_entry = verified_entry(&view.agent_entry, authority, Some(&g.agent))?;
    if !agent_entry.is_current(now) {
        return Err(Error::verification(
            "the dispatching agent's entry is not current",
        ));
    }
    let signed = view.dispatch.to_signed(StatementType::Dispatch)?;
    let dispatch = Dispatch::decode(&signed.statement)?;
    signed.verify(&agent_entry.signing_key).map_err(|e| {
        Error::verification(format!(
            "the dispatch does not verify under {}'s key: {e}",
            g.agent.short()
        ))
    })?;
    if dispatch.source != *me {
        return Err(Error::verification(
            "the dispatch names another source than this one",
        ));
    }
    check_dispatch(&dispatch, g, &grant.grant_digest)?;
    if !own
        .attributes
        .scopes
        .iter()
        .any(|s| crate::core::resource::matches(s, &g.resource))
    {
        return Err(Error::verification(
            "this source's entry does not serve the grant's resource",
        ));
    }
    Ok(Assignment {
        dispatched_at: view.dispatched_at,
        dispatch_digest: statement_digest(&signed),
        dispatch,
        agent_entry,
        grant,
    })
}
