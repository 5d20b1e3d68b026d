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

/// A directory plaintext is written into: made (0700) if missing; if it exists, it must be a
/// real directory (not a link) of this process's user that nobody else may write to, or
/// another local user who made it first could swap what is opened there.
pub fn ensure_private_dir(path: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == IoKind::NotFound => return ensure_dir(path, 0o700),
        Err(e) => return Err(io_error(path, "inspect", &e)),
    };
    // /proc/self belongs to the process's effective user.
    let me = fs::metadata("/proc/self").map(|m| m.uid()).ok();
    let refuse = |why: &str| {
        Err(Error::bad_input(format!(
            "{} {why}: plaintext is not written there; give a directory of your own (--out)",
            path.display()
        )))
    };
    if !meta.file_type().is_dir() {
        refuse("is not a directory (a symbolic link is not followed)")
    } else if me.is_some_and(|me| meta.uid() != me) {
        refuse("belongs to another user")
    } else if meta.mode() & 0o022 != 0 {
        refuse("can be written by others")
    } else {
        Ok(())
    }
}

/// Sets `path`'s mode exactly (whatever the umask made of it).
pub fn restrict(path: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| io_error(path, "set permissions on", &e))
}

/// Mode of the relay's data directories: the operator's alone.
pub const PRIVATE_DIR_MODE: u32 = 0o700;

fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Bytes an unprivileged writer can still use on the file system of `path` (`None` when it
/// cannot be told).
pub fn free_bytes(path: &Path) -> Option<u64> {
    let st = rustix::fs::statvfs(path).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Refuses as "storage full" when writing `incoming` more bytes in `dir` would leave less than
/// `min` free (`min_free_bytes`, threat 38); `min` 0 checks nothing.
pub fn ensure_free(dir: &Path, min: u64, incoming: u64) -> Result<()> {
    if min == 0 {
        return Ok(());
    }
    match free_bytes(dir) {
        Some(free) if free < incoming.saturating_add(min) => Err(Error::storage_full(format!(
            "{free} bytes free in {}, under the {min} kept in reserve (min_free_bytes)",
            dir.display()
        ))),
        _ => Ok(()),
    }
}

/// Fsyncs a directory so a rename or link in it is durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error(dir, "sync", &e))
}

/// A file being written beside its final path; [`AtomicFile::commit`] fsyncs it and moves it
/// into place (readers see the old file or the whole new one, never a part). Where the file
/// system can (`O_TMPFILE`: ext4, XFS, Btrfs, tmpfs), the file has no name at all until the
/// commit, so a process killed before it (Ctrl-C, `kill -9`, a crash) leaves nothing behind: not
/// half of a key, nor plaintext opened so far. Elsewhere it is a temporary name in the same
/// directory, removed when dropped without a commit.
pub struct AtomicFile {
    tmp: PathBuf,
    path: PathBuf,
    file: Option<File>,
    overwrite: bool,
    /// The file has no name yet (`O_TMPFILE`): the commit links it in.
    unnamed: bool,
    mode: u32,
}

/// A new file with no name in `dir` (`O_TMPFILE`), or `None` where the file system or the
/// kernel cannot make one, or `/proc` (through which it is linked at the commit) is missing.
fn unnamed_in(dir: &Path, mode: u32) -> Option<File> {
    use rustix::fs::{Mode, OFlags, CWD};
    if !Path::new("/proc/self/fd").is_dir() {
        return None;
    }
    let flags = OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC;
    rustix::fs::openat(CWD, dir, flags, Mode::from_raw_mode(mode))
        .ok()
        .map(File::from)
}

impl AtomicFile {
    /// With `overwrite` false an existing `path` is an error (checked now and at commit).
    pub fn create(path: &Path, mode: u32, overwrite: bool) -> Result<Self> {
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
            crate::ids::hex(nonce)
        ));
        let (file, unnamed) = match unnamed_in(&dir, mode) {
            Some(f) => (f, true),
            None => {
                let f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(mode)
                    .open(&tmp)
                    .map_err(|e| io_error(&tmp, "create", &e))?;
                (f, false)
            }
        };
        let made = AtomicFile {
            tmp,
            path: path.to_path_buf(),
            file: Some(file),
            overwrite,
            unnamed,
            mode,
        };
        // The umask may have narrowed the mode; the file must be exactly `mode`.
        if let Some(f) = &made.file {
            f.set_permissions(fs::Permissions::from_mode(mode))
                .map_err(|e| io_error(made.shown(), "set permissions on", &e))?;
        }
        Ok(made)
    }

    /// Fsyncs the data, moves the file into place, and fsyncs the directory.
    pub fn commit(mut self) -> Result<()> {
        let file = self
            .file
            .take()
            .ok_or_else(|| Error::internal("atomic file committed twice"))?;
        file.sync_all()
            .map_err(|e| io_error(self.shown(), "sync", &e))?;
        if self.unnamed {
            // A new path gets the file's first name at once (linkat(2) never replaces a file,
            // so two writers cannot both win); a file to replace gets the temporary name, then
            // the rename below.
            let target = if self.overwrite {
                &self.tmp
            } else {
                &self.path
            };
            match link_unnamed(&file, target) {
                Ok(()) if !self.overwrite => {
                    drop(file);
                    return sync_dir(&parent_of(&self.path));
                }
                Ok(()) => {}
                Err(e) if e.kind() == IoKind::AlreadyExists && !self.overwrite => {
                    return Err(io_error(&self.path, "create", &e));
                }
                // Linking refused (a sandbox, a security module): what was written is not
                // lost; it is copied under the temporary name instead.
                Err(_) => self
                    .copy_named(&file)
                    .map_err(|e| io_error(&self.tmp, "write", &e))?,
            }
        }
        drop(file);
        if self.overwrite {
            fs::rename(&self.tmp, &self.path).map_err(|e| io_error(&self.path, "replace", &e))?;
        } else {
            // link(2) fails if the target exists, so two writers cannot both win.
            fs::hard_link(&self.tmp, &self.path).map_err(|e| io_error(&self.path, "create", &e))?;
            let _ = fs::remove_file(&self.tmp);
        }
        sync_dir(&parent_of(&self.path))
    }
}

