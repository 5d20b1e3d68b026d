//! Group commit: one thread owns the store's write transactions. Requests queue their write
//! operations; the thread takes everything queued (up to a cap) into one durable transaction,
//! so throughput is not one fsync per request, and answers each operation when it is durable.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::core::store::{OpResult, Store, WriteOp, WriteRefusal};
use crate::error::{Error, Result};

use super::refusal::Refusal;

/// Most operations in one transaction.
pub const MAX_BATCH: usize = 1024;
/// With nothing to commit for this long, the thread checkpoints what is not yet covered.
const IDLE_SIGN: std::time::Duration = std::time::Duration::from_secs(1);

type Reply = oneshot::Sender<Result<OpResult>>;
type Job = (WriteOp, Reply);

enum Message {
    Write(Box<Job>),
    /// Finish what is queued, then end the thread (and release the store).
    Stop,
}

#[derive(Clone)]
pub struct Committer {
    tx: mpsc::Sender<Message>,
    /// Whether the commit loop is running (`/readyz`).
    running: Arc<AtomicBool>,
    /// Resolved when the commit loop has ended and released the store.
    ended: Arc<Mutex<Option<oneshot::Receiver<()>>>>,
}

/// The commit loop, to be run on a thread of its own by the shell (`CommitLoop::run`).
pub struct CommitLoop {
    rx: mpsc::Receiver<Message>,
    store: Arc<dyn Store>,
    signer: Option<Arc<super::checkpoints::Signer>>,
    running: Arc<AtomicBool>,
    ended: oneshot::Sender<()>,
}

/// Ends the loop however it ends (a panic included), in this order: marked as not running, the
/// store and signer released, and only then `stop` told (it waits until the store is free).
struct Ending {
    running: Arc<AtomicBool>,
    store: Option<Arc<dyn Store>>,
    signer: Option<Arc<super::checkpoints::Signer>>,
    ended: Option<oneshot::Sender<()>>,
}

impl Drop for Ending {
    fn drop(&mut self) {
        self.running.store(false, Ordering::SeqCst);
        self.store.take();
        self.signer.take();
        if let Some(ended) = self.ended.take() {
            let _ = ended.send(());
        }
    }
}

impl Committer {
    /// The committer and its loop; with a `signer`, a checkpoint is signed after every batch.
    /// Nothing commits until the shell runs the loop.
    pub fn new(
        store: Arc<dyn Store>,
        signer: Option<Arc<super::checkpoints::Signer>>,
    ) -> (Self, CommitLoop) {
        let (tx, rx) = mpsc::channel::<Message>();
        let (ended_tx, ended_rx) = oneshot::channel();
        let running = Arc::new(AtomicBool::new(true));
        let committer = Committer {
            tx,
            running: running.clone(),
            ended: Arc::new(Mutex::new(Some(ended_rx))),
        };
        let commit_loop = CommitLoop {
            rx,
            store,
            signer,
            running,
            ended: ended_tx,
        };
        (committer, commit_loop)
    }

    /// Whether the commit loop is running (`/readyz`).
    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::SeqCst)
    }

    /// Commits what is queued, ends the commit loop and waits for it (it holds the store).
    pub async fn stop(&self) {
        let _ = self.tx.send(Message::Stop);
        let ended = self.ended.lock().ok().and_then(|mut t| t.take());
        if let Some(ended) = ended {
            let _ = ended.await;
        }
    }

    /// Commits one write with its event; maps the store's refusals to wire errors.
    pub async fn commit(&self, op: WriteOp) -> std::result::Result<u64, Refusal> {
        match self.submit(op).await? {
            Ok(index) => Ok(index),
            Err(refusal) => Err(Refusal::from_write(&refusal)),
        }
    }

    /// [`commit`](Self::commit), keeping a refusal by the store's rules (which wrote nothing)
    /// apart from a failure (after which what was written may be unknown).
    pub async fn commit_or_refusal(&self, op: WriteOp) -> std::result::Result<OpResult, Refusal> {
        Ok(self.submit(op).await?)
    }

    /// Queues `op` and waits until it is durable (or refused).
    pub async fn submit(&self, op: WriteOp) -> Result<OpResult> {
        let (reply, wait) = oneshot::channel();
        self.tx
            .send(Message::Write(Box::new((op, reply))))
            .map_err(|_| Error::new(crate::ErrorKind::Unavailable, "the store is shutting down"))?;
        wait.await.map_err(|_| {
            Error::new(
                crate::ErrorKind::Unavailable,
                "the store stopped before committing",
            )
        })?
    }
}

