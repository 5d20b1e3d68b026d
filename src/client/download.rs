//! Receiving a fetched envelope's body (docs/protocol.md, `Fetch`): first the piece list,
//! checked once against the digest the agent (or source) signed; then each piece, checked
//! against its leaf as it arrives and kept by a blocking thread while the next piece is read:
//! written at its place in a scratch file (in memory for a small envelope:
//! [`Download::in_memory`]), or, for a reader that opens the envelope while it
//! arrives ([`Download::arriving`]), held in memory until that reader has read it
//! ([`Arriving`]: the checked bytes only). Nothing unchecked is ever kept, so a transfer that
//! breaks resumes from the first piece not yet kept ([`Download::next`]), byte-exact, and a
//! piece that does not match stops it at once.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::core::envelope::pieces::{self, Pieces};
use crate::error::{Error, ErrorKind, Result};

mod arrived;
pub use arrived::{Arrived, Arriving};

/// The longest envelope [`Download::in_memory`] holds: one piece.
pub const IN_MEMORY: usize = pieces::PIECE;

/// Where a download keeps its checked ciphertext when no reader takes it as it arrives.
pub enum Kept {
    File(File),
    Memory(Vec<u8>),
}

/// A body being received, possibly over several streams.
pub struct Download {
    /// Where the pieces go when no reader takes them as they arrive.
    scratch: Option<Kept>,
    length: u64,
    /// The signed digest, when the header gave one to check against; without it the list is
    /// taken as it comes (an envelope already judged undecryptable: its receipt names what came).
    root: Option<[u8; 32]>,
    pieces: Option<Pieces>,
    next: u64,
    /// Given each checked piece, for a reader opening the envelope meanwhile.
    arrived: Option<Arc<Arrived>>,
}

/// How one stream's share of the body ended.
#[derive(Debug)]
pub enum Taken {
    /// Every piece arrived and matched.
    Complete,
    /// The stream broke (or the relay reset it) after [`Download::next`] good pieces: ask again
    /// from there.
    Broken(Error),
    /// The list or a piece does not match the signed digest: nothing of it was written.
    Altered(String),
    /// The relay found a stored piece damaged and stopped before sending it.
    Damaged,
}

impl Download {
    /// Into a scratch file, read once the download is complete ([`Download::into_kept`]).
    pub fn new(scratch: File, length: u64, root: Option<[u8; 32]>) -> Self {
        Download {
            scratch: Some(Kept::File(scratch)),
            length,
            root,
            pieces: None,
            next: 0,
            arrived: None,
        }
    }

    /// To a reader that opens the envelope while it arrives, its checked pieces held in memory
    /// until read (no scratch file): `root` is the signed digest, which this needs.
    pub fn arriving(length: u64, root: [u8; 32], arrived: Arc<Arrived>) -> Self {
        Download {
            scratch: None,
            length,
            root: Some(root),
            pieces: None,
            next: 0,
            arrived: Some(arrived),
        }
    }

    /// Whether every piece has arrived and matched.
    pub fn complete(&self) -> bool {
        self.pieces.is_some() && self.next == pieces::count(self.length)
    }

    /// The pieces checked and written so far: where a resumed fetch starts.
    pub fn next(&self) -> u64 {
        self.next
    }

    /// The piece list's root: the digest of what was received (once the list has arrived).
    pub fn root(&self) -> Option<[u8; 32]> {
        self.pieces.as_ref().map(Pieces::root)
    }

    /// Into memory, for an envelope of at most [`IN_MEMORY`] bytes (a longer one is refused):
    /// a round trip's envelope then costs no file made and removed.
    pub fn in_memory(length: u64, root: Option<[u8; 32]>) -> Result<Self> {
        let n = usize::try_from(length)
            .ok()
            .filter(|&n| n <= IN_MEMORY)
            .ok_or_else(|| Error::internal("an envelope too long to be held in memory"))?;
        Ok(Download {
            scratch: Some(Kept::Memory(vec![0; n])),
            length,
            root,
            pieces: None,
            next: 0,
            arrived: None,
        })
    }

    /// What holds the ciphertext, once the download is complete (none when a reader took the
    /// pieces).
    pub fn into_kept(self) -> Option<Kept> {
        self.complete().then_some(self.scratch).flatten()
    }

