//! The pre-flight before every order: with HTTP-01 only, the order still goes out, and the
//! failed validation is reported together with the pre-flight's sentence and fix (in the
//! command's output, the state, `status`, the failure notification and the metrics).
//! (With `[dns01]`, the pre-flight picks DNS-01 before any order: tests/dns01.rs.)

use crate::common;

use std::fs;

use common::netlab::Netns;
use common::{Certkeeper, Pebble, free_port, require_root};

#[test]
fn an_http01_failure_carries_the_preflight_finding_everywhere() {
    let pebble = Pebble::start(None);
    let notified = tempfile::NamedTempFile::new().unwrap();
    let metrics_port = free_port();
    let ck = Certkeeper::new(&pebble, &["media.example.com"], "challenge = \"http-01\"");
    // The CA (and so the pre-flight) connects to pebble's HTTP-01 port, where nothing listens:
    // certkeeper listens elsewhere.
    ck.set_daemon_ports(free_port(), pebble.http_port, &pebble.dns_address());
    let text = fs::read_to_string(&ck.config).unwrap()
        + &format!(
            "\n[[notify]]\nexec = \"cat > {}\"\nevents = [\"failure\"]\n",
            notified.path().display()
        );
    fs::write(&ck.config, text).unwrap();

    let output = ck.run(&["renew"]);
    let said = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(!output.status.success(), "{said}");
    assert_eq!(pebble.orders(), 1, "the order still goes out: {said}");
    let sentence = format!(
        "Before the order, certkeeper's pre-flight check found: port {} on 127.0.0.1 refused the connection",
        pebble.http_port
    );
    assert!(said.contains(&sentence), "{said}");
    assert!(said.contains("open it in the firewall"), "{said}");

    let event = fs::read_to_string(notified.path()).unwrap();
    assert!(event.contains(&sentence), "the notification: {event}");

    let rows: serde_json::Value =
        serde_json::from_slice(&ck.run(&["status", "--json"]).stdout).unwrap();
    let verdict = &rows[0]["preflight"][0];
    assert_eq!(verdict["name"], "media.example.com", "{rows}");
    assert_eq!(verdict["family"], "ipv4", "{rows}");
    assert_eq!(verdict["ok"], false, "{rows}");
    assert!(
        rows[0]["last_result"].as_str().unwrap().contains(&sentence),
        "{rows}"
    );
    let table = String::from_utf8_lossy(&ck.run(&["status"]).stdout).to_string();
    assert!(table.contains("FAIL media.example.com (ipv4)"), "{table}");

    // The metric, from a daemon serving it (the renewal it tries fails the same way).
    let text = fs::read_to_string(&ck.config).unwrap().replace(
        "[daemon]\n",
        &format!("[daemon]\nmetrics_listen = \"127.0.0.1:{metrics_port}\"\n"),
    );
    fs::write(&ck.config, text).unwrap();
    let _daemon = ck.spawn_daemon();
    let mut metrics = String::new();
    ck.wait_until("the metrics", std::time::Duration::from_secs(10), || {
        metrics = common::http_get(metrics_port, "/metrics");
        metrics.contains("certkeeper_preflight_ok")
    });
    assert!(
        metrics.contains(
            "certkeeper_preflight_ok{certificate=\"media\",name=\"media.example.com\",family=\"ipv4\"} 0"
        ),
        "{metrics}"
    );
}

#[test]
fn with_port_80_dropped_the_failure_says_it_timed_out() {
    if !require_root(
        "with_port_80_dropped_the_failure_says_it_timed_out",
        "a network namespace and a packet filter",
    ) {
        return;
    }
    // Dual-stack, both families dropped: the two probes time out side by side, within the
    // pre-flight's 5 s (one after the other they would take 6 s, and the order would go out
    // without the pre-flight's words).
    let netns = Netns::new("drop80");
    let pebble = Pebble::start_in_dual_stack(&netns.0);
    let ck = Certkeeper::new(&pebble, &["media.example.com"], "challenge = \"http-01\"");
    netns.drop_tcp(pebble.http_port);
    netns.drop_tcp6(pebble.http_port);
    let output = ck.run_in(&netns.0, &["renew"]);
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{said}");
    assert_eq!(pebble.orders(), 1, "the order still goes out: {said}");
    let sentence = format!(
        "Before the order, certkeeper's pre-flight check found: port {} on 127.0.0.1 timed out: a firewall drops it",
        pebble.http_port
    );
    assert!(said.contains(&sentence), "{said}");
    // Both families were probed.
    let output = ck.run_in(&netns.0, &["check"]);
    let said = String::from_utf8_lossy(&output.stdout);
    let ipv6 = format!(
        "port {} on ::1 timed out: a firewall drops it",
        pebble.http_port
    );
    assert!(said.contains(&ipv6), "{said}");
}
