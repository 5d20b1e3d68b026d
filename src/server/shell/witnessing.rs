//! Asking witnesses to cosign the relay's checkpoints (C2SP `tlog-witness`, docs/witness.md).
//!
//! One task follows the checkpoints the commit thread signs. For the newest one it asks every
//! configured witness at once (`POST <url>/add-checkpoint` with a consistency proof from the
//! size that witness last cosigned), with a timeout; a 409 tells it the witness's size, and it
//! retries from there. When a quorum of cosignatures verifies, the note with those lines becomes
//! the newest *witnessed* checkpoint, which receipts and `GetCheckpoint` hand out. Without a
//! quorum the relay keeps serving (receipts carry the checkpoint not yet witnessed, and clients
//! can upgrade them later) and the task retries with backoff, or sooner when a newer checkpoint
//! is signed. Since it always takes the newest checkpoint, cosigning is batched with signing.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::core::tlog::checkpoint::Checkpoint;
use crate::core::tlog::cosignature::{self, CosignerKey, WitnessPolicy};
use crate::core::tlog::witness_protocol::AddCheckpoint;
use crate::core::tlog::Hash;

use crate::server::services::config::RelayConfig;
use crate::server::services::relay::Relay;

/// The relay's witnesses: where to ask, and with what HTTP agent.
struct Witnesses {
    endpoints: Vec<Arc<Endpoint>>,
    agent: ureq::Agent,
}

struct Endpoint {
    url: String,
    key: CosignerKey,
    /// The size this witness last cosigned, as far as the relay knows.
    known: Mutex<Option<u64>>,
}

/// Largest answer read from a witness.
const MAX_ANSWER: u64 = 16 * 1024;
/// Longest wait between retries without a quorum.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

impl Witnesses {
    fn new(config: &RelayConfig, policy: &WitnessPolicy) -> Self {
        let endpoints = config
            .witness
            .iter()
            .zip(&policy.witnesses)
            .map(|(w, key)| {
                Arc::new(Endpoint {
                    url: format!("{}/add-checkpoint", w.url.trim_end_matches('/')),
                    key: key.clone(),
                    known: Mutex::new(None),
                })
            })
            .collect();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_millis(config.witness_timeout_ms)))
            .http_status_as_error(false)
            .max_redirects(0)
            .user_agent("sealrelay-relay")
            .proxy(None)
            .build()
            .into();
        Witnesses { endpoints, agent }
    }

    /// Asks every witness to cosign `note` (concurrently), with consistency proofs from
    /// `proofs`; returns the verified lines.
    async fn cosign_all(&self, proofs: &Proofs, cp: &Checkpoint, note: &str) -> Vec<String> {
        let mut tasks = tokio::task::JoinSet::new();
        for ep in &self.endpoints {
            let (ep, proofs, cp, note, agent) = (
                ep.clone(),
                proofs.clone(),
                cp.clone(),
                note.to_owned(),
                self.agent.clone(),
            );
            tasks.spawn_blocking(move || {
                let r = ep.cosign(&agent, proofs.as_ref(), &cp, &note);
                (ep, r)
            });
        }
        let mut lines = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok((_, Ok(line))) => lines.push(line),
                Ok((ep, Err(why))) => {
                    tracing::warn!(witness = %ep.key.name, size = cp.size, reason = %why, "no cosignature")
                }
                Err(_) => tracing::error!("a witness request task failed"),
            }
        }
        lines
    }
}

impl Endpoint {
    /// One witness, blocking: add-checkpoint, learning its size from a 409 and retrying.
    fn cosign(
        &self,
        agent: &ureq::Agent,
        proofs: &ProofFn,
        cp: &Checkpoint,
        note: &str,
    ) -> Result<String, String> {
        for _ in 0..3 {
            let old = self.known.lock().ok().and_then(|k| *k).unwrap_or(0);
            if old > cp.size {
                return Err(format!(
                    "the witness cosigned a tree of {old} entries, larger than this log's {}: the log was rolled back or forked",
                    cp.size
                ));
            }
            let proof = if old == 0 || old == cp.size {
                Vec::new()
            } else {
                proofs(old, cp.size)?
            };
            let body = AddCheckpoint {
                old_size: old,
                proof,
                note: note.to_owned(),
            }
            .encode();
            let mut response = agent
                .post(&self.url)
                .header("content-type", "text/plain; charset=utf-8")
                .send(body.as_str())
                .map_err(|e| format!("cannot reach {}: {e}", self.url))?;
            let status = response.status().as_u16();
            let text = response
                .body_mut()
                .with_config()
                .limit(MAX_ANSWER)
                .read_to_string()
                .map_err(|e| format!("unreadable answer: {e}"))?;
            match status {
                200 => {
                    // Only the line that verifies is kept: anything else the witness sent
                    // (junk under its name, padding) never reaches a receipt.
                    let line = cosignature::verified_line(note, &text, &self.key)
                        .ok_or("the answer holds no valid cosignature by its key")?;
                    if let Ok(mut k) = self.known.lock() {
                        *k = Some(cp.size);
                    }
                    return Ok(line);
                }
                409 => {
                    let size = text
                        .strip_suffix('\n')
                        .and_then(crate::core::tlog::checkpoint::parse_decimal)
                        .ok_or("a 409 without a size")?;
                    if size == old {
                        return Err(format!(
                            "409: the witness cosigned another tree of size {size}: the log was forked"
                        ));
                    }
                    if old > 0 && size < old {
                        // It cosigned `old` before and now claims less: it lost its state, and
                        // a witness that forgets could be led to cosign a fork.
                        tracing::error!(witness = %self.key.name, said = size, cosigned = old, "the witness went back to a smaller tree: its state was lost or rolled back");
                        return Err(format!(
                            "the witness now reports {size} entries after cosigning {old}: its state was rolled back; not using it"
                        ));
                    }
                    if let Ok(mut k) = self.known.lock() {
                        *k = Some(size);
                    }
                }
                _ => {
                    return Err(format!(
                        "HTTP {status}: {}",
                        crate::ids::truncate_for_message(text.lines().next().unwrap_or(""))
                    ))
                }
            }
        }
        Err("the witness's size kept changing".into())
    }
}

