//! Versioned, atomic on-disk certificate sets. `files` writes one file atomically (every file
//! certkeeper writes goes through it), `outputs` the single files a media server reads, `dir`
//! opens directories without following a planted link.
//!
//! Layout under the state directory:
//!
//! ```text
//! certs/NAME/versions/STAMP/{cert,chain,fullchain,privkey,combined}.pem
//! certs/NAME/current -> versions/STAMP      (switched by rename: readers see old or new, whole)
//! certs/NAME/state.json                     (what the scheduler knows)
//! accounts/DIRECTORY.json                   (ACME account credentials, 0600)
//! ```
//!
//! A version directory is complete and fsynced before `current` points at it, so no reader that
//! resolves `current` once ever sees a new certificate with an old key. The version `current`
//! points at is never pruned.

mod dir;
mod files;
mod outputs;

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use nix::fcntl::{Flock, FlockArg};
use zeroize::Zeroizing;

pub use crate::config::FileKind;
use crate::config::Output;
use crate::deploy::bundle::{self, Bundle, LeafInfo};
pub use dir::{SafeDir, read_regular_file};
pub use files::{FileMode, create_dir, write_atomic};
use files::{probe_dir, remove_stale_temps, rename_synced};
pub use outputs::{check_output_dirs, check_outputs_writable, write_outputs};
use outputs::{contents, read_output, write_output};

/// How many versions to keep per certificate (the current one is always kept).
pub const KEEP_VERSIONS: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot write {path}: {source}{hint}", hint = io_hint(source))]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error(
        "refusing to write certificates into {path}: {reason}; use a directory only root and the server's user may write (chmod o-w)"
    )]
    Unsafe { path: PathBuf, reason: String },
    #[error("cannot build the PKCS#12 keystore: {source}")]
    Pkcs12 { source: bundle::BundleError },
    #[error(
        "output.dir {path} is a real directory, but certkeeper keeps it as a link to the current \
         certificate so that all its files switch at once; move it away (mv {path} {path}.old) \
         and renew again"
    )]
    OutputNotLink { path: PathBuf },
    #[error("{path} holds an unreadable certificate: {source}")]
    Corrupt {
        path: PathBuf,
        source: bundle::BundleError,
    },
}

fn io_hint(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::PermissionDenied => {
            " (permission denied: run certkeeper as a user that may write there, or change the path)"
        }
        io::ErrorKind::StorageFull => {
            " (the disk is full: free space; the previous certificate is still in place)"
        }
        io::ErrorKind::ReadOnlyFilesystem => {
            " (the file system is read-only; under the systemd unit only the state directory and \
             the ReadWritePaths= directories may be written: run systemctl edit certkeeper and add \
             [Service] ReadWritePaths=-DIR for this directory, the '-' keeping the unit startable \
             while DIR is missing)"
        }
        io::ErrorKind::NotFound => " (a parent directory is missing)",
        _ => "",
    }
}

/// The certificate `current` points at.
#[derive(Debug, Clone)]
pub struct Current {
    pub dir: PathBuf,
    pub leaf: LeafInfo,
}

/// A freshly installed version, and the one it replaced (the rollback target).
#[derive(Debug, Clone)]
pub struct Installed {
    pub dir: PathBuf,
    pub version: String,
    pub previous: Option<String>,
}

