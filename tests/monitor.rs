//! `[[monitor]]`: the daemon watches endpoints it does not renew. A real nginx serving an
//! expired certificate and one serving a good one: status, the metrics and a notification
//! (once, not at every look) say which is which.

use crate::common;

use std::collections::{HashMap, HashSet};
use std::fs;
use std::time::Duration;

use common::{Certkeeper, Nginx, Pebble, free_port};

/// The notifications the `[[notify]]` exec hook appended to `path`, one JSON object a line.
fn notifications(path: &std::path::Path) -> Vec<serde_json::Value> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("a notification is JSON"))
        .collect()
}

/// Waits until the daemon has looked at every endpoint `looks` more times: its record of what
/// it saw (`monitors.json`) carries each look's time. "Nothing more was sent" is then said
/// after real looks, however loaded the machine.
fn wait_for_looks(ck: &Certkeeper, looks: usize) {
    let path = ck.path("state/monitors.json");
    let read = || -> Vec<(String, String)> {
        let seen: Vec<serde_json::Value> = fs::read(&path)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        (seen.iter())
            .map(|s| (s["endpoint"].to_string(), s["at"].to_string()))
            .collect()
    };
    let mut times: HashMap<String, HashSet<String>> = HashMap::new();
    for (endpoint, at) in read() {
        times.entry(endpoint).or_default().insert(at);
    }
    assert!(!times.is_empty(), "nothing looked at yet");
    ck.wait_until(
        "more looks at every endpoint",
        Duration::from_secs(30),
        || {
            for (endpoint, at) in read() {
                times.entry(endpoint).or_default().insert(at);
            }
            times.values().all(|seen| seen.len() > looks)
        },
    );
}

#[test]
fn the_daemon_watches_endpoints_it_does_not_renew() {
    // An expired certificate, served by a "demo server".
    let demo = tempfile::tempdir().unwrap();
    let (short_root, fullchain, key) = common::expired_certificate(demo.path(), "demo.example.com");
    let expired = Nginx::start(&fullchain, &key);
    // A good one.
    let pebble = Pebble::start(None);
    let other = Certkeeper::new(&pebble, &["media.example.com"], "");
    other.ok(&["renew"]);
    let good = Nginx::start(
        &other.current_dir().join("fullchain.pem"),
        &other.current_dir().join("privkey.pem"),
    );
    let root = other.path("pebble-root.pem");
    fs::write(&root, pebble.issuing_root_pem()).unwrap();

    let ck = Certkeeper::new(&pebble, &["media.example.com"], "");
    let notified = ck.path("notified.jsonl");
    let metrics = free_port();
    let text = fs::read_to_string(&ck.config).unwrap().replace(
        "[daemon]\n",
        &format!("[daemon]\nmetrics_listen = \"127.0.0.1:{metrics}\"\n"),
    ) + &format!(
        "\n[[monitor]]\nendpoint = \"127.0.0.1:{}\"\nname = \"demo.example.com\"\nevery_secs = 1\nroot = \"{}\"\n\
         \n[[monitor]]\nendpoint = \"127.0.0.1:{}\"\nname = \"media.example.com\"\nevery_secs = 1\nroot = \"{}\"\n\
         \n[[notify]]\nexec = \"cat >> {} && echo >> {}\"\nevents = [\"failure\", \"expiry\"]\n",
        expired.port,
        short_root.display(),
        good.port,
        root.display(),
        notified.display(),
        notified.display(),
    );
    fs::write(&ck.config, text).unwrap();
    let _daemon = ck.spawn_daemon();
    ck.wait_until("both endpoints looked at", Duration::from_secs(20), || {
        let said = String::from_utf8_lossy(&ck.run(&["status"]).stdout).to_string();
        said.matches("monitor 127.0.0.1:").count() == 2
    });
    let said = String::from_utf8_lossy(&ck.run(&["status"]).stdout).to_string();
    println!("{said}");
    assert!(
        said.contains(&format!(
            "monitor 127.0.0.1:{} (demo.example.com)",
            expired.port
        )),
        "{said}"
    );
    assert!(said.contains("FAIL the certificate expired on"), "{said}");
    assert!(
        said.contains(&format!(
            "monitor 127.0.0.1:{} (media.example.com)",
            good.port
        )),
        "{said}"
    );

    // Several looks later, one notification for the expired endpoint, none for the good one.
    wait_for_looks(&ck, 2);
    let events = notifications(&notified);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["event"], "failure");
    assert_eq!(
        events[0]["certificate"],
        format!("monitor 127.0.0.1:{}", expired.port)
    );
    assert!(events[0]["message"].as_str().unwrap().contains("expired"));

    let scraped = common::http_get(metrics, "/metrics");
    assert!(
        scraped.contains(&format!(
            "certkeeper_monitor_severity{{endpoint=\"127.0.0.1:{}\",name=\"demo.example.com\"}} 2",
            expired.port
        )),
        "{scraped}"
    );
    assert!(
        scraped.contains(&format!(
            "certkeeper_monitor_severity{{endpoint=\"127.0.0.1:{}\",name=\"media.example.com\"}} 0",
            good.port
        )),
        "{scraped}"
    );
}

