//! Group commit: one thread owns the store's write transactions. Requests queue their write
//! operations; the thread takes everything queued (up to a cap) into one durable transaction,
//! so throughput is not one fsync per request, and answers each operation when it is durable.

use std::sync::mpsc;
use std::sync::Arc;

use tokio::sync::oneshot;

use crate::core::store::{OpResult, Store, WriteOp};
use crate::error::{Error, Result};

/// Most operations in one transaction.
pub const MAX_BATCH: usize = 1024;

type Job = (WriteOp, oneshot::Sender<Result<OpResult>>);

#[derive(Clone)]
pub struct Committer {
    tx: mpsc::Sender<Job>,
}

impl Committer {
    /// Starts the commit thread; with a `signer`, a checkpoint is signed after every batch.
    pub fn start(
        store: Arc<dyn Store>,
        signer: Option<Arc<super::checkpoints::Signer>>,
    ) -> Result<Self> {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("sealrelay-commit".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut jobs = vec![first];
                    while jobs.len() < MAX_BATCH {
                        match rx.try_recv() {
                            Ok(job) => jobs.push(job),
                            Err(_) => break,
                        }
                    }
                    let (ops, replies): (Vec<WriteOp>, Vec<_>) = jobs.into_iter().unzip();
                    match store.apply(&ops) {
                        Ok(results) => {
                            if let Some(signer) = &signer {
                                // A checkpoint attests what is already durable. It is signed
                                // before answering a batch that records receipts (their proofs
                                // need it), and otherwise at most about once a second; a
                                // failure is logged and retried with a later batch.
                                let receipts = ops.iter().any(|op| matches!(op, WriteOp::RecordReceipt { .. }));
                                if receipts || signer.is_stale(std::time::Duration::from_secs(1)) {
                                    if let Err(e) = signer.sign_current(store.as_ref()) {
                                        tracing::error!(error = %e, "could not write a checkpoint");
                                    }
                                }
                            }
                            for (reply, result) in replies.into_iter().zip(results) {
                                let _ = reply.send(Ok(result));
                            }
                        }
                        Err(e) => {
                            tracing::error!(error = %e, ops = ops.len(), "store commit failed; the batch is refused");
                            for reply in replies {
                                let _ = reply.send(Err(e.clone()));
                            }
                        }
                    }
                }
            })
            .map_err(|e| Error::internal(format!("cannot start the commit thread: {e}")))?;
        Ok(Committer { tx })
    }

    /// Queues `op` and waits until it is durable (or refused).
    pub async fn submit(&self, op: WriteOp) -> Result<OpResult> {
        let (reply, wait) = oneshot::channel();
        self.tx
            .send((op, reply))
            .map_err(|_| Error::new(crate::ErrorKind::Unavailable, "the store is shutting down"))?;
        wait.await.map_err(|_| {
            Error::new(
                crate::ErrorKind::Unavailable,
                "the store stopped before committing",
            )
        })?
    }
}
