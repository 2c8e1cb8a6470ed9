//! Issuance and renewal through the real binary against a real pebble.

use crate::common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{Certkeeper, Pebble, key_matches};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use x509_parser::prelude::{FromDer, X509Certificate};

fn mode(path: &Path) -> u32 {
    fs::metadata(path).expect("metadata").permissions().mode() & 0o777
}

/// Every file and link under `dir`, with its bytes (or link target).
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in fs::read_dir(&next).expect("read dir") {
            let path = entry.expect("entry").path();
            let meta = fs::symlink_metadata(&path).expect("metadata");
            let key = path
                .strip_prefix(dir)
                .expect("prefix")
                .display()
                .to_string();
            if meta.file_type().is_symlink() {
                files.insert(
                    key,
                    fs::read_link(&path)
                        .expect("link")
                        .into_os_string()
                        .into_encoded_bytes(),
                );
            } else if meta.is_dir() {
                pending.push(path);
            } else {
                files.insert(key, fs::read(&path).expect("read"));
            }
        }
    }
    files
}

#[test]
fn first_issuance_writes_every_file_with_its_mode_and_a_chain_to_pebbles_root() {
    let pebble = Pebble::start(None);
    let ck = Certkeeper::new(&pebble, &["media.example.com", "Live.Example.com"], "");
    let out = ck.ok(&["renew"]);
    assert!(out.contains("media: renewed"), "{out}");

    for dir in [ck.current_dir(), ck.path("out")] {
        for (file, expected) in [
            ("cert.pem", 0o644),
            ("chain.pem", 0o644),
            ("fullchain.pem", 0o644),
            ("privkey.pem", 0o600),
            ("combined.pem", 0o600),
        ] {
            assert_eq!(mode(&dir.join(file)), expected, "{}/{file}", dir.display());
        }
        let fullchain = fs::read(dir.join("fullchain.pem")).unwrap();
        assert!(key_matches(
            &fullchain,
            &fs::read(dir.join("privkey.pem")).unwrap()
        ));
        assert!(key_matches(
            &fs::read(dir.join("combined.pem")).unwrap(),
            &fs::read(dir.join("combined.pem")).unwrap()
        ));
    }
    let accounts: Vec<_> = fs::read_dir(ck.path("state/accounts")).unwrap().collect();
    assert_eq!(accounts.len(), 1);
    assert_eq!(
        mode(&accounts[0].as_ref().unwrap().path()),
        0o600,
        "account key must be 0600"
    );

    // leaf -> intermediate -> pebble's issuing root, each signature checked.
    let mut ders: Vec<CertificateDer> =
        CertificateDer::pem_slice_iter(&fs::read(ck.current_dir().join("fullchain.pem")).unwrap())
            .collect::<Result<_, _>>()
            .unwrap();
    let root = pebble.issuing_root_pem();
    ders.push(CertificateDer::from_pem_slice(root.as_bytes()).expect("pebble root"));
    assert_eq!(ders.len(), 3, "leaf, intermediate, root");
    let certs: Vec<X509Certificate> = ders
        .iter()
        .map(|d| X509Certificate::from_der(d).unwrap().1)
        .collect();
    for pair in certs.windows(2) {
        pair[0]
            .verify_signature(Some(pair[1].public_key()))
            .expect("each certificate is signed by the next");
    }
    let names: Vec<String> = certs[0]
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert!(
        names.iter().any(|n| n.contains("live.example.com")),
        "names normalized: {names:?}"
    );

    let status = ck.ok(&["status"]);
    assert!(
        status.contains("media") && status.contains("ok"),
        "{status}"
    );
    let json: serde_json::Value = serde_json::from_str(&ck.ok(&["status", "--json"])).unwrap();
    assert!(json[0]["days_left"].as_i64().unwrap() > 1000);
}

#[test]
fn renew_without_force_orders_nothing_and_forced_renewal_swaps_current() {
    let pebble = Pebble::start(None);
    let ck = Certkeeper::new(&pebble, &["media.example.com"], "");
    ck.ok(&["renew"]);
    let first = ck.current_dir();
    assert_eq!(pebble.orders(), 1);

    let out = ck.ok(&["renew"]);
    assert!(out.contains("not due until"), "{out}");
    assert_eq!(
        pebble.orders(),
        1,
        "a valid certificate must not be ordered again"
    );

    ck.ok(&["renew", "--force", "media"]);
    let second = ck.current_dir();
    assert_ne!(first, second, "current must point at the new version");
    assert!(first.exists(), "the previous version is kept");
    assert_eq!(ck.versions().len(), 2);
    assert_ne!(
        fs::read(first.join("privkey.pem")).unwrap(),
        fs::read(second.join("privkey.pem")).unwrap()
    );
    assert_eq!(
        fs::read(second.join("fullchain.pem")).unwrap(),
        fs::read(ck.path("out/fullchain.pem")).unwrap()
    );

    let unknown = ck.run(&["renew", "nosuch"]);
    assert_eq!(unknown.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("configured: media"));
}

