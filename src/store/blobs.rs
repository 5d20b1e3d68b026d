//! Where ciphertexts larger than an inline body live ([`BlobStore`]): files in the data
//! directory ([`BlobDir`], the embedded default) or pieces in PostgreSQL
//! (`store::postgres::blobs`). Either way a blob is written piece by piece as the upload
//! arrives, made durable before the record that names it commits, and read back piece by piece:
//! never a whole envelope in memory. The calls block (file or database I/O): async callers run
//! them on a blocking executor (the relay's handlers through `Cx`, its shell on tokio's pool).
//!
//! Files are written under a temporary name, fsynced, renamed into `blobs/<envelope id hex>`,
//! and the directory fsynced. A file with no envelope record (a crash between the two) is swept
//! at start.

use std::fs::{self, File};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::core::store::Store;
use crate::error::{Error, Result};
use crate::ids::EnvelopeId;
use crate::local::fs::sync_dir;

/// The bytes of a blob read or written at a time: one piece of the ciphertext's piece tree.
pub const PIECE: usize = crate::core::envelope::pieces::PIECE;

/// A store of large ciphertexts, keyed by envelope id.
pub trait BlobStore: Send + Sync {
    /// Starts the blob of `id`. Nothing of it is readable until [`BlobWriter::commit`]; a
    /// writer dropped before that leaves nothing behind.
    fn create(&self, id: &EnvelopeId) -> Result<Box<dyn BlobWriter>>;
    /// The committed blob of `id`, if there is one.
    fn open(&self, id: &EnvelopeId) -> Result<Option<Box<dyn BlobReader>>>;
    /// Deletes the blob of `id` (best effort: a leftover is swept later).
    fn remove(&self, id: &EnvelopeId);
    /// At start: removes blobs that no envelope in `store` names. Returns how many went.
    fn sweep_at_start(&self, store: &dyn Store) -> Result<usize>;
    /// Now and then while serving: removes what is safe to remove while uploads run (files
    /// keep this to the start; database pieces untouched for long go).
    fn sweep_idle(&self) -> Result<usize> {
        Ok(0)
    }
}

/// A blob being written, in pieces of at most [`PIECE`] bytes.
pub trait BlobWriter: Send {
    fn write(&mut self, bytes: &[u8]) -> Result<()>;
    /// Makes the blob durable and readable under its id (before the caller commits the
    /// envelope record that names it).
    fn commit(self: Box<Self>) -> Result<()>;
}

/// A committed blob, read in pieces.
pub trait BlobReader: Send {
    /// Replaces `buf` with the next piece (at most [`PIECE`] bytes); empty at the end.
    fn read(&mut self, buf: &mut Vec<u8>) -> Result<()>;
    /// To piece `index` (byte `index ×` [`PIECE`]): the next [`read`](Self::read) returns it.
    fn seek_piece(&mut self, index: u64) -> Result<()>;
    /// What was written after the first `length` bytes (the ciphertext's piece list), at most
    /// `max + 1` bytes of it (so that a longer one shows); then the reader is at the first piece.
    fn trailer(&mut self, length: u64, max: usize) -> Result<Vec<u8>>;
}

/// Blob files in the data directory.
#[derive(Clone)]
pub struct BlobDir {
    dir: PathBuf,
    tmp: PathBuf,
}

/// A blob file being written.
struct FileWriter {
    file: File,
    tmp_path: PathBuf,
    dir: BlobDir,
    id: EnvelopeId,
    done: bool,
    /// Bytes written so far, and how far the kernel was asked to start writing them out.
    written: u64,
    handed_over: u64,
    /// The ranges given to the kernel, as (offset, length): what the tests check.
    #[cfg(test)]
    handed: Vec<(u64, u64)>,
}

/// A blob's pages are handed to the kernel's writeback every this many bytes while it is
/// written, so that the fsync of [`BlobWriter::commit`] finds little left to write: without it,
/// a 256 MiB upload waited 126 ms at the end for the whole file to reach the disk, with the
/// network and the CPU idle (docs/benchmarks.md).
const WRITEBACK_EVERY: u64 = 8 << 20;

struct FileReader {
    file: File,
}

