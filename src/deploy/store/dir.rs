//! A directory opened once, without following links another user could have planted, and the
//! file operations certkeeper does relative to it.
//!
//! certkeeper often runs as root and writes into directories a media server's user may write
//! (its home, `/opt/<server>`, a webroot). Were paths resolved anew on every call, that user
//! could swap a directory on the path for a link to a root-only directory between two calls,
//! and root would write a key there. So a directory is resolved once, component by component
//! with `O_NOFOLLOW`, and every write, rename and removal happens relative to its descriptor.
//! A link on the way is followed only where nobody but root or this process's user could have
//! put it: in a directory that they own and that neither group nor others may write.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, AtFlags, OFlag, openat, readlinkat, renameat};
use nix::sys::stat::{FileStat, Mode, SFlag, fchmod, fstat, fstatat, mkdirat};
use nix::sys::statvfs::{FsFlags, fstatvfs};
use nix::unistd::{AccessFlags, Uid, UnlinkatFlags, faccessat, fchown, geteuid, unlinkat};

use super::{FileMode, StoreError};

/// Links followed while resolving one directory, as the kernel's own limit.
const MAX_LINKS: usize = 40;

/// The least free space a directory must have to take a new version (a bundle, a keystore and
/// their temp files are a few dozen KiB).
const MIN_FREE_BYTES: u64 = 256 << 10;

/// The most certkeeper reads of a file it checks (an output file, a key given on the
/// command line): far above any certificate bundle or keystore.
pub const MAX_READ: u64 = 4 << 20;

#[derive(Debug)]
pub struct SafeDir {
    fd: OwnedFd,
    path: PathBuf,
}

