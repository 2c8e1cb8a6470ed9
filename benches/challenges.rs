//! Whole-process time of one issuance against a local pebble, by challenge: `renew --force`
//! with `challenge = "http-01"` and with `challenge = "tls-alpn-01"` (the responder binds its
//! port for each validation), interleaved, median of N each; then against the current pebble
//! (2.10 or later, from Debian sid: `scripts/deps --tests`), `http-01` and `dns-persist-01`
//! (its record set once through pebble's DNS; each renewal looks it up before ordering).
//!
//! `cargo bench --bench challenges` (N from BENCH_N, default 20).

#[path = "../tests/common/mod.rs"]
mod common;

use std::fs;
use std::time::{Duration, Instant};

fn main() {
    let n = common::bench_n(500);
    let pebble = common::Pebble::start(None);
    let ck = common::Certkeeper::new(&pebble, &["media.example.com"], "challenge = \"http-01\"");
    ck.ok(&["renew"]); // the account and the first certificate
    let http01 = fs::read_to_string(&ck.config).expect("config");
    let tls_alpn01 = http01.replace("challenge = \"http-01\"", "challenge = \"tls-alpn-01\"");
    let (mut by_http, mut by_tls) = (Vec::new(), Vec::new());
    for _ in 0..n {
        for (config, samples) in [(&http01, &mut by_http), (&tls_alpn01, &mut by_tls)] {
            fs::write(&ck.config, config).expect("config");
            let started = Instant::now();
            ck.ok(&["renew", "--force"]);
            samples.push(started.elapsed());
        }
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("one issuance (1 name), whole `certkeeper renew --force` process, median of {n}:");
    println!(
        "  pebble 2.4   http-01        {:.1} ms",
        ms(common::median(by_http))
    );
    println!(
        "  pebble 2.4   tls-alpn-01    {:.1} ms",
        ms(common::median(by_tls))
    );
    drop(pebble);

    let current = common::Pebble::start_current(serde_json::Value::Null);
    let ck = common::Certkeeper::new(&current, &["media.example.com"], "challenge = \"http-01\"");
    ck.ok(&["renew"]);
    let http01 = fs::read_to_string(&ck.config).expect("config");
    let persist = http01.replace("challenge = \"http-01\"", "challenge = \"dns-persist-01\"");
    fs::write(&ck.config, &persist).expect("config");
    let printed = ck.ok(&["persist-record", "media"]);
    let (fqdn, value) = printed
        .lines()
        .next()
        .and_then(|line| line.split_once(" IN TXT "))
        .expect("a zone-file line");
    current.set_txt(fqdn, value.trim_matches('"'));
    let (mut by_http, mut by_persist) = (Vec::new(), Vec::new());
    for _ in 0..n {
        for (config, samples) in [(&http01, &mut by_http), (&persist, &mut by_persist)] {
            fs::write(&ck.config, config).expect("config");
            let started = Instant::now();
            ck.ok(&["renew", "--force"]);
            samples.push(started.elapsed());
        }
    }
    println!(
        "  pebble 2.10  http-01        {:.1} ms",
        ms(common::median(by_http))
    );
    println!(
        "  pebble 2.10  dns-persist-01 {:.1} ms",
        ms(common::median(by_persist))
    );
}
