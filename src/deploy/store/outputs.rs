//! The single output files a media server reads (fullchain, key, combined, PKCS#12): what each
//! holds, where it goes, and whether its directory is safe and writable.

use super::*;

/// The bytes of this file for `bundle`, or `None` when it is not wanted (no PKCS#12
/// password configured).
pub(super) fn contents(
    kind: FileKind,
    bundle: &Bundle,
    output: &Output,
) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
    let text = |s: String| Ok(Some(Zeroizing::new(s.into_bytes())));
    match kind {
        FileKind::Cert => text(bundle.cert_pem()),
        FileKind::Chain => text(bundle.chain_pem()),
        FileKind::Fullchain => text(bundle.fullchain_pem()),
        FileKind::Key => text(bundle.key_pem().to_string()),
        FileKind::Combined => Ok(Some(Zeroizing::new(
            bundle.combined_pem().as_bytes().to_vec(),
        ))),
        FileKind::Pkcs12 => match &output.pkcs12_password {
            None => Ok(None),
            Some(password) => bundle
                .pkcs12(password)
                .map(|der| Some(Zeroizing::new(der)))
                .map_err(|source| StoreError::Pkcs12 { source }),
        },
    }
}

/// What an output file holds now, when it is a regular file (a FIFO planted there is not waited
/// on: it counts as out of date and is renamed over).
pub(super) fn read_output(path: &Path) -> Option<Vec<u8>> {
    let (dir, name) = split_file(path).ok()?;
    SafeDir::open(dir, false).ok()?.read_regular(name)
}

/// Refuses output directories that any user may write to (without the sticky bit): another
/// user could swap a file there between our write and the server's read.
pub fn check_output_dirs(output: &Output) -> Result<(), StoreError> {
    for dir in output_dirs(output) {
        let Ok(meta) = fs::metadata(dir) else {
            continue; // created by us, 0755, when written
        };
        let mode = meta.permissions().mode();
        if mode & 0o002 != 0 && mode & 0o1000 == 0 {
            return Err(StoreError::Unsafe {
                path: dir.to_path_buf(),
                reason: format!(
                    "any user may write to it (mode {:o}, no sticky bit)",
                    mode & 0o7777
                ),
            });
        }
    }
    Ok(())
}

/// Whether every directory that receives output files can be written, so that a renewal
/// that could not be deployed is not ordered (and a CA rate limit not spent) at all.
pub fn check_outputs_writable(output: &Output) -> Result<(), StoreError> {
    output_dirs(output).try_for_each(probe_dir)
}

/// The directories that receive the single output files and the output link.
fn output_dirs(output: &Output) -> impl Iterator<Item = &Path> {
    output
        .files
        .iter()
        .filter_map(|(_, path)| path.parent())
        .chain(output.link.as_deref().and_then(Path::parent))
}

/// Copies `bundle` to the configured single output files, each atomically.
pub fn write_outputs(bundle: &Bundle, output: &Output) -> Result<(), StoreError> {
    for (kind, path) in &output.files {
        write_output(bundle, output, *kind, path)?;
    }
    Ok(())
}

pub(super) fn write_output(
    bundle: &Bundle,
    output: &Output,
    kind: FileKind,
    path: &Path,
) -> Result<(), StoreError> {
    let Some(contents) = contents(kind, bundle, output)? else {
        return Ok(());
    };
    let (dir, name) = split_file(path)?;
    SafeDir::open(dir, true)?.write_atomic(name, &contents, FileMode::for_kind(kind, output))
}

/// An output file's directory and name (config validation guarantees both).
pub(super) fn split_file(path: &Path) -> Result<(&Path, &str), StoreError> {
    match (path.parent(), path.file_name().and_then(|n| n.to_str())) {
        (Some(dir), Some(name)) => Ok((dir, name)),
        _ => Err(StoreError::Write {
            path: path.to_path_buf(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "not a file path"),
        }),
    }
}
