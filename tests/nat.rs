//! The pre-flight behind a NAT, from real conditions: network namespaces for an "internet", a
//! masquerading router and a host behind it, a real STUN server (coturn) on the internet side
//! and a real BIND answering for the names. `certkeeper check` runs on the host.

use crate::common;

use std::fs;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::netlab::{self, NatLab};
use common::{BIN, Bind, Killed, require, require_root};

/// The port the check probes and certkeeper listens on, inside the host's namespace.
const PORT: u16 = 8080;
const RECORDS: &str = "media IN A 203.0.113.10\nstale IN A 203.0.113.99\nloop IN A 127.0.0.1\n";
const PROBE_SERVER: &str = "203.0.113.1:8081";

/// coturn as a plain STUN server at 203.0.113.1:3478, in the lab's internet.
fn stun_server(lab: &NatLab, dir: &Path) -> Killed {
    let log = dir.join("turnserver.log");
    let child = lab
        .exec(&lab.internet)
        .arg(require("turnserver"))
        .args([
            "-n",
            "--stun-only",
            "--no-cli",
            "--no-tls",
            "--no-dtls",
            "--simple-log",
        ])
        .args(["--listening-ip", netlab::SERVER, "--listening-port", "3478"])
        .arg("--pidfile")
        .arg(dir.join("turnserver.pid"))
        .arg("--userdb")
        .arg(dir.join("turndb"))
        .arg("--log-file")
        .arg(&log)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start turnserver");
    let turnserver = Killed(child);
    common::wait_for(
        "turnserver to start",
        Duration::from_secs(10),
        || common::read_log(&log).contains("Total General servers"),
        || common::read_log(&log),
    );
    turnserver
}

/// `certkeeper check --json` for `domain` on the lab's host: the probe served by its own
/// listener on PORT, DNS from `bind`, the public address from the STUN server.
fn check_on_host(lab: &NatLab, bind: &Bind, domain: &str, preflight: &str) -> serde_json::Value {
    let config = bind.dir.path().join(format!("{domain}.toml"));
    fs::write(
        &config,
        format!(
            "[acme]\ndirectory = \"https://127.0.0.1:9/dir\"\n\n[daemon]\nstate_dir = \"state-{domain}\"\n\
             listen = \"0.0.0.0:{PORT}\"\nhttp01_port = {PORT}\nresolvers = [\"{}\"]\n\n\
             [preflight]\nstun = [\"{}:3478\"]\n{preflight}\n\n\
             [[certificate]]\nname = \"media\"\ndomains = [\"{domain}\"]\n",
            bind.address(),
            netlab::SERVER
        ),
    )
    .unwrap();
    let output = lab
        .exec(&lab.host)
        .arg(BIN)
        .arg("--config")
        .arg(&config)
        .args(["check", "--json"])
        .output()
        .unwrap();
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

fn finding<'a>(report: &'a serde_json::Value, check: &str) -> (&'a str, &'a str) {
    finding_with(report, check, "")
}

/// The first `check` finding whose message contains `marker`.
fn finding_with<'a>(
    report: &'a serde_json::Value,
    check: &str,
    marker: &str,
) -> (&'a str, &'a str) {
    let found = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"] == check && f["message"].as_str().unwrap().contains(marker))
        .unwrap_or_else(|| panic!("no {check} finding: {report:#}"));
    println!("{}: {}", found["severity"], found["message"]);
    (
        found["severity"].as_str().unwrap(),
        found["message"].as_str().unwrap(),
    )
}

#[test]
fn behind_a_nat_the_check_names_the_router_the_dns_record_or_the_hairpin() {
    if !require_root(
        "behind_a_nat_the_check_names_the_router_the_dns_record_or_the_hairpin",
        "it creates network namespaces and NAT rules",
    ) {
        return;
    }
    let lab = NatLab::new("n");
    let bind = Bind::start_in(Some(&lab.host), RECORDS);
    bind.wait_until_serving();
    let _stun = stun_server(&lab, bind.dir.path());

    // DNS points at the router, the host is seen there, but the router forwards nothing.
    let report = check_on_host(&lab, &bind, "media.example.com", "");
    assert_eq!(report["http01_ok"], false, "{report:#}");
    let (severity, message) = finding(&report, "address");
    assert_eq!(severity, "ok", "{message}");
    assert!(
        message.contains("seen from outside behind a NAT"),
        "{message}"
    );
    let (severity, message) = finding(&report, "reachability");
    assert_eq!(severity, "fail", "{message}");
    assert!(
        message.contains(&format!(
            "your router does not forward TCP {PORT} to this host: forward it, or configure dns01"
        )),
        "{message}"
    );

    // DNS still points at an old address.
    let report = check_on_host(&lab, &bind, "stale.example.com", "");
    let (severity, message) = finding(&report, "address");
    assert_eq!(severity, "fail", "{message}");
    assert!(
        message.contains(
            "DNS points stale.example.com at 203.0.113.99 but this host is reachable at 203.0.113.10"
        ) && message.contains("update the A record"),
        "{message}"
    );

    // A router that loops the LAN back to the host (hairpin NAT): the check from here passes,
    // and says that the CA's view from outside may differ.
    lab.hairpin_only(PORT);
    let report = check_on_host(&lab, &bind, "media.example.com", "");
    let (severity, message) = finding(&report, "reachability");
    assert_eq!(severity, "ok", "{message}");
    assert!(message.contains("hairpin NAT"), "{message}");
}

