//! Several CAs: after repeated failure at the preferred CA the next one is tried, and the
//! certificate goes back to the preferred CA at its next renewal. Two real pebbles; the first
//! rejects every order for the name.

use crate::common;

use std::fs;

use common::{Certkeeper, Pebble};

#[test]
fn after_three_failures_the_next_ca_issues_and_the_preferred_one_is_tried_again() {
    let refusing = Pebble::start_refusing(&["example.com"]);
    let working = Pebble::start(None);
    let ck = Certkeeper::new(&working, &["media.example.com"], "");
    let text = fs::read_to_string(&ck.config).unwrap();
    let acme_end = text.find("[daemon]").unwrap();
    let cas = format!(
        "[acme]\ncontact = [\"ops@example.com\"]\nstaging_directory = \"{w}\"\n\n\
         [[acme.ca]]\ndirectory = \"{r}\"\nextra_root = \"{rr}\"\n\n[[acme.ca]]\ndirectory = \"{w}\"\nextra_root = \"{wr}\"\n\n",
        r = refusing.directory_url,
        rr = refusing.tls_root.display(),
        w = working.directory_url,
        wr = working.tls_root.display()
    );
    fs::write(&ck.config, format!("{cas}{}", &text[acme_end..])).unwrap();

    let ca_of_last_attempt = || {
        let rows: serde_json::Value =
            serde_json::from_slice(&ck.run(&["status", "--json"]).stdout).unwrap();
        rows[0]["ca"].as_str().unwrap_or_default().to_string()
    };
    for attempt in 1..=3 {
        let output = ck.run(&["renew", "--force"]);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            !output.status.success(),
            "attempt {attempt} at the refusing CA: {stdout}"
        );
        assert!(
            stdout.contains("rejectedIdentifier") || stdout.contains("refused"),
            "{stdout}"
        );
        assert_eq!(ca_of_last_attempt(), refusing.directory_url);
    }
    let out = ck.ok(&["renew", "--force"]);
    assert!(out.contains("renewed"), "{out}");
    assert_eq!(ca_of_last_attempt(), working.directory_url);
    assert_eq!(working.issued(), 1);

    // The next renewal starts at the preferred CA again.
    let output = ck.run(&["renew", "--force"]);
    assert!(!output.status.success());
    assert_eq!(ca_of_last_attempt(), refusing.directory_url);
    assert!(
        ck.current_dir().exists(),
        "the certificate from the second CA stays in place"
    );
}
