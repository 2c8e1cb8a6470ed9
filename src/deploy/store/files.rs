//! One file written atomically, with its owner and mode set before any byte lands.

use super::*;

/// Ownership and mode for one written file.
#[derive(Debug, Clone, Copy)]
pub struct FileMode {
    pub mode: u32,
    pub owner: Option<u32>,
    pub group: Option<u32>,
}

impl FileMode {
    pub const PRIVATE: FileMode = FileMode {
        mode: 0o600,
        owner: None,
        group: None,
    };
    pub const PUBLIC: FileMode = FileMode {
        mode: 0o644,
        owner: None,
        group: None,
    };

    pub(super) fn for_kind(kind: FileKind, output: &Output) -> FileMode {
        FileMode {
            mode: if kind.holds_key() {
                output.key_mode
            } else {
                0o644
            },
            owner: output.owner,
            group: output.group,
        }
    }
}

/// Writes `contents` to `path` so that readers see the old file or the new one, never a part
/// (see [`SafeDir::write_atomic`]); `path`'s directory is opened without following a planted link.
pub fn write_atomic(path: &Path, contents: &[u8], mode: FileMode) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let opened = SafeDir::open(dir, false).map_err(|e| match e {
        StoreError::Write { source, .. } => StoreError::Write {
            path: path.to_path_buf(),
            source,
        },
        other => other,
    })?;
    opened.write_atomic(name, contents, mode)
}

/// Temp files of [`write_atomic`] for `path` that a killed process left behind.
pub(super) fn remove_stale_temps(path: &Path) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return;
    };
    let prefix = format!(".{name}.");
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let stale = file_name
            .to_str()
            .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".tmp"));
        if stale {
            let _ = fs::remove_file(entry.path());
        }
    }
}

pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates `dir` and its missing parents (0755), without following a planted link.
pub fn create_dir(dir: &Path) -> Result<(), StoreError> {
    SafeDir::open(dir, true).map(drop)
}

pub(super) fn rename_synced(from: &Path, to: &Path, dir: &Path) -> Result<(), StoreError> {
    fs::rename(from, to)
        .and_then(|()| sync_dir(dir))
        .map_err(|source| StoreError::Write {
            path: to.to_path_buf(),
            source,
        })
}

/// Creates `dir` if needed and checks new files can be written there
/// ([`SafeDir::check_writable`]).
pub(super) fn probe_dir(dir: &Path) -> Result<(), StoreError> {
    SafeDir::open(dir, true)?.check_writable()
}
