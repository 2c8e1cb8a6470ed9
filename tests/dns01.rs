//! DNS-01 against pebble and a real BIND 9 with TSIG-signed dynamic updates; the exec hook
//! driving the same server through `nsupdate`; `auto` falling back to DNS-01.

use crate::common;

use std::fs;
use std::os::unix::fs::PermissionsExt;

use common::{Bind, Certkeeper, Pebble, free_port};

const RECORDS: &str = "media IN A 127.0.0.1\nlive IN A 127.0.0.1\n";

/// A config for `domains` talking to `pebble`, with `bind` as its DNS-01 server.
fn config(pebble: &Pebble, dns01: &str, domains: &[&str], extra: &str) -> Certkeeper {
    let ck = Certkeeper::new(pebble, domains, extra);
    let text = fs::read_to_string(&ck.config)
        .unwrap()
        .replace("[daemon]", &format!("{dns01}\n[daemon]"));
    fs::write(&ck.config, text).unwrap();
    ck
}

fn txt_left(bind: &Bind, name: &str) -> bool {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dns = certkeeper::net::dns::Dns::new(&[bind.address().parse().unwrap()]).unwrap();
    matches!(
        runtime.block_on(dns.txt(name)),
        certkeeper::net::dns::Answer::Found(_)
    )
}

fn leaf_names(ck: &Certkeeper) -> Vec<String> {
    certkeeper::deploy::bundle::read_leaf(&fs::read(ck.current_dir().join("cert.pem")).unwrap())
        .unwrap()
        .names
}

#[test]
fn rfc2136_issues_a_wildcard_certificate_and_cleans_up() {
    let bind = Bind::start(RECORDS);
    let pebble = Pebble::start_with_dns(&bind.address());
    let ck = config(
        &pebble,
        &bind.rfc2136_section(),
        &["example.com", "*.example.com"],
        "challenge = \"dns-01\"",
    );
    let out = ck.ok(&["renew"]);
    assert!(out.contains("renewed") && out.contains("dns-01"), "{out}");
    let names = leaf_names(&ck);
    assert!(
        names.contains(&"*.example.com".to_string()) && names.contains(&"example.com".to_string()),
        "{names:?}"
    );
    assert!(
        !txt_left(&bind, "_acme-challenge.example.com"),
        "the TXT records must be removed after the order"
    );
}

#[test]
fn exec_hook_drives_bind_through_nsupdate() {
    let bind = Bind::start(RECORDS);
    let pebble = Pebble::start_with_dns(&bind.address());
    let nsupdate = common::require("nsupdate");
    let hook = bind.dir.path().join("dns-hook");
    fs::write(
        &hook,
        format!(
            "#!/bin/sh\nset -e\n[ \"$1\" = present ] && op=add || op=delete\n\
             printf 'server 127.0.0.1 {port}\\nzone example.com\\nupdate %s %s. 5 TXT \"%s\"\\nsend\\n' \"$op\" \"$2\" \"$3\" \
             | {nsupdate} -k {key}\necho \"$1 $2\" >> {log}\n",
            port = bind.port,
            nsupdate = nsupdate.display(),
            key = bind.key_file.display(),
            log = bind.dir.path().join("hook.log").display()
        ),
    )
    .unwrap();
    fs::set_permissions(&hook, fs::Permissions::from_mode(0o755)).unwrap();
    let dns01 = format!(
        "[dns01]\nprovider = \"exec\"\ncommand = \"{}\"\ncheck_servers = [\"{}\"]\npropagation_timeout_secs = 20\n",
        hook.display(),
        bind.address()
    );
    let ck = config(
        &pebble,
        &dns01,
        &["media.example.com"],
        "challenge = \"dns-01\"",
    );
    ck.ok(&["renew"]);
    let log = fs::read_to_string(bind.dir.path().join("hook.log")).unwrap();
    assert_eq!(
        log.lines().collect::<Vec<_>>(),
        [
            "present _acme-challenge.media.example.com",
            "cleanup _acme-challenge.media.example.com"
        ]
    );
    assert!(!txt_left(&bind, "_acme-challenge.media.example.com"));
}

