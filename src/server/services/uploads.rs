//! Uploads in progress: one per grant at a time, and per agent a cap on how many and how many
//! bytes, all claimed before a body is read, so that no agent can fill the disk by opening many
//! streams on one grant or many grants at once.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use crate::core::store::{QuotaKind, WriteRefusal};
use crate::core::wire::ErrorCode;
use crate::ids::{GrantId, SpiffeId};

use super::config::QuotaConfig;
use super::refusal::Refusal;

#[derive(Default)]
struct InProgress {
    grants: HashSet<GrantId>,
    /// Per agent: uploads and declared bytes in progress.
    agents: HashMap<SpiffeId, (u64, u64)>,
}

#[derive(Default)]
pub struct Uploads {
    in_progress: Mutex<InProgress>,
}

/// An upload's claim; released when dropped (committed, refused, or the stream died).
pub struct UploadSlot<'a> {
    uploads: &'a Uploads,
    grant: GrantId,
    agent: SpiffeId,
    bytes: u64,
}

impl Uploads {
    /// Claims the right to upload `bytes` for `grant` as `agent`.
    pub fn begin(
        &self,
        grant: GrantId,
        agent: &SpiffeId,
        bytes: u64,
        quotas: &QuotaConfig,
    ) -> Result<UploadSlot<'_>, Refusal> {
        let mut state = self.in_progress.lock().map_err(|_| Refusal::internal())?;
        if state.grants.contains(&grant) {
            return Err(Refusal::new(
                ErrorCode::Conflict,
                "another upload for this grant is in progress (a grant serves one submission)",
            ));
        }
        let (count, held) = state.agents.get(agent).copied().unwrap_or((0, 0));
        if count >= quotas.max_uploads_per_agent {
            return Err(Refusal::from(WriteRefusal::Quota {
                kind: QuotaKind::UploadsPerAgent,
                limit: quotas.max_uploads_per_agent,
            }));
        }
        if held.saturating_add(bytes) > quotas.max_upload_bytes_per_agent {
            return Err(Refusal::from(WriteRefusal::Quota {
                kind: QuotaKind::UploadBytesPerAgent,
                limit: quotas.max_upload_bytes_per_agent,
            }));
        }
        state.grants.insert(grant);
        state
            .agents
            .insert(agent.clone(), (count + 1, held.saturating_add(bytes)));
        Ok(UploadSlot {
            uploads: self,
            grant,
            agent: agent.clone(),
            bytes,
        })
    }
}

impl Drop for UploadSlot<'_> {
    fn drop(&mut self) {
        let Ok(mut state) = self.uploads.in_progress.lock() else {
            return;
        };
        state.grants.remove(&self.grant);
        let emptied = match state.agents.get_mut(&self.agent) {
            Some((count, held)) => {
                *count = count.saturating_sub(1);
                *held = held.saturating_sub(self.bytes);
                *count == 0
            }
            None => false,
        };
        if emptied {
            state.agents.remove(&self.agent);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::ids::PartyKind;

    #[test]
    fn one_upload_per_grant_and_per_agent_caps_until_released() {
        let u = Uploads::default();
        let q = QuotaConfig {
            max_uploads_per_agent: 2,
            max_upload_bytes_per_agent: 100,
            ..QuotaConfig::default()
        };
        let bot = SpiffeId::new("t", PartyKind::Agent, "bot").unwrap();
        let a = u.begin(GrantId([1; 16]), &bot, 10, &q).unwrap();
        assert_eq!(
            u.begin(GrantId([1; 16]), &bot, 10, &q).err().unwrap().code,
            ErrorCode::Conflict
        );
        assert_eq!(
            u.begin(GrantId([2; 16]), &bot, 91, &q).err().unwrap().code,
            ErrorCode::QuotaExceeded
        );
        let b = u.begin(GrantId([2; 16]), &bot, 90, &q).unwrap();
        let third = u.begin(GrantId([3; 16]), &bot, 0, &q).err().unwrap();
        assert!(
            third.message.contains("max_uploads_per_agent"),
            "{}",
            third.message
        );
        drop(a);
        drop(b);
        u.begin(GrantId([1; 16]), &bot, 100, &q).unwrap();
    }
}
