//! Issuance speed against a local pebble (PEBBLE_VA_NOSLEEP, 5% bad nonces), whole process:
//! `certkeeper renew --force` N times with an existing account, as an operator would run it.
//! Prints the median and 90th percentile wall time and the CPU time per certificate.
//!
//! `cargo bench --bench issuance` (N from BENCH_N, default 20).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use nix::sys::resource::{UsageWho, getrusage};

fn children_cpu() -> Duration {
    let usage = getrusage(UsageWho::RUSAGE_CHILDREN).expect("getrusage");
    let (user, system) = (usage.user_time(), usage.system_time());
    let micros = (user.tv_sec() + system.tv_sec()) * 1_000_000 + user.tv_usec() + system.tv_usec();
    Duration::from_micros(micros as u64)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let n = common::bench_n(1000);
    let pebble = common::Pebble::start(None);
    let ck = common::Certkeeper::new(&pebble, &["media.example.com", "live.example.com"], "");
    ck.ok(&["renew"]); // creates the account and the first certificate

    let mut walls = Vec::with_capacity(n);
    let mut cpus = Vec::with_capacity(n);
    let started = Instant::now();
    for _ in 0..n {
        let (wall, cpu) = (Instant::now(), children_cpu());
        ck.ok(&["renew", "--force"]);
        walls.push(wall.elapsed());
        cpus.push(children_cpu().saturating_sub(cpu));
    }
    let total = started.elapsed();
    walls.sort();
    cpus.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "certkeeper issuance against local pebble, {n} certificates (2 names each), existing account:"
    );
    println!(
        "  wall per certificate: median {:.1} ms, p90 {:.1} ms, max {:.1} ms",
        ms(percentile(&walls, 0.5)),
        ms(percentile(&walls, 0.9)),
        ms(walls[n - 1])
    );
    println!(
        "  CPU per certificate:  median {:.1} ms, p90 {:.1} ms",
        ms(percentile(&cpus, 0.5)),
        ms(percentile(&cpus, 0.9))
    );
    println!(
        "  total {:.2} s for {n} certificates; pebble saw {} orders",
        total.as_secs_f64(),
        pebble.orders()
    );
}
