//! TLS-ALPN-01 (RFC 8737) against pebble: with port 80 dropped by a packet filter (in a network
//! namespace the test creates, pebble inside it), `challenge = "auto"` climbs to TLS-ALPN-01
//! before ordering and says why in `status`; an explicit ladder is followed; the responder
//! holds its port only while a validation runs.

use crate::common;

use std::net::TcpListener;

use common::netlab::Netns;
use common::{Certkeeper, Pebble, require, require_root};

#[test]
fn auto_climbs_to_tls_alpn01_when_port_80_is_dropped() {
    if !require_root(
        "auto_climbs_to_tls_alpn01_when_port_80_is_dropped",
        "a network namespace and a packet filter",
    ) {
        return;
    }
    let netns = Netns::new("alpn");
    let pebble = Pebble::start_in(&netns.0);
    let ck = Certkeeper::new(&pebble, &["media.example.com"], "");
    netns.drop_tcp(pebble.http_port);

    let output = ck.run_in(&netns.0, &["renew"]);
    let said = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let why = format!(
        "media: tls-alpn-01 (the pre-flight check rules out http-01: port {} on 127.0.0.1 timed out",
        pebble.http_port
    );
    assert!(said.contains(&why), "{said}");
    assert!(said.contains("tls-alpn-01 reaches certkeeper"), "{said}");
    assert_eq!(pebble.orders(), 1, "no order wasted on http-01");
    let status = String::from_utf8_lossy(&ck.run_in(&netns.0, &["status"]).stdout).to_string();
    assert!(
        status.contains("ok via tls-alpn-01 (the pre-flight check rules out http-01"),
        "{status}"
    );
    let rows: serde_json::Value =
        serde_json::from_slice(&ck.run_in(&netns.0, &["status", "--json"]).stdout).unwrap();
    assert_eq!(rows[0]["challenge"], "tls-alpn-01", "{rows}");

    // The responder let go of its port once the validation was over.
    let released = common::program("ip")
        .args(["netns", "exec", &netns.0])
        .arg(require("ss"))
        .arg("-Hltn")
        .arg(format!("sport = :{}", pebble.tls_port))
        .output()
        .expect("ss");
    assert!(
        String::from_utf8_lossy(&released.stdout).trim().is_empty(),
        "port {} still held: {}",
        pebble.tls_port,
        String::from_utf8_lossy(&released.stdout)
    );
}

#[test]
fn an_explicit_ladder_is_followed_and_the_port_is_released() {
    let pebble = Pebble::start(None);
    let ck = Certkeeper::new(
        &pebble,
        &["media.example.com"],
        "challenge = [\"tls-alpn-01\"]",
    );
    let said = ck.ok(&["renew"]);
    assert!(
        said.contains("media: tls-alpn-01 (challenge = \"tls-alpn-01\" in the config)"),
        "{said}"
    );
    // Bound for the validation only: free again now.
    assert!(TcpListener::bind(("127.0.0.1", pebble.tls_port)).is_ok());
    // Port 443 held by another server: the validation cannot run, and says what to do. A
    // name not validated yet, or pebble's occasional reuse of the first authorization would
    // skip the validation and renew.
    let _holder = TcpListener::bind(("127.0.0.1", pebble.tls_port)).unwrap();
    ck.rewrite(
        &pebble,
        &["other.example.com"],
        "challenge = [\"tls-alpn-01\"]",
    );
    let output = ck.run(&["renew", "--force"]);
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{said}");
    assert!(said.contains("another process holds the port"), "{said}");
    assert!(said.contains("route acme-tls/1 to certkeeper"), "{said}");
    // `check` says so before any order.
    let output = ck.run(&["check"]);
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{said}");
    let row = said
        .lines()
        .find(|l| l.starts_with("FAIL") && l.contains("tls-alpn"))
        .unwrap_or_else(|| panic!("no tls-alpn row:\n{said}"));
    assert!(row.contains("another process holds the port"), "{row}");
    assert!(
        said.contains("tls-alpn-01 cannot succeed for every name configured for it"),
        "{said}"
    );
}

#[test]
fn a_tls_proxy_routes_acme_tls_to_certkeeper_while_the_media_server_keeps_443() {
    let pebble = Pebble::start(None);
    let acme_port = common::free_port();
    let (cert, key) = (
        pebble.dir.path().join("tls-cert.pem"),
        pebble.dir.path().join("tls-key.pem"),
    );
    let nginx = common::Nginx::start_alpn_router(acme_port, &cert, &key);
    let ck = Certkeeper::new(
        &pebble,
        &["media.example.com"],
        "challenge = \"tls-alpn-01\"",
    );
    // certkeeper answers behind the proxy; the CA connects to the proxy's port.
    let text = std::fs::read_to_string(&ck.config)
        .unwrap()
        .lines()
        .map(|line| match line.split(" = ").next() {
            Some("tls_alpn_listen") => format!("tls_alpn_listen = \"127.0.0.1:{acme_port}\""),
            Some("tls_alpn_port") => format!("tls_alpn_port = {}", nginx.port),
            _ => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&ck.config, text).unwrap();
    // Pebble validates TLS-ALPN-01 on its tlsPort: point it at the proxy.
    let mut pebble = pebble;
    pebble.set_tls_port(nginx.port);
    // `check` goes the CA's way, through the proxy, and probes no port 80 for this certificate.
    let said = ck.ok(&["check"]);
    assert!(
        said.contains(
            "every address of media.example.com answers acme-tls/1 with certkeeper's responder"
        ),
        "{said}"
    );
    assert!(
        !said.contains("reachability") && !said.contains("http-01"),
        "{said}"
    );
    let said = ck.ok(&["renew"]);
    assert!(said.contains("media: renewed"), "{said}");
    // Any other TLS client reaches the media server through the same port.
    let body = common::https_get(nginx.port, "/", &pebble.tls_root);
    assert_eq!(body.trim(), "media");
}
