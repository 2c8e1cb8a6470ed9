//! `certkeeper inspect` against real nginx servers configured wrongly on purpose, with
//! certificates from pebble: each finding comes from a real handshake.

use crate::common;

use std::fs;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use common::{BIN, Certkeeper, Nginx, Pebble};

/// Runs `inspect` and checks its exit code and that it says `phrase`; returns what it said.
fn inspect_says(port: u16, args: &[&str], code: i32, phrase: &str) -> String {
    let (exit, said) = inspect(port, args);
    assert_eq!(exit, Some(code), "{said}");
    assert!(said.contains(phrase), "missing \"{phrase}\" in:\n{said}");
    said
}

fn inspect(port: u16, args: &[&str]) -> (Option<i32>, String) {
    let output: Output = std::process::Command::new(BIN)
        .arg("inspect")
        .arg(format!("127.0.0.1:{port}"))
        .args(args)
        .output()
        .expect("run certkeeper inspect");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    println!(
        "$ certkeeper inspect 127.0.0.1:{port} {}\n{text}",
        args.join(" ")
    );
    (output.status.code(), text)
}

fn issued(pebble: &Pebble) -> (Certkeeper, std::path::PathBuf) {
    let ck = Certkeeper::new(pebble, &["media.example.com"], "");
    ck.ok(&["renew"]);
    let root = ck.path("pebble-root.pem");
    fs::write(&root, pebble.issuing_root_pem()).unwrap();
    (ck, root)
}

fn concat(parts: &[&Path], to: &Path) {
    let text: String = parts
        .iter()
        .map(|p| fs::read_to_string(p).unwrap())
        .collect();
    fs::write(to, text).unwrap();
}

#[test]
fn each_wrong_endpoint_is_named_with_its_fix() {
    let pebble = Pebble::start(None);
    let (ck, root) = issued(&pebble);
    let dir = ck.current_dir();
    let (fullchain, cert, key) = (
        dir.join("fullchain.pem"),
        dir.join("cert.pem"),
        dir.join("privkey.pem"),
    );
    let root_arg = root.to_str().unwrap();
    let name = ["--name", "media.example.com", "--root", root_arg];

    // Right: the full chain to a trusted root.
    let good = Nginx::start(&fullchain, &key);
    let said = inspect_says(good.port, &name, 0, "leads to a trusted root");
    assert!(said.contains("days left"), "{said}");

    // The CA's root is not one clients trust.
    inspect_says(
        good.port,
        &["--name", "media.example.com"],
        2,
        "leads to a root that is not trusted here",
    );

    // The name, and the name in another case.
    inspect_says(
        good.port,
        &["--name", "other.example.com", "--root", root_arg],
        2,
        "does not cover other.example.com; it names media.example.com",
    );
    let (code, said) = inspect(
        good.port,
        &["--name", "Media.Example.com", "--root", root_arg],
    );
    assert_eq!(code, Some(1), "{said}");
    assert!(
        said.contains("written in another case")
            && said.contains("compares names case-sensitively"),
        "{said}"
    );

    // Files that do not go together (the key of another issuance).
    let other = Certkeeper::new(&pebble, &["media.example.com"], "");
    other.ok(&["renew"]);
    let other_key = other.current_dir().join("privkey.pem");
    let mut with_files = name.to_vec();
    with_files.extend([
        "--cert",
        fullchain.to_str().unwrap(),
        "--key",
        other_key.to_str().unwrap(),
    ]);
    inspect_says(good.port, &with_files, 2, "do not go together");

    // Leaf only.
    let leaf_only = Nginx::start(&cert, &key);
    inspect_says(
        leaf_only.port,
        &name,
        2,
        "configure fullchain.pem, not cert.pem",
    );

    // A certificate that does not belong in the chain, between the leaf and its issuer.
    let disordered = ck.path("disordered.pem");
    concat(
        &[&cert, &pebble.tls_root, &dir.join("chain.pem")],
        &disordered,
    );
    let out_of_order = Nginx::start(&disordered, &key);
    inspect_says(out_of_order.port, &name, 2, "chain out of order");

    // Another intermediate than the one that signed the leaf: missing, not out of order.
    let wrong = ck.path("wrong-intermediate.pem");
    concat(&[&cert, &pebble.tls_root], &wrong);
    let wrong_intermediate = Nginx::start(&wrong, &key);
    let said = inspect_says(wrong_intermediate.port, &name, 2, "wrong intermediate");
    assert!(!said.contains("out of order"), "{said}");

    // Self-signed.
    let key_pair = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["media.example.com".to_string()]).unwrap();
    params.not_after = rcgen::date_time_ymd(2030, 1, 1);
    let self_signed = params.self_signed(&key_pair).unwrap();
    let (ss_cert, ss_key) = (ck.path("self.pem"), ck.path("self.key"));
    fs::write(&ss_cert, self_signed.pem()).unwrap();
    fs::write(&ss_key, key_pair.serialize_pem()).unwrap();
    let own = Nginx::start(&ss_cert, &ss_key);
    inspect_says(own.port, &["--name", "media.example.com"], 2, "self-signed");
}

