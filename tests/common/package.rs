//! This tree's Debian package, built once (behind one lock) for every test that needs it.

use super::*;

/// This tree's Debian package (`scripts/package`, the dev profile), built once for every test
/// that needs it: two builds at once write the same files under `target/`, and one test read
/// the other's half-written package.
pub fn debian_package() -> PathBuf {
    let mut built = PACKAGE.lock().unwrap_or_else(|e| e.into_inner());
    built_package(&mut built)
}

/// This tree's package again (no new build), as version `version`, in `dir`.
pub fn debian_package_as(version: &str, dir: &Path) -> PathBuf {
    let mut built = PACKAGE.lock().unwrap_or_else(|e| e.into_inner());
    built_package(&mut built);
    let root = env!("CARGO_MANIFEST_DIR");
    let repacked = program("cargo")
        .args([
            "deb",
            "--no-build",
            "--profile",
            "dev",
            "--deb-version",
            version,
            "--output",
        ])
        .arg(dir)
        .current_dir(root)
        .output()
        .expect("cargo deb");
    assert!(
        repacked.status.success(),
        "cargo deb: {}",
        String::from_utf8_lossy(&repacked.stderr)
    );
    fs::read_dir(dir)
        .expect("package dir")
        .map(|e| e.expect("entry").path())
        .find(|p| p.to_string_lossy().contains(version))
        .expect("the package")
}

/// Every use of cargo-deb goes through this lock: it empties target/debian/ whenever it packs,
/// even into another directory (two at once left the package test listing a deleted file).
static PACKAGE: std::sync::Mutex<Option<PathBuf>> = std::sync::Mutex::new(None);

/// The package built once (kept outside target/debian/, which cargo-deb empties).
fn built_package(built: &mut Option<PathBuf>) -> PathBuf {
    if let Some(deb) = built.as_ref() {
        return deb.clone();
    }
    let root = env!("CARGO_MANIFEST_DIR");
    let output = program("bash")
        .arg(format!("{root}/scripts/package"))
        .args(["--profile", "dev"])
        .output()
        .expect("scripts/package");
    assert!(
        output.status.success(),
        "scripts/package: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let debs: Vec<PathBuf> = fs::read_dir(format!("{root}/target/debian"))
        .expect("target/debian")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    assert_eq!(debs.len(), 1, "{debs:?}");
    let kept = PathBuf::from(format!("{root}/target/tests-package"));
    fs::create_dir_all(&kept).expect("target/tests-package");
    let kept = kept.join(debs[0].file_name().expect("a file name"));
    fs::copy(&debs[0], &kept).expect("keep the package");
    *built = Some(kept.clone());
    kept
}