/// `certkeeper probe-server` in the lab's internet, probing port PORT, names resolved by `dns`.
fn probe_server(lab: &NatLab, dns: &Bind, token_file: &Path) -> Killed {
    let log = dns.dir.path().join("probe-server.log");
    let child = lab
        .exec(&lab.internet)
        .arg(BIN)
        .args([
            "probe-server",
            "--listen",
            PROBE_SERVER,
            "--port",
            &PORT.to_string(),
        ])
        .arg("--token-file")
        .arg(token_file)
        .args(["--resolver", &dns.address()])
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .expect("start certkeeper probe-server");
    let server = Killed(child);
    common::wait_for(
        "the probe server to start",
        Duration::from_secs(10),
        || common::read_log(&log).contains("probe-server is running"),
        || common::read_log(&log),
    );
    server
}

#[test]
fn a_probe_server_outside_sees_the_missing_port_forward_and_refuses_loopback_and_strangers() {
    if !require_root(
        "a_probe_server_outside_sees_the_missing_port_forward_and_refuses_loopback_and_strangers",
        "it creates network namespaces and NAT rules",
    ) {
        return;
    }
    let lab = NatLab::new("p");
    let bind = Bind::start_in(Some(&lab.host), RECORDS);
    bind.wait_until_serving();
    let outside_dns = Bind::start_in(Some(&lab.internet), RECORDS);
    outside_dns.wait_until_serving();
    let _stun = stun_server(&lab, bind.dir.path());
    let secret = bind.dir.path().join("probe.token");
    fs::write(&secret, "s3cret-shared-with-the-probe-server\n").unwrap();
    let _probe = probe_server(&lab, &outside_dns, &secret);
    let remote = format!(
        "remote = [\"http://{PROBE_SERVER}\"]\nremote_token_file = \"{}\"",
        secret.display()
    );

    // The router loops the LAN back (hairpin) but forwards nothing from outside: this host
    // sees itself, the probe server sees the router refuse.
    lab.hairpin_only(PORT);
    let report = check_on_host(&lab, &bind, "media.example.com", &remote);
    assert_eq!(report["http01_ok"], false, "{report:#}");
    let (severity, message) = finding_with(&report, "reachability", "from this host");
    assert_eq!(severity, "ok", "{message}");
    assert!(message.contains("hairpin NAT"), "{message}");
    let outside = format!("from http://{PROBE_SERVER}: port {PORT} on 203.0.113.10 refused");
    let (severity, message) = finding_with(&report, "reachability", &outside);
    assert_eq!(severity, "fail", "{message}");

    // With the port forward in place, the outside sees the probe token too.
    lab.forward_from_outside(PORT);
    let report = check_on_host(&lab, &bind, "media.example.com", &remote);
    let outside = format!(
        "from http://{PROBE_SERVER}: http://media.example.com:{PORT}/ on 203.0.113.10 serves"
    );
    let (severity, message) = finding_with(&report, "reachability", &outside);
    assert_eq!(severity, "ok", "{message}");
    assert_eq!(report["http01_ok"], true, "{report:#}");

    // A name that resolves to loopback: the probe server does not fetch it.
    let report = check_on_host(&lab, &bind, "loop.example.com", &remote);
    let (severity, message) = finding_with(
        &report,
        "reachability",
        "refused to fetch from 127.0.0.1 (loopback)",
    );
    assert_eq!(severity, "fail", "{message}");

    // Without the shared secret, the probe server answers nothing.
    let wrong = bind.dir.path().join("wrong.token");
    fs::write(&wrong, "not-the-secret\n").unwrap();
    let stranger = remote.replace(&secret.display().to_string(), &wrong.display().to_string());
    let report = check_on_host(&lab, &bind, "media.example.com", &stranger);
    let (severity, message) = finding_with(&report, "reachability", "could not be asked");
    assert_eq!(severity, "warn", "{message}");
    assert!(message.contains("HTTP 401"), "{message}");
}
