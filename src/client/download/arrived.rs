//! How far a download's scratch file holds checked ciphertext, for a reader that opens the
//! envelope while it arrives (`fetch -o`): [`Arriving`] reads the scratch file at offsets and
//! waits for a range until every piece of it has been checked against its leaf and written, so
//! nothing unchecked is ever decrypted. When the download ends without its last piece, the
//! waiting reader fails instead of waiting for ever.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Condvar, Mutex};

use crate::core::envelope::stream::ReadAt;

/// The checked prefix of a scratch file, shared between the download (which moves it on) and
/// a reader (which waits for it).
#[derive(Debug, Default)]
pub struct Arrived {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct State {
    /// Bytes from the start of the file that are checked and written.
    upto: u64,
    /// Given up: no more will arrive, and every read fails from now on.
    over: bool,
}

impl Arrived {
    /// Bytes up to `upto` are checked and written.
    pub(crate) fn advance(&self, upto: u64) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.upto = s.upto.max(upto);
        drop(s);
        self.changed.notify_all();
    }

    /// Nothing more will arrive (the fetch failed or was dropped): every read fails from now on.
    pub fn abandon(&self) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.over = true;
        drop(s);
        self.changed.notify_all();
    }

    /// Waits until bytes up to `end` are checked and written; an error once nothing more will
    /// arrive.
    fn wait_for(&self, end: u64) -> std::io::Result<()> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
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
                return Ok(());
            }
            s = self.changed.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// The scratch file of a download as its checked bytes arrive: `len` bytes in all.
pub struct Arriving {
    file: File,
    len: u64,
    arrived: Arc<Arrived>,
}

impl Arriving {
    pub fn new(file: File, len: u64, arrived: Arc<Arrived>) -> Self {
        Arriving { file, len, arrived }
    }
}

impl ReadAt for Arriving {
    /// Fills `buf` (up to the end), once all of that range has arrived checked.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        let Some(left) = self.len.checked_sub(offset).filter(|&n| n > 0) else {
            return Ok(0);
        };
        let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
        self.arrived.wait_for(offset + n as u64)?;
        FileExt::read_exact_at(&self.file, &mut buf[..n], offset).map_err(|e| {
            std::io::Error::new(e.kind(), format!("cannot read the scratch file: {e}"))
        })?;
        Ok(n)
    }

    /// The whole envelope's length (not what has arrived so far).
    fn size(&self) -> std::io::Result<u64> {
        Ok(self.len)
    }
}
