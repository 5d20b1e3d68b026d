//! A download's checked pieces, held in memory for a reader that opens the envelope while it
//! arrives (`fetch -o`), so the ciphertext never goes through a scratch file: [`Arriving`]
//! reads at offsets and waits for a range until every piece of it has been checked against its
//! leaf, so nothing unchecked is ever decrypted. The reader lets go of what it has read for the
//! last time ([`ReadAt::release_below`]); while the pieces held reach [`WINDOW`] the download
//! waits, unless the reader is waiting for the very piece it brings (no deadlock, whatever the
//! reader's order). When the download ends without its last piece, the waiting reader fails
//! instead of waiting for ever; when the reader ends (its `Arriving` dropped: opened, failed or
//! panicked), pieces are no longer kept and the download goes on to its end (the receipt needs
//! the whole digest).

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::core::envelope::pieces::PIECE;
use crate::core::envelope::stream::{ReadAt, BATCH_CHUNKS, SLOT};

/// Bytes of checked pieces held for the reader before the download waits for it: the opener
/// reads two batches of chunks at a time (`core::envelope::pipeline`), plus the pieces either
/// end of them straddles.
pub const WINDOW: u64 = (2 * BATCH_CHUNKS * SLOT + 2 * PIECE) as u64;

/// Buffers of released pieces kept for the download to fill again.
const SPARE: usize = 4;

/// The checked pieces of a download, shared between the download (which adds them) and a
/// reader (which takes them).
#[derive(Debug, Default)]
pub struct Arrived {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct State {
    /// Checked pieces not yet released, in order and contiguous: (offset, bytes).
    pieces: VecDeque<(u64, Vec<u8>)>,
    /// Bytes from the start that have arrived checked.
    upto: u64,
    /// Everything below this offset has been read for the last time and let go.
    released: u64,
    /// The end of the furthest range a read has waited for.
    wanted: u64,
    /// Bytes held in `pieces`, and the most ever held.
    held: u64,
    peak: u64,
    /// The download was given up: every read fails from now on.
    over: bool,
    /// The reader ended: pieces are no longer kept.
    reader_gone: bool,
    spare: Vec<Vec<u8>>,
}

impl Arrived {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A checked piece at `at`, the next one in order: kept for the reader. Waits while the
    /// window is full and the reader does not need this piece yet.
    pub(crate) fn put(&self, at: u64, piece: Vec<u8>) {
        let end = at.saturating_add(piece.len() as u64);
        let mut s = self.lock();
        while !s.over && !s.reader_gone && end > s.released.saturating_add(WINDOW) && at >= s.wanted
        {
            s = self.changed.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        if !s.over && !s.reader_gone {
            s.held = s.held.saturating_add(piece.len() as u64);
            s.peak = s.peak.max(s.held);
            s.pieces.push_back((at, piece));
        }
        s.upto = s.upto.max(end);
        drop(s);
        self.changed.notify_all();
    }

    /// A buffer of a released piece, to be filled again.
    pub(crate) fn spare(&self) -> Option<Vec<u8>> {
        self.lock().spare.pop()
    }

    /// Nothing more will arrive (the fetch failed or was dropped): every read fails from now on.
    pub fn abandon(&self) {
        let mut s = self.lock();
        s.over = true;
        s.pieces.clear();
        s.held = 0;
        drop(s);
        self.changed.notify_all();
    }

    /// The reader ended (the envelope opened, or failed to): the rest is taken without being
    /// kept.
    pub fn reader_done(&self) {
        let mut s = self.lock();
        s.reader_gone = true;
        s.pieces.clear();
        s.held = 0;
        drop(s);
        self.changed.notify_all();
    }

    /// The most bytes of pieces ever held at once.
    #[cfg(test)]
    pub(crate) fn peak(&self) -> u64 {
        self.lock().peak
    }

    /// Copies `buf.len()` bytes from `offset` once they have all arrived checked.
    fn read(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let end = offset.saturating_add(buf.len() as u64);
        let mut s = self.lock();
        loop {
            // Given up: no more reads at all, even of what arrived (the fetch is gone, so the
            // opening is of no use to anyone).
            if s.over {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the envelope did not arrive whole",
                ));
            }
            if s.upto >= end {
                break;
            }
            if s.wanted < end {
                s.wanted = end;
                self.changed.notify_all();
            }
            s = self.changed.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        if offset < s.released || s.reader_gone {
            return Err(std::io::Error::other(
                "an envelope being opened read again what it had let go",
            ));
        }
        // Pieces are contiguous: the first one that ends past `offset` holds its first byte.
        let first = s
            .pieces
            .partition_point(|(at, p)| at + p.len() as u64 <= offset);
        let mut done = 0usize;
        for (at, piece) in s.pieces.range(first..) {
            if done == buf.len() {
                break;
            }
            let from = usize::try_from(offset + done as u64 - at).unwrap_or(usize::MAX);
            let Some(bytes) = piece.get(from..) else {
                break;
            };
            let n = bytes.len().min(buf.len() - done);
            buf[done..done + n].copy_from_slice(&bytes[..n]);
            done += n;
        }
        if done < buf.len() {
            return Err(std::io::Error::other(
                "an envelope being opened found a checked range missing",
            ));
        }
        Ok(())
    }

    /// Everything below `offset` has been read for the last time.
    fn release_below(&self, offset: u64) {
        let mut s = self.lock();
        s.released = s.released.max(offset);
        while let Some((at, p)) = s.pieces.front() {
            if at + p.len() as u64 > s.released {
                break;
            }
            let Some((_, p)) = s.pieces.pop_front() else {
                break;
            };
            s.held = s.held.saturating_sub(p.len() as u64);
            if s.spare.len() < SPARE {
                s.spare.push(p);
            }
        }
        drop(s);
        self.changed.notify_all();
    }
}

/// A download's ciphertext as its checked pieces arrive: `len` bytes in all.
pub struct Arriving {
    len: u64,
    arrived: Arc<Arrived>,
}

impl Arriving {
    pub fn new(len: u64, arrived: Arc<Arrived>) -> Self {
        Arriving { len, arrived }
    }
}

/// The reader is done with it (opened, failed, or even panicked): the download goes on to its
/// end without keeping pieces ([`Arrived::reader_done`]) instead of waiting for a reader that
/// is gone.
impl Drop for Arriving {
    fn drop(&mut self) {
        self.arrived.reader_done();
    }
}

impl ReadAt for Arriving {
    /// Fills `buf` (up to the end), once all of that range has arrived checked.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        let Some(left) = self.len.checked_sub(offset).filter(|&n| n > 0) else {
            return Ok(0);
        };
        let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
        self.arrived.read(&mut buf[..n], offset)?;
        Ok(n)
    }

    /// The whole envelope's length (not what has arrived so far).
    fn size(&self) -> std::io::Result<u64> {
        Ok(self.len)
    }

    fn release_below(&self, offset: u64) {
        self.arrived.release_below(offset);
    }
}
