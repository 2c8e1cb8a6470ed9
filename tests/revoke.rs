//! `certkeeper revoke` against pebble: the current certificate is replaced at once, then revoked
//! at the CA (pebble's management API says so); through a running daemon and standalone.

use crate::common;

use std::fs;
use std::time::Duration;

use common::{Certkeeper, Pebble};

fn serial(ck: &Certkeeper) -> String {
    let pem = fs::read(ck.current_dir().join("fullchain.pem")).unwrap();
    certkeeper::deploy::bundle::read_leaf(&pem).unwrap().serial
}

#[test]
fn revoke_replaces_then_revokes_through_the_daemon_and_standalone() {
    let pebble = Pebble::start(None);
    let ck = Certkeeper::new(&pebble, &["media.example.com"], "reuse_key = true");
    ck.ok(&["renew"]);
    let first = serial(&ck);
    let first_key = fs::read(ck.current_dir().join("privkey.pem")).unwrap();

    // Standalone, for a compromised key: a new key, then the old certificate revoked.
    let said = ck.ok(&["revoke", "media", "--reason", "keyCompromise"]);
    assert!(said.contains("media: renewed, valid until"), "{said}");
    assert!(
        said.contains(&format!("revoked serial {first} (keyCompromise)")),
        "{said}"
    );
    let second = serial(&ck);
    assert_ne!(first, second);
    assert_ne!(
        first_key,
        fs::read(ck.current_dir().join("privkey.pem")).unwrap(),
        "a compromised key is never reused"
    );
    let status = pebble.cert_status(&first);
    assert!(status.contains("\"Revoked\""), "pebble says: {status}");
    assert!(pebble.cert_status(&second).contains("\"Valid\""));

    // Through the running daemon.
    let _daemon = ck.spawn_daemon();
    ck.wait_until("the control socket", Duration::from_secs(10), || {
        ck.path("state/control.sock").exists()
    });
    let output = ck.run(&["revoke", "media", "--reason", "superseded"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{said}{stderr}");
    assert!(stderr.contains("through the running daemon"), "{stderr}");
    assert!(
        said.contains(&format!("revoked serial {second} (superseded)")),
        "{said}"
    );
    assert!(pebble.cert_status(&second).contains("\"Revoked\""));
    assert_ne!(serial(&ck), second);

    // Nothing configured by that name: a clear refusal.
    let output = ck.run(&["revoke", "nosuch"]);
    assert_eq!(output.status.code(), Some(78));
}

#[test]
fn revoke_signed_by_the_certificates_own_key() {
    let pebble = Pebble::start(None);
    let ck = Certkeeper::new(&pebble, &["media.example.com"], "");
    ck.ok(&["renew"]);
    let first = serial(&ck);
    // The operator's copy of the key, as when the account key is lost.
    let key = ck.path("old-key.pem");
    fs::copy(ck.current_dir().join("privkey.pem"), &key).unwrap();

    // A key that is not this certificate's: the CA refuses, and says so.
    let stranger = ck.path("stranger.pem");
    fs::write(
        &stranger,
        rcgen::KeyPair::generate().unwrap().serialize_pem(),
    )
    .unwrap();
    let output = ck.run(&["revoke", "media", "--key", stranger.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{said}");
    assert!(
        said.contains(&format!("NOT REVOKED (serial {first})")),
        "{said}"
    );
    // In the CA's own words, with the kind of its problem.
    assert!(
        said.contains("the CA refused: ") && said.contains("(urn:ietf:params:acme:error:"),
        "{said}"
    );
    assert!(pebble.cert_status(&first).contains("\"Valid\""));

    // The right key: replaced, then revoked with a JWS signed by that key.
    let second = serial(&ck);
    fs::copy(ck.current_dir().join("privkey.pem"), &key).unwrap();
    let said = ck.ok(&[
        "revoke",
        "media",
        "--key",
        key.to_str().unwrap(),
        "--reason",
        "superseded",
    ]);
    assert!(
        said.contains(&format!("revoked serial {second} (superseded)")),
        "{said}"
    );
    assert!(
        pebble.cert_status(&second).contains("\"Revoked\""),
        "{}",
        pebble.cert_status(&second)
    );
}
