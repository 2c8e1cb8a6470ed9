//! IP-address certificates (RFC 8738) against pebble: `127.0.0.1` ordered as an `ip`
//! identifier, proven over HTTP-01 and over TLS-ALPN-01 (asked for by its reverse-DNS name),
//! issued with an IP SAN that a TLS client verifies against pebble's root; DNS-01 refused at
//! load.

use crate::common;

use std::fs;

use common::{Certkeeper, Nginx, Pebble};

#[test]
fn an_ip_certificate_over_http01_and_tls_alpn01_verifies_by_address() {
    let pebble = Pebble::start(None);
    let ck = Certkeeper::new(&pebble, &["127.0.0.1"], "");
    let said = ck.ok(&["renew"]);
    assert!(
        said.contains("media: http-01 (the pre-flight check passed"),
        "{said}"
    );
    let fullchain = ck.current_dir().join("fullchain.pem");
    let leaf = certkeeper::deploy::bundle::read_leaf(&fs::read(&fullchain).unwrap()).unwrap();
    assert_eq!(leaf.names, ["127.0.0.1"]);

    // A TLS client that asks for the address verifies the IP SAN and pebble's chain.
    let nginx = Nginx::start(&fullchain, &ck.current_dir().join("privkey.pem"));
    let root = ck.path("pebble-root.pem");
    fs::write(&root, pebble.issuing_root_pem()).unwrap();
    assert_eq!(common::https_get(nginx.port, "/", &root).trim(), "ok");

    // TLS-ALPN-01 for an address: the CA asks for 1.0.0.127.in-addr.arpa.
    let text = fs::read_to_string(&ck.config).unwrap().replace(
        "domains = [\"127.0.0.1\"]",
        "domains = [\"127.0.0.1\"]\nchallenge = \"tls-alpn-01\"",
    );
    fs::write(&ck.config, text).unwrap();
    let said = ck.ok(&["renew", "--force"]);
    assert!(said.contains("media: tls-alpn-01"), "{said}");
    assert!(said.contains("media: renewed"), "{said}");
}

#[test]
fn an_address_with_dns01_only_is_refused_at_load() {
    let pebble = Pebble::start(None);
    let ck = Certkeeper::new(&pebble, &["127.0.0.1"], "challenge = \"dns-01\"");
    let text = fs::read_to_string(&ck.config).unwrap().replace(
        "[daemon]",
        "[dns01]\nprovider = \"exec\"\ncommand = \"/bin/true\"\n\n[daemon]",
    );
    fs::write(&ck.config, text).unwrap();
    let output = ck.run(&["status"]);
    let said = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(78), "{said}");
    assert!(
        said.contains("127.0.0.1 is an IP address, which only http-01 or tls-alpn-01"),
        "{said}"
    );
}
