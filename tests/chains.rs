//! `acme.preferred_chain`: of the chains a CA offers (pebble with an alternate root, as Let's
//! Encrypt offers gen-Y certificates), the one whose topmost certificate the named issuer
//! signed is deployed; a name no chain carries keeps the CA's default chain. A Java client
//! trusting one root only tells the two apart, as a Java player would.

use crate::common;

use std::fs;

use common::{Certkeeper, Nginx, Pebble, program, require};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use x509_parser::prelude::{FromDer, X509Certificate};

fn common_name_of(pem: &str, subject: bool) -> String {
    let der = CertificateDer::pem_slice_iter(pem.as_bytes())
        .last()
        .expect("a certificate")
        .expect("pem");
    let (_, cert) = X509Certificate::from_der(&der).expect("x509");
    let name = if subject {
        cert.subject()
    } else {
        cert.issuer()
    };
    name.iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .expect("a common name")
        .to_string()
}

/// Renews with `preferred_chain = preferred`; returns the deployed chain and the log.
fn renew_preferring(ck: &Certkeeper, preferred: &str) -> (String, String) {
    let text = fs::read_to_string(&ck.config).unwrap();
    let text = text.replacen(
        "[acme]\n",
        &format!("[acme]\npreferred_chain = \"{preferred}\"\n"),
        1,
    );
    fs::write(&ck.config, text).unwrap();
    let output = ck.run(&["renew", "--force"]);
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{log}");
    (
        fs::read_to_string(ck.path("out/fullchain.pem")).unwrap(),
        log,
    )
}

/// Whether a Java client trusting `root_pem` alone accepts what `nginx` serves
/// (`tests/java/TrustCheck.java`, run from source), and what Java said.
fn java_accepts(root_pem: &str, nginx: &Nginx, dir: &std::path::Path) -> (bool, String) {
    // Running a source file takes the JDK's compiler, not only a JRE.
    require("javac");
    let root = dir.join("java-root.pem");
    fs::write(&root, root_pem).unwrap();
    let source = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/java/TrustCheck.java");
    let output = program("java")
        .arg(source)
        .arg(&root)
        .args(["127.0.0.1", &nginx.port.to_string(), "media.example.com"])
        .output()
        .expect("run java");
    let said = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), said)
}

/// `openssl verify`: the leaf verifies through `chain` up to `root` alone.
fn verifies_to(root_pem: &str, chain_pem: &str, dir: &std::path::Path) -> bool {
    let (root, chain) = (dir.join("root.pem"), dir.join("chain.pem"));
    fs::write(&root, root_pem).unwrap();
    fs::write(&chain, chain_pem).unwrap();
    let output = program("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(&root)
        .arg("-untrusted")
        .arg(&chain)
        .arg(&chain)
        .output()
        .expect("run openssl verify");
    output.status.success()
}

#[test]
fn the_preferred_issuers_chain_is_deployed_and_an_unknown_one_keeps_the_default() {
    let pebble = Pebble::start_with_alternate_roots(1);
    let roots = [pebble.root_pem(0), pebble.root_pem(1)];
    let names = roots.each_ref().map(|pem| common_name_of(pem, true));
    assert_ne!(names[0], names[1], "pebble's two roots must differ");
    let first = Certkeeper::new(&pebble, &["media.example.com"], "");
    let scratch = tempfile::tempdir().unwrap();

    // The alternate root, written in another case.
    let (chain, log) = renew_preferring(&first, &names[1].to_uppercase());
    assert_eq!(common_name_of(&chain, false), names[1], "{log}");
    assert!(verifies_to(&roots[1], &chain, scratch.path()), "{chain}");
    assert!(!verifies_to(&roots[0], &chain, scratch.path()));
    assert!(log.contains("certificate chain chosen"), "{log}");

    // An issuer no chain carries: the CA's default chain, said so.
    let ck = Certkeeper::new(&pebble, &["media.example.com"], "");
    let (chain, log) = renew_preferring(&ck, "ISRG Root X1");
    assert_eq!(common_name_of(&chain, false), names[0], "{log}");
    assert!(verifies_to(&roots[0], &chain, scratch.path()));
    assert!(
        log.contains("no chain the CA offers names the preferred issuer"),
        "{log}"
    );

    // A Java client whose trust store holds the alternate root only (as a Java player holds
    // ISRG Root X1 but not a gen-Y root): it refuses the default chain and accepts the one
    // preferred_chain deployed.
    let preferring = Nginx::start(
        &first.path("out/fullchain.pem"),
        &first.path("out/privkey.pem"),
    );
    let default = Nginx::start(&ck.path("out/fullchain.pem"), &ck.path("out/privkey.pem"));
    let (accepted, said) = java_accepts(&roots[1], &preferring, scratch.path());
    assert!(accepted, "the preferred chain: {said}");
    let (accepted, said) = java_accepts(&roots[1], &default, scratch.path());
    assert!(
        !accepted && said.contains("PKIX path building failed"),
        "the default chain: {said}"
    );
}
