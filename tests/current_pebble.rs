//! Against the current pebble (Debian sid's, 2.10 or later, fetched by `scripts/deps --tests`):
//! what Debian 12's pebble 2.4 cannot show. It offers renewal information (ARI, RFC 9773).

use std::fs;
use std::time::{Duration, SystemTime};

use crate::common::hostile::{Fault, HostileCa, point_at};
use crate::common::{Certkeeper, Pebble, free_port};

/// A renewal asks for the renewal window and names the certificate it replaces; the CA takes
/// it as a replacement.
#[test]
fn a_renewal_names_the_certificate_it_replaces() {
    let pebble = Pebble::start_current(serde_json::Value::Null);
    let ck = Certkeeper::new(&pebble, &["media.example.com"], "");
    ck.ok(&["renew"]);
    // The first certificate's next renewal is planned inside the window the CA gave.
    let status: serde_json::Value =
        serde_json::from_slice(&ck.run(&["status", "--json"]).stdout).unwrap();
    let row = &status[0];
    let window = row["ari_window"]
        .as_array()
        .expect("an ARI window in status");
    let (start, end) = (window[0].as_str().unwrap(), window[1].as_str().unwrap());
    let next = row["next_renewal"].as_str().unwrap();
    assert!(
        start <= next && next <= end,
        "{next} in [{start}, {end}]: {row}"
    );

    // Inside the window (moved to now by the CA, read once its Retry-After has passed).
    // pebble 2.10 now and then fails to look the replaced certificate up (serverInternal):
    // certkeeper then orders once more without `replaces`, and the renewal goes through. Up
    // to three renewals, so that one is seen taken as a replacement.
    let replaced = |log: &str| log.contains("is a replacement of");
    for _ in 0..3 {
        open_window_now(&pebble, &ck);
        let said = ck.ok(&["renew", "--force"]);
        assert!(said.contains("media: renewed"), "{said}");
        if replaced(&fs::read_to_string(&pebble.log).unwrap()) {
            break;
        }
    }
    let log = fs::read_to_string(&pebble.log).unwrap();
    assert!(
        replaced(&log),
        "pebble took an order as a replacement:\n{log}"
    );
}

/// A one-off `renew` (no daemon, no `--force`, as a cron job runs it) asks the CA for a stale
/// renewal window before it judges what is due: a window the CA moved into the past (as Let's
/// Encrypt does before a mass revocation) renews at once instead of "not due until" the old
/// date. (A window around now would not do: the renewal time is drawn at random inside it.)
#[test]
fn a_one_off_renew_follows_a_window_the_ca_moved_to_the_past() {
    let pebble = Pebble::start_current(serde_json::Value::Null);
    let ck = Certkeeper::new(&pebble, &["media.example.com"], "");
    ck.ok(&["renew"]);
    let first = ck.current_leaf_pem();
    let said = ck.ok(&["renew"]);
    assert!(said.contains("not due until"), "{said}");
    // The window must end after the certificate began (else it is another certificate's and
    // not used), and lie wholly in the past when certkeeper looks.
    let began = certkeeper::deploy::bundle::read_leaf(first.as_bytes())
        .unwrap()
        .not_before;
    let end = began + Duration::from_secs(1);
    pebble.set_renewal_window(&first, began - Duration::from_secs(3600), end);
    ck.forget_ari_retry_after();
    crate::common::wait_for(
        "the window's end to pass",
        Duration::from_secs(5),
        || SystemTime::now() > end,
        String::new,
    );
    let said = ck.ok(&["renew"]);
    assert!(said.contains("media: renewed"), "{said}");
    assert_ne!(ck.current_leaf_pem(), first);
}

/// Has pebble give the current certificate of `ck` a renewal window around now, and `ck` read
/// it at its next run (as it does once the CA's Retry-After, 6 hours with pebble, has passed).
fn open_window_now(pebble: &Pebble, ck: &Certkeeper) {
    let now = SystemTime::now();
    let hour = Duration::from_secs(3600);
    pebble.set_renewal_window(&ck.current_leaf_pem(), now - hour, now + hour);
    ck.forget_ari_retry_after();
}