/// A consistency proof between two sizes of one log, or why there is none.
type ProofFn = dyn Fn(u64, u64) -> Result<Vec<Hash>, String> + Send + Sync;
type Proofs = Arc<ProofFn>;

/// The witnessing task: runs until the relay stops.
pub async fn run(relay: Arc<Relay>) {
    let Some(w) = relay.witnessing.clone() else {
        return;
    };
    let witnesses = Witnesses::new(&relay.config, &w.policy);
    // A weak handle: a request still waiting on a slow witness must not keep the store open
    // after the relay shut down.
    let store = Arc::downgrade(&relay.store);
    let proofs: Proofs = Arc::new(move |old, new| {
        store
            .upgrade()
            .ok_or("the relay is shutting down")?
            .consistency_proof(old, new)
            .map_err(|e| format!("no consistency proof from {old}: {e}"))
    });
    let mut backoff = Duration::from_millis(250);
    loop {
        let Some((cp, note)) = relay.latest_checkpoint() else {
            relay.signer.signed.notified().await;
            continue;
        };
        let done = w
            .witnessed
            .borrow()
            .as_ref()
            .is_some_and(|(c, _)| c.size >= cp.size);
        if done {
            relay.signer.signed.notified().await;
            continue;
        }
        let mut lines = witnesses.cosign_all(&proofs, &cp, &note).await;
        // A quorum is enough: more lines only make every receipt longer.
        lines.truncate(w.policy.quorum);
        let full = format!("{note}{}", lines.concat());
        match w.policy.check(&full) {
            Ok(_) => {
                tracing::debug!(
                    size = cp.size,
                    cosignatures = lines.len(),
                    "checkpoint witnessed"
                );
                w.witnessed.send_replace(Some((cp, full)));
                backoff = Duration::from_millis(250);
            }
            Err(e) => {
                tracing::warn!(size = cp.size, reason = %e, retry_in_ms = backoff.as_millis() as u64, "checkpoint not witnessed yet; receipts are answered without a quorum");
                tokio::select! {
                    _ = relay.signer.signed.notified() => {}
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// How often the directory log's newest checkpoint is compared with the newest cosigned one.
const DIRECTORY_POLL: Duration = Duration::from_secs(1);

/// The directory log's witnessing task (docs/keys.md): the same witnesses cosign the directory
/// log's checkpoints (origin `<log origin>/directory`, the same log key); the newest one with a
/// quorum is what `DirectoryCheckpoint` and `/directory/checkpoint` hand out.
pub async fn run_directory(relay: Arc<Relay>) {
    let Some(w) = relay.dir_witnessing.clone() else {
        return;
    };
    let witnesses = Witnesses::new(&relay.config, &w.policy);
    let weak = Arc::downgrade(&relay);
    let proofs: Proofs = Arc::new(move |old, new| {
        let relay = weak.upgrade().ok_or("the relay is shutting down")?;
        let dir = relay
            .directory
            .read()
            .map_err(|_| "the directory lock is poisoned".to_owned())?;
        dir.log_tree()
            .ok_or("no directory log")?
            .consistency_proof(old, new)
            .map_err(|e| format!("no consistency proof from {old}: {e}"))
    });
    let mut backoff = DIRECTORY_POLL;
    loop {
        let Some((cp, note)) = relay.directory_checkpoint() else {
            tokio::time::sleep(DIRECTORY_POLL).await;
            continue;
        };
        let done = w
            .witnessed
            .borrow()
            .as_ref()
            .is_some_and(|(c, _)| c.size >= cp.size);
        if done {
            tokio::time::sleep(DIRECTORY_POLL).await;
            continue;
        }
        let mut lines = witnesses.cosign_all(&proofs, &cp, &note).await;
        lines.truncate(w.policy.quorum);
        let full = format!("{note}{}", lines.concat());
        match w.policy.check(&full) {
            Ok(_) => {
                w.witnessed.send_replace(Some((cp, full)));
                backoff = DIRECTORY_POLL;
            }
            Err(e) => {
                tracing::warn!(size = cp.size, reason = %e, retry_in_ms = backoff.as_millis() as u64, "directory checkpoint not witnessed yet");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}
