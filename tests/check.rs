//! `certkeeper check`: each diagnosis comes from a real network condition on this machine —
//! nothing listening, another HTTP server, DNS pointing elsewhere, NXDOMAIN, and a packet filter
//! dropping the port inside a network namespace the test creates.

use crate::common;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;

use common::netlab::Netns;
use common::{BIN, Bind, free_port, require_root};

const RECORDS: &str = "media IN A 127.0.0.1\nelsewhere IN A 127.0.0.2\n";

/// A config whose only certificate has `domain`, resolving through `dns`, with certkeeper
/// listening on `listen` and the CA's port being `http01_port`. The CA is unreachable on
/// purpose: the clock check then only warns.
fn write_config(
    dir: &Path,
    dns: &str,
    domain: &str,
    listen: u16,
    http01_port: u16,
) -> std::path::PathBuf {
    let path = dir.join("check.toml");
    fs::write(
        &path,
        format!(
            "[acme]\ndirectory = \"https://127.0.0.1:9/dir\"\n\n[daemon]\nstate_dir = \"state\"\n\
             listen = \"127.0.0.1:{listen}\"\nhttp01_port = {http01_port}\nresolvers = [\"{dns}\"]\n\n\
             [[certificate]]\nname = \"media\"\ndomains = [\"{domain}\"]\n"
        ),
    )
    .unwrap();
    path
}

fn check(config: &Path, netns: Option<&str>) -> (Option<i32>, serde_json::Value) {
    let mut command = match netns {
        Some(ns) => {
            let mut c = common::program("ip");
            c.args(["netns", "exec", ns, BIN]);
            c
        }
        None => Command::new(BIN),
    };
    let output = command
        .arg("--config")
        .arg(config)
        .args(["check", "--json"])
        .output()
        .unwrap();
    let report = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.code(), report)
}

/// The message of the first finding of `check` kind with `severity`.
fn finding(report: &serde_json::Value, check: &str, severity: &str) -> String {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"] == check && f["severity"] == severity)
        .and_then(|f| f["message"].as_str())
        .unwrap_or_else(|| panic!("no {severity} {check} finding in {report:#}"))
        .to_string()
}

#[test]
fn reachable_when_certkeeper_answers_the_port() {
    let bind = Bind::start(RECORDS);
    let port = free_port();
    let config = write_config(
        bind.dir.path(),
        &bind.address(),
        "media.example.com",
        port,
        port,
    );
    let (code, report) = check(&config, None);
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(report["http01_ok"], true);
    assert!(finding(&report, "reachability", "ok").contains("serves certkeeper's probe token"));
    assert!(finding(&report, "address", "ok").contains("an address of this host"));
    assert!(finding(&report, "clock", "warn").contains("cannot read the CA's clock"));
}

#[test]
fn refused_when_nothing_listens() {
    let bind = Bind::start(RECORDS);
    let config = write_config(
        bind.dir.path(),
        &bind.address(),
        "media.example.com",
        free_port(),
        free_port(),
    );
    let (code, report) = check(&config, None);
    assert_eq!(code, Some(1));
    let message = finding(&report, "reachability", "fail");
    assert!(
        message.contains("refused the connection") && message.contains("dns-01"),
        "{message}"
    );
}

#[test]
fn wrong_content_when_another_server_answers() {
    let bind = Bind::start(RECORDS);
    let other = TcpListener::bind("127.0.0.1:0").unwrap();
    let other_port = other.local_addr().unwrap().port();
    std::thread::spawn(move || {
        // Answers every connection (bounded: the test makes one or two) like a web server would.
        for stream in other.incoming().take(4).flatten() {
            let mut stream = stream;
            let mut buffer = [0u8; 2048];
            let _ = stream.read(&mut buffer);
            let _ = stream.write_all(
                b"HTTP/1.1 404 Not Found\r\nServer: other-server\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot found",
            );
        }
    });
    let config = write_config(
        bind.dir.path(),
        &bind.address(),
        "media.example.com",
        free_port(),
        other_port,
    );
    let (code, report) = check(&config, None);
    assert_eq!(code, Some(1));
    let message = finding(&report, "reachability", "fail");
    assert!(
        message.contains("another HTTP server (HTTP 404, server \"other-server\")"),
        "{message}"
    );
}

#[test]
fn dns_pointing_elsewhere_and_nxdomain_are_named() {
    let bind = Bind::start(RECORDS);
    let port = free_port();
    for (domain, check_kind, severity, expected) in [
        (
            "elsewhere.example.com",
            "address",
            "warn",
            "127.0.0.2, which is not an address of this host",
        ),
        (
            "missing.example.com",
            "dns",
            "fail",
            "does not exist in DNS (NXDOMAIN)",
        ),
    ] {
        let config = write_config(bind.dir.path(), &bind.address(), domain, port, port);
        let (code, report) = check(&config, None);
        assert_eq!(code, Some(1), "{domain}");
        let message = finding(&report, check_kind, severity);
        assert!(message.contains(expected), "{message}");
    }
}

#[test]
fn timeout_when_a_packet_filter_drops_the_port() {
    if !require_root(
        "timeout_when_a_packet_filter_drops_the_port",
        "a network namespace",
    ) {
        return;
    }
    let netns = Netns::new("check");
    let bind = Bind::start_in(Some(&netns.0), RECORDS);
    bind.wait_until_serving();
    let port = free_port();
    netns.drop_tcp(port);
    let config = write_config(
        bind.dir.path(),
        &bind.address(),
        "media.example.com",
        port,
        port,
    );
    let (code, report) = check(&config, Some(&netns.0));
    assert_eq!(code, Some(1), "{report:#}");
    let message = finding(&report, "reachability", "fail");
    assert!(
        message.contains("timed out") && message.contains("firewall drops it"),
        "{message}"
    );
}