/// `replaces` (RFC 9773) names the current certificate only inside the renewal window the CA
/// gave for it, and pebble takes the order as its replacement. A CA that refuses an order
/// naming it (`alreadyReplaced`) gets the order again without, and is not asked to take that
/// certificate as replaced again — even when that renewal then fails (certmagic's loop: a
/// certificate that never renews).
#[test]
fn replaces_is_named_inside_the_window_and_not_again_once_refused() {
    let pebble = Pebble::start_current(serde_json::Value::Null);
    let ca = HostileCa::start(&pebble);
    let ck = Certkeeper::new(&pebble, &["media.example.com"], "challenge = \"http-01\"");
    point_at(&ck.config, &pebble, &ca);
    ck.ok(&["renew"]);
    assert_eq!(ca.orders(), (1, 0), "the first order replaces nothing");

    // Pebble's window opens at two thirds of the lifetime: a renewal forced before it is a
    // new certificate, not the replacement.
    ck.ok(&["renew", "--force"]);
    assert_eq!(ca.orders(), (2, 0), "before the window: nothing named");

    // Inside the window: named (pebble's occasional serverInternal on it is ordered again
    // without, so only the orders naming it are counted here).
    open_window_now(&pebble, &ck);
    ck.ok(&["renew", "--force"]);
    assert_eq!(ca.orders().1, 1, "inside the window: named");

    // Refused as a replacement, then ordered without; the validation fails (nothing listens
    // where the CA connects), so the same certificate is still the one to replace.
    open_window_now(&pebble, &ck);
    ca.set(Fault::RefuseReplaces);
    ck.set_daemon_ports(free_port(), pebble.http_port, &pebble.dns_address());
    let before = ca.orders().0;
    let fails = |output: std::process::Output, authorizations: usize| {
        // Unless pebble reused a still-valid authorization (about 1 name in 100, whatever
        // PEBBLE_AUTHZREUSE says): then no validation ran and the order went through.
        let reused = pebble.authorizations_created() == authorizations;
        assert!(
            !output.status.success() || reused,
            "{}",
            String::from_utf8_lossy(&output.stdout)
        );
    };
    let authorizations = pebble.authorizations_created();
    fails(ck.run(&["renew", "--force"]), authorizations);
    assert_eq!(
        ca.orders(),
        (before + 2, 2),
        "named once, refused, ordered without"
    );

    let authorizations = pebble.authorizations_created();
    fails(ck.run(&["renew", "--force"]), authorizations);
    assert_eq!(ca.orders(), (before + 3, 2), "not named again");
}

/// DNS-PERSIST-01: certkeeper prints the record; once it is in DNS, certificates are issued
/// with nothing listening for the CA (no port 80 or 443) and no DNS update by certkeeper.
#[test]
fn dns_persist_01_issues_from_the_record_certkeeper_printed() {
    let pebble = Pebble::start_current(serde_json::Value::Null);
    let ck = Certkeeper::new(
        &pebble,
        &["media.example.com"],
        "challenge = \"dns-persist-01\"",
    );
    // Nothing answers on the ports the CA would try for the other challenges.
    ck.set_tls_alpn_port(crate::common::free_port());
    let printed = ck.ok(&["persist-record", "media"]);
    let line = printed.lines().next().expect("a record");
    let (fqdn, value) = line
        .split_once(" IN TXT ")
        .unwrap_or_else(|| panic!("a zone-file line: {printed}"));
    assert_eq!(fqdn, "_validation-persist.media.example.com.");
    let value = value.trim_matches('"');
    assert!(
        value.starts_with("pebble.letsencrypt.org; accounturi=https://"),
        "{value}"
    );

    // Without the record the CA refuses, and says which record it missed.
    let output = ck.run(&["renew"]);
    assert!(!output.status.success());
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(
        said.contains("_validation-persist.media.example.com"),
        "{said}"
    );
    println!("without the record: {said}");

    pebble.set_txt(fqdn, value);
    let said = ck.ok(&["renew", "--force"]);
    assert!(said.contains("media: dns-persist-01"), "{said}");
    assert!(said.contains("media: renewed"), "{said}");
    // Renewed again from the same record: it was set once.
    let said = ck.ok(&["renew", "--force"]);
    assert!(said.contains("media: renewed"), "{said}");
    println!("certkeeper persist-record media printed: {line}");
}

