//! Against the current pebble (Debian sid's, 2.10 or later, fetched by `scripts/deps --tests`):
//! what Debian 12's pebble 2.4 cannot show. It offers renewal information (ARI, RFC 9773).

use std::fs;

use crate::common::{Certkeeper, Pebble};

/// A renewal asks for the renewal window and names the certificate it replaces; the CA takes
/// it as a replacement.
#[test]
fn a_renewal_names_the_certificate_it_replaces() {
    let pebble = Pebble::start_current(serde_json::Value::Null);
    let ck = Certkeeper::new(&pebble, &["media.example.com"], "");
    ck.ok(&["renew"]);
    let status: serde_json::Value =
        serde_json::from_slice(&ck.run(&["status", "--json"]).stdout).unwrap();
    let said = ck.ok(&["renew", "--force"]);
    assert!(said.contains("media: renewed"), "{said}");
    let log = fs::read_to_string(&pebble.log).unwrap();
    assert!(
        log.contains("is a replacement of"),
        "pebble took the order as a replacement:\n{log}"
    );
    assert_eq!(
        pebble.orders(),
        2,
        "one order each, none retried without `replaces`"
    );
    println!("status after the first certificate: {status}");
}
