//! The local file helpers' tests: capped reads, permissions, atomic writes, outputs.

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

/// Until its commit, a file being written has no name: a process killed then leaves nothing.
/// Two writers of one new path: one wins, the other is a conflict, and no name is left over.
/// An unnamed file that cannot be linked is copied under its temporary name instead.
#[test]
fn an_uncommitted_file_has_no_name_until_its_commit() {
    let dir = tempfile::tempdir().unwrap();
    if unnamed_in(dir.path(), PRIVATE_MODE).is_none() {
        // Checked where it can be: ext4, XFS, Btrfs and tmpfs make unnamed files.
        eprintln!(
            "skipped: {} cannot hold a file with no name (O_TMPFILE)",
            dir.path().display()
        );
        return;
    }
    let names = || fs::read_dir(dir.path()).unwrap().count();
    for (name, overwrite) in [("new", false), ("replaced", true)] {
        let path = dir.path().join(name);
        if overwrite {
            fs::write(&path, b"old").unwrap();
        }
        let before = names();
        let mut f = AtomicFile::create(&path, PRIVATE_MODE, overwrite).unwrap();
        f.write_all(b"plaintext so far").unwrap();
        f.file.as_ref().unwrap().sync_all().unwrap();
        assert_eq!(
            names(),
            before,
            "{name}: the file has a name before its commit"
        );
        f.commit().unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"plaintext so far");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(names(), before + usize::from(!overwrite));
    }
    // Dropped without a commit: nothing, and the file it would have replaced is untouched.
    let mut f = AtomicFile::create(&dir.path().join("replaced"), PRIVATE_MODE, true).unwrap();
    f.write_all(b"half").unwrap();
    drop(f);
    assert_eq!(names(), 2);
    assert_eq!(
        fs::read(dir.path().join("replaced")).unwrap(),
        b"plaintext so far"
    );
    // Two writers of one new path.
    let both = dir.path().join("both");
    let mut a = AtomicFile::create(&both, PRIVATE_MODE, false).unwrap();
    let mut b = AtomicFile::create(&both, PRIVATE_MODE, false).unwrap();
    a.write_all(b"a").unwrap();
    b.write_all(b"b").unwrap();
    a.commit().unwrap();
    assert_eq!(b.commit().unwrap_err().kind(), crate::ErrorKind::Conflict);
    assert_eq!(fs::read(&both).unwrap(), b"a");
    assert_eq!(names(), 3);
    // The fallback when linking is refused: the same bytes, under the temporary name.
    let mut c = AtomicFile::create(&dir.path().join("copied"), PRIVATE_MODE, false).unwrap();
    c.write_all(b"copied whole").unwrap();
    c.copy_named(c.file.as_ref().unwrap()).unwrap();
    assert_eq!(fs::read(&c.tmp).unwrap(), b"copied whole");
    assert_eq!(
        fs::metadata(&c.tmp).unwrap().permissions().mode() & 0o777,
        0o600
    );
    drop(c);
    assert_eq!(names(), 3, "the copy outlived its writer");
}

#[test]
fn outputs_keep_the_kind_of_what_they_write_to() {
    use std::os::unix::fs::FileTypeExt;
    let dir = tempfile::tempdir().unwrap();
    // A device is written in place, never replaced by a regular file.
    // (Only the choice is checked here: a broken commit must not replace the real one.)
    let out = Output::create(Path::new("/dev/null"), PUBLIC_MODE).unwrap();
    assert!(matches!(out, Output::InPlace { .. }));
    drop(out);
    assert!(fs::metadata("/dev/null")
        .unwrap()
        .file_type()
        .is_char_device());
    // A symlink to a regular file stays a link; its target gets the new content.
    let target = dir.path().join("target");
    fs::write(&target, b"old").unwrap();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let mut out = Output::create(&link, PUBLIC_MODE).unwrap();
    out.write_all(b"new").unwrap();
    out.commit().unwrap();
    assert!(fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(fs::read(&target).unwrap(), b"new");
    // A name for an open descriptor (review-found: `-o /dev/stdout` with standard output
    // redirected to a file replaced that file): never a rename over what it is open on.
    // Standard output is written through this process's handle; another is refused.
    let held = dir.path().join("held");
    fs::write(&held, b"kept").unwrap();
    let open = fs::File::open(&held).unwrap();
    let inode = || std::os::unix::fs::MetadataExt::ino(&fs::metadata(&held).unwrap());
    let before = inode();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&open);
    for name in [format!("/proc/self/fd/{fd}"), format!("/dev/fd/{fd}")] {
        let Err(e) = Output::create(Path::new(&name), PUBLIC_MODE) else {
            panic!("{name} was taken")
        };
        assert!(e.message().contains("open file descriptor"), "{e}");
    }
    assert_eq!(
        (inode(), fs::read(&held).unwrap()),
        (before, b"kept".to_vec())
    );
    for name in ["/dev/stdout", "/proc/self/fd/1", "/dev/fd/2"] {
        let out = Output::create(Path::new(name), PUBLIC_MODE).unwrap();
        assert!(out.in_place(), "{name}");
    }
    // A directory is refused; a new path is created.
    assert!(Output::create(dir.path(), PUBLIC_MODE).is_err());
    let fresh = dir.path().join("fresh");
    let mut out = Output::create(&fresh, PUBLIC_MODE).unwrap();
    out.write_all(b"x").unwrap();
    out.commit().unwrap();
    assert_eq!(fs::read(&fresh).unwrap(), b"x");
}

/// Review-found: the web client wrote plaintext into an existing output directory whatever its
/// owner or mode (another local user who made `sealrelay-inbox` first, world-writable, could
/// swap a file after it was opened).
#[test]
fn a_directory_for_plaintext_is_the_users_alone() {
    let dir = tempfile::tempdir().unwrap();
    let fresh = dir.path().join("fresh");
    ensure_private_dir(&fresh).unwrap();
    assert_eq!(
        fs::metadata(&fresh).unwrap().permissions().mode() & 0o777,
        0o700
    );
    ensure_private_dir(&fresh).unwrap();
    let open = dir.path().join("open");
    fs::create_dir(&open).unwrap();
    fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
    let e = ensure_private_dir(&open).unwrap_err();
    assert!(e.message().contains("can be written by others"), "{e}");
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&fresh, &link).unwrap();
    let e = ensure_private_dir(&link).unwrap_err();
    assert!(e.message().contains("not a directory"), "{e}");
    assert!(!e.message().contains('\n'));
    // Another user's (only root can hand a directory to someone else: checked when it can).
    let theirs = dir.path().join("theirs");
    fs::create_dir(&theirs).unwrap();
    fs::set_permissions(&theirs, fs::Permissions::from_mode(0o700)).unwrap();
    if std::os::unix::fs::chown(&theirs, Some(65534), None).is_ok() {
        let e = ensure_private_dir(&theirs).unwrap_err();
        assert!(e.message().contains("belongs to another user"), "{e}");
    }
}
