//! Ciphertext blobs as files: written under a temporary name, fsynced, renamed into
//! `blobs/<envelope id hex>`, and the directory fsynced, before the state commit that makes the
//! envelope visible. A blob with no envelope record (a crash between the two) is swept at start.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::ids::EnvelopeId;
use crate::local::fs::sync_dir;

#[derive(Clone)]
pub struct BlobDir {
    dir: PathBuf,
    tmp: PathBuf,
}

/// A blob being written.
pub struct BlobWriter {
    file: File,
    tmp_path: PathBuf,
    done: bool,
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

    pub fn path(&self, id: &EnvelopeId) -> PathBuf {
        self.dir.join(id.to_hex())
    }

    pub fn create(&self, id: &EnvelopeId) -> Result<BlobWriter> {
        let tmp_path = self.tmp.join(id.to_hex());
        let file = File::options()
            .write(true)
            .create_new(true)
            .mode(crate::local::fs::PRIVATE_MODE)
            .open(&tmp_path)
            .map_err(|e| Error::storing("cannot create a blob", e))?;
        Ok(BlobWriter {
            file,
            tmp_path,
            done: false,
        })
    }

    /// Fsyncs and moves a finished blob into place (durable before it returns).
    pub fn commit(&self, mut w: BlobWriter, id: &EnvelopeId) -> Result<()> {
        w.file
            .flush()
            .map_err(|e| Error::storing("cannot write a blob", e))?;
        w.file
            .sync_all()
            .map_err(|e| Error::storing("cannot sync a blob", e))?;
        fs::rename(&w.tmp_path, self.path(id))
            .map_err(|e| Error::storing("cannot place a blob", e))?;
        w.done = true;
        sync_dir(&self.dir)
    }

    pub fn remove(&self, id: &EnvelopeId) {
        let _ = fs::remove_file(self.path(id));
    }

    /// Removes blobs that no envelope record references.
    pub fn sweep(&self, live: &HashSet<EnvelopeId>) -> Result<usize> {
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

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.file.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_file(&self.tmp_path);
        }
    }
}
