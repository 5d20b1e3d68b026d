//! The agent's side of sources (docs/sources.md): have a source fill a grant instead of sealing
//! it here, and read a source's refusal. The agent checks the source's directory entry itself
//! (against its pinned authority: enrolled as a source, serving the grant's resource) before it
//! signs the dispatch.

use crate::clock;
use crate::core::directory::DirectoryEntry;
use crate::core::dispatch::{Dispatch, SourceRefusal};
use crate::core::sign::StatementType;
use crate::core::wire::{Reply, Request, WireSigned};
use crate::error::{Error, Result};
use crate::ids::{GrantId, PartyKind, SpiffeId};

use super::super::unexpected;
use super::super::verify::{authority, verified_entry, OpenGrant};
use super::AgentClient;

impl AgentClient<'_> {
    /// Every entry the relay holds for `id`, each verified against the pinned authority.
    async fn entries_of(&self, id: &SpiffeId) -> Result<Vec<DirectoryEntry>> {
        let authority = authority(self.identity)?;
        match self
            .conn
            .simple(Request::GetEntries { id: id.to_string() })
            .await?
        {
            Reply::Entries { entries } => entries
                .iter()
                .map(|w| verified_entry(w, &authority, Some(id)))
                .collect(),
            other => Err(unexpected(&other)),
        }
    }

    /// The source `name`'s entry in force, verified, that serves `resource`.
    pub async fn source_entry(&self, name: &str, resource: &str) -> Result<DirectoryEntry> {
        let id = SpiffeId::new(self.id.trust_domain(), PartyKind::Source, name)?;
        let now = clock::now();
        let entry = self
            .entries_of(&id)
            .await?
            .into_iter()
            .max_by_key(|e| e.serial)
            .filter(|e| e.is_current(now))
            .ok_or_else(|| {
                Error::not_found(format!(
                    "no source {name:?} is enrolled (or its entry is not current)"
                ))
            })?;
        if !entry
            .attributes
            .scopes
            .iter()
            .any(|s| crate::core::resource::matches(s, resource))
        {
            return Err(Error::new(
                crate::ErrorKind::Refused,
                format!("source {name:?} does not serve the grant's resource (its entry's --serves patterns do not cover it)"),
            ));
        }
        Ok(entry)
    }

    /// Has source `name` fill `grant`: checks the source's entry, signs the dispatch and sends
    /// it. Returns the source's id. Dispatching the same grant to the same source again after a
    /// lost answer is safe: a grant the relay already holds for that source is answered as
    /// done (its status says so), one dispatched elsewhere is refused.
    pub async fn dispatch(&self, grant: &OpenGrant, name: &str) -> Result<SpiffeId> {
        let source = self.source_entry(name, &grant.grant.resource).await?.id;
        let g = &grant.grant;
        let d = Dispatch {
            grant_id: g.grant_id,
            grant_digest: grant.grant_digest,
            user: g.user.clone(),
            agent: self.id.clone(),
            source: source.clone(),
            resource: g.resource.clone(),
            time: clock::now(),
        };
        let signed = d.sign(&self.identity.signing_key);
        let answer = self
            .conn
            .simple(Request::Dispatch {
                dispatch: WireSigned::from_signed(&signed),
            })
            .await;
        match answer {
            Ok(Reply::Done) => Ok(source),
            Ok(other) => Err(unexpected(&other)),
            Err(e) if e.kind() == crate::ErrorKind::Conflict => {
                let status = self.submission_status(g.grant_id).await?;
                if status.source.as_deref() == Some(name) {
                    Ok(source)
                } else {
                    Err(e)
                }
            }
            Err(e) => Err(e),
        }
    }

    /// A source's refusal from the relay, verified: of `grant_id`, for this agent, by the
    /// source the relay says the grant went to, signed by one of that source's entries.
    pub(crate) async fn verified_refusal(
        &self,
        w: &WireSigned,
        grant_id: GrantId,
        source: Option<&str>,
    ) -> Result<SourceRefusal> {
        let signed = w.to_signed(StatementType::SourceRefusal)?;
        let r = SourceRefusal::decode(&signed.statement)?;
        if r.grant_id != grant_id || r.agent != self.id || source != Some(r.source.name()) {
            return Err(Error::verification(
                "the relay served a refusal of another grant, agent or source",
            ));
        }
        let entries = self.entries_of(&r.source).await?;
        if entries
            .iter()
            .any(|e| signed.verify(&e.signing_key).is_ok())
        {
            Ok(r)
        } else {
            Err(Error::verification(format!(
                "the relay served a refusal that {} did not sign",
                r.source.short()
            )))
        }
    }
}