impl CommitLoop {
    /// Takes everything queued (up to [`MAX_BATCH`]) into one durable transaction and answers
    /// each operation when it is durable, until stopped; then releases the store.
    pub fn run(self) {
        let CommitLoop {
            rx,
            store,
            signer,
            running,
            ended,
        } = self;
        // `ending` holds the loop's own references; the ones below are declared after it, so an
        // unwind drops them first and `ending` last.
        let ending = Ending {
            running,
            store: Some(store),
            signer,
            ended: Some(ended),
        };
        let Some(store) = ending.store.clone() else {
            return;
        };
        let signer = ending.signer.clone();
        let mut stopping = false;
        while !stopping {
            let first = match rx.recv_timeout(IDLE_SIGN) {
                Ok(Message::Write(first)) => first,
                Ok(Message::Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    // Idle: cover what the last batches appended (they may have been signed
                    // less than a second apart, or a signing may have failed), so no entry
                    // waits for the next write to be checkpointed.
                    if let Some(signer) = &signer {
                        if let Err(e) = signer.sign_current(store.as_ref()) {
                            tracing::error!(error = %e, "could not write a checkpoint");
                        }
                    }
                    continue;
                }
            };
            let mut jobs = vec![*first];
            while jobs.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(Message::Write(job)) => jobs.push(*job),
                    Ok(Message::Stop) => {
                        stopping = true;
                        break;
                    }
                    Err(_) => break,
                }
            }
            let (ops, replies) = held_back(store.as_ref(), jobs);
            if ops.is_empty() {
                continue;
            }
            match store.apply(&ops) {
                Ok(results) => {
                    if let Some(signer) = &signer {
                        // A checkpoint attests what is already durable. It is signed before
                        // answering a batch that records receipts (their proofs need it), and
                        // otherwise at most about once a second; a failure is logged and
                        // retried with a later batch.
                        let receipts = ops
                            .iter()
                            .any(|op| matches!(op, WriteOp::RecordReceipt { .. }));
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
        // The store is released before anyone waiting on `stop` goes on (`Ending`, on a panic
        // too).
        drop(store);
        drop(signer);
        drop(ending);
    }
}

/// The free-space reserve holds back the batch's writes that add data (refused with
/// [`WriteRefusal::StorageReserve`]: nothing of them is written); what revokes, closes, records
/// or frees goes on in the same batch, so that a nearly full disk never blocks a revocation,
/// however many submissions arrive beside it.
///
/// The batch's own new data counts (`WriteOp::bytes_added`): when all of it would eat into the
/// reserve, the longest run of its writes that adds data and fits goes on, in order, and the
/// rest is held back; a batch that ran the disk out of space would fail whole, the
/// revocations and receipts the reserve is there for with it.
fn held_back(store: &dyn Store, jobs: Vec<Job>) -> (Vec<WriteOp>, Vec<Reply>) {
    // What the writes that add data would put on disk, each with those before it.
    let mut sums = Vec::new();
    let mut total = 0u64;
    for (op, _) in &jobs {
        if op.adds_data() {
            total = total.saturating_add(op.bytes_added());
            sums.push(total);
        }
    }
    // How many of them fit (ensure_room(sums[k - 1]) holds for k and not after).
    let fitting = match sums.last() {
        None => 0,
        Some(&all) if store.ensure_room(all).is_ok() => sums.len(),
        Some(_) => sums.partition_point(|&n| store.ensure_room(n).is_ok()),
    };
    if fitting < sums.len() {
        let why = store
            .ensure_room(sums[fitting])
            .err()
            .map(|e| e.message().to_owned())
            .unwrap_or_default();
        tracing::error!(error = %why, held_back = sums.len() - fitting, "the data directory is under its reserve: new data is refused until space is freed");
    }
    let mut kept = (
        Vec::with_capacity(jobs.len()),
        Vec::with_capacity(jobs.len()),
    );
    let mut adding = 0usize;
    for (op, reply) in jobs {
        if op.adds_data() {
            adding += 1;
            if adding > fitting {
                let _ = reply.send(Ok(Err(WriteRefusal::StorageReserve)));
                continue;
            }
        }
        kept.0.push(op);
        kept.1.push(reply);
    }
    kept
}

#[cfg(test)]
mod tests;