impl BlobDir {
    pub fn open(data: &Path) -> Result<Self> {
        let dir = data.join("blobs");
        let tmp = data.join("blobs.tmp");
        for d in [&dir, &tmp] {
            fs::create_dir_all(d)
                .map_err(|e| Error::io(format!("cannot create {}: {e}", d.display())))?;
            crate::local::fs::restrict(d, crate::local::fs::PRIVATE_DIR_MODE)?;
        }
        // Temporary blobs are from uploads that never committed.
        for item in fs::read_dir(&tmp)
            .map_err(|e| Error::io(format!("cannot list {}: {e}", tmp.display())))?
            .flatten()
        {
            let _ = fs::remove_file(item.path());
        }
        Ok(BlobDir { dir, tmp })
    }

    fn path(&self, id: &EnvelopeId) -> PathBuf {
        self.dir.join(id.to_hex())
    }

    fn writer(&self, id: &EnvelopeId) -> Result<FileWriter> {
        let tmp_path = self.tmp.join(id.to_hex());
        let file = File::options()
            .write(true)
            .create_new(true)
            .mode(crate::local::fs::PRIVATE_MODE)
            .open(&tmp_path)
            .map_err(|e| Error::storing("cannot create a blob", e))?;
        Ok(FileWriter {
            file,
            tmp_path,
            dir: self.clone(),
            id: *id,
            done: false,
            written: 0,
            handed_over: 0,
            #[cfg(test)]
            handed: Vec::new(),
        })
    }
}

impl BlobStore for BlobDir {
    fn create(&self, id: &EnvelopeId) -> Result<Box<dyn BlobWriter>> {
        Ok(Box::new(self.writer(id)?))
    }

    fn open(&self, id: &EnvelopeId) -> Result<Option<Box<dyn BlobReader>>> {
        match File::open(self.path(id)) {
            Ok(file) => Ok(Some(Box::new(FileReader { file }))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(format!("cannot open a blob: {e}"))),
        }
    }

    fn remove(&self, id: &EnvelopeId) {
        let _ = fs::remove_file(self.path(id));
    }

    fn sweep_at_start(&self, store: &dyn Store) -> Result<usize> {
        let live: std::collections::HashSet<EnvelopeId> =
            store.envelope_ids()?.into_iter().collect();
        let mut removed = 0;
        for item in fs::read_dir(&self.dir)
            .map_err(|e| Error::io(format!("cannot list blobs: {e}")))?
            .flatten()
        {
            let name = item.file_name();
            let keep = crate::ids::parse_hex::<16>(&name.to_string_lossy())
                .is_ok_and(|id| live.contains(&EnvelopeId(id)));
            if !keep {
                let _ = fs::remove_file(item.path());
                removed += 1;
            }
        }
        Ok(removed)
    }
}

impl BlobWriter for FileWriter {
    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.file
            .write_all(bytes)
            .map_err(|e| Error::storing("cannot write a blob", e))?;
        self.written += bytes.len() as u64;
        if let Some((at, len)) = writeback_due(self.handed_over, self.written) {
            self.start_writeback(at, len);
        }
        Ok(())
    }

    /// Fsyncs and moves the finished file into place (durable before it returns).
    fn commit(mut self: Box<Self>) -> Result<()> {
        self.file
            .sync_all()
            .map_err(|e| Error::storing("cannot sync a blob", e))?;
        let placed = self.dir.path(&self.id);
        fs::rename(&self.tmp_path, &placed)
            .map_err(|e| Error::storing("cannot place a blob", e))?;
        self.done = true;
        sync_dir(&self.dir.dir).inspect_err(|_| {
            // Not known to be durable: no blob without its record.
            let _ = fs::remove_file(&placed);
        })
    }
}

/// The range to hand to the kernel's writeback, once [`WRITEBACK_EVERY`] bytes were written
/// since the last one ended at `handed_over`: all of them, never an empty range (which
/// `fadvise` would take as "to the end of the file").
fn writeback_due(handed_over: u64, written: u64) -> Option<(u64, std::num::NonZeroU64)> {
    let len = written.checked_sub(handed_over)?;
    if len < WRITEBACK_EVERY {
        return None;
    }
    std::num::NonZeroU64::new(len).map(|len| (handed_over, len))
}

