//! Deployment against a real nginx: reload, live verification, rollback; PKCS#12 read by
//! keytool and openssl.

use crate::common;

use std::fs;

use common::{Certkeeper, Nginx, Pebble, key_matches};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

fn chain_of(dir: &std::path::Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(&fs::read(dir.join("fullchain.pem")).unwrap())
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn nginx_serves_the_new_certificate_and_an_ineffective_reload_is_rolled_back() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let pebble = Pebble::start(None);
    let domains = ["media.example.com"];
    let ck = Certkeeper::new(&pebble, &domains, "");
    ck.ok(&["renew"]);
    // nginx reads the output directory, which is a link to `current`.
    let nginx = Nginx::start(&ck.path("out/fullchain.pem"), &ck.path("out/privkey.pem"));
    let endpoint = nginx.endpoint();
    certkeeper::deploy::verify::check(&endpoint, &chain_of(&ck.current_dir()))
        .expect("nginx serves the first certificate");

    let verify = format!(
        "verify = [{{ endpoint = \"{}\", sni = \"media.example.com\" }}]\nverify_timeout_secs = 10",
        endpoint.address
    );
    let with_signal = format!("reload_pidfile = \"{}\"\n{verify}", nginx.pidfile.display());
    ck.rewrite(&pebble, &domains, &with_signal);
    let first = ck.current_dir();
    let out = ck.ok(&["renew", "--force"]);
    assert!(out.contains("renewed"), "{out}");
    let second = ck.current_dir();
    assert_ne!(first, second);
    // nginx's old workers may still take a connection for a moment after its reload.
    common::wait_for(
        "nginx to serve the new certificate after SIGHUP",
        std::time::Duration::from_secs(5),
        || certkeeper::deploy::verify::check(&endpoint, &chain_of(&second)).is_ok(),
        || {
            format!(
                "{:?}",
                certkeeper::deploy::verify::check(&endpoint, &chain_of(&second))
            )
        },
    );

    // A reload that exits 0 and reloads nothing: the live check fails and certkeeper rolls back.
    ck.rewrite(&pebble, &domains, &format!("reload = \"true\"\n{verify}"));
    let output = ck.run(&["renew", "--force"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{stdout}");
    assert!(
        stdout.contains("the reload did not take effect") && stdout.contains("rolled back"),
        "{stdout}"
    );
    assert_eq!(
        ck.current_dir(),
        second,
        "current must point at the previous version again"
    );
    assert_eq!(
        ck.versions().len(),
        3,
        "the refused version is kept for inspection"
    );
    certkeeper::deploy::verify::check(&endpoint, &chain_of(&second))
        .expect("nginx still serves the previous certificate");
    let status = ck.ok(&["status"]);
    assert!(
        status.contains("failed (1x)") && status.contains("rolled back"),
        "{status}"
    );
}

#[test]
fn pkcs12_keystore_opens_with_keytool_and_openssl() {
    let pebble = Pebble::start(None);
    let secrets = tempfile::tempdir().unwrap();
    let password_file = secrets.path().join("p12.pass");
    fs::write(&password_file, "changeit-7\n").unwrap();
    let extra = format!(
        "\n[certificate.output]\ndir = \"out\"\npkcs12 = \"keystores/media.p12\"\npkcs12_password_file = \"{}\"\n",
        password_file.display()
    );
    // `extra` ends the certificate table early with its own [certificate.output]: drop the
    // harness's default one by writing the config by hand.
    let ck = Certkeeper::new(&pebble, &["media.example.com"], "");
    let text = fs::read_to_string(&ck.config)
        .unwrap()
        .replace("\n\n[certificate.output]\ndir = \"out\"\n", &extra);
    fs::write(&ck.config, text).unwrap();
    ck.ok(&["renew"]);

    let keystore = ck.path("keystores/media.p12");
    for store in [keystore.clone(), ck.current_dir().join("keystore.p12")] {
        let mode =
            std::os::unix::fs::PermissionsExt::mode(&fs::metadata(&store).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o600, "{}", store.display());
    }
    let keytool = common::program("keytool")
        .args([
            "-list",
            "-v",
            "-storetype",
            "PKCS12",
            "-storepass",
            "changeit-7",
            "-keystore",
        ])
        .arg(&keystore)
        .output()
        .expect("keytool is not installed: run scripts/test (it installs openjdk-17-jre-headless)");
    let listing = String::from_utf8_lossy(&keytool.stdout);
    assert!(
        keytool.status.success(),
        "{listing}{}",
        String::from_utf8_lossy(&keytool.stderr)
    );
    assert!(
        listing.contains("PrivateKeyEntry") && listing.contains("Certificate chain length: 2"),
        "{listing}"
    );

    let openssl = |args: &[&str]| {
        let output = common::program("openssl")
            .arg("pkcs12")
            .arg("-in")
            .arg(&keystore)
            .args(["-passin", "pass:changeit-7"])
            .args(args)
            .output()
            .expect("openssl");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        output.stdout
    };
    let certs = openssl(&["-nokeys"]);
    let key = openssl(&["-nocerts", "-nodes"]);
    assert_eq!(
        String::from_utf8_lossy(&certs)
            .matches("BEGIN CERTIFICATE")
            .count(),
        2
    );
    let fullchain = fs::read(ck.current_dir().join("fullchain.pem")).unwrap();
    assert!(
        key_matches(&fullchain, &key),
        "the keystore's key is the certificate's key"
    );
}

/// `check` compares what each `verify` endpoint serves with what certkeeper deployed: a server
/// that was never reloaded (a reload that does nothing, no live check at the time), and a
/// server that is down, each fail the check with their own sentence.
#[test]
fn check_finds_a_server_that_never_reloaded_and_one_that_is_down() {
    let pebble = Pebble::start(None);
    let domains = ["media.example.com"];
    let ck = Certkeeper::new(&pebble, &domains, "");
    ck.ok(&["renew"]);
    let nginx = Nginx::start(&ck.path("out/fullchain.pem"), &ck.path("out/privkey.pem"));
    let verify = format!(
        "verify = [{{ endpoint = \"{}\", sni = \"media.example.com\" }}]",
        nginx.endpoint().address
    );
    ck.rewrite(&pebble, &domains, &verify);
    let output = ck.run(&["check", "media"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    let row = stdout
        .lines()
        .find(|l| l.contains("served"))
        .unwrap_or_default();
    assert!(
        row.starts_with("ok") && row.contains("serves the certificate deployed for media"),
        "{stdout}"
    );

    // Renewed with a reload that reloads nothing and no live check: nginx keeps the old one.
    ck.rewrite(&pebble, &domains, "reload = \"true\"");
    ck.ok(&["renew", "--force"]);
    ck.rewrite(&pebble, &domains, &verify);
    let output = ck.run(&["check", "media"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{stdout}");
    assert!(
        stdout.contains("than the one deployed for media")
            && stdout.contains("the server was not reloaded since, or loads other files")
            && stdout.contains("a server does not serve the certificate certkeeper deployed"),
        "{stdout}"
    );
    let json: serde_json::Value =
        serde_json::from_slice(&ck.run(&["check", "--json", "media"]).stdout).unwrap();
    assert_eq!(json["served_ok"], false, "{json}");

    // The server is down.
    drop(nginx);
    let output = ck.run(&["check", "media"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{stdout}");
    assert!(stdout.contains("cannot be checked"), "{stdout}");
}