/// Before ordering, each record that would not do is named with its fix, and nothing is
/// ordered (a CA counts a failed validation against the name); `check` says the same. The
/// record certkeeper printed then issues a wildcard certificate.
#[test]
fn each_wrong_persist_record_is_named_and_nothing_is_ordered() {
    let pebble = Pebble::start_current(serde_json::Value::Null);
    let ck = Certkeeper::new(
        &pebble,
        &["media.example.com", "*.media.example.com"],
        "challenge = \"dns-persist-01\"",
    );
    ck.set_tls_alpn_port(crate::common::free_port());
    let printed = ck.ok(&["persist-record", "media"]);
    let wildcard_line = printed
        .lines()
        .find(|line| line.ends_with("; policy=wildcard\""))
        .unwrap_or_else(|| panic!("a record with the wildcard policy: {printed}"));
    let (fqdn, good) = wildcard_line.split_once(" IN TXT ").unwrap();
    let good = good.trim_matches('"');
    let ours = good.trim_end_matches("; policy=wildcard");
    let account = ours.split_once("accounturi=").unwrap().1;

    let cases = [
        (
            None,
            "no dns-persist-01 record at _validation-persist.media.example.com",
        ),
        (
            Some("pebble.letsencrypt.org; accounturi=https://127.0.0.1/my-account/999".to_string()),
            "is for another account (https://127.0.0.1/my-account/999)",
        ),
        (
            Some(format!(
                "letsencrypt.org; accounturi={account}; policy=wildcard"
            )),
            "names letsencrypt.org, not this CA (it accepts pebble.letsencrypt.org)",
        ),
        (
            Some(ours.to_string()),
            "lacks policy=wildcard, which *.media.example.com needs",
        ),
        (
            Some(format!("{good}; persistUntil=1000000000")),
            "stopped counting at 2001-09-09 01:46:40 UTC (its persistUntil)",
        ),
    ];
    for (record, sentence) in cases {
        pebble.clear_txt(fqdn);
        if let Some(record) = &record {
            pebble.set_txt(fqdn, record);
        }
        let output = ck.run(&["renew", "--force"]);
        let said = String::from_utf8_lossy(&output.stdout);
        assert!(!output.status.success(), "{said}");
        assert!(said.contains(sentence), "{record:?}: {said}");
        assert!(
            said.contains(&format!("IN TXT \"{good}\"")),
            "the fix: {said}"
        );
        let checked = ck.run(&["check"]);
        let table = String::from_utf8_lossy(&checked.stdout);
        assert!(!checked.status.success(), "{table}");
        assert!(table.contains("dns-persist"), "{table}");
        println!("{record:?}: {sentence}");
    }
    assert_eq!(pebble.orders(), 0, "nothing was ordered");

    pebble.clear_txt(fqdn);
    pebble.set_txt(fqdn, good);
    let said = ck.ok(&["renew", "--force"]);
    assert!(said.contains("media: renewed"), "{said}");
    // A persistUntil that passes before the certificate expires is warned of ahead.
    let soon = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 86_400;
    pebble.clear_txt(fqdn);
    pebble.set_txt(fqdn, &format!("{good}; persistUntil={soon}"));
    let table = ck.ok(&["check"]);
    let lapsing = "(its persistUntil), before the current certificate expires";
    assert!(table.contains(lapsing), "{table}");
    // A renewal still succeeds, and the operator is told ahead, as of an expiry.
    let notified = ck.path("notified.jsonl");
    let text = fs::read_to_string(&ck.config).unwrap()
        + &format!(
            "\n[[notify]]\nexec = \"cat >> {0} && echo >> {0}\"\nevents = [\"expiry\"]\n",
            notified.display()
        );
    fs::write(&ck.config, text).unwrap();
    let said = ck.ok(&["renew", "--force"]);
    assert!(said.contains("media: renewed"), "{said}");
    let told = fs::read_to_string(&notified).unwrap_or_default();
    assert!(
        told.contains("\"event\":\"expiry\"") && told.contains(lapsing),
        "{told}"
    );
}

/// A CA that offers no dns-persist-01 (Debian 12's pebble 2.4, like Let's Encrypt's production
/// in 2026): one line says so and the next step of the ladder is used; nothing fails.
#[test]
fn a_ca_without_dns_persist_01_gets_the_next_step() {
    let pebble = Pebble::start(None);
    let ck = Certkeeper::new(
        &pebble,
        &["media.example.com"],
        "challenge = [\"dns-persist-01\", \"http-01\"]",
    );
    let said = ck.ok(&["renew"]);
    assert!(said.contains("media: http-01"), "{said}");
    assert!(said.contains("rules out dns-persist-01"), "{said}");
    assert!(said.contains("media: renewed"), "{said}");
    println!("{said}");
}

