//! The control socket and the pre-flight before every order, against a local pebble, whole
//! process as an operator runs them. Prints:
//! - what the pre-flight adds to a standalone `renew --force` (runs with and without it,
//!   interleaved, median of N each);
//! - the latency of `status` and of `renew --force` through a running daemon's socket.
//!
//! `cargo bench --bench control` (N from BENCH_N, default 20).

#[path = "../tests/common/mod.rs"]
mod common;

use std::fs;
use std::time::{Duration, Instant};

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn timed(ck: &common::Certkeeper, args: &[&str]) -> Duration {
    let started = Instant::now();
    ck.ok(args);
    started.elapsed()
}

fn main() {
    let n = common::bench_n(500);
    let pebble = common::Pebble::start(None);
    let ck = common::Certkeeper::new(&pebble, &["media.example.com", "live.example.com"], "");
    ck.ok(&["renew"]); // the account and the first certificate
    let with = fs::read_to_string(&ck.config).expect("config");
    let without = with.replace("[daemon]\n", "[daemon]\npreflight_before_order = false\n");

    let (mut checked, mut unchecked) = (Vec::new(), Vec::new());
    for _ in 0..n {
        fs::write(&ck.config, &with).expect("config");
        checked.push(timed(&ck, &["renew", "--force"]));
        fs::write(&ck.config, &without).expect("config");
        unchecked.push(timed(&ck, &["renew", "--force"]));
    }
    fs::write(&ck.config, &with).expect("config");
    let (checked, unchecked) = (common::median(checked), common::median(unchecked));
    println!("standalone `renew --force` (2 names), median of {n} each:");
    println!(
        "  with the pre-flight {:.1} ms, without {:.1} ms: the pre-flight adds {:.1} ms ({:+.1}%)",
        ms(checked),
        ms(unchecked),
        ms(checked) - ms(unchecked),
        (ms(checked) / ms(unchecked) - 1.0) * 100.0
    );

    let _daemon = ck.spawn_daemon();
    ck.wait_until("the control socket", Duration::from_secs(10), || {
        ck.path("state/control.sock").exists()
    });
    let status: Vec<Duration> = (0..n).map(|_| timed(&ck, &["status"])).collect();
    let renew: Vec<Duration> = (0..n).map(|_| timed(&ck, &["renew", "--force"])).collect();
    let standalone_status: Duration = {
        // The same command with no daemon, for comparison: stop it first.
        drop(_daemon);
        ck.wait_until("the daemon gone", Duration::from_secs(10), || {
            !String::from_utf8_lossy(&ck.run(&["status"]).stderr).contains("through the running")
        });
        common::median((0..n).map(|_| timed(&ck, &["status"])).collect())
    };
    println!("through the running daemon's control socket, median of {n}:");
    println!(
        "  `status` {:.1} ms (standalone, reading the state itself: {:.1} ms)",
        ms(common::median(status)),
        ms(standalone_status)
    );
    println!(
        "  `renew --force` {:.1} ms (a real issuance by the daemon's engine)",
        ms(common::median(renew))
    );
}