/// The versioned certificate sets under a state directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    pub fn new(state_dir: &Path) -> Self {
        Self {
            root: state_dir.to_path_buf(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn cert_dir(&self, name: &str) -> PathBuf {
        self.root.join("certs").join(name)
    }

    pub fn current_link(&self, name: &str) -> PathBuf {
        self.cert_dir(name).join("current")
    }

    /// The current certificate, if one was ever installed.
    pub fn current(&self, name: &str) -> Result<Option<Current>, StoreError> {
        let link = self.current_link(name);
        let dir = match fs::canonicalize(&link) {
            Ok(dir) => dir,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StoreError::Read { path: link, source }),
        };
        let cert = dir.join(FileKind::Fullchain.file_name());
        let pem = fs::read(&cert).map_err(|source| StoreError::Read {
            path: cert.clone(),
            source,
        })?;
        let leaf =
            bundle::read_leaf(&pem).map_err(|source| StoreError::Corrupt { path: cert, source })?;
        Ok(Some(Current { dir, leaf }))
    }

    /// Fails, with the reason, when a new version could not be written now (read-only or full
    /// file system, permissions): checked before ordering, so that no certificate is ordered
    /// only to be thrown away.
    pub fn check_writable(&self, name: &str) -> Result<(), StoreError> {
        probe_dir(&self.cert_dir(name))
    }

    /// The chain `current` holds, leaf first (what the servers should present).
    pub fn current_chain(
        &self,
        name: &str,
    ) -> Option<Vec<rustls_pki_types::CertificateDer<'static>>> {
        use rustls_pki_types::pem::PemObject;
        let path = self
            .current_link(name)
            .join(FileKind::Fullchain.file_name());
        let chain = rustls_pki_types::CertificateDer::pem_file_iter(path).ok()?;
        Some(chain.filter_map(Result::ok).collect())
    }

    /// The current leaf certificate, DER (to name it in `replaces` and ARI requests).
    pub fn current_leaf_der(
        &self,
        name: &str,
    ) -> Option<rustls_pki_types::CertificateDer<'static>> {
        use rustls_pki_types::pem::PemObject;
        let pem = fs::read(self.current_link(name).join(FileKind::Cert.file_name())).ok()?;
        rustls_pki_types::CertificateDer::from_pem_slice(&pem).ok()
    }

    /// The current private key (for `reuse_key`).
    pub fn current_key_pem(&self, name: &str) -> Result<zeroize::Zeroizing<String>, StoreError> {
        let path = self.current_link(name).join(FileKind::Key.file_name());
        fs::read_to_string(&path)
            .map(zeroize::Zeroizing::new)
            .map_err(|source| StoreError::Read { path, source })
    }

    /// Writes `bundle` as a new version and switches `current` (and with it the output
    /// directory link) to it. The bundle must already have passed [`Bundle::check`].
    pub fn install(
        &self,
        name: &str,
        bundle: &Bundle,
        output: &Output,
    ) -> Result<Installed, StoreError> {
        let cert_dir = self.cert_dir(name);
        let versions = cert_dir.join("versions");
        create_dir(&versions)?;
        // One installer at a time per certificate: pruning must not race another's new version.
        let _lock = self.lock(&cert_dir)?;
        if let Some(link) = &output.link {
            self.link_output_dir(name, link)?;
        }

        // The files go straight into a fresh hidden directory, which is renamed into place once
        // they are all synced: no reader ever sees a part of the set.
        let (staging, version) = self.new_version_dir(&versions)?;
        let opened = SafeDir::open(&staging, false)?;
        let mut files = Vec::with_capacity(FileKind::ALL.len());
        for kind in FileKind::ALL {
            if let Some(contents) = contents(kind, bundle, output)? {
                files.push(opened.create_new(
                    kind.file_name(),
                    &contents,
                    FileMode::for_kind(kind, output),
                )?);
            }
        }
        opened.sync_all(&files)?;
        let dir = versions.join(&version);
        rename_synced(&staging, &dir, &versions)?;
        let previous = self.current_version(name);
        self.point_current(name, &version)?;
        self.prune(&versions, &[Some(version.as_str()), previous.as_deref()]);
        Ok(Installed {
            dir,
            version,
            previous,
        })
    }

    /// Switches `current` back to an earlier version (a rollback).
    pub fn switch_to(&self, name: &str, version: &str) -> Result<PathBuf, StoreError> {
        let _lock = self.lock(&self.cert_dir(name))?;
        self.point_current(name, version)?;
        Ok(self.cert_dir(name).join("versions").join(version))
    }

    /// The version `current` points at.
    pub fn current_version(&self, name: &str) -> Option<String> {
        let target = fs::read_link(self.current_link(name)).ok()?;
        Some(target.file_name()?.to_str()?.to_string())
    }

    /// The certificate and key of a stored version.
    pub fn load(&self, name: &str, version: &str) -> Result<Bundle, StoreError> {
        let dir = self.cert_dir(name).join("versions").join(version);
        let read = |kind: FileKind| {
            let path = dir.join(kind.file_name());
            fs::read_to_string(&path).map_err(|source| StoreError::Read { path, source })
        };
        let key = Zeroizing::new(read(FileKind::Key)?);
        Bundle::from_pem(&read(FileKind::Fullchain)?, &key).map_err(|source| StoreError::Corrupt {
            path: dir.clone(),
            source,
        })
    }

    /// Makes `link` a symbolic link to this certificate's `current`, once; from then on it
    /// switches whenever `current` does.
    fn link_output_dir(&self, name: &str, link: &Path) -> Result<(), StoreError> {
        let target = self.current_link(name);
        match fs::symlink_metadata(link) {
            Ok(meta) if meta.file_type().is_symlink() => {
                if fs::read_link(link).is_ok_and(|t| t == target) {
                    return Ok(());
                }
            }
            Ok(_) => {
                return Err(StoreError::OutputNotLink {
                    path: link.to_path_buf(),
                });
            }
            Err(_) => {}
        }
        let parent = link.parent().unwrap_or(Path::new("/"));
        create_dir(parent)?;
        let tmp = parent.join(format!(".certkeeper-link.{}.tmp", std::process::id()));
        let _ = fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&target, &tmp).map_err(|source| StoreError::Write {
            path: tmp.clone(),
            source,
        })?;
        rename_synced(&tmp, link, parent)
    }

    /// After a crash between two output files, they may be a mismatched pair: rewrite every
    /// single output file that differs from the current version (and make the output
    /// directory link if the config gained one). Run at start.
    pub fn repair_outputs(&self, name: &str, output: &Output) -> Result<usize, StoreError> {
        let Some(version) = self.current_version(name) else {
            return Ok(0);
        };
        if let Some(link) = &output.link {
            self.link_output_dir(name, link)?;
        }
        let bundle = self.load(name, &version)?;
        let mut repaired = 0;
        for (kind, path) in &output.files {
            let up_to_date = match kind {
                // Keystores are salted anew on every write: compare what they hold instead.
                FileKind::Pkcs12 => read_output(path).is_some_and(|der| {
                    output
                        .pkcs12_password
                        .as_ref()
                        .is_some_and(|password| bundle.pkcs12_holds_leaf(&der, password))
                }),
                _ => contents(*kind, &bundle, output)?.is_some_and(|expected| {
                    read_output(path).is_some_and(|found| *found == **expected)
                }),
            };
            if !up_to_date {
                write_output(&bundle, output, *kind, path)?;
                repaired += 1;
            }
            remove_stale_temps(path);
        }
        Ok(repaired)
    }

    /// Switches `current` to `versions/VERSION` by renaming a new link over the old one.
    fn point_current(&self, name: &str, version: &str) -> Result<(), StoreError> {
        let cert_dir = self.cert_dir(name);
        let tmp = cert_dir.join(format!(".current.{}.tmp", std::process::id()));
        let target = Path::new("versions").join(version);
        let _ = fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&target, &tmp).map_err(|source| StoreError::Write {
            path: tmp.clone(),
            source,
        })?;
        rename_synced(&tmp, &cert_dir.join("current"), &cert_dir)
    }

    /// Makes a fresh, hidden directory to fill before it is renamed into place.
    fn new_version_dir(&self, versions: &Path) -> Result<(PathBuf, String), StoreError> {
        let stamp = crate::timefmt::stamp(SystemTime::now());
        for attempt in 0..100u32 {
            let version = if attempt == 0 {
                stamp.clone()
            } else {
                format!("{stamp}-{attempt}")
            };
            if versions.join(&version).exists() {
                continue;
            }
            let staging = versions.join(format!(".{version}.partial"));
            match fs::DirBuilder::new().mode(0o755).create(&staging) {
                Ok(()) => return Ok((staging, version)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(source) => {
                    return Err(StoreError::Write {
                        path: staging,
                        source,
                    });
                }
            }
        }
        Err(StoreError::Write {
            path: versions.join(stamp),
            source: io::Error::new(io::ErrorKind::AlreadyExists, "no free version name"),
        })
    }

    /// Keeps the newest [`KEEP_VERSIONS`] versions and those in `keep`; removes leftovers of
    /// interrupted installs. Failures here only cost disk space, so they are logged, not raised.
    fn prune(&self, versions: &Path, keep: &[Option<&str>]) {
        let Ok(entries) = fs::read_dir(versions) else {
            return;
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        names.sort_unstable_by(|a, b| b.cmp(a));
        let mut kept = 0;
        for name in names {
            // A hidden entry is the leftover of an interrupted install: we hold the lock, so
            // no install is filling it now.
            let leftover = name.starts_with('.');
            if !leftover && (keep.contains(&Some(name.as_str())) || kept < KEEP_VERSIONS) {
                kept += 1;
                continue;
            }
            if let Err(e) = fs::remove_dir_all(versions.join(&name)) {
                tracing::warn!(version = %name, error = %e, "could not remove an old certificate version");
            }
        }
    }

    fn lock(&self, cert_dir: &Path) -> Result<Flock<File>, StoreError> {
        let path = cert_dir.join(".lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|source| StoreError::Write {
                path: path.clone(),
                source,
            })?;
        Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, errno)| StoreError::Write {
            path,
            source: errno.into(),
        })
    }
}