impl FileWriter {
    /// Asks the kernel to start writing out `len` bytes from `at`, without waiting for it. On
    /// Linux `POSIX_FADV_DONTNEED` starts the writeback of the range's dirty pages (as
    /// `sync_file_range(SYNC_FILE_RANGE_WRITE)` would, which rustix does not offer) and drops
    /// from the page cache those of its pages already written out; a download soon after may
    /// read some pieces from the disk instead of memory. Advice only: durability is still the
    /// fsync in [`BlobWriter::commit`] (a failed writeback is reported there, on this file), and
    /// an error here changes nothing.
    fn start_writeback(&mut self, at: u64, len: std::num::NonZeroU64) {
        let _ = rustix::fs::fadvise(&self.file, at, Some(len), rustix::fs::Advice::DontNeed);
        #[cfg(test)]
        self.handed.push((at, len.get()));
        self.handed_over = at.saturating_add(len.get());
    }
}

impl Drop for FileWriter {
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_file(&self.tmp_path);
        }
    }
}

impl BlobReader for FileReader {
    fn read(&mut self, buf: &mut Vec<u8>) -> Result<()> {
        buf.clear();
        buf.resize(PIECE, 0);
        let mut filled = 0;
        // Whole pieces, as far as the file goes.
        while filled < PIECE {
            match self.file.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io(format!("cannot read a blob: {e}"))),
            }
        }
        buf.truncate(filled);
        Ok(())
    }

    fn seek_piece(&mut self, index: u64) -> Result<()> {
        let at = index
            .checked_mul(PIECE as u64)
            .ok_or_else(|| Error::bad_input("a piece past any blob"))?;
        self.file
            .seek(std::io::SeekFrom::Start(at))
            .map(|_| ())
            .map_err(|e| Error::io(format!("cannot read a blob: {e}")))
    }

    fn trailer(&mut self, length: u64, max: usize) -> Result<Vec<u8>> {
        self.file
            .seek(std::io::SeekFrom::Start(length))
            .map_err(|e| Error::io(format!("cannot read a blob: {e}")))?;
        let mut out = Vec::new();
        (&mut self.file)
            .take((max as u64).saturating_add(1))
            .read_to_end(&mut out)
            .map_err(|e| Error::io(format!("cannot read a blob: {e}")))?;
        self.seek_piece(0)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The writeback hint is handed every [`WRITEBACK_EVERY`] bytes, covers exactly what was
    /// written since the last one, and changes nothing of what is stored.
    #[test]
    fn writeback_is_handed_over_in_steps_and_the_blob_stays_byte_exact() {
        let dir = tempfile::tempdir().expect("tempdir");
        let blobs = BlobDir::open(dir.path()).expect("blob dir");
        let id = EnvelopeId([7; 16]);
        let mut w = blobs.writer(&id).expect("writer");
        let step = WRITEBACK_EVERY as usize;
        let total = 2 * step + PIECE + 5;
        let data: Vec<u8> = (0..total).map(|i| (i % 251) as u8).collect();
        let mut marks = Vec::new();
        for chunk in data.chunks(PIECE) {
            w.write(chunk).expect("write");
            marks.push(w.handed_over);
        }
        // The ranges the writer gave the kernel follow each other from the start, with no gap
        // and no overlap, each a whole step.
        assert_eq!(
            w.handed,
            vec![(0, WRITEBACK_EVERY), (WRITEBACK_EVERY, WRITEBACK_EVERY)]
        );
        assert_eq!(writeback_due(5, 5), None);
        assert_eq!(writeback_due(6, 5), None);
        assert_eq!(w.written, total as u64);
        let pieces_per_step = step / PIECE;
        // Nothing handed over before the first step is full; then exactly the steps.
        assert!(marks[..pieces_per_step - 1].iter().all(|m| *m == 0));
        assert_eq!(marks[pieces_per_step - 1], WRITEBACK_EVERY);
        assert_eq!(marks[2 * pieces_per_step - 1], 2 * WRITEBACK_EVERY);
        assert_eq!(*marks.last().expect("marks"), 2 * WRITEBACK_EVERY);
        Box::new(w).commit().expect("commit");
        let mut reader = blobs.open(&id).expect("open").expect("committed");
        let (mut back, mut buf) = (Vec::new(), Vec::new());
        loop {
            reader.read(&mut buf).expect("read");
            if buf.is_empty() {
                break;
            }
            back.extend_from_slice(&buf);
        }
        assert!(
            back == data,
            "the blob read back differs from what was written"
        );
    }
}