    /// Reads the body of a reply to a fetch from piece [`next`](Self::next): the piece list,
    /// then the pieces from there on.
    pub async fn take<R: AsyncRead + Unpin>(&mut self, recv: &mut R) -> Result<Taken> {
        let mut list = vec![0u8; pieces::leaves_bytes(self.length)?];
        if let Err(e) = recv.read_exact(&mut list).await {
            return Ok(broken(&e));
        }
        match &self.pieces {
            // A resumed stream must send the same list.
            Some(had) if had.to_bytes() != list => {
                return Ok(Taken::Altered(
                    "the piece list changed between two parts of one transfer".into(),
                ))
            }
            Some(_) => {}
            None => {
                let root = self.root.unwrap_or_else(|| pieces::root(&leaves_of(&list)));
                match Pieces::checked(&list, self.length, &root) {
                    Ok(p) => self.pieces = Some(p),
                    Err(e) => return Ok(Taken::Altered(e.message().to_owned())),
                }
            }
        }
        let tree = self.pieces.clone().unwrap_or_default();
        let scratch = self.scratch.take();
        let arrived = self.arrived.clone();
        if scratch.is_none() && arrived.is_none() {
            return Err(Error::internal(
                "a download with nowhere to keep its pieces",
            ));
        }
        // The thread checks and keeps; this task reads ahead of it by at most two pieces.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(u64, Vec<u8>)>(2);
        let (spare_tx, mut spare_rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
        let writer = tokio::task::spawn_blocking(move || {
            let mut scratch = scratch;
            let mut good = None;
            while let Some((index, piece)) = rx.blocking_recv() {
                if let Err(e) = tree.check(index, &piece) {
                    return (scratch, good, Some(Ok(e.message().to_owned())));
                }
                let at = index.saturating_mul(pieces::PIECE as u64);
                match (&mut scratch, &arrived) {
                    // Pieces come in order from the first one missing: the reader gets them
                    // in order (and the download waits while it holds enough).
                    (_, Some(a)) => a.put(at, piece),
                    (Some(Kept::File(file)), None) => {
                        if let Err(e) = file.write_all_at(&piece, at) {
                            let e = Error::io(format!("cannot write the scratch file: {e}"));
                            return (scratch, good, Some(Err(e)));
                        }
                        let _ = spare_tx.send(piece);
                    }
                    (Some(Kept::Memory(held)), None) => {
                        let place = usize::try_from(at)
                            .ok()
                            .and_then(|at| held.get_mut(at..at.checked_add(piece.len())?));
                        let Some(place) = place else {
                            let e = Error::internal("a piece past the envelope's end");
                            return (scratch, good, Some(Err(e)));
                        };
                        place.copy_from_slice(&piece);
                        let _ = spare_tx.send(piece);
                    }
                    (None, None) => {}
                }
                good = Some(index);
            }
            (scratch, good, None)
        });
        let count = pieces::count(self.length);
        let mut cut = None;
        for index in self.next..count {
            let mut buf = match &self.arrived {
                Some(a) => a.spare(),
                None => spare_rx.try_recv().ok(),
            }
            .unwrap_or_default();
            buf.resize(pieces::piece_len(self.length, index), 0);
            if let Err(e) = recv.read_exact(&mut buf).await {
                cut = Some(broken(&e));
                break;
            }
            if tx.send((index, buf)).await.is_err() {
                // The thread stopped on a bad piece or a failed write: reported below.
                break;
            }
        }
        drop(tx);
        let (scratch, good, failed) = writer
            .await
            .map_err(|_| Error::internal("the scratch writer failed"))?;
        self.scratch = scratch;
        if let Some(good) = good {
            self.next = good + 1;
        }
        match failed {
            Some(Ok(altered)) => return Ok(Taken::Altered(altered)),
            Some(Err(e)) => return Err(e),
            None => {}
        }
        Ok(cut.unwrap_or(Taken::Complete))
    }
}

fn leaves_of(list: &[u8]) -> Vec<[u8; 32]> {
    list.chunks_exact(pieces::LEAF)
        .map(|c| {
            let mut h = [0u8; 32];
            h.copy_from_slice(c);
            h
        })
        .collect()
}

/// A read that failed: the relay's damaged-piece reset, or a broken transfer.
fn broken(e: &std::io::Error) -> Taken {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<quinn::ReadError>())
    {
        Some(quinn::ReadError::Reset(code))
            if code.into_inner() == u64::from(crate::core::wire::RESET_DAMAGED) =>
        {
            return Taken::Damaged
        }
        Some(quinn::ReadError::ConnectionLost(c)) => {
            return Taken::Broken(super::connection::connection_error(c))
        }
        _ => {}
    }
    let message = match e.kind() {
        std::io::ErrorKind::UnexpectedEof => {
            "the relay closed the stream before the whole envelope arrived".to_owned()
        }
        _ => format!("relay connection failed: {e}"),
    };
    Taken::Broken(Error::new(ErrorKind::Unavailable, message))
}

#[cfg(test)]
mod tests;