impl AtomicFile {
    /// The path a message names: the temporary file's, or the final one for a file with no name.
    fn shown(&self) -> &Path {
        if self.unnamed {
            &self.path
        } else {
            &self.tmp
        }
    }

    /// Copies an unnamed file that could not be linked into a new file at the temporary name,
    /// synced.
    fn copy_named(&self, file: &File) -> std::io::Result<()> {
        use std::io::{Seek, SeekFrom};
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(self.mode)
            .open(&self.tmp)?;
        out.set_permissions(fs::Permissions::from_mode(self.mode))?;
        let mut src = file;
        src.seek(SeekFrom::Start(0))?;
        std::io::copy(&mut src, &mut out)?;
        out.sync_all()
    }
}

/// Gives an unnamed file (`O_TMPFILE`) its first name, `at`, through `/proc/self/fd`.
fn link_unnamed(file: &File, at: &Path) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let proc_path = format!("/proc/self/fd/{}", file.as_raw_fd());
    rustix::fs::linkat(
        rustix::fs::CWD,
        proc_path.as_str(),
        rustix::fs::CWD,
        at,
        rustix::fs::AtFlags::SYMLINK_FOLLOW,
    )
    .map_err(std::io::Error::from)
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match &mut self.file {
            Some(f) => f.write(buf),
            None => Err(std::io::Error::other("atomic file already committed")),
        }
    }
    fn write_vectored(&mut self, bufs: &[std::io::IoSlice<'_>]) -> std::io::Result<usize> {
        match &mut self.file {
            Some(f) => f.write_vectored(bufs),
            None => Err(std::io::Error::other("atomic file already committed")),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.file {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        // An unnamed file goes with its last handle; a named one (or one linked by a commit
        // that failed after) is removed.
        self.file = None;
        if exists(&self.tmp) {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// The descriptor number a path names when it is one of this process's open descriptors by
/// name: `/dev/stdin|stdout|stderr`, `/dev/fd/N`, `/proc/self/fd/N`, `/proc/thread-self/fd/N`,
/// `/proc/PID/fd/N` with this process's PID.
fn descriptor_named(path: &Path) -> Option<u32> {
    let s = path.to_str()?;
    match s {
        "/dev/stdin" => return Some(0),
        "/dev/stdout" => return Some(1),
        "/dev/stderr" => return Some(2),
        _ => {}
    }
    let pid = std::process::id().to_string();
    let n = s.strip_prefix("/dev/fd/").or_else(|| {
        let rest = s.strip_prefix("/proc/")?;
        let (who, rest) = rest.split_once('/')?;
        let ours = who == "self" || who == "thread-self" || who == pid;
        ours.then(|| rest.strip_prefix("fd/")).flatten()
    })?;
    n.parse().ok()
}

/// Where a command writes its output (`-o PATH`): a new path or a regular file is written
/// atomically (temporary file, fsync, rename), so readers never see half of it and a failure
/// leaves the old file; a device or a FIFO (`/dev/null`, `/dev/stdout`, a named pipe) is written
/// in place, since renaming onto it would replace it with a regular file. A symbolic link is
/// followed, so the link stays a link. Anything else (a directory, a socket) is refused. A path
/// is never replaced by a different kind of file.
pub enum Output {
    Atomic(AtomicFile),
    InPlace { file: File, path: PathBuf },
}

impl Output {
    pub fn create(path: &Path, mode: u32) -> Result<Self> {
        use std::os::unix::fs::FileTypeExt;
        // A name for one of this process's open descriptors (`/dev/stdout`, `/dev/fd/1`,
        // `/proc/self/fd/1`) leads to whatever it is open on, a regular file too when the
        // shell redirected it: renaming a new file over that would replace the file (what
        // `>>` appended to) and write nothing where the descriptor points. Standard output and
        // standard error are written through this process's own handle, in place; another
        // descriptor is refused.
        if let Some(fd) = descriptor_named(path) {
            use std::os::fd::AsFd;
            let own = match fd {
                1 => std::io::stdout().as_fd().try_clone_to_owned(),
                2 => std::io::stderr().as_fd().try_clone_to_owned(),
                _ => {
                    return Err(Error::bad_input(format!(
                        "{} names an open file descriptor: write to /dev/stdout, /dev/stderr or a file path",
                        path.display()
                    )))
                }
            };
            let file = own
                .map(File::from)
                .map_err(|e| io_error(path, "open", &e))?;
            return Ok(Output::InPlace {
                file,
                path: path.to_path_buf(),
            });
        }
        let meta = match fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == IoKind::NotFound => {
                // A dangling symlink would be replaced by a file: refuse it.
                if fs::symlink_metadata(path).is_ok() {
                    return Err(Error::bad_input(format!(
                        "{} is a symbolic link to nothing: remove it or give another path",
                        path.display()
                    )));
                }
                return Ok(Output::Atomic(AtomicFile::create(path, mode, true)?));
            }
            Err(e) => return Err(io_error(path, "inspect", &e)),
        };
        let ft = meta.file_type();
        if ft.is_file() {
            // Through a link, the target is replaced and the link stays.
            let target = fs::canonicalize(path).map_err(|e| io_error(path, "resolve", &e))?;
            Ok(Output::Atomic(AtomicFile::create(&target, mode, true)?))
        } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() {
            let file = OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(|e| io_error(path, "open", &e))?;
            Ok(Output::InPlace {
                file,
                path: path.to_path_buf(),
            })
        } else if ft.is_dir() {
            Err(Error::bad_input(format!(
                "{} is a directory: give a file path",
                path.display()
            )))
        } else {
            Err(Error::bad_input(format!(
                "{} is neither a regular file, a device nor a FIFO: give another path",
                path.display()
            )))
        }
    }

    /// Whether it is written in place (a device, a FIFO, standard output): there is no file
    /// beside which to put anything else.
    pub fn in_place(&self) -> bool {
        matches!(self, Output::InPlace { .. })
    }

    /// The temporary file of an atomic output, which the envelope pipeline's workers may
    /// write at offsets (`seal -o`, `open -o`): it is new and empty, and nobody sees it before
    /// [`Output::commit`]. `None` for a device or a FIFO, which take bytes only in order.
    pub fn positional(&self) -> Option<&File> {
        match self {
            Output::Atomic(f) => f.file.as_ref(),
            Output::InPlace { .. } => None,
        }
    }

    /// Makes the output final: the atomic file moves into place; a device is flushed.
    pub fn commit(self) -> Result<()> {
        match self {
            Output::Atomic(f) => f.commit(),
            Output::InPlace { mut file, path } => {
                file.flush().map_err(|e| io_error(&path, "write", &e))
            }
        }
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Output::Atomic(f) => f.write(buf),
            Output::InPlace { file, .. } => file.write(buf),
        }
    }
    fn write_vectored(&mut self, bufs: &[std::io::IoSlice<'_>]) -> std::io::Result<usize> {
        match self {
            Output::Atomic(f) => f.write_vectored(bufs),
            Output::InPlace { file, .. } => file.write_vectored(bufs),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Output::Atomic(f) => f.flush(),
            Output::InPlace { file, .. } => file.flush(),
        }
    }
}

/// A regular file is read at offsets by the envelope pipeline's worker threads.
impl crate::core::envelope::stream::ReadAt for File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        std::os::unix::fs::FileExt::read_at(self, buf, offset)
    }
    fn size(&self) -> std::io::Result<u64> {
        self.metadata().map(|m| m.len())
    }
}

/// A regular file is written at offsets by the envelope pipeline's worker threads.
impl crate::core::envelope::stream::WriteAt for File {
    fn write_all_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        std::os::unix::fs::FileExt::write_all_at(self, buf, offset)
    }
}

/// Writes `bytes` to `path` atomically with `mode`. With `overwrite` false an existing file is
/// an error and stays untouched.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32, overwrite: bool) -> Result<()> {
    let mut f = AtomicFile::create(path, mode, overwrite)?;
    f.write_all(bytes)
        .map_err(|e| io_error(path, "write", &e))?;
    f.commit()
}

#[cfg(test)]
mod tests;