impl SafeDir {
    /// Opens `path`, creating missing directories (0755) when `create` is set.
    pub fn open(path: &Path, create: bool) -> Result<SafeDir, StoreError> {
        let fd = resolve(path, create).map_err(|source| match source {
            Resolve::Io(source) => StoreError::Write {
                path: path.to_path_buf(),
                source,
            },
            Resolve::UntrustedLink { link, holder } => StoreError::Unsafe {
                path: path.to_path_buf(),
                reason: format!(
                    "{} is a link in {}, which users other than root and certkeeper's may \
                     write, so it may have been put there to redirect certkeeper's files; \
                     name the real directory instead",
                    link.display(),
                    holder.display()
                ),
            },
        })?;
        Ok(SafeDir {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// Writes `name` so that readers see the old file or the new one, never a part: a temp file
    /// beside it, mode and owner set before any byte lands, fsync, rename, fsync of the directory.
    pub fn write_atomic(
        &self,
        name: &str,
        contents: &[u8],
        mode: FileMode,
    ) -> Result<(), StoreError> {
        let fail = |source: Errno| StoreError::Write {
            path: self.path.join(name),
            source: source.into(),
        };
        let tmp = format!(".{name}.{}.{:x}.tmp", std::process::id(), fastrand::u64(..));
        let written = (|| {
            let fd = openat(
                &self.fd,
                tmp.as_str(),
                OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW,
                Mode::from_bits_truncate(mode.mode),
            )?;
            // The umask may only have narrowed the mode; set it exactly, still before any content.
            fchmod(&fd, Mode::from_bits_truncate(mode.mode))?;
            if mode.owner.is_some() || mode.group.is_some() {
                fchown(&fd, mode.owner.map(Into::into), mode.group.map(Into::into))?;
            }
            let mut file = File::from(fd);
            io::Write::write_all(&mut file, contents).map_err(errno)?;
            file.sync_all().map_err(errno)?;
            renameat(&self.fd, tmp.as_str(), &self.fd, name)?;
            self.sync()
        })();
        if written.is_err() {
            let _ = unlinkat(&self.fd, tmp.as_str(), UnlinkatFlags::NoRemoveDir);
        }
        written.map_err(fail)
    }

    /// Appends `line` to `name` and syncs it: for a log whose every line stands alone (a line
    /// cut short by a crash is skipped when read). A new file gets `mode` before any byte
    /// lands, and the directory is synced so that it stays; only a regular file is written.
    pub fn append(&self, name: &str, line: &[u8], mode: FileMode) -> Result<(), StoreError> {
        let fail = |source: Errno| StoreError::Write {
            path: self.path.join(name),
            source: source.into(),
        };
        let flags = OFlag::O_WRONLY | OFlag::O_APPEND | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK;
        let mode_bits = Mode::from_bits_truncate(mode.mode);
        let (fd, created) = match openat(
            &self.fd,
            name,
            flags | OFlag::O_CREAT | OFlag::O_EXCL,
            mode_bits,
        ) {
            Ok(fd) => {
                fchmod(&fd, mode_bits).map_err(fail)?;
                (fd, true)
            }
            Err(Errno::EEXIST) => (
                openat(&self.fd, name, flags, Mode::empty()).map_err(fail)?,
                false,
            ),
            Err(e) => return Err(fail(e)),
        };
        if !is(&fstat(&fd).map_err(fail)?, SFlag::S_IFREG) {
            return Err(fail(Errno::EINVAL));
        }
        let mut file = File::from(fd);
        io::Write::write_all(&mut file, line).map_err(|e| fail(errno(e)))?;
        file.sync_data().map_err(|e| fail(errno(e)))?;
        if created {
            self.sync().map_err(fail)?;
        }
        Ok(())
    }

    /// Creates `name`, which must not exist, mode and owner set before any byte lands, and
    /// writes `contents`, unsynced: for a directory that is itself swapped into place once
    /// every file in it is synced ([`SafeDir::sync_all`]).
    pub fn create_new(
        &self,
        name: &str,
        contents: &[u8],
        mode: FileMode,
    ) -> Result<File, StoreError> {
        let fail = |source: Errno| StoreError::Write {
            path: self.path.join(name),
            source: source.into(),
        };
        let fd = openat(
            &self.fd,
            name,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW,
            Mode::from_bits_truncate(mode.mode),
        )
        .map_err(fail)?;
        fchmod(&fd, Mode::from_bits_truncate(mode.mode)).map_err(fail)?;
        if mode.owner.is_some() || mode.group.is_some() {
            fchown(&fd, mode.owner.map(Into::into), mode.group.map(Into::into)).map_err(fail)?;
        }
        let mut file = File::from(fd);
        io::Write::write_all(&mut file, contents).map_err(|e| fail(errno(e)))?;
        Ok(file)
    }

    /// Syncs `files` (written by [`SafeDir::create_new`]) and then this directory. Synced
    /// together rather than one by one, the file system commits them in one go.
    pub fn sync_all(&self, files: &[File]) -> Result<(), StoreError> {
        for file in files {
            file.sync_all().map_err(|source| StoreError::Write {
                path: self.path.clone(),
                source,
            })?;
        }
        self.sync().map_err(|source| StoreError::Write {
            path: self.path.clone(),
            source: source.into(),
        })
    }

    /// Whether new files can be written here, without creating one (a probe file costs an
    /// inode and a deletion per certificate). Checked in the order a create would fail: a
    /// read-only mount first (under the systemd unit, the fix is `ReadWritePaths=`, whatever
    /// the permissions say), then the kernel's own write check (permissions, an immutable
    /// directory), then the free space and inodes left.
    pub fn check_writable(&self) -> Result<(), StoreError> {
        let failed = |errno: Errno| StoreError::Write {
            path: self.path.clone(),
            source: errno.into(),
        };
        let room = fstatvfs(&self.fd).map_err(failed)?;
        if room.flags().contains(FsFlags::ST_RDONLY) {
            return Err(failed(Errno::EROFS));
        }
        let write_and_enter = AccessFlags::W_OK | AccessFlags::X_OK;
        faccessat(&self.fd, ".", write_and_enter, AtFlags::empty()).map_err(failed)?;
        // Root may use the blocks reserved for it; everyone else only what is available.
        let blocks = if geteuid().is_root() {
            room.blocks_free()
        } else {
            room.blocks_available()
        };
        let bytes = blocks.saturating_mul(room.fragment_size());
        if bytes < MIN_FREE_BYTES || room.files_available() == 0 {
            return Err(failed(Errno::ENOSPC));
        }
        Ok(())
    }

    /// Removes the file `name` (never a directory; a link itself, not its target).
    pub fn remove(&self, name: &str) -> io::Result<()> {
        unlinkat(&self.fd, name, UnlinkatFlags::NoRemoveDir).map_err(io::Error::from)
    }

    /// The contents of `name` when it is a regular file of at most [`MAX_READ`] bytes; `None`
    /// when it is anything else (a FIFO, a device, a link, missing). Never blocks on a FIFO.
    pub fn read_regular(&self, name: &str) -> Option<Vec<u8>> {
        let fd = openat(
            &self.fd,
            name,
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK,
            Mode::empty(),
        )
        .ok()?;
        read_regular_fd(fd).ok()
    }

    fn sync(&self) -> Result<(), Errno> {
        nix::unistd::fsync(&self.fd)
    }
}

/// Reads a file given by path (`revoke --key`) as [`SafeDir::read_regular`] does: a FIFO or a
/// device is refused, not waited on.
pub fn read_regular_file(path: &Path) -> io::Result<Vec<u8>> {
    let fd = nix::fcntl::open(path, OFlag::O_RDONLY | OFlag::O_NONBLOCK, Mode::empty())?;
    read_regular_fd(fd)
}

fn read_regular_fd(fd: OwnedFd) -> io::Result<Vec<u8>> {
    let stat = fstat(&fd)?;
    if !is(&stat, SFlag::S_IFREG) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file (a FIFO, device or directory)",
        ));
    }
    if stat.st_size as u64 > MAX_READ {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("larger than {} MiB", MAX_READ >> 20),
        ));
    }
    let mut contents = Vec::new();
    File::from(fd).take(MAX_READ).read_to_end(&mut contents)?;
    Ok(contents)
}

