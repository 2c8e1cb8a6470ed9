//! Scheduling against a real ACME server that implements renewalInfo (RFC 9773):
//! acme2certifier from PyPI, whose window can be set to open later than certkeeper's own
//! two-thirds rule, so that a renewal planned inside it can only come from ARI. ARI with
//! `replaces`, and profiles, are tested against pebble 2.10 (`tests/current_pebble.rs`).

use crate::common;

use std::fs;
use std::path::PathBuf;

use common::{Acme2certifier, BIN, free_port};

struct Setup {
    _dir: tempfile::TempDir,
    config: PathBuf,
}

fn certkeeper_for(a2c: &Acme2certifier) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("certkeeper.toml");
    fs::write(
        &config,
        format!(
            "[acme]\ndirectory = \"{url}\"\nstaging_directory = \"{url}\"\nextra_root = \"{root}\"\n\
             contact = [\"ops@example.com\"]\n\n[daemon]\nstate_dir = \"state\"\nlisten = \"127.0.0.1:{port}\"\n\n\
             [[certificate]]\nname = \"media\"\ndomains = [\"media.example.com\"]\nchallenge = \"http-01\"\n",
            url = a2c.directory_url,
            root = a2c.tls_root.display(),
            port = free_port()
        ),
    )
    .unwrap();
    Setup { _dir: dir, config }
}

fn run(setup: &Setup, args: &[&str]) -> String {
    let output = std::process::Command::new(BIN)
        .arg("--config")
        .arg(&setup.config)
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{args:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).to_string()
}

#[test]
fn the_renewal_time_comes_from_the_cas_ari_window() {
    // The window opens at 80% of a 10-day lifetime: later than certkeeper's own two-thirds rule,
    // so a renewal planned inside it can only come from ARI.
    let a2c = Acme2certifier::start(10, "[Renewalinfo]\nrenewalthreshold_pctg: 80\n");
    let setup = certkeeper_for(&a2c);
    run(&setup, &["renew"]);
    let rows: serde_json::Value =
        serde_json::from_str(&run(&setup, &["status", "--json"])).unwrap();
    let window = rows[0]["ari_window"]
        .as_array()
        .unwrap_or_else(|| panic!("no ARI window: {rows:#}"));
    let (start, end) = (window[0].as_str().unwrap(), window[1].as_str().unwrap());
    let next = rows[0]["next_renewal"].as_str().unwrap();
    // Same format (UTC, to the second), so the strings order like the times.
    assert!(
        start <= next && next <= end,
        "next renewal {next} outside the CA's window {start} .. {end}"
    );
    println!("ARI window {start} .. {end}; renewal planned {next}");

    // Forced before the window: a new certificate, not the replacement (nothing named).
    let stderr = renew_forced(&setup);
    assert!(
        !stderr.contains("naming the certificate it replaces"),
        "{stderr}"
    );
}

/// Inside the window (acme2certifier's `renewal_force` opens it at once) the renewal names the
/// certificate it replaces. acme2certifier does not implement `replaces` (it does not echo it
/// in the order), so certkeeper orders again without it: the renewal must still succeed.
#[test]
fn a_ca_that_ignores_replaces_gets_the_order_again_without() {
    let a2c = Acme2certifier::start(10, "[Renewalinfo]\nrenewal_force: True\n");
    let setup = certkeeper_for(&a2c);
    run(&setup, &["renew"]);
    let stderr = renew_forced(&setup);
    assert!(
        stderr.contains(
            "the CA refused the order naming the certificate it replaces; ordering again without"
        ),
        "{stderr}"
    );
}

/// `renew --force` with debug logs; its log (stderr), the run having succeeded.
fn renew_forced(setup: &Setup) -> String {
    let output = std::process::Command::new(BIN)
        .arg("--config")
        .arg(&setup.config)
        .args(["renew", "--force"])
        .env("RUST_LOG", "certkeeper=debug")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(output.status.success(), "{stderr}");
    stderr
}
