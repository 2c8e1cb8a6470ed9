//! Every outside program a test or benchmark starts is installed by `scripts/deps --tests`:
//! a new test that starts a program nobody installs fails here, on the machine where it was
//! written, instead of on the next fresh machine. Programs are found in the sources as
//! `program("…")`, `require("…")` and `Command::new("…")`.

use crate::common;

use std::fs;
use std::path::{Path, PathBuf};

use common::programs;

const STARTERS: [&str; 3] = ["program(\"", "require(\"", "Command::new(\""];

fn sources(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// `(program, file)` for each program a source file starts.
fn started_programs() -> Vec<(String, PathBuf)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    sources(&root.join("tests"), &mut files);
    sources(&root.join("benches"), &mut files);
    let mut started = Vec::new();
    for file in files {
        let text = fs::read_to_string(&file).expect("read a test source");
        for starter in STARTERS {
            for (at, _) in text.match_indices(starter) {
                let rest = &text[at + starter.len()..];
                let Some(end) = rest.find('"') else { continue };
                let name = &rest[..end];
                // Only a plain program name counts (not a format string or a path).
                let plain = |c: char| c.is_ascii_alphanumeric() || "-_.".contains(c);
                if !name.is_empty() && name.chars().all(plain) {
                    started.push((name.to_string(), file.clone()));
                }
            }
        }
    }
    started
}

#[test]
fn every_program_the_tests_start_is_installed_by_scripts_deps() {
    let started = started_programs();
    assert!(
        started.iter().any(|(name, _)| name == "pebble"),
        "the scan found no program at all: {started:?}"
    );
    let unlisted: Vec<String> = started
        .iter()
        .filter(|(name, _)| programs::package_of(name).is_none())
        .map(|(name, file)| format!("{name} (started in {})", file.display()))
        .collect();
    assert!(
        unlisted.is_empty(),
        "scripts/deps does not install: {}; add a `need PROGRAM PACKAGE` line for each",
        unlisted.join(", ")
    );
}

#[test]
fn every_program_scripts_deps_lists_is_installed() {
    let listed = programs::listed();
    assert!(listed.len() >= 10, "scripts/deps lists too few: {listed:?}");
    let missing: Vec<String> = listed
        .iter()
        .filter(|(program, _)| programs::locate(program).is_none())
        .map(|(program, package)| format!("{program} (package {package})"))
        .collect();
    assert!(
        missing.is_empty(),
        "missing: {}; run scripts/deps --tests",
        missing.join(", ")
    );
}
