//! Bad CA answers, from a real pebble behind a proxy that spoils one kind of answer at a time:
//! cut-off JSON, an order stuck in `processing`, a certificate for other names, a chain that
//! does not verify, HTTP 500 and silence. Each attempt ends within seconds in a clear error,
//! a retry is scheduled, and the previous certificate stays deployed, byte for byte.

use crate::common;

use std::fs;
use std::time::{Duration, Instant};

use common::hostile::{Fault, HostileCa, point_at};
use common::{Certkeeper, Pebble};

/// Longer than any single fault may take with 3 s requests and a 5 s order timeout (instant-acme
/// retries a request a few times), far shorter than the defaults.
const BOUND: Duration = Duration::from_secs(40);

#[test]
fn each_bad_answer_ends_in_a_clear_error_and_a_retry_never_a_deployment() {
    let pebble = Pebble::start(None);
    let ca = HostileCa::start(&pebble);
    // A certificate for other names (and another key), issued by the same pebble.
    let stranger = Certkeeper::new(&pebble, &["other.example.net"], "");
    stranger.ok(&["renew"]);
    let foreign = fs::read_to_string(stranger.path("out/fullchain.pem")).unwrap();

    let ck = Certkeeper::new(&pebble, &["media.example.com"], "");
    point_at(&ck.config, &pebble, &ca);
    ck.ok(&["renew"]);
    let deployed = fs::read(ck.path("out/fullchain.pem")).unwrap();
    let before = ck.current_dir();

    let cases = [
        (Fault::MalformedOrder, "could not be read"),
        (Fault::StuckProcessing, "did not finish the order in time"),
        (
            Fault::Certificate(foreign),
            "does not cover media.example.com",
        ),
        (Fault::BrokenChain, "refused to deploy"),
        (Fault::ServerError, "the database is on fire"),
        (Fault::Silent, "no answer within 3s"),
    ];
    for (fault, expected) in cases {
        let name = format!("{fault:?}").chars().take(40).collect::<String>();
        ca.set(fault);
        let started = Instant::now();
        let output = ck.run(&["renew", "--force"]);
        let took = started.elapsed();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success(),
            "{name}: renew succeeded: {stdout}"
        );
        assert!(took < BOUND, "{name}: took {took:?}");
        assert!(
            stdout.contains(expected) || stderr.contains(expected),
            "{name}: the error does not say \"{expected}\":\n{stdout}\n{stderr}"
        );
        assert_eq!(ck.current_dir(), before, "{name}: current moved");
        assert_eq!(
            fs::read(ck.path("out/fullchain.pem")).unwrap(),
            deployed,
            "{name}: the deployed certificate changed"
        );
        let rows: serde_json::Value =
            serde_json::from_slice(&ck.run(&["status", "--json"]).stdout).unwrap();
        let next = rows[0]["next_renewal"].as_str().unwrap_or_default();
        assert!(
            next.starts_with("retry "),
            "{name}: no retry planned: {next}"
        );
        let error = stdout
            .lines()
            .find(|l| l.contains("FAILED"))
            .unwrap_or_default();
        eprintln!("{name}: failed cleanly in {took:?}: {error}");
    }

    // The CA behaves again: the next attempt deploys.
    ca.set(Fault::None);
    ck.ok(&["renew", "--force"]);
    assert_ne!(ck.current_dir(), before);

    // Rejected nonces are the CA's way of asking again, not a failed validation: three in a
    // row while the order is polled (beyond instant-acme's own retries) still end in a
    // deployment (a CI run once reported "the order became invalid" for them).
    let before = ck.current_dir();
    ca.set(Fault::BadNonces(3));
    ck.ok(&["renew", "--force"]);
    assert_ne!(ck.current_dir(), before);
}

/// A CA that refuses with HTTP 429 and `Retry-After` (RFC 8555 §6.6), naming no time in its
/// words: certkeeper waits as long as the header says, and says until when.
#[test]
fn a_rate_limited_order_waits_for_the_retry_after_header() {
    let pebble = Pebble::start(None);
    let ca = HostileCa::start(&pebble);
    let ck = Certkeeper::new(&pebble, &["media.example.com"], "");
    point_at(&ck.config, &pebble, &ca);
    ca.set(Fault::RateLimited(7200));
    let asked = std::time::SystemTime::now();
    let output = ck.run(&["renew", "--json"]);
    assert!(!output.status.success());
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stdout)));
    let media = &answer[0];
    assert_eq!(media["result"]["status"], "failed", "{media}");
    let retry = media["result"]["retry_not_before"]
        .as_str()
        .unwrap_or_else(|| panic!("a retry time: {media}"));
    let retry = time::OffsetDateTime::parse(retry, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{e}: {retry}"));
    let wait = std::time::SystemTime::from(retry)
        .duration_since(asked)
        .unwrap();
    assert!(
        wait >= Duration::from_secs(7200 - 5) && wait <= Duration::from_secs(7200 + 120),
        "retry after {wait:?}: {media}"
    );
    // The schedule keeps to it: nothing is tried before.
    let rows: serde_json::Value =
        serde_json::from_slice(&ck.run(&["status", "--json"]).stdout).unwrap();
    let next = rows[0]["next_renewal"].as_str().unwrap_or_default();
    assert!(next.starts_with("retry "), "{next}");
    let said = ck.run(&["renew"]);
    assert!(
        String::from_utf8_lossy(&said.stdout).contains("the next one is not before"),
        "{}",
        String::from_utf8_lossy(&said.stdout)
    );
    eprintln!(
        "retry_not_before {}, status: {next}",
        media["result"]["retry_not_before"]
    );
}