#[test]
fn reuse_key_keeps_the_key_and_versions_are_pruned_to_five() {
    let pebble = Pebble::start(None);
    let ck = Certkeeper::new(&pebble, &["media.example.com"], "reuse_key = true");
    ck.ok(&["renew"]);
    let key = fs::read(ck.current_dir().join("privkey.pem")).unwrap();
    for _ in 0..6 {
        ck.ok(&["renew", "--force"]);
    }
    assert_eq!(fs::read(ck.current_dir().join("privkey.pem")).unwrap(), key);
    let versions = ck.versions();
    assert_eq!(versions.len(), 5, "{versions:?}");
    assert!(ck.current_dir().ends_with(versions.last().unwrap()));
}

#[test]
fn dry_run_leaves_every_live_file_byte_identical() {
    let pebble = Pebble::start(None);
    let marker = tempfile::tempdir().unwrap();
    let reloaded = marker.path().join("reloaded");
    let reload = format!("reload = \"touch {}\"", reloaded.display());
    let ck = Certkeeper::new(&pebble, &["media.example.com"], &reload);
    ck.ok(&["renew"]);
    fs::remove_file(&reloaded).unwrap();
    let before = (snapshot(&ck.path("state/certs")), snapshot(&ck.path("out")));
    let orders = pebble.orders();

    let out = ck.ok(&["renew", "--dry-run"]);
    assert!(out.contains("nothing is written to live paths"), "{out}");
    assert!(out.contains("dry run ok"), "{out}");
    assert_eq!(
        pebble.orders(),
        orders + 1,
        "the dry run really orders from the (staging) CA"
    );
    let after = (snapshot(&ck.path("state/certs")), snapshot(&ck.path("out")));
    assert!(before == after, "a dry run changed live files");
    assert!(!reloaded.exists(), "a dry run must not run the reload");
}

#[test]
fn reload_runs_with_the_paths_in_its_environment() {
    let pebble = Pebble::start(None);
    let marker = tempfile::tempdir().unwrap();
    let reloaded = marker.path().join("reloaded");
    let reload = format!(
        "reload = \"echo $CERTKEEPER_NAME $CERTKEEPER_DOMAINS $CERTKEEPER_FULLCHAIN > {}\"",
        reloaded.display()
    );
    let ck = Certkeeper::new(&pebble, &["media.example.com"], &reload);
    ck.ok(&["renew"]);
    let written = fs::read_to_string(&reloaded).unwrap_or_default();
    assert!(
        written.starts_with("media media.example.com /"),
        "{written}"
    );
    assert!(written.trim_end().ends_with("fullchain.pem"), "{written}");

    let failing = Certkeeper::new(
        &pebble,
        &["media.example.com"],
        "reload = \"echo nope >&2; exit 3\"",
    );
    let output = failing.run(&["renew"]);
    assert!(!output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("nope") && stdout.contains("exit status: 3"),
        "{stdout}"
    );
    let status = failing.ok(&["status"]);
    assert!(
        status.contains("issued via http-01")
            && status.contains(", but reload")
            && status.contains("nope"),
        "{status}"
    );
    let hanging = Certkeeper::new(
        &pebble,
        &["media.example.com"],
        "reload = \"sleep 30\"\nreload_timeout_secs = 1",
    );
    let started = std::time::Instant::now();
    let stdout = String::from_utf8_lossy(&hanging.run(&["renew"]).stdout).to_string();
    assert!(
        stdout.contains("did not finish within 1s and was killed"),
        "{stdout}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "the reload must be bounded"
    );
    // The certificate is in place: a failed reload must not make it be ordered again.
    let again = failing.ok(&["renew"]);
    assert!(again.contains("not due until"), "{again}");
}

#[test]
fn a_ca_that_forgot_the_account_gets_a_new_one() {
    let mut pebble = Pebble::start(None);
    let ck = Certkeeper::new(&pebble, &["media.example.com"], "");
    ck.ok(&["renew"]);
    pebble.restart();
    let output = ck.run(&["renew", "--force"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("registering a new one"), "{stderr}");
    let accounts: Vec<String> = fs::read_dir(ck.path("state/accounts"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        accounts.len(),
        2,
        "the old credentials are kept aside: {accounts:?}"
    );
    assert_eq!(ck.versions().len(), 2);
}

#[test]
fn external_account_binding_registers_with_the_configured_key() {
    let key = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W";
    let pebble = Pebble::start_with(None, Some(("kid-7", key)));
    let secrets = tempfile::tempdir().unwrap();
    let key_file = secrets.path().join("eab.key");
    fs::write(&key_file, format!("{key}\n")).unwrap();

    let ck = Certkeeper::new(&pebble, &["media.example.com"], "");
    let text = fs::read_to_string(&ck.config).unwrap();
    let without = text.replace(
        "[daemon]",
        "[acme.eab]\nkey_id = \"wrong-kid\"\nhmac_key_file = \"KEY\"\n\n[daemon]",
    );
    fs::write(
        &ck.config,
        without.replace("KEY", &key_file.display().to_string()),
    )
    .unwrap();
    let refused = ck.run(&["renew"]);
    assert!(!refused.status.success(), "a wrong key id must be refused");
    let stdout = String::from_utf8_lossy(&refused.stdout);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stdout.contains("the CA refused to create the ACME account with the EAB key id wrong-kid")
            && stdout.contains("mint a new one"),
        "{stdout}{stderr}"
    );

    fs::write(
        &ck.config,
        fs::read_to_string(&ck.config)
            .unwrap()
            .replace("wrong-kid", "kid-7"),
    )
    .unwrap();
    ck.ok(&["renew", "--force"]);
    assert_eq!(ck.versions().len(), 1);
}
