//! Webroot mode: another web server holds the CA's port and serves certkeeper's answers from a
//! directory; certkeeper does not need the port at all.

use crate::common;

use std::fs;

use common::{Certkeeper, Nginx, Pebble};

#[test]
fn http01_through_another_servers_webroot() {
    let pebble = Pebble::start(None);
    let root = tempfile::tempdir().unwrap();
    // nginx holds the port pebble validates on, as a media server's web server would hold 80.
    let _nginx = Nginx::start_http(pebble.http_port, root.path());
    let ck = Certkeeper::new(
        &pebble,
        &["media.example.com"],
        &format!("webroot = \"{}\"", root.path().display()),
    );
    let out = ck.ok(&["renew"]);
    assert!(out.contains("renewed"), "{out}");
    let challenges = root.path().join(".well-known/acme-challenge");
    let left: Vec<_> = fs::read_dir(&challenges).unwrap().collect();
    assert!(
        left.is_empty(),
        "answer files must be removed after the order: {left:?}"
    );
}