/// When root ran a one-off command against a state directory that belongs to another user (the
/// service's), gives every entry root created there to that user and group: the service must
/// be able to read the keys and replace the versions. Failures are logged, not raised.
pub fn hand_back(state_dir: &Path) {
    use std::os::unix::fs::MetadataExt;
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    let Ok(top) = fs::symlink_metadata(state_dir) else {
        return;
    };
    if top.uid() == 0 {
        return;
    }
    let (uid, gid) = (top.uid(), top.gid());
    // Bounded: a state directory holds a few files per certificate and version.
    let mut pending = vec![state_dir.to_path_buf()];
    let mut seen = 0;
    while let Some(dir) = pending.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten().take(100_000) {
            seen += 1;
            let path = entry.path();
            let Ok(meta) = fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.uid() == 0
                && let Err(e) = std::os::unix::fs::lchown(&path, Some(uid), Some(gid))
            {
                tracing::warn!(path = %path.display(), error = %e, "cannot give a file back to the state directory's owner");
            }
            if meta.is_dir() {
                pending.push(path);
            }
        }
        if seen > 100_000 {
            break;
        }
    }
}

/// A CA's directory URL as a readable file name: `acme-v02.api.letsencrypt.org_directory`.
pub fn directory_slug(directory: &str) -> String {
    directory
        .trim_start_matches("https://")
        .chars()
        .map(
            |c| match c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                true => c,
                false => '_',
            },
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn atomic_write_sets_mode_before_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        write_atomic(&path, b"secret", FileMode::PRIVATE).unwrap();
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        write_atomic(
            &path,
            b"second",
            FileMode {
                mode: 0o640,
                ..FileMode::PRIVATE
            },
        )
        .unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o640
        );
        let leftovers = fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(leftovers, 1, "no temp file may stay behind");
    }

    #[test]
    fn failed_write_names_the_path_and_leaves_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no/such/dir/cert.pem");
        let err = write_atomic(&missing, b"x", FileMode::PUBLIC)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no/such/dir/cert.pem") && err.contains("parent directory"),
            "{err}"
        );
    }
}