/// `auto` climbs to DNS-PERSIST-01 when port 80 and 443 are both ruled out and no `[dns01]`
/// is configured: without the record every step is ruled out (and said so), with it the
/// certificate is issued with no port open for the CA.
#[test]
fn auto_climbs_to_dns_persist_01_when_no_port_answers() {
    let pebble = Pebble::start_current(serde_json::Value::Null);
    let ck = Certkeeper::new(&pebble, &["media.example.com"], "");
    // The CA and the pre-flight connect to ports where nothing listens.
    ck.set_daemon_ports(free_port(), pebble.http_port, &pebble.dns_address());
    ck.set_tls_alpn_port(free_port());
    let printed = ck.ok(&["persist-record", "media"]);
    let (fqdn, value) = (printed.lines().next())
        .and_then(|line| line.split_once(" IN TXT "))
        .unwrap_or_else(|| panic!("a zone-file line: {printed}"));

    let output = ck.run(&["renew"]);
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{said}");
    assert!(
        said.contains("rules out dns-persist-01: no dns-persist-01 record"),
        "{said}"
    );
    println!("without the record: {said}");

    pebble.set_txt(fqdn, value.trim_matches('"'));
    let said = ck.ok(&["renew", "--force"]);
    assert!(said.contains("media: dns-persist-01"), "{said}");
    assert!(said.contains("rules out http-01"), "{said}");
    assert!(said.contains("rules out tls-alpn-01"), "{said}");
    assert!(said.contains("media: renewed"), "{said}");
    println!("with the record: {said}");
}

/// A CA whose directory names its issuer but whose authorizations offer no dns-persist-01
/// (the record checks out): the order goes on with the next step, in one line.
#[test]
fn authorizations_without_dns_persist_01_get_the_next_step() {
    let pebble = Pebble::start_current(serde_json::Value::Null);
    let ca = HostileCa::start(&pebble);
    ca.set(Fault::WithoutChallenge("dns-persist-01"));
    let ck = Certkeeper::new(
        &pebble,
        &["media.example.com"],
        "challenge = [\"dns-persist-01\", \"http-01\"]",
    );
    point_at(&ck.config, &pebble, &ca);
    let printed = ck.ok(&["persist-record", "media"]);
    let (fqdn, value) = (printed.lines().next())
        .and_then(|line| line.split_once(" IN TXT "))
        .unwrap_or_else(|| panic!("a zone-file line: {printed}"));
    pebble.set_txt(fqdn, value.trim_matches('"'));

    let said = ck.ok(&["renew"]);
    assert!(
        said.contains("the CA offers no dns-persist-01 challenge; http-01 is the next step"),
        "{said}"
    );
    assert!(said.contains("media: renewed"), "{said}");
    println!("{said}");
}

/// Profiles (draft-ietf-acme-profiles): the one configured is ordered, and the certificate has
/// that profile's lifetime; one the CA does not offer is a clear error naming those it does.
#[test]
fn a_profile_the_ca_offers_is_ordered_and_one_it_does_not_is_a_clear_error() {
    let profiles = serde_json::json!({
        "classic": { "description": "90 days", "validityPeriod": 7_776_000 },
        "shortlived": { "description": "about 6 days", "validityPeriod": 518_400 },
    });
    let pebble = Pebble::start_current(profiles);
    let ck = Certkeeper::new(&pebble, &["media.example.com"], "profile = \"shortlived\"");
    ck.ok(&["renew"]);
    let pem = fs::read(ck.path("out/fullchain.pem")).unwrap();
    let leaf = certkeeper::deploy::bundle::read_leaf(&pem).unwrap();
    let lifetime = leaf.not_after.duration_since(leaf.not_before).unwrap();
    assert!(
        lifetime <= std::time::Duration::from_secs(518_400 + 60),
        "a shortlived certificate: {lifetime:?}"
    );

    let text = fs::read_to_string(&ck.config).unwrap();
    fs::write(&ck.config, text.replace("\"shortlived\"", "\"tlsserver\"")).unwrap();
    let output = ck.run(&["renew", "--force"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success());
    assert!(
        stdout.contains("does not offer the certificate profile \"tlsserver\""),
        "{stdout}"
    );
    assert!(
        stdout.contains("shortlived") && stdout.contains("classic"),
        "it names what the CA offers: {stdout}"
    );
}
