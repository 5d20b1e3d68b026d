//! The admin's client: pushes signed directory statements, and the kill switch.

use crate::core::identity::Identity;
use crate::core::sign::Signed;
use crate::core::wire::{Reply, Request, WireSigned};
use crate::error::Result;
use crate::ids::PartyKind;

use super::connection::Connection;
use super::unexpected;

/// An admin: pushes signed directory entries and revocations to the relay.
pub struct AdminClient {
    pub conn: Connection,
}

impl AdminClient {
    pub async fn connect(identity: &Identity, relay: &str) -> Result<Self> {
        identity.require_kind(PartyKind::Admin)?;
        Ok(AdminClient {
            conn: Connection::connect(identity, relay).await?,
        })
    }

    async fn done(&self, request: Request) -> Result<()> {
        match self.conn.simple(request).await? {
            Reply::Done => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// The kill switch: quarantine an agent now.
    pub async fn quarantine(&self, agent: &str, reason: &str) -> Result<()> {
        self.done(Request::Quarantine {
            agent: agent.to_owned(),
            reason: reason.to_owned(),
        })
        .await
    }

    /// Lift a quarantine.
    pub async fn release(&self, agent: &str) -> Result<()> {
        self.done(Request::Release {
            agent: agent.to_owned(),
        })
        .await
    }

    /// Pushes a signed approval of a shorter wait for a reset key (docs/keys.md).
    pub async fn approve_reset(&self, approval: &Signed) -> Result<()> {
        self.done(Request::ApproveReset {
            approval: WireSigned::from_signed(approval),
        })
        .await
    }

    pub async fn push(&self, entries: &[Signed], revocations: &[Signed]) -> Result<()> {
        self.done(Request::PushDirectory {
            entries: entries.iter().map(WireSigned::from_signed).collect(),
            revocations: revocations.iter().map(WireSigned::from_signed).collect(),
        })
        .await
    }
}
