//! A sealed envelope's ciphertext as the agent keeps it until the relay has it: in memory or in
//! an unnamed scratch file, read again from any piece to resume a submission.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Arc;

/// Where a sealing writes: in memory up to [`IN_MEMORY`] bytes, then rolled over into an
/// unnamed file in the scratch directory, whose errors name that directory.
pub(super) struct Keeping<'d> {
    spooled: tempfile::SpooledTempFile,
    dir: &'d Path,
}

impl<'d> Keeping<'d> {
    pub(super) fn in_dir(dir: &'d Path) -> Self {
        Keeping {
            spooled: tempfile::spooled_tempfile_in(IN_MEMORY, dir),
            dir,
        }
    }

    fn context(&self, e: std::io::Error) -> std::io::Error {
        std::io::Error::new(
            e.kind(),
            format!(
                "cannot keep the sealed envelope in a scratch file in {}: {e}",
                self.dir.display()
            ),
        )
    }

    /// What was written: still in memory, or in the scratch file.
    pub(super) fn kept(self) -> Ciphertext {
        match self.spooled.into_inner() {
            tempfile::SpooledData::InMemory(c) => {
                Ciphertext::Memory(std::io::Cursor::new(Arc::from(c.into_inner())))
            }
            tempfile::SpooledData::OnDisk(f) => Ciphertext::File(f),
        }
    }
}

impl Write for Keeping<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.spooled.write(buf).map_err(|e| self.context(e))
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.spooled.flush().map_err(|e| self.context(e))
    }
}

/// A sealed envelope's ciphertext, kept for sending (and sending again from a piece): in
/// memory when it is at most [`IN_MEMORY`] bytes (most of what agents send: no scratch file
/// made, written and removed for each), in an unnamed scratch file when longer.
pub(super) enum Ciphertext {
    Memory(std::io::Cursor<Arc<[u8]>>),
    File(std::fs::File),
}

/// Ciphertexts of at most this many bytes are kept in memory: one piece.
const IN_MEMORY: usize = crate::core::envelope::pieces::PIECE;

impl Read for Ciphertext {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Ciphertext::Memory(c) => c.read(buf),
            Ciphertext::File(f) => f.read(buf),
        }
    }
}

impl Seek for Ciphertext {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        match self {
            Ciphertext::Memory(c) => c.seek(pos),
            Ciphertext::File(f) => f.seek(pos),
        }
    }
}

/// Reads the ciphertext from its own offset, whatever a submission of it does.
pub(super) enum CiphertextReader {
    Memory(std::io::Cursor<Arc<[u8]>>),
    File { file: std::fs::File, at: u64 },
}

impl Read for CiphertextReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            CiphertextReader::Memory(c) => c.read(buf),
            CiphertextReader::File { file, at } => {
                let n = std::os::unix::fs::FileExt::read_at(file, buf, *at)?;
                *at += n as u64;
                Ok(n)
            }
        }
    }
}
