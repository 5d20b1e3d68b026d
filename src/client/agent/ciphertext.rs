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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// What a sealing wrote reads back whole, from any offset again after a seek (a resumed
    /// submission), and through `CiphertextReader` without moving the sender's offset: in
    /// memory up to a piece, from the scratch file past it.
    #[test]
    fn kept_bytes_read_back_from_any_offset_in_memory_and_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        for len in [0, 1, 1234, IN_MEMORY, IN_MEMORY + 1, 3 * IN_MEMORY + 17] {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let mut keeping = Keeping::in_dir(dir.path());
            for part in bytes.chunks(1000) {
                keeping.write_all(part).unwrap();
            }
            keeping.flush().unwrap();
            let mut kept = keeping.kept();
            assert_eq!(
                matches!(kept, Ciphertext::Memory(_)),
                len <= IN_MEMORY,
                "{len} bytes kept in the wrong place"
            );
            for from in [0, len / 2, len] {
                kept.seek(SeekFrom::Start(from as u64)).unwrap();
                let mut again = Vec::new();
                kept.read_to_end(&mut again).unwrap();
                assert!(again == bytes[from..], "{len} bytes, read from {from}");
            }
            // A reader of its own from the start, whatever offset the sender's copy is at.
            kept.seek(SeekFrom::Start(0)).unwrap();
            let mut reader = match &kept {
                Ciphertext::Memory(c) => {
                    CiphertextReader::Memory(std::io::Cursor::new(c.get_ref().clone()))
                }
                Ciphertext::File(f) => CiphertextReader::File {
                    file: f.try_clone().unwrap(),
                    at: 0,
                },
            };
            let mut first = [0u8; 1];
            let _ = kept.read(&mut first).unwrap();
            let mut whole = Vec::new();
            reader.read_to_end(&mut whole).unwrap();
            assert!(whole == bytes, "{len} bytes through a reader");
        }
    }
}