fn errno(e: io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(nix::libc::EIO))
}

fn is(stat: &FileStat, kind: SFlag) -> bool {
    SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == kind
}

enum Resolve {
    Io(io::Error),
    UntrustedLink { link: PathBuf, holder: PathBuf },
}

impl From<Errno> for Resolve {
    fn from(e: Errno) -> Self {
        Resolve::Io(e.into())
    }
}

/// Whether nobody but root or this process's user may change the entries of this directory.
fn trusted(dir: &FileStat) -> bool {
    let owner = Uid::from_raw(dir.st_uid);
    (owner.is_root() || owner == geteuid()) && dir.st_mode & 0o022 == 0
}

fn open_dir(at: BorrowedFd<'_>, name: &OsStr) -> Result<OwnedFd, Errno> {
    openat(
        at,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// Opens the directory `path` one component at a time (see the module's doc).
fn resolve(path: &Path, create: bool) -> Result<OwnedFd, Resolve> {
    let start = if path.is_absolute() { "/" } else { "." };
    let mut dir = open_dir(AT_FDCWD, OsStr::new(start))?;
    let mut shown = PathBuf::from(start);
    // Components still to walk, last first; a followed link pushes its target's.
    let mut pending: Vec<PathBuf> = components(path);
    let mut links = 0;
    while let Some(component) = pending.pop() {
        let name = component.as_os_str();
        if name == "/" {
            dir = open_dir(AT_FDCWD, OsStr::new("/"))?;
            shown = PathBuf::from("/");
            continue;
        }
        match open_dir(dir.as_fd(), name) {
            Ok(next) => {
                dir = next;
                shown.push(name);
            }
            Err(Errno::ENOENT) if create => {
                match mkdirat(dir.as_fd(), name, Mode::from_bits_truncate(0o755)) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(e.into()),
                }
                pending.push(component);
            }
            // O_NOFOLLOW on a link: ELOOP (ENOTDIR on some kernels for O_DIRECTORY).
            Err(Errno::ELOOP | Errno::ENOTDIR)
                if fstatat(dir.as_fd(), name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
                    .is_ok_and(|s| is(&s, SFlag::S_IFLNK)) =>
            {
                links += 1;
                if links > MAX_LINKS || !trusted(&fstat(&dir)?) {
                    return Err(Resolve::UntrustedLink {
                        link: shown.join(name),
                        holder: shown,
                    });
                }
                let target = readlinkat(dir.as_fd(), name)?;
                pending.extend(components(Path::new(&target)));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(dir)
}

/// The components of `path` to walk, last first; `..` is kept (it is resolved by the kernel
/// relative to the directory reached, which is where we are).
fn components(path: &Path) -> Vec<PathBuf> {
    let mut parts: Vec<PathBuf> = path
        .components()
        .filter_map(|c| match c {
            Component::RootDir => Some(PathBuf::from("/")),
            Component::Normal(n) => Some(PathBuf::from(n)),
            Component::ParentDir => Some(PathBuf::from(OsStr::from_bytes(b".."))),
            Component::CurDir | Component::Prefix(_) => None,
        })
        .collect();
    parts.reverse();
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn writes_relative_to_the_directory_opened() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = SafeDir::open(&tmp.path().join("a/b"), true).unwrap();
        dir.write_atomic("key.pem", b"secret", FileMode::PRIVATE)
            .unwrap();
        // Swapping the directory for a link afterwards changes nothing: we hold the real one.
        std::fs::rename(tmp.path().join("a/b"), tmp.path().join("a/moved")).unwrap();
        let elsewhere = tmp.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, tmp.path().join("a/b")).unwrap();
        dir.write_atomic("key.pem", b"second", FileMode::PRIVATE)
            .unwrap();
        assert_eq!(
            std::fs::read(tmp.path().join("a/moved/key.pem")).unwrap(),
            b"second"
        );
        assert!(!elsewhere.join("key.pem").exists());
    }

    #[test]
    fn a_link_in_a_directory_others_may_write_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let open = tmp.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let target = tmp.path().join("root-only");
        std::fs::create_dir(&target).unwrap();
        std::os::unix::fs::symlink(&target, open.join("tls")).unwrap();
        let err = SafeDir::open(&open.join("tls"), true)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("is a link in") && err.contains("open"),
            "{err}"
        );
        // The same link in a directory only its owner may write is followed.
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
        let dir = SafeDir::open(&open.join("tls"), true).unwrap();
        dir.write_atomic("cert.pem", b"x", FileMode::PUBLIC)
            .unwrap();
        assert!(target.join("cert.pem").exists());
    }

    #[test]
    fn a_fifo_is_not_read_and_does_not_block() {
        let tmp = tempfile::tempdir().unwrap();
        let fifo = tmp.path().join("fullchain.pem");
        nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o644)).unwrap();
        let dir = SafeDir::open(tmp.path(), false).unwrap();
        assert_eq!(dir.read_regular("fullchain.pem"), None);
        let err = read_regular_file(&fifo).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
    }
}
