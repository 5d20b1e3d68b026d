//! Durable, careful file access: capped reads, private files that must not be group or world
//! readable, and atomic writes (temporary file, fsync, rename or link, fsync of the directory).

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind as IoKind, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// Mode of files holding private keys.
pub const PRIVATE_MODE: u32 = 0o600;
/// Mode of public files.
pub const PUBLIC_MODE: u32 = 0o644;

fn io_error(path: &Path, action: &str, e: &std::io::Error) -> Error {
    match e.kind() {
        IoKind::NotFound => {
            Error::not_found(format!("{} does not exist: check the path", path.display()))
        }
        IoKind::PermissionDenied => Error::io(format!(
            "cannot {action} {}: permission denied",
            path.display()
        )),
        IoKind::AlreadyExists => Error::conflict(format!(
            "{} already exists: choose another path or remove it first",
            path.display()
        )),
        _ => Error::io(format!("cannot {action} {}: {e}", path.display())),
    }
}

/// Reads a whole small file, refusing anything over `cap` bytes.
pub fn read_capped(path: &Path, cap: usize) -> Result<Vec<u8>> {
    let file = File::open(path).map_err(|e| io_error(path, "read", &e))?;
    let meta = file.metadata().map_err(|e| io_error(path, "read", &e))?;
    if meta.is_dir() {
        return Err(Error::bad_input(format!(
            "{} is a directory, not a file",
            path.display()
        )));
    }
    let mut out = Vec::new();
    let limit = u64::try_from(cap).unwrap_or(u64::MAX).saturating_add(1);
    file.take(limit)
        .read_to_end(&mut out)
        .map_err(|e| io_error(path, "read", &e))?;
    if out.len() > cap {
        return Err(Error::bad_input(format!(
            "{} is larger than {cap} bytes: not the file expected here",
            path.display()
        )));
    }
    Ok(out)
}

/// Reads a private file: refused when group or world can read or write it.
pub fn read_private(path: &Path, cap: usize) -> Result<Zeroizing<Vec<u8>>> {
    let meta = fs::metadata(path).map_err(|e| io_error(path, "read", &e))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::bad_input(format!(
            "{} is accessible by group or others (mode {mode:o}): it holds private keys; run `chmod 600 {}`",
            path.display(),
            path.display()
        )));
    }
    Ok(Zeroizing::new(read_capped(path, cap)?))
}

/// Whether a path exists (without following a dangling link into an error).
pub fn exists(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok()
}

/// Creates a directory (and parents) with `mode` if missing.
pub fn ensure_dir(path: &Path, mode: u32) -> Result<()> {
    if path.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(path).map_err(|e| io_error(path, "create", &e))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| io_error(path, "set permissions on", &e))
}

fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Fsyncs a directory so a rename or link in it is durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error(dir, "sync", &e))
}

/// Writes `bytes` to `path` atomically with `mode`: readers see the old file or the whole new
/// one, never a part. With `overwrite` false an existing file is an error and stays untouched.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32, overwrite: bool) -> Result<()> {
    let dir = parent_of(path);
    let file_name = path
        .file_name()
        .ok_or_else(|| Error::bad_input(format!("{} is not a file path", path.display())))?;
    if !overwrite && exists(path) {
        return Err(io_error(
            path,
            "create",
            &std::io::Error::from(IoKind::AlreadyExists),
        ));
    }
    if !dir.is_dir() {
        return Err(Error::not_found(format!(
            "directory {} does not exist: create it first",
            dir.display()
        )));
    }
    let mut nonce = [0u8; 8];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce)
        .map_err(|_| Error::internal("no randomness"))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        file_name.to_string_lossy(),
        crate::ids::hex(&nonce)
    ));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(|e| io_error(&tmp, "create", &e))?;
        // The umask may have narrowed the mode; private files must be exactly `mode`.
        f.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(|e| io_error(&tmp, "set permissions on", &e))?;
        f.write_all(bytes)
            .map_err(|e| io_error(&tmp, "write", &e))?;
        f.sync_all().map_err(|e| io_error(&tmp, "sync", &e))?;
        if overwrite {
            fs::rename(&tmp, path).map_err(|e| io_error(path, "replace", &e))
        } else {
            // link(2) fails if the target exists, so two writers cannot both win.
            fs::hard_link(&tmp, path).map_err(|e| io_error(path, "create", &e))?;
            let _ = fs::remove_file(&tmp);
            Ok(())
        }
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    sync_dir(&dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_modes_and_no_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secret");
        write_atomic(&p, b"one", PRIVATE_MODE, false).unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(&*read_private(&p, 10).unwrap(), b"one");
        let err = write_atomic(&p, b"two", PRIVATE_MODE, false).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Conflict);
        assert_eq!(fs::read(&p).unwrap(), b"one");
        write_atomic(&p, b"three", PRIVATE_MODE, true).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"three");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(read_private(&p, 10)
            .unwrap_err()
            .message()
            .contains("chmod 600"));
        assert!(read_capped(&p, 2).is_err());
        // No temporary files are left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