#[test]
fn auto_uses_dns01_when_port_80_is_blocked_and_status_says_why() {
    let bind = Bind::start(RECORDS);
    let pebble = Pebble::start_with_dns(&bind.address());
    let ck = config(&pebble, &bind.rfc2136_section(), &["media.example.com"], "");
    // certkeeper listens elsewhere than where the CA connects: the probe of the CA's port is
    // refused, so auto picks dns-01 before ordering.
    ck.set_daemon_ports(free_port(), pebble.http_port, &bind.address());
    // Port 443 does not reach certkeeper either: the ladder ends at dns-01.
    ck.set_tls_alpn_port(free_port());
    let out = ck.ok(&["renew"]);
    assert!(
        out.contains("media: dns-01 (the pre-flight check rules out http-01"),
        "{out}"
    );
    assert!(out.contains("refused the connection"), "{out}");
    let status = ck.ok(&["status"]);
    assert!(
        status.contains("ok via dns-01 (the pre-flight check rules out http-01"),
        "{status}"
    );
    assert_eq!(pebble.orders(), 1, "the choice is made before ordering");
}

#[test]
fn auto_retries_a_failed_http01_validation_with_dns01() {
    let bind = Bind::start(RECORDS);
    let pebble = Pebble::start_with_dns(&bind.address());
    let ck = config(&pebble, &bind.rfc2136_section(), &["media.example.com"], "");
    // The probe reaches certkeeper (it checks the port certkeeper listens on), but the CA
    // connects to another port: the http-01 validation fails, and dns-01 takes over.
    let port = free_port();
    ck.set_daemon_ports(port, port, &bind.address());
    let out = ck.ok(&["renew"]);
    assert!(out.contains("media: dns-01 (http-01 failed"), "{out}");
    assert_eq!(
        pebble.orders(),
        2,
        "one failed http-01 order, one dns-01 order"
    );
    let json: serde_json::Value = serde_json::from_str(&ck.ok(&["status", "--json"])).unwrap();
    assert_eq!(json[0]["challenge"], "dns-01");
    assert!(
        json[0]["challenge_reason"]
            .as_str()
            .unwrap()
            .contains("retried with dns-01")
    );
}

#[test]
fn a_wrong_tsig_key_is_named_as_such() {
    let bind = Bind::start(RECORDS);
    let pebble = Pebble::start_with_dns(&bind.address());
    let wrong = bind.dir.path().join("wrong.key");
    fs::write(&wrong, "key \"certkeeper-test.\" { algorithm hmac-sha256; secret \"c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI=\"; };\n").unwrap();
    let section = bind.rfc2136_section().replace(
        &bind.key_file.display().to_string(),
        &wrong.display().to_string(),
    );
    let ck = config(
        &pebble,
        &section,
        &["media.example.com"],
        "challenge = \"dns-01\"",
    );
    let output = ck.run(&["renew"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success());
    assert!(
        stdout.contains("cannot publish the TXT record _acme-challenge.media.example.com"),
        "{stdout}"
    );
    assert!(
        stdout.contains("did not accept the TSIG signature"),
        "{stdout}"
    );
}

#[test]
fn a_cname_delegated_challenge_record_is_followed() {
    // acme-dns style: _acme-challenge.live points at a name certkeeper may update.
    let records = format!("{RECORDS}_acme-challenge.live IN CNAME live.challenges.example.com.\n");
    let bind = Bind::start(&records);
    let pebble = Pebble::start_with_dns(&bind.address());
    let ck = config(
        &pebble,
        &bind.rfc2136_section(),
        &["live.example.com"],
        "challenge = \"dns-01\"",
    );
    // BIND refuses a TXT record beside a CNAME: success means the record went to the target.
    let out = ck.ok(&["renew"]);
    assert!(out.contains("renewed"), "{out}");
    assert!(
        !txt_left(&bind, "live.challenges.example.com"),
        "cleaned up at the CNAME target"
    );
}