/// A server restarted onto other files between renewals (the deployment's own live check
/// passed long ago): the daemon's next look at the `verify` endpoint finds it, `status` says
/// what is served instead, and one notification goes out.
#[test]
fn a_server_that_stops_serving_the_deployed_certificate_is_found_between_renewals() {
    let pebble = Pebble::start(None);
    let ck = Certkeeper::new(&pebble, &["media.example.com"], "");
    ck.ok(&["renew"]);
    let port = free_port();
    let nginx = Nginx::start_at(
        port,
        &ck.path("out/fullchain.pem"),
        &ck.path("out/privkey.pem"),
    );
    // Another deployment's certificate for the same name, for the server to be restarted onto.
    let elsewhere = Certkeeper::new(&pebble, &["media.example.com"], "");
    elsewhere.ok(&["renew"]);

    let notified = ck.path("notified.jsonl");
    ck.rewrite(
        &pebble,
        &["media.example.com"],
        &format!(
            "verify = [{{ endpoint = \"127.0.0.1:{port}\" }}]\nverify_every_secs = 1\n\
             reload_timeout_secs = 1\nverify_timeout_secs = 1"
        ),
    );
    let text = fs::read_to_string(&ck.config).unwrap()
        + &format!(
            "\n[[notify]]\nexec = \"cat >> {0} && echo >> {0}\"\nevents = [\"failure\"]\n",
            notified.display()
        );
    fs::write(&ck.config, text).unwrap();
    let _daemon = ck.spawn_daemon();
    let row = format!("media: verify endpoint 127.0.0.1:{port} (media.example.com)");
    let status = || String::from_utf8_lossy(&ck.run(&["status"]).stdout).to_string();
    ck.wait_until("the endpoint looked at", Duration::from_secs(20), || {
        let said = status();
        said.contains(&row) && said.contains(": ok 127.0.0.1")
    });
    let said = status();
    assert!(
        said.contains("serves the certificate deployed for media, with its whole chain"),
        "{said}"
    );

    drop(nginx);
    let _restarted = Nginx::start_at(
        port,
        &elsewhere.path("out/fullchain.pem"),
        &elsewhere.path("out/privkey.pem"),
    );
    ck.wait_until(
        "the other certificate found",
        Duration::from_secs(20),
        || status().contains(": FAIL 127.0.0.1"),
    );
    let said = status();
    println!("{said}");
    assert!(
        said.contains("serves another certificate")
            && said.contains("than the one deployed for media")
            && said.contains("the server was not reloaded since, or loads other files"),
        "{said}"
    );
    wait_for_looks(&ck, 2);
    let events = notifications(&notified);
    assert_eq!(events.len(), 1, "once, not at every look: {events:?}");
    assert_eq!(events[0]["event"], "failure");
    assert_eq!(events[0]["certificate"], "media", "{events:?}");
    assert!(
        events[0]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("than the one deployed for media"),
        "{events:?}"
    );
}