#[test]
fn an_expired_certificate_is_named_with_its_date() {
    let dir = tempfile::tempdir().unwrap();
    let (root, fullchain, key) = common::expired_certificate(dir.path(), "media.example.com");
    let nginx = Nginx::start(&fullchain, &key);
    let said = inspect_says(
        nginx.port,
        &[
            "--name",
            "media.example.com",
            "--root",
            root.to_str().unwrap(),
        ],
        2,
        "the certificate expired on",
    );
    assert!(said.contains("check this host's clock"), "{said}");
}

/// nginx serving a valid leaf for media.example.com that its root signed directly, alone;
/// returns the root and the server.
fn serving_a_root_signed_leaf(dir: &Path) -> (std::path::PathBuf, Nginx) {
    let now = time::OffsetDateTime::now_utc();
    let (root, leaf, key) = common::root_signed_certificate(
        dir,
        "media.example.com",
        now - time::Duration::days(1),
        now + time::Duration::days(60),
    );
    (root, Nginx::start(&leaf, &key))
}

#[test]
fn a_leaf_its_root_signed_is_a_whole_chain() {
    // As mkcert and small private CAs issue: no intermediate exists, none is missing.
    let dir = tempfile::tempdir().unwrap();
    let (root, nginx) = serving_a_root_signed_leaf(dir.path());
    let args = [
        "--name",
        "media.example.com",
        "--root",
        root.to_str().unwrap(),
    ];
    let said = inspect_says(nginx.port, &args, 0, "leads to a trusted root");
    assert!(!said.contains("incomplete chain"), "{said}");
}

#[test]
fn a_port_that_speaks_plain_http_is_named_so() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let _nginx = Nginx::start_http(port, dir.path());
    let said = inspect_says(port, &[], 3, "does not speak TLS");
    assert!(said.contains("plain HTTP"), "{said}");
}

#[test]
fn an_https_time_source_is_trusted_through_root_and_its_failure_explained() {
    // Pebble's own HTTPS listener has a Date header and a certificate from a private root.
    let pebble = Pebble::start(None);
    let dir = tempfile::tempdir().unwrap();
    let (root, nginx) = serving_a_root_signed_leaf(dir.path());
    // The time source's root and the endpoint's root, in one --root file.
    let roots = dir.path().join("roots.pem");
    concat(&[&root, &pebble.tls_root], &roots);
    let source = pebble.directory_url.clone();
    let (code, said) = inspect(
        nginx.port,
        &[
            "--name",
            "media.example.com",
            "--root",
            roots.to_str().unwrap(),
            "--time-source",
            &source,
        ],
    );
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains(&format!("of {source}")), "{said}");
    assert!(!said.contains("time source cannot be read"), "{said}");
    // Without the time source's root: said, with the cause.
    let (_, said) = inspect(
        nginx.port,
        &[
            "--name",
            "media.example.com",
            "--root",
            root.to_str().unwrap(),
            "--time-source",
            &source,
        ],
    );
    assert!(said.contains("the time source cannot be read"), "{said}");
    assert!(
        said.contains("UnknownIssuer") || said.contains("unknown issuer"),
        "{said}"
    );
}

#[test]
fn an_endpoint_that_does_not_answer_exits_3() {
    inspect_says(
        common::free_port(),
        &[],
        3,
        "cannot complete a TLS handshake",
    );
}

/// An HTTP server whose `Date` is a day behind this host's clock: as seen from it, this host's
/// clock is a day ahead. Answers up to `answers` requests.
fn time_source_a_day_behind(answers: usize) -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(answers) {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut request = [0u8; 1024];
            let _ = stream.read(&mut request);
            let date =
                httpdate::fmt_http_date(std::time::SystemTime::now() - Duration::from_secs(86_400));
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nDate: {date}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    });
    port
}

#[test]
fn a_certificate_that_looks_expired_on_a_fast_clock_is_told_apart() {
    let dir = tempfile::tempdir().unwrap();
    let (root, fullchain, key) = common::expired_certificate(dir.path(), "media.example.com");
    let nginx = Nginx::start(&fullchain, &key);
    let source = format!("http://127.0.0.1:{}/", time_source_a_day_behind(1));
    let (code, said) = inspect(
        nginx.port,
        &[
            "--name",
            "media.example.com",
            "--root",
            root.to_str().unwrap(),
            "--time-source",
            &source,
        ],
    );
    assert_eq!(code, Some(2), "{said}");
    // A day, give or take the second the request took.
    assert!(
        said.contains("this host's clock is 8640")
            && said.contains(&format!("s ahead of {source}")),
        "{said}"
    );
    assert!(
        said.contains("looks expired") && said.contains("fix this host's clock"),
        "{said}"
    );
    assert!(!said.contains("the certificate expired on"), "{said}");
}
