//! The newest checkpoint the relay's witnesses cosigned with a quorum (written by the shell's
//! witnessing task, `server::shell::witnessing`; read by receipts and `GetCheckpoint`).

use crate::core::tlog::checkpoint::Checkpoint;
use crate::core::tlog::cosignature::WitnessPolicy;

/// A checkpoint and its note (with cosignature lines when witnessed).
pub type Noted = Option<(Checkpoint, String)>;

/// The relay's witness policy, and the newest checkpoint cosigned under it.
pub struct Witnessed {
    pub(crate) policy: WitnessPolicy,
    /// The newest checkpoint with a quorum of cosignatures.
    pub(crate) witnessed: tokio::sync::watch::Sender<Noted>,
}

impl Witnessed {
    pub fn new(policy: WitnessPolicy) -> Self {
        let (witnessed, _) = tokio::sync::watch::channel(None);
        Witnessed { policy, witnessed }
    }
}
