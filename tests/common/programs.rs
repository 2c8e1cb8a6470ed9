//! The outside programs the tests and benchmarks start, and the Debian package of each, read
//! from the `need PROGRAM PACKAGE` lines of `scripts/deps` (the one list; `tests/deps.rs` checks
//! that every program started under `tests/` and `benches/` is on it).

use std::path::PathBuf;
use std::process::Command;

const DEPS_SCRIPT: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/deps"));

/// `(program, package)` for each `need` line of `scripts/deps`.
pub fn listed() -> Vec<(&'static str, &'static str)> {
    DEPS_SCRIPT
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            match (words.next(), words.next(), words.next()) {
                (Some("need"), Some(program), Some(package)) if !program.starts_with('"') => {
                    Some((program, package))
                }
                _ => None,
            }
        })
        .collect()
}

/// The Debian package `scripts/deps` installs `program` from, if it lists it.
pub fn package_of(program: &str) -> Option<&'static str> {
    listed()
        .into_iter()
        .find(|(listed, _)| *listed == program)
        .map(|(_, package)| package)
}

/// Where `program` is installed: the PATH, or the sbin directories a non-root PATH lacks.
pub fn locate(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// Stops the test with one clear message when `program` is not installed.
pub fn require(program: &str) -> PathBuf {
    match locate(program) {
        Some(found) => found,
        None => match package_of(program) {
            Some(package) => {
                panic!("{program} is missing: run scripts/deps --tests (package {package})")
            }
            None => panic!(
                "{program} is missing, and scripts/deps does not list it: add a `need {program} PACKAGE` line there"
            ),
        },
    }
}

/// A command for `program`, checked to be installed first.
pub fn program(program: &str) -> Command {
    Command::new(require(program))
}
