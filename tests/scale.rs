//! Many certificates on one node: renewals run concurrently up to `acme.concurrency` per CA,
//! and orders stay within the CA's rate limits (`[acme.limits]`), counted in a ledger that
//! survives a restart. Against a real pebble.

use crate::common;

use std::fs;
use std::time::Duration;

use common::{Certkeeper, Pebble};

/// Adds certificates `c1` … `cN` (names `cK.example.com`, no output files) and `tables` to
/// the config.
fn with_certificates(ck: &Certkeeper, count: usize, tables: &str) {
    let mut text = fs::read_to_string(&ck.config).unwrap();
    for k in 1..=count {
        text.push_str(&format!(
            "\n[[certificate]]\nname = \"c{k}\"\ndomains = [\"c{k}.example.com\"]\n"
        ));
    }
    text.push_str(tables);
    fs::write(&ck.config, text).unwrap();
}

fn issued(ck: &Certkeeper, count: usize) -> usize {
    (1..=count)
        .filter(|k| ck.path(&format!("state/certs/c{k}/current")).exists())
        .count()
}

#[test]
fn renewals_run_concurrently_up_to_the_per_ca_bound() {
    let pebble = Pebble::start(None);
    let ck = Certkeeper::new(&pebble, &["media.example.com"], "");
    let text = fs::read_to_string(&ck.config).unwrap().replacen(
        "[acme]\n",
        "[acme]\nconcurrency = 3\n",
        1,
    );
    fs::write(&ck.config, text).unwrap();
    with_certificates(&ck, 11, "");
    let _daemon = ck.spawn_daemon();
    ck.wait_until("12 certificates", Duration::from_secs(60), || {
        issued(&ck, 11) == 11 && ck.settled(1)
    });

    // Replay the log: how many renewals were in flight at once.
    let (mut running, mut most) = (0i32, 0i32);
    for line in ck.daemon_log().lines() {
        if line.contains("renewal started") {
            running += 1;
            most = most.max(running);
        } else if line.contains("certificate issued and deployed")
            || line.contains("renewal failed")
        {
            running -= 1;
        }
    }
    assert_eq!(
        most,
        3,
        "at most acme.concurrency renewals at once, and that many:\n{}",
        ck.daemon_log()
    );
    assert_eq!(
        pebble.issued(),
        12,
        "one certificate each:\n{}\n{}",
        ck.daemon_log(),
        fs::read_to_string(&pebble.log).unwrap_or_default()
    );
}

#[test]
fn the_rate_limit_budget_holds_orders_back_across_a_restart() {
    let pebble = Pebble::start(None);
    let ck = Certkeeper::new(&pebble, &["media.example.com"], "");
    with_certificates(&ck, 5, "\n[acme.limits]\norders_per_3h = 4\n");
    let spent = "rate limit of 4 new orders in 3 hours (acme.limits.orders_per_3h) is spent";

    let daemon = ck.spawn_daemon();
    ck.wait_until("the budget to be spent", Duration::from_secs(60), || {
        ck.daemon_log().contains(spent)
    });
    // Four certificates, and not one order more.
    ck.wait_until(
        "four certificates deployed",
        Duration::from_secs(30),
        || {
            ck.daemon_log()
                .matches("certificate issued and deployed")
                .count()
                == 4
        },
    );
    // Every renewal it started has ended: any fifth order would have been started before.
    assert_eq!(pebble.orders(), 4, "{}", ck.daemon_log());
    let log = ck.daemon_log();
    assert_eq!(log.matches("renewal started").count(), 4, "{log}");
    let rows: serde_json::Value =
        serde_json::from_slice(&ck.run(&["status", "--json"]).stdout).unwrap();
    let waiting: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|row| row["next_renewal"].as_str())
        .filter(|next| next.contains("rate limit"))
        .collect();
    assert_eq!(
        waiting.len(),
        2,
        "status shows who waits for the budget: {rows}"
    );
    drop(daemon);

    // A restart remembers what was ordered; so does a one-off renew.
    fs::remove_file(ck.path("daemon.log")).unwrap();
    let daemon = ck.spawn_daemon();
    ck.wait_until(
        "the budget to be spent again",
        Duration::from_secs(30),
        || ck.daemon_log().contains(spent),
    );
    drop(daemon);
    let output = ck.run(&["renew", "c5"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success());
    assert!(
        stdout.contains("NOT RENEWED") && stdout.contains("orders_per_3h"),
        "{stdout}"
    );
    assert_eq!(pebble.orders(), 4);
}

/// Let's Encrypt allows 5 certificates for one set of names in 7 days: the sixth, however it
/// is asked for (here `renew --force`), is refused by certkeeper's own budget with the time it
/// becomes possible, before the CA is asked.
#[test]
fn the_budget_refuses_a_sixth_duplicate_certificate() {
    let pebble = Pebble::start(None);
    let ck = Certkeeper::new(&pebble, &["media.example.com", "live.example.com"], "");
    let mut config = fs::read_to_string(&ck.config).unwrap();
    config.push_str("\n[acme.limits]\nduplicates_per_week = 5\n");
    fs::write(&ck.config, config).unwrap();
    ck.ok(&["renew"]);
    for _ in 0..4 {
        ck.ok(&["renew", "--force"]);
    }
    assert_eq!(pebble.issued(), 5);
    let output = ck.run(&["renew", "--force", "--json"]);
    assert!(!output.status.success(), "the sixth is not renewed");
    let outcomes: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let result = &outcomes[0]["result"];
    assert_eq!(result["because"], "rate-limited", "{outcomes}");
    let reason = result["reason"].as_str().unwrap();
    assert!(reason.contains("duplicates_per_week"), "{reason}");
    let until = result["until"].as_str().unwrap();
    // When the first of the five ages out: 7 days from now, give or take the test's run.
    let until_at =
        time::OffsetDateTime::parse(until, &time::format_description::well_known::Rfc3339).unwrap();
    let in_a_week = time::OffsetDateTime::now_utc() + time::Duration::days(7);
    assert!(
        (in_a_week - until_at).abs() < time::Duration::minutes(10),
        "{until}"
    );
    assert_eq!(pebble.issued(), 5, "the CA was not asked for a sixth");
    assert_eq!(pebble.orders(), 5);
    println!("the sixth: {reason} (until {until})");
}
